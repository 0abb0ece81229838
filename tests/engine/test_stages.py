"""Each fit is a stage: checkpoints, known good, best and rollbacks belong to the fit they were taken in.

A two-fit script (freeze, fit at Adam 1e-3, unfreeze, recompile at another LR, fit) as fake
records: the second fit's optimizer counts its steps from 0 again, and its rescue must aim
at its own checkpoints and its own LR, never the first fit's.
"""

from __future__ import annotations

import json
import math

from lrsup.policies.actions import Rollback
from lrsup.policies.base import Policy
from lrsup.policies.divergence import Divergence
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.protocol.commands import RetainCommand, RollbackCommand
from lrsup.supervisor.protocol.wire import (
    AckRecord,
    BatchRecord,
    CheckpointRecord,
    EndRecord,
    EpochRecord,
    StartRecord,
)


def ckpt(name, step, epoch=None, lr=None):
    return CheckpointRecord(name=name, epoch=epoch, step=step, lr=lr, file=f"checkpoints/{name}", sha256="0" * 64)


def fit_one(engine, fit=1, lr=1e-3, epochs=3, steps=34):
    """Fit 1 of the script: a start checkpoint, then epochs with epoch-end checkpoints, all healthy."""
    engine.feed(StartRecord(pid=7, lr=lr, step=0, optimizer="Adam", epochs=epochs, steps_per_epoch=steps, fit=fit))
    engine.feed(ckpt("step-0000000", 0, lr=lr))
    for e in range(epochs):
        step = steps * (e + 1)
        for b in range(9, steps, 10):
            engine.feed(BatchRecord(epoch=e, batch=b, step=steps * e + b + 1, lr=lr, logs={"loss": 2.0 - 0.1 * e}))
        engine.feed(ckpt(f"epoch-{e + 1:04d}", step, epoch=e, lr=lr))
        engine.feed(EpochRecord(epoch=e, step=step, lr=lr, logs={"loss": 1.5 - 0.2 * e, "val_loss": 1.4 - 0.2 * e}))
    engine.feed(EndRecord(reason="completed", epoch=epochs - 1, step=steps * epochs))


def start_fit_two(engine, lr=5.0, name="step-0000000.2"):
    """Fit 2 after a recompile: a new optimizer (steps from 0 again) at its own LR, and its start checkpoint."""
    decisions = engine.feed(StartRecord(pid=7, lr=lr, step=0, optimizer="Adam", epochs=8, steps_per_epoch=34, fit=2))
    decisions += engine.feed(ckpt(name, 0, lr=lr))
    return decisions


def test_a_divergence_in_fit_two_rolls_back_to_fit_twos_start_at_fit_twos_lr_cut():
    engine = Engine([Divergence()])
    fit_one(engine)
    assert engine.known_good_checkpoint == "epoch-0003"
    start_fit_two(engine)
    assert engine.fit == 2
    assert [c.name for c in engine.checkpoints] == ["step-0000000.2"]  # fit 1's are not this fit's
    decisions = engine.feed(BatchRecord(epoch=0, batch=9, step=10, lr=5.0, logs={"loss": math.nan}))
    rollback = next(d for d in decisions if d.command is not None and d.command.cmd == "rollback")
    assert rollback.command == RollbackCommand(checkpoint="step-0000000.2", skip_batches=0, lr=2.5)
    assert "LR 5 -> 2.5" in rollback.action.reason  # the cut from fit 2's LR, never fit 1's 0.001


def test_fit_one_checkpoints_are_no_rollback_target_in_fit_two_even_by_name_or_best():
    class Asks(Policy):
        name = "asks"

        def on_epoch(self, record, run):
            return [Rollback(checkpoint="epoch-0002", reason="by name"), Rollback(best=True, reason="best")]

    engine = Engine([Asks()])
    fit_one(engine)
    start_fit_two(engine)
    by_name, best, *_ = engine.feed(EpochRecord(epoch=0, step=34, lr=5.0, logs={"loss": 2.3}))  # no val_loss
    assert by_name.command is None
    assert by_name.suppressed == (
        "no checkpoint to roll back to: no checkpoint named 'epoch-0002' (known: step-0000000.2)"
    )
    assert best.command is None
    # fit 2's start checkpoint is known good now (a finite epoch after it) but has no metrics of its own;
    # fit 1's best (val_loss 1.0) is not this fit's
    assert best.suppressed == "no checkpoint to roll back to: no known-good checkpoint has a finite val_loss or loss"


