"""The decision engine: dispatch, LR tracking, composition rules, state. A tiny fake runner applies decisions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest

from lrsup.policies.actions import Action, ScaleLR, SetHparam, SetLR, Stop
from lrsup.policies.base import Policy
from lrsup.policies.monitor import to_float32
from lrsup.policies.plateau import Plateau
from lrsup.supervisor.engine import Decision, Engine
from lrsup.supervisor.protocol import (
    AckRecord,
    BatchRecord,
    EndRecord,
    EpochRecord,
    ErrorRecord,
    HeartbeatRecord,
    StartRecord,
    dumps,
    loads,
    make_command,
)


# -- fakes ------------------------------------------------------------------------------


class Scripted(Policy):
    """Returns, on each epoch record, the actions scripted for that epoch; records what it saw."""

    name = "scripted"

    def __init__(self, script=None, name=None):
        super().__init__()
        self.script = script or {}
        self.seen = []
        if name:
            self.name = name

    def on_epoch(self, record, run):
        self.seen.append((record.epoch, run))
        return list(self.script.get(record.epoch, []))


class Counting(Policy):
    """Counts the hooks called; overrides every hook."""

    name = "counting"

    def reset(self):
        self.calls = {"start": 0, "batch": 0, "epoch": 0, "end": 0}

    def on_start(self, record, run):
        self.calls["start"] += 1
        return ()

    def on_batch(self, record, run):
        self.calls["batch"] += 1
        return ()

    def on_epoch(self, record, run):
        self.calls["epoch"] += 1
        return ()

    def on_end(self, record, run):
        self.calls["end"] += 1
        return ()

    def state_dict(self):
        return dict(self.calls)

    def load_state_dict(self, state):
        self.calls = dict(state)


class EpochOnly(Policy):
    name = "epoch_only"

    def on_epoch(self, record, run):
        return ()


@dataclass(frozen=True, kw_only=True)
class Teleport(Action):
    """An action kind this engine does not know."""

    kind: ClassVar[str] = "teleport"


class FakeRunner:
    """Ray-Tune style: applies decisions' commands to a fake trainer and keeps a journal."""

    def __init__(self, lr):
        self.lr = to_float32(lr)
        self.hparams = {}
        self.stopped = False
        self.seq = 0
        self.control = []
        self.journal = []

    def apply(self, decisions):
        for d in decisions:
            self.journal.append(d)
            if d.command is None:
                continue
            self.seq += 1
            args = {k: v for k, v in d.command.items() if k != "cmd"}
            self.control.append(make_command(self.seq, d.command["cmd"], time=0.0, reason=d.action.reason, **args))
            cmd = d.command["cmd"]
            if cmd == "set_lr":
                self.lr = to_float32(d.command["lr"])
            elif cmd == "scale_lr":
                self.lr = to_float32(self.lr * d.command["factor"])
            elif cmd == "set_hparam":
                self.hparams[d.command["name"]] = d.command["value"]
            elif cmd == "stop":
                self.stopped = True


def epoch(n, lr=1.0, **logs):
    return EpochRecord(epoch=n, step=100 * (n + 1), lr=lr, logs=logs)


# -- construction and dispatch ----------------------------------------------------------------


def test_only_policies_instances_are_accepted():
    with pytest.raises(TypeError, match=r"policies\[1\] must be a Policy instance; got 'plateau'"):
        Engine([Plateau(), "plateau"])


def test_each_record_type_reaches_only_the_hooks_that_are_overridden():
    counting = Counting()
    engine = Engine([counting, EpochOnly()])
    engine.feed(StartRecord(pid=1, lr=0.1))
    for b in range(5):
        engine.feed(BatchRecord(epoch=0, batch=b, step=b + 1, lr=0.1))
    engine.feed(epoch(0, lr=0.1))
    engine.feed(HeartbeatRecord(epoch=0, step=5))
    engine.feed(AckRecord(seq=1, cmd="set_lr", step=5, lr=0.1))
    engine.feed(ErrorRecord(message="boom"))
    engine.feed(EndRecord(reason="completed", epoch=0, step=5))
    assert counting.calls == {"start": 1, "batch": 5, "epoch": 1, "end": 1}
    # the dispatch table lists, per record type, only the policies that override its hook
    assert [p.name for p, _ in engine._hooks[BatchRecord]] == ["counting"]
    assert [p.name for p, _ in engine._hooks[EpochRecord]] == ["counting", "epoch_only"]


