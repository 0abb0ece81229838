"""A tiny real Keras training under LrsupCallback, for one backend (``KERAS_BACKEND``), with an
in-process fake supervisor writing commands at exact points; run by tests/agent/test_backends.py
in a subprocess per backend.

The model is one weight ``w`` (Dense(1), no bias, starting at 0) trained on x = 1 with the
loss mean(y_pred) = w, so every gradient is 1: SGD with momentum ``m`` does ``v = m*v - lr;
w += v`` at every step, and the weight after each step (recorded without disturbing the
trainer) shows the learning rate and the optimizer state each update really used. The test
replays the same plan in plain Python and compares.

The fake supervisor is a callback placed before ``LrsupCallback``: at a planned batch end it
writes the command to control.jsonl and rings the bell (as ``lrsup run`` does after reading
that batch's record: the agent applies it at this batch end, before the next batch); at every
epoch end it writes the planned commands, then the verdict (the agent applies them in its
verdict wait, before the next epoch's first batch); a thread releases the start barrier once the
start record is written. One counter numbers the commands, as the supervisor does.

Usage: KERAS_BACKEND=jax python tests/agent/backend_trainer.py OUT_DIR
(writes OUT_DIR/float, OUT_DIR/native run directories and OUT_DIR/result.json).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from lrsup.supervisor.agent.keras_callback import LrsupCallback, _close_agents  # noqa: E402
from lrsup.supervisor.protocol.doorbell import BELL_FILE, Bell, ControlWriter  # noqa: E402
from lrsup.supervisor.protocol.jsonl import iter_objects  # noqa: E402
from lrsup.supervisor.protocol.wire import CONTROL_FILE, METRICS_FILE, make_command  # noqa: E402
from tests.agent.backend_plan import MOMENTUM, PLANS, STEPS  # noqa: E402


class FakeSupervisor(keras.callbacks.Callback):
    """Writes the plan's commands at their batch ends and epoch ends, and the verdicts."""

    def __init__(self, run_dir: Path, commands: list) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.commands = commands
        self.seq = 0
        self.epoch = 0
        self.writer: ControlWriter | None = None
        self.lock = threading.Lock()

    def _send(self, cmd: str, **args) -> None:
        with self.lock:
            if self.writer is None:
                self.writer = ControlWriter(self.run_dir / CONTROL_FILE, self.run_dir / BELL_FILE)
            self.seq += 1
            self.writer.write(make_command(self.seq, cmd, time=time.time(), **args))

    def _release_start(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(r.get("type") == "start" for r in iter_objects(self.run_dir / METRICS_FILE)):
                self._send("verdict", epoch=-1)
                return
            time.sleep(0.01)

    def on_train_begin(self, logs=None):
        # The start record is written at the first epoch's begin, after the agent counted the
        # lines already in control.jsonl as history: its verdict must follow it.
        threading.Thread(target=self._release_start, daemon=True).start()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for epoch, at, cmd, args in self.commands:
            if (epoch, at) == (self.epoch, batch):
                self._send(cmd, **args)

    def on_epoch_end(self, epoch, logs=None):
        for at_epoch, at, cmd, args in self.commands:
            if (at_epoch, at) == (epoch, None):
                self._send(cmd, **args)
        self._send("verdict", epoch=epoch)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class WeightProbe(keras.callbacks.Callback):
    """The weight after every step, read without syncing the trainer's state (on JAX the live
    weights are in the trainer's state during an epoch; syncing here would hide a lost command)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[float] = []

    def _kernel(self) -> float:
        model = self._model  # not self.model: on JAX that property syncs the trainer's state
        state = getattr(model, "_jax_state", None)
        if state is not None and not getattr(model, "_jax_state_synced", True):
            return float(np.asarray(state["trainable_variables"][0]).reshape(-1)[0])
        return float(keras.ops.convert_to_numpy(model.layers[0].kernel).reshape(-1)[0])

    def on_train_begin(self, logs=None):
        self.weights.append(self._kernel())

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(self._kernel())


def make_model(lr) -> keras.Model:
    if isinstance(lr, dict):
        lr = keras.optimizers.schedules.ExponentialDecay(
            lr["initial_learning_rate"], lr["decay_steps"], lr["decay_rate"]
        )
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=MOMENTUM), loss=lambda y, p: keras.ops.mean(p))
    return model


def run(out: Path, name: str) -> dict:
    plan = PLANS[name]
    run_dir = out / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"agent": {"verdict_timeout": 20.0, "heartbeat_interval": 60.0}}))
    Bell(run_dir / BELL_FILE).close()  # lrsup run creates the bell before the trainer starts
    model = make_model(plan["lr"])
    probe, supervisor = WeightProbe(), FakeSupervisor(run_dir, plan["commands"])
    x = np.ones((STEPS * 8, 1), "float32")
    try:
        model.fit(
            x,
            np.zeros_like(x),
            batch_size=8,
            epochs=plan["epochs"],
            verbose=0,
            shuffle=False,
            callbacks=[probe, supervisor, LrsupCallback(run_dir)],
        )
    finally:
        supervisor.close()
    result = {"weights": probe.weights, "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations))}
    mid = run_dir / "checkpoints" / "mid-3.weights.h5"
    if mid.exists():  # what the mid-epoch checkpoint holds
        model.load_weights(mid)
        result["mid_kernel"] = float(keras.ops.convert_to_numpy(model.layers[0].kernel).reshape(-1)[0])
    return result


def main(out: Path) -> None:
    keras.utils.set_random_seed(0)
    result = {"backend": keras.backend.backend()}
    for name in PLANS:
        result[name] = run(out, name)
    _close_agents()
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
