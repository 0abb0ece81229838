"""Differential tests: every Keras-equivalent kind against Keras's own schedule, at every step.

Each Keras schedule is turned into a spec with ``from_keras`` (from its ``get_config()``)
and both are evaluated at every step of ``STEPS``; Keras's side as a compiled train step
computes it (graph mode, one scalar step per call). Keras computes in the dtype of
``initial_learning_rate``, so each case runs twice: in float64 (every parameter given as
``np.float64``), where only the formula and the step conventions can make a difference,
and in float32 (Python floats, Keras's default), which is what a Keras user's optimizer
really gets.

Tolerance, the same rule in both dtypes: 8 ulps of the dtype (``8 * eps``) per elapsed
period, times the LR scale. Why per period: Keras rounds ``step / period`` to the dtype
and then works on its fractional part (``fraction - floor(fraction)``, ``rate ** p``), so
the absolute error of the phase grows with the number of periods elapsed; a float32
``decay_rate`` compounds the same way in ``rate ** p``. Why the LR scale and not the value:
near the end of a cosine ``1 + cos(x)`` cancels, so the absolute error stays a few ulps of
``lr0`` while the relative error of a tiny value is unbounded. Exponential decay has no
cancellation, so there the scale is the value itself. Measured worst cases over these
parameter sets: 1.5 float32 ulps per period (1.8e-7) and under 8 float64 ulps, so the
margin is about 5x; ``test_tolerance_catches_an_off_by_one_step`` shows the tolerance
still rejects a schedule one step early or late. (A flat ``rtol=1e-5`` would be both too
tight, for SGDR after a dozen cycles in float32, and too loose, in float64.)

CosineDecayRestarts: Keras finds the cycle with ``floor(log(...) / log(t_mul))``, which can
round down by one exactly on a restart step; there Keras returns the end of the previous
cycle (``lr0 * alpha``) where ours starts the new one. The comparison allows exactly that,
and only at restart steps.
"""

from __future__ import annotations

import numpy as np
import pytest

from lrsup.supervisor.protocol.schedules import Schedule, cosine_restarts_cycle, from_keras

pytestmark = pytest.mark.keras

# Imported by the fixture below, not at collection, so that `-m "not keras"` never loads TensorFlow.
S = tf = None


@pytest.fixture(scope="module", autouse=True)
def _keras():
    global S, tf
    tf = pytest.importorskip("tensorflow")
    S = pytest.importorskip("keras").optimizers.schedules


STEPS = np.arange(0, 3000, dtype=np.int64)

ULPS_PER_PERIOD = 8

EXPONENTIAL = [  # initial_learning_rate, decay_steps, decay_rate, staircase
    (0.1, 100, 0.96, False),
    (0.1, 100, 0.96, True),
    (1.0, 7, 0.5, True),
    (0.01, 1000, 0.1, False),
    (0.3, 33.5, 0.9, True),
]
PIECEWISE = [  # boundaries, values
    ([100, 500, 2000], [0.1, 0.05, 0.01, 0.001]),
    ([0], [1.0, 0.5]),
    ([1, 2, 3], [0.4, 0.3, 0.2, 0.1]),
    ([2999], [0.02, 0.2]),
]
COSINE = [  # initial_learning_rate, decay_steps, alpha, warmup_target, warmup_steps
    (0.1, 1000, 0.0, None, 0),
    (0.1, 2500, 0.05, None, 0),
    (1.0, 7, 0.5, None, 0),
    (0.0, 1000, 0.0, 0.1, 500),
    (0.01, 2500, 0.1, 0.2, 100),
    (0.1, 1000, 0.0, 0.05, 0),
    (0.05, 64, 0.2, 0.1, 37),
]
RESTARTS = [  # initial_learning_rate, first_decay_steps, t_mul, m_mul, alpha
    (0.1, 100, 2.0, 1.0, 0.0),
    (0.1, 100, 2.0, 0.5, 0.1),
    (1.0, 7, 3.0, 0.9, 0.0),
    (0.05, 37, 1.0, 0.8, 0.05),
    (0.1, 100, 1.5, 0.7, 0.01),
    (0.2, 250, 1.0, 1.0, 0.0),
    (0.3, 13, 2.0, 0.95, 0.2),
]


