"""The lrsup command line: help, version, argument passing, start-up errors, policies, imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lrsup import __version__
from lrsup.supervisor.cli.main import app

cli = CliRunner()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print('hi')\n")
    return tmp_path


@pytest.fixture
def captured(monkeypatch):
    """Replace the supervisor loop: record what the command would run, return status 7."""
    calls = []

    def fake_run(config, *, script, args, run_dir, cwd, **kw):
        calls.append({"config": config, "script": script, "args": args, "run_dir": run_dir, "cwd": cwd})
        return 7

    monkeypatch.setattr("lrsup.supervisor.run.runner.run", fake_run)
    return calls


def test_version():
    result = cli.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"lrsup {__version__}"


def test_help_lists_commands():
    result = cli.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "run" in result.stdout and "policies" in result.stdout
    for command in (
        "ls",
        "status",
        "logs",
        "watch",
        "set-lr",
        "hold",
        "release",
        "stop",
        "resume",
        "replay",
        "report",
        "export",
    ):
        assert command in result.stdout, command


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "train.py", "--", "--epochs", "3"], ["--epochs", "3"]),
        (["run", "train.py", "--epochs", "3", "--config", "x"], ["--epochs", "3", "--config", "x"]),
        (["run", "train.py"], []),
        (["run", "train.py", "--", "--", "a"], ["--", "a"]),
    ],
)
def test_arguments_after_the_script_go_to_it(workdir, captured, argv, expected):
    result = cli.invoke(app, argv)
    assert result.exit_code == 7, result.output
    assert captured[0]["args"] == expected
    assert captured[0]["script"] == Path("train.py")
    assert captured[0]["config"].source == "(built-in defaults)"


def test_options_before_the_script_are_lrsup_s(workdir, captured):
    (workdir / "night.toml").write_text('[[policy]]\nuse = "plateau"\npatience = 4\n')
    result = cli.invoke(app, ["run", "--config", "night.toml", "--run-dir", "out/r1", "train.py", "--lr", "0.1"])
    assert result.exit_code == 7, result.output
    call = captured[0]
    assert call["config"].source.endswith("night.toml")
    assert call["config"].policies[0][2].patience == 4
    assert call["run_dir"].path == workdir / "out" / "r1"
    assert call["args"] == ["--lr", "0.1"]


def test_pyproject_tool_lrsup_is_found(workdir, captured):
    (workdir / "pyproject.toml").write_text('[tool.lrsup]\n[[tool.lrsup.policy]]\nuse = "plateau"\nfactor = 0.2\n')
    assert cli.invoke(app, ["run", "train.py"]).exit_code == 7
    assert captured[0]["config"].policies[0][2].factor == 0.2


def assert_no_run_dir(workdir: Path) -> None:
    assert not (workdir / "runs").exists()


def test_missing_script(workdir):
    result = cli.invoke(app, ["run", "missing.py", "--", "--epochs", "3"])
    assert result.exit_code == 2
    assert result.stderr == "lrsup: script 'missing.py' not found\n"
    assert "Traceback" not in result.output
    assert_no_run_dir(workdir)


def test_script_is_a_directory(workdir):
    (workdir / "pkg").mkdir()
    result = cli.invoke(app, ["run", "pkg"])
    assert result.exit_code == 2 and "'pkg' is a directory" in result.stderr


def test_invalid_configuration_names_file_and_fields(workdir):
    (workdir / "lrsup.toml").write_text('[[policy]]\nuse = "plateau"\nfactor = 2.0\npatience = -1\n[run]\nbogus = 1\n')
    result = cli.invoke(app, ["run", "train.py"])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"lrsup: {workdir / 'lrsup.toml'}: invalid configuration"
    assert any(line.startswith("  - policy[0].factor:") and "2.0" in line for line in lines[1:])
    assert any(line.startswith("  - policy[0].patience:") for line in lines[1:])
    assert any(line.startswith("  - run.bogus:") for line in lines[1:])
    assert "Traceback" not in result.output
    assert_no_run_dir(workdir)


def test_unknown_policy(workdir):
    (workdir / "lrsup.toml").write_text('[[policy]]\nuse = "nosuch"\n')
    result = cli.invoke(app, ["run", "train.py"])
    assert result.exit_code == 2
    assert "policy[0].use: unknown policy 'nosuch'" in result.stderr and "plateau" in result.stderr
    assert_no_run_dir(workdir)


def test_missing_config_file(workdir):
    result = cli.invoke(app, ["run", "--config", "nope.toml", "train.py"])
    assert result.exit_code == 2
    assert "nope.toml: invalid configuration" in result.stderr and "file not found" in result.stderr
    assert_no_run_dir(workdir)


def test_non_empty_run_dir_is_refused_and_left_alone(workdir):
    (workdir / "old").mkdir()
    (workdir / "old" / "journal.jsonl").write_text("keep me\n")
    result = cli.invoke(app, ["run", "--run-dir", "old", "train.py"])
    assert result.exit_code == 2
    assert "run directory" in result.stderr and "old" in result.stderr and "not empty" in result.stderr
    assert (workdir / "old" / "journal.jsonl").read_text() == "keep me\n"
    assert_no_run_dir(workdir)


def test_world_writable_run_dir_is_refused(workdir):
    (workdir / "open").mkdir()
    os.chmod(workdir / "open", 0o777)
    result = cli.invoke(app, ["run", "--run-dir", "open", "train.py"])
    assert result.exit_code == 2 and "world-writable" in result.stderr


def test_policies_lists_settings_and_defaults():
    result = cli.invoke(app, ["policies"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "plateau" in out and "lrsup.policies.plateau:Plateau" in out
    assert "factor: float = 0.1" in out and "patience: int = 10" in out and "monitor: str = 'val_loss'" in out


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def test_importing_the_cli_loads_no_keras_tensorflow_or_heavy_modules():
    code = (
        "import sys, lrsup.supervisor.cli.main\n"
        "heavy = [m for m in ('keras', 'tensorflow', 'rich', 'pydantic', 'watchdog') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "--help"],
        ["policies"],
        ["--version"],
        ["ls", "--runs-dir", "/nonexistent"],
        ["status", "/nonexistent"],
    ],
)
def test_commands_never_import_keras_or_tensorflow(argv):
    code = (
        "import sys\n"
        f"sys.argv = ['lrsup', *{argv!r}]\n"
        "from lrsup.supervisor.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print('LOADED', [m for m in ('keras', 'tensorflow') if m in sys.modules], file=sys.stderr)\n"
    )
    result = run_python(code)
    assert "LOADED []" in result.stderr, result.stderr


def test_help_loads_nothing_heavy():
    """``lrsup --help`` stays fast by what it does not import (its time is a benchmark:
    benchmarks/scale.py's cold start row, not a timed test on shared CPUs)."""
    heavy = ["keras", "tensorflow", "jax", "torch", "matplotlib", "ray", "lrsup.supervisor.run.runner"]
    code = (
        "import sys\n"
        "from lrsup.supervisor.cli import main\n"
        "try:\n    main.app(['--help'], prog_name='lrsup')\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "lrsup.supervisor.cli.main", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == f"lrsup {__version__}"
