"""Configuration: discovery, validation, every error path (messages name the file and the field)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lrsup.policies.plateau import Plateau, PlateauSettings
from lrsup.supervisor.config import (
    DEFAULT_STACK,
    DEFAULTS_SOURCE,
    AgentSettings,
    ConfigError,
    ResolvedConfig,
    RunSettings,
    load_config,
)
from lrsup.supervisor.registry import available

PLATEAU_TOML = """
[[policy]]
use = "plateau"
monitor = "val_loss"
factor = 0.5
patience = 2
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def problems_of(path, cwd, text=None, name="lrsup.toml"):
    if text is not None:
        write(cwd / name, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, cwd)
    return info.value


# -- discovery ----------------------------------------------------------------------------


def test_defaults_when_there_is_no_file(tmp_path):
    config = load_config(None, tmp_path)
    assert config.source == DEFAULTS_SOURCE
    assert config.agent == AgentSettings() and config.run == RunSettings()
    assert (config.agent.batch_every, config.agent.verdict_timeout, config.agent.heartbeat_interval) == (10, 10.0, 5.0)
    assert (config.run.grace_period, config.run.poll_interval) == (10.0, 0.05)
    assert [name for name, _, _ in config.policies] == ["divergence", "lr_find", "plateau"]
    name, cls, settings = config.policies[-1]
    assert (name, cls) == ("plateau", Plateau)
    assert settings == PlateauSettings(monitor="val_loss", factor=0.5, patience=3, cooldown=0, min_lr=1e-6)
    assert config.policies[1][2].mode == "auto"  # the range test raises a far too small LR, lowers a far too high one


def test_lrsup_toml_in_cwd(tmp_path):
    write(tmp_path / "lrsup.toml", PLATEAU_TOML + "[agent]\nbatch_every = 20\n[run]\ngrace_period = 3\n")
    config = load_config(None, tmp_path)
    assert config.source == str(tmp_path / "lrsup.toml")
    assert config.policies[0][2] == PlateauSettings(factor=0.5, patience=2)
    assert config.agent.batch_every == 20
    assert config.run.grace_period == 3.0


def test_lrsup_toml_wins_over_pyproject(tmp_path):
    write(tmp_path / "lrsup.toml", "policy = []\n")
    write(tmp_path / "pyproject.toml", "[tool.lrsup]\n[tool.lrsup.agent]\nbatch_every = 3\n")
    config = load_config(None, tmp_path)
    assert config.policies == [] and config.agent.batch_every == 10


