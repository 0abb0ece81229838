"""Learning-rate schedules: pure functions of the global step, described by plain dicts.

A schedule spec is a JSON-safe dict ``{"kind": ..., <params>..., "start_step": 0}``.
The same code evaluates it in two places: inside the trainer (the agent, at every
batch) and in the supervisor (policies, the journal, offline replay). Standard
library only, because it runs inside the training process.

``step`` is the global optimizer step as Keras counts it (``optimizer.iterations``:
the number of updates applied so far), so ``schedule(step)`` is the LR of the update
that comes next, exactly what a ``keras.optimizers.schedules.LearningRateSchedule``
is called with. Every spec has ``start_step`` (default 0): the schedule sees the
local step ``step - start_step``, and before ``start_step`` it holds its step-0 value.
An optional ``end_step`` (> start_step) freezes it: from ``end_step`` on it holds its
value at ``end_step`` (the LR range test's ramp stops at its top, however late the
supervisor's ``clear_schedule`` arrives).

Kinds and their fields (defaults after ``=``; LRs are finite and >= 0):

- ``exponential_decay``: ``initial_learning_rate``, ``decay_steps`` (> 0),
  ``decay_rate`` (> 0), ``staircase=False``. Keras's ExponentialDecay.
- ``piecewise_constant``: ``boundaries`` (strictly increasing ints >= 0),
  ``values`` (one more than boundaries). ``values[0]`` while ``step <= boundaries[0]``,
  ``values[i]`` while ``boundaries[i-1] < step <= boundaries[i]``: Keras's
  PiecewiseConstantDecay.
- ``step_decay``: ``initial_learning_rate``, ``factor`` (> 0), ``every_steps`` (int >= 1):
  ``lr0 * factor ** (step // every_steps)``. "Every N epochs" is
  ``every_steps = N * steps_per_epoch``.
- ``cosine_decay``: ``initial_learning_rate``, ``decay_steps`` (> 0), ``alpha=0.0``
  (in [0, 1]), ``warmup_target=None``, ``warmup_steps=0``. Keras's CosineDecay: with a
  ``warmup_target``, linear from ``initial_learning_rate`` to it over ``warmup_steps``,
  then cosine from it to ``alpha * warmup_target`` over ``decay_steps``.
- ``cosine_restarts``: ``initial_learning_rate``, ``first_decay_steps`` (> 0),
  ``t_mul=2.0`` (>= 1), ``m_mul=1.0`` (> 0), ``alpha=0.0``. Keras's CosineDecayRestarts
  (SGDR); see :func:`cosine_restarts` for the one place it differs from Keras.
- ``cyclic``: ``base_lr``, ``max_lr`` (>= base_lr), ``step_size`` (> 0, half a cycle),
  ``mode="triangular"`` (or ``"triangular2"``, ``"exp_range"``), ``gamma=1.0`` (in (0, 1]).
  Smith's cyclical learning rates.
- ``one_cycle``: ``max_lr``, ``total_steps`` (int >= 2), ``pct_start=0.3``,
  ``div_factor=25.0``, ``final_div_factor=1e4``, ``anneal="cos"`` (or ``"linear"``),
  ``three_phase=False``. PyTorch's OneCycleLR, LR part.
- ``warmup``: ``steps`` (int >= 0), ``start_lr=0.0``, ``target=None``, ``then=None``
  (a nested spec). Linear from ``start_lr`` to ``target`` over ``steps``, then
  ``target`` (no ``then``) or ``then``, whose step counts from the warmup's end (Keras's
  CosineDecay convention). ``target`` defaults to ``then``'s first value; one of the
  two is required.

Example::

    spec = validate_spec({"kind": "cosine_decay", "initial_learning_rate": 0.1, "decay_steps": 1000})
    evaluate(spec, 500)          # 0.05
    lr = Schedule(spec)          # validated once, for the per-batch hot path
    lr(1000)                     # 0.0
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left
from typing import Any, Callable, Mapping

__all__ = [
    "KINDS",
    "Schedule",
    "cosine_decay",
    "cosine_restarts",
    "cosine_restarts_cycle",
    "cyclic",
    "evaluate",
    "exponential_decay",
    "from_keras",
    "one_cycle",
    "piecewise_constant",
    "step_decay",
    "validate_spec",
    "warmup",
]

# ---------------------------------------------------------------------------
# The schedules, as functions of the local step (>= 0). Arithmetic follows Keras's
# order of operations where Keras has the schedule, so that float64 results agree
# with Keras run in float64 to the last few bits.


def exponential_decay(
    step: int, initial_learning_rate: float, decay_steps: float, decay_rate: float, staircase: bool = False
) -> float:
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``, as Keras's ExponentialDecay.

    Example::

        exponential_decay(200, 0.1, decay_steps=100, decay_rate=0.5)   # 0.025

    Args:
        step: int. Steps since the schedule's start.
        initial_learning_rate: float. The LR at step 0.
        decay_steps: float. Steps over which the LR is multiplied by ``decay_rate``.
        decay_rate: float. The multiplier per ``decay_steps``.
        staircase: bool. Floor ``step / decay_steps``: the LR changes in jumps.
    """
    p = step / decay_steps
    if staircase:
        p = math.floor(p)
    return initial_learning_rate * decay_rate**p


