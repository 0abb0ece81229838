"""A script that fits twice under ``lrsup run`` (real Keras): a divergence in fit 2 is rescued inside fit 2.

Fit 1 trains a small regression at SGD 0.01; the script freezes a layer, recompiles at SGD
1e4 and fits again: the loss overflows at once. The rescue must go to fit 2's start
checkpoint at a cut of fit 2's LR (issue 13: it went to fit 1's checkpoint and LR, twice
to a checkpoint that no longer existed), and the journal and report must show the stages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.keras, pytest.mark.timeout(200)]

SCRIPT = """
import numpy as np
import keras

keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(640, 8)).astype("float32")
y = (x @ np.arange(1, 9, dtype="float32") / 8)[:, None]
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
model.fit(x, y, epochs=3, batch_size=32, validation_split=0.2, verbose=0)
model.layers[0].trainable = False
model.compile(optimizer=keras.optimizers.SGD(1e4), loss="mse")
history = model.fit(x, y, epochs=4, batch_size=32, validation_split=0.2, verbose=0)
print("final loss", history.history["loss"][-1])
"""


def test_a_divergence_in_fit_two_rolls_back_to_fit_twos_start_at_a_cut_of_fit_twos_lr(tmp_path: Path) -> None:
    (tmp_path / "two_fits.py").write_text(SCRIPT)
    (tmp_path / "lrsup.toml").write_text('[[policy]]\nuse = "divergence"\n')
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("LRSUP_RUN_DIR", None)
    cmd = [sys.executable, "-m", "lrsup.supervisor.cli.main", "run", "--config", "lrsup.toml"]
    cmd += ["--run-dir", str(run_dir), "two_fits.py"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    journal = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    stages = [(j["fit"], j["lr"]) for j in journal if j["type"] == "stage"]
    assert [fit for fit, _ in stages] == [1, 2] and stages[1][1] == pytest.approx(1e4)
    starts = {r["fit"]: r["time"] for r in metrics if r["type"] == "start"}
    fit2_checkpoints = {r["name"]: r for r in metrics if r["type"] == "checkpoint" and r["time"] >= starts[2]}
    rollbacks = [j for j in journal if j["type"] == "decision" and j["action"] == "rollback" and j["seq"]]
    assert rollbacks, out[-3000:]
    control = {c["seq"]: c for c in map(json.loads, (run_dir / "control.jsonl").read_text().splitlines())}
    first = control[rollbacks[0]["seq"]]
    assert first["checkpoint"] in fit2_checkpoints  # fit 2's own start checkpoint, not fit 1's
    assert first["lr"] == pytest.approx(1e3)  # the cut from fit 2's LR (SGD: x0.1), never fit 1's 0.01
    assert "CheckpointError" not in out and not [r for r in metrics if r["type"] == "error"]
    assert "| fit 2 | SGD | 4 of 4 | 1e+04 |" in (run_dir / "report.md").read_text()


CRASH_IN_FIT_TWO = """
import os
import numpy as np
import keras

keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(640, 8)).astype("float32")
y = (x @ np.arange(1, 9, dtype="float32") / 8)[:, None]
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
head = model.fit(x, y, epochs=3, batch_size=32, validation_split=0.2, verbose=0)
print("fit 1 epochs", head.epoch, "val_loss", len(head.history["val_loss"]), flush=True)
model.layers[0].trainable = False
model.compile(optimizer=keras.optimizers.SGD(0.005), loss="mse")


class Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1 and os.environ.get("LRSUP_ATTEMPT") == "1":
            raise RuntimeError("simulated crash in fit 2")


tune = model.fit(x, y, epochs=4, batch_size=32, validation_split=0.2, verbose=0, callbacks=[Crash()])
print("fit 2 epochs", tune.epoch, flush=True)
"""


def test_a_restart_after_a_crash_in_fit_two_skips_fit_one_and_resumes_fit_two(tmp_path: Path) -> None:
    (tmp_path / "crash.py").write_text(CRASH_IN_FIT_TWO)
    (tmp_path / "lrsup.toml").write_text('[run]\nbackoff_base = 0.5\n\n[[policy]]\nuse = "divergence"\n')
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("LRSUP_RUN_DIR", None)
    cmd = [sys.executable, "-m", "lrsup.supervisor.cli.main", "run", "--config", "lrsup.toml"]
    cmd += ["--run-dir", str(run_dir), "crash.py"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    log = (run_dir / "trainer.log").read_text() if (run_dir / "trainer.log").exists() else ""
    out = proc.stdout + proc.stderr + log
    assert proc.returncode == 0, out[-3000:]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    starts = [(r["pid"], r["fit"], r["initial_epoch"]) for r in metrics if r["type"] == "start"]
    assert len({pid for pid, _, _ in starts}) == 2, starts  # one restart
    second = [(fit, initial) for pid, fit, initial in starts if pid == starts[-1][0]]
    assert second == [(1, 3), (2, 1)]  # fit 1 ran no epoch; fit 2 resumed after its epoch-end checkpoint
    assert log.count("fit 1 epochs [0, 1, 2] val_loss 3") == 2  # both attempts: the skipped fit's History, rebuilt
    assert "fit 2 epochs [1, 2, 3]" in log