def test_pyproject_tool_lrsup_in_cwd(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n[tool.lrsup.agent]\nbatch_every = 3\n')
    config = load_config(None, tmp_path)
    assert config.source == str(tmp_path / "pyproject.toml")
    assert config.agent.batch_every == 3
    assert [name for name, _, _ in config.policies] == [spec["use"] for spec in DEFAULT_STACK]  # no `policy` key


def test_pyproject_without_tool_lrsup_means_defaults(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n[tool.black]\nline-length = 99\n')
    assert load_config(None, tmp_path).source == DEFAULTS_SOURCE


def test_explicit_path_relative_to_cwd(tmp_path):
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "night.toml", PLATEAU_TOML)
    write(tmp_path / "lrsup.toml", "policy = []\n")  # ignored: --config wins
    config = load_config(Path("conf/night.toml"), tmp_path)
    assert config.source == str(tmp_path / "conf" / "night.toml")
    assert len(config.policies) == 1


def test_explicit_pyproject_reads_its_tool_table(tmp_path):
    (tmp_path / "p").mkdir()
    write(tmp_path / "p" / "pyproject.toml", "[tool.lrsup]\npolicy = []\n")
    assert load_config(tmp_path / "p" / "pyproject.toml", tmp_path).policies == []


def test_explicit_empty_policy_list_means_no_policies(tmp_path):
    write(tmp_path / "lrsup.toml", "policy = []\n")
    config = load_config(None, tmp_path)
    assert config.policies == [] and config.build_policies() == []


def test_an_empty_file_means_the_default_stack(tmp_path):
    write(tmp_path / "lrsup.toml", "")
    assert [name for name, _, _ in load_config(None, tmp_path).policies] == [spec["use"] for spec in DEFAULT_STACK]


def test_module_class_spec(tmp_path):
    write(tmp_path / "lrsup.toml", '[[policy]]\nuse = "lrsup.policies.plateau:Plateau"\npatience = 1\n')
    [(name, cls, settings)] = load_config(None, tmp_path).policies
    assert (name, cls, settings.patience) == ("lrsup.policies.plateau:Plateau", Plateau, 1)


def test_build_policies_gives_fresh_instances(tmp_path):
    write(tmp_path / "lrsup.toml", PLATEAU_TOML + PLATEAU_TOML.replace("val_loss", "val_accuracy"))
    config = load_config(None, tmp_path)
    first, second = config.build_policies()
    assert isinstance(first, Plateau) and second.settings.monitor == "val_accuracy"
    again = config.build_policies()
    assert again[0] is not first and again[0].settings is first.settings


def test_batch_min_interval_takes_seconds_and_zero(tmp_path):
    write(tmp_path / "lrsup.toml", PLATEAU_TOML + "[agent]\nbatch_min_interval = 0\n")
    assert load_config(None, tmp_path).agent.batch_min_interval == 0.0
    write(tmp_path / "lrsup.toml", PLATEAU_TOML + "[agent]\nbatch_min_interval = 0.5\n")
    assert load_config(None, tmp_path).to_json()["agent"]["batch_min_interval"] == 0.5


def test_to_json(tmp_path):
    write(tmp_path / "lrsup.toml", PLATEAU_TOML)
    data = load_config(None, tmp_path).to_json()
    assert data == {
        "source": str(tmp_path / "lrsup.toml"),
        "agent": {
            "batch_every": 10,
            "batch_min_interval": 0.1,
            "verdict_timeout": 10.0,
            "heartbeat_interval": 5.0,
            "checkpoint_every_epochs": 1,
            "checkpoint_every_steps": 0,
            "keep_last": 3,
        },
        "run": {
            "grace_period": 10.0,
            "poll_interval": 0.05,
            "max_restarts": 5,
            "restart_window": 3600.0,
            "backoff_base": 5.0,
            "backoff_cap": 300.0,
            "hang_timeout": 120.0,
            "stall_timeout": 1800.0,
            "stop_timeout": 120.0,
            "start_timeout": 1800.0,
            "snapshot_interval": 30.0,
            "lr_owner": "script",
        },
        "policies": [
            {
                "use": "plateau",
                "monitor": "val_loss",
                "factor": 0.5,
                "patience": 2,
                "mode": "auto",
                "min_delta": 1e-4,
                "cooldown": 0,
                "min_lr": 0.0,
            }
        ],
    }
    assert json.loads(json.dumps(data)) == data


def test_default_stack_is_not_mutated(tmp_path):
    before = copy.deepcopy(DEFAULT_STACK)
    load_config(None, tmp_path)
    assert DEFAULT_STACK == before


def test_resolved_config_is_frozen(tmp_path):
    config = load_config(None, tmp_path)
    assert isinstance(config, ResolvedConfig)
    with pytest.raises(AttributeError):
        config.source = "x"


# -- errors -------------------------------------------------------------------------------------


def test_error_format_names_file_and_field(tmp_path):
    err = problems_of(None, tmp_path, '[[policy]]\nuse = "plateau"\nfactor = 1.5\n')
    source = str(tmp_path / "lrsup.toml")
    assert err.source == source
    assert err.problems == ["policy[0].factor: Plateau does not support a factor >= 1.0; got factor=1.5 (got 1.5)"]
    assert (
        str(err) == f"- {source}: policy[0].factor: Plateau does not support a factor >= 1.0; got factor=1.5 (got 1.5)"
    )
    assert isinstance(err, ValueError)


def test_every_problem_is_reported_at_once(tmp_path):
    err = problems_of(
        None,
        tmp_path,
        """
polcy = 1
[agent]
batch_every = 0
verdict_timeout = -1.0
bogus = true
[run]
poll_interval = "fast"
[[policy]]
use = "plateau"
patience = -1
mode = "up"
[[policy]]
use = "platau"
""",
    )
    assert err.problems == [
        "polcy: unknown key (got 1); expected one of: agent, notify, policy, population, run",
        "agent.batch_every: must be an integer >= 1 (got 0)",
        "agent.verdict_timeout: must be a number of seconds >= 0 and <= 9.223e+09 (0: no wait) (got -1.0)",
        "agent.bogus: unknown setting (got True); known settings: " + ", ".join(sorted(AgentSettings.model_fields)),
        "run.poll_interval: Input should be a valid number (got 'fast')",
        "policy[0].mode: Input should be 'auto', 'min' or 'max' (got 'up')",
        "policy[0].patience: Input should be greater than or equal to 0 (got -1)",
        f"policy[1].use: unknown policy 'platau'; available: {', '.join(sorted(available()))} (or give a 'module:Class' spec)",
    ]
    assert str(err).count("\n- ") == len(err.problems) - 1


@pytest.mark.parametrize(
    "text, problem",
    [
        (
            '[[policy]]\nuse = "plateau"\npatiense = 3\n',
            "policy[0].patiense: unknown setting (got 3); known settings: cooldown, factor, min_delta, min_lr, mode, "
            "monitor, patience",
        ),
        (
            '[[policy]]\nuse = "plateau"\nmonitor = "my_score"\n',
            "policy[0].mode: mode='auto' cannot tell whether monitor='my_score' should be minimised or maximised; "
            "set mode to 'min' or 'max' (got 'auto')",
        ),
        (
            '[[policy]]\nuse = "plateau"\npatience = true\n',
            "policy[0].patience: Input should be a valid integer (got True)",
        ),
        ('[[policy]]\nmonitor = "val_loss"\n', 'policy[0].use: missing: the policy\'s name, e.g. use = "plateau"'),
        ("[[policy]]\nuse = 3\n", "policy[0].use: expected a string (got 3)"),
        (
            '[[policy]]\nuse = "lrsup.policies.monitor:Monitor"\n',
            "policy[0].use: policy spec 'lrsup.policies.monitor:Monitor' is <class 'lrsup.policies.monitor.Monitor'>, "
            "not a subclass of lrsup.policies.Policy",
        ),
        ('policy = "plateau"\n', "policy: expected an array of tables ([[policy]]) (got 'plateau')"),
        ("policy = [1]\n", "policy[0]: expected a table with a `use` key (got 1)"),
        ("agent = 3\n", "agent: expected a table [agent] (got 3)"),
        ("[run]\ngrace_period = 0\n", "run.grace_period: Input should be greater than 0 (got 0)"),
        ("[run]\ngrace_period = inf\n", "run.grace_period: Input should be a finite number (got inf)"),
        (
            "[agent]\nheartbeat_interval = nan\n",
            "agent.heartbeat_interval: must be a number of seconds > 0 and <= 9.223e+09 (got nan)",
        ),
        (  # beyond threading.TIMEOUT_MAX: it would kill the heartbeat thread with OverflowError (issue 17)
            "[agent]\nheartbeat_interval = 1e10\n",
            "agent.heartbeat_interval: must be a number of seconds > 0 and <= 9.223e+09 (got 10000000000.0)",
        ),
        ("[agent]\nbatch_every = 2.0\n", "agent.batch_every: Input should be a valid integer (got 2.0)"),
        (
            "[agent]\nbatch_min_interval = -1\n",
            "agent.batch_min_interval: must be a number of seconds >= 0 and <= 9.223e+09 (0: no minimum) (got -1)",
        ),
        ('[agent]\nbatch_min_interval = "1s"\n', "agent.batch_min_interval: Input should be a valid number (got '1s')"),
    ],
)
def test_single_problems(tmp_path, text, problem):
    assert problems_of(None, tmp_path, text).problems == [problem]


def test_agent_ranges_are_the_protocols():
    from lrsup.supervisor.config import AgentSettings
    from lrsup.supervisor.protocol.bounds import MAX_SECONDS, check_agent_setting

    assert AgentSettings(verdict_timeout=0).verdict_timeout == 0.0  # 0: no wait, as the agent reads it
    assert AgentSettings(heartbeat_interval=MAX_SECONDS).heartbeat_interval == check_agent_setting(
        "heartbeat_interval", MAX_SECONDS
    )


def test_toml_syntax_error_gives_line_and_column(tmp_path):
    err = problems_of(None, tmp_path, '[[policy]]\nuse = "plateau"\nfactor = \n')
    assert err.source == str(tmp_path / "lrsup.toml")
    assert err.problems == ["TOML syntax error: Invalid value (at line 3, column 10)"]


def test_missing_config_file(tmp_path):
    err = problems_of(Path("nope.toml"), tmp_path)
    assert err.source == str(tmp_path / "nope.toml") and err.problems == ["file not found"]
    assert str(err) == f"- {tmp_path / 'nope.toml'}: file not found"


def test_config_path_that_is_a_directory(tmp_path):
    err = problems_of(tmp_path, tmp_path)
    assert err.problems == ["is a directory, not a file"]


def test_explicit_pyproject_without_tool_lrsup(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    err = problems_of(tmp_path / "pyproject.toml", tmp_path)
    assert err.source == str(tmp_path / "pyproject.toml") and err.problems == ["no [tool.lrsup] table"]


def test_pyproject_problems_carry_the_table_path(tmp_path):
    err = problems_of(
        None,
        tmp_path,
        '[tool.lrsup]\nsurprise = 1\n[[tool.lrsup.policy]]\nuse = "plateau"\nfactor = 2\n',
        name="pyproject.toml",
    )
    assert err.source == str(tmp_path / "pyproject.toml")
    assert err.problems == [
        "tool.lrsup.surprise: unknown key (got 1); expected one of: agent, notify, policy, population, run",
        "tool.lrsup.policy[0].factor: Plateau does not support a factor >= 1.0; got factor=2.0 (got 2)",
    ]


def test_pyproject_tool_lrsup_not_a_table(tmp_path):
    err = problems_of(None, tmp_path, "[tool]\nlrsup = 3\n", name="pyproject.toml")
    assert err.problems == ["tool.lrsup: expected a table (got 3)"]


def test_pyproject_syntax_error_is_reported_during_discovery(tmp_path):
    err = problems_of(None, tmp_path, "[tool.lrsup\n", name="pyproject.toml")
    assert err.source == str(tmp_path / "pyproject.toml")
    assert err.problems[0].startswith("TOML syntax error:") and "line 1" in err.problems[0]


def test_unreadable_file(tmp_path):
    path = write(tmp_path / "lrsup.toml", "")
    path.chmod(0)
    try:
        try:
            path.read_bytes()
        except PermissionError:
            pass
        else:
            pytest.skip("file permissions are not enforced for this user (root)")
        err = problems_of(None, tmp_path)
    finally:
        path.chmod(0o644)
    assert err.problems == ["cannot read: Permission denied"]
