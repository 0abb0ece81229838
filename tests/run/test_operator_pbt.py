"""PBT's requests as a member's and a donor's supervisors act on them (lrsup.supervisor.run.operator).

- exploit: a rollback to the donor's checkpoint, the other hyperparameters, then the member's new
  origin (an ``exploit-...`` checkpoint) after which its engine never rolls back to a checkpoint of
  its own from before the exploit;
- donate / donation_done: the donor's engine keeps the donated checkpoint, then lets it go.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from lrsup.policies.actions import Rollback
from lrsup.policies.base import Policy
from lrsup.supervisor import protocol
from lrsup.supervisor.engine.checkpoint_book import EXPLOIT_BASE
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.protocol.commands import CheckpointCommand, RetainCommand, RollbackCommand, SetHparamCommand
from lrsup.supervisor.protocol.journal import DecisionEntry
from lrsup.supervisor.protocol.wire import CheckpointRecord, EpochRecord, StartRecord
from lrsup.supervisor.run.operator import DONATION, apply_pbt, plan_pbt, validate_request

SHA = "0" * 64


class FakeRunner:
    """The runner's public verbs the operator uses, recording what they were given."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.channel = SimpleNamespace(seq=7, degraded=None)
        self.sent: list[tuple[int, Any, str | None]] = []
        self.journaled: list[Any] = []
        self.events: list[tuple[str, dict]] = []
        self.retained: list[str] = []

    def send(self, command, *, reason=None):
        self.channel.seq += 1
        self.sent.append((self.channel.seq, command, reason))
        return self.channel.seq

    def journal(self, entry):
        self.journaled.append(entry)

    def decision_journaled(self, seq):
        return any(getattr(entry, "seq", None) == seq for entry in self.journaled)

    def event(self, name, detail, **extra):
        self.events.append((name, extra))


class RollbackOnNaN(Policy):
    """Rolls back to the newest known-good checkpoint when the loss is NaN."""

    name = "rescue"

    def on_epoch(self, record, run):
        return [Rollback(reason="nan")] if record.logs["loss"] != record.logs["loss"] else []


def request(op: str, **kw: Any):
    obj = {"v": 1, "op": op, "who": "lrsup-pbt", "time": 1.0, "peer": "/runs/q1-a", "checkpoint": "epoch-0002",
           "epoch": 2, "hparams": {"lr": 0.02, "momentum": 0.9}, "old": {"lr": 0.1, "momentum": 0.8}}  # fmt: skip
    obj.update(kw)
    return validate_request(obj)


def checkpoint(name: str, epoch: int, step: int) -> CheckpointRecord:
    return CheckpointRecord(time=1.0, name=name, epoch=epoch, step=step, file=f"checkpoints/{name}.h5", sha256=SHA)


def epoch(n: int, step: int, loss: float) -> EpochRecord:
    return EpochRecord(time=1.0, epoch=n, step=step, lr=0.1, logs={"loss": loss, "val_loss": loss})


def trained_engine() -> Engine:
    engine = Engine([RollbackOnNaN()], checkpoint_every_epochs=1)
    engine.feed(StartRecord(time=1.0, lr=0.1, steps_per_epoch=10, epochs=10))
    for n in range(3):
        engine.feed(epoch(n, 10 * (n + 1), 1.0 - 0.1 * n))
        engine.feed(checkpoint(f"epoch-{n + 1:04d}", n, 10 * (n + 1)))
    return engine


def test_an_exploit_sends_rollback_hparams_then_the_new_origin_and_journals_their_seqs():
    runner = FakeRunner(trained_engine())
    req = request("exploit")
    planned = plan_pbt(runner, req)
    assert [type(p.command) for p in planned] == [RollbackCommand, SetHparamCommand, CheckpointCommand]
    apply_pbt(runner, req, planned)
    (_, rollback, _), (_, hparam, _), (_, base, _) = runner.sent
    assert (rollback.checkpoint, rollback.lr, rollback.from_run) == ("epoch-0002", 0.02, "/runs/q1-a")
    assert (hparam.name, hparam.value) == ("momentum", 0.9)
    assert base.name.startswith(EXPLOIT_BASE) and protocol.is_checkpoint_name(base.name)
    (name, fields), = runner.events  # fmt: skip
    assert name == "exploit" and fields["seqs"] == [8, 9, 10] and fields["seq"] == 8 and fields["base"] == base.name


