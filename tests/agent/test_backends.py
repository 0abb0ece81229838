"""Every Keras 3 backend applies lrsup's commands at their exact step (issue 13, item 6).

One subprocess per backend (``KERAS_BACKEND`` set) runs ``backend_trainer.py``: a one-weight
model under ``LrsupCallback`` with an in-process fake supervisor that writes every command kind
at epoch ends (applied before the next epoch's first batch) and at batch ends (applied before
the next batch), including a rollback in the middle of an epoch and a mid-epoch checkpoint, over
a float learning rate and over the script's own ``LearningRateSchedule``. This module replays
the same plan in plain Python (SGD with momentum on a gradient of 1) and checks, step by step:
the weight after every update (so the learning rate and the momentum each update used), the
optimizer's step count, what the checkpoints hold, and that each ack and epoch record reports
the learning rate the optimizer holds.

TensorFlow and JAX run in ``make test`` (both are installed by ``make install``); PyTorch runs
where torch is installed (``.venv/bin/pip install torch==2.13.0``, see docs/compat.md) and is
skipped with that reason otherwise. About 10-20 s per backend.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lrsup.supervisor.protocol.jsonl import iter_objects
from lrsup.supervisor.protocol.schedules import Schedule
from lrsup.supervisor.protocol.wire import METRICS_FILE
from tests.agent.backend_plan import MOMENTUM, PLANS, STEPS

pytestmark = [pytest.mark.keras, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = {
    "tensorflow": "tensorflow",
    "jax": "jax",
    "torch": "torch",
}
INSTALL = {
    "tensorflow": "make install",
    "jax": "make install (or pip install -e '.[jax]')",
    "torch": "pip install torch==2.13.0 (a CPU build; see docs/compat.md)",
}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def backend_run(request, tmp_path_factory) -> tuple[str, Path, dict]:
    backend = request.param
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"{backend} is not installed: {INSTALL[backend]}")
    out = tmp_path_factory.mktemp(f"backend-{backend}")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("LRSUP_RUN_DIR", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "agent" / "backend_trainer.py"), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    assert result["backend"] == backend
    return backend, out, result


def records(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in iter_objects(run_dir / METRICS_FILE) if r.get("type") == kind]


class Replay:
    """The plan replayed in Python: SGD with momentum on a gradient of 1, lrsup's LR rules.

    ``lr_var`` is a float learning rate's variable; with the script's own schedule (``native``)
    the optimizer's LR is ``native(it) * native_mult``; lrsup's schedule sets either at each
    step (``set_lr`` of the LrControl), and over a native schedule clearing it puts back the
    multiplier that was there before.
    """

    def __init__(self, plan: dict) -> None:
        lr = plan["lr"]
        self.native = None
        self.lr_var = None
        if isinstance(lr, dict):
            self.native = lambda it: lr["initial_learning_rate"] * lr["decay_rate"] ** (it / lr["decay_steps"])
        else:
            self.lr_var = lr
        self.w = self.v = 0.0
        self.it = 0
        self.m = MOMENTUM
        self.native_mult = 1.0
        self.saved_native_mult: float | None = None
        self.sched: Schedule | None = None
        self.mult = 1.0
        self.checkpoints: dict[str, dict] = {}
        self.weights = [0.0]
        self.acks: list[tuple[str, float]] = []
        self.epoch_lrs: list[float] = []

    def lr(self) -> float:
        """The learning rate the optimizer holds now (the next update's, unless lrsup's schedule moves it)."""
        return self.native(self.it) * self.native_mult if self.native else self.lr_var

    def _set_lr(self, lr: float) -> None:
        if self.native:
            self.native_mult = lr / self.native(self.it)
        else:
            self.lr_var = lr

    def _apply(self) -> None:
        self._set_lr(self.sched(self.it) * self.mult)

    def update(self) -> None:
        if self.sched is not None:
            self._apply()  # the agent's batch_begin
        self.v = self.m * self.v - self.lr()
        self.w += self.v
        self.it += 1
        self.weights.append(self.w)

    def _state(self) -> dict:
        keep = ("w", "v", "it", "lr_var", "native_mult", "saved_native_mult", "sched", "mult")
        return copy.deepcopy({k: getattr(self, k) for k in keep})

    def command(self, cmd: str, args: dict) -> None:
        if cmd == "set_lr":
            if self.sched is not None:
                self.mult = args["lr"] / self.sched(self.it)
                self._apply()
            else:
                self._set_lr(args["lr"])
        elif cmd == "scale_lr":
            if self.sched is not None:
                self.mult *= args["factor"]
                self._apply()
            elif self.native:
                self.native_mult *= args["factor"]
            else:
                self.lr_var *= args["factor"]
        elif cmd == "set_schedule":
            if self.native and self.sched is None:
                self.saved_native_mult = self.native_mult
            self.sched, self.mult = Schedule(args["schedule"]), 1.0
            self._apply()
        elif cmd == "clear_schedule":
            if self.native and self.sched is not None:
                self.native_mult = self.saved_native_mult
            self.sched, self.saved_native_mult = None, None
        elif cmd == "checkpoint":
            self.checkpoints[args["name"]] = self._state()
        elif cmd == "rollback":
            for key, value in copy.deepcopy(self.checkpoints[args["checkpoint"]]).items():
                setattr(self, key, value)
            if self.sched is not None:
                self._apply()
        elif cmd == "set_hparam":
            self.m = args["value"]
        self.acks.append((cmd, self.lr()))

    def run(self, plan: dict) -> "Replay":
        commands = plan["commands"]
        for epoch in range(plan["epochs"]):
            for batch in range(STEPS):
                self.update()
                for e, b, cmd, args in commands:
                    if (e, b) == (epoch, batch):
                        self.command(cmd, args)
            self.checkpoints[f"epoch-{epoch + 1:04d}"] = self._state()  # before the epoch record
            self.epoch_lrs.append(self.lr())
            for e, b, cmd, args in commands:
                if (e, b) == (epoch, None):
                    self.command(cmd, args)
        return self


@pytest.mark.parametrize("scenario", sorted(PLANS))
def test_every_update_uses_the_commanded_lr_and_state(backend_run, scenario):
    backend, _, result = backend_run
    replay = Replay(PLANS[scenario]).run(PLANS[scenario])
    got = result[scenario]["weights"]
    assert len(got) == len(replay.weights)
    for i, (have, want) in enumerate(zip(got, replay.weights)):
        # the first update that differs names the step whose LR or optimizer state was wrong
        assert have == pytest.approx(want, rel=1e-4, abs=1e-6), f"{backend} {scenario}: weight after update {i}"
    assert result[scenario]["iterations"] == replay.it  # a rollback set the step count back


@pytest.mark.parametrize("scenario", sorted(PLANS))
def test_records_report_the_lr_the_optimizer_holds(backend_run, scenario):
    backend, out, _ = backend_run
    run_dir = out / scenario
    replay = Replay(PLANS[scenario]).run(PLANS[scenario])
    assert records(run_dir, "error") == []  # no command refused
    acks = [(a["cmd"], a["lr"]) for a in records(run_dir, "ack")]
    assert [cmd for cmd, _ in acks] == [cmd for cmd, _ in replay.acks]
    for (cmd, have), (_, want) in zip(acks, replay.acks):
        assert have == pytest.approx(want, rel=1e-4), f"{backend} {scenario}: ack of {cmd}"
    epoch_lrs = [r["lr"] for r in records(run_dir, "epoch")]
    assert epoch_lrs == pytest.approx(replay.epoch_lrs, rel=1e-4)


def test_a_mid_epoch_checkpoint_holds_that_steps_weights(backend_run):
    backend, _, result = backend_run
    plan = PLANS["float"]
    replay = Replay(plan).run(plan)
    assert result["float"]["mid_kernel"] == pytest.approx(replay.checkpoints["mid-3"]["w"], rel=1e-5)
