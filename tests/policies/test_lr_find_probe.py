"""lr_find run as a probe before the first fit (issue 13, item 1): the test costs the fit nothing.

A simulated trainer with the launcher's probe: a hidden stage (a start record marked
``probe``) trained until lr_find clears its ramp, then the weights, step, LR and data
position put back, then the fit itself.
"""

from __future__ import annotations

from lrsup.policies.actions import SetLR
from lrsup.policies.base import RunView
from lrsup.policies.lr_find import LRFind
from lrsup.policies.plateau import Plateau
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.protocol.wire import BatchRecord, CheckpointRecord, EpochRecord, StartRecord, dumps, loads
from tests.engine.test_engine import SimTrainer
from tests.policies.test_lr_find import noisy


class ProbeSim(SimTrainer):
    """SimTrainer whose ``probe`` runs the launcher's probe stage before ``run`` runs the fit."""

    def probe(self, max_steps=None, pid=1):
        saved = (self.w, self.step, self.lr, self.t)
        self.emit(
            StartRecord(
                pid=pid,
                optimizer=self.optimizer,
                lr=self.effective_lr(),
                steps_per_epoch=self.steps_per_epoch,
                epochs=self.epochs,
                step=self.step,
                probe=True,
            )
        )
        self.control()
        limit = self.epochs * self.steps_per_epoch if max_steps is None else max_steps
        self.sum = self.count = 0.0
        for batch in range(limit):
            self.t += 1
            loss, self.w = self.dynamics(self.w, self.effective_lr(), self.t)
            self.step += 1
            self.sum += loss
            self.count += 1
            self.position = (0, self.step)
            if (batch + 1) % self.batch_every == 0:
                self.emit(
                    BatchRecord(
                        epoch=0,
                        batch=batch,
                        step=self.step,
                        lr=self.effective_lr(),
                        logs={"loss": self.sum / self.count},
                    )
                )
            self.control()
            if self.schedule is None:  # the ramp is over (or none came): the probe stops
                break
        self.probe_steps = self.step - saved[1]
        self.w, self.step, self.lr, self.t = saved  # the snapshot put back
        self.schedule, self.multiplier = None, None  # the agent drops the ramp at the probe's end
        self.position = (None, self.step)
        return self


def sim_for(policy, lr, epochs=4, stack=()):
    engine = Engine([*stack, policy], batch_every=10)
    return ProbeSim(engine, noisy(10.0), w=5.0, lr=lr, steps_per_epoch=50, epochs=epochs, batch_every=10)


def lr_find_commands(sim):
    return [d.command.cmd for d in sim.decided() if d.action.policy == "lr_find"]


def test_the_probe_finds_the_lr_and_the_fit_starts_with_it_losing_no_step():
    policy = LRFind(max_share=1.0, mode="raise_only")
    sim = sim_for(policy, lr=1e-4)
    assert sim.engine.wants_probe and policy.wants_probe
    sim.probe()
    assert not sim.engine.wants_probe and policy.phase == "done" and not policy.probing
    # no checkpoint, no rollback: the trainer puts the probe's start state back itself
    assert lr_find_commands(sim) == ["configure", "set_schedule", "clear_schedule", "configure"]
    suggestion = policy.result["suggestion"]
    assert 1e-3 < suggestion < 0.2 and policy.result["lr"] == suggestion
    assert 0 < sim.probe_steps <= 100
    sim.run()
    # the fit's start record gets the LR found, in force from its first step; every planned step is trained
    assert lr_find_commands(sim)[-1] == "set_lr"
    set_lr = sim.decided("set_lr")[-1]
    assert set_lr.command.lr == suggestion and "probe before fit 1" in set_lr.action.reason
    fit = sim.trained[-4 * 50 :]
    assert len(sim.trained) == 4 * 50  # the probe's steps are not the fit's
    assert fit[0] == (0, suggestion) and {lr for _, lr in fit} == {suggestion}
    assert [r for r in sim.records if isinstance(r, EpochRecord)][-1].logs["loss"] < 0.2
    assert (
        not sim.decided("rollback")
        and not sim.decided("checkpoint")
        or all(d.action.policy != "lr_find" for d in sim.decided("checkpoint"))
    )


def test_a_good_lr_is_left_alone_and_the_fit_is_the_plain_one():
    policy = LRFind(max_share=1.0, mode="auto")
    sim = sim_for(policy, lr=0.02).probe()
    assert policy.result["lr"] is None  # within a decade of the suggestion
    sim.run()
    assert "set_lr" not in lr_find_commands(sim)
    fit = sim.trained[-4 * 50 :]
    assert fit[0] == (0, 0.02) and {lr for _, lr in fit} == {0.02}  # as without lrsup
    plain = ProbeSim(Engine([], batch_every=10), noisy(10.0), w=5.0, lr=0.02, steps_per_epoch=50, epochs=4).run()
    assert fit == plain.trained