def test_after_an_exploit_no_rollback_goes_to_a_checkpoint_from_before_it():
    engine = trained_engine()
    assert engine.known_good_checkpoint == "epoch-0003"
    # the trainer loaded the donor's state (its ack), then took the new origin the exploit asked for
    base = f"{EXPLOIT_BASE}0002-epoch-0002"
    engine.feed(checkpoint(base, 2, 20))  # at the donor's step: the member's epoch 2 record was at step 30
    assert [c.name for c in engine.checkpoints] == [base]
    assert engine.checkpoints[0].start and not engine.checkpoints[0].good
    # a restart (a crash, or a PBT turn) before an epoch vouched for it restores the new origin,
    # never the member's abandoned weights and never nothing (training from scratch)
    assert engine.known_good_checkpoint == base
    decisions = engine.feed(epoch(3, 30, float("nan")))  # not vouched by a NaN epoch...
    (rollback,) = [d for d in decisions if isinstance(d.command, RollbackCommand)]
    assert rollback.command.checkpoint == base  # ...and still the only target: the start fallback
    engine = trained_engine()
    engine.feed(checkpoint(base, 2, 30))  # the member's own epoch record was at that step: not its logs
    assert not engine.checkpoints[0].good and engine.checkpoints[0].metrics is None
    engine.feed(epoch(3, 40, 0.5))
    assert engine.known_good_checkpoint == base
    (keep,) = [d.command.keep for d in engine.feed(checkpoint("epoch-0004", 3, 40)) if d.command]
    assert "epoch-0002" not in keep and "epoch-0003" not in keep


def test_a_donor_keeps_the_donated_checkpoint_until_the_donation_is_done():
    runner = FakeRunner(trained_engine())
    runner.engine.feed(epoch(3, 40, 0.6))
    runner.engine.feed(checkpoint("epoch-0004", 3, 40))  # epoch-0002 is now neither newest nor best
    assert "epoch-0002" not in runner.engine.state.retained
    donate = request("donate", peer="/runs/q4-d")
    planned = plan_pbt(runner, donate)
    apply_pbt(runner, donate, planned)
    ((seq, retain, _),) = runner.sent
    assert isinstance(retain, RetainCommand) and "epoch-0002" in retain.keep and runner.retained == list(retain.keep)
    (entry,) = runner.journaled
    assert isinstance(entry, DecisionEntry) and entry.seq == seq and f"{DONATION}q4-d" in entry.reason
    assert runner.events[-1][0] == "donated"
    # newer checkpoints come and go: the donated one stays retained
    for n in range(4, 7):
        runner.engine.feed(epoch(n, 10 * (n + 1), 0.6 - 0.01 * n))
        runner.engine.feed(checkpoint(f"epoch-{n + 1:04d}", n, 10 * (n + 1)))
    assert "epoch-0002" in runner.engine.state.retained
    done = request("donation_done", peer="/runs/q4-d")
    apply_pbt(runner, done, plan_pbt(runner, done))
    (_, released, _) = runner.sent[-1]
    assert "epoch-0002" not in released.keep and runner.events[-1][0] == "donation_released"
    assert plan_pbt(runner, done) == []  # releasing twice changes nothing, sends nothing


def test_a_partly_written_exploit_sends_only_what_is_missing():
    runner = FakeRunner(trained_engine())
    req = request("exploit")
    planned = plan_pbt(runner, req)
    apply_pbt(runner, req, planned, skip=1)  # the rollback (seq 7) was written before the supervisor died
    assert [type(c) for _, c, _ in runner.sent] == [SetHparamCommand, CheckpointCommand]
    assert runner.events[0][1]["seqs"] == [7, 8, 9]
