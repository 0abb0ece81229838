"""End to end: one owner per learning rate (issue 13), with a script's own ReduceLROnPlateau.

The script cuts its LR x0.2 at every epoch after the first (``min_delta`` so large that no
epoch improves); lrsup's plateau (x0.1, the same patience) would cut on the same epochs.
By default the script keeps its LR: its steps alone, lrsup's plateau never asked, and the
journal, the terminal and the report say so. With ``[run] lr_owner = "lrsup"`` the script's
callback is left out of the fit and lrsup's plateau cuts alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("keras")

pytestmark = [pytest.mark.keras, pytest.mark.timeout(240)]

SCRIPT = """
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import keras

keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.Adam(0.001), loss="mse")
reduce = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.2, patience=1, min_delta=1e9, min_lr=0.0)
model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[reduce])
"""

PLATEAU = """
[[policy]]
use = "divergence"
[[policy]]
use = "plateau"
monitor = "loss"
factor = 0.1
patience = 1
min_delta = 1e9
"""


def lrsup_run(tmp_path: Path, config: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "train.py").write_text(textwrap.dedent(SCRIPT))
    (tmp_path / "lrsup.toml").write_text(config)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "lrsup.supervisor.cli.main", "run", "--config", str(tmp_path / "lrsup.toml")]
    cmd += ["--run-dir", str(run_dir), str(tmp_path / "train.py")]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("LRSUP_RUN_DIR", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    lines = lambda name: [json.loads(line) for line in (run_dir / name).read_text().splitlines() if line.strip()]  # noqa: E731
    return {
        "rc": proc.returncode,
        "out": proc.stdout + proc.stderr,
        "journal": lines("journal.jsonl"),
        "metrics": lines("metrics.jsonl"),
        "run_dir": run_dir,
    }


def epoch_lrs(run: dict) -> list[float]:
    return [r["lr"] for r in run["metrics"] if r["type"] == "epoch"]


def test_the_scripts_reduce_lr_on_plateau_keeps_the_lr_by_default(tmp_path):
    run = lrsup_run(tmp_path, PLATEAU)
    assert run["rc"] == 0, run["out"][-3000:]
    assert epoch_lrs(run) == pytest.approx([0.001, 0.0002, 0.00004, 0.000008], rel=1e-4)  # x0.2: the script's alone
    assert not [d for d in run["journal"] if d["type"] == "decision" and d["policy"] == "plateau"]
    owner = [e for e in run["journal"] if e["type"] == "lr_owner"]
    assert [(e["event"], e["fit"], e["movers"], e["policies"]) for e in owner] == [
        ("stand_down", 1, ["ReduceLROnPlateau"], ["plateau"])
    ]
    assert "plateau stands down for this fit" in run["out"]  # shown live
    moved = [r["lr_moved_from"] for r in run["metrics"] if r["type"] == "epoch"]
    assert moved[0] is None and moved[1] == pytest.approx(0.001)  # the agent saw the script's cut
    from lrsup.supervisor.report.write import write_report

    assert "plateau stands down" in write_report(run["run_dir"]).md.read_text()


def test_take_over_leaves_the_scripts_callback_out_and_lrsups_plateau_cuts(tmp_path):
    run = lrsup_run(tmp_path, PLATEAU + '\n[run]\nlr_owner = "lrsup"\n')
    assert run["rc"] == 0, run["out"][-3000:]
    assert epoch_lrs(run) == pytest.approx([0.001, 0.001, 0.0001, 0.00001], rel=1e-4)  # x0.1: lrsup's alone
    (start,) = [r for r in run["metrics"] if r["type"] == "start"]
    assert start["lr_callbacks"] == ["ReduceLROnPlateau"] and start["lr_callbacks_left_out"] is True
    owner = [e for e in run["journal"] if e["type"] == "lr_owner"]
    assert [(e["event"], e["owner"]) for e in owner] == [("take_over", "lrsup")]
    assert "left out of this fit" in owner[0]["detail"]
