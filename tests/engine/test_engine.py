"""The decision engine: dispatch, LR tracking, composition rules, state. A tiny fake runner applies decisions."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest

from lrsup.policies.actions import Action, ScaleLR, SetHparam, SetLR, Stop
from lrsup.policies.base import Policy, RunView
from lrsup.policies.monitor import to_float32
from lrsup.policies.plateau import Plateau
from lrsup.supervisor.engine.core import Decision, Engine
from lrsup.supervisor.protocol.wire import (
    AckRecord,
    BatchRecord,
    EndRecord,
    EpochRecord,
    ErrorRecord,
    HeartbeatRecord,
    StartRecord,
    dumps,
    loads,
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
            self.control.append(encode_command(d.command, seq=self.seq, time=0.0, reason=d.action.reason))
            cmd = d.command.cmd
            if cmd == "set_lr":
                self.lr = to_float32(d.command.lr)
            elif cmd == "scale_lr":
                self.lr = to_float32(self.lr * d.command.factor)
            elif cmd == "set_hparam":
                self.hparams[d.command.name] = d.command.value
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
    engine.feed(
        StartRecord(pid=1, lr=0.1, optimizer="SGD", optimizer_config={"momentum": 0.9}, steps_per_epoch=100, epochs=10)
    )
    engine.feed(epoch(0, lr=0.1))
    [(_, view1)] = first.seen
    [(_, view2)] = second.seen
    assert view1 is view2
    assert (view1.lr, view1.optimizer, view1.optimizer_config, view1.steps_per_epoch, view1.epochs) == (
        0.1,
        "SGD",
        {"momentum": 0.9},
        100,
        10,
    )
    assert engine.lr == 0.5


# -- actions to commands ---------------------------------------------------------------------------


def test_actions_are_stamped_with_the_policy_name_unless_set():
    engine = Engine(
        [
            Scripted(
                {
                    0: [
                        SetHparam(name="momentum", value=0.8, reason="r"),
                        SetHparam(name="beta_1", value=0.8, reason="r", policy="custom"),
                    ]
                }
            )
        ]
    )
    d1, d2 = engine.feed(epoch(0))
    assert d1.action.policy == "scripted"
    assert d2.action.policy == "custom"


def test_set_lr_scale_lr_hparam_and_stop_commands():
    engine = Engine(
        [
            Scripted(
                {
                    0: [SetLR(lr=0.5, reason="r")],
                    1: [ScaleLR(factor=0.1, reason="r")],
                    2: [ScaleLR(factor=0.1, min_lr=0.02, reason="r")],
                    3: [SetHparam(name="momentum", value=1, reason="r")],
                    4: [Stop(reason="done")],
                }
            )
        ]
    )
    engine.feed(StartRecord(pid=1, lr=1.0))
    assert engine.feed(epoch(0, lr=1.0))[0].command == SetLRCommand(lr=0.5)
    d = engine.feed(epoch(1, lr=0.5))[0]
    assert d.command == SetLRCommand(lr=0.05) and d.lr == 0.05  # the concrete LR, not a factor
    d = engine.feed(epoch(2, lr=0.05))[0]
    assert d.command == SetLRCommand(lr=0.02)  # max(lr * factor, min_lr)
    d = engine.feed(epoch(3, lr=0.02))[0]
    assert d.command == SetHparamCommand(name="momentum", value=1.0) and d.lr is None
    d = engine.feed(epoch(4, lr=0.02))[0]
    assert d == Decision(Stop(reason="done", policy="scripted"), StopCommand(), None, 4, 500, None)


def test_scale_lr_with_unknown_lr_is_sent_as_a_factor():
    engine = Engine([Scripted({0: [ScaleLR(factor=0.5, min_lr=0.01, reason="r")]})])
    [d] = engine.feed(EpochRecord(epoch=0, step=10, logs={}))
    assert d.command == ScaleLRCommand(factor=0.5) and d.lr is None
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
    engine = Engine(
        [
            Scripted({0: [ScaleLR(factor=0.5, reason="a")]}, name="a"),
            Scripted({0: [SetLR(lr=0.9, reason="b")]}, name="b"),
        ]
    )
    d1, d2 = engine.feed(epoch(0, lr=1.0))
    assert d1.command == SetLRCommand(lr=0.5) and d1.suppressed is None
    assert d2.command is None and d2.lr is None
    assert d2.suppressed == "another LR change (policy a) already decided at step 100"
    assert engine.lr == 0.5


def test_one_policy_returning_two_lr_changes_gets_the_first():
    engine = Engine([Scripted({0: [SetLR(lr=0.3, reason="x"), SetLR(lr=0.2, reason="y")]})])
    d1, d2 = engine.feed(epoch(0, lr=1.0))
    assert d1.command == SetLRCommand(lr=0.3)
    assert d2.suppressed == "another LR change (policy scripted) already decided at step 100"


def test_stop_suppresses_lr_changes_on_the_same_record_before_or_after_it():
    engine = Engine(
        [
            Scripted({0: [SetLR(lr=0.5, reason="a")]}, name="a"),
            Scripted({0: [Stop(reason="b")]}, name="b"),
            Scripted(
                {
                    0: [
                        ScaleLR(factor=0.1, reason="c"),
                        Stop(reason="c2"),
                        SetHparam(name="momentum", value=0.0, reason="c3"),
                    ]
                },
                name="c",
            ),
        ]
    )
    decisions = engine.feed(epoch(0, lr=1.0))
    assert [d.action.reason for d in decisions] == ["a", "b", "c", "c2", "c3"]
    assert [d.command for d in decisions] == [
        None,
        StopCommand(),
        None,
        None,
        SetHparamCommand(name="momentum", value=0.0),
    ]
    assert decisions[0].suppressed == "stop (policy b) decided at step 100"
    assert decisions[2].suppressed == "stop (policy b) decided at step 100"
    assert decisions[3].suppressed == "another stop (policy b) already decided at step 100"
    assert engine.lr == 1.0  # no LR change was sent


def test_an_lr_change_that_changes_nothing_is_journaled_and_does_not_count():
    engine = Engine(
        [
            Scripted({0: [SetLR(lr=0.1, reason="same")]}, name="a"),
            Scripted({0: [SetLR(lr=0.05, reason="real")]}, name="b"),
        ]
    )
    # the trainer reports the float32 of 0.1: SetLR(0.1) would store the same float32
    d1, d2 = engine.feed(epoch(0, lr=to_float32(0.1)))
    assert d1.command is None and d1.suppressed == "no change (LR already 0.1)"
    assert d2.command == SetLRCommand(lr=0.05)


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
    assert d2.command == SetLRCommand(lr=0.5)


def test_one_change_per_hyperparameter_per_record():
    engine = Engine(
        [
            Scripted(
                {
                    0: [
                        SetHparam(name="momentum", value=0.5, reason="a"),
                        SetHparam(name="momentum", value=0.9, reason="b"),
                        SetHparam(name="beta_1", value=0.8, reason="c"),
                    ]
                }
            )
        ]
    )
    d1, d2, d3 = engine.feed(epoch(0))
    assert d1.command.value == 0.5
    assert d2.suppressed == "another momentum change (policy scripted) already decided at step 100"
    assert d3.command == SetHparamCommand(name="beta_1", value=0.8)


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
    assert [d.command for d in last] == [StopCommand(), None]
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


# == checkpoints, rollbacks, schedules, retention ========================================
#
# SimTrainer is a fake trainer with the agent's side of the protocol (docs/protocol.md):
# it trains a one-parameter model by gradient descent, writes start/batch/epoch/checkpoint/
# ack/error/end records, and applies every command as the agent must: rollbacks restore the
# weights and the step and reset the running-mean metrics, schedules are evaluated per step
# times the multiplier, retention keeps the last K plus the retained. The engine's decisions
# are applied at once (an instant supervisor), so runs are deterministic.

from lrsup.policies.actions import (  # noqa: E402
    ClearSchedule,
    Configure,
    Keep,
    Retain,
    Rollback,
    SaveCheckpoint,
    SetSchedule,
)
from lrsup.policies.base import CheckpointInfo, pick_checkpoint  # noqa: E402
from lrsup.supervisor.engine.core import GIVE_UP_STATUS  # noqa: E402
from lrsup.supervisor.protocol.commands import (
    CheckpointCommand,
    ClearScheduleCommand,
    ConfigureCommand,
    RetainCommand,
    RollbackCommand,
    ScaleLRCommand,
    SetHparamCommand,
    SetLRCommand,
    SetScheduleCommand,
    StopCommand,
    encode_command,
)
from lrsup.supervisor.protocol.schedules import evaluate, validate_spec  # noqa: E402
from lrsup.supervisor.protocol.wire import CheckpointRecord, validate_command  # noqa: E402


def quadratic(h=1.0, target=0.0, floor=0.1, kicks=None):
    """Loss ``floor + h/2 (w - target)^2``, one GD step per batch: stable iff ``lr * h < 2``.

    ``kicks`` maps a batch's draw index (the data iterator's position, never rewound) to a
    jump of the weight: a bad batch.
    """
    kicks = kicks or {}

    def step(w, lr, t):
        with np.errstate(all="ignore"):
            loss = floor + 0.5 * h * (w - target) ** 2
            w = w - lr * h * (w - target) + kicks.get(t, 0.0)
        return float(loss), float(w)

    return step


class SimTrainer:
    """A fake Keras trainer with lrsup's agent inside, driven by an Engine.

    Args:
        engine: Engine.
        dynamics: f(w, lr, t) -> (loss, new w), ``t`` the index of the batch drawn.
        w: float. The initial weight.
        lr: float. The optimizer's LR.
        optimizer: str. Its class name for the start record.
        val: f(w) -> val_loss, or None for no validation.
    """

    def __init__(
        self,
        engine,
        dynamics,
        *,
        w=5.0,
        lr=0.1,
        optimizer="SGD",
        steps_per_epoch=20,
        epochs=10,
        batch_every=1,
        checkpoint_every_epochs=1,
        checkpoint_every_steps=0,
        keep_last=3,
        val=None,
    ):
        self.engine, self.dynamics, self.w = engine, dynamics, w
        self.lr, self.optimizer, self.val = lr, optimizer, val
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.batch_every, self.every_epochs, self.every_steps = (
            batch_every,
            checkpoint_every_epochs,
            checkpoint_every_steps,
        )
        self.keep_last = keep_last
        self.schedule, self.multiplier = None, None
        self.step = self.t = self.epoch = 0
        self.position = (None, 0)
        self.sum = self.count = 0.0
        self.skip = 0
        self.saved = {}  # name -> dict; insertion order is write order
        self.retained = []
        self.stop = False
        self.seq = 0
        self.queue = []
        self.records, self.journal, self.commands = [], [], []
        self.trained = []  # (step, lr) of every update

    # -- the agent ------------------------------------------------------------------
    def effective_lr(self):
        if self.schedule is not None:
            return evaluate(self.schedule, self.step) * self.multiplier
        return self.lr

    def emit(self, record):
        self.records.append(record)
        for decision in self.engine.feed(record):
            self.journal.append(decision)
            if decision.command is not None:
                self.seq += 1
                command = encode_command(decision.command, seq=self.seq, time=0.0, reason=decision.action.reason)
                validate_command(command)
                self.commands.append(command)
                self.queue.append(command)

    def control(self):
        while self.queue:
            self.apply(self.queue.pop(0))

    def ack(self, command):
        epoch, _ = self.position
        self.emit(
            AckRecord(seq=command["seq"], cmd=command["cmd"], epoch=epoch, step=self.step, lr=self.effective_lr())
        )

    def apply(self, c):
        cmd = c["cmd"]
        if cmd == "set_lr":
            if self.schedule is not None:
                self.multiplier = c["lr"] / evaluate(self.schedule, self.step)
            else:
                self.lr = c["lr"]
        elif cmd == "scale_lr":
            if self.schedule is not None:
                self.multiplier *= c["factor"]
            else:
                self.lr *= c["factor"]
        elif cmd == "set_schedule":
            if self.schedule is None:
                self.multiplier = 1.0
            self.schedule = c["schedule"]
        elif cmd == "clear_schedule":
            if self.schedule is not None:
                self.lr = self.effective_lr()
                self.schedule, self.multiplier = None, None
        elif cmd == "checkpoint":
            self.save(c.get("name") or f"manual-{self.step}")
        elif cmd == "rollback":
            saved = self.saved.get(c["checkpoint"])
            if saved is None:
                self.emit(ErrorRecord(seq=c["seq"], cmd=cmd, message=f"no checkpoint {c['checkpoint']!r}"))
                return
            self.w, self.step, self.lr, self.multiplier = (
                saved["w"],
                saved["step"],
                saved["lr_var"],
                saved["multiplier"],
            )
            if c.get("lr") is not None:
                if self.schedule is not None:
                    self.multiplier = c["lr"] / evaluate(self.schedule, self.step)
                else:
                    self.lr = c["lr"]
            self.sum = self.count = 0.0  # model.reset_metrics()
            self.skip = c.get("skip_batches", 0)
        elif cmd == "retain":
            self.retained = list(c["keep"])
        elif cmd == "configure":
            self.batch_every = c.get("batch_every") or self.batch_every
            if c.get("checkpoint_every_epochs") is not None:
                self.every_epochs = c["checkpoint_every_epochs"]
            if c.get("checkpoint_every_steps") is not None:
                self.every_steps = c["checkpoint_every_steps"]
        elif cmd == "stop":
            self.stop = True
        self.ack(c)

    def save(self, name):
        epoch, _ = self.position
        lr = self.effective_lr()
        self.saved.pop(name, None)
        self.saved[name] = {"w": self.w, "step": self.step, "lr_var": self.lr, "multiplier": self.multiplier}
        self.emit(
            CheckpointRecord(
                name=name,
                epoch=epoch,
                step=self.step,
                lr=lr,
                multiplier=self.multiplier,
                file=f"checkpoints/{name}",
                sha256="0" * 64,
            )
        )
        while len(self.saved) > self.keep_last:
            old = next((n for n in self.saved if n not in self.retained and n != name), None)
            if old is None or len([n for n in self.saved if n not in self.retained]) <= self.keep_last:
                break
            del self.saved[old]

    # -- the trainer ----------------------------------------------------------------------
    def run(self):
        self.emit(
            StartRecord(
                pid=1,
                optimizer=self.optimizer,
                lr=self.effective_lr(),
                steps_per_epoch=self.steps_per_epoch,
                epochs=self.epochs,
                step=self.step,
            )
        )
        if self.every_epochs or self.every_steps:
            self.save(f"start-{self.step}")
        self.control()
        for epoch in range(self.epochs):
            self.sum = self.count = 0.0
            for batch in range(self.steps_per_epoch):
                self.position = (epoch, self.step)
                self.t += 1
                if self.skip:
                    self.skip -= 1
                    continue
                lr = self.effective_lr()
                loss, self.w = self.dynamics(self.w, lr, self.t)
                self.trained.append((self.step, lr))
                self.step += 1
                self.sum += loss
                self.count += 1
                self.position = (epoch, self.step)
                if self.every_steps and self.step % self.every_steps == 0:
                    self.save(f"step-{self.step}")
                if (batch + 1) % self.batch_every == 0:
                    self.emit(
                        BatchRecord(
                            epoch=epoch,
                            batch=batch,
                            step=self.step,
                            lr=self.effective_lr(),
                            logs={"loss": self.sum / self.count},
                        )
                    )
                self.control()
            # no batch trained since a rollback: the agent leaves the training metrics out (Keras would say 0)
            logs = {"loss": self.sum / self.count} if self.count else {}
            if self.val is not None:
                with np.errstate(all="ignore"):
                    logs["val_loss"] = float(self.val(self.w))
            if self.every_epochs and (epoch + 1) % self.every_epochs == 0:
                self.save(f"epoch-{epoch + 1:04d}")
            self.emit(EpochRecord(epoch=epoch, step=self.step, lr=self.effective_lr(), logs=logs))
            self.control()
            if self.stop:
                break
        self.emit(EndRecord(reason="stopped" if self.stop else "completed", epoch=epoch, step=self.step))
        return self

    def decided(self, kind=None):
        return [d for d in self.journal if d.command is not None and (kind is None or d.command.cmd == kind)]


np = pytest.importorskip("numpy")


def ckpt(name, step, epoch=None, lr=0.1, multiplier=None):
    return CheckpointRecord(
        name=name, epoch=epoch, step=step, lr=lr, multiplier=multiplier, file=f"checkpoints/{name}", sha256="0" * 64
    )


class Spy(Policy):
    """Records the views it sees; returns, once, the actions scripted for a step of batch or epoch records."""

    name = "spy"

    def __init__(self, script=None, name=None):
        super().__init__()
        self.script = script or {}
        self.views = []
        if name:
            self.name = name

    def on_batch(self, record, run):
        self.views.append(run)
        return list(self.script.pop(("batch", record.step), []))

    def on_epoch(self, record, run):
        self.views.append(run)
        return list(self.script.pop(("epoch", record.step), []))


def test_checkpoints_become_good_after_a_later_finite_epoch():
    spy = Spy()
    engine = Engine([spy])
    engine.feed(StartRecord(pid=1, lr=0.1, step=0))
    engine.feed(ckpt("start-0", 0))
    engine.feed(ckpt("epoch-0001", 100, epoch=0))
    engine.feed(EpochRecord(epoch=0, step=100, lr=0.1, logs={"loss": 1.0}))  # no val_loss: not the same step
    assert [(c.name, c.good, c.start) for c in engine.checkpoints] == [
        ("start-0", True, True),
        ("epoch-0001", False, False),
    ]
    assert engine.checkpoints[1].metrics == {"loss": 1.0}
    engine.feed(ckpt("epoch-0002", 200, epoch=1))
    engine.feed(EpochRecord(epoch=1, step=200, lr=0.1, logs={"loss": math.nan}))  # a NaN epoch vouches for nothing
    assert [c.good for c in engine.checkpoints] == [True, False, False]
    engine.feed(EpochRecord(epoch=2, step=300, lr=0.1, logs={"loss": 0.5, "val_loss": 0.7}))
    assert [c.good for c in engine.checkpoints] == [True, True, True]
    assert engine.known_good_checkpoint == "epoch-0002"
    view = spy.views[-1]
    assert view.step == 300 and [c.name for c in view.checkpoints] == ["start-0", "epoch-0001", "epoch-0002"]


def test_val_loss_at_the_same_step_vouches_for_an_epoch_end_checkpoint_in_either_order():
    engine = Engine([])
    engine.feed(StartRecord(pid=1, lr=0.1))
    engine.feed(ckpt("a", 100, epoch=0))
    engine.feed(EpochRecord(epoch=0, step=100, logs={"loss": 1.0, "val_loss": 1.2}))
    engine.feed(EpochRecord(epoch=1, step=200, logs={"loss": 1.0, "val_loss": math.inf}))
    engine.feed(ckpt("b", 200, epoch=1))  # after its epoch record: vouched by it only if finite
    assert [(c.name, c.good, c.metrics["val_loss"]) for c in engine.checkpoints] == [
        ("a", True, 1.2),
        ("b", False, math.inf),
    ]


def test_pick_checkpoint_rules():
    cps = (
        CheckpointInfo("start-0", 0, start=True),
        CheckpointInfo("e1", 100, 0, good=True),
        CheckpointInfo("e2", 200, 1, good=False),
    )
    assert pick_checkpoint(cps, 250)[0].name == "e1"  # newest good, not the unconfirmed e2
    assert pick_checkpoint(cps, 99)[0].name == "start-0"  # none good before: the start checkpoint
    assert pick_checkpoint(cps, None)[0].name == "e1"
    target, why = pick_checkpoint((CheckpointInfo("e2", 200, 1),), 250)
    assert (
        target is None
        and why
        == "no known-good checkpoint at or before step 250 (e2 at step 200 not yet confirmed by a finite epoch loss)"
    )
    assert pick_checkpoint((), 5) == (None, "no checkpoint has been taken")
    assert pick_checkpoint(cps[1:], 50)[1] == "no checkpoint at or before step 50 (the earliest is e1 at step 100)"


def feed_checkpointed_run(engine, val=(1.0, 0.8, 0.9)):
    """start-0, then epochs 0..2 each with an epoch-end checkpoint; all known good by the end."""
    engine.feed(StartRecord(pid=1, lr=0.1, step=0, optimizer="SGD"))
    engine.feed(ckpt("start-0", 0))
    for e, v in enumerate(val):
        engine.feed(ckpt(f"e{e + 1}", 100 * (e + 1), epoch=e, lr=0.1 / (e + 1)))
        engine.feed(EpochRecord(epoch=e, step=100 * (e + 1), lr=0.1 / (e + 1), logs={"loss": 1.0, "val_loss": v}))


def test_rollback_resolution_and_lr():
    engine = Engine([Spy({("batch", 350): [Rollback(before_step=250, lr_factor=0.5, reason="nan")]})])
    feed_checkpointed_run(engine)
    d, retain = engine.feed(BatchRecord(epoch=3, batch=49, step=350, lr=0.02, logs={"loss": math.nan}))
    assert d.command == RollbackCommand(checkpoint="e2", skip_batches=0, lr=0.05 * 0.5)
    assert retain.command == RetainCommand(keep=("e2",))  # e3 is gone: e2 is the newest good and the best
    assert d.lr == 0.025 and engine.lr == 0.025 and engine.rollback_pending == "e2"
    assert [c.name for c in engine.checkpoints] == ["start-0", "e1", "e2"]  # e3 (step 300) was abandoned


def test_rollback_best_explicit_and_missing():
    engine = Engine(
        [
            Spy(
                {
                    ("batch", 310): [Rollback(best=True, reason="best")],
                    ("batch", 320): [
                        Rollback(checkpoint="nope", reason="x"),
                        Rollback(checkpoint="e1", lr=0.3, reason="y"),
                    ],
                }
            )
        ]
    )
    feed_checkpointed_run(engine)
    d, _ = engine.feed(BatchRecord(epoch=3, batch=9, step=310, logs={"loss": 1.0}))
    assert d.command == RollbackCommand(checkpoint="e2", skip_batches=0)  # best val_loss 0.8
    assert d.lr == 0.05  # the checkpoint's own LR
    engine.feed(AckRecord(seq=1, cmd="rollback", epoch=3, step=200, lr=0.05))
    d1, d2, retain = engine.feed(BatchRecord(epoch=3, batch=19, step=320, logs={"loss": 1.0}))
    assert retain.command == RetainCommand(keep=("e1",))
    assert d1.suppressed == "no checkpoint to roll back to: no checkpoint named 'nope' (known: start-0, e1, e2)"
    assert d2.command == RollbackCommand(checkpoint="e1", skip_batches=0, lr=0.3)


def test_no_checkpoint_suppresses_the_rollback_and_lets_the_stop_through():
    engine = Engine(
        [Spy({("epoch", 100): [Rollback(before_step=50, reason="nan"), Stop(give_up=True, reason="gave up")]})]
    )
    engine.feed(StartRecord(pid=1, lr=0.1))
    d1, d2 = engine.feed(EpochRecord(epoch=0, step=100, logs={"loss": math.nan}))
    assert d1.command is None and d1.suppressed == "no checkpoint to roll back to: no checkpoint has been taken"
    assert d2.command == StopCommand() and d2.exit_status == GIVE_UP_STATUS == 3
    assert engine.exit_status == 3


def test_records_between_a_rollback_and_its_ack_reach_no_policy():
    spy = Spy({("batch", 310): [Rollback(reason="r")]})
    engine = Engine([spy])
    feed_checkpointed_run(engine)
    engine.feed(BatchRecord(epoch=3, batch=9, step=310, lr=0.05, logs={"loss": 9.0}))
    seen = len(spy.views)
    assert engine.feed(BatchRecord(epoch=3, batch=10, step=311, lr=7.0, logs={"loss": math.nan})) == []
    assert engine.feed(ckpt("late", 311, epoch=3)) == []  # taken in the abandoned run
    assert len(spy.views) == seen and engine.lr == 0.1 / 3  # e3's LR, not the stale record's
    engine.feed(AckRecord(seq=1, cmd="rollback", epoch=3, step=300, lr=0.0333))
    assert engine.rollback_pending is None and engine.lr == 0.0333
    engine.feed(BatchRecord(epoch=3, batch=11, step=301, lr=0.0333, logs={"loss": 1.0}))
    assert len(spy.views) == seen + 1 and spy.views[-1].step == 301
    assert "late" not in [c.name for c in engine.checkpoints]


def test_a_refused_rollback_forgets_its_checkpoint():
    engine = Engine([Spy({("batch", 310): [Rollback(reason="r")], ("batch", 311): [Rollback(reason="again")]})])
    feed_checkpointed_run(engine)
    engine.feed(BatchRecord(epoch=3, batch=9, step=310, logs={"loss": 1.0}))
    engine.feed(ErrorRecord(seq=1, cmd="rollback", message="sha256 mismatch"))
    assert engine.rollback_pending is None and [c.name for c in engine.checkpoints] == ["start-0", "e1", "e2"]
    [d] = engine.feed(BatchRecord(epoch=3, batch=10, step=311, logs={"loss": 1.0}))
    assert d.command.checkpoint == "e2"


def test_rollback_beats_lr_changes_and_schedules_and_goes_with_a_stop():
    spec = {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 100}
    engine = Engine(
        [
            Spy({("epoch", 300): [SetLR(lr=0.5, reason="a"), SetSchedule(schedule=spec, reason="s")]}, name="a"),
            Spy({("epoch", 300): [Rollback(best=True, reason="b"), Stop(reason="done")]}, name="b"),
        ]
    )
    feed_checkpointed_run(engine, val=(1.0, 0.8))
    decisions = engine.feed(EpochRecord(epoch=2, step=300, logs={"loss": 1.0, "val_loss": 2.0}))
    assert [d.command and d.command.cmd for d in decisions] == [None, None, "rollback", "stop"]
    assert decisions[0].suppressed == decisions[1].suppressed == "rollback (policy b) decided at step 300"


def test_priorities_stop_beats_schedules_and_lr_change_beats_a_schedule_before_it():
    spec = {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 100}
    engine = Engine(
        [
            Spy(
                {
                    ("epoch", 100): [SetSchedule(schedule=spec, reason="s"), ScaleLR(factor=0.5, reason="cut")],
                    ("epoch", 200): [SetSchedule(schedule=spec, reason="s"), Stop(reason="stop")],
                }
            )
        ]
    )
    engine.feed(StartRecord(pid=1, lr=0.1))
    d1, d2 = engine.feed(EpochRecord(epoch=0, step=100, lr=0.1, logs={}))
    assert d1.suppressed == "an LR change (policy spy) already decided at step 100"
    assert d2.command == SetLRCommand(lr=0.05)
    d1, d2 = engine.feed(EpochRecord(epoch=1, step=200, lr=0.05, logs={}))
    assert d1.suppressed == "stop (policy spy) decided at step 200" and d2.command == StopCommand()
    assert engine.schedule is None


def test_schedules_multiplier_and_scale_lr_with_min_lr():
    spec = {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 100}
    engine = Engine(
        [
            Spy(
                {
                    ("epoch", 100): [
                        SetSchedule(schedule=spec, reason="s"),
                        SetSchedule(schedule=spec, reason="again"),
                    ],
                    ("epoch", 200): [ScaleLR(factor=0.5, min_lr=0.02, reason="cut")],
                    ("epoch", 300): [ScaleLR(factor=0.5, min_lr=0.02, reason="cut")],
                    ("epoch", 400): [SetLR(lr=0.01, reason="set")],
                    ("epoch", 500): [ClearSchedule(reason="c"), ClearSchedule(reason="c2")],
                    ("epoch", 600): [ClearSchedule(reason="c3")],
                }
            )
        ]
    )
    engine.feed(StartRecord(pid=1, lr=0.3, step=0))
    d1, d2 = engine.feed(EpochRecord(epoch=0, step=100, lr=0.3, logs={}))
    assert d1.command == SetScheduleCommand(schedule=spec | {"start_step": 0})
    assert d1.lr == 0.05 and engine.lr == 0.05  # schedule(100) * multiplier 1
    assert d2.suppressed == "another schedule change (policy spy) already decided at step 100"
    [d] = engine.feed(EpochRecord(epoch=1, step=200, lr=0.025, logs={}))
    assert d.command.cmd == "scale_lr" and d.command.factor == pytest.approx(0.8)  # not below min_lr
    assert d.lr == 0.02
    [d] = engine.feed(EpochRecord(epoch=2, step=300, lr=0.01, logs={}))
    assert d.suppressed == "no change (LR 0.01 is not above min_lr 0.02)"
    [d] = engine.feed(EpochRecord(epoch=3, step=400, lr=0.01 * 0.8 / 2, logs={}))
    assert d.command == SetLRCommand(lr=0.01)
    view_multiplier = engine.state_dict()["supervision"]["multiplier"]
    assert view_multiplier == pytest.approx(0.01 / evaluate(spec, 400))
    d1, d2 = engine.feed(EpochRecord(epoch=4, step=500, lr=0.01, logs={}))
    assert d1.command == ClearScheduleCommand() and d1.lr is None and engine.schedule is None
    assert d2.suppressed == "another schedule change (policy spy) already decided at step 500"
    [d] = engine.feed(EpochRecord(epoch=5, step=600, lr=0.01, logs={}))
    assert d.suppressed == "no change (no lrsup schedule in force)"


def test_a_refused_schedule_is_forgotten():
    spec = {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 100}
    engine = Engine([Spy({("epoch", 100): [SetSchedule(schedule=spec, reason="s")]})])
    engine.feed(StartRecord(pid=1, lr=0.3))
    engine.feed(EpochRecord(epoch=0, step=100, lr=0.3, logs={}))
    assert engine.schedule is not None
    engine.feed(ErrorRecord(seq=1, cmd="set_schedule", message="no"))
    assert engine.schedule is None


class Prober(Policy):
    name = "prober"

    def __init__(self):
        super().__init__()
        self.on = False

    @property
    def probing(self):
        return self.on

    def on_epoch(self, record, run):
        if record.epoch == 0:
            self.on = True
            return [SetLR(lr=0.9, reason="probe")]
        return []


def test_while_a_policy_probes_others_cannot_change_the_lr_but_can_stop():
    other = Spy({("epoch", 200): [ScaleLR(factor=0.5, reason="cut"), Rollback(reason="rb"), Stop(reason="stop")]})
    engine = Engine([other, Prober()])
    engine.feed(StartRecord(pid=1, lr=0.1))
    engine.feed(ckpt("start-0", 0))
    [d] = engine.feed(EpochRecord(epoch=0, step=100, lr=0.1, logs={}))
    assert d.command == SetLRCommand(lr=0.9)
    d1, d2, d3 = engine.feed(EpochRecord(epoch=1, step=200, lr=0.9, logs={}))
    assert other.views[-1].probing == "prober"
    assert d1.suppressed == "stop (policy spy) decided at step 200"
    assert d2.suppressed == "policy prober is probing (an LR range test); its outcome decides the LR"
    assert d3.command == StopCommand()


def test_checkpoint_configure_keep_and_retain_commands():
    engine = Engine(
        [
            Spy(
                {
                    ("epoch", 100): [
                        SaveCheckpoint(name="x", reason="a"),
                        SaveCheckpoint(name="x", reason="b"),
                        SaveCheckpoint(reason="c"),
                        SaveCheckpoint(name="../etc", reason="d"),
                        Configure(batch_every=1, checkpoint_every_epochs=1, reason="e"),
                        Configure(batch_every=5, reason="f"),
                        Keep(checkpoints=("x",), reason="g"),
                        Keep(checkpoints=("x",), reason="h"),
                        Retain(keep=("y",), reason="i"),
                    ]
                }
            )
        ],
        batch_every=10,
        checkpoint_every_epochs=1,
    )
    engine.feed(StartRecord(pid=1, lr=0.1))
    ds = engine.feed(EpochRecord(epoch=0, step=100, lr=0.1, logs={}))
    assert [d.command for d in ds] == [
        CheckpointCommand(name="x"),
        None,
        CheckpointCommand(),
        None,
        ConfigureCommand(batch_every=1),
        None,
        RetainCommand(keep=("x",)),
        None,
        None,
    ]
    assert ds[1].suppressed == "another checkpoint request (policy spy) already decided at step 100"
    assert ds[3].suppressed.startswith("invalid: checkpoint name '../etc'")
    assert ds[5].suppressed == "another configure (policy spy) already set batch_every at step 100"
    assert ds[7].suppressed == "no change (retained: x)"
    assert ds[8].suppressed.startswith("unsupported action Retain (kind 'retain'): the engine decides retention")
    assert (
        Engine([Spy({("epoch", 100): [Configure(checkpoint_every_epochs=1, reason="z")]})])
        .feed(EpochRecord(epoch=0, step=100, logs={}))[0]
        .suppressed
        == "no change (checkpoint_every_epochs already 1)"
    )


def test_configure_batch_min_interval_is_sent_as_a_float_and_shows_in_the_view():
    spy = Spy(
        {
            ("epoch", 100): [Configure(batch_min_interval=0, reason="every multiple")],
            ("epoch", 200): [
                Configure(batch_min_interval=-1.0, reason="bad"),
                Configure(batch_min_interval=math.nan, reason="bad too"),
            ],
        }
    )
    engine = Engine([spy], batch_min_interval=0.05)
    engine.feed(StartRecord(pid=1, lr=0.1))
    [d] = engine.feed(EpochRecord(epoch=0, step=100, logs={}))
    assert spy.views[-1].batch_min_interval == 0.05  # the view of the record the Configure was decided on
    assert d.command == ConfigureCommand(batch_min_interval=0.0)
    validate_command(encode_command(d.command, seq=1, time=0.0))
    [bad, nan] = engine.feed(EpochRecord(epoch=1, step=200, logs={}))
    assert (
        bad.suppressed
        == "invalid: batch_min_interval must be a number of seconds >= 0 and <= 9.223e+09 (0: no minimum), got -1.0"
    )
    assert nan.command is None and nan.suppressed.startswith("invalid: batch_min_interval")
    assert spy.views[-1].batch_min_interval == 0.0


def test_a_snapshot_from_before_batch_min_interval_loads_with_the_configured_value():
    engine = Engine([], batch_every=5, batch_min_interval=0.2)
    engine.feed(StartRecord(pid=1, lr=0.1))
    state = loads(dumps(engine.state_dict()))
    del state["supervision"]["cadence"]["batch_min_interval"]  # as an older supervisor saved it
    clone = Engine([], batch_every=5, batch_min_interval=0.2)
    clone.load_state_dict(state)
    assert clone.state.cadence == {
        "batch_every": 5,
        "batch_min_interval": 0.2,
        "checkpoint_every_epochs": 1,
        "checkpoint_every_steps": 0,
    }


def test_retain_follows_the_start_good_and_best_checkpoints():
    engine = Engine([])
    engine.feed(StartRecord(pid=1, lr=0.1))
    [d] = engine.feed(ckpt("start-0", 0))
    assert d.command == RetainCommand(keep=("start-0",)) and d.action.policy == "engine"
    assert engine.feed(ckpt("e1", 100, epoch=0)) == []  # not good yet: nothing changes
    [d] = engine.feed(EpochRecord(epoch=0, step=100, logs={"loss": 1.0, "val_loss": 0.5}))
    assert d.command == RetainCommand(keep=("e1",))  # newest good and best
    engine.feed(ckpt("e2", 200, epoch=1))
    [d] = engine.feed(EpochRecord(epoch=1, step=200, logs={"loss": 1.0, "val_loss": 0.9}))
    assert d.command == RetainCommand(keep=("e1", "e2"))  # best e1, newest good e2
    assert d.action.reason == "keep newest known-good e2; best e1"


def test_state_round_trip_with_checkpoints_pending_rollback_and_schedule():
    spec = {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 100}
    script = {
        ("epoch", 300): [SetSchedule(schedule=spec, reason="s"), Keep(checkpoints=("e1",), reason="k")],
        ("batch", 310): [Rollback(reason="r")],
    }
    engine = Engine([Spy(script)])
    feed_checkpointed_run(engine)
    engine.feed(BatchRecord(epoch=3, batch=9, step=310, logs={"loss": 1.0}))
    state = loads(dumps(engine.state_dict()))
    fresh = Engine([Spy(script)])
    fresh.load_state_dict(state)
    assert fresh.state_dict() == engine.state_dict()
    assert fresh.checkpoints == engine.checkpoints and fresh.rollback_pending == "e3"
    assert fresh.feed(BatchRecord(epoch=3, batch=10, step=311, logs={"loss": 9.0})) == []
    with pytest.raises(ValueError, match="malformed supervision"):
        Engine([Spy(script)]).load_state_dict({**state, "supervision": {"step": 1}})


# -- closed loop: the simulated trainer -----------------------------------------------------------


def test_sim_trainer_follows_a_schedule_a_cut_and_a_rollback():
    spec = {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 40}
    engine = Engine(
        [
            Spy(
                {
                    ("epoch", 20): [SetSchedule(schedule=spec, reason="s")],
                    ("epoch", 60): [ScaleLR(factor=0.5, reason="cut")],
                    ("epoch", 80): [Rollback(before_step=70, lr=0.2, reason="back")],
                }
            )
        ],
        batch_every=5,
    )
    sim = SimTrainer(engine, quadratic(), lr=0.3, steps_per_epoch=20, epochs=6, batch_every=5, val=lambda w: w * w)
    sim.run()
    assert [c["cmd"] for c in sim.commands] == [
        "retain",
        "set_schedule",
        "retain",
        "retain",
        "scale_lr",
        "retain",
        "rollback",
        "retain",
        "retain",
    ]
    rollback = next(c for c in sim.commands if c["cmd"] == "rollback")
    assert rollback["checkpoint"] == "epoch-0003" and rollback["lr"] == 0.2  # step 60, good (val_loss at its step)
    lrs = dict(sim.trained)
    assert lrs[19] == 0.3 and lrs[20] == 0.1 and lrs[40] == 0.05  # the schedule from step 20
    assert lrs[60] == pytest.approx(0.2)  # after the rollback to step 60: lr 0.2 as multiplier 0.2 / schedule(60)
    assert lrs[80] == pytest.approx(0.1)  # the schedule keeps its shape: halved at step 80
    assert sim.step == 120 - 20  # 6 epochs of 20 steps, 20 of them replayed after the rollback
    assert engine.lr == pytest.approx(sim.effective_lr())


def test_the_view_has_every_runview_field_and_stays_frozen():
    # The engine fills RunView without its __init__ (hot path): a new field must not be missed.
    engine = Engine([])
    engine.feed(StartRecord(time=1.0, pid=1, optimizer="SGD", lr=0.1, steps_per_epoch=10, epochs=3))
    view = engine._view()
    assert set(vars(view)) == {f.name for f in dataclasses.fields(RunView)}
    assert view == RunView(**vars(view)) and view.lr == 0.1 and view.optimizer == "SGD"
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.lr = 1.0  # type: ignore[misc]


class ViewChecker(Policy):
    """Compares every view it is given with one built afresh from the engine's state (none of it cached)."""

    name = "view_checker"

    def __init__(self):
        super().__init__()
        self.engine = None
        self.checked = []

    def _check(self, record, run):
        e = self.engine
        fresh = RunView(
            **e.state.run,
            lr=e.state.lr,
            step=e.state.step,
            checkpoints=e.state.book.infos(),
            schedule=e.state.schedule,
            multiplier=e.state.multiplier,
            batch_every=e.state.cadence["batch_every"],
            batch_min_interval=e.state.cadence["batch_min_interval"],
            probing=e._probing(),
            start_step=e.state.start_step,
        )
        assert run == fresh, (record, run, fresh)
        self.checked.append(type(record).__name__)
        return ()

    on_start = on_batch = on_epoch = on_end = on_ack = _check


