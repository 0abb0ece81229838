"""lrsup.supervisor.protocol.schedules without TensorFlow: hand-computed values, validation, offsets, properties."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lrsup.supervisor.protocol.schedules import (
    KINDS,
    Schedule,
    cosine_restarts_cycle,
    cyclic,
    evaluate,
    from_keras,
    one_cycle,
    validate_spec,
)

EXP = {"kind": "exponential_decay", "initial_learning_rate": 0.1, "decay_steps": 100, "decay_rate": 0.5}
PIECEWISE = {"kind": "piecewise_constant", "boundaries": [100, 200], "values": [1.0, 0.5, 0.1]}
STEP = {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 300}
COS = {"kind": "cosine_decay", "initial_learning_rate": 1.0, "decay_steps": 100, "alpha": 0.1}
COS_WARM = {
    "kind": "cosine_decay",
    "initial_learning_rate": 0.0,
    "decay_steps": 100,
    "warmup_target": 1.0,
    "warmup_steps": 10,
}
SGDR = {
    "kind": "cosine_restarts",
    "initial_learning_rate": 1.0,
    "first_decay_steps": 100,
    "t_mul": 2.0,
    "m_mul": 0.5,
}
SGDR_ALPHA = {**SGDR, "alpha": 0.1}
SGDR_FLAT = {"kind": "cosine_restarts", "initial_learning_rate": 1.0, "first_decay_steps": 10, "t_mul": 1.0}
TRI = {"kind": "cyclic", "base_lr": 1.0, "max_lr": 3.0, "step_size": 10}
TRI2 = {**TRI, "mode": "triangular2"}
EXPR = {**TRI, "mode": "exp_range", "gamma": 0.9}
ONE = {"kind": "one_cycle", "max_lr": 1.0, "total_steps": 100}
ONE_LIN = {**ONE, "anneal": "linear"}
ONE_3 = {**ONE, "three_phase": True}
WARM = {"kind": "warmup", "steps": 10, "target": 1.0}
WARM_THEN = {
    "kind": "warmup",
    "steps": 10,
    "then": {"kind": "exponential_decay", "initial_learning_rate": 1.0, "decay_steps": 10, "decay_rate": 0.5},
}

EXAMPLES = [
    EXP,
    PIECEWISE,
    STEP,
    COS,
    COS_WARM,
    SGDR,
    SGDR_ALPHA,
    SGDR_FLAT,
    TRI,
    TRI2,
    EXPR,
    ONE,
    ONE_LIN,
    ONE_3,
    WARM,
    WARM_THEN,
]


def half_cos(fraction: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * fraction))


# (spec, step, expected), each computed by hand from the definitions.
HAND_VALUES = [
    (EXP, 0, 0.1),
    (EXP, 50, 0.1 * math.sqrt(0.5)),
    (EXP, 100, 0.05),
    (EXP, 300, 0.0125),
    ({**EXP, "staircase": True}, 150, 0.05),
    ({**EXP, "staircase": True}, 199, 0.05),
    ({**EXP, "staircase": True}, 200, 0.025),
    # Keras's boundary rule: values[0] while step <= boundaries[0].
    (PIECEWISE, 0, 1.0),
    (PIECEWISE, 100, 1.0),
    (PIECEWISE, 101, 0.5),
    (PIECEWISE, 200, 0.5),
    (PIECEWISE, 201, 0.1),
    (STEP, 299, 0.1),
    (STEP, 300, 0.05),
    (STEP, 899, 0.025),
    (STEP, 900, 0.0125),
    (COS, 0, 1.0),
    (COS, 50, 0.55),
    (COS, 100, 0.1),
    (COS, 5000, 0.1),
    (COS, 25, 0.9 * half_cos(0.25) + 0.1),
    (COS_WARM, 0, 0.0),
    (COS_WARM, 5, 0.5),
    (COS_WARM, 10, 1.0),
    (COS_WARM, 60, 0.5),
    (COS_WARM, 110, 0.0),
    (COS_WARM, 9999, 0.0),
    # SGDR: cycles [0, 100), [100, 300), [300, 700); peaks 1, 0.5, 0.25.
    (SGDR, 0, 1.0),
    (SGDR, 50, 0.5),
    (SGDR, 99, half_cos(0.99)),
    (SGDR, 100, 0.5),
    (SGDR, 200, 0.25),
    (SGDR, 300, 0.25),
    (SGDR, 500, 0.125),
    (SGDR, 700, 0.125),
    (SGDR_ALPHA, 100, 0.9 * 0.5 + 0.1),
    (SGDR_ALPHA, 299, 0.9 * 0.5 * half_cos(199 / 200) + 0.1),
    (SGDR_FLAT, 10, 1.0),
    (SGDR_FLAT, 15, 0.5),
    (SGDR_FLAT, 1005, 0.5),
    (TRI, 0, 1.0),
    (TRI, 5, 2.0),
    (TRI, 10, 3.0),
    (TRI, 15, 2.0),
    (TRI, 20, 1.0),
    (TRI, 30, 3.0),
    (TRI2, 10, 3.0),
    (TRI2, 30, 2.0),
    (TRI2, 50, 1.5),
    (TRI2, 45, 1.25),
    (EXPR, 10, 1.0 + 2.0 * 0.9**10),
    (EXPR, 25, 1.0 + 2.0 * 0.5 * 0.9**25),
    # 1cycle, PyTorch's phases: up to step 0.3 * 100 - 1 = 29, down to step 99.
    (ONE, 0, 0.04),
    (ONE, 29, 1.0),
    (ONE, 99, 4e-6),
    (ONE, 10_000, 4e-6),
    (ONE, 64, 4e-6 + (1.0 - 4e-6) / 2 * (math.cos(math.pi * 35 / 70) + 1)),
    (ONE_LIN, 14, 0.04 + 0.96 * 14 / 29),
    (ONE_LIN, 64, 1.0 + (4e-6 - 1.0) * 0.5),
    (ONE_3, 29, 1.0),
    (ONE_3, 58, 0.04),
    (ONE_3, 99, 4e-6),
    (WARM, 0, 0.0),
    (WARM, 5, 0.5),
    (WARM, 10, 1.0),
    (WARM, 10_000, 1.0),
    ({**WARM, "start_lr": 0.5}, 5, 0.75),
    # then counts from the warmup's end; target defaults to then's first value.
    (WARM_THEN, 5, 0.5),
    (WARM_THEN, 10, 1.0),
    (WARM_THEN, 20, 0.5),
    (WARM_THEN, 30, 0.25),
]


@pytest.mark.parametrize(("spec", "step", "expected"), HAND_VALUES)
def test_hand_computed_values(spec, step, expected):
    assert evaluate(spec, step) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_examples_cover_every_kind():
    assert {spec["kind"] for spec in EXAMPLES} == set(KINDS)


def test_cosine_restarts_cycle_finds_the_cycle():
    assert cosine_restarts_cycle(0, 100, 2.0) == (0, 0.0, 100.0)
    assert cosine_restarts_cycle(99, 100, 2.0) == (0, 0.0, 100.0)
    assert cosine_restarts_cycle(100, 100, 2.0) == (1, 100.0, 200.0)
    assert cosine_restarts_cycle(299, 100, 2.0) == (1, 100.0, 200.0)
    assert cosine_restarts_cycle(300, 100, 2.0) == (2, 300.0, 400.0)
    # Keras's floor(log(...) / log(t_mul)) lands one cycle short at these steps; this does not.
    for step in (7, 28, 91, 280, 847):
        index, start, _ = cosine_restarts_cycle(step, 7, 3.0)
        assert start == step, (step, index)
    assert cosine_restarts_cycle(30, 10, 1.0) == (3, 30.0, 10)
    # 170 + 170 * 1.9 = 493, though first * (t_mul**2 - 1) / (t_mul - 1) rounds a hair above it.
    assert cosine_restarts_cycle(492, 170, 1.9)[0] == 1
    assert cosine_restarts_cycle(493, 170, 1.9)[0] == 2
    spec = {"kind": "cosine_restarts", "initial_learning_rate": 1.0, "first_decay_steps": 170, "t_mul": 1.9}
    assert evaluate(spec, 493) == 1.0


# ---------------------------------------------------------------------------
# start_step


@pytest.mark.parametrize("spec", EXAMPLES, ids=[f"{s['kind']}-{i}" for i, s in enumerate(EXAMPLES)])
@given(start=st.integers(0, 10_000), local=st.integers(0, 2_000), before=st.integers(1, 10_000))
@settings(max_examples=30, deadline=None)
def test_start_step_shifts_the_schedule(spec, start, local, before):
    shifted = {**spec, "start_step": start}
    assert evaluate(shifted, start + local) == evaluate(spec, local)
    # Before its start a schedule holds its first value.
    assert evaluate(shifted, max(start - before, 0)) == evaluate(spec, 0)


def test_nested_start_step_counts_from_the_warmup_end():
    inner = {"kind": "step_decay", "initial_learning_rate": 1.0, "factor": 0.5, "every_steps": 10, "start_step": 5}
    spec = {"kind": "warmup", "steps": 10, "target": 1.0, "then": inner, "start_step": 100}
    assert evaluate(spec, 100 + 10 + 5 + 9) == 1.0
    assert evaluate(spec, 100 + 10 + 5 + 10) == 0.5


# ---------------------------------------------------------------------------
# Validation


BAD_SPECS = [
    ({"kind": "nope"}, "unknown schedule kind 'nope'"),
    ([1, 2], "must be a dict"),
    ({"initial_learning_rate": 0.1}, "unknown schedule kind None"),
    ({**EXP, "decay_step": 3}, "exponential_decay: unknown field(s) ['decay_step']"),
    ({"kind": "exponential_decay", "initial_learning_rate": 0.1, "decay_rate": 0.5}, "missing field 'decay_steps'"),
    ({**EXP, "decay_steps": 0}, "decay_steps must be > 0, got 0"),
    ({**EXP, "decay_steps": True}, "decay_steps must be a finite number, got True"),
    ({**EXP, "decay_rate": -0.5}, "decay_rate must be > 0, got -0.5"),
    ({**EXP, "initial_learning_rate": math.nan}, "initial_learning_rate must be a finite learning rate >= 0, got nan"),
    ({**EXP, "initial_learning_rate": math.inf}, "got inf"),
    ({**EXP, "initial_learning_rate": -1e-3}, "got -0.001"),
    ({**EXP, "initial_learning_rate": "0.1"}, "got '0.1'"),
    ({**EXP, "staircase": 1}, "staircase must be true or false, got 1"),
    ({**EXP, "start_step": -1}, "start_step must be an integer >= 0, got -1"),
    ({**EXP, "start_step": 2.5}, "start_step must be an integer >= 0, got 2.5"),
    ({**PIECEWISE, "values": [1.0, 0.5]}, "values must have one more element than boundaries"),
    ({**PIECEWISE, "boundaries": [200, 100]}, "boundaries must be strictly increasing, got [200, 100]"),
    ({**PIECEWISE, "boundaries": [100, -1]}, "boundaries[1] must be an integer >= 0, got -1"),
    ({**PIECEWISE, "values": [1.0, -0.5, 0.1]}, "values[1] must be a finite learning rate >= 0, got -0.5"),
    ({**STEP, "every_steps": 0}, "every_steps must be an integer >= 1, got 0"),
    ({**COS, "alpha": 1.5}, "alpha must be in [0, 1], got 1.5"),
    ({**COS_WARM, "warmup_steps": -1}, "warmup_steps must be >= 0, got -1"),
    ({**SGDR, "t_mul": 0.5}, "t_mul must be >= 1"),
    ({**SGDR, "m_mul": 0}, "m_mul must be > 0, got 0"),
    ({**TRI, "max_lr": 0.5}, "max_lr must be >= base_lr=1.0, got 0.5"),
    ({**TRI, "mode": "triangle"}, "mode must be one of 'triangular', 'triangular2', 'exp_range', got 'triangle'"),
    ({**TRI, "gamma": 0.9}, "gamma=0.9 only applies to mode 'exp_range'"),
    ({**EXPR, "gamma": 1.1}, "gamma must be in (0, 1], got 1.1"),
    ({**ONE, "total_steps": 3}, "leaves a phase of no steps"),
    ({**ONE, "pct_start": 0.6, "three_phase": True}, "pct_start=0.6 with total_steps=100 and three_phase"),
    ({**ONE, "anneal": "cosine"}, "anneal must be one of 'cos', 'linear', got 'cosine'"),
    ({"kind": "warmup", "steps": 10}, "warmup: give a target, a then schedule, or both"),
    ({**WARM, "then": {**EXP, "decay_rate": 0}}, "exponential_decay: decay_rate must be > 0, got 0"),
    ({**WARM, "then": "cosine"}, "must be a dict with a 'kind', got 'cosine'"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_validation_errors_quote_the_value(spec, message):
    with pytest.raises(ValueError) as err:
        validate_spec(spec)
    assert message in str(err.value)
    with pytest.raises(ValueError):
        evaluate(spec, 0)


def test_deep_nesting_is_refused():
    spec = {"kind": "warmup", "steps": 1, "target": 0.1}
    for _ in range(20):
        spec = {"kind": "warmup", "steps": 1, "then": spec}
    with pytest.raises(ValueError, match="nest at most"):
        validate_spec(spec)


@pytest.mark.parametrize("step", [1.0, 2.5, "3", None])
def test_step_must_be_an_integer(step):
    with pytest.raises(TypeError):
        Schedule(EXP)(step)


def test_normalised_spec_fills_defaults_without_touching_the_input():
    original = copy.deepcopy(WARM_THEN)
    spec = validate_spec(WARM_THEN)
    assert WARM_THEN == original
    assert spec == {
        "kind": "warmup",
        "steps": 10,
        "start_lr": 0.0,
        "target": None,
        "start_step": 0,
        "then": {
            "kind": "exponential_decay",
            "initial_learning_rate": 1.0,
            "decay_steps": 10,
            "decay_rate": 0.5,
            "staircase": False,
            "start_step": 0,
        },
    }


def test_integral_floats_become_ints_where_steps_are_counted():
    spec = validate_spec({**PIECEWISE, "boundaries": [100.0, 200.0], "start_step": 5.0})
    assert spec["boundaries"] == [100, 200] and all(type(b) is int for b in spec["boundaries"])
    assert type(spec["start_step"]) is int


@pytest.mark.parametrize("spec", EXAMPLES, ids=[f"{s['kind']}-{i}" for i, s in enumerate(EXAMPLES)])
def test_normalised_spec_is_json_and_a_fixed_point(spec):
    normal = validate_spec(spec)
    assert validate_spec(normal) == normal
    assert json.loads(json.dumps(normal)) == normal
    schedule = Schedule(spec)
    assert schedule.spec == normal
    assert [schedule(s) for s in range(0, 1000, 37)] == [evaluate(normal, s) for s in range(0, 1000, 37)]


def test_from_keras_configs():
    assert from_keras(
        "CosineDecay",
        {
            "initial_learning_rate": 0.1,
            "decay_steps": 1000,
            "alpha": 0.0,
            "name": "CosineDecay",
            "warmup_target": None,
            "warmup_steps": 0,
        },
    ) == {
        "kind": "cosine_decay",
        "initial_learning_rate": 0.1,
        "decay_steps": 1000,
        "alpha": 0.0,
        "warmup_target": None,
        "warmup_steps": 0,
        "start_step": 0,
    }
    assert (
        from_keras(
            "CosineDecayRestarts",
            {
                "initial_learning_rate": 0.1,
                "first_decay_steps": 50,
                "t_mul": 2.0,
                "m_mul": 0.5,
                "alpha": 0.0,
                "name": "SGDRDecay",
            },
        )["kind"]
        == "cosine_restarts"
    )
    assert from_keras("PiecewiseConstantDecay", {"boundaries": [10], "values": [0.1, 0.01], "name": "p"})["values"] == [
        0.1,
        0.01,
    ]
    with pytest.raises(ValueError, match="no schedule kind for Keras's 'PolynomialDecay'"):
        from_keras("PolynomialDecay", {})


# ---------------------------------------------------------------------------
# Properties

lrs = st.floats(1e-6, 10.0)
steps = st.integers(0, 100_000)


@given(
    base=lrs,
    span=st.floats(0.0, 10.0),
    step_size=st.integers(1, 500),
    step=steps,
    mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
    gamma=st.floats(0.9, 1.0),
)
def test_cyclic_stays_between_base_and_max(base, span, step_size, step, mode, gamma):
    top = base + span
    lr = cyclic(step, base, top, step_size, mode, gamma if mode == "exp_range" else 1.0)
    assert base <= lr <= top * (1 + 1e-12)


@given(
    base=lrs,
    span=st.floats(1e-3, 10.0),
    step_size=st.integers(1, 500),
    cycle=st.integers(0, 100),
    offset=st.integers(0, 999),
)
def test_triangular_peaks_at_odd_multiples_of_step_size_and_repeats(base, span, step_size, cycle, offset):
    top = base + span
    assert cyclic((2 * cycle + 1) * step_size, base, top, step_size) == pytest.approx(top, rel=1e-12)
    assert cyclic(2 * cycle * step_size, base, top, step_size) == pytest.approx(base, rel=1e-12)
    step = offset % (2 * step_size)
    assert cyclic(step + 2 * cycle * step_size, base, top, step_size) == pytest.approx(
        cyclic(step, base, top, step_size), rel=1e-9
    )


@given(
    max_lr=lrs,
    total=st.integers(10, 5000),
    pct=st.floats(0.05, 0.95),
    div=st.floats(1.0, 100.0),
    final_div=st.floats(1.0, 1e5),
    anneal=st.sampled_from(["cos", "linear"]),
)
@settings(max_examples=50)
def test_one_cycle_rises_to_its_peak_then_falls(max_lr, total, pct, div, final_div, anneal):
    assume(pct * total > 1)
    lrs_ = [one_cycle(s, max_lr, total, pct, div, final_div, anneal) for s in range(total + 5)]
    end_up = pct * total - 1  # PyTorch's last step of the rise; the peak is on one side of it or the other
    lo, hi = math.floor(end_up), math.ceil(end_up)
    assert max(lrs_[lo], lrs_[hi]) == max(lrs_) <= max_lr * (1 + 1e-12)
    assert lrs_[0] == pytest.approx(max_lr / div)
    assert lrs_[-1] == pytest.approx(max_lr / div / final_div)
    assert all(a <= b * (1 + 1e-12) for a, b in zip(lrs_[:lo], lrs_[1 : lo + 1]))
    assert all(b <= a * (1 + 1e-12) for a, b in zip(lrs_[hi:], lrs_[hi + 1 :]))


@given(tens=st.integers(1, 100), pct_num=st.integers(1, 9))
def test_one_cycle_hits_max_lr_exactly_at_the_end_of_the_rise(tens, pct_num):
    assume(pct_num * tens >= 2)
    total, pct = 10 * tens, pct_num / 10
    end_up = round(pct * total) - 1
    assert one_cycle(end_up, 0.5, total, pct) == 0.5
    assert one_cycle(end_up - 1, 0.5, total, pct) < 0.5 and one_cycle(end_up + 1, 0.5, total, pct) < 0.5


DECAYS = st.one_of(
    st.builds(
        lambda lr, ds, rate, stair: {
            "kind": "exponential_decay",
            "initial_learning_rate": lr,
            "decay_steps": ds,
            "decay_rate": rate,
            "staircase": stair,
        },
        lrs,
        st.integers(1, 1000),
        st.floats(0.01, 1.0),
        st.booleans(),
    ),
    st.builds(
        lambda lr, factor, every: {
            "kind": "step_decay",
            "initial_learning_rate": lr,
            "factor": factor,
            "every_steps": every,
        },
        lrs,
        st.floats(0.01, 1.0),
        st.integers(1, 1000),
    ),
    st.builds(
        lambda lr, ds, alpha: {"kind": "cosine_decay", "initial_learning_rate": lr, "decay_steps": ds, "alpha": alpha},
        lrs,
        st.integers(1, 5000),
        st.floats(0.0, 1.0),
    ),
)


@given(spec=DECAYS, a=steps, b=steps)
def test_decays_never_increase(spec, a, b):
    lo, hi = sorted((a, b))
    assert evaluate(spec, hi) <= evaluate(spec, lo) * (1 + 1e-12)
    assert evaluate(spec, hi) >= 0


@given(
    lr0=lrs,
    first=st.integers(1, 500),
    t_mul=st.floats(1.0, 3.0),
    m_mul=st.floats(0.1, 1.0),
    alpha=st.floats(0.0, 1.0),
    step=steps,
)
def test_cosine_restarts_cycles_tile_the_steps_and_stay_in_range(lr0, first, t_mul, m_mul, alpha, step):
    index, start, length = cosine_restarts_cycle(step, first, t_mul)
    assert start - 1e-9 * max(step, 1) <= step < start + length  # a start a hair above a step is on it
    assert length == pytest.approx(first * t_mul**index)
    # The first step of the next cycle, with the same slack as a start a hair above a step.
    nxt = cosine_restarts_cycle(math.ceil(start + length - 1e-9 * max(start + length, 1)), first, t_mul)
    assert nxt[0] == index + 1 and nxt[1] == pytest.approx(start + length)
    spec = {
        "kind": "cosine_restarts",
        "initial_learning_rate": lr0,
        "first_decay_steps": first,
        "t_mul": t_mul,
        "m_mul": m_mul,
        "alpha": alpha,
    }
    lr = evaluate(spec, step)
    assert lr0 * alpha * (1 - 1e-12) <= lr <= lr0 * ((1 - alpha) * m_mul**index + alpha) * (1 + 1e-12)


@given(start_lr=st.floats(0.0, 1.0), target=st.floats(0.0, 1.0), n=st.integers(1, 1000), a=steps, b=steps)
def test_warmup_moves_monotonically_to_its_target(start_lr, target, n, a, b):
    spec = {"kind": "warmup", "steps": n, "start_lr": start_lr, "target": target}
    lo, hi = sorted((a, b))
    x, y = evaluate(spec, lo), evaluate(spec, hi)
    if target >= start_lr:
        assert start_lr <= x <= y * (1 + 1e-12) and y <= target * (1 + 1e-12)
    else:
        assert start_lr >= x >= y * (1 - 1e-12) and y >= target * (1 - 1e-12)
    assert evaluate(spec, n) == target


@given(n=st.integers(0, 1000), lr=lrs, decay_steps=st.integers(1, 1000))
def test_warmup_without_target_ends_on_the_then_schedule(n, lr, decay_steps):
    then = {"kind": "cosine_decay", "initial_learning_rate": lr, "decay_steps": decay_steps}
    spec = {"kind": "warmup", "steps": n, "then": then}
    assert evaluate(spec, n) == evaluate(then, 0) == lr
    if n:
        assert evaluate(spec, n - 1) <= lr


def test_end_step_freezes_a_schedule_at_its_value_there():
    from lrsup.supervisor.protocol.schedules import Schedule, validate_spec

    spec = {
        "kind": "exponential_decay",
        "initial_learning_rate": 1e-5,
        "decay_steps": 100,
        "decay_rate": 1e6,
        "start_step": 10,
        "end_step": 110,
    }
    ramp = Schedule(spec)
    assert ramp(10) == pytest.approx(1e-5) and ramp(110) == pytest.approx(10.0)
    assert ramp(500) == ramp(110)  # a late clear_schedule cannot let the ramp run on
    assert "end_step" not in validate_spec({k: v for k, v in spec.items() if k != "end_step"})
    with pytest.raises(ValueError, match="end_step must be > start_step=10, got 10"):
        validate_spec({**spec, "end_step": 10})
