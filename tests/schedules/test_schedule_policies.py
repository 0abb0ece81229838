"""Schedule policies and warm_restart, fed plain record sequences (no engine, no TensorFlow)."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from lrsup.policies.actions import SetSchedule
from lrsup.policies.base import Policy, RunView
from lrsup.policies.schedules import Cosine, Cyclic, ExponentialDecay, OneCycle, StepDecay, Warmup
from lrsup.policies.warm_restart import WarmRestart, restart_now
from lrsup.supervisor.protocol.schedules import cosine_restarts_cycle, evaluate, validate_spec
from lrsup.supervisor.protocol.wire import EpochRecord, StartRecord

SPE = 100  # steps per epoch in these runs


def start(
    lr: float | None = 0.1,
    *,
    step: int = 0,
    steps_per_epoch: int | None = SPE,
    epochs: int | None = 10,
    initial_epoch: int = 0,
    fit: int = 1,
) -> StartRecord:
    return StartRecord(
        fit=fit,
        pid=1,
        lr=lr,
        step=step,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        initial_epoch=initial_epoch,
        optimizer="SGD",
    )


def view(record: StartRecord) -> RunView:
    return RunView(
        lr=record.lr, optimizer=record.optimizer, steps_per_epoch=record.steps_per_epoch, epochs=record.epochs
    )


def started(policy: Policy, record: StartRecord | None = None) -> dict:
    """Feed a start record; return the one schedule it sends."""
    record = record or start()
    actions = list(policy.on_start(record, view(record)))
    assert len(actions) == 1 and isinstance(actions[0], SetSchedule), actions
    assert actions[0].kind == "set_schedule" and actions[0].reason
    return actions[0].schedule


def lr_at(spec: dict, *steps: int) -> list[float]:
    return [evaluate(spec, s) for s in steps]


# ---------------------------------------------------------------------------
# What each policy sends, and what it evaluates to.


def test_exponential_decay_in_epochs_from_the_start_lr():
    spec = started(ExponentialDecay(decay_rate=0.5, decay_epochs=2))
    assert spec["kind"] == "exponential_decay" and spec["decay_steps"] == 2 * SPE
    assert lr_at(spec, 0, 100, 200, 400) == pytest.approx([0.1, 0.1 * math.sqrt(0.5), 0.05, 0.025])


def test_exponential_decay_staircase_in_steps_with_an_explicit_lr():
    spec = started(ExponentialDecay(initial_lr=1.0, decay_rate=0.1, decay_steps=50, staircase=True))
    assert lr_at(spec, 0, 49, 50, 149, 150) == pytest.approx([1.0, 1.0, 0.1, 0.01, 0.001])


def test_step_decay_every_n_epochs():
    spec = started(StepDecay(factor=0.1, every_epochs=3))
    assert spec == validate_spec(
        {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.1, "every_steps": 300}
    )
    assert lr_at(spec, 299, 300, 599, 600) == pytest.approx([0.1, 0.01, 0.01, 0.001])


def test_cyclic_triangular2_from_the_start_lr_as_base():
    spec = started(Cyclic(mode="triangular2", max_lr=0.6, step_size_epochs=2))
    assert (spec["base_lr"], spec["max_lr"], spec["step_size"]) == (0.1, 0.6, 200)
    assert lr_at(spec, 0, 100, 200, 400, 600, 1000) == pytest.approx([0.1, 0.35, 0.6, 0.1, 0.35, 0.225])


def test_cyclic_exp_range():
    spec = started(Cyclic(mode="exp_range", base_lr=0.01, max_lr=0.1, step_size=50, gamma=0.99))
    assert lr_at(spec, 50)[0] == pytest.approx(0.01 + 0.09 * 0.99**50)


def test_one_cycle_spans_the_rest_of_fit_by_default():
    spec = started(OneCycle(), start(lr=0.4, epochs=10, initial_epoch=2, step=200))
    assert spec["total_steps"] == 8 * SPE and spec["max_lr"] == 0.4 and spec["start_step"] == 200
    peak = 200 + round(0.3 * 800) - 1
    assert lr_at(spec, 200, peak, 200 + 799) == pytest.approx([0.4 / 25, 0.4, 0.4 / 25 / 1e4])


def test_one_cycle_with_explicit_settings():
    spec = started(OneCycle(max_lr=1.0, total_steps=100, pct_start=0.5, anneal="linear", div_factor=10))
    assert lr_at(spec, 0, 49, 99) == pytest.approx([0.1, 1.0, 1e-5])


def test_warmup_to_the_start_lr_then_constant():
    spec = started(Warmup(steps=500))
    assert lr_at(spec, 0, 250, 500, 10_000) == pytest.approx([0.0, 0.05, 0.1, 0.1])


def test_warmup_then_a_schedule_reaches_its_first_value():
    then = {"kind": "step_decay", "initial_learning_rate": 0.2, "factor": 0.5, "every_steps": 100}
    spec = started(Warmup(steps=100, start_lr=0.01, then=then))
    assert spec["target"] is None  # then's first value, 0.2, not the start record's 0.1
    assert lr_at(spec, 0, 50, 100, 200, 300) == pytest.approx([0.01, 0.105, 0.2, 0.1, 0.05])


def test_cosine_with_warmup_decays_to_alpha_at_the_end_of_fit():
    spec = started(Cosine(warmup_steps=100, alpha=0.1), start(lr=0.2, epochs=10))
    assert spec == validate_spec(
        {
            "kind": "cosine_decay",
            "initial_learning_rate": 0.0,
            "warmup_target": 0.2,
            "warmup_steps": 100,
            "decay_steps": 900,
            "alpha": 0.1,
        }
    )
    assert lr_at(spec, 0, 50, 100, 550, 1000, 5000) == pytest.approx([0.0, 0.1, 0.2, 0.11, 0.02, 0.02])


def test_cosine_without_warmup_over_given_epochs():
    spec = started(Cosine(initial_lr=1.0, decay_epochs=5))
    assert spec["warmup_target"] is None
    assert lr_at(spec, 0, 250, 500) == pytest.approx([1.0, 0.5, 0.0])


def test_a_mid_run_start_shifts_the_schedule():
    spec = started(StepDecay(factor=0.5, every_steps=10), start(step=1000))
    assert spec["start_step"] == 1000
    assert lr_at(spec, 0, 1000, 1009, 1010) == pytest.approx([0.1, 0.1, 0.1, 0.05])


# ---------------------------------------------------------------------------
# The policy contract: nothing per record, the same schedule on a restart, state.

SCHEDULE_POLICIES = [
    lambda: ExponentialDecay(decay_rate=0.5, decay_epochs=2),
    lambda: StepDecay(factor=0.1, every_epochs=3),
    lambda: Cyclic(max_lr=1.0, step_size=100),
    lambda: OneCycle(),
    lambda: Warmup(steps=10),
    lambda: Cosine(),
    lambda: WarmRestart(first_period_epochs=2),
]


@pytest.mark.parametrize("make", SCHEDULE_POLICIES)
def test_no_per_record_hooks_and_names(make):
    policy = make()
    assert policy.name and f'use = "{policy.name}"' in type(policy).__doc__
    assert policy.overrides("on_start")
    assert not policy.overrides("on_batch") and not policy.overrides("on_end")
    assert policy.overrides("on_epoch") == isinstance(policy, WarmRestart)


@pytest.mark.parametrize("make", SCHEDULE_POLICIES)
def test_a_later_start_sends_the_same_schedule_again(make):
    policy = make()
    first = started(policy)
    # The trainer came back (another attempt of the same fit) at step 700 with another LR.
    again = started(policy, start(lr=0.05, step=700))
    assert again == first and again["start_step"] == 0


@pytest.mark.parametrize("make", SCHEDULE_POLICIES)
def test_a_second_fit_gets_its_own_schedule_from_its_own_start(make):
    policy = make()
    first = started(policy, start(lr=0.1))
    # The script recompiled at another LR and fit again: a new optimizer, its steps from 0 again.
    second = started(policy, start(lr=0.05, step=0, fit=2))
    assert second != first and second["start_step"] == 0
    assert started(make(), start(lr=0.05, step=0)) == second  # exactly what a fresh policy builds for it
    assert started(policy, start(lr=0.3, step=40, fit=2)) == second  # a restart of fit 2 resends fit 2's
    assert policy.state_dict()["fit"] == 2


@pytest.mark.parametrize("make", SCHEDULE_POLICIES)
def test_state_round_trips_through_json(make):
    policy = make()
    assert policy.state_dict()["schedule"] is None
    first = started(policy)
    state = json.loads(json.dumps(policy.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == policy.state_dict()
    assert started(resumed, start(lr=0.05, step=900)) == first


def test_unknown_state_is_refused():
    with pytest.raises(ValueError, match="unknown state key"):
        Cosine().load_state_dict({"schedule": None, "extra": 1})


def test_reset_forgets_the_schedule():
    policy = Warmup(steps=10)
    started(policy)
    policy.reset()
    assert policy.schedule is None
    assert started(policy, start(lr=0.3))["target"] == 0.3


# ---------------------------------------------------------------------------
# Settings and what the start record must give.


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (ExponentialDecay, {"decay_rate": 1.5, "decay_steps": 10}, "input_value=1.5"),
        (ExponentialDecay, {"decay_rate": 0.5}, "give decay_steps or decay_epochs"),
        (ExponentialDecay, {"decay_rate": 0.5, "decay_steps": 10, "decay_epochs": 1.0}, "not both (got 10 and 1.0)"),
        (ExponentialDecay, {"decay_rate": 0.5, "decay_steps": 10, "rate": 1}, "Extra inputs are not permitted"),
        (ExponentialDecay, {"decay_rate": math.nan, "decay_steps": 10}, "finite number"),
        (StepDecay, {"factor": 0.5, "every_epochs": True}, "input_value=True"),
        (StepDecay, {"factor": 0.5, "every_epochs": 0}, "input_value=0"),
        (StepDecay, {"factor": 1.0, "every_epochs": 1}, "input_value=1.0"),
        (Cyclic, {"max_lr": 0.1, "base_lr": 0.2, "step_size": 10}, "max_lr=0.1 must be above base_lr=0.2"),
        (Cyclic, {"max_lr": 0.1, "step_size": 10, "gamma": 0.9}, "gamma=0.9 only applies to mode 'exp_range'"),
        (Cyclic, {"max_lr": 0.1, "step_size": 10, "mode": "sine"}, "input_value='sine'"),
        (OneCycle, {"pct_start": 1.0}, "input_value=1.0"),
        (OneCycle, {"anneal": "cosine"}, "input_value='cosine'"),
        (Warmup, {"steps": 0}, "input_value=0"),
        (
            Warmup,
            {"steps": 10, "then": {"kind": "cosine_decay", "decay_steps": 10}},
            "cosine_decay: missing field 'initial_learning_rate'",
        ),
        (Cosine, {"alpha": 2.0}, "input_value=2.0"),
        (Cosine, {"warmup_start_lr": 0.01}, "warmup_start_lr=0.01 needs warmup_steps > 0"),
        (WarmRestart, {}, "give first_period_steps or first_period_epochs"),
        (WarmRestart, {"first_period_steps": 10, "t_mul": 0.5}, "input_value=0.5"),
        (WarmRestart, {"first_period_steps": 10, "patience": 3}, "patience=3 only apply with on_plateau = true"),
        (
            WarmRestart,
            {"first_period_steps": 10, "on_plateau": True, "monitor": "score"},
            "cannot tell whether monitor='score'",
        ),
    ],
)
def test_bad_settings_quote_the_value(cls, kwargs, message):
    with pytest.raises(ValidationError) as err:
        cls(**kwargs)
    assert message in str(err.value)


def test_no_lr_anywhere_names_the_setting():
    with pytest.raises(ValueError, match="exponential_decay: the start record has no lr; set initial_lr"):
        started(ExponentialDecay(decay_rate=0.5, decay_steps=10), start(lr=None))
    # The RunView's lr is the fallback.
    record = start(lr=None)
    [action] = OneCycle(total_steps=10).on_start(record, RunView(lr=0.3))
    assert action.schedule["max_lr"] == 0.3


def test_epochs_without_steps_per_epoch_suggest_the_steps_setting():
    with pytest.raises(ValueError, match="every_epochs=3 needs steps_per_epoch.*set every_steps instead"):
        started(StepDecay(factor=0.5, every_epochs=3), start(steps_per_epoch=None))
    with pytest.raises(ValueError, match="step_size_epochs=2.0 needs steps_per_epoch.*set step_size instead"):
        started(Cyclic(max_lr=1.0, step_size_epochs=2), start(steps_per_epoch=None))
    with pytest.raises(ValueError, match="set total_steps"):
        started(OneCycle(), start(epochs=None))
    with pytest.raises(ValueError, match="warmup_steps=1000 leaves no steps to decay over"):
        started(Cosine(warmup_steps=1000))


def test_cyclic_base_from_the_start_lr_must_be_below_max():
    with pytest.raises(ValueError, match=r"max_lr=0.05 must be above base_lr 0.1 \(the optimizer's lr\)"):
        started(Cyclic(max_lr=0.05, step_size=10))


# ---------------------------------------------------------------------------
# warm_restart


class FakeRun:
    """Feeds epoch records to a policy and applies its SetSchedule actions, as the agent would."""

    def __init__(self, policy: Policy, lr: float = 0.1) -> None:
        self.policy = policy
        self.schedule = started(policy, start(lr=lr))
        self.restarts: list[int] = []

    def epoch(self, epoch: int, **logs: float) -> None:
        record = EpochRecord(
            epoch=epoch, step=(epoch + 1) * SPE, lr=evaluate(self.schedule, (epoch + 1) * SPE), logs=logs
        )
        for action in self.policy.on_epoch(record, view(start())):
            assert isinstance(action, SetSchedule) and action.schedule["start_step"] == record.step
            self.schedule = action.schedule
            self.restarts.append(record.step)


def test_warm_restart_sends_keras_sgdr():
    spec = started(WarmRestart(first_period_epochs=2, t_mul=2.0, m_mul=0.5, alpha=0.1))
    assert spec == validate_spec(
        {
            "kind": "cosine_restarts",
            "initial_learning_rate": 0.1,
            "first_decay_steps": 200,
            "t_mul": 2.0,
            "m_mul": 0.5,
            "alpha": 0.1,
        }
    )
    assert lr_at(spec, 0, 200, 600) == pytest.approx([0.1, 0.1 * (0.9 * 0.5 + 0.1), 0.1 * (0.9 * 0.25 + 0.1)])


def test_warm_restart_without_on_plateau_never_acts_on_epochs():
    run = FakeRun(WarmRestart(first_period_epochs=2))
    for epoch, loss in enumerate([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]):
        run.epoch(epoch, val_loss=loss)
    assert run.restarts == []


def test_warm_restart_on_plateau_restarts_at_the_right_step():
    run = FakeRun(WarmRestart(first_period_epochs=10, t_mul=1.0, m_mul=0.5, on_plateau=True, patience=2))
    first = run.schedule
    # Epoch 1 is the best; epochs 2 and 3 are not better: the second miss (epoch 3, step 400) restarts.
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.9]):
        run.epoch(epoch, val_loss=loss)
    assert run.restarts == [400]
    # The next cycle (cycle 1: peak 0.05, 1000 steps) begins at step 400 instead of 1000.
    assert lr_at(run.schedule, 400, 900, 1400) == pytest.approx([0.05, 0.025, 0.025])
    assert lr_at(run.schedule, 900) == pytest.approx(lr_at(first, 1500))
    # After a restart the best starts afresh: a worse-than-0.9 value is an improvement in the new cycle.
    run.epoch(4, val_loss=1.5)
    run.epoch(5, val_loss=1.4)
    assert run.restarts == [400]
    run.epoch(6, val_loss=1.45)
    run.epoch(7, val_loss=1.41)
    assert run.restarts == [400, 800]
    # Cycle 2 now: peak 0.025.
    assert lr_at(run.schedule, 800) == pytest.approx([0.025])


def test_warm_restart_patience_starts_afresh_with_a_scheduled_cycle():
    run = FakeRun(WarmRestart(first_period_epochs=3, t_mul=1.0, on_plateau=True, patience=2))
    # Epochs 0-2 are cycle 0 (steps 0..299), epochs 3-5 cycle 1. Epoch 2 misses once in cycle 0;
    # epoch 3 is worse than cycle 0's best but is the first value of cycle 1: no restart.
    for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.7, 0.65, 0.66]):
        run.epoch(epoch, val_loss=loss)
    assert run.restarts == []
    run.epoch(6, val_loss=0.7)  # cycle 2's first value
    run.epoch(7, val_loss=0.8)
    run.epoch(8, val_loss=0.75)  # the second miss within cycle 2
    assert run.restarts == [900]


def test_warm_restart_mode_max_and_min_delta():
    run = FakeRun(
        WarmRestart(first_period_steps=10_000, on_plateau=True, monitor="val_accuracy", patience=1, min_delta=0.01)
    )
    run.epoch(0, val_accuracy=0.5)
    run.epoch(1, val_accuracy=0.52)  # improves by more than 0.01
    assert run.restarts == []
    run.epoch(2, val_accuracy=0.525)  # by less than min_delta: a miss
    assert run.restarts == [300]


def test_warm_restart_ignores_epochs_without_the_metric():
    run = FakeRun(WarmRestart(first_period_steps=10_000, on_plateau=True, patience=1))
    run.epoch(0, val_loss=1.0)
    run.epoch(1, loss=2.0)
    run.epoch(2, loss=2.0)
    assert run.restarts == []


def test_warm_restart_state_keeps_the_patience_count():
    policy = WarmRestart(first_period_steps=10_000, on_plateau=True, patience=2)
    run = FakeRun(policy)
    run.epoch(0, val_loss=1.0)
    run.epoch(1, val_loss=1.1)
    resumed = WarmRestart(first_period_steps=10_000, on_plateau=True, patience=2)
    resumed.load_state_dict(json.loads(json.dumps(policy.state_dict())))
    run.policy = resumed
    run.epoch(2, val_loss=1.2)
    assert run.restarts == [300]


@pytest.mark.parametrize(
    ("first", "t_mul", "m_mul", "alpha", "origin"),
    [
        (100, 2.0, 0.5, 0.1, 0),
        (100, 1.0, 0.8, 0.0, 50),
        (30, 3.0, 1.0, 0.2, 7),
        (64, 2.0, 0.7, 0.05, 1000),
    ],
)
@pytest.mark.parametrize("at", [0, 1, 99, 100, 101, 350, 2999])
def test_restart_now_continues_the_progression_one_cycle_early(first, t_mul, m_mul, alpha, origin, at):
    old = validate_spec(
        {
            "kind": "cosine_restarts",
            "initial_learning_rate": 0.3,
            "first_decay_steps": first,
            "t_mul": t_mul,
            "m_mul": m_mul,
            "alpha": alpha,
            "start_step": origin,
        }
    )
    step = origin + at
    new = restart_now(old, step)
    assert new["start_step"] == step
    # The cycle that held the last update (step - 1), and where its successor would have begun.
    k = cosine_restarts_cycle(max(at - 1, 0), first, t_mul)[0]
    natural = origin + cosine_restarts_cycle(max(at - 1, 0), first, t_mul)[1] + first * t_mul**k
    assert float(natural).is_integer()
    for t in (0, 1, 17, first, 5 * first, 40 * first):
        assert evaluate(new, step + t) == pytest.approx(evaluate(old, int(natural) + t), rel=1e-12, abs=1e-15)


def test_restart_now_refuses_other_kinds():
    with pytest.raises(ValueError, match="needs a cosine_restarts spec, got kind 'cosine_decay'"):
        restart_now(validate_spec({"kind": "cosine_decay", "initial_learning_rate": 0.1, "decay_steps": 10}), 5)
