"""A third-party policy package, installed for real, is found and used by ``lrsup``.

examples/plugin (``lrsup-target-stop``) is built and installed with pip into a temporary
directory (from a copy, so the checkout gets no build files), then put on ``PYTHONPATH``:
``lrsup policies`` lists ``target_stop`` from its entry point, and ``lrsup run`` with
``use = "target_stop"`` stops the fake trainer as soon as val_loss reaches the target.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "plugin"
FAKE = ROOT / "tests" / "fakes" / "fake_trainer.py"
LRSUP = [sys.executable, "-m", "lrsup.supervisor.cli.main"]

CONFIG = """
[[policy]]
use = "target_stop"
monitor = "val_loss"
mode = "min"
target = 0.75

[run]
grace_period = 1.0
"""


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """An environment whose PYTHONPATH holds the installed plug-in."""
    base = tmp_path_factory.mktemp("plugin")
    source, target = base / "src", base / "site"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-input",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (target / "lrsup_target_stop").is_dir()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")])), COLUMNS="200"
    )
    env.pop("LRSUP_RUN_DIR", None)
    return env


def lrsup(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LRSUP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_the_plugin_is_not_there_without_installing_it(tmp_path):
    env = dict(os.environ, COLUMNS="200")
    result = lrsup("policies", cwd=tmp_path, env=env)
    assert result.returncode == 0 and "target_stop" not in result.stdout


def test_lrsup_policies_lists_the_plugin(plugin_env, tmp_path):
    result = lrsup("policies", cwd=tmp_path, env=plugin_env)
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if "target_stop" in line]
    assert "lrsup_target_stop:TargetStop" in row and "cannot load" not in result.stdout


def test_a_run_with_the_plugin_stops_at_the_target(plugin_env, tmp_path):
    (tmp_path / "lrsup.toml").write_text(CONFIG)
    result = lrsup(
        "run",
        "--run-dir",
        "run",
        str(FAKE),
        "--",
        "--epochs",
        "8",
        "--steps",
        "3",
        "--val-loss",
        "0.9,0.8,0.7,0.6",
        cwd=tmp_path,
        env=plugin_env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "run"
    journal = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    decisions = [d for d in journal if d["type"] == "decision"]
    assert [(d["policy"], d["action"], d["epoch"], d["suppressed"]) for d in decisions] == [
        ("target_stop", "stop", 2, None)
    ]
    assert "val_loss 0.7 reached the target 0.75 at epoch 3" in decisions[0]["reason"]
    epochs = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "epoch"
    ]
    assert len(epochs) == 3 < 8
