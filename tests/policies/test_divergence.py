"""Divergence: detection on plain record sequences, the cap, and rescues in a simulated trainer."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from lrsup.policies.actions import Rollback, Stop
from lrsup.policies.base import CheckpointInfo, RunView
from lrsup.policies.divergence import Divergence, DivergenceSettings, RunningMeanLoss
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.protocol.commands import RollbackCommand, StopCommand
from lrsup.supervisor.protocol.wire import (
    AckRecord,
    BatchRecord,
    CheckpointRecord,
    EpochRecord,
    StartRecord,
    dumps,
    loads,
)
from tests.engine.test_engine import SimTrainer, quadratic

NAN, INF = math.nan, math.inf


def running(losses, epoch=0, first_step=1):
    """Batch records of one epoch from its first batch, one per batch, with the epoch's running mean (Keras 3)."""
    records, total = [], 0.0
    for batch, loss in enumerate(losses):
        total += loss
        records.append(
            BatchRecord(epoch=epoch, batch=batch, step=first_step + batch, lr=0.1, logs={"loss": total / (batch + 1)})
        )
    return records


def ckpt(name, step, epoch=None, lr=0.1):
    return CheckpointRecord(name=name, epoch=epoch, step=step, lr=lr, file=f"checkpoints/{name}", sha256="0" * 64)


def good_start(engine, optimizer="SGD", lr=0.1):
    """A fit with a start checkpoint and a known-good epoch-end checkpoint at step 20 (epoch 0)."""
    engine.feed(StartRecord(pid=1, lr=lr, optimizer=optimizer, step=0))
    engine.feed(ckpt("start-0", 0, lr=lr))
    out = []
    for r in running([1.0] * 20):
        out += engine.feed(r)
    engine.feed(ckpt("e1", 20, epoch=0, lr=lr))
    out += engine.feed(EpochRecord(epoch=0, step=20, lr=lr, logs={"loss": 1.0, "val_loss": 1.0}))
    return out


def actions(decisions):
    return [d for d in decisions if d.action.policy == "divergence"]


# -- settings ------------------------------------------------------------------------------


def test_defaults():
    s = DivergenceSettings()
    assert (s.window, s.k, s.min_history, s.spike_patience, s.max_rollbacks, s.rollback_window) == (
        50,
        6.0,
        20,
        2,
        5,
        10,
    )
    assert (s.cut, s.skip_batches, s.val_factor, s.batch_logs, s.escalate) == (None, 0, 5.0, "running_mean", True)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"cut": 1.5}, "cut must be in (0, 1); got cut=1.5"),
        ({"cut": 0.0}, "cut must be in (0, 1); got cut=0.0"),
        ({"val_factor": 1.0}, "val_factor must be > 1 (or None to turn the check off); got val_factor=1.0"),
        ({"min_history": 60}, "min_history must be <= window; got min_history=60 and window=50"),
        ({"collapse_drop": 0.05}, "collapse_drop must be > collapse_tol"),
        ({"window": 2}, "greater than or equal to 5"),
        ({"max_rollbacks": -1}, "greater than or equal to 0"),
        ({"batch_logs": "mean"}, "'running_mean' or 'per_batch'"),
        ({"windwo": 3}, "Extra inputs are not permitted"),
        ({"escalate": 1}, "escalate\n  Input should be a valid boolean"),
    ],
)
def test_invalid_settings_are_refused_quoting_the_value(kwargs, text):
    with pytest.raises(ValidationError, match=text.replace("(", r"\(").replace(")", r"\)")):
        Divergence(**kwargs)


# -- running means -------------------------------------------------------------------------------