def test_retention_and_the_restore_point_follow_the_current_fit():
    engine = Engine([])
    fit_one(engine)
    decisions = start_fit_two(engine)
    retain = [d.command for d in decisions if isinstance(d.command, RetainCommand)]
    assert retain[-1] == RetainCommand(keep=("step-0000000.2",))  # fit 1's best and newest are let go
    # No known-good checkpoint of fit 2 yet: a restart resumes fit 2 from its start (fit 1's training in it).
    assert engine.known_good_checkpoint == "step-0000000.2"
    engine.feed(ckpt("epoch-0001.2", 34, epoch=0, lr=5.0))
    engine.feed(EpochRecord(epoch=0, step=34, lr=5.0, logs={"loss": 0.9, "val_loss": 0.8}))
    assert engine.known_good_checkpoint == "epoch-0001.2"


def test_fit_one_epochs_vouch_only_for_fit_one_and_rollbacks_drop_only_this_fits_checkpoints():
    engine = Engine([])
    fit_one(engine)
    start_fit_two(engine)
    engine.feed(EpochRecord(epoch=0, step=34, lr=5.0, logs={"loss": 0.9, "val_loss": 0.8}))
    book = engine.state.book
    assert book.entry("epoch-0003").fit == 1 and book.entry("step-0000000.2").fit == 2
    assert book.entry("step-0000000.2").good
    book.drop_after(0)  # what a rollback to fit 2's start does
    assert book.entry("epoch-0003") is not None  # fit 1's checkpoint at a later step is not fit 2's abandoned run


def test_a_restarted_attempt_of_the_same_fit_keeps_its_checkpoints():
    engine = Engine([Divergence()])
    fit_one(engine)
    start_fit_two(engine)
    engine.feed(ckpt("epoch-0001.2", 34, epoch=0, lr=5.0))
    engine.feed(EpochRecord(epoch=0, step=34, lr=5.0, logs={"loss": 0.9, "val_loss": 0.8}))
    # The trainer crashed; the new attempt resumes fit 2 from epoch-0001.2 (no start checkpoint: restored).
    engine.feed(StartRecord(pid=8, lr=5.0, step=34, initial_epoch=1, optimizer="Adam", epochs=8, fit=2))
    assert [c.name for c in engine.checkpoints] == ["step-0000000.2", "epoch-0001.2"]
    decisions = engine.feed(BatchRecord(epoch=1, batch=9, step=44, lr=5.0, logs={"loss": math.inf}))
    rollback = next(d for d in decisions if d.command is not None and d.command.cmd == "rollback")
    assert rollback.command.checkpoint == "epoch-0001.2" and rollback.command.lr == 2.5


def test_the_stage_survives_the_state_round_trip_and_an_old_state_reads_as_fit_one():
    engine = Engine([Divergence()])
    fit_one(engine)
    start_fit_two(engine)
    saved = json.loads(json.dumps(engine.state_dict()))
    assert saved["supervision"]["fit"] == 2
    again = Engine([Divergence()])
    again.load_state_dict(saved)
    assert again.fit == 2 and [c.name for c in again.checkpoints] == ["step-0000000.2"]
    decisions = again.feed(BatchRecord(epoch=0, batch=9, step=10, lr=5.0, logs={"loss": math.nan}))
    assert any(d.command == RollbackCommand("step-0000000.2", 0, 2.5) for d in decisions)

    old = json.loads(json.dumps(engine.state_dict()))
    del old["supervision"]["fit"]
    for c in old["supervision"]["checkpoints"]:
        del c["fit"]
    legacy = Engine([Divergence()])
    legacy.load_state_dict(old)
    assert legacy.fit == 1 and "epoch-0003" in [c.name for c in legacy.checkpoints]


def test_records_without_fit_are_fit_one():
    engine = Engine([])
    engine.feed(StartRecord(pid=1, lr=0.1, step=0))
    engine.feed(ckpt("a", 0, lr=0.1))
    engine.feed(StartRecord(pid=2, lr=0.1, step=0))  # a restart of a run from before stages
    assert engine.fit == 1 and [c.name for c in engine.checkpoints] == ["a"]
    engine.feed(AckRecord(seq=1, cmd="set_lr", epoch=0, step=1, lr=0.05))
    assert engine.lr == 0.05
