"""Synthetic run directories written through the real protocol types.

``RunWriter`` appends records with ``jsonl.Appender`` exactly as the agent and the
runner do; ``synthetic_run`` is one complete, eventful run (a plateau cut, a
suppressed decision, a NaN epoch and a rollback, a refused command, a late cut, a
stop) with garbage lines and a torn last line, and ``EXPECTED`` says what a
reader should find in it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lrsup.supervisor.protocol.jsonl import Appender
from lrsup.supervisor.protocol.wire import (
    PROTOCOL_VERSION,
    AckRecord,
    BatchRecord,
    EndRecord,
    EpochRecord,
    ErrorRecord,
    HeartbeatRecord,
    StartRecord,
)

T0 = 1_790_000_000.0
SPE = 50  # steps per epoch
BATCH_EVERY = 10


class RunWriter:
    """Writes a run directory line by line; times are T0 + the offsets given."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.metrics = Appender(root / "metrics.jsonl")
        self.journal_file = Appender(root / "journal.jsonl")

    def start(
        self,
        t: float,
        *,
        lr: float = 0.1,
        epochs: int = 12,
        spe: int | None = SPE,
        pid: int = 4242,
        initial_epoch: int = 0,
        step: int = 0,
        fit: int = 1,
    ) -> None:
        self.metrics.write(
            StartRecord(
                fit=fit,
                time=T0 + t,
                pid=pid,
                optimizer="SGD",
                optimizer_config={"momentum": 0.9},
                lr=lr,
                steps_per_epoch=spe,
                epochs=epochs,
                initial_epoch=initial_epoch,
                step=step,
                keras_version="3.15.1",
                backend="tensorflow",
                agent="0.1.0",
            ).to_json()
        )

    def batches(
        self, t_start: float, epoch: int, lr: float, loss: float, *, spe: int = SPE, nan_at: int | None = None
    ) -> None:
        """Batch records every BATCH_EVERY batches of one epoch, spread over the 10 s that follow t_start."""
        for b in range(0, spe, BATCH_EVERY):
            value = math.nan if nan_at == b else loss * (1.15 - 0.3 * b / spe)
            self.metrics.write(
                BatchRecord(
                    time=T0 + t_start + 9.0 * b / spe,
                    epoch=epoch,
                    batch=b,
                    step=epoch * spe + b + 1,
                    lr=lr,
                    logs={"loss": value},
                ).to_json()
            )

    def epoch(self, t: float, epoch: int, lr: float, /, **logs: float) -> None:
        self.metrics.write(EpochRecord(time=T0 + t, epoch=epoch, step=(epoch + 1) * SPE, lr=lr, logs=logs).to_json())

    def ack(self, t: float, seq: int, cmd: str, epoch: int, step: int, lr: float | None, late: bool = False) -> None:
        self.metrics.write(AckRecord(time=T0 + t, seq=seq, cmd=cmd, epoch=epoch, step=step, lr=lr, late=late).to_json())

    def agent_error(self, t: float, seq: int, cmd: str, message: str) -> None:
        self.metrics.write(ErrorRecord(time=T0 + t, seq=seq, cmd=cmd, message=message).to_json())

    def heartbeat(self, t: float, epoch: int, step: int) -> None:
        self.metrics.write(HeartbeatRecord(time=T0 + t, epoch=epoch, step=step).to_json())

    def end(self, t: float, reason: str, epoch: int) -> None:
        self.metrics.write(EndRecord(time=T0 + t, reason=reason, epoch=epoch, step=(epoch + 1) * SPE).to_json())

    def journal(self, t: float, kind: str, **fields) -> None:
        self.journal_file.write({"v": PROTOCOL_VERSION, "type": kind, "time": T0 + t, **fields})

    def decision(
        self,
        t: float,
        seq: int | None,
        policy: str,
        action: str,
        reason: str,
        epoch: int,
        lr: float | None = None,
        suppressed: str | None = None,
    ) -> None:
        self.journal(
            t,
            "decision",
            seq=seq,
            policy=policy,
            action=action,
            lr=lr,
            reason=reason,
            epoch=epoch,
            step=(epoch + 1) * SPE,
            suppressed=suppressed,
        )

    def event(self, t: float, event: str, detail, **extra) -> None:
        self.journal(t, "event", event=event, detail=detail, **extra)

    def raw_metrics(self, data: bytes) -> None:
        with open(self.root / "metrics.jsonl", "ab") as f:
            f.write(data)

    def config(self, obj: dict) -> None:
        (self.root / "config.json").write_text(json.dumps(obj, indent=2))

    def close(self) -> None:
        self.metrics.close()
        self.journal_file.close()


CONFIG = {
    "source": "lrsup.toml",
    "policies": [{"use": "plateau", "monitor": "val_loss", "factor": 0.5, "patience": 2}],
    "agent": {"batch_every": BATCH_EVERY, "verdict_timeout": 10.0, "heartbeat_interval": 5.0},
    "notify": {"webhook": "https://hooks.example.com/x"},
}

XSS = "momentum <script>alert('x')</script> | pipe"

# (loss, val_loss, val_accuracy) per epoch, original attempt; epoch 5 diverges.
FIRST = [
    (2.0, 2.1, 0.30),
    (1.5, 1.6, 0.45),
    (1.2, 1.3, 0.55),
    (1.1, 1.25, 0.58),
    (1.0, 1.15, 0.62),
    (math.nan, math.nan, 0.10),
]
# After the rollback to the end of epoch 4: epochs 5..10 again.
SECOND = [
    (0.95, 1.05, 0.66),
    (0.9, 1.0, 0.68),
    (0.85, 0.98, 0.70),
    (0.8, 0.97, 0.71),
    (0.78, 0.99, 0.72),
    (0.77, 1.0, 0.73),
]

