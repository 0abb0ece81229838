"""Find a learning rate with the LR range test (Smith 2017), inside the run, then go back and use it.

What a person does before a long run: train a few hundred steps while raising the LR
exponentially, watch where the loss falls fastest and where it blows up, pick an LR
from the curve, and start again from the same weights. The policy, on the first start
record:

1. asks for a checkpoint (``lr_find-<step>``) and asks the engine to keep it, and
   for a batch record every step (``Configure(batch_every=1, batch_min_interval=0)``);
2. once that checkpoint's record has arrived, sends an exponential ramp
   (``exponential_decay`` from ``min_lr`` with ``decay_rate = max_lr / min_lr`` over
   ``decay_steps = num_steps``: the LR grows by ``max_lr / min_lr`` over the test);
3. from the ramp's acknowledgement on, pairs each batch loss with the LR of that step's
   update and smooths the losses with fastai's bias-corrected EMA (``beta = 0.98``);
   the test ends after ``num_steps`` steps, or early once the smoothed loss is above
   ``stop_factor`` (4) times its best or not finite;
4. computes the suggestion (:func:`suggest`) and ends the test: ``ClearSchedule``, a
   ``Rollback`` to the checkpoint of step 1 with ``lr`` = the LR it picked, the batch
   cadence back as it was, and the checkpoint released (``Keep(())``).

If an epoch ends before the checkpoint arrives (the agent could not save one) the test
is called off: without a way back, the high end of the ramp would damage the weights.

While the test runs the policy is *probing* (``RunView.probing``): the engine
suppresses other policies' LR changes, schedules and rollbacks, and the divergence
policy does not react to the loss it blows up on purpose.

The LR it picks (``mode``):

- ``"always"``: the suggestion.
- ``"raise_only"``: the suggestion only when it is more than ``raise_threshold`` (10)
  times the optimizer's LR, else the LR the run had: a far too small LR is raised, a
  too high one is left to the divergence policy.
- ``"auto"`` (the default stack's): raise as ``raise_only`` does, and also *lower* the
  LR to the suggestion when the test shows the script's LR is clearly too high: it is
  more than ``lower_threshold`` (10) times the suggestion, or at or past the LR where
  the test saw the loss blow up (non-finite, or the smoothed loss above ``stop_factor``
  times its best). An LR within a decade either side of the suggestion is left alone.
  Why: a too high LR seldom shows as NaN. On digits, Adam at 0.1 to 10 and SGD at 0.3
  settle at the class prior (a loss near ln 10, finite), which the divergence policy
  only sees after epochs stuck there, and its cuts (x0.5 for Adam) then take several
  rounds to reach a usable LR; the range test has measured the curve already, and the
  suggestion is one rollback away.

Suggestions (pure functions below; ``suggestion`` picks one): ``"valley"`` (default),
``"steepest"``, ``"min_loss"``. They see fastai's window of the curve: the first
``num_steps // 10`` points and the last 5 are dropped (the start is noise, the end is
the blow-up). ``valley`` is the default, as it is fastai's since version 2.5: the
steepest point follows the noise of the smoothed curve (one lucky batch moves it by a
decade), and a tenth of the minimum's LR is a rule of thumb tied to where the curve
blows up; the valley is the middle of the longest stretch over which the loss keeps
falling, a point well inside the stable range where the loss falls steadily, and the
most stable of the three from one test to the next.

Optimizer-aware range (presets): SGD-family 1e-5 .. 10, Adam-family 1e-7 .. 1, when
``min_lr``/``max_lr`` are left unset.

Config example (lrsup.toml)::

    [[policy]]
    use = "lr_find"
    mode = "auto"            # or "raise_only", "always"
    num_steps = 100
    suggestion = "valley"    # or "steepest", "min_loss"
    # min_lr = 1e-7          # default: by optimizer family
    # max_lr = 1.0

Example (Python)::

    policy = LRFind(mode="always", num_steps=200)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field, model_validator

from lrsup.policies.actions import Action, ClearSchedule, Configure, Keep, Rollback, SaveCheckpoint, SetSchedule
from lrsup.policies.base import Policy, PolicySettings, RunView
from lrsup.policies.divergence import RunningMeanLoss
from lrsup.policies.presets import preset
from lrsup.supervisor.protocol.schedules import evaluate, validate_spec
from lrsup.supervisor.protocol.wire import AckRecord, BatchRecord, EpochRecord, StartRecord

SUGGESTIONS = ("valley", "steepest", "min_loss")


# -- the curve and the suggestions: pure functions ---------------------------------------


def smooth(losses: Sequence[float], beta: float = 0.98) -> list[float]:
    """fastai's smoothed loss: an EMA with bias correction, ``avg_i / (1 - beta**i)``.

    Example::

        smooth([1.0, 1.0, 1.0])   # about [1.0, 1.0, 1.0]: the correction removes the EMA's start-up bias

    Args:
        losses: sequence of float. The raw losses, in order.
        beta: float. The EMA's weight on the past, in [0, 1).
    """
    out, avg = [], 0.0
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def steepest(lrs: Sequence[float], losses: Sequence[float]) -> float | None:
    """The LR where the smoothed loss falls fastest against ``log(lr)`` (fastai's ``steep``).

    The slope between points ``i`` and ``i + 1`` is given to ``lrs[i]``.

    Example::

        steepest([1e-4, 1e-3, 1e-2, 1e-1], [2.0, 1.9, 1.0, 3.0])   # 0.001

    Args:
        lrs: sequence of float. Increasing LRs (> 0).
        losses: sequence of float. The smoothed loss at each.
    """
    if len(lrs) < 2:
        return None
    slopes = {
        i: (losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i]))
        for i in range(len(lrs) - 1)
        if lrs[i + 1] != lrs[i]  # no slope between two points at one LR
    }
    return lrs[min(slopes, key=slopes.__getitem__)] if slopes else None


def min_loss(lrs: Sequence[float], losses: Sequence[float]) -> float | None:
    """A tenth of the LR at the smoothed loss's minimum (fastai's ``minimum``).

    Example::

        min_loss([1e-3, 1e-2, 1e-1], [2.0, 1.0, 4.0])   # 0.001

    Args:
        lrs: sequence of float. Increasing LRs.
        losses: sequence of float. The smoothed loss at each.
    """
    if not lrs:
        return None
    return lrs[min(range(len(losses)), key=losses.__getitem__)] / 10


def valley(lrs: Sequence[float], losses: Sequence[float]) -> float | None:
    """fastai's ``valley``: an LR inside the longest stretch over which the loss keeps falling.

    The longest strictly decreasing subsequence of ``losses`` is found (``O(n^2)``);
    with ``L`` its length and ``end`` its last index, the point taken is
    ``start + int(L / 3) + int(L / 6)`` with ``start = end - L``, fastai's arithmetic
    (about the middle of the valley; clamped to the curve).

    Example::

        lrs = [10 ** (-6 + i / 2) for i in range(12)]       # 1e-6 .. 0.316
        losses = [3.0, 3.0, 2.9, 2.7, 2.4, 2.0, 1.6, 1.2, 0.9, 0.8, 1.5, 6.0]
        valley(lrs, losses)                                  # 1e-4 (index 4 of a valley 0..9)

    Args:
        lrs: sequence of float. Increasing LRs.
        losses: sequence of float. The smoothed loss at each.
    """
    n = len(losses)
    if n == 0:
        return None
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    index = max_start + int(sections) + int(sections / 2)
    return lrs[min(max(index, 0), n - 1)]


_FUNCTIONS = {"valley": valley, "steepest": steepest, "min_loss": min_loss}


def suggest(
    lrs: Sequence[float], losses: Sequence[float], method: str = "valley", num_steps: int | None = None
) -> float | None:
    """The suggested LR of a range test, on fastai's window of the curve; None when too short.

    The first ``num_steps // 10`` points (``len(lrs) // 10`` when None) and the last 5
    are dropped, then the curve is cut at its first non-finite loss; fewer than 3 points
    left gives None.

    Example::

        suggest(lrs, smooth(raw_losses), "valley", num_steps=100)

    Args:
        lrs: sequence of float. Increasing LRs (> 0).
        losses: sequence of float. The smoothed loss at each.
        method: str. ``"valley"``, ``"steepest"`` or ``"min_loss"``.
        num_steps: int or None. The planned length of the test.
    """
    if method not in _FUNCTIONS:
        raise ValueError(f"method must be one of {SUGGESTIONS}; got method={method!r}")
    skip = (num_steps if num_steps is not None else len(lrs)) // 10
    lrs, losses = list(lrs[skip:-5]), list(losses[skip:-5])
    for i, loss in enumerate(losses):
        if not math.isfinite(loss):
            lrs, losses = lrs[:i], losses[:i]
            break
    if len(lrs) < 3:
        return None
    return _FUNCTIONS[method](lrs, losses)


# -- the policy ----------------------------------------------------------------------------


class LRFindSettings(PolicySettings):
    """Settings of :class:`LRFind`.

    Args:
        mode: str. ``"always"`` takes the suggestion; ``"raise_only"`` only when it is
            more than ``raise_threshold`` times the LR the run had; ``"auto"`` also when
            the run's LR is more than ``lower_threshold`` times the suggestion or at or
            past the LR where the test's loss blew up. Default ``"always"``.
        raise_threshold: float. See ``mode`` (> 1). Default 10.0.
        lower_threshold: float. See ``mode`` (> 1). Default 10.0.
        min_lr: float or None. The ramp's start (> 0); None: by optimizer family.
        max_lr: float or None. The ramp's end (> min_lr); None: by optimizer family.
        num_steps: int. Steps of the ramp (>= 20). Default 100.
        max_share: float. At most this share of the run's steps (``epochs`` times
            ``steps_per_epoch`` from the start record, when known) goes to the ramp, and
            never fewer than 20 steps: on a run of a few hundred steps a 100-step test
            would eat half the budget (in (0, 1]). Default 0.25.
        beta: float. The loss EMA's weight on the past, in [0, 1). Default 0.98.
        stop_factor: float. End early once the smoothed loss is above this times its
            best (> 1). Default 4.0.
        suggestion: str. ``"valley"``, ``"steepest"`` or ``"min_loss"``. Default ``"valley"``.
    """

    mode: Literal["always", "raise_only", "auto"] = "always"
    raise_threshold: float = Field(10.0, strict=True, gt=1, allow_inf_nan=False)
    lower_threshold: float = Field(10.0, strict=True, gt=1, allow_inf_nan=False)
    min_lr: float | None = Field(None, strict=True, gt=0, allow_inf_nan=False)
    max_lr: float | None = Field(None, strict=True, gt=0, allow_inf_nan=False)
    num_steps: int = Field(100, strict=True, ge=20)
    max_share: float = Field(0.25, strict=True, gt=0, le=1)
    beta: float = Field(0.98, strict=True, ge=0, lt=1)
    stop_factor: float = Field(4.0, strict=True, gt=1, allow_inf_nan=False)
    suggestion: Literal["valley", "steepest", "min_loss"] = "valley"

    @model_validator(mode="after")
    def _range(self) -> "LRFindSettings":
        if self.min_lr is not None and self.max_lr is not None and not self.min_lr < self.max_lr:
            raise ValueError(f"min_lr must be below max_lr; got min_lr={self.min_lr!r} and max_lr={self.max_lr!r}")
        return self


def _g(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.4g}"


class LRFind(Policy):
    """The LR range test at the start of the run, then a rollback to its start with the LR it found.

    Example::

        engine = Engine([Divergence(), LRFind(mode="auto"), Plateau(factor=0.5, patience=3)])

    Args:
        settings: LRFindSettings, or the same fields as keyword arguments.
    """

    name: ClassVar[str] = "lr_find"
    lr_role: ClassVar[str] = "tunes"
    Settings: ClassVar[type[PolicySettings]] = LRFindSettings
    settings: LRFindSettings

    # Phases: idle -> ramp (checkpoint and ramp sent together at the start; waiting for the
    # ramp's ack) -> test -> done. "checkpoint" (waiting for the checkpoint before ramping)
    # is only met in the state of a supervisor from before the ramp went out at the start.
    # A resumed supervisor goes on where it was.
    def reset(self) -> None:
        self.phase = "idle"
        self.checkpoint: str | None = None
        self.batch_every: int | None = None  # the cadence before the test, restored after it
        self.batch_min_interval: float | None = None
        self.lr: float | None = None
        self.ramp: dict | None = None
        self.test_start: int | None = None
        self.lrs: list[float] = []
        self.raw: list[float] = []
        self.smoothed: list[float] = []
        self.avg = 0.0
        self.losses = RunningMeanLoss()
        self.result: dict[str, Any] | None = None
        self.steps = self.settings.num_steps  # the ramp's length for this run (see max_share)

    @property
    def probing(self) -> bool:
        return self.phase in ("ramp", "test")

    def on_start(self, record: StartRecord, run: RunView) -> Sequence[Action]:
        if self.phase != "idle":
            return ()  # once per run: a later fit keeps the LR found
        self.phase = "checkpoint"
        self.steps = self._ramp_steps(record, run)
        self.checkpoint = f"lr_find-{record.step}"
        self.batch_every = run.batch_every
        self.batch_min_interval = run.batch_min_interval
        self.lr = record.lr if record.lr is not None else run.lr
        actions: list[Action] = [
            SaveCheckpoint(name=self.checkpoint, reason="LR range test: the weights to come back to"),
            Keep(checkpoints=(self.checkpoint,), reason="LR range test: keep the weights to come back to"),
        ]
        every_step: dict[str, Any] = {"batch_every": 1} if run.batch_every != 1 else {}
        if run.batch_min_interval != 0:  # None (not known) included
            every_step["batch_min_interval"] = 0.0
        if every_step:
            actions.append(Configure(**every_step, reason="LR range test: a batch record every step"))
        # The ramp goes out with the checkpoint, inside the start barrier: the trainer saves the
        # checkpoint first (commands apply in order), and the very first step already runs at
        # the ramp's LR. Waiting for the checkpoint's record would let the script's own LR train
        # (and, when it is far too high, wreck) the first steps the test measures.
        actions.extend(self._start_ramp(record.step, run))
        return actions

    def on_ack(self, record: AckRecord, run: RunView) -> Sequence[Action]:
        if self.phase == "ramp" and record.cmd == "set_schedule":
            self.phase = "test"
            self.test_start = record.step
        return ()

    def on_batch(self, record: BatchRecord, run: RunView) -> Sequence[Action]:
        if self.phase not in ("checkpoint", "ramp", "test"):
            return ()
        loss = self.losses.interval(record)  # followed from the start, so that every interval is right
        if self.phase in ("ramp", "test") and run.schedule != self.ramp:
            return self._call_off("its ramp is not in force (the engine suppressed it or the trainer refused it)", run)
        if self.phase == "checkpoint":
            if any(c.name == self.checkpoint for c in run.checkpoints):
                return self._start_ramp(record.step, run)
            return ()
        ramp, test_start = self.ramp, self.test_start  # both set once the phase is "test"
        if self.phase != "test" or loss is None or ramp is None or test_start is None or record.step <= test_start:
            return ()
        s = self.settings
        lr = evaluate(ramp, record.step - 1)  # the LR of update `step` (schedule(step) is the next one's)
        if not math.isfinite(loss):
            return self._finish(f"the loss became {loss} at LR {lr:.3g} (step {record.step})", run, blow_up=lr)
        self.lrs.append(lr)
        self.raw.append(loss)
        self.avg = s.beta * self.avg + (1 - s.beta) * loss
        self.smoothed.append(self.avg / (1 - s.beta ** len(self.raw)))
        current, best = self.smoothed[-1], min(self.smoothed)
        if len(self.smoothed) > 1 and current > s.stop_factor * best:
            return self._finish(
                f"the smoothed loss {current:.4g} passed {s.stop_factor:g} x its best {best:.4g} at LR {lr:.3g}",
                run,
                blow_up=lr,
            )
        if record.step - 1 >= ramp["end_step"]:  # the ramp is at its top (a late ack means fewer points)
            return self._finish(f"the ramp reached LR {lr:.3g} after {self.steps} steps", run)
        return ()

    def on_epoch(self, record: EpochRecord, run: RunView) -> Sequence[Action]:
        if self.phase in ("ramp", "test") and run.schedule != self.ramp:
            return self._call_off("its ramp is not in force (the engine suppressed it or the trainer refused it)", run)
        if self.phase != "checkpoint" or any(c.name == self.checkpoint for c in run.checkpoints):
            return ()
        return self._call_off(
            f"epoch {record.epoch + 1} ended before the checkpoint {self.checkpoint} was saved, "
            "and without it the test's high LRs could not be undone",
            run,
        )

    def _call_off(self, why: str, run: RunView) -> Sequence[Action]:
        """End the test without a suggestion; back to the checkpoint if the ramp may have run."""
        ramped = self.phase == "test"
        self.phase = "done"
        self.result = {"suggestion": None, "lr": None, "why": why, "points": len(self.lrs)}
        reason = f"LR range test called off: {why}"
        actions: list[Action] = []
        if ramped:
            actions.append(self._back(run, lr=None, reason=f"{reason}; back to its start"))
        actions.extend(self._cadence_back(reason))
        actions.append(Keep(checkpoints=(), reason=reason))
        return actions

    def _cadence_back(self, reason: str) -> list[Action]:
        """The Configure that puts the batch-record cadence back as it was before the test (if it changed)."""
        back: dict[str, Any] = {}
        if self.batch_every is not None and self.batch_every != 1:
            back["batch_every"] = self.batch_every
        if self.batch_min_interval:
            back["batch_min_interval"] = self.batch_min_interval
        return [Configure(**back, reason=reason)] if back else []

    def _back(self, run: RunView, *, lr: float | None, reason: str) -> Rollback:
        """Back to the test's checkpoint; if it was never saved (a full disk), to the newest
        good checkpoint from before the ramp (the engine falls back to the start one)."""
        if any(c.name == self.checkpoint for c in run.checkpoints) or self.ramp is None:
            return Rollback(checkpoint=self.checkpoint, lr=lr, reason=reason)
        return Rollback(before_step=self.ramp["start_step"], lr=lr, reason=reason)

    def _ramp_steps(self, record: StartRecord, run: RunView) -> int:
        """``num_steps``, cut to ``max_share`` of the run's steps when the start record tells them."""
        s = self.settings
        epochs = record.epochs if record.epochs is not None else run.epochs
        per_epoch = record.steps_per_epoch if record.steps_per_epoch is not None else run.steps_per_epoch
        if not epochs or not per_epoch:
            return s.num_steps
        total = (epochs - (record.initial_epoch or 0)) * per_epoch
        return max(20, min(s.num_steps, int(total * s.max_share)))

    def _start_ramp(self, step: int, run: RunView) -> Sequence[Action]:
        s = self.settings
        low, high = preset(run.optimizer).range
        min_lr = s.min_lr if s.min_lr is not None else low
        max_lr = s.max_lr if s.max_lr is not None else high
        if max_lr <= min_lr:  # a min_lr set above the family's max_lr: keep the family's span
            max_lr = min_lr * high / low
        self.ramp = validate_spec(
            {
                "kind": "exponential_decay",
                "initial_learning_rate": min_lr,
                "decay_steps": self.steps,
                "decay_rate": max_lr / min_lr,
                "start_step": step,
                "end_step": step + self.steps,
            }
        )
        self.phase = "ramp"
        reason = (
            f"LR range test: LR from {min_lr:.3g} to {max_lr:.3g} exponentially over {self.steps} steps "
            f"({run.optimizer or 'optimizer'} range), from step {step}"
        )
        return [SetSchedule(schedule=self.ramp, reason=reason)]

    def _finish(self, why: str, run: RunView, blow_up: float | None = None) -> Sequence[Action]:
        """End the test with a suggestion; ``blow_up`` is the LR at which the loss blew up, if it did."""
        s = self.settings
        suggestion = suggest(self.lrs, self.smoothed, s.suggestion, self.steps)
        lr, verdict = self._choose(suggestion, blow_up)
        self.phase = "done"
        self.result = {"suggestion": suggestion, "lr": lr, "why": why, "points": len(self.lrs), "blow_up": blow_up}
        text = f"LR range test over {len(self.lrs)} steps ended: {why}; {verdict}"
        actions: list[Action] = [
            ClearSchedule(reason="LR range test over: its ramp ends"),
            self._back(run, lr=lr, reason=text),
        ]
        actions.extend(self._cadence_back("LR range test over: batch records as before"))
        actions.append(Keep(checkpoints=(), reason="LR range test over: its checkpoint may go"))
        return actions

    def _choose(self, suggestion: float | None, blow_up: float | None = None) -> tuple[float | None, str]:
        """(the LR to roll back with, None for the run's own; a sentence saying why)."""
        s = self.settings
        if suggestion is None:
            return None, f"too few points for a suggestion: back to the start at the run's LR {_g(self.lr)}"
        found = f"{s.suggestion} suggests {suggestion:.3g}"
        back = f"back to the start with LR {suggestion:.3g}"
        if s.mode == "always":
            return suggestion, f"{found}: {back}"
        if self.lr is None or suggestion > s.raise_threshold * self.lr:
            return suggestion, f"{found}, more than {s.raise_threshold:g} x the run's LR {_g(self.lr)}: {back}"
        if s.mode == "auto":
            if self.lr > s.lower_threshold * suggestion:
                return suggestion, (
                    f"{found}; the run's LR {_g(self.lr)} is more than {s.lower_threshold:g} x that: {back}"
                )
            if blow_up is not None and self.lr >= blow_up:
                return suggestion, (
                    f"{found}; the run's LR {_g(self.lr)} is at or past LR {blow_up:.3g}, where "
                    f"the loss blew up: {back}"
                )
            return None, (
                f"{found}; the run's LR {_g(self.lr)} is neither more than {s.raise_threshold:g} x below "
                f"it nor more than {s.lower_threshold:g} x above it: back to the start at the run's LR"
            )
        return None, (
            f"{found}, not more than {s.raise_threshold:g} x the run's LR {_g(self.lr)}: back to the start "
            f"at the run's LR"
        )

    _STATE = (
        "phase",
        "checkpoint",
        "batch_every",
        "batch_min_interval",
        "lr",
        "ramp",
        "test_start",
        "lrs",
        "raw",
        "avg",
        "result",
        "steps",
    )

    def state_dict(self) -> dict[str, Any]:
        state = {key: getattr(self, key) for key in self._STATE}
        state["losses"] = self.losses.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # saved before max_share: the full length; before batch_min_interval: none to restore
        state = {"steps": self.settings.num_steps, "batch_min_interval": None, **state}
        expected = {*self._STATE, "losses"}
        if set(state) != expected:
            raise ValueError(f"policy 'lr_find' state must have keys {sorted(expected)}; got {sorted(state)}")
        if state["phase"] not in ("idle", "checkpoint", "ramp", "test", "done"):
            raise ValueError(f"policy 'lr_find' state: unknown phase {state['phase']!r}")
        for key in self._STATE:
            setattr(self, key, state[key])
        self.lrs, self.raw = list(self.lrs), list(self.raw)
        self.smoothed = smooth(self.raw, self.settings.beta)
        self.avg = float(self.avg)
        self.losses.load_state_dict(state["losses"])


__all__ = ["LRFind", "LRFindSettings", "min_loss", "smooth", "steepest", "suggest", "valley"]
