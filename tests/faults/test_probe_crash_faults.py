"""Issue 17, item 1, with real Keras: the trainer dies *inside* the LR range test (now a probe
before the first fit), with step checkpoints on. The next attempt must come back consistent:
no mid-ramp checkpoint restored, no ramp LR kept, no rollback to a checkpoint that is gone,
the run completing at the script's own LR with the model the plain script trains.

The script is an ordinary digits MLP fed by a ``keras.utils.PyDataset`` whose ``__getitem__``
kills the process (``os._exit``, as a segfault or an OOM kill would) at its 30th batch, once:
a marker file beside it says the crash has happened. The probe reads the same dataset, so the
first attempt dies in the middle of the ramp.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")
pytest.importorskip("sklearn")

pytestmark = [pytest.mark.keras, pytest.mark.timeout(240)]

SCRIPT = """
import os, sys
import numpy as np
import keras
from sklearn.datasets import load_digits

MARKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crashed-once")
keras.utils.set_random_seed(0)
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
x_train, y_train, x_val, y_val = x[:1400], y[:1400], x[1400:], y[1400:]


class Batches(keras.utils.PyDataset):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __len__(self):
        return 1400 // 32

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == 30 and not os.path.exists(MARKER):
            open(MARKER, "w").close()
            os._exit(9)  # dies as a killed process does: no traceback, no end record
        return x_train[i * 32:(i + 1) * 32], y_train[i * 32:(i + 1) * 32]


model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(keras.optimizers.Adam(0.001), "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(Batches(), validation_data=(x_val, y_val), epochs=6, verbose=0)
print("final val accuracy:", model.evaluate(x_val, y_val, verbose=0)[1])
"""

CONFIG = """
[agent]
checkpoint_every_steps = 10
verdict_timeout = 30.0

[run]
backoff_base = 0.1
backoff_cap = 0.2
"""


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_a_trainer_killed_inside_the_range_test_probe_comes_back_at_the_scripts_lr(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    (tmp_path / "lrsup.toml").write_text(CONFIG)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "lrsup.supervisor.cli.main", "run", "--config", str(tmp_path / "lrsup.toml")]
    proc = subprocess.run(
        [*cmd, "--run-dir", str(run_dir), str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=220
    )
    out = (
        proc.stdout
        + proc.stderr
        + ((run_dir / "trainer.log").read_text() if (run_dir / "trainer.log").exists() else "")
    )
    assert (tmp_path / "crashed-once").exists(), out[-3000:]  # the first attempt did die inside the probe
    assert proc.returncode == 0, out[-3000:]
    metrics = _lines(run_dir / "metrics.jsonl")
    starts = [r for r in metrics if r.get("type") == "start"]
    assert starts[0].get("probe") is True  # the first attempt's first start is the probe's
    assert len({s["pid"] for s in starts}) == 2  # one restart
    assert not any(s.get("probe") for s in starts[1:])  # the restarted attempt gets no second probe
    epochs = [r for r in metrics if r.get("type") == "epoch"]
    assert len(epochs) == 6 and [e["epoch"] for e in epochs] == list(range(6))  # the script's epochs, all there
    # no ramp LR survived the crash: every epoch trained at the script's LR (nothing else moved it)
    assert all(e["lr"] == pytest.approx(0.001, rel=1e-5) for e in epochs), [e["lr"] for e in epochs]
    errors = [r for r in metrics if r.get("type") == "error" and r.get("seq") is not None]
    assert not errors, errors  # no command refused (no rollback to a checkpoint that is gone)
    assert "CheckpointError" not in out
    accuracy = float(out.rsplit("final val accuracy:", 1)[1].split()[0])
    # the same model as the script run plainly (the marker is there now: no crash)
    plain = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert accuracy == pytest.approx(float(plain.stdout.rsplit("final val accuracy:", 1)[1].split()[0]), abs=0.01)
    journal = _lines(run_dir / "journal.jsonl")
    assert any(j.get("event") == "finished" or j.get("event") == "trainer_exited" for j in journal)
