"""The [notify] table of the configuration: validated, named in errors, written to config.json."""

from __future__ import annotations

import json

import pytest

from lrsup.supervisor.config import ConfigError, NotifySettings, config_from_json, load_config


def test_no_notify_table_is_none_and_absent_from_config_json(tmp_path):
    config = load_config(None, tmp_path)
    assert config.notify is None and "notify" not in config.to_json()


def test_notify_table_is_validated_and_round_trips(tmp_path):
    (tmp_path / "lrsup.toml").write_text(
        '[notify]\nwebhook = "https://hooks.example.com/x"\ncommand = "true"\non = ["end", "rollback"]\ntimeout = 2.5\n'
    )
    config = load_config(None, tmp_path)
    assert config.notify == NotifySettings(
        webhook="https://hooks.example.com/x", command="true", on=["end", "rollback"], timeout=2.5
    )
    data = json.loads(json.dumps(config.to_json()))
    assert data["notify"] == {
        "webhook": "https://hooks.example.com/x",
        "command": "true",
        "on": ["end", "rollback"],
        "timeout": 2.5,
    }
    assert config_from_json(data, "config.json").notify == config.notify


def test_defaults_of_the_notify_table(tmp_path):
    (tmp_path / "lrsup.toml").write_text('[notify]\ncommand = "true"\n')
    notify = load_config(None, tmp_path).notify
    assert (notify.webhook, notify.on, notify.timeout) == (None, ["end", "give_up"], 5.0)


@pytest.mark.parametrize(
    "table, problem",
    [
        (
            '[notify]\nwebhok = "http://x/"\n',
            "notify.webhok: unknown setting (got 'http://x/'); known settings: command, on, secret, timeout, webhook",
        ),
        (
            '[notify]\non = ["end", "epoch"]\n',
            "notify.on[1]: Input should be 'end', 'give_up', 'rollback' or 'restart'",
        ),
        ("[notify]\ntimeout = 0\n", "notify.timeout: Input should be greater than 0 (got 0)"),
        ("notify = 3\n", "notify: expected a table [notify] (got 3)"),
    ],
)
def test_bad_notify_settings_name_the_file_and_the_field(tmp_path, table, problem):
    path = tmp_path / "lrsup.toml"
    path.write_text(table)
    with pytest.raises(ConfigError) as info:
        load_config(None, tmp_path)
    assert info.value.source == str(path)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_notify_under_tool_lrsup(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.lrsup.notify]\nwebhook = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(None, tmp_path)
    assert info.value.problems[0].startswith("tool.lrsup.notify.webhook: ")
