"""End to end: ``lrsup run examples/digits/train.py`` rescues bad runs with real Keras.

Each test runs the supervisor CLI in a subprocess (``python -m lrsup.supervisor.cli.main run``)
with ``--run-dir`` under tmp_path and reads the run's journal.jsonl and metrics.jsonl:

- SGD at lr 1.0 and Adam at lr 1.0 collapse on their own; the default stack's range test
  (lr_find, auto, run as a probe before the fit) sees the LR far above its suggestion and
  the fit starts at the suggestion: > 85%;
- SGD at lr 1e-4 barely learns; the default stack's range test raises it: > 90%;
- a NaN injected mid-run (``--poison-epoch``) is rolled back; the final accuracy is within
  2 points of the clean run's;
- a plateau config on a float-LR and on an ExponentialDecay run: the trainer's own epoch
  records show the LR change at exactly the decided step.

``LRSUP_E2E_STACK=explicit`` runs the "no config" tests with the default stack spelled as
``module:Class`` specs (for a checkout whose entry points are not installed yet).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")
pytest.importorskip("sklearn")

pytestmark = [pytest.mark.keras, pytest.mark.timeout(200)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "digits" / "train.py"

EXPLICIT_DEFAULTS = """
[[policy]]
use = "lrsup.policies.divergence:Divergence"
[[policy]]
use = "lrsup.policies.lr_find:LRFind"
mode = "auto"
[[policy]]
use = "plateau"
monitor = "val_loss"
factor = 0.5
patience = 3
cooldown = 0
min_lr = 1e-6
"""


def lrsup_run(tmp_path: Path, *script_args: str, config: str | None = None, timeout: float = 150) -> dict:
    """Run the CLI on the digits script; return its run directory's journal, records and output."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "lrsup.supervisor.cli.main", "run"]
    if config is None and os.environ.get("LRSUP_E2E_STACK") == "explicit":
        config = EXPLICIT_DEFAULTS
    if config is not None:
        (tmp_path / "lrsup.toml").write_text(config)
        cmd += ["--config", str(tmp_path / "lrsup.toml")]
    cmd += ["--run-dir", str(run_dir), str(SCRIPT), "--", *script_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("LRSUP_RUN_DIR", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    log = (run_dir / "trainer.log").read_text() if (run_dir / "trainer.log").exists() else ""
    out = proc.stdout + proc.stderr + log
    found = re.findall(r"final val accuracy: ([0-9.]+)", out)
    return {
        "rc": proc.returncode,
        "out": out,
        "accuracy": float(found[-1]) if found else None,
        "journal": _lines(run_dir / "journal.jsonl"),
        "metrics": _lines(run_dir / "metrics.jsonl"),
    }


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def decisions(run: dict, action: str | None = None) -> list[dict]:
    out = [j for j in run["journal"] if j.get("type") == "decision" and j.get("suppressed") is None]
    return [j for j in out if action is None or j.get("action") == action]


def records(run: dict, kind: str) -> list[dict]:
    return [r for r in run["metrics"] if r.get("type") == kind]


@pytest.mark.parametrize("optimizer, epochs", [("sgd", "15"), ("adam", "8")])
def test_an_lr_far_too_high_is_lowered_by_the_range_test_and_learns(tmp_path, optimizer, epochs):
    run = lrsup_run(tmp_path, "--optimizer", optimizer, "--lr", "1.0", "--epochs", epochs)
    assert run["rc"] == 0, run["out"][-3000:]
    # the range test runs as a probe before the fit; the fit starts at its suggestion (a set_lr on its start record)
    chosen = [d for d in decisions(run, "set_lr") if d["policy"] == "lr_find"]
    assert chosen, run["journal"]
    first = chosen[0]
    assert "the run's LR 1 is more than 10 x that" in first["reason"], first
    assert first["lr"] is not None and first["lr"] < 0.1
    acks = [a for a in records(run, "ack") if a["seq"] == first["seq"]]
    assert acks and acks[0]["lr"] == pytest.approx(first["lr"], rel=1e-4)  # the trainer runs at the suggestion
    [fit] = [r for r in records(run, "start") if not r.get("probe")]
    assert records(run, "epoch")[0]["lr"] == pytest.approx(first["lr"], rel=1e-4)  # from the fit's first epoch
    if not decisions(run, "rollback"):  # no step of the fit's went to the test
        assert records(run, "epoch")[-1]["step"] == fit["epochs"] * fit["steps_per_epoch"]
    assert run["accuracy"] is not None and run["accuracy"] > 0.85, run["out"][-3000:]


def test_sgd_lr_1e_4_is_raised_and_learns(tmp_path):
    run = lrsup_run(tmp_path, "--optimizer", "sgd", "--lr", "1e-4", "--epochs", "15")
    assert run["rc"] == 0, run["out"][-3000:]
    assert run["accuracy"] is not None and run["accuracy"] > 0.90, (run["accuracy"], run["journal"])


def test_nan_mid_run_is_rolled_back_and_costs_under_two_points(tmp_path):
    clean = lrsup_run(tmp_path / "clean", "--optimizer", "sgd", "--lr", "0.01", "--epochs", "15")
    poisoned = lrsup_run(
        tmp_path / "poison", "--optimizer", "sgd", "--lr", "0.01", "--epochs", "15", "--poison-epoch", "6"
    )
    assert clean["rc"] == 0 and poisoned["rc"] == 0, poisoned["out"][-3000:]
    assert "poisoned the weights" in poisoned["out"]
    assert [a for a in records(poisoned, "ack") if a["cmd"] == "rollback"], poisoned["journal"]
    final = records(poisoned, "epoch")[-1]["logs"]
    assert all(math.isfinite(v) for v in final.values())
    assert abs(poisoned["accuracy"] - clean["accuracy"]) <= 0.02, (clean["accuracy"], poisoned["accuracy"])


PLATEAU = """
[agent]
verdict_timeout = 30.0
[[policy]]
use = "plateau"
monitor = "loss"
factor = 0.5
patience = 0
cooldown = 100
min_delta = 10.0
"""


@pytest.mark.parametrize("schedule", [False, True], ids=["float_lr", "exponential_decay"])
def test_plateau_cut_shows_at_exactly_the_decided_step(tmp_path, schedule):
    args = ["--optimizer", "sgd", "--lr", "0.01", "--epochs", "3"] + (["--schedule"] if schedule else [])
    # An optimizer on a LearningRateSchedule is the script's own LR logic: by default lrsup's
    # plateau stands down for it (one owner per LR); taking the LR over drives the schedule
    # through lrsup's multiplier, which is what this test checks.
    config = PLATEAU + ('[run]\nlr_owner = "lrsup"\n' if schedule else "")
    run = lrsup_run(tmp_path, *args, config=config)
    assert run["rc"] == 0, run["out"][-3000:]
    cuts = [d for d in decisions(run) if d.get("lr") is not None]
    assert cuts, run["journal"]
    cut = cuts[0]
    epochs = records(run, "epoch")
    decided = next(e for e in epochs if e["step"] == cut["step"])
    later = next(e for e in epochs if e["step"] > cut["step"])
    acks = [a for a in records(run, "ack") if a["step"] == cut["step"]]
    assert acks and not acks[0]["late"]
    assert acks[0]["lr"] == pytest.approx(cut["lr"], rel=1e-4)
    if schedule:
        # ExponentialDecay(lr, steps_per_epoch, 0.9): lr(step) = 0.01 * 0.9 ** (step / spe); halved from the cut on
        spe = records(run, "start")[0]["steps_per_epoch"]
        assert decided["lr"] == pytest.approx(0.01 * 0.9 ** (decided["step"] / spe), rel=1e-4)
        assert later["lr"] == pytest.approx(0.5 * 0.01 * 0.9 ** (later["step"] / spe), rel=1e-4)
    else:
        assert decided["lr"] == pytest.approx(0.01) and later["lr"] == pytest.approx(cut["lr"])
        assert cut["lr"] == pytest.approx(0.005)
    batches_after = [b for b in records(run, "batch") if b["step"] > cut["step"]]
    assert batches_after and batches_after[0]["lr"] < decided["lr"]