def test_a_probe_that_ends_before_the_test_finishes_with_its_points_at_the_fit_start():
    policy = LRFind(max_share=1.0, mode="always")
    sim = sim_for(policy, lr=1e-4).probe(max_steps=60)  # its data ran out
    assert policy.probing and policy.phase == "test"
    sim.run()
    assert policy.phase == "done" and "its probe ended after" in policy.result["why"]
    assert policy.result["lr"] is not None and sim.decided("set_lr")[-1].command.lr == policy.result["lr"]
    assert sim.trained[-4 * 50][1] == policy.result["lr"]


def test_a_trainer_restarted_during_its_probe_calls_the_test_off_and_starts_afresh():
    # issue 17: a crash inside the range test comes back to a consistent state
    policy = LRFind(max_share=1.0, mode="always")
    plateau = Plateau(patience=1)
    engine = Engine([policy, plateau], batch_every=10)
    run = RunView(lr=1e-4, optimizer="SGD", batch_every=10)
    start = dict(optimizer="SGD", lr=1e-4, steps_per_epoch=50, epochs=4, step=0)
    engine.feed(StartRecord(pid=1, probe=True, **start))
    for step in range(1, 30):
        engine.feed(BatchRecord(epoch=0, batch=step - 1, step=step, lr=1e-3, logs={"loss": 1.0}))
    assert engine.schedule is not None and policy.probing
    state = loads(dumps(engine.state_dict()))  # the supervisor may have been resumed meanwhile
    engine = Engine([LRFind(max_share=1.0, mode="always"), Plateau(patience=1)], batch_every=10)
    engine.load_state_dict(state)
    assert not engine.wants_probe  # the restarted attempt gets no probe
    decisions = engine.feed(StartRecord(pid=2, **start))  # attempt 2 starts the fit afresh
    policy = engine.policies[0]
    assert policy.phase == "done" and not policy.probing and "restarted during its probe" in policy.result["why"]
    kinds = [d.action.kind for d in decisions if d.command is not None]
    assert "rollback" not in kinds and "set_lr" not in kinds and "set_schedule" not in kinds
    assert engine.schedule is None and engine.lr == 1e-4  # the script's own LR, no ramp
    assert run.lr == 1e-4


def test_a_fit_without_its_probe_gets_no_range_test():
    policy = LRFind(mode="auto")
    assert policy.on_start(StartRecord(pid=1, lr=0.1, optimizer="SGD"), RunView(lr=0.1, optimizer="SGD")) == ()
    assert policy.phase == "done" and not policy.wants_probe and "without the probe" in policy.result["why"]


def test_checkpoints_taken_inside_a_probe_are_forgotten_when_the_fit_starts():
    engine = Engine([LRFind(mode="always")], batch_every=10)
    engine.feed(StartRecord(pid=1, probe=True, optimizer="SGD", lr=0.1, step=0))
    engine.feed(CheckpointRecord(name="manual-5", step=5, lr=0.5, file="checkpoints/manual-5", sha256="0" * 64))
    assert [c.name for c in engine.checkpoints] == ["manual-5"]
    state = loads(dumps(engine.state_dict()))
    resumed = Engine([LRFind(mode="always")], batch_every=10)
    resumed.load_state_dict(state)
    for e in (engine, resumed):
        e.feed(StartRecord(pid=1, optimizer="SGD", lr=0.1, step=0))
        assert e.checkpoints == () and e.known_good_checkpoint is None


def test_the_fit_after_the_probe_gets_the_lr_only_when_it_starts_from_the_probe_step():
    policy = LRFind(mode="always")
    policy.probe, policy.fit, policy.pid, policy.start_step, policy.phase = True, 1, 1, 0, "done"
    policy.result = {"suggestion": 0.01, "lr": 0.01, "why": "x", "points": 80, "verdict": "valley suggests 0.01"}
    view = RunView(lr=0.1, optimizer="SGD")
    [action] = policy.on_start(StartRecord(pid=2, lr=0.1, step=0, fit=1), view)  # a restart from scratch
    assert isinstance(action, SetLR) and action.lr == 0.01
    assert not policy.on_start(StartRecord(pid=2, lr=0.05, step=120, fit=1), view)  # resumed from a checkpoint
    assert not policy.on_start(StartRecord(pid=2, lr=0.1, step=0, fit=2), view)  # a later fit keeps its own
