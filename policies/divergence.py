"""Rescue a diverged run: roll back to a known-good checkpoint with a lower LR, give up past a cap.

What a person watching the loss does when it blows up: go back to a checkpoint from
before the trouble, lower the LR, carry on; and after a few failed tries, stop and
look at the data. PaLM (Chowdhery et al. 2022, sec. 5.1) restarted from a checkpoint
about 100 steps before each loss spike and skipped 200 to 500 batches; BigScience's
logbooks record halving the LR after a divergence; OPT-175B's logbook records many
restarts from earlier checkpoints with a lower LR. This policy detects four kinds of
trouble:

(a) **Non-finite loss**: ``loss`` NaN or infinite in a batch record, or ``loss`` or
    ``val_loss`` in an epoch record.
(b) **Loss spike**: a batch loss above ``median + max(k * MAD, rel_floor * |median|)``
    of the last ``window`` normal batch losses, for ``spike_patience`` records in a row,
    once ``min_history`` are known. The median and the MAD (median absolute deviation)
    are robust: a spike does not move them, and the spikes are kept out of the window.
    ``k = 6`` MADs is about 4 standard deviations of Gaussian noise (MAD ~ 0.67 sd), a
    false alarm in about 1 in 30,000 records before the ``spike_patience`` filter; the
    ``rel_floor`` of 50% keeps a late, very flat loss (tiny MAD) from alarming on a
    wobble; 20 records of history (200 batches at the default cadence; at least 2 s of
    training for steps under 10 ms) is enough for a stable median; two records in a row tell
    a spike that does not heal from a noisy batch.
(c) **Collapse** (for positive losses, e.g. cross-entropy): with ``L0`` the untrained
    level (``untrained_loss``, e.g. ``ln(10) = 2.303`` for 10 balanced classes; by
    default the first batch loss of the fit, or its first epoch loss without batch
    records), an epoch loss is *near L0* when it is at least ``(1 - collapse_tol) * L0``.
    Two forms: the run **collapsed** when, after some epoch loss went below
    ``(1 - collapse_drop) * L0`` (it learned), ``collapse_patience`` epochs in a row are
    near L0 again (typically dead units after a too-high LR); the run is **stuck** when
    its first ``stuck_epochs`` epochs since the start (or the last rollback) were all
    within ``stuck_tol`` of L0 (a wider band: a network that collapsed to predicting the
    class prior sits at ln C, below the loss of its fresh initialisation, e.g. 2.30 against
    2.67 for a small MLP on digits) while the LR is at least ``stuck_min_lr`` (by default the optimizer family's
    "high" LR, see lrsup.policies.presets): a run that never learned at a high LR is
    rolled back to the start with a cut. A stuck run at a modest LR is not this
    policy's business (lr_find's raise_only and auto modes handle "far too slow"; in the
    default stack, auto also lowers an LR far above its suggestion before the run is stuck).
(d) **val_loss explosion**: ``val_loss > val_factor * best val_loss`` of the fit.

The act: ``Rollback(before_step=<the step trouble started>, lr_factor=cut ** n)``: the
engine takes the newest known-good checkpoint at or before that step (a start
checkpoint if none is good yet), and restores it with its LR times the factor. ``cut``
is optimizer-aware (0.1 for SGD, 0.5 for Adam-family; see presets). ``n`` is 1 for the
first rollback to a checkpoint; a cut that was not enough is compounded: a later
rollback to that same checkpoint takes ``n + 1`` when the run *recovered* in between
(some batch or epoch loss went below ``(1 - collapse_drop) * L0`` after the previous
rollback), and ``2 * n + 1`` when it did not (``escalate``, on by default): each
unrecovered repeat squares the step, ``cut``, then ``cut ** 2``, then ``cut ** 4`` below
the LR before it (exponents 1, 3, 7). Why: a run that stays at its untrained loss after
a rollback (Adam at LR 1 on digits sits at the class prior) was not helped by the cut
at all; halving again every three epochs (1, 0.5, 0.25, 0.125: the stuck check's pace)
ends a 15-epoch run before it reaches a usable LR, where the escalation gets to 0.125
at the second rollback and 0.008 at the third. A run that learned and then spiked again
keeps the gentle compounding. A new good checkpoint
(taken at the already cut LR) starts again at one cut. ``skip_batches`` defaults to 0: the agent does not rewind the data
iterator, so training after a rollback sees new batches anyway (PaLM's skipping
mattered because its data order was deterministic).

The step trouble started at: for a batch-level trouble, the step of the last normal
batch record before it; for an epoch-level one, the step of the last healthy epoch
record; for a collapse, the last epoch that was still far below L0; for a stuck run,
the start of the fit.

Batch losses: Keras 3 batch logs hold the *running mean* of the epoch so far, so a
spike in one batch moves them by ``spike / n``. With ``batch_logs = "running_mean"``
(the default) the policy recovers the mean loss of the batches between two records of
one epoch, ``(n_b * m_b - n_a * m_a) / (n_b - n_a)`` where ``n = batch + 1`` (after a
rollback the agent resets the metrics, and ``n`` counts from the rollback's step). Use
``"per_batch"`` with a trainer whose batch logs are per-batch values.

Limits: at most ``max_rollbacks`` (default 5) rollbacks decided within any
``rollback_window`` (default 10) epochs; the next trouble gives up: a
``Stop(give_up=True)`` (``lrsup run`` exits with status 3) whose reason holds the
diagnosis. With no checkpoint to roll back to, it gives up at once (the engine
suppresses the Rollback, which is still journaled, and sends the Stop). While another
policy is probing (an LR range test, which blows the loss up on purpose), this one
only follows the running means.

Config example (lrsup.toml)::

    [[policy]]
    use = "divergence"
    window = 50            # batch records in the spike detector's window
    k = 6.0                # MADs above the median that make a spike
    max_rollbacks = 5      # within rollback_window epochs, then give up
    untrained_loss = 2.303 # ln(10): a 10-class classifier's loss before training
    # cut = 0.5            # default: 0.1 for SGD, 0.5 for Adam and the like

Example (Python)::

    policy = Divergence(window=50, k=6.0, max_rollbacks=3)
"""

