"""A run whose LR range test ran as a probe: the report reads the probe as no training of the run's."""

from __future__ import annotations

from pathlib import Path

from lrsup.supervisor.history.runinfo import load_run
from lrsup.supervisor.protocol.wire import BatchRecord, StartRecord
from lrsup.supervisor.report.tables import decision_rows

from .conftest import SPE, T0, RunWriter


def test_the_probe_is_neither_a_start_nor_training_and_the_lr_at_the_end_is_the_fits(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run")
    w.metrics.write(
        StartRecord(time=T0, pid=1, optimizer="SGD", lr=0.001, steps_per_epoch=SPE, epochs=3, probe=True).to_json()
    )
    w.ack(0.1, 1, "set_schedule", 0, 0, 1e-5)
    for step in range(1, 80):  # the ramp: its steps outnumber the fit's first epoch
        w.metrics.write(
            BatchRecord(
                time=T0 + step / 100, epoch=1, batch=step, step=step, lr=1e-5 * 1.2**step, logs={"loss": 2.0}
            ).to_json()
        )
    w.ack(1.0, 2, "clear_schedule", 1, 80, 1.0)
    w.decision(0.05, 1, "lr_find", "set_schedule", "LR range test: ...", 0)
    w.decision(0.9, 2, "lr_find", "clear_schedule", "LR range test over ...; the fit starts at the run's LR", 0)
    w.journal(1.1, "applied", seq=1, cmd="set_schedule", epoch=0, step=0, lr=1e-5)
    w.journal(1.2, "applied", seq=2, cmd="clear_schedule", epoch=1, step=80, lr=1.0)
    w.start(2.0, lr=0.001, epochs=1)  # the fit itself, at the script's LR
    w.batches(2.0, 0, 0.001, 1.0)
    w.epoch(12.0, 0, 0.001, loss=0.9, val_loss=1.0)
    w.end(12.5, "completed", 0)
    info = load_run(w.root)
    assert len(info.starts) == 1 and not info.start.probe and info.initial_lr == 0.001
    assert info.final is not None and info.final.step == SPE  # below the probe's step 80
    assert info.final_lr == 0.001  # not the ramp's 1.0, though its ack is at a later step
    assert all(p.lr == 0.001 for p in info.batches.points)
    # the report's decision table puts the range test's decisions in the probe, not in an epoch of the run
    rows = decision_rows(info)
    assert [r[1] for r in rows if r[3] == "lr_find"] == ["probe", "probe"]
