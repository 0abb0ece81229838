"""Hostile configurations exit 2 cleanly, the file and the field named (issue 17, item 9)."""

from __future__ import annotations

import subprocess

import pytest

from lrsup.supervisor.config import MAX_SECONDS, ConfigError, load_config
from tests.faults.conftest import FAULT, LRSUP


def lrsup_run(cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LRSUP, "run", "--run-dir", "r", str(FAULT)], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("depth", [40, 1000])
def test_a_value_nested_deeply_exits_2_naming_the_file(tmp_path, depth):
    (tmp_path / "lrsup.toml").write_text("[agent]\nx = " + "[" * depth + "]" * depth + "\n")
    done = lrsup_run(tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
    assert "lrsup.toml" in done.stderr and "nested more than" in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "table, field",
    [
        ("[agent]\nheartbeat_interval = 1e10", "agent.heartbeat_interval"),
        ("[agent]\nverdict_timeout = 1e300", "agent.verdict_timeout"),
        ("[run]\nhang_timeout = 1e18", "run.hang_timeout"),
        ("[run]\nbackoff_cap = 1e12\nbackoff_base = 1e12", "run.backoff_base"),
        ("[run]\nsnapshot_interval = 1e10", "run.snapshot_interval"),
        ("[notify]\ncommand = 'true'\ntimeout = 1e10", "notify.timeout"),
    ],
)
def test_intervals_and_timeouts_are_bounded(tmp_path, table, field):
    (tmp_path / "lrsup.toml").write_text(table + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(None, tmp_path)
    assert any(p.startswith(field) for p in info.value.problems), info.value.problems


def test_the_bound_itself_is_accepted_and_the_cli_names_the_field(tmp_path):
    (tmp_path / "lrsup.toml").write_text(f"[run]\nhang_timeout = {MAX_SECONDS}\n")
    assert load_config(None, tmp_path).run.hang_timeout == MAX_SECONDS
    (tmp_path / "lrsup.toml").write_text("[agent]\nheartbeat_interval = 1e10\n")
    done = lrsup_run(tmp_path)
    assert done.returncode == 2 and "agent.heartbeat_interval" in done.stderr, done.stderr