def test_running_means_are_turned_back_into_interval_means():
    tracker = RunningMeanLoss()
    per_batch = [4.0, 2.0, 3.0, 1.0, 5.0, 9.0]
    means = [sum(per_batch[: i + 1]) / (i + 1) for i in range(6)]
    # every second batch recorded (batch_every = 2)
    got = [tracker.interval(BatchRecord(epoch=0, batch=b, step=b + 1, logs={"loss": means[b]})) for b in (1, 3, 5)]
    assert got == pytest.approx([3.0, 2.0, 7.0])
    # a new epoch: Keras reset the metrics
    assert tracker.interval(BatchRecord(epoch=1, batch=0, step=7, logs={"loss": 0.5})) == 0.5
    # a rollback at step 40 reset them too: counts are steps since it
    tracker.restarted(1, 40)
    assert tracker.interval(BatchRecord(epoch=1, batch=57, step=42, logs={"loss": 2.0})) == 2.0
    assert tracker.interval(BatchRecord(epoch=1, batch=59, step=44, logs={"loss": 1.5})) == pytest.approx(1.0)
    assert RunningMeanLoss(per_batch=True).interval(BatchRecord(epoch=0, batch=5, step=6, logs={"loss": 7.0})) == 7.0
    assert tracker.interval(BatchRecord(epoch=1, batch=60, step=45, logs={})) is None


# -- detection -----------------------------------------------------------------------------------


def test_nan_batch_loss_rolls_back_to_before_it_with_the_sgd_cut():
    engine = Engine([Divergence()])
    good_start(engine)
    records = running([1.0, 1.0, NAN], epoch=1, first_step=21)
    out = []
    for r in records:
        out += actions(engine.feed(r))
    [d] = out
    assert d.action == Rollback(before_step=22, lr_factor=0.1, policy="divergence", reason=d.action.reason)
    assert d.action.reason == ("loss is nan at step 23 (epoch 2); rolling back to e1 (step 20), LR 0.1 -> 0.01")
    assert d.command == RollbackCommand(checkpoint="e1", skip_batches=0, lr=pytest.approx(0.01))


def test_adam_family_cut_is_a_half_and_cut_setting_wins():
    for optimizer, kwargs, factor in (("Adam", {}, 0.5), ("AdamW", {"cut": 0.3}, 0.3)):
        engine = Engine([Divergence(**kwargs)])
        good_start(engine, optimizer=optimizer)
        [d] = actions(engine.feed(EpochRecord(epoch=1, step=40, lr=0.1, logs={"loss": INF})))
        assert d.action.lr_factor == factor and d.action.before_step == 20


def spiky_engine(**settings):
    engine = Engine([Divergence(**settings)])
    good_start(engine)
    noise = [1.0 + 0.01 * ((i * 7) % 5 - 2) for i in range(40)]  # 0.98 .. 1.02
    for r in running(noise, epoch=1, first_step=21):
        assert actions(engine.feed(r)) == []
    return engine


def feed_epoch1(engine, per_batch, first_step=61, first_batch=40, prior_total=None):
    """Batch records continuing epoch 1 after 40 batches of mean ~1.0."""
    total = prior_total if prior_total is not None else sum(1.0 + 0.01 * ((i * 7) % 5 - 2) for i in range(40))
    out = []
    for i, loss in enumerate(per_batch):
        total += loss
        batch = first_batch + i
        out += actions(
            engine.feed(
                BatchRecord(epoch=1, batch=batch, step=first_step + i, lr=0.1, logs={"loss": total / (batch + 1)})
            )
        )
    return out


def test_a_spike_that_lasts_two_records_rolls_back_to_before_it():
    engine = spiky_engine()
    out = feed_epoch1(engine, [1.0, 4.0, 5.0])
    [d] = out
    assert d.action.before_step == 61  # the last normal record before the spike
    assert d.action.reason.startswith(
        "loss spike: batch loss 5 at step 63 (epoch 2) is above 1.5 = median 1 + "
        "max(6 x MAD 0.01, 0.5 x |median|) of the last 50 batch losses, for 2 records"
    )
    assert d.command.checkpoint == "e1"


def test_a_one_record_spike_that_heals_is_left_alone():
    engine = spiky_engine()
    assert feed_epoch1(engine, [1.0, 4.0, 1.0, 1.0, 4.0, 1.0]) == []


def test_the_relative_floor_keeps_a_flat_loss_from_alarming_on_a_wobble():
    engine = spiky_engine(rel_floor=0.5)
    assert feed_epoch1(engine, [1.3, 1.4, 1.3]) == []  # 30 MADs above, but within 50% of the median
    engine = spiky_engine(rel_floor=0.0)
    assert len(feed_epoch1(engine, [1.3, 1.4, 1.3])) == 1


