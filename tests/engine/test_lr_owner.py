"""One owner per learning rate (issue 13): plain record sequences in, decisions and lr_owner notes out.

While the script's own LR logic (its ReduceLROnPlateau, its LearningRateSchedule, an LR change
lrsup did not command) owns a fit's LR, the engine consults no LR tuner (plateau, schedules, the
range test), says so once, and the rescues (divergence) stay on, cutting the script's LR now.
``lr_owner="lrsup"`` lets the tuners act.
"""

from __future__ import annotations

import json
import math

from lrsup.policies.divergence import Divergence
from lrsup.policies.lr_find import LRFind
from lrsup.policies.plateau import Plateau
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.protocol.journal import LrOwnerEntry, journal_line, read_entry
from lrsup.supervisor.protocol.wire import CheckpointRecord, EpochRecord, StartRecord

SHA = "0" * 64


def start(fit: int = 1, lr: float = 0.001, step: int = 0, **fields) -> StartRecord:
    return StartRecord(pid=1, optimizer="Adam", lr=lr, steps_per_epoch=100, epochs=10, step=step, fit=fit, **fields)


def epoch(n: int, lr: float, val_loss: float, loss: float = 0.5, moved_from: float | None = None) -> EpochRecord:
    return EpochRecord(
        epoch=n, step=100 * (n + 1), lr=lr, logs={"loss": loss, "val_loss": val_loss}, lr_moved_from=moved_from
    )


def checkpoint(n: int) -> CheckpointRecord:
    name = f"epoch-{n + 1:04d}"
    return CheckpointRecord(name=name, epoch=n, step=100 * (n + 1), file=f"checkpoints/{name}.weights.h5", sha256=SHA)


def run(engine: Engine, records) -> tuple[list, list[LrOwnerEntry]]:
    decisions, notes = [], []
    for record in records:
        decisions += engine.feed(record)
        notes += engine.take_notes()
    return decisions, notes


def lr_moves(decisions, policy: str) -> list:
    return [d for d in decisions if d.action.policy == policy and d.action.kind in ("scale_lr", "set_lr")]


FLAT = [epoch(n, 0.001, 0.5) for n in range(6)]  # val_loss never improves: plateau(patience=1) cuts


def test_plateau_cuts_a_flat_val_loss_when_the_script_has_no_lr_logic() -> None:
    # The control: the same records without the script's callback.
    decisions, notes = run(Engine([Plateau(patience=1, factor=0.5)]), [start(), *FLAT])
    assert [d.command is not None for d in lr_moves(decisions, "plateau")][:1] == [True]
    assert notes == []


def test_the_scripts_reduce_lr_on_plateau_stands_plateau_down_once_and_says_so() -> None:
    engine = Engine([Divergence(), Plateau(patience=1, factor=0.5)])
    decisions, notes = run(engine, [start(lr_callbacks=["ReduceLROnPlateau"]), *FLAT])
    assert lr_moves(decisions, "plateau") == []  # not consulted: no decision at all, sent or suppressed
    assert len(notes) == 1
    note = notes[0]
    assert (note.event, note.owner, note.fit, note.movers, note.policies) == (
        "stand_down",
        "script",
        1,
        ("ReduceLROnPlateau",),
        ("plateau",),
    )
    assert "divergence stays on as a rescue" in note.detail and 'lr_owner = "lrsup"' in note.detail
    assert engine.script_lr == ("ReduceLROnPlateau",)
    # The journal line reads back as what was written.
    assert read_entry(json.loads(json.dumps(journal_line(note, 1.0)))) == LrOwnerEntry(**{**note.__dict__, "time": 1.0})


def test_divergence_still_rolls_back_and_cuts_the_scripts_lr_now() -> None:
    engine = Engine([Divergence(), Plateau(patience=1, factor=0.5)])
    records = [
        start(lr_callbacks=["ReduceLROnPlateau"]),
        checkpoint(0),
        epoch(0, 0.001, 0.5),
        checkpoint(1),
        epoch(1, 0.0002, 0.45, moved_from=0.001),  # the script's callback cut x0.2 (already its owner)
        epoch(2, 0.0002, math.nan, loss=math.nan),
    ]
    decisions, notes = run(engine, records)
    rollback = [d for d in decisions if d.action.kind == "rollback"]
    assert len(rollback) == 1 and rollback[0].command is not None
    assert rollback[0].command.checkpoint == "epoch-0002"
    # The script's LR now (2e-4) cut by Adam's x0.5, not the checkpoint's.
    assert math.isclose(rollback[0].command.lr, 1e-4)
    assert [n.event for n in notes] == ["stand_down", "rescue"]
    rescue = notes[1]
    assert rescue.lr is not None and math.isclose(rescue.lr, 1e-4)
    assert "the script's LR 0.0002 cut x0.5" in rescue.detail and "ReduceLROnPlateau goes on" in rescue.detail


def test_take_over_lets_plateau_act_and_journals_the_callbacks_left_out() -> None:
    engine = Engine([Divergence(), Plateau(patience=1, factor=0.5)], lr_owner="lrsup")
    decisions, notes = run(engine, [start(lr_callbacks=["ReduceLROnPlateau"], lr_callbacks_left_out=True), *FLAT])
    sent = [d for d in lr_moves(decisions, "plateau") if d.command is not None]
    assert sent and math.isclose(sent[0].lr, 0.0005)
    assert [(n.event, n.owner, n.movers) for n in notes] == [("take_over", "lrsup", ("ReduceLROnPlateau",))]
    assert "left out of this fit" in notes[0].detail
    assert engine.script_lr == ()


