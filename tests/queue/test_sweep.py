"""lrsup sweep's grid: axes, combinations, script arguments, config. overrides written as TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lrsup.supervisor.config import DEFAULT_STACK, load_config
from lrsup.supervisor.queue.sweep import (
    GridError,
    apply_overrides,
    config_overrides,
    expand,
    label,
    parse_axis,
    script_args,
    to_toml,
)


def test_expand_is_the_product_last_axis_fastest() -> None:
    points = expand([parse_axis("lr=0.001,0.01,0.1"), parse_axis("optimizer=sgd,adam")])
    assert len(points) == 6
    assert points[0] == {"lr": 0.001, "optimizer": "sgd"} and points[1] == {"lr": 0.001, "optimizer": "adam"}
    assert script_args(["--epochs", "30"], points[-1]) == ["--epochs", "30", "--lr", "0.1", "--optimizer", "adam"]


def test_values_parse_as_toml_would() -> None:
    assert parse_axis("x=3,2.5,true,adam").values == (3, 2.5, True, "adam")
    assert script_args([], {"flag": True}) == ["--flag", "true"]


@pytest.mark.parametrize(
    "option, match",
    [("lr", "NAME=V1"), ("lr=", "empty value"), ("lr=0.1,,0.2", "empty value"), ("config.x=1", "config.TABLE.KEY")],
)
def test_bad_axes_are_refused_by_name(option: str, match: str) -> None:
    with pytest.raises(GridError, match=match):
        parse_axis(option)


def test_a_name_twice_is_refused() -> None:
    with pytest.raises(GridError, match="given twice"):
        expand([parse_axis("lr=1"), parse_axis("lr=2")])


def test_config_prefix_varies_a_setting_not_the_arguments(tmp_path: Path) -> None:
    point = expand([parse_axis("config.plateau.patience=2,5"), parse_axis("config.run.grace_period=30")])[1]
    assert script_args(["--epochs", "3"], point) == ["--epochs", "3"]
    overrides = config_overrides(point)
    assert overrides == {("plateau", "patience"): 5, ("run", "grace_period"): 30}
    table = apply_overrides({"policy": [dict(p) for p in DEFAULT_STACK]}, overrides)
    assert DEFAULT_STACK[2]["patience"] == 3  # the default is not changed in place
    path = tmp_path / "c.toml"
    path.write_text(to_toml(table))
    assert tomllib.loads(path.read_text())["run"] == {"grace_period": 30}
    config = load_config(path, tmp_path)  # what lrsup run will read: valid, with the new value
    plateau = next(s for name, _, s in config.policies if name == "plateau")
    assert plateau.patience == 5 and config.run.grace_period == 30
    assert label(point) == "patience5-grace_period30"


def test_config_prefix_needs_the_policy_in_the_stack() -> None:
    with pytest.raises(GridError, match="no policy 'cosine'"):
        apply_overrides({"policy": [{"use": "plateau"}]}, {("cosine", "period"): 3})
