"""Synthetic run directories for the CLI tests, written with the protocol types and ``jsonl.Appender``.

``make_run(root, name, ...)`` writes a small run: a start record, ``epochs_done`` epochs
(a few batch records each), a plateau decision and its ack, and, per ``outcome``, the
end record and the journal's ``finished`` event. ``state`` (a dict) becomes
supervisor.json as ``statefile.write_state`` writes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lrsup.supervisor.protocol.jsonl import Appender
from lrsup.supervisor.protocol.wire import (
    PROTOCOL_VERSION,
    AckRecord,
    BatchRecord,
    EndRecord,
    EpochRecord,
    StartRecord,
)
from lrsup.supervisor.rundir.liveness import process_start_time

T0 = 1_790_000_000.0
SPE = 4
VAL = [0.9, 0.7, 0.75, 0.8, 0.6, 0.65]


def journal(app: Appender, kind: str, t: float, **fields) -> None:
    app.write({"v": PROTOCOL_VERSION, "type": kind, "time": T0 + t, **fields})


def make_run(
    root: Path,
    name: str,
    *,
    epochs: int = 6,
    epochs_done: int = 6,
    outcome: str | None = "completed",
    state: dict | None = None,
    t0: float = 0.0,
    lr: float = 0.1,
    trainer_log: str = "",
) -> Path:
    """A run directory under ``root``; ``outcome`` None: still going (no end, no finished)."""
    run = root / name
    run.mkdir(parents=True, mode=0o700)
    (run / "config.json").write_text(
        json.dumps({"source": "test", "policies": [{"use": "plateau", "monitor": "val_loss"}]})
    )
    with Appender(run / "metrics.jsonl") as m, Appender(run / "journal.jsonl") as j:
        journal(j, "event", t0, event="spawned", detail="trainer spawned")
        m.write(
            StartRecord(
                time=T0 + t0 + 1, pid=4242, optimizer="SGD", lr=lr, steps_per_epoch=SPE, epochs=epochs
            ).to_json()
        )
        journal(j, "event", t0 + 1, event="started", detail="training started")
        step = 0
        for e in range(epochs_done):
            for b in range(SPE):
                step += 1
                m.write(
                    BatchRecord(
                        time=T0 + t0 + 2 + e * 10 + b,
                        epoch=e,
                        batch=b,
                        step=step,
                        lr=lr,
                        logs={"loss": 1.0 - 0.01 * step},
                    ).to_json()
                )
            m.write(
                EpochRecord(
                    time=T0 + t0 + 2 + e * 10 + 9,
                    epoch=e,
                    step=step,
                    lr=lr,
                    logs={"loss": 1.0 - 0.1 * e, "val_loss": VAL[e % len(VAL)]},
                ).to_json()
            )
            if e == 3:
                journal(
                    j,
                    "decision",
                    t0 + 2 + e * 10 + 9,
                    seq=5,
                    policy="plateau",
                    action="scale_lr",
                    lr=lr / 2,
                    reason=f"val_loss 0.8 has not improved on best 0.7 for 2 epochs; LR {lr} -> {lr / 2}",
                    epoch=e,
                    step=step,
                    suppressed=None,
                )
                lr = lr / 2
                m.write(
                    AckRecord(
                        time=T0 + t0 + 2 + e * 10 + 9.5, seq=5, cmd="scale_lr", epoch=e, step=step, lr=lr
                    ).to_json()
                )
                journal(j, "applied", t0 + 2 + e * 10 + 9.5, seq=5, epoch=e, step=step, late=False)
        end_t = t0 + 2 + epochs_done * 10
        if outcome is not None:
            reason = {"completed": "completed", "stopped": "stopped", "failed": "exception"}.get(outcome, "completed")
            m.write(EndRecord(time=T0 + end_t, reason=reason, epoch=epochs_done - 1, step=step).to_json())
            status = {"failed": 1, "fatal": 3}.get(outcome, 0)
            journal(j, "event", end_t, event="trainer_exited", detail=f"exit status {status}", returncode=status)
            if outcome == "fatal":
                journal(j, "event", end_t, event="give_up", detail="restarts used up")
            journal(
                j,
                "event",
                end_t + 0.5,
                event="finished",
                detail=f"training {outcome} (exit status {status})",
                status=status,
            )
    if state is not None:
        from lrsup.supervisor.rundir.statefile import write_state

        write_state(run / "supervisor.json", state)
    (run / "trainer.log").write_text(trainer_log)
    return run


def live_state(**extra) -> dict:
    """supervisor.json naming this test process as the run's live supervisor."""
    return {
        "supervisor_pid": os.getpid(),
        "supervisor_start_time": process_start_time(os.getpid()),
        "state": "running",
        "attempt": 1,
        "restarts": 0,
        "exit_status": None,
        "held": None,
        "degraded": None,
        "started": T0,
        **extra,
    }


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    return tmp_path / "runs"