from __future__ import annotations

import bisect
import math
import statistics
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field, field_validator, model_validator

from lrsup.policies.actions import Action, Rollback, Stop
from lrsup.policies.base import Policy, PolicySettings, RunView, pick_checkpoint
from lrsup.policies.presets import preset
from lrsup.supervisor.protocol.wire import AckRecord, BatchRecord, EpochRecord, StartRecord


class RunningMeanLoss:
    """Turns Keras 3 batch logs (the epoch's running mean) into the mean loss of each stretch between records.

    Example::

        tracker = RunningMeanLoss()
        tracker.interval(BatchRecord(epoch=0, batch=9, step=10, logs={"loss": 2.0}))    # 2.0
        tracker.interval(BatchRecord(epoch=0, batch=19, step=20, logs={"loss": 1.5}))   # 1.0

    Args:
        per_batch: bool. The logs are per-batch values already: passed through.
    """

    def __init__(self, per_batch: bool = False) -> None:
        self.per_batch = per_batch
        self.reset()

    def reset(self) -> None:
        self.epoch: int | None = None
        self.count = 0
        self.total = 0.0
        self.restart: list[int] | None = None  # [epoch, step] of the last rollback's metric reset

    def restarted(self, epoch: int | None, step: int) -> None:
        """The agent reset the metrics at ``step`` of ``epoch`` (a rollback): means count from there."""
        self.restart = None if epoch is None else [epoch, step]
        self.epoch, self.count, self.total = epoch, 0, 0.0

    def interval(self, record: BatchRecord) -> float | None:
        """The mean loss of the batches since the previous record (None: no loss in the logs)."""
        mean = record.logs.get("loss")
        if mean is None:
            return None
        mean = float(mean)
        if self.per_batch:
            return mean
        if self.restart is not None and self.restart[0] == record.epoch:
            count = record.step - self.restart[1]
        else:
            count = record.batch + 1
        if record.epoch != self.epoch or count <= self.count:
            self.epoch, self.count, self.total = record.epoch, 0, 0.0  # a new epoch: metrics were reset
        total = mean * count
        value = (total - self.total) / (count - self.count) if count > self.count else mean
        self.count, self.total = count, total
        return value

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "count": self.count, "total": self.total, "restart": self.restart}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.count = state["epoch"], int(state["count"])
        self.total, self.restart = float(state["total"]), state["restart"]