def test_no_spike_detection_before_min_history():
    engine = Engine([Divergence(min_history=20)])
    engine.feed(StartRecord(pid=1, lr=0.1, optimizer="SGD"))
    engine.feed(ckpt("start-0", 0))
    out = []
    for r in running([1.0] * 10 + [50.0, 60.0], first_step=1):
        out += actions(engine.feed(r))
    assert out == []


def test_val_loss_explosion():
    engine = Engine([Divergence(val_factor=3.0)])
    good_start(engine)  # best val_loss 1.0
    assert actions(engine.feed(EpochRecord(epoch=1, step=40, lr=0.1, logs={"loss": 0.9, "val_loss": 2.9}))) == []
    [d] = actions(engine.feed(EpochRecord(epoch=2, step=60, lr=0.1, logs={"loss": 0.9, "val_loss": 3.1})))
    assert d.action.before_step == 40
    assert d.action.reason.startswith(
        "val_loss exploded: 3.1 at the end of epoch 3 (step 60) is more than 3 x its best 1"
    )


def epochs_of(engine, losses, lr=0.1, first=0):
    out = []
    for i, loss in enumerate(losses):
        e = first + i
        out.append(actions(engine.feed(EpochRecord(epoch=e, step=10 * (e + 1), lr=lr, logs={"loss": loss}))))
    return out


def test_collapse_after_having_learned():
    engine = Engine([Divergence(untrained_loss=2.3, collapse_patience=2)])
    engine.feed(StartRecord(pid=1, lr=0.1, optimizer="SGD"))
    engine.feed(ckpt("start-0", 0))
    out = epochs_of(engine, [2.2, 1.5, 1.0, 2.2, 2.25])
    assert out[:4] == [[], [], [], []]
    [d] = out[4]
    assert d.action.before_step == 30  # the last epoch far below the untrained level (epoch 3)
    assert d.action.reason.startswith(
        "collapse: the loss came back to its untrained level 2.3 (now 2.25 at the end "
        "of epoch 5 (step 50)) for 2 epochs"
    )


def test_stuck_at_a_high_lr_goes_back_to_the_start_but_not_at_a_modest_lr():
    engine = Engine([Divergence(stuck_epochs=3)])
    engine.feed(StartRecord(pid=1, lr=0.5, optimizer="SGD"))
    engine.feed(ckpt("start-0", 0, lr=0.5))
    out = epochs_of(engine, [2.30, 2.31, 2.29], lr=0.5)  # the first epoch's loss is the untrained level
    [d] = out[2]
    assert d.action.before_step == 0 and d.command.checkpoint == "start-0" and d.command.lr == pytest.approx(0.05)
    assert "stuck: the loss has stayed at its untrained level 2.3" in d.action.reason
    assert "LR 0.5, which is high for SGD (>= 0.1)" in d.action.reason

    engine = Engine([Divergence(stuck_epochs=3)])
    engine.feed(StartRecord(pid=1, lr=0.01, optimizer="SGD"))
    assert epochs_of(engine, [2.30, 2.31, 2.29, 2.3], lr=0.01) == [[], [], [], []]


# -- rollbacks, the cap, giving up -------------------------------------------------------------------------


def test_no_checkpoint_gives_up_at_once_with_exit_status_3():
    engine = Engine([Divergence()])
    engine.feed(StartRecord(pid=1, lr=0.1, optimizer="SGD"))
    rollback, stop = actions(engine.feed(EpochRecord(epoch=0, step=10, lr=0.1, logs={"loss": NAN})))
    assert rollback.suppressed == "no checkpoint to roll back to: no checkpoint has been taken"
    assert stop.command == StopCommand() and stop.exit_status == 3
    assert stop.action.reason == (
        "gave up: loss nan at the end of epoch 1 (step 10), and there is no checkpoint to "
        "roll back to: no checkpoint has been taken"
    )
    assert engine.exit_status == 3


