"""The composition rules' table: each action kind to one rule, a subclass to its base's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lrsup.policies.actions import Action, Keep, Retain, ScaleLR, SetLR, Stop
from lrsup.policies.monitor import Monitor
from lrsup.supervisor.engine.checkpoint_book import CheckpointBook
from lrsup.supervisor.engine.composition import (
    RULES,
    compose,
    decide_lr_change,
    decide_stop,
    decide_unsupported,
    rule_for,
)
from lrsup.supervisor.engine.state import EngineState
from lrsup.supervisor.protocol.commands import RetainCommand, SetLRCommand, StopCommand

CADENCE = {"batch_every": 10, "batch_min_interval": 0.1, "checkpoint_every_epochs": 1, "checkpoint_every_steps": 0}


@dataclass(frozen=True, kw_only=True)
class GentleStop(Stop):
    """A plug-in's own Stop: composed as a Stop."""


@dataclass(frozen=True, kw_only=True)
class Teleport(Action):
    kind: ClassVar[str] = "teleport"


def state(lr: float | None = 0.1) -> EngineState:
    s = EngineState(CheckpointBook(Monitor("val_loss", "auto")), dict(CADENCE))
    s.lr, s.step = lr, 100
    return s


def test_every_action_kind_has_one_rule() -> None:
    assert rule_for(SetLR(reason="r", lr=0.1)) is rule_for(ScaleLR(reason="r", factor=0.5)) is decide_lr_change
    assert rule_for(GentleStop(reason="r")) is decide_stop
    assert rule_for(Teleport(reason="r")) is rule_for(Retain(reason="r", keep=())) is decide_unsupported
    assert Retain not in RULES


def test_compose_changes_the_state_it_is_given() -> None:
    s = state()
    actions = [
        SetLR(reason="r", lr=0.05, policy="a"),
        ScaleLR(reason="r", factor=0.1, policy="b"),
        Keep(reason="r", checkpoints=(), policy="c"),
    ]
    set_lr, scale, keep = compose(s, actions, 0, 100, None)
    assert (set_lr.command, set_lr.lr, s.lr) == (SetLRCommand(0.05), 0.05, 0.05)
    assert scale.suppressed == "another LR change (policy a) already decided at step 100"
    assert keep.suppressed == "no change (retained: none)" and s.keeps == {"c": ()}


def test_a_give_up_stop_sets_the_exit_status_and_overrules_lr_changes() -> None:
    s = state()
    cut, stop = compose(
        s, [ScaleLR(reason="r", factor=0.5, policy="p"), Stop(reason="r", give_up=True, policy="g")], 2, 100, None
    )
    assert cut.suppressed == "stop (policy g) decided at step 100" and s.lr == 0.1
    assert (stop.command, stop.exit_status, s.exit_status) == (StopCommand(), 3, 3)


def test_a_keep_that_changes_nothing_known_is_still_a_valid_retain() -> None:
    s = state()
    s.retained = ("old",)
    (keep,) = compose(s, [Keep(reason="r", checkpoints=(), policy="p")], 0, 100, None)
    assert keep.command == RetainCommand(()) and s.retained == ()