class DivergenceSettings(PolicySettings):
    """Settings of :class:`Divergence` (see the module docstring for the rationale of the defaults).

    Args:
        window: int. Normal batch losses kept for the spike detector (>= 5). Default 50.
        k: float. Spike threshold in MADs above the median (> 0). Default 6.0.
        min_history: int. Batch losses needed before spikes are looked for (3..window). Default 20.
        rel_floor: float. The threshold is at least ``median + rel_floor * |median|`` (>= 0). Default 0.5.
        spike_patience: int. Spiky records in a row that make a spike (>= 1). Default 2.
        batch_logs: str. ``"running_mean"`` (Keras 3) or ``"per_batch"``.
        val_factor: float or None. val_loss above this times its best is an explosion
            (> 1); None turns the check off. Default 5.0.
        untrained_loss: float or None. The loss before training (> 0); None: the first recorded.
        collapse_tol: float. "Near the untrained level" is within this fraction of it,
            in (0, 1). Default 0.1.
        collapse_drop: float. "Learned" is below ``(1 - collapse_drop) * L0``, in
            (collapse_tol, 1). Default 0.5.
        collapse_patience: int. Epochs near L0 after having learned that make a collapse
            (>= 1). Default 2.
        stuck_epochs: int. Epochs near L0 from the start, at a high LR, that make a stuck
            run (0: off). Default 3.
        stuck_tol: float. For the stuck check, "near L0" is within this fraction of it,
            in [collapse_tol, collapse_drop). Default 0.2.
        stuck_min_lr: float or None. A "high" LR for the stuck check; None: the optimizer
            family's (presets). Default None.
        cut: float or None. The LR factor of a rollback, in (0, 1); None: the optimizer
            family's (0.1 SGD, 0.5 Adam-family). Default None.
        skip_batches: int. Batches the agent skips after a rollback (>= 0). Default 0.
        escalate: bool. A rollback to the checkpoint of the previous one, with no loss below
            ``(1 - collapse_drop) * L0`` in between, takes the cut's exponent from ``n`` to
            ``2 * n + 1`` instead of ``n + 1``. Default True.
        max_rollbacks: int. Rollbacks allowed within ``rollback_window`` epochs (>= 0). Default 5.
        rollback_window: int. The window of the cap, in epochs (>= 1). Default 10.
    """

    window: int = Field(50, strict=True, ge=5)
    k: float = Field(6.0, strict=True, gt=0, allow_inf_nan=False)
    min_history: int = Field(20, strict=True, ge=3)
    rel_floor: float = Field(0.5, strict=True, ge=0, allow_inf_nan=False)
    spike_patience: int = Field(2, strict=True, ge=1)
    batch_logs: Literal["running_mean", "per_batch"] = "running_mean"
    val_factor: float | None = Field(5.0, strict=True, allow_inf_nan=False)
    untrained_loss: float | None = Field(None, strict=True, gt=0, allow_inf_nan=False)
    collapse_tol: float = Field(0.1, strict=True, gt=0, lt=1)
    collapse_drop: float = Field(0.5, strict=True, gt=0, lt=1)
    collapse_patience: int = Field(2, strict=True, ge=1)
    stuck_epochs: int = Field(3, strict=True, ge=0)
    stuck_tol: float = Field(0.2, strict=True, gt=0, lt=1)
    stuck_min_lr: float | None = Field(None, strict=True, ge=0, allow_inf_nan=False)
    cut: float | None = Field(None, strict=True)
    skip_batches: int = Field(0, strict=True, ge=0)
    escalate: bool = Field(True, strict=True)
    max_rollbacks: int = Field(5, strict=True, ge=0)
    rollback_window: int = Field(10, strict=True, ge=1)

    @field_validator("cut")
    @classmethod
    def _check_cut(cls, cut: float | None) -> float | None:
        if cut is not None and not 0.0 < cut < 1.0:
            raise ValueError(f"cut must be in (0, 1); got cut={cut!r}")
        return cut

    @field_validator("val_factor")
    @classmethod
    def _check_val_factor(cls, val_factor: float | None) -> float | None:
        if val_factor is not None and not val_factor > 1.0:
            raise ValueError(f"val_factor must be > 1 (or None to turn the check off); got val_factor={val_factor!r}")
        return val_factor

    @model_validator(mode="after")
    def _consistent(self) -> "DivergenceSettings":
        if self.min_history > self.window:
            raise ValueError(
                f"min_history must be <= window; got min_history={self.min_history!r} and window={self.window!r}"
            )
        if self.collapse_drop <= self.collapse_tol:
            raise ValueError(
                f"collapse_drop must be > collapse_tol (learned is below the near-untrained band); got "
                f"collapse_drop={self.collapse_drop!r} and collapse_tol={self.collapse_tol!r}"
            )
        if not self.collapse_tol <= self.stuck_tol < self.collapse_drop:
            raise ValueError(
                f"stuck_tol must be in [collapse_tol, collapse_drop); got stuck_tol={self.stuck_tol!r} with "
                f"collapse_tol={self.collapse_tol!r} and collapse_drop={self.collapse_drop!r}"
            )
        return self