EXPECTED = {
    "epoch_rows": 12,
    "superseded_epochs": [5],  # the diverged epoch 5, redone after the rollback
    "best_epoch": 8,  # val_loss 0.97
    "best_val_loss": 0.97,
    "final_epoch": 10,
    "decisions": 6,
    "active_decisions": 5,
    "rollback_lost": 10.5,  # rollback at T0+60.5, kept epoch 4 ended at T0+50
    "wall_time": 122.0,
    "time_per_epoch": 10.0,
}


def write_synthetic_run(root: Path) -> Path:
    """The eventful run described in the module docstring."""
    w = RunWriter(root)
    w.config(CONFIG)
    w.journal(0.5, "event", event="spawned", detail="trainer pid 4242")
    w.start(0.0)
    w.event(1.0, "started", "training started (pid 4242, SGD, lr=0.1, 12 epochs)")
    lr = 0.1
    for e, (loss, val, acc) in enumerate(FIRST):
        t = 10.0 * e
        w.batches(t, e, lr, 1.0 if math.isnan(loss) else loss, nan_at=30 if math.isnan(loss) else None)
        if e == 2:
            w.raw_metrics(b"this is not json\n")
            w.raw_metrics(b'{"v":1,"type":"bogus","time":1}\n')
        w.heartbeat(t + 5.0, e, e * SPE + 25)
        w.epoch(
            t + 10.0,
            e,
            lr,
            loss=loss,
            accuracy=0.5 + 0.04 * e if not math.isnan(loss) else 0.1,
            val_loss=val,
            val_accuracy=acc,
        )
        if e == 3:
            w.decision(t + 10.2, None, "warmup", "set_lr", "warm-up is over", e, lr=0.1, suppressed="cooldown")
            w.decision(
                t + 10.3, 1, "plateau", "scale_lr", "val_loss did not improve on 1.3 by 1e-4 for 2 epochs", e, lr=0.05
            )
            w.ack(t + 10.4, 1, "scale_lr", e, (e + 1) * SPE, 0.05)
            w.journal(t + 10.5, "applied", seq=1, cmd="scale_lr", epoch=e, step=(e + 1) * SPE, lr=0.05, late=False)
            lr = 0.05
        if e == 5:
            w.decision(
                t + 10.5, 2, "nan_guard", "rollback", "loss is NaN at epoch 6: back to the end of epoch 5", e, lr=0.025
            )
            w.ack(t + 11.0, 2, "rollback", 4, (4 + 1) * SPE, 0.025)
            w.journal(t + 11.1, "applied", seq=2, cmd="rollback", epoch=4, step=5 * SPE, lr=0.025, late=False)
            lr = 0.025
    for i, (loss, val, acc) in enumerate(SECOND):
        e = 5 + i
        t = 60.0 + 10.0 * i
        w.batches(t + 0.5, e, lr, loss)
        w.epoch(t + 10.0, e, lr, loss=loss, accuracy=0.7 + 0.01 * i, val_loss=val, val_accuracy=acc)
        if e == 7:
            w.decision(t + 10.2, 3, "momentum", "set_hparam", XSS, e)
            w.agent_error(t + 10.3, 3, "set_hparam", "optimizer SGD has no hyperparameter 'beta_9'")
            w.journal(
                t + 10.4,
                "command_error",
                seq=3,
                cmd="set_hparam",
                message="optimizer SGD has no hyperparameter 'beta_9'",
            )
        if e == 8:
            w.decision(t + 10.2, 4, "plateau", "scale_lr", "val_loss did not improve for 2 epochs", e, lr=0.0125)
            w.ack(t + 12.0, 4, "scale_lr", e + 1, (e + 1) * SPE + 3, 0.0125, late=True)
            w.journal(
                t + 12.1, "applied", seq=4, cmd="scale_lr", epoch=e + 1, step=(e + 1) * SPE + 3, lr=0.0125, late=True
            )
            lr = 0.0125
        if e == 10:
            w.decision(t + 10.2, 5, "early_stop", "stop", "val_loss has not improved for 2 epochs", e)
            w.ack(t + 10.3, 5, "stop", e, (e + 1) * SPE, lr)
            w.journal(t + 10.4, "applied", seq=5, cmd="stop", epoch=e, step=(e + 1) * SPE, lr=lr, late=False)
    w.end(121.0, "stopped", 10)
    w.event(121.5, "trainer_exited", "trainer exited with status 0")
    w.event(122.0, "finished", "training stopped early by a policy (exit status 0)", status=0)
    w.journal_file.write({"v": 2, "type": "decision", "time": T0})  # a future version: skipped, counted
    w.raw_metrics(b'{"v":1,"type":"heartbeat","time":17900001')  # torn: the writer died mid-line
    w.close()
    return root


@pytest.fixture
def synthetic_run(tmp_path: Path) -> Path:
    return write_synthetic_run(tmp_path / "20260101T000000Z-train")


@pytest.fixture
def run_writer(tmp_path: Path):
    """A factory: run_writer("name") -> RunWriter on tmp_path/name (closed at teardown)."""
    made: list[RunWriter] = []

    def make(name: str = "run") -> RunWriter:
        w = RunWriter(tmp_path / name)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