def test_records_without_hooks_return_no_decisions():
    engine = Engine([Plateau()])
    assert engine.feed(BatchRecord(epoch=0, batch=0, step=1, lr=0.1)) == []
    assert engine.feed(HeartbeatRecord()) == []


# -- effective LR ------------------------------------------------------------------------------


def test_lr_follows_records_and_decisions():
    engine = Engine([Scripted({1: [SetLR(lr=0.05, reason="r")]})])
    assert engine.lr is None
    engine.feed(StartRecord(pid=1, lr=0.1))
    assert engine.lr == 0.1
    engine.feed(BatchRecord(epoch=0, batch=0, step=1, lr=0.2))
    assert engine.lr == 0.2
    engine.feed(HeartbeatRecord(epoch=0, step=1))  # no lr: unchanged
    assert engine.lr == 0.2
    engine.feed(EpochRecord(epoch=0, step=2, lr=None))  # lr unknown in this record: unchanged
    assert engine.lr == 0.2
    [decision] = engine.feed(epoch(1, lr=0.3))
    assert decision.lr == 0.05 and engine.lr == 0.05  # immediately, before the ack
    engine.feed(AckRecord(seq=1, cmd="set_lr", step=200, lr=0.05000000074505806))
    assert engine.lr == 0.05000000074505806
    engine.feed(StartRecord(pid=2))  # a new fit that does not report its LR: the old one is stale
    assert engine.lr is None


def test_run_view_carries_the_start_record_and_all_policies_see_the_same_one():
    first = Scripted({0: [SetLR(lr=0.5, reason="a")]}, name="first")
    second = Scripted({}, name="second")
    engine = Engine([first, second])
    engine.feed(StartRecord(pid=1, lr=0.1, optimizer="SGD", optimizer_config={"momentum": 0.9},
                            steps_per_epoch=100, epochs=10))
    engine.feed(epoch(0, lr=0.1))
    [(_, view1)] = first.seen
    [(_, view2)] = second.seen
    assert view1 is view2
    assert (view1.lr, view1.optimizer, view1.optimizer_config, view1.steps_per_epoch, view1.epochs) == (
        0.1, "SGD", {"momentum": 0.9}, 100, 10,
    )
    assert engine.lr == 0.5


# -- actions to commands ---------------------------------------------------------------------------


def test_actions_are_stamped_with_the_policy_name_unless_set():
    engine = Engine([Scripted({0: [SetHparam(name="momentum", value=0.8, reason="r"),
                                   SetHparam(name="beta_1", value=0.8, reason="r", policy="custom")]})])
    d1, d2 = engine.feed(epoch(0))
    assert d1.action.policy == "scripted"
    assert d2.action.policy == "custom"


def test_set_lr_scale_lr_hparam_and_stop_commands():
    engine = Engine([Scripted({
        0: [SetLR(lr=0.5, reason="r")],
        1: [ScaleLR(factor=0.1, reason="r")],
        2: [ScaleLR(factor=0.1, min_lr=0.02, reason="r")],
        3: [SetHparam(name="momentum", value=1, reason="r")],
        4: [Stop(reason="done")],
    })])
    engine.feed(StartRecord(pid=1, lr=1.0))
    assert engine.feed(epoch(0, lr=1.0))[0].command == {"cmd": "set_lr", "lr": 0.5}
    d = engine.feed(epoch(1, lr=0.5))[0]
    assert d.command == {"cmd": "set_lr", "lr": 0.05} and d.lr == 0.05  # the concrete LR, not a factor
    d = engine.feed(epoch(2, lr=0.05))[0]
    assert d.command == {"cmd": "set_lr", "lr": 0.02}  # max(lr * factor, min_lr)
    d = engine.feed(epoch(3, lr=0.02))[0]
    assert d.command == {"cmd": "set_hparam", "name": "momentum", "value": 1.0} and d.lr is None
    d = engine.feed(epoch(4, lr=0.02))[0]
    assert d == Decision(Stop(reason="done", policy="scripted"), {"cmd": "stop"}, None, 4, 500, None)


def test_scale_lr_with_unknown_lr_is_sent_as_a_factor():
    engine = Engine([Scripted({0: [ScaleLR(factor=0.5, min_lr=0.01, reason="r")]})])
    [d] = engine.feed(EpochRecord(epoch=0, step=10, logs={}))
    assert d.command == {"cmd": "scale_lr", "factor": 0.5} and d.lr is None
    assert engine.lr is None