def keras_values(schedule) -> np.ndarray:
    """The schedule at every step of STEPS, as a compiled train step computes it (graph mode, no XLA).

    ``map_fn`` in a ``tf.function`` calls the schedule on one scalar step at a time, as the
    optimizer does, in graph mode. (Eager calls and ``vectorized_map``'s SIMD kernels give
    results a few ulps apart from these: TensorFlow has no single bit-exact answer.)
    """
    dtype = tf.as_dtype(np.asarray(schedule(0)).dtype)
    values = tf.function(lambda steps: tf.map_fn(schedule, steps, fn_output_signature=dtype))(
        tf.constant(STEPS)
    ).numpy()
    graph = tf.function(schedule)
    for step in (0, 1, 99, 100, 101, 1234, int(STEPS[-1])):
        assert values[step] == graph(tf.constant(step, tf.int64)).numpy(), step
    return values


def our_values(schedule) -> np.ndarray:
    lr = Schedule(from_keras(type(schedule).__name__, schedule.get_config()))
    return np.array([lr(int(step)) for step in STEPS])


def tolerance(dtype, periods: np.ndarray, scale) -> np.ndarray:
    """``ULPS_PER_PERIOD`` ulps of ``dtype`` per elapsed period (plus one), times ``scale``."""
    return ULPS_PER_PERIOD * np.finfo(dtype).eps * (1 + periods) * scale


def mismatches(ours: np.ndarray, theirs: np.ndarray, tol: np.ndarray, allowed: np.ndarray | None = None):
    bad = np.abs(ours - theirs) > tol
    if allowed is not None:
        bad &= ~allowed
    return np.flatnonzero(bad)


def assert_close(ours: np.ndarray, theirs: np.ndarray, tol: np.ndarray, allowed: np.ndarray | None = None):
    bad = mismatches(ours, theirs, tol, allowed)
    assert bad.size == 0, (
        f"{bad.size} steps differ, first {bad[:5].tolist()}: ours {ours[bad[:5]].tolist()}, "
        f"keras {theirs[bad[:5]].tolist()}"
    )


def param(value: float | None, dtype):
    """A float parameter for a Keras schedule in ``dtype``.

    Keras turns Python floats such as ``decay_rate``, ``alpha`` or ``t_mul`` into float32
    tensors before casting them to the LR's dtype, so for a float64 run they must be
    float64 already. In float32 runs they stay Python floats, as users pass them.
    """
    return value if value is None or dtype is np.float32 else np.float64(value)


DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])


def exponential_case(dtype, lr0, decay_steps, rate, staircase):
    schedule = S.ExponentialDecay(dtype(lr0), decay_steps, param(rate, dtype), staircase=staircase)
    ours = our_values(schedule)
    # No cancellation: the error is relative to the value; plus float32's denormal range.
    tol = tolerance(dtype, STEPS / decay_steps, np.abs(ours)) + np.finfo(dtype).tiny
    return schedule, ours, tol


def cosine_case(dtype, lr0, decay_steps, alpha, warmup_target, warmup_steps):
    schedule = S.CosineDecay(
        dtype(lr0),
        decay_steps,
        alpha=param(alpha, dtype),
        warmup_target=param(warmup_target, dtype),
        warmup_steps=warmup_steps,
    )
    # Past decay_steps (+ warmup) Keras clamps the step: the error stops growing there.
    periods = np.minimum(STEPS, decay_steps + warmup_steps) / decay_steps
    return schedule, our_values(schedule), tolerance(dtype, periods, max(lr0, warmup_target or 0.0))


def restarts_case(dtype, lr0, first, t_mul, m_mul, alpha):
    schedule = S.CosineDecayRestarts(
        dtype(lr0), first, t_mul=param(t_mul, dtype), m_mul=param(m_mul, dtype), alpha=param(alpha, dtype)
    )
    return schedule, our_values(schedule), tolerance(dtype, STEPS / first, lr0)


def restart_steps(first_decay_steps: float, t_mul: float) -> np.ndarray:
    """True at the steps where one of our cycles begins (cycle 0 excluded)."""
    return np.array(
        [
            step > 0 and abs(cosine_restarts_cycle(int(step), first_decay_steps, t_mul)[1] - step) < 1e-6
            for step in STEPS
        ]
    )