def test_repeated_rollbacks_to_one_checkpoint_compound_the_cut_then_give_up():
    engine = Engine([Divergence(max_rollbacks=3, rollback_window=10)])
    good_start(engine, lr=0.1)  # the untrained loss is 1.0 (the first batch's)
    lrs = []
    for attempt in range(4):
        out = actions(engine.feed(EpochRecord(epoch=1 + attempt, step=40, lr=0.1, logs={"loss": NAN})))
        if attempt < 3:
            [d] = out
            lrs.append(d.command.lr)
            engine.feed(AckRecord(seq=attempt + 1, cmd="rollback", epoch=1 + attempt, step=20, lr=d.command.lr))
            # after each rollback the run learns (a batch loss below half the untrained level), then blows up again
            engine.feed(BatchRecord(epoch=1 + attempt, batch=9, step=30, lr=d.command.lr, logs={"loss": 0.4}))
        else:
            [d] = out
            assert d.action == Stop(give_up=True, policy="divergence", reason=d.action.reason)
            assert d.exit_status == 3
            assert d.action.reason.startswith(
                "gave up: loss nan at the end of epoch 5 (step 40), after 3 rollbacks "
                "in epochs 2-4 (at most 3 in 10 epochs), to e1"
            )
    assert lrs == pytest.approx([0.01, 0.001, 0.0001])
    # once given up, nothing more
    assert actions(engine.feed(EpochRecord(epoch=6, step=40, lr=0.1, logs={"loss": NAN}))) == []


def test_rollbacks_without_recovery_in_between_square_the_step_of_the_cut():
    # Adam (cut 0.5) stuck at its untrained loss: 3 epochs, rollback, 3 epochs still stuck, rollback, ...
    policy = Divergence(stuck_epochs=3, max_rollbacks=5)
    engine = Engine([policy])
    engine.feed(StartRecord(pid=1, lr=1.0, optimizer="Adam"))
    engine.feed(ckpt("start-0", 0, lr=1.0))
    lrs, reasons, epoch = [], [], 0
    for attempt in range(3):
        out = []
        for _ in range(3):
            lr = lrs[-1] if lrs else 1.0
            out += actions(
                engine.feed(EpochRecord(epoch=epoch, step=10 * (epoch + 1), lr=lr, logs={"loss": 2.3, "val_loss": 2.3}))
            )
            epoch += 1
        [d] = out
        lrs.append(d.command.lr)
        reasons.append(d.action.reason)
        engine.feed(AckRecord(seq=attempt + 1, cmd="rollback", epoch=epoch, step=0, lr=d.command.lr))
    # exponents 1, 3 (= 2 * 1 + 1), 7 (= 2 * 3 + 1): steps of x0.5, x0.25, x0.0625
    assert lrs == pytest.approx([0.5, 0.125, 0.0078125])
    assert reasons[1].endswith("LR 1 -> 0.125 (rollback 2 to it without having learned since the last one: x0.5^3)")
    assert [r[3] for r in policy.rollbacks] == [1, 3, 7]
    # escalate = false: the gentle compounding, 1, 2, 3
    policy = Divergence(stuck_epochs=3, escalate=False)
    engine = Engine([policy])
    engine.feed(StartRecord(pid=1, lr=1.0, optimizer="Adam"))
    engine.feed(ckpt("start-0", 0, lr=1.0))
    for epoch in range(9):
        engine.feed(EpochRecord(epoch=epoch, step=10 * (epoch + 1), lr=1.0, logs={"loss": 2.3}))
        if (epoch + 1) % 3 == 0:
            engine.feed(AckRecord(seq=epoch, cmd="rollback", epoch=epoch, step=0, lr=1.0))
    assert [r[3] for r in policy.rollbacks] == [1, 2, 3]


def test_a_state_from_before_the_exponent_was_kept_still_loads_and_compounds():
    policy = Divergence()
    state = policy.state_dict()
    del state["recovered"]
    state["rollbacks"] = [[1, "e1", 20], [2, "e1", 20]]  # two rollbacks to e1, exponents not recorded
    policy.load_state_dict(state)
    assert policy.recovered and policy._exponent("e1", 20) == 3 and policy._exponent("e2", 40) == 1


