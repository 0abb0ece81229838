"""lr_find: the suggestion functions on plain curves, and the range test in a simulated trainer."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError

from lrsup.policies.actions import ClearSchedule, Configure, Keep, Rollback, SaveCheckpoint, SetSchedule
from lrsup.policies.base import CheckpointInfo, RunView
from lrsup.policies.divergence import Divergence
from lrsup.policies.lr_find import LRFind, LRFindSettings, min_loss, smooth, steepest, suggest, valley
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.protocol.commands import ConfigureCommand, RollbackCommand
from lrsup.supervisor.protocol.wire import EpochRecord, StartRecord, dumps, loads
from tests.engine.test_engine import SimTrainer, quadratic

# -- pure functions ------------------------------------------------------------------------


def test_smooth_is_a_bias_corrected_ema():
    beta = 0.9
    assert smooth([2.0], beta) == [pytest.approx(2.0)]  # no start-up bias towards 0
    avg1 = 0.1 * 2.0
    avg2 = 0.9 * avg1 + 0.1 * 4.0
    assert smooth([2.0, 4.0], beta) == pytest.approx([avg1 / 0.1, avg2 / (1 - 0.81)])


LRS = [10 ** (-6 + i / 2) for i in range(12)]
CURVE = [3.0, 3.0, 2.9, 2.7, 2.4, 2.0, 1.6, 1.2, 0.9, 0.8, 1.5, 6.0]


def test_steepest_min_loss_and_valley_on_one_curve():
    assert steepest(LRS, CURVE) == LRS[4]  # 2.4 -> 2.0: the first of the steepest slopes (-0.4 per half decade)
    assert min_loss(LRS, CURVE) == pytest.approx(LRS[9] / 10)
    assert valley(LRS, CURVE) == LRS[4]  # valley 0..9 (length 9): 0 + int(3) + int(1.5)


def test_valley_follows_fastai_arithmetic_on_a_valley_from_the_first_point():
    # strictly decreasing from index 0: fastai's start is end - L = -1; the index is clamped
    assert valley([1, 2, 3, 4, 5], [5.0, 4.0, 3.0, 2.0, 1.0]) == 1  # -1 + int(5/3) + int(5/6) = 0
    assert steepest([1.0], [1.0]) is None and valley([], []) is None and min_loss([], []) is None


def test_suggest_trims_like_fastai_and_cuts_at_the_first_nan():
    lrs = [10 ** (-7 + 8 * i / 99) for i in range(100)]
    losses = [2.0 - i / 100 for i in range(60)] + [1.5 + (i / 10) ** 2 for i in range(40)]
    got = suggest(lrs, losses, "min_loss", num_steps=100)
    assert got == pytest.approx(lrs[59] / 10)
    # the last 5 points are never used, the first num_steps // 10 neither
    assert suggest(lrs, [0.0] * 10 + losses[10:], "min_loss", num_steps=100) == pytest.approx(lrs[59] / 10)
    nan_at_30 = losses[:30] + [math.nan] + losses[31:]
    assert suggest(lrs, nan_at_30, "min_loss", num_steps=100) == pytest.approx(lrs[29] / 10)
    assert suggest(lrs[:12], losses[:12], "valley", num_steps=100) is None  # too few points left
    with pytest.raises(ValueError, match="method must be one of"):
        suggest(lrs, losses, "median")


# -- settings ---------------------------------------------------------------------------------


def test_defaults():
    s = LRFindSettings()
    assert (s.mode, s.raise_threshold, s.lower_threshold, s.num_steps, s.beta, s.stop_factor, s.suggestion) == (
        "always",
        10.0,
        10.0,
        100,
        0.98,
        4.0,
        "valley",
    )
    assert (s.min_lr, s.max_lr) == (None, None)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"min_lr": 1.0, "max_lr": 0.1}, "min_lr must be below max_lr; got min_lr=1.0 and max_lr=0.1"),
        ({"raise_threshold": 1.0}, "greater than 1"),
        ({"num_steps": 5}, "greater than or equal to 20"),
        ({"beta": 1.0}, "less than 1"),
        ({"mode": "sometimes"}, "'always', 'raise_only' or 'auto'"),
        ({"lower_threshold": 0.5}, "lower_threshold\n  Input should be greater than 1"),
        ({"suggestion": "median"}, "'valley', 'steepest' or 'min_loss'"),
        ({"steps": 100}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_are_refused_quoting_the_value(kwargs, text):
    with pytest.raises(ValidationError, match=text):
        LRFind(**kwargs)


# -- the test in a run ---------------------------------------------------------------------------


def noisy(h, amp=0.02):
    """The quadratic of test_engine with +-2% deterministic noise on the loss (the valley needs some)."""
    base = quadratic(h=h)

    def step(w, lr, t):
        loss, w = base(w, lr, t)
        return loss * (1 + random.Random(t).uniform(-amp, amp)), w

    return step


# The simulated runs are a few hundred steps: max_share=1.0 keeps the full 100-step test in them
# (the default would cut it to a quarter of the run; see test_the_ramp_takes_at_most_max_share_of_the_run).
def run(policy, lr, h=10.0, epochs=4, stack=()):
    engine = Engine([*stack, policy], batch_every=10)
    return SimTrainer(engine, noisy(h), w=5.0, lr=lr, steps_per_epoch=50, epochs=epochs, batch_every=10).run()


def commands(sim, policy="lr_find"):
    return [d.command.cmd for d in sim.decided() if d.action.policy == policy]


def test_a_far_too_low_lr_is_raised_and_the_run_restarts_from_the_test_start():
    policy = LRFind(probe=False, max_share=1.0, mode="raise_only")
    sim = run(policy, lr=1e-4)
    assert commands(sim) == [
        "checkpoint",
        "retain",
        "configure",
        "set_schedule",
        "clear_schedule",
        "rollback",
        "configure",
    ]
    ramp = next(d for d in sim.decided("set_schedule")).command.schedule
    assert ramp == {
        "kind": "exponential_decay",
        "initial_learning_rate": 1e-5,
        "decay_steps": 100,
        "decay_rate": pytest.approx(1e6),
        "staircase": False,
        "start_step": 0,
        "end_step": 100,
    }  # SGD: 1e-5 .. 10 from the first step, frozen at the top
    rollback = sim.decided("rollback")[0]
    suggestion = policy.result["suggestion"]
    assert rollback.command == RollbackCommand(checkpoint="lr_find-0", skip_batches=0, lr=suggestion)
    assert 1e-3 < suggestion < 0.2  # above 10 x 1e-4, below the stability limit 2 / h
    # the test ended when the loss blew up, before 100 steps
    assert "passed 4 x its best" in policy.result["why"] and policy.result["points"] < 100
    # a batch record at every step during the test, then the cadence as it was
    assert sim.decided("configure")[0].command == ConfigureCommand(batch_every=1, batch_min_interval=0.0)
    assert sim.decided("configure")[-1].command == ConfigureCommand(batch_every=10, batch_min_interval=0.1)
    # after the rollback the run trains at the suggestion, from step 0, and converges
    after = [lr for step, lr in sim.trained[sim.trained.index((0, suggestion)) :]]
    assert set(after) == {suggestion} and sim.schedule is None
    assert [r for r in sim.records if isinstance(r, EpochRecord)][-1].logs["loss"] < 0.2
    assert not policy.probing and policy.phase == "done"


def test_raise_only_leaves_a_good_lr_alone_and_restores_the_start():
    policy = LRFind(probe=False, max_share=1.0, mode="raise_only")
    sim = run(policy, lr=0.05)
    rollback = sim.decided("rollback")[0]
    assert rollback.command == RollbackCommand(checkpoint="lr_find-0", skip_batches=0)
    assert "not more than 10 x the run's LR 0.05: back to the start at the run's LR" in rollback.action.reason
    assert sim.lr == 0.05 and policy.result["lr"] is None


def test_auto_lowers_a_far_too_high_lr_to_the_suggestion_and_the_run_converges():
    # h = 10: stable below 0.2. LR 1 makes every step blow up; the test measures the curve from 1e-5.
    policy = LRFind(probe=False, max_share=1.0, mode="auto")
    sim = run(policy, lr=1.0)
    suggestion = policy.result["suggestion"]
    assert 1e-3 < suggestion < 0.1  # 1.0 is more than 10 x it
    rollback = sim.decided("rollback")[0]
    assert rollback.command == RollbackCommand(checkpoint="lr_find-0", skip_batches=0, lr=suggestion)
    assert (
        f"the run's LR 1 is more than 10 x that: back to the start with LR {suggestion:.3g}" in rollback.action.reason
    )
    assert sim.lr == suggestion and policy.result["lr"] == suggestion
    assert [r for r in sim.records if isinstance(r, EpochRecord)][-1].logs["loss"] < 0.2
    # the same run in raise_only mode keeps the LR that blows up
    keep = LRFind(probe=False, max_share=1.0, mode="raise_only")
    sim = run(keep, lr=1.0)
    assert keep.result["lr"] is None and sim.lr == 1.0


def test_auto_lowers_an_lr_at_or_past_the_blow_up_even_within_the_threshold():
    policy = LRFind(probe=False, max_share=1.0, mode="auto", lower_threshold=1e4)  # only the blow-up rule can lower it
    sim = run(policy, lr=5.0)
    blow_up = policy.result["blow_up"]
    assert "passed 4 x its best" in policy.result["why"] and blow_up is not None and blow_up <= 5.0
    rollback = sim.decided("rollback")[0]
    assert rollback.command.lr == policy.result["suggestion"] == sim.lr
    assert f"the run's LR 5 is at or past LR {blow_up:.3g}, where the loss blew up" in rollback.action.reason


def test_auto_raises_a_far_too_low_lr_and_leaves_a_reasonable_one_alone():
    policy = LRFind(probe=False, max_share=1.0, mode="auto")
    run(policy, lr=1e-4)
    assert policy.result["lr"] == policy.result["suggestion"] > 1e-3
    for lr in (0.005, 0.05):  # within a decade either side of the suggestion (about 0.007)
        policy = LRFind(probe=False, max_share=1.0, mode="auto")
        sim = run(policy, lr=lr)
        rollback = sim.decided("rollback")[0]
        assert rollback.command == RollbackCommand(checkpoint="lr_find-0", skip_batches=0)
        assert "neither more than 10 x below it nor more than 10 x above it" in rollback.action.reason
        assert sim.lr == lr and policy.result["lr"] is None


@pytest.mark.parametrize(
    "mode, lr, suggestion, blow_up, chosen",
    [
        ("auto", 1.0, 0.01, None, 0.01),  # 100 x the suggestion: lowered
        ("auto", 0.1, 0.01, None, None),  # 10 x: not more than 10 x, left alone
        ("auto", 0.1, 0.01, 0.1, 0.01),  # at the blow-up: lowered
        ("auto", 0.05, 0.01, 0.1, None),  # below the blow-up, within 10 x: left alone
        ("auto", 1e-4, 0.01, None, 0.01),  # far too small: raised
        ("auto", 0.1, None, 0.05, None),  # no suggestion: the run's LR
        ("raise_only", 1.0, 0.01, 0.1, None),  # raise_only never lowers
        ("always", 0.01, 0.02, None, 0.02),
    ],
)
def test_choose_raises_lowers_or_keeps(mode, lr, suggestion, blow_up, chosen):
    policy = LRFind(probe=False, max_share=1.0, mode=mode)
    policy.lr = lr
    assert policy._choose(suggestion, blow_up)[0] == chosen


def test_an_lr_find_in_auto_mode_pickles_mid_test():
    import pickle

    policy = LRFind(probe=False, mode="auto")
    policy.on_start(
        StartRecord(pid=1, lr=1.0, optimizer="SGD", epochs=10, steps_per_epoch=50),
        RunView(lr=1.0, optimizer="SGD", batch_every=10),
    )
    assert policy.probing
    copy = pickle.loads(pickle.dumps(policy))
    assert copy.state_dict() == policy.state_dict() and copy.settings == policy.settings


def test_always_takes_the_suggestion_and_an_adam_run_searches_lower():
    policy = LRFind(probe=False, max_share=1.0, mode="always", suggestion="steepest")
    sim = run(policy, lr=0.05)
    assert sim.decided("rollback")[0].command.lr == policy.result["suggestion"] == sim.lr
    engine = Engine([LRFind(probe=False, max_share=1.0)], batch_every=10)
    sim = SimTrainer(engine, noisy(10.0), lr=1e-3, optimizer="Adam", steps_per_epoch=50, epochs=3, batch_every=10).run()
    ramp = sim.decided("set_schedule")[0].command.schedule
    assert (ramp["initial_learning_rate"], ramp["decay_rate"]) == (1e-7, pytest.approx(1e7))  # Adam-family: 1e-7 .. 1


def test_while_testing_divergence_stands_down_and_others_cannot_change_the_lr():
    class CutEveryBatch(Divergence):  # a policy that would cut the LR on every record
        name = "cutter"

        def on_batch(self, record, run):
            from lrsup.policies.actions import ScaleLR

            return [ScaleLR(factor=0.5, reason="cut")]

    policy = LRFind(probe=False, max_share=1.0, mode="raise_only")
    sim = run(policy, lr=1e-4, stack=(Divergence(), CutEveryBatch()))
    assert sim.decided("rollback")[0].action.policy == "lr_find"  # divergence did not react to the ramp's blow-up
    probing = [
        d
        for d in sim.journal
        if d.action.policy == "cutter" and d.suppressed and d.suppressed.startswith("policy lr_find is probing")
    ]
    assert len(probing) > 50
    assert not [d for d in sim.journal if d.action.policy == "divergence"]


def test_the_ramp_goes_out_with_its_checkpoint_and_falls_back_when_that_never_arrives():
    policy = LRFind(probe=False, max_share=1.0)
    engine = Engine([policy], batch_every=10)
    decisions = engine.feed(StartRecord(pid=1, lr=0.01, optimizer="SGD"))
    # Inside the start barrier, in this order: the trainer saves, then ramps from step 0.
    assert [type(d.action) for d in decisions] == [SaveCheckpoint, Keep, Configure, SetSchedule]
    assert decisions[-1].command.schedule["start_step"] == 0 and policy.phase == "ramp"
    # Its checkpoint was saved: back to it. Never saved (a full disk): back to before the ramp.
    saved = RunView(lr=0.01, checkpoints=(CheckpointInfo(name="lr_find-0", step=0, good=True),))
    assert policy._back(saved, lr=0.1, reason="r") == Rollback(checkpoint="lr_find-0", lr=0.1, reason="r")
    assert policy._back(RunView(lr=0.01), lr=0.1, reason="r") == Rollback(before_step=0, lr=0.1, reason="r")


def test_runs_once_per_run():
    policy = LRFind(probe=False, max_share=1.0)
    view = RunView(lr=0.1, batch_every=1, batch_min_interval=0.0)
    assert len(policy.on_start(StartRecord(pid=1, lr=0.1), view)) == 3  # no Configure: already every batch
    policy.phase = "done"
    assert policy.on_start(StartRecord(pid=2, lr=0.1, step=500), view) == ()


def test_state_round_trips_in_the_middle_of_the_test():
    def drive(split):
        policy = LRFind(probe=False, max_share=1.0, mode="always")
        engine = Engine([policy], batch_every=10)

        class Resuming(SimTrainer):
            count = 0

            def emit(self, record):
                Resuming.count += 1
                if Resuming.count == split:
                    state = loads(dumps(self.engine.state_dict()))
                    self.engine = Engine([LRFind(probe=False, max_share=1.0, mode="always")], batch_every=10)
                    self.engine.load_state_dict(state)
                super().emit(record)

        sim = Resuming(engine, noisy(10.0), w=5.0, lr=1e-4, steps_per_epoch=50, epochs=3, batch_every=10).run()
        return [d.command for d in sim.decided()]

    assert drive(60) == drive(None)
    with pytest.raises(ValueError, match="unknown phase 'warming'"):
        LRFind().load_state_dict({**LRFind().state_dict(), "phase": "warming"})


def test_actions_end_with_clear_schedule_before_the_rollback():
    # the order matters to the agent: clear the ramp, then restore (LR state included), then set lr
    policy = LRFind(probe=False, max_share=1.0, mode="always")
    sim = run(policy, lr=1e-3)
    ending = [d.action for d in sim.journal if d.action.policy == "lr_find"][-4:]
    assert [type(a) for a in ending] == [ClearSchedule, Rollback, Configure, Keep]


def test_the_test_is_called_off_when_its_ramp_is_not_in_force():
    from lrsup.policies.actions import Stop
    from lrsup.policies.base import Policy

    class StopAtStart(Policy):  # a stop on the record where the ramp is decided suppresses it
        name = "stopper"

        def on_start(self, record, run):
            return [Stop(reason="enough")]

    policy = LRFind(probe=False, max_share=1.0)
    engine = Engine([StopAtStart(), policy], batch_every=10)
    sim = SimTrainer(engine, noisy(10.0), w=5.0, lr=0.01, steps_per_epoch=50, epochs=2, batch_every=10).run()
    [schedule] = [d for d in sim.journal if d.action.kind == "set_schedule"]
    assert schedule.suppressed == "stop (policy stopper) decided at step 0"
    assert policy.phase == "done" and not policy.probing
    assert policy.result["why"].startswith("its ramp is not in force")
    assert not sim.decided("rollback")  # the ramp never ran: nothing to undo
    assert sim.decided("configure")[-1].command == ConfigureCommand(batch_every=10, batch_min_interval=0.1)


def test_steepest_skips_points_at_one_lr():
    # A ramp frozen at its top (end_step) repeats its last LR: no slope, no ZeroDivisionError.
    assert steepest([1e-3, 1e-2, 1e-1, 1e-1], [2.0, 1.0, 3.0, 3.5]) == 1e-3
    assert steepest([0.1, 0.1], [1.0, 2.0]) is None


@pytest.mark.parametrize(
    "epochs, per_epoch, initial, expected",
    [
        (15, 14, 0, 52),  # breast cancer: 210 steps, a quarter of them
        (15, 42, 0, 100),  # digits: 630 steps, the full test
        (2, 20, 0, 20),  # never fewer than 20 steps
        (15, 14, 10, 20),  # a resumed fit counts only the epochs left
        (None, 14, 0, 100),  # the budget unknown: the full test
    ],
)
def test_the_ramp_takes_at_most_max_share_of_the_run(epochs, per_epoch, initial, expected):
    policy = LRFind(probe=False, mode="auto")
    [_, _, _, ramp] = policy.on_start(
        StartRecord(pid=1, lr=0.1, optimizer="SGD", epochs=epochs, steps_per_epoch=per_epoch, initial_epoch=initial),
        RunView(lr=0.1, optimizer="SGD", batch_every=10),
    )
    assert ramp.schedule["decay_steps"] == expected and ramp.schedule["end_step"] == expected
    assert f"over {expected} steps" in ramp.reason and policy.state_dict()["steps"] == expected
    state = policy.state_dict()
    del state["steps"]  # saved before max_share existed: the full length
    older = LRFind(probe=False, mode="auto")
    older.load_state_dict(state)
    assert older.steps == 100