def _median_of_sorted(values: list[float]) -> float:
    """``statistics.median`` of an already sorted list."""
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2


def _g(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.4g}"


class Divergence(Policy):
    """Roll back to a known-good checkpoint with a cut LR on NaN, spikes, collapse or val_loss explosion.

    Example::

        engine = Engine([Divergence(max_rollbacks=3), Plateau(patience=3)])

    Args:
        settings: DivergenceSettings, or the same fields as keyword arguments.
    """

    name: ClassVar[str] = "divergence"
    lr_role: ClassVar[str] = "rescues"
    Settings: ClassVar[type[PolicySettings]] = DivergenceSettings
    settings: DivergenceSettings

    def reset(self) -> None:
        """Forget everything about the run (each fit starts afresh, as Keras callbacks do)."""
        self.losses = RunningMeanLoss(per_batch=self.settings.batch_logs == "per_batch")
        self.history: list[list[float]] = []  # [step, loss] of normal batch intervals, oldest first
        self._sorted: list[float] = []  # the same losses, sorted: the median without a sort per record
        self.spiky = 0  # spiky records in a row
        self.spike_from: int | None = None  # last normal step before the current spiky stretch
        self.last_good_step: int | None = None  # last normal batch or healthy epoch
        self.last_good_epoch_step: int | None = None
        self.start_step = 0
        self.untrained: float | None = self.settings.untrained_loss
        self.learned_step: int | None = None  # last epoch far below the untrained level
        self.near = 0  # epochs in a row near the untrained level, after having learned
        self.stuck = 0  # epochs near the untrained level since the start or the last rollback
        self.best_val: float | None = None
        self.rollbacks: list[list[Any]] = []  # [epoch, checkpoint name, checkpoint step, cut exponent]
        self.recovered = True  # a loss below the "learned" level since the last rollback (or none yet)
        self.gave_up = False

    # -- hooks ---------------------------------------------------------------------------

    def on_start(self, record: StartRecord, run: RunView) -> Sequence[Action]:
        self.reset()
        self.start_step = record.step
        return ()

    def on_ack(self, record: AckRecord, run: RunView) -> Sequence[Action]:
        if record.cmd != "rollback":
            return ()
        # The run is back at record.step: what came after it never happened.
        self.losses.restarted(record.epoch, record.step)
        self.history = [h for h in self.history if h[0] <= record.step]
        self._sorted = sorted(h[1] for h in self.history)
        self.spiky, self.spike_from = 0, None
        if self.last_good_step is not None:
            self.last_good_step = min(self.last_good_step, record.step)
        if self.last_good_epoch_step is not None:
            self.last_good_epoch_step = min(self.last_good_epoch_step, record.step)
        if self.learned_step is not None:
            self.learned_step = min(self.learned_step, record.step)
        self.near, self.stuck = 0, 0
        return ()

    def on_batch(self, record: BatchRecord, run: RunView) -> Sequence[Action]:
        loss = self.losses.interval(record)
        if loss is not None and self.untrained is None and math.isfinite(loss) and loss > 0:
            # The first loss seen, also while another policy probes: an LR range test starts
            # its ramp tiny, so its first records measure the untrained weights best.
            self.untrained = loss
        if loss is None or self.gave_up or run.probing is not None:
            return ()
        s = self.settings
        if self._learned(loss):
            self.recovered = True
        if not math.isfinite(loss):
            before = self._before(self.last_good_step)
            return self._trouble(
                f"loss is {loss} at step {record.step} (epoch {record.epoch + 1})", before, record.epoch, run
            )
        if len(self.history) >= s.min_history and loss > (median := _median_of_sorted(self._sorted)):
            # threshold = max(floor, median + k * MAD): below the floor no MAD is needed, which
            # spares the second median on nearly every record (the supervisor's hot path).
            floor = median + s.rel_floor * abs(median)
            mad = statistics.median(abs(v - median) for v in self._sorted) if loss > floor else 0.0
            threshold = max(floor, median + s.k * mad)
            if loss > threshold:
                if self.spiky == 0:
                    self.spike_from = self.last_good_step
                self.spiky += 1
                if self.spiky < s.spike_patience:
                    return ()
                why = (
                    f"loss spike: batch loss {loss:.4g} at step {record.step} (epoch {record.epoch + 1}) is above "
                    f"{threshold:.4g} = median {median:.4g} + max({s.k:g} x MAD {mad:.3g}, {s.rel_floor:g} x "
                    f"|median|) of the last {len(self.history)} batch losses, for {self.spiky} records in a row"
                )
                return self._trouble(why, self._before(self.spike_from), record.epoch, run)
        self.spiky, self.spike_from = 0, None
        self.history.append([record.step, loss])
        bisect.insort(self._sorted, loss)
        if len(self.history) > s.window:
            oldest = self.history.pop(0)[1]
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self.last_good_step = record.step
        return ()

    def on_epoch(self, record: EpochRecord, run: RunView) -> Sequence[Action]:
        if self.gave_up or run.probing is not None:
            return ()
        s = self.settings
        logs = record.logs
        where = f"epoch {record.epoch + 1} (step {record.step})"
        bad = [k for k in ("loss", "val_loss") if k in logs and not math.isfinite(logs[k])]
        if bad:
            values = ", ".join(f"{k} {logs[k]}" for k in bad)
            return self._trouble(
                f"{values} at the end of {where}", self._before(self.last_good_epoch_step), record.epoch, run
            )
        val = logs.get("val_loss")
        if val is not None and s.val_factor is not None and self.best_val is not None:
            if val > s.val_factor * self.best_val and self.best_val > 0:
                why = (
                    f"val_loss exploded: {val:.4g} at the end of {where} is more than {s.val_factor:g} x "
                    f"its best {self.best_val:.4g}"
                )
                return self._trouble(why, self._before(self.last_good_epoch_step), record.epoch, run)
        loss = logs.get("loss")
        if loss is not None:
            if self.untrained is None and loss > 0:
                self.untrained = loss
            actions = self._collapse(loss, record, run)
            if actions:
                return actions
        if val is not None and (self.best_val is None or val < self.best_val):
            self.best_val = val
        self.last_good_epoch_step = record.step
        if self.last_good_step is None or self.last_good_step < record.step:
            self.last_good_step = record.step
        return ()

    # -- detection helpers ---------------------------------------------------------------

    def _collapse(self, loss: float, record: EpochRecord, run: RunView) -> Sequence[Action]:
        s, untrained = self.settings, self.untrained
        if untrained is None or untrained <= 0:
            return ()
        near = loss >= (1 - s.collapse_tol) * untrained
        where = f"epoch {record.epoch + 1} (step {record.step})"
        if loss < (1 - s.collapse_drop) * untrained:
            self.learned_step, self.near, self.recovered = record.step, 0, True
        elif near and self.learned_step is not None:
            self.near += 1
            if self.near >= s.collapse_patience:
                why = (
                    f"collapse: the loss came back to its untrained level {untrained:.4g} (now {loss:.4g} at the "
                    f"end of {where}) for {self.near} epochs after having been below "
                    f"{(1 - s.collapse_drop) * untrained:.4g}"
                )
                return self._trouble(why, self._before(self.learned_step), record.epoch, run)
        elif not near:
            self.near = 0
        if self.learned_step is None and s.stuck_epochs > 0:
            self.stuck = self.stuck + 1 if loss >= (1 - s.stuck_tol) * untrained else 0
            high = s.stuck_min_lr if s.stuck_min_lr is not None else preset(run.optimizer).high_lr
            lr = record.lr if record.lr is not None else run.lr
            if self.stuck >= s.stuck_epochs and lr is not None and lr >= high:
                why = (
                    f"stuck: the loss has stayed at its untrained level {untrained:.4g} (now {loss:.4g} at the end "
                    f"of {where}) for {self.stuck} epochs at LR {lr:.4g}, which is high for "
                    f"{run.optimizer or 'this optimizer'} (>= {high:g})"
                )
                return self._trouble(why, self.start_step, record.epoch, run)
        return ()

    def _learned(self, loss: float) -> bool:
        """Whether a loss is below the "learned" level ``(1 - collapse_drop) * L0`` (False when L0 is unknown)."""
        untrained = self.untrained
        return untrained is not None and untrained > 0 and loss < (1 - self.settings.collapse_drop) * untrained

    def _exponent(self, name: str, step: int) -> int:
        """The cut's exponent for a rollback to the checkpoint ``name`` at ``step``."""
        earlier = [r for r in self.rollbacks if r[1] == name and r[2] == step]
        if not earlier:
            return 1
        last = earlier[-1][3] if len(earlier[-1]) > 3 else len(earlier)  # a state from before the exponent was kept
        if self.settings.escalate and not self.recovered and self.rollbacks[-1] is earlier[-1]:
            return 2 * last + 1  # the previous rollback went here and the run has not learned since: square the step
        return last + 1

    def _before(self, step: int | None) -> int:
        return self.start_step if step is None else step

    def _trouble(self, why: str, before_step: int, epoch: int, run: RunView) -> Sequence[Action]:
        """The actions for trouble that started after ``before_step``: a rollback, or giving up."""
        s = self.settings
        self.spiky, self.spike_from, self.near, self.stuck = 0, None, 0, 0
        recent = [r for r in self.rollbacks if r[0] > epoch - s.rollback_window]
        if len(recent) >= s.max_rollbacks:
            self.gave_up = True
            return [Stop(give_up=True, reason=self._diagnosis(why, recent, run))]
        target, where = pick_checkpoint(run.checkpoints, before_step)
        cut = s.cut if s.cut is not None else preset(run.optimizer).cut
        if target is None:
            self.gave_up = True
            rollback = Rollback(
                before_step=before_step,
                lr_factor=cut,
                skip_batches=s.skip_batches,
                reason=f"{why}; roll back to before step {before_step}",
            )
            return [
                rollback,
                Stop(give_up=True, reason=f"gave up: {why}, and there is no checkpoint to roll back to: {where}"),
            ]
        n = self._exponent(target.name, target.step)
        count = 1 + sum(1 for r in self.rollbacks if r[1] == target.name and r[2] == target.step)
        unrecovered = " without having learned since the last one" if n > 1 and not self.recovered else ""
        factor = cut**n
        self.rollbacks.append([epoch, target.name, target.step, n])
        self.recovered = False
        lr = None if target.lr is None else target.lr * factor
        again = f" (rollback {count} to it{unrecovered}: x{cut:g}^{n})" if count > 1 else ""
        reason = f"{why}; rolling back to {target.name} (step {target.step}), LR {_g(target.lr)} -> {_g(lr)}{again}"
        return [Rollback(before_step=before_step, lr_factor=factor, skip_batches=s.skip_batches, reason=reason)]

    def _diagnosis(self, why: str, recent: list[list[Any]], run: RunView) -> str:
        s = self.settings
        if not recent:  # max_rollbacks = 0
            return f"gave up: {why}; max_rollbacks is 0: no rollback is tried; LR now {_g(run.lr)}"
        epochs = sorted(r[0] + 1 for r in recent)
        span = f"epoch {epochs[0]}" if epochs[0] == epochs[-1] else f"epochs {epochs[0]}-{epochs[-1]}"
        targets = sorted({f"{r[1]}" for r in recent})
        return (
            f"gave up: {why}, after {len(recent)} rollbacks in {span} (at most {s.max_rollbacks} in "
            f"{s.rollback_window} epochs), to {', '.join(targets)}; LR now {_g(run.lr)}. Cutting the LR has "
            "not kept the run finite: look at the data (bad batches, labels out of range), the loss (log of 0, "
            "division by zero), mixed-precision overflow, or the initialisation"
        )

    # -- state ---------------------------------------------------------------------------

    _STATE = (
        "history",
        "spiky",
        "spike_from",
        "last_good_step",
        "last_good_epoch_step",
        "start_step",
        "untrained",
        "learned_step",
        "near",
        "stuck",
        "best_val",
        "rollbacks",
        "recovered",
        "gave_up",
    )

    def state_dict(self) -> dict[str, Any]:
        state = {key: getattr(self, key) for key in self._STATE}
        state["losses"] = self.losses.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = {*self._STATE, "losses"}
        if set(state) not in (expected, expected - {"recovered"}):  # a state from before `recovered` was kept
            raise ValueError(f"policy 'divergence' state must have keys {sorted(expected)}; got {sorted(state)}")
        state = {"recovered": True, **state}
        for key in self._STATE:
            setattr(self, key, state[key])
        self.history = [list(h) for h in self.history]
        self._sorted = sorted(h[1] for h in self.history)
        self.rollbacks = [list(r) for r in self.rollbacks]
        self.losses.load_state_dict(state["losses"])


__all__ = ["Divergence", "DivergenceSettings", "RunningMeanLoss"]