def test_decision_carries_epoch_and_step():
    class OnStart(Policy):
        name = "on_start"

        def on_start(self, record, run):
            return [SetLR(lr=0.01, reason="warm start")]

    [d] = Engine([OnStart()]).feed(StartRecord(pid=1, lr=0.1, step=0))
    assert (d.epoch, d.step) == (None, 0)
    [d] = Engine([Scripted({7: [Stop(reason="r")]})]).feed(epoch(7))
    assert (d.epoch, d.step) == (7, 800)


# -- composition rules -------------------------------------------------------------------------------


def test_first_lr_change_in_stack_order_wins():
    engine = Engine([
        Scripted({0: [ScaleLR(factor=0.5, reason="a")]}, name="a"),
        Scripted({0: [SetLR(lr=0.9, reason="b")]}, name="b"),
    ])
    d1, d2 = engine.feed(epoch(0, lr=1.0))
    assert d1.command == {"cmd": "set_lr", "lr": 0.5} and d1.suppressed is None
    assert d2.command is None and d2.lr is None
    assert d2.suppressed == "another LR change (policy a) already decided at step 100"
    assert engine.lr == 0.5


def test_one_policy_returning_two_lr_changes_gets_the_first():
    engine = Engine([Scripted({0: [SetLR(lr=0.3, reason="x"), SetLR(lr=0.2, reason="y")]})])
    d1, d2 = engine.feed(epoch(0, lr=1.0))
    assert d1.command == {"cmd": "set_lr", "lr": 0.3}
    assert d2.suppressed == "another LR change (policy scripted) already decided at step 100"


def test_stop_suppresses_lr_changes_on_the_same_record_before_or_after_it():
    engine = Engine([
        Scripted({0: [SetLR(lr=0.5, reason="a")]}, name="a"),
        Scripted({0: [Stop(reason="b")]}, name="b"),
        Scripted({0: [ScaleLR(factor=0.1, reason="c"), Stop(reason="c2"),
                      SetHparam(name="momentum", value=0.0, reason="c3")]}, name="c"),
    ])
    decisions = engine.feed(epoch(0, lr=1.0))
    assert [d.action.reason for d in decisions] == ["a", "b", "c", "c2", "c3"]
    assert [d.command for d in decisions] == [
        None, {"cmd": "stop"}, None, None, {"cmd": "set_hparam", "name": "momentum", "value": 0.0},
    ]
    assert decisions[0].suppressed == "stop (policy b) decided at step 100"
    assert decisions[2].suppressed == "stop (policy b) decided at step 100"
    assert decisions[3].suppressed == "another stop (policy b) already decided at step 100"
    assert engine.lr == 1.0  # no LR change was sent


def test_an_lr_change_that_changes_nothing_is_journaled_and_does_not_count():
    engine = Engine([
        Scripted({0: [SetLR(lr=0.1, reason="same")]}, name="a"),
        Scripted({0: [SetLR(lr=0.05, reason="real")]}, name="b"),
    ])
    # the trainer reports the float32 of 0.1: SetLR(0.1) would store the same float32
    d1, d2 = engine.feed(epoch(0, lr=to_float32(0.1)))
    assert d1.command is None and d1.suppressed == "no change (LR already 0.1)"
    assert d2.command == {"cmd": "set_lr", "lr": 0.05}


def test_scale_lr_at_min_lr_is_no_change():
    engine = Engine([Scripted({0: [ScaleLR(factor=0.5, min_lr=0.01, reason="r")]})])
    [d] = engine.feed(epoch(0, lr=0.01))
    assert d.suppressed == "no change (LR already 0.01)"


@pytest.mark.parametrize(
    "action, text",
    [
        (SetLR(lr=math.nan, reason="r"), "invalid: lr must be finite and >= 0 (got nan)"),
        (SetLR(lr=-0.1, reason="r"), "invalid: lr must be finite and >= 0 (got -0.1)"),
        (SetLR(lr=math.inf, reason="r"), "invalid: lr must be finite and >= 0 (got inf)"),
        (ScaleLR(factor=0.0, reason="r"), "invalid: factor must be finite and > 0 (got 0.0)"),
        (ScaleLR(factor=0.5, min_lr=-1.0, reason="r"), "invalid: min_lr must be finite and >= 0 (got -1.0)"),
    ],
)
def test_invalid_lr_changes_are_suppressed_and_do_not_count(action, text):
    engine = Engine([Scripted({0: [action, SetLR(lr=0.5, reason="ok")]})])
    d1, d2 = engine.feed(epoch(0, lr=1.0))
    assert d1.suppressed == text and d1.command is None
    assert d2.command == {"cmd": "set_lr", "lr": 0.5}