def test_the_cap_counts_only_rollbacks_within_the_window():
    engine = Engine([Divergence(max_rollbacks=1, rollback_window=3)])
    good_start(engine)
    [d] = actions(engine.feed(EpochRecord(epoch=1, step=40, lr=0.1, logs={"loss": NAN})))
    engine.feed(AckRecord(seq=1, cmd="rollback", epoch=1, step=20, lr=0.01))
    [d] = actions(engine.feed(EpochRecord(epoch=4, step=40, lr=0.01, logs={"loss": NAN})))  # epoch 1 is out of it
    assert isinstance(d.action, Rollback)


def test_after_a_rollback_ack_the_abandoned_history_is_forgotten():
    policy = Divergence()
    engine = Engine([policy])
    good_start(engine)
    feed = running([1.0] * 30, epoch=1, first_step=21)
    for r in feed:
        engine.feed(r)
    assert policy.history[-1][0] == 50
    engine.feed(EpochRecord(epoch=1, step=50, lr=0.1, logs={"loss": NAN}))
    engine.feed(AckRecord(seq=1, cmd="rollback", epoch=1, step=20, lr=0.01))
    assert max(h[0] for h in policy.history) == 20 and policy.losses.restart == [1, 20]


def test_while_another_policy_probes_nothing_is_decided():
    policy = Divergence()
    view = RunView(lr=10.0, probing="lr_find", checkpoints=(CheckpointInfo("start-0", 0, start=True),))
    policy.on_start(StartRecord(pid=1), view)
    assert policy.on_batch(BatchRecord(epoch=0, batch=0, step=1, logs={"loss": NAN}), view) == ()
    assert policy.on_epoch(EpochRecord(epoch=0, step=1, logs={"loss": NAN}), view) == ()


def test_state_round_trips_and_continues_identically():
    def drive(split):
        engine = Engine([Divergence()])
        good_start(engine)
        records = running([1.0] * 25 + [9.0, 9.0], epoch=1, first_step=21)
        out = []
        for i, r in enumerate(records):
            if i == split:
                state = loads(dumps(engine.state_dict()))
                engine = Engine([Divergence()])
                engine.load_state_dict(state)
            out += [d.command for d in actions(engine.feed(r))]
        return out

    assert drive(26) == drive(None) != []
    with pytest.raises(ValueError, match="policy 'divergence' state must have keys"):
        Divergence().load_state_dict({"history": []})


# -- closed loop --------------------------------------------------------------------------------------------


def test_an_lr_above_the_stability_limit_is_rolled_back_and_cut_until_it_trains():
    # GD on h/2 w^2 diverges for lr * h > 2: at lr 3, the SGD cut (x0.1) makes it 0.3.
    engine = Engine([Divergence()])
    sim = SimTrainer(engine, quadratic(h=1.0), w=5.0, lr=3.0, steps_per_epoch=30, epochs=6, batch_every=1).run()
    [rollback] = sim.decided("rollback")
    assert rollback.command.checkpoint == "start-0" and rollback.command.lr == pytest.approx(0.3)
    assert not sim.stop and engine.exit_status is None
    last = [r for r in sim.records if isinstance(r, EpochRecord)][-1]
    assert last.logs["loss"] == pytest.approx(0.1, abs=1e-6)  # converged to the floor


def test_a_bad_batch_is_rolled_back_to_the_last_good_checkpoint_and_not_seen_again():
    # the 75th batch drawn kicks the weight far away; the data iterator is not rewound
    engine = Engine([Divergence()], batch_every=1)
    sim = SimTrainer(
        engine,
        quadratic(h=1.0, kicks={75: 40.0}),
        w=2.0,
        lr=0.05,
        steps_per_epoch=30,
        epochs=5,
        batch_every=1,
        val=lambda w: 0.1 + 0.5 * w * w,
    ).run()
    [rollback] = sim.decided("rollback")
    assert rollback.command.checkpoint == "epoch-0002"  # step 60, vouched for by its val_loss
    assert rollback.command.lr == pytest.approx(0.005)
    assert rollback.action.reason.startswith("loss spike")
    assert not sim.stop
    assert all(r.logs["loss"] < 2.0 for r in sim.records if isinstance(r, EpochRecord))


