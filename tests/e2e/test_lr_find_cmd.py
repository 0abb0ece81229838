"""End to end: ``lrsup lr-find`` on examples/digits/train.py with real Keras.

The range test (SGD with momentum, 100 steps from 1e-5 to 10) prints its suggestion and
writes lr_find.png; the LR it suggests then trains the same script, run plainly (no lrsup)
for 15 epochs, to over 90% validation accuracy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")
pytest.importorskip("sklearn")

pytestmark = [pytest.mark.keras, pytest.mark.timeout(260)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "digits" / "train.py"
SUGGESTED = re.compile(r"^suggested learning rate: ([0-9.eE+-]+) \(valley\)$", re.M)


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("LRSUP_RUN_DIR", None)
    return env


@pytest.fixture(scope="module")
def range_test(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("lr_find_digits")
    cmd = [
        sys.executable,
        "-m",
        "lrsup.supervisor.cli.main",
        "lr-find",
        "--run-dir",
        "run",
        str(SCRIPT),
        "--",
        "--optimizer",
        "sgd",
    ]
    proc = subprocess.run(
        cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    return proc, cwd / "run"


def test_lr_find_prints_a_suggestion_and_writes_the_plot(range_test):
    proc, run_dir = range_test
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = SUGGESTED.findall(proc.stdout)
    assert len(found) == 1, proc.stdout[-3000:]
    suggestion = float(found[0])
    assert 1e-5 < suggestion < 10
    journal = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    (rollback,) = [d for d in journal if d["type"] == "decision" and d["action"] == "rollback"]
    assert float(f"{rollback['lr']:.3g}") == suggestion  # what is printed is what the policy decided
    assert any(d["type"] == "decision" and d["action"] == "stop" for d in journal)
    if importlib.util.find_spec("matplotlib") is not None:
        assert (run_dir / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_suggested_lr_trains_a_plain_keras_run_well(range_test, tmp_path):
    proc, _ = range_test
    found = SUGGESTED.findall(proc.stdout)
    assert found, proc.stdout[-3000:] + proc.stderr[-3000:]
    plain = subprocess.run(
        [sys.executable, str(SCRIPT), "--optimizer", "sgd", "--lr", found[0], "--epochs", "15"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    accuracy = float(re.findall(r"final val accuracy: ([0-9.]+)", plain.stdout + plain.stderr)[-1])
    assert accuracy > 0.9, f"lr {found[0]}: val accuracy {accuracy}"