@DTYPES
@pytest.mark.parametrize(("lr0", "decay_steps", "rate", "staircase"), EXPONENTIAL)
def test_exponential_decay(dtype, lr0, decay_steps, rate, staircase):
    schedule, ours, tol = exponential_case(dtype, lr0, decay_steps, rate, staircase)
    theirs = keras_values(schedule)
    assert theirs.dtype == dtype
    assert_close(ours, theirs, tol)


@DTYPES
@pytest.mark.parametrize(("boundaries", "values"), PIECEWISE)
def test_piecewise_constant(dtype, boundaries, values):
    schedule = S.PiecewiseConstantDecay(boundaries, [dtype(v) for v in values])
    theirs = keras_values(schedule)
    assert theirs.dtype == dtype
    # Exactly equal: both pick one of the given values (Keras sums value * indicator).
    np.testing.assert_array_equal(our_values(schedule).astype(dtype), theirs)


@DTYPES
@pytest.mark.parametrize(("lr0", "decay_steps", "alpha", "warmup_target", "warmup_steps"), COSINE)
def test_cosine_decay(dtype, lr0, decay_steps, alpha, warmup_target, warmup_steps):
    schedule, ours, tol = cosine_case(dtype, lr0, decay_steps, alpha, warmup_target, warmup_steps)
    theirs = keras_values(schedule)
    assert theirs.dtype == dtype
    assert_close(ours, theirs, tol)


@DTYPES
@pytest.mark.parametrize(
    ("lr0", "decay_steps", "alpha", "warmup_target", "warmup_steps"),
    [case for case in COSINE if case[3] is not None and case[4] > 0],
)
def test_warmup_then_cosine_is_keras_cosine_with_warmup(dtype, lr0, decay_steps, alpha, warmup_target, warmup_steps):
    schedule, _, tol = cosine_case(dtype, lr0, decay_steps, alpha, warmup_target, warmup_steps)
    lr = Schedule(
        {
            "kind": "warmup",
            "steps": warmup_steps,
            "start_lr": lr0,
            "target": warmup_target,
            "then": {
                "kind": "cosine_decay",
                "initial_learning_rate": warmup_target,
                "decay_steps": decay_steps,
                "alpha": alpha,
            },
        }
    )
    assert_close(np.array([lr(int(step)) for step in STEPS]), keras_values(schedule), tol)


@DTYPES
@pytest.mark.parametrize(("lr0", "first", "t_mul", "m_mul", "alpha"), RESTARTS)
def test_cosine_decay_restarts(dtype, lr0, first, t_mul, m_mul, alpha):
    schedule, ours, tol = restarts_case(dtype, lr0, first, t_mul, m_mul, alpha)
    theirs = keras_values(schedule)
    assert theirs.dtype == dtype
    # Keras's one-step-late restart: the previous cycle's end, lr0 * alpha, on a restart step.
    late_restart = restart_steps(first, t_mul) & (np.abs(theirs - lr0 * alpha) <= tol)
    assert_close(ours, theirs, tol, allowed=late_restart)


def test_tolerance_catches_an_off_by_one_step():
    """Ours one step early or late must fail the float32 comparison at most steps (the tolerance bites)."""
    cases = [
        exponential_case(np.float32, *EXPONENTIAL[0]),
        cosine_case(np.float32, *COSINE[1]),
        cosine_case(np.float32, *COSINE[4]),
        restarts_case(np.float32, *RESTARTS[5]),  # the largest float32 error: 12 cycles, t_mul = 1
    ]
    for schedule, ours, tol in cases:
        theirs = keras_values(schedule)
        assert mismatches(ours, theirs, tol).size == 0
        moving = np.flatnonzero(np.diff(ours) != 0)  # skip flat stretches, where a shift changes nothing
        assert moving.size > 1000
        late = mismatches(ours[moving], theirs[moving + 1], tol[moving + 1])
        early = mismatches(ours[moving + 1], theirs[moving], tol[moving])
        assert late.size > 0.9 * moving.size and early.size > 0.9 * moving.size, (type(schedule).__name__,)