def test_one_change_per_hyperparameter_per_record():
    engine = Engine([Scripted({0: [SetHparam(name="momentum", value=0.5, reason="a"),
                                   SetHparam(name="momentum", value=0.9, reason="b"),
                                   SetHparam(name="beta_1", value=0.8, reason="c")]})])
    d1, d2, d3 = engine.feed(epoch(0))
    assert d1.command["value"] == 0.5
    assert d2.suppressed == "another momentum change (policy scripted) already decided at step 100"
    assert d3.command == {"cmd": "set_hparam", "name": "beta_1", "value": 0.8}


def test_unknown_action_kind_is_suppressed():
    [d] = Engine([Scripted({0: [Teleport(reason="r")]})]).feed(epoch(0))
    assert d.command is None and d.suppressed == "unsupported action Teleport (kind 'teleport')"


def test_a_hook_returning_something_else_than_actions_is_an_error():
    engine = Engine([Scripted({0: ["set_lr"]})])
    with pytest.raises(TypeError, match="policy 'scripted' returned 'set_lr' from on_epoch"):
        engine.feed(epoch(0))


def test_a_hook_may_return_none():
    class ReturnsNone(Policy):
        name = "none"

        def on_epoch(self, record, run):
            return None

    assert Engine([ReturnsNone()]).feed(epoch(0)) == []


# -- a whole run with the fake runner -------------------------------------------------------------


class StopAfter(Policy):
    name = "stop_after"

    def on_epoch(self, record, run):
        if record.epoch >= 5:
            return [Stop(reason=f"epoch {record.epoch + 1} reached")]
        return []


def test_a_run_through_the_fake_runner():
    engine = Engine([StopAfter(), Plateau(factor=0.5, patience=1)])
    runner = FakeRunner(0.1)
    runner.apply(engine.feed(StartRecord(pid=1, lr=runner.lr)))
    losses = [1.0, 0.9, 0.95, 0.97, 0.8, 0.85, 0.9]
    for n, loss in enumerate(losses):
        if runner.stopped:
            break
        runner.apply(engine.feed(epoch(n, lr=runner.lr, val_loss=loss)))
        runner.apply(engine.feed(AckRecord(seq=runner.seq, cmd="x", step=0, lr=runner.lr)))
    assert runner.stopped
    assert [c["cmd"] for c in runner.control] == ["set_lr", "set_lr", "stop"]
    assert [c["seq"] for c in runner.control] == [1, 2, 3]
    a = to_float32(0.1)
    assert runner.control[0]["lr"] == a / 2 and runner.control[1]["lr"] == to_float32(a / 2) / 2
    # epoch 5: plateau wanted a cut too, but the stop has priority
    last = runner.journal[-2:]
    assert [d.command for d in last] == [{"cmd": "stop"}, None]
    assert last[1].suppressed == "stop (policy stop_after) decided at step 600"
    assert engine.lr == runner.lr


# -- state -----------------------------------------------------------------------------------------


def test_state_dict_round_trips_through_protocol_json():
    engine = Engine([Counting(), Plateau(patience=1)])
    engine.feed(StartRecord(pid=1, lr=0.1, optimizer="Adam", epochs=3))
    engine.feed(epoch(0, lr=0.1, val_loss=math.inf))
    state = loads(dumps(engine.state_dict()))
    assert list(state["policies"]) == ["0:counting", "1:plateau"]
    assert state["policies"]["1:plateau"]["best"] == math.inf

    fresh = Engine([Counting(), Plateau(patience=1)])
    fresh.load_state_dict(state)
    assert fresh.lr == 0.1
    assert fresh.policies[0].calls == {"start": 1, "batch": 0, "epoch": 1, "end": 0}
    assert fresh.state_dict() == engine.state_dict()
    # the run view survives the resume
    spy = Scripted({})
    both = Engine([spy])
    both.load_state_dict({"lr": 0.1, "run": state["run"], "policies": {"0:scripted": {}}})
    both.feed(epoch(1, lr=0.1))
    assert spy.seen[0][1].optimizer == "Adam" and spy.seen[0][1].epochs == 3


def test_state_dict_is_refused_for_another_stack():
    state = Engine([Plateau()]).state_dict()
    with pytest.raises(ValueError, match=r"saved for policies \['0:plateau'\], but this engine has \['0:counting'\]"):
        Engine([Counting()]).load_state_dict(state)
    with pytest.raises(ValueError, match="engine state must have keys"):
        Engine([Plateau()]).load_state_dict({"policies": {}})
    with pytest.raises(ValueError, match="lr must be a number or None; got 'x'"):
        Engine([Plateau()]).load_state_dict({**state, "lr": "x"})