def piecewise_constant(step: int, boundaries: list[int], values: list[float]) -> float:
    """The value of the interval holding ``step``, with Keras's ``step <= boundary`` rule.

    Example::

        piecewise_constant(100, [100, 200], [1.0, 0.5, 0.1])   # 1.0 (100 <= 100)
        piecewise_constant(101, [100, 200], [1.0, 0.5, 0.1])   # 0.5

    Args:
        step: int. Steps since the schedule's start.
        boundaries: list of int. Strictly increasing.
        values: list of float. ``len(boundaries) + 1`` values.
    """
    return values[bisect_left(boundaries, step)]


def step_decay(step: int, initial_learning_rate: float, factor: float, every_steps: int) -> float:
    """``initial_learning_rate * factor ** (step // every_steps)``.

    Example::

        step_decay(250, 0.1, factor=0.5, every_steps=100)   # 0.025

    Args:
        step: int. Steps since the schedule's start.
        initial_learning_rate: float. The LR before the first drop.
        factor: float. Multiplier applied at each drop.
        every_steps: int. Steps between drops (``every_epochs * steps_per_epoch``).
    """
    return initial_learning_rate * factor ** (step // every_steps)


def _cosine(step: float, decay_steps: float, decay_from_lr: float, alpha: float) -> float:
    completed_fraction = step / decay_steps
    cosine_decayed = 0.5 * (1.0 + math.cos(math.pi * completed_fraction))
    decayed = (1 - alpha) * cosine_decayed + alpha
    return decay_from_lr * decayed


def cosine_decay(
    step: float,
    initial_learning_rate: float,
    decay_steps: float,
    alpha: float = 0.0,
    warmup_target: float | None = None,
    warmup_steps: float = 0,
) -> float:
    """Cosine decay with optional linear warmup, as Keras's CosineDecay.

    Example::

        cosine_decay(500, 0.1, decay_steps=1000)                                    # 0.05
        cosine_decay(50, 0.0, 1000, warmup_target=0.1, warmup_steps=100)           # 0.05

    Args:
        step: int. Steps since the schedule's start.
        initial_learning_rate: float. The decay's start, or the warmup's start when
            ``warmup_target`` is given.
        decay_steps: float. Steps of the cosine phase; after it the LR stays at its floor.
        alpha: float. The floor as a fraction of the decay's starting LR.
        warmup_target: float or None. The LR the warmup reaches and the decay starts from.
        warmup_steps: float. Steps of the warmup (ignored without ``warmup_target``).
    """
    if warmup_target is None:
        return _cosine(min(step, decay_steps), decay_steps, initial_learning_rate, alpha)
    step = min(step, decay_steps + warmup_steps)
    if step < warmup_steps:
        return (warmup_target - initial_learning_rate) * (step / warmup_steps) + initial_learning_rate
    return _cosine(step - warmup_steps, decay_steps, warmup_target, alpha)


def cosine_restarts_cycle(step: int, first_decay_steps: float, t_mul: float) -> tuple[int, float, float]:
    """Which SGDR cycle holds ``step``: ``(index, start, length)``, cycle 0 starting at 0.

    Cycle ``i`` starts at ``first * (t_mul**i - 1) / (t_mul - 1)`` (``first * i`` when
    ``t_mul == 1``) and lasts ``first * t_mul**i`` steps. The closed-form guess is
    corrected against those starts, so a step on a restart is in the new cycle. A start
    within a relative 1e-9 of ``step`` counts as on it: with ``first=170, t_mul=1.9`` the
    second restart is meant at 170 + 323 = 493, which float arithmetic puts a hair above.

    Example::

        cosine_restarts_cycle(300, 100, 2.0)   # (2, 300.0, 400.0)

    Args:
        step: int. Steps since the schedule's start (>= 0).
        first_decay_steps: float. Length of cycle 0.
        t_mul: float. Each cycle is ``t_mul`` times longer than the one before (>= 1).
    """

    def start(i: int) -> float:
        if t_mul == 1.0:
            return float(first_decay_steps * i)
        return first_decay_steps * (t_mul**i - 1.0) / (t_mul - 1.0)

    if t_mul == 1.0:
        i = math.floor(step / first_decay_steps)
    else:
        i = math.floor(math.log1p(step * (t_mul - 1.0) / first_decay_steps) / math.log(t_mul))
    slack = 1e-9 * max(step, 1)
    while i > 0 and start(i) > step + slack:
        i -= 1
    while start(i + 1) <= step + slack:
        i += 1
    return i, start(i), first_decay_steps * t_mul**i


def cosine_restarts(
    step: int,
    initial_learning_rate: float,
    first_decay_steps: float,
    t_mul: float = 2.0,
    m_mul: float = 1.0,
    alpha: float = 0.0,
) -> float:
    """Cosine decay with warm restarts (SGDR), as Keras's CosineDecayRestarts.

    In cycle ``i`` at fraction ``f`` of it the LR is
    ``lr0 * ((1 - alpha) * m_mul**i * (1 + cos(pi * f)) / 2 + alpha)``: the peak shrinks
    by ``m_mul`` per restart, the floor ``lr0 * alpha`` does not (as in Keras).

    Keras finds the cycle as ``floor(log(1 + fraction * (t_mul - 1)) / log(t_mul))``,
    which can round down by one exactly on a restart step (in float32 or float64, e.g.
    first_decay_steps=7, t_mul=3 at steps 7, 28, 280, 847 in float64): there Keras gives
    the previous cycle's end, ``lr0 * alpha``, one step late. This function puts a
    restart step in the new cycle (see :func:`cosine_restarts_cycle`); everywhere else
    it equals Keras.

    Example::

        cosine_restarts(150, 0.1, first_decay_steps=100)   # 0.0853... (cycle 1, a quarter in)

    Args:
        step: int. Steps since the schedule's start.
        initial_learning_rate: float. The LR at step 0.
        first_decay_steps: float. Length of the first cycle.
        t_mul: float. Growth of the cycle length per restart.
        m_mul: float. Growth (usually shrinkage) of the peak per restart.
        alpha: float. The floor as a fraction of ``initial_learning_rate``.
    """
    i, start, length = cosine_restarts_cycle(step, first_decay_steps, t_mul)
    completed_fraction = max(step - start, 0.0) / length
    cosine_decayed = 0.5 * m_mul**i * (1.0 + math.cos(math.pi * completed_fraction))
    return initial_learning_rate * ((1 - alpha) * cosine_decayed + alpha)


def cyclic(
    step: int, base_lr: float, max_lr: float, step_size: float, mode: str = "triangular", gamma: float = 1.0
) -> float:
    """Smith's cyclical learning rate (triangular, triangular2, exp_range).

    ``cycle = floor(1 + step / (2 * step_size))``, ``x = |step / step_size - 2 * cycle + 1|``,
    ``lr = base_lr + (max_lr - base_lr) * max(0, 1 - x) * scale`` where ``scale`` is 1
    (triangular), ``1 / 2 ** (cycle - 1)`` (triangular2) or ``gamma ** step`` (exp_range).

    Example::

        cyclic(50, 0.001, 0.006, step_size=100)    # 0.0035 (half way up)
        cyclic(100, 0.001, 0.006, step_size=100)   # 0.006 (the peak)

    Args:
        step: int. Steps since the schedule's start.
        base_lr: float. The bottom of every cycle.
        max_lr: float. The top of the first cycle.
        step_size: float. Steps in half a cycle.
        mode: str. ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: float. Per-step decay of the amplitude in ``exp_range``.
    """
    cycle = math.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    if mode == "triangular":
        scale = 1.0
    elif mode == "triangular2":
        scale = math.ldexp(1.0, 1 - cycle)  # 1 / 2 ** (cycle - 1), underflowing to 0
    elif mode == "exp_range":
        scale = gamma**step
    else:
        raise ValueError(f"cyclic: mode must be 'triangular', 'triangular2' or 'exp_range', got {mode!r}")
    return base_lr + (max_lr - base_lr) * max(0.0, 1.0 - x) * scale


def _one_cycle_phases(
    max_lr: float,
    total_steps: int,
    pct_start: float,
    div_factor: float,
    final_div_factor: float,
    three_phase: bool,
) -> list[tuple[float, float, float]]:
    """PyTorch's phases: (end_step, start_lr, end_lr), each phase from the previous end."""
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    if three_phase:
        return [
            (float(pct_start * total_steps) - 1, initial_lr, max_lr),
            (float(2 * pct_start * total_steps) - 2, max_lr, initial_lr),
            (total_steps - 1, initial_lr, min_lr),
        ]
    return [
        (float(pct_start * total_steps) - 1, initial_lr, max_lr),
        (total_steps - 1, max_lr, min_lr),
    ]


def one_cycle(
    step: int,
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal: str = "cos",
    three_phase: bool = False,
) -> float:
    """The 1cycle policy's LR, as PyTorch's OneCycleLR computes it.

    From ``max_lr / div_factor`` up to ``max_lr`` at step ``pct_start * total_steps - 1``,
    then down to ``max_lr / div_factor / final_div_factor`` at step ``total_steps - 1``
    (with ``three_phase``, back to the initial LR at ``2 * pct_start * total_steps - 2``
    first). After ``total_steps - 1`` the LR holds its final value (PyTorch raises).

    Example::

        one_cycle(29, 0.1, total_steps=100)    # 0.1 (the peak, at 0.3 * 100 - 1)
        one_cycle(0, 0.1, total_steps=100)     # 0.004 (0.1 / 25)

    Args:
        step: int. Steps since the schedule's start.
        max_lr: float. The peak LR.
        total_steps: int. Length of the cycle.
        pct_start: float. Fraction of the cycle spent increasing the LR.
        div_factor: float. ``initial_lr = max_lr / div_factor``.
        final_div_factor: float. ``min_lr = initial_lr / final_div_factor``.
        anneal: str. ``"cos"`` or ``"linear"``: the shape of each phase.
        three_phase: bool. Come back down to ``initial_lr`` before annealing to ``min_lr``.
    """
    phases = _one_cycle_phases(max_lr, total_steps, pct_start, div_factor, final_div_factor, three_phase)
    step = min(step, total_steps - 1)
    start_step = 0.0
    for i, (end_step, start_lr, end_lr) in enumerate(phases):
        if step <= end_step or i == len(phases) - 1:
            pct = (step - start_step) / (end_step - start_step)
            if anneal == "cos":
                return end_lr + (start_lr - end_lr) / 2.0 * (math.cos(math.pi * pct) + 1)
            return (end_lr - start_lr) * pct + start_lr
        start_step = end_step
    raise AssertionError("unreachable: the last phase always answers")


def warmup(
    step: int,
    steps: int,
    start_lr: float = 0.0,
    target: float | None = None,
    then: Callable[[int], float] | None = None,
) -> float:
    """Linear warmup from ``start_lr`` to ``target`` over ``steps``, then ``then`` or ``target``.

    ``then`` sees the step counted from the warmup's end (``step - steps``), as Keras's
    CosineDecay counts its decay after its warmup.

    Example::

        warmup(50, steps=100, target=0.1)                                   # 0.05
        warmup(150, steps=100, then=lambda s: 0.1 * 0.5 ** (s / 100))       # 0.0707...

    Args:
        step: int. Steps since the schedule's start.
        steps: int. Length of the warmup.
        start_lr: float. The LR at step 0.
        target: float or None. The LR at the warmup's end; None: ``then(0)``.
        then: callable or None. The schedule after the warmup, a function of its own step.
    """
    if target is None:
        if then is None:
            raise ValueError("warmup: give a target, a then schedule, or both")
        target = then(0)
    if step < steps:
        return (target - start_lr) * (step / steps) + start_lr
    if then is None:
        return target
    return then(step - steps)


# ---------------------------------------------------------------------------
# Validation. Each kind is a table of fields: name -> (check, default); REQUIRED
# marks the ones without a default. A check returns the normalised value or raises
# ValueError naming the kind, the field and the value received.

REQUIRED = object()
_MAX_NESTING = 8


def _fail(kind: str, name: str, requirement: str, value: Any) -> ValueError:
    return ValueError(f"{kind}: {name} must be {requirement}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(kind: str, name: str, value: Any) -> float | int:
    if not _is_number(value) or not math.isfinite(value):
        raise _fail(kind, name, "a finite number", value)
    return value


def _lr(kind: str, name: str, value: Any) -> float:
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise _fail(kind, name, "a finite learning rate >= 0", value)
    return float(value)


def _optional_lr(kind: str, name: str, value: Any) -> float | None:
    return None if value is None else _lr(kind, name, value)


def _positive(kind: str, name: str, value: Any) -> float | int:
    if _finite(kind, name, value) <= 0:
        raise _fail(kind, name, "> 0", value)
    return value


def _positive_float(kind: str, name: str, value: Any) -> float:
    return float(_positive(kind, name, value))


def _nonnegative(kind: str, name: str, value: Any) -> float | int:
    if _finite(kind, name, value) < 0:
        raise _fail(kind, name, ">= 0", value)
    return value


def _fraction(kind: str, name: str, value: Any) -> float:
    if not 0 <= _finite(kind, name, value) <= 1:
        raise _fail(kind, name, "in [0, 1]", value)
    return float(value)


def _int_at_least(minimum: int) -> Callable[[str, str, Any], int]:
    def check(kind: str, name: str, value: Any) -> int:
        # An integral float (100.0, as JSON or TOML may give) is accepted as an int.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise _fail(kind, name, f"an integer >= {minimum}", value)
        return value

    return check


def _bool(kind: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(kind, name, "true or false", value)
    return value


def _choice(*options: str) -> Callable[[str, str, Any], str]:
    def check(kind: str, name: str, value: Any) -> str:
        if value not in options:
            raise _fail(kind, name, "one of " + ", ".join(repr(o) for o in options), value)
        return value

    return check


def _t_mul(kind: str, name: str, value: Any) -> float:
    # Keras accepts t_mul < 1, but then the cycles shrink to nothing and it returns NaN
    # after first_decay_steps / (1 - t_mul) steps.
    if _finite(kind, name, value) < 1:
        raise _fail(kind, name, ">= 1 (cycles that shrink end after a finite number of steps)", value)
    return float(value)


def _gamma(kind: str, name: str, value: Any) -> float:
    if not 0 < _finite(kind, name, value) <= 1:
        raise _fail(kind, name, "in (0, 1]", value)
    return float(value)


def _lr_list(kind: str, name: str, value: Any) -> list[float]:
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail(kind, name, "a non-empty list of learning rates", value)
    return [_lr(kind, f"{name}[{i}]", v) for i, v in enumerate(value)]


def _step_list(kind: str, name: str, value: Any) -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise _fail(kind, name, "a list of integer steps", value)
    steps = [_int_at_least(0)(kind, f"{name}[{i}]", v) for i, v in enumerate(value)]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise _fail(kind, name, "strictly increasing", value)
    return steps


def _passthrough(kind: str, name: str, value: Any) -> Any:
    return value  # checked by the kind's cross-field check


_FIELDS: dict[str, dict[str, tuple[Callable[[str, str, Any], Any], Any]]] = {
    "exponential_decay": {
        "initial_learning_rate": (_lr, REQUIRED),
        "decay_steps": (_positive, REQUIRED),
        "decay_rate": (_positive_float, REQUIRED),
        "staircase": (_bool, False),
    },
    "piecewise_constant": {
        "boundaries": (_step_list, REQUIRED),
        "values": (_lr_list, REQUIRED),
    },
    "step_decay": {
        "initial_learning_rate": (_lr, REQUIRED),
        "factor": (_positive_float, REQUIRED),
        "every_steps": (_int_at_least(1), REQUIRED),
    },
    "cosine_decay": {
        "initial_learning_rate": (_lr, REQUIRED),
        "decay_steps": (_positive, REQUIRED),
        "alpha": (_fraction, 0.0),
        "warmup_target": (_optional_lr, None),
        "warmup_steps": (_nonnegative, 0),
    },
    "cosine_restarts": {
        "initial_learning_rate": (_lr, REQUIRED),
        "first_decay_steps": (_positive, REQUIRED),
        "t_mul": (_t_mul, 2.0),
        "m_mul": (_positive_float, 1.0),
        "alpha": (_fraction, 0.0),
    },
    "cyclic": {
        "base_lr": (_lr, REQUIRED),
        "max_lr": (_lr, REQUIRED),
        "step_size": (_positive, REQUIRED),
        "mode": (_choice("triangular", "triangular2", "exp_range"), "triangular"),
        "gamma": (_gamma, 1.0),
    },
    "one_cycle": {
        "max_lr": (_lr, REQUIRED),
        "total_steps": (_int_at_least(2), REQUIRED),
        "pct_start": (_fraction, 0.3),
        "div_factor": (_positive_float, 25.0),
        "final_div_factor": (_positive_float, 1e4),
        "anneal": (_choice("cos", "linear"), "cos"),
        "three_phase": (_bool, False),
    },
    "warmup": {
        "steps": (_int_at_least(0), REQUIRED),
        "start_lr": (_lr, 0.0),
        "target": (_optional_lr, None),
        "then": (_passthrough, None),
    },
}

KINDS: tuple[str, ...] = tuple(_FIELDS)

_COMMON = {"start_step": (_int_at_least(0), 0), "end_step": (_int_at_least(0), None)}


def _check_piecewise(spec: dict) -> None:
    if len(spec["values"]) != len(spec["boundaries"]) + 1:
        raise ValueError(
            f"piecewise_constant: values must have one more element than boundaries, got "
            f"{len(spec['values'])} values {spec['values']!r} for {len(spec['boundaries'])} "
            f"boundaries {spec['boundaries']!r}"
        )


def _check_cyclic(spec: dict) -> None:
    if spec["max_lr"] < spec["base_lr"]:
        raise ValueError(f"cyclic: max_lr must be >= base_lr={spec['base_lr']!r}, got {spec['max_lr']!r}")
    if spec["gamma"] != 1.0 and spec["mode"] != "exp_range":
        raise ValueError(f"cyclic: gamma={spec['gamma']!r} only applies to mode 'exp_range', not {spec['mode']!r}")


def _check_one_cycle(spec: dict) -> None:
    ends = [0.0] + [
        end
        for end, _, _ in _one_cycle_phases(
            spec["max_lr"],
            spec["total_steps"],
            spec["pct_start"],
            spec["div_factor"],
            spec["final_div_factor"],
            spec["three_phase"],
        )
    ]
    if any(b <= a for a, b in zip(ends, ends[1:])):
        raise ValueError(
            f"one_cycle: pct_start={spec['pct_start']!r} with total_steps={spec['total_steps']!r}"
            f"{' and three_phase' if spec['three_phase'] else ''} leaves a phase of no steps "
            f"(phase ends at steps {ends[1:]!r})"
        )


def _check_warmup(spec: dict, depth: int) -> None:
    if spec["then"] is not None:
        spec["then"] = _validate(spec["then"], depth + 1)
    elif spec["target"] is None:
        raise ValueError("warmup: give a target, a then schedule, or both; got neither")


def validate_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Check a schedule spec and return it normalised: a new dict with every default filled in.

    Example::

        validate_spec({"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 300})
        # {'kind': 'step_decay', 'initial_learning_rate': 0.1, 'factor': 0.5, 'every_steps': 300, 'start_step': 0}

    Args:
        spec: mapping. ``{"kind": ..., <fields>...}`` (see the module docstring).

    Raises:
        ValueError: an unknown kind, a missing or unknown field, or a bad value; the
            message names the kind, the field and the value received.
    """
    return _validate(spec, 0)


def _validate(spec: Any, depth: int) -> dict[str, Any]:
    if depth > _MAX_NESTING:
        raise ValueError(f"schedule specs nest at most {_MAX_NESTING} deep")
    if not isinstance(spec, Mapping):
        raise ValueError(f"a schedule spec must be a dict with a 'kind', got {spec!r}")
    kind = spec.get("kind")
    if kind not in _FIELDS:
        raise ValueError(f"unknown schedule kind {kind!r}; known kinds: {', '.join(KINDS)}")
    fields = {**_FIELDS[kind], **_COMMON}
    unknown = sorted(set(spec) - set(fields) - {"kind"})
    if unknown:
        raise ValueError(f"{kind}: unknown field(s) {unknown}; known: {sorted(fields)}")
    out: dict[str, Any] = {"kind": kind}
    end_step = spec.get("end_step")
    fields.pop("end_step")  # optional, and absent from the normalised spec when not given
    if end_step is not None:
        out["end_step"] = _int_at_least(0)(kind, "end_step", end_step)
    for name, (check, default) in fields.items():
        if name in spec:
            out[name] = check(kind, name, spec[name])
        elif default is REQUIRED:
            raise ValueError(f"{kind}: missing field {name!r}")
        else:
            out[name] = default
    if kind == "piecewise_constant":
        _check_piecewise(out)
    elif kind == "cyclic":
        _check_cyclic(out)
    elif kind == "one_cycle":
        _check_one_cycle(out)
    elif kind == "warmup":
        _check_warmup(out, depth)
    if out.get("end_step") is not None and out["end_step"] <= out["start_step"]:
        raise ValueError(f"{kind}: end_step must be > start_step={out['start_step']!r}, got {out['end_step']!r}")
    return out


# ---------------------------------------------------------------------------
# Evaluation.

_FUNCTIONS: dict[str, Callable[..., float]] = {
    "exponential_decay": exponential_decay,
    "piecewise_constant": piecewise_constant,
    "step_decay": step_decay,
    "cosine_decay": cosine_decay,
    "cosine_restarts": cosine_restarts,
    "cyclic": cyclic,
    "one_cycle": one_cycle,
    "warmup": warmup,
}


def _compile(spec: dict[str, Any]) -> Callable[[int], float]:
    """A function of the global step for an already validated spec."""
    function = _FUNCTIONS[spec["kind"]]
    start_step = spec["start_step"]
    end_step = spec.get("end_step") or math.inf  # past it, the schedule holds its value there
    params = {k: v for k, v in spec.items() if k not in ("kind", "start_step", "end_step")}
    if spec["kind"] == "warmup" and params["then"] is not None:
        params["then"] = _compile(params["then"])

    def schedule(step: int) -> float:
        try:
            return float(function(max(min(step, end_step) - start_step, 0), **params))
        except OverflowError:  # a growing schedule (decay_rate > 1) past the float range
            return math.inf

    return schedule


class Schedule:
    """A validated spec as a callable of the global step: validate once, call every batch.

    Example::

        lr = Schedule({"kind": "exponential_decay", "initial_learning_rate": 0.1,
                       "decay_steps": 100, "decay_rate": 0.5, "start_step": 1000})
        lr(0), lr(1000), lr(1100)      # (0.1, 0.1, 0.05)
        lr.spec["staircase"]           # False (defaults are filled in)

    Args:
        spec: mapping. A schedule spec (see :func:`validate_spec`).
    """

    __slots__ = ("spec", "_function")

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = validate_spec(spec)
        self._function = _compile(self.spec)

    def __call__(self, step: int) -> float:
        """The LR for the update after ``step`` updates (an int, numpy ints included)."""
        return self._function(operator.index(step))

    def __repr__(self) -> str:
        return f"Schedule({self.spec!r})"


def evaluate(spec: Mapping[str, Any], step: int) -> float:
    """The LR of ``spec`` at global step ``step`` (validates the spec on every call).

    Example::

        evaluate({"kind": "warmup", "steps": 100, "target": 0.1}, 25)   # 0.025

    Args:
        spec: mapping. A schedule spec.
        step: int. The global optimizer step (``optimizer.iterations``).

    Raises:
        ValueError: the spec is invalid. TypeError: ``step`` is not an integer.
    """
    return Schedule(spec)(step)


# ---------------------------------------------------------------------------
# From Keras.

_FROM_KERAS = {
    "ExponentialDecay": ("exponential_decay", ("initial_learning_rate", "decay_steps", "decay_rate", "staircase")),
    "PiecewiseConstantDecay": ("piecewise_constant", ("boundaries", "values")),
    "CosineDecay": (
        "cosine_decay",
        ("initial_learning_rate", "decay_steps", "alpha", "warmup_target", "warmup_steps"),
    ),
    "CosineDecayRestarts": (
        "cosine_restarts",
        ("initial_learning_rate", "first_decay_steps", "t_mul", "m_mul", "alpha"),
    ),
}


def _plain(value: Any) -> Any:
    """numpy scalars and lists of them as Python numbers, without importing numpy."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if not isinstance(value, (bool, int, float, str)) and value is not None and hasattr(value, "item"):
        return value.item()
    return value


def from_keras(class_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The spec equal to a Keras LearningRateSchedule, from its class name and ``get_config()``.

    Example::

        s = keras.optimizers.schedules.CosineDecay(0.1, 1000)
        from_keras(type(s).__name__, s.get_config())
        # {'kind': 'cosine_decay', 'initial_learning_rate': 0.1, 'decay_steps': 1000, ...}

    Args:
        class_name: str. ``ExponentialDecay``, ``PiecewiseConstantDecay``, ``CosineDecay``
            or ``CosineDecayRestarts``.
        config: mapping. The schedule's ``get_config()`` (``name`` is dropped).

    Raises:
        ValueError: another class, or a config the spec cannot hold.
    """
    if class_name not in _FROM_KERAS:
        raise ValueError(f"no schedule kind for Keras's {class_name!r}; known: {', '.join(_FROM_KERAS)}")
    kind, names = _FROM_KERAS[class_name]
    return validate_spec({"kind": kind, **{n: _plain(config[n]) for n in names if n in config}})