def test_a_run_that_diverges_whatever_the_lr_is_given_up_with_a_diagnosis():
    def poisoned(w, lr, t):  # from the 40th batch on, every batch is NaN
        return (math.nan, math.nan) if t >= 40 else (1.0, w)

    engine = Engine([Divergence(max_rollbacks=2)])
    sim = SimTrainer(engine, poisoned, lr=0.1, steps_per_epoch=20, epochs=20, batch_every=5).run()
    assert len(sim.decided("rollback")) == 2
    [stop] = sim.decided("stop")
    assert stop.exit_status == 3 and sim.stop and engine.exit_status == 3
    assert "Cutting the LR has not kept the run finite" in stop.action.reason


def test_the_sorted_window_mirrors_the_history_through_slides_rollbacks_and_state_reloads():
    import random
    import statistics

    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.floats(0.01, 5.0), min_size=1, max_size=120), st.integers(5, 30))
    def check(losses, window):
        policy = Divergence(batch_logs="per_batch", window=window, min_history=3, spike_patience=99)
        run = RunView(lr=0.1, optimizer="SGD")
        policy.on_start(StartRecord(pid=1, lr=0.1), run)
        for i, loss in enumerate(losses):
            policy.on_batch(BatchRecord(epoch=0, batch=i, step=i + 1, lr=0.1, logs={"loss": loss}), run)
            assert policy._sorted == sorted(h[1] for h in policy.history)
            assert len(policy.history) <= window
        clone = Divergence(batch_logs="per_batch", window=window, min_history=3, spike_patience=99)
        clone.load_state_dict(loads(dumps(policy.state_dict())))
        assert clone._sorted == policy._sorted
        if policy._sorted:
            from lrsup.policies.divergence import _median_of_sorted

            assert _median_of_sorted(policy._sorted) == statistics.median(h[1] for h in policy.history)

    random.seed(0)
    check()


def test_a_run_stuck_at_the_class_prior_below_its_initial_loss_is_stuck():
    # A small MLP on digits at SGD LR 1: initial loss 2.67, then stuck at ln 10 = 2.30-2.39,
    # more than collapse_tol below the initial loss but within stuck_tol of it.
    policy = Divergence()
    run = RunView(lr=1.0, optimizer="SGD", checkpoints=(CheckpointInfo(name="step-0", step=0, good=True, start=True),))
    policy.on_start(StartRecord(pid=1, lr=1.0, optimizer="SGD"), run)
    actions = []
    for epoch, loss in enumerate([2.669, 2.391, 2.389, 2.388]):
        actions = policy.on_epoch(EpochRecord(epoch=epoch, step=43 * (epoch + 1), lr=1.0, logs={"loss": loss}), run)
        if actions:
            break
    assert actions and isinstance(actions[0], Rollback) and actions[0].reason.startswith("stuck:")
    assert epoch == 2 and actions[0].lr_factor == pytest.approx(0.1)  # 3 epochs from the start; SGD cuts by 0.1


def test_stuck_tol_is_checked_against_the_other_bands():
    with pytest.raises(ValidationError, match="stuck_tol must be in"):
        DivergenceSettings(stuck_tol=0.05)


def test_max_rollbacks_zero_gives_up_at_the_first_trouble():
    policy = Divergence(max_rollbacks=0)
    run = RunView(lr=0.1, optimizer="SGD", checkpoints=(CheckpointInfo(name="start-0", step=0, good=True, start=True),))
    policy.on_start(StartRecord(pid=1, lr=0.1, optimizer="SGD"), run)
    [stop] = policy.on_batch(BatchRecord(epoch=0, batch=0, step=1, lr=0.1, logs={"loss": NAN}), run)
    assert isinstance(stop, Stop) and stop.give_up and policy.gave_up
    assert (
        stop.reason == "gave up: loss is nan at step 1 (epoch 1); max_rollbacks is 0: no rollback is tried; LR now 0.1"
    )