def test_the_view_fields_kept_between_records_are_never_stale():
    # The engine keeps the view's slow fields (run, checkpoints, schedule, cadence...) from one
    # record to the next: through a range test (schedule, cadence, rollback) and divergence
    # rollbacks (checkpoints dropped, multiplier), every view still equals a fresh one.
    from lrsup.policies.divergence import Divergence
    from lrsup.policies.lr_find import LRFind

    checker = ViewChecker()
    engine = Engine(
        [checker, Divergence(), LRFind(mode="always", max_share=1.0, probe=False), Plateau(patience=1)], batch_every=5
    )
    checker.engine = engine
    sim = SimTrainer(
        engine,
        quadratic(h=1.0, kicks={150: 40.0, 260: 60.0}),
        w=2.0,
        lr=0.05,
        steps_per_epoch=30,
        epochs=10,
        batch_every=5,
        val=lambda w: w * w,
    ).run()
    cmds = {c["cmd"] for c in sim.commands}
    assert {"set_schedule", "clear_schedule", "configure", "rollback", "retain"} <= cmds
    assert len(sim.decided("rollback")) >= 2 and engine.checkpoints
    assert checker.checked.count("BatchRecord") > 100 and "AckRecord" in checker.checked
    # and after a state reload
    clone_checker = ViewChecker()
    clone = Engine(
        [clone_checker, Divergence(), LRFind(mode="always", max_share=1.0, probe=False), Plateau(patience=1)],
        batch_every=5,
    )
    clone_checker.engine = clone
    clone.feed(BatchRecord(epoch=0, batch=0, step=1, lr=0.5, logs={"loss": 1.0}))  # fills the kept fields
    clone.load_state_dict(loads(dumps(engine.state_dict())))
    clone.feed(BatchRecord(epoch=9, batch=4, step=sim.step + 5, lr=0.5, logs={"loss": 1.0}))
    assert clone_checker.checked == ["BatchRecord", "BatchRecord"]


def test_a_decision_shows_in_the_next_batch_records_view_before_its_ack():
    spec = {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 40}
    checker = ViewChecker()
    spy = Spy(
        {
            ("batch", 10): [SetSchedule(schedule=spec, reason="s")],
            ("epoch", 30): [ScaleLR(factor=0.5, reason="cut")],
            ("batch", 40): [Configure(batch_every=2, reason="c")],
        }
    )
    engine = Engine([checker, spy], batch_every=10)
    checker.engine = engine
    engine.feed(StartRecord(pid=1, lr=0.1, optimizer="SGD", step=0))
    for step in range(10, 61, 10):  # no acks: the trainer has not applied anything yet
        engine.feed(BatchRecord(epoch=0, batch=step - 1, step=step, lr=0.1, logs={"loss": 1.0}))
        if step == 30:
            engine.feed(EpochRecord(epoch=0, step=30, lr=0.1, logs={"loss": 1.0}))
    views = {view.step: view for view in spy.views}
    assert views[10].schedule is None and views[20].schedule == validate_spec(spec)
    assert views[20].multiplier == 1.0 and views[40].multiplier == 0.5
    assert views[40].batch_every == 10 and views[50].batch_every == 2
    assert checker.checked.count("BatchRecord") == 6