def test_an_uncommanded_lr_change_stands_the_tuners_down_from_that_epoch() -> None:
    engine = Engine([Plateau(patience=2, factor=0.5)])
    records = [
        start(),
        epoch(0, 0.001, 0.5),
        epoch(1, 0.0003, 0.5, moved_from=0.001),  # plateau would cut here (patience 2): it is not asked
        *[epoch(n, 0.0003, 0.5) for n in range(2, 6)],
    ]
    decisions, notes = run(engine, records)
    assert lr_moves(decisions, "plateau") == []
    assert len(notes) == 1 and notes[0].event == "stand_down" and notes[0].epoch == 1
    assert notes[0].movers == ("an LR change lrsup did not command (epoch 2: 0.001 -> 0.0003)",)


def test_under_take_over_an_uncommanded_change_is_said_once_and_plateau_goes_on() -> None:
    engine = Engine([Plateau(patience=1, factor=0.5)], lr_owner="lrsup")
    records = [start(), epoch(0, 0.001, 0.5), epoch(1, 0.0003, 0.5, moved_from=0.001)]
    records += [epoch(2, 0.0003, 0.5, moved_from=0.00015)]
    decisions, notes = run(engine, records)
    assert [n.event for n in notes] == ["moved"]
    assert any(d.command is not None for d in lr_moves(decisions, "plateau"))


def test_a_learning_rate_schedule_optimizer_keeps_its_lr_and_the_range_test_does_not_run() -> None:
    engine = Engine([Divergence(), LRFind(mode="auto"), Plateau(patience=1)])
    decisions, notes = run(engine, [start(lr_schedule="CosineDecay"), *FLAT])
    assert [d for d in decisions if d.action.policy in ("lr_find", "plateau")] == []
    assert notes[0].policies == ("lr_find", "plateau")
    assert notes[0].movers == ("CosineDecay (the optimizer's LearningRateSchedule)",)


def test_each_fit_decides_its_own_owner() -> None:
    engine = Engine([Plateau(patience=1, factor=0.5)])
    fit1 = [start(lr_callbacks=["ReduceLROnPlateau"]), *FLAT[:3]]
    fit2 = [start(fit=2, step=300), *[epoch(n, 0.001, 0.5) for n in range(3, 6)]]
    decisions, notes = run(engine, fit1)
    assert lr_moves(decisions, "plateau") == [] and len(notes) == 1
    decisions, notes = run(engine, fit2)
    assert any(d.command is not None for d in lr_moves(decisions, "plateau"))
    assert notes == [] and engine.script_lr == ()


def test_the_stand_down_survives_a_snapshot() -> None:
    engine = Engine([Plateau(patience=1, factor=0.5)])
    run(engine, [start(lr_callbacks=["LearningRateScheduler"]), FLAT[0]])
    saved = json.loads(json.dumps(engine.state_dict()))
    resumed = Engine([Plateau(patience=1, factor=0.5)])
    resumed.load_state_dict(saved)
    decisions, notes = run(resumed, FLAT[1:])
    assert lr_moves(decisions, "plateau") == [] and notes == []  # said once, before the snapshot
    assert resumed.script_lr == ("LearningRateScheduler",)


def test_lrsups_schedule_is_cleared_when_the_script_takes_the_lr_mid_fit() -> None:
    from lrsup.policies.schedules import ExponentialDecay

    engine = Engine([ExponentialDecay(decay_rate=0.5, decay_steps=100)])
    decisions, _ = run(engine, [start()])
    assert [d.action.kind for d in decisions if d.command is not None] == ["set_schedule"]
    assert engine.schedule is not None
    decisions, notes = run(engine, [epoch(0, 0.0005, 0.5), epoch(1, 0.0001, 0.5, moved_from=0.00025)])
    cleared = [d for d in decisions if d.action.kind == "clear_schedule"]
    assert len(cleared) == 1 and cleared[0].command is not None and cleared[0].action.policy == "engine"
    assert engine.schedule is None
    assert [n.event for n in notes] == ["stand_down"] and notes[0].policies == ("exponential_decay",)
    decisions, _ = run(engine, [epoch(2, 0.0001, 0.5, moved_from=0.00005)])
    assert [d.action.kind for d in decisions] == []  # once


def test_a_repeated_rescue_compounds_from_the_same_base_and_never_restores_more_than_failed() -> None:
    from lrsup.supervisor.protocol.wire import AckRecord

    engine = Engine([Divergence(), Plateau(patience=1, factor=0.5)])
    records = [
        start(lr_callbacks=["ReduceLROnPlateau"]),
        checkpoint(0),
        epoch(0, 0.001, 0.5),
        checkpoint(1),
        epoch(1, 0.0002, 0.45, moved_from=0.001),
        epoch(2, 0.0002, math.nan, loss=math.nan),
    ]
    decisions, _ = run(engine, records)
    (first,) = [d for d in decisions if d.action.kind == "rollback"]
    assert math.isclose(first.command.lr, 1e-4)  # 2e-4 (the script's now, below the checkpoint's 1e-3) x0.5
    again = [
        AckRecord(seq=1, cmd="rollback", epoch=2, step=200, lr=1e-4),
        epoch(3, 1e-4, math.nan, loss=math.nan),
    ]
    decisions, notes = run(engine, again)
    (second,) = [d for d in decisions if d.action.kind == "rollback"]
    # Unrecovered: divergence squares its cut (x0.5^3) from the same base, 2e-4, not from 1e-4 again.
    assert math.isclose(second.command.lr, 2e-4 * 0.125)
    assert [n.event for n in notes] == ["rescue"]
