"""Schedule policies: on start, hand the trainer a schedule spec; the agent follows it per step.

Each policy here answers the start record with one :class:`SetSchedule` action and then
decides nothing per record: the agent evaluates the spec at every batch (records come
only every few batches). LR settings left out are taken from the start record's ``lr``;
epoch-based settings are turned into steps with its ``steps_per_epoch``. The spec starts
at the start record's ``step``. A later start record of the same fit (the trainer started
again) gets the same spec again, so the schedule goes on in global steps. A start record of
another fit (the script's second ``fit``, a stage of its own: often a recompiled model whose
new optimizer counts from step 0 at another LR) gets a schedule built afresh from it: the
LR and epochs the script gave that fit, never the first fit's.
Reactive policies (plateau cuts) compose on top: they scale the schedule's multiplier.

Example (lrsup.toml)::

    [[policy]]
    use = "cosine"
    warmup_steps = 500          # from 0 to the optimizer's LR, then cosine to 0 by the end of fit

Policies: ``exponential_decay``, ``step_decay``, ``cyclic``, ``one_cycle``, ``warmup``,
``cosine``; ``warm_restart`` (SGDR) is in lrsup.policies.warm_restart.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import ConfigDict, Field, field_validator, model_validator

from lrsup.policies.actions import Action, SetSchedule
from lrsup.policies.base import Policy, PolicySettings, RunView
from lrsup.supervisor.protocol.schedules import evaluate, validate_spec
from lrsup.supervisor.protocol.wire import StartRecord

__all__ = [
    "Cosine",
    "Cyclic",
    "ExponentialDecay",
    "OneCycle",
    "SchedulePolicy",
    "ScheduleSettings",
    "StepDecay",
    "Warmup",
]


class ScheduleSettings(PolicySettings):
    """Settings of a schedule policy: strict types (no bool for an int), finite numbers only."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)


def _exactly_one(settings: PolicySettings, steps_field: str, epochs_field: str, required: bool = True) -> None:
    steps, epochs = getattr(settings, steps_field), getattr(settings, epochs_field)
    if steps is not None and epochs is not None:
        raise ValueError(f"give {steps_field} or {epochs_field}, not both (got {steps!r} and {epochs!r})")
    if required and steps is None and epochs is None:
        raise ValueError(f"give {steps_field} or {epochs_field}")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


class SchedulePolicy(Policy):
    """Base of the schedule policies: one SetSchedule on start, built by :meth:`build`.

    Subclasses set ``name`` and ``Settings`` and implement ``build``.
    """

    Settings = ScheduleSettings
    lr_role = "tunes"

    def reset(self) -> None:
        self._schedule: dict[str, Any] | None = None
        self._fit = 1  # the fit (stage) the schedule was built for

    def build(self, record: StartRecord, run: RunView) -> tuple[dict[str, Any], str]:
        """The spec (without ``start_step``) for this run, and a sentence saying what it does."""
        raise NotImplementedError  # abstract

    @property
    def schedule(self) -> dict[str, Any] | None:
        """The spec sent to the trainer (normalised), or None before the first start record."""
        return self._schedule

    def on_start(self, record: StartRecord, run: RunView) -> Sequence[Action]:
        if self._schedule is None or record.fit != self._fit:
            self.reset()  # a new fit is a stage of its own: nothing of the last fit's schedule carries over
            spec, what = self.build(record, run)
            self._schedule = validate_spec({**spec, "start_step": record.step})
            self._fit = record.fit
            stage = f" (fit {record.fit})" if record.fit > 1 else ""
            reason = f"{what}, from step {record.step}{stage}"
        else:
            reason = (
                f"the trainer started again at step {record.step}: sending again the schedule "
                f"that began at step {self._schedule['start_step']}"
            )
        return [SetSchedule(schedule=self._schedule, reason=reason)]

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self._schedule, "fit": self._fit}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = sorted(set(state) - {"schedule", "fit"})
        if unknown:
            raise ValueError(f"policy {self.name!r}: unknown state key(s) {unknown}")
        schedule = state.get("schedule")
        self._schedule = None if schedule is None else validate_spec(schedule)
        fit = state.get("fit", 1)  # a state from before stages: fit 1
        if not isinstance(fit, int) or isinstance(fit, bool) or fit < 1:
            raise ValueError(f"policy {self.name!r}: fit must be an integer >= 1; got {fit!r}")
        self._fit = fit

    # Helpers for build().
    def _lr(self, value: float | None, setting: str, record: StartRecord, run: RunView) -> tuple[float, str]:
        """A setting's LR, or the start record's LR when it is not set; with a description."""
        if value is not None:
            return value, _fmt(value)
        lr = record.lr if record.lr is not None else run.lr
        if lr is None:
            raise ValueError(f"{self.name}: the start record has no lr; set {setting}")
        return lr, f"{_fmt(lr)} (the optimizer's lr)"

    def _steps(self, steps_field: str, epochs_field: str, record: StartRecord, run: RunView) -> tuple[float, str]:
        """The ``steps_field`` setting, or ``epochs_field`` x ``steps_per_epoch`` from the start record.

        Returns the number of steps and a description for the action's reason.
        """
        steps, epochs = getattr(self.settings, steps_field), getattr(self.settings, epochs_field)
        if steps is not None:
            return steps, f"{steps} steps"
        spe = record.steps_per_epoch if record.steps_per_epoch is not None else run.steps_per_epoch
        if not spe:
            raise ValueError(
                f"{self.name}: {epochs_field}={epochs!r} needs steps_per_epoch, which the start "
                f"record does not give (a dataset of unknown length?); set {steps_field} instead"
            )
        total = epochs * spe
        if float(total).is_integer():
            total = int(total)
        return total, f"{total} steps ({_fmt(epochs)} epochs x {spe})"

    def _rest_of_run(self, record: StartRecord, run: RunView, setting: str) -> tuple[int, str]:
        """Steps left in ``fit``: ``(epochs - initial_epoch) * steps_per_epoch``."""
        spe = record.steps_per_epoch if record.steps_per_epoch is not None else run.steps_per_epoch
        epochs = record.epochs if record.epochs is not None else run.epochs
        if not spe or epochs is None:
            raise ValueError(
                f"{self.name}: without {setting} the schedule spans the run, but the start record "
                f"gives steps_per_epoch={spe!r} and epochs={epochs!r}; set {setting}"
            )
        n = epochs - record.initial_epoch
        return n * spe, f"{n * spe} steps ({n} epochs x {spe})"


# ---------------------------------------------------------------------------


class ExponentialDecay(SchedulePolicy):
    """Exponential decay: ``lr0 * decay_rate ** (step / decay_steps)``, as Keras's ExponentialDecay.

    Example (lrsup.toml)::

        [[policy]]
        use = "exponential_decay"
        decay_rate = 0.5
        decay_epochs = 10        # or decay_steps = 5000
        staircase = true         # halve at once every 10 epochs

    Args:
        initial_lr: float or None. The LR at the start; default: the optimizer's.
        decay_rate: float. Multiplier per decay period, in (0, 1).
        decay_steps: int or None. Steps per decay period.
        decay_epochs: float or None. Epochs per decay period (give this or ``decay_steps``).
        staircase: bool. Decay in jumps at the end of each period.
    """

    name = "exponential_decay"

    class Settings(ScheduleSettings):
        initial_lr: float | None = Field(None, ge=0)
        decay_rate: float = Field(gt=0, lt=1)
        decay_steps: int | None = Field(None, ge=1)
        decay_epochs: float | None = Field(None, gt=0)
        staircase: bool = False

        @model_validator(mode="after")
        def _period(self):
            _exactly_one(self, "decay_steps", "decay_epochs")
            return self

    settings: Settings

    def build(self, record: StartRecord, run: RunView) -> tuple[dict[str, Any], str]:
        s = self.settings
        lr0, lr_text = self._lr(s.initial_lr, "initial_lr", record, run)
        steps, steps_text = self._steps("decay_steps", "decay_epochs", record, run)
        spec = {
            "kind": "exponential_decay",
            "initial_learning_rate": lr0,
            "decay_steps": steps,
            "decay_rate": s.decay_rate,
            "staircase": s.staircase,
        }
        how = "at once" if s.staircase else "continuously"
        return spec, f"exponential decay from lr {lr_text}, x{s.decay_rate} every {steps_text} ({how})"


class StepDecay(SchedulePolicy):
    """Step decay: multiply the LR by ``factor`` every ``every_epochs`` epochs.

    Example (lrsup.toml)::

        [[policy]]
        use = "step_decay"
        factor = 0.1
        every_epochs = 30        # ResNet's classic schedule: 0.1, 0.01 at epoch 30, ...

    Args:
        initial_lr: float or None. The LR before the first drop; default: the optimizer's.
        factor: float. Multiplier at each drop, in (0, 1).
        every_epochs: int or None. Epochs between drops.
        every_steps: int or None. Steps between drops (give this or ``every_epochs``).
    """

    name = "step_decay"

    class Settings(ScheduleSettings):
        initial_lr: float | None = Field(None, ge=0)
        factor: float = Field(gt=0, lt=1)
        every_epochs: int | None = Field(None, ge=1)
        every_steps: int | None = Field(None, ge=1)

        @model_validator(mode="after")
        def _period(self):
            _exactly_one(self, "every_steps", "every_epochs")
            return self

    settings: Settings

    def build(self, record: StartRecord, run: RunView) -> tuple[dict[str, Any], str]:
        s = self.settings
        lr0, lr_text = self._lr(s.initial_lr, "initial_lr", record, run)
        steps, steps_text = self._steps("every_steps", "every_epochs", record, run)
        spec = {"kind": "step_decay", "initial_learning_rate": lr0, "factor": s.factor, "every_steps": steps}
        return spec, f"step decay from lr {lr_text}, x{s.factor} every {steps_text}"


class Cyclic(SchedulePolicy):
    """Smith's cyclical learning rate between ``base_lr`` and ``max_lr``.

    Example (lrsup.toml)::

        [[policy]]
        use = "cyclic"
        mode = "triangular2"     # or "triangular", "exp_range" (with gamma)
        base_lr = 0.001
        max_lr = 0.006
        step_size_epochs = 4     # half a cycle; or step_size = 2000 (steps)

    Args:
        mode: str. ``"triangular"``, ``"triangular2"`` (amplitude halved each cycle) or
            ``"exp_range"`` (amplitude times ``gamma ** step``).
        base_lr: float or None. The bottom of the cycle; default: the optimizer's LR.
        max_lr: float. The top of the (first) cycle, above ``base_lr``.
        step_size: int or None. Steps in half a cycle (Smith suggests 2 to 10 epochs).
        step_size_epochs: float or None. Half a cycle in epochs (give this or ``step_size``).
        gamma: float. For ``exp_range`` only, in (0, 1].
    """

    name = "cyclic"

    class Settings(ScheduleSettings):
        mode: Literal["triangular", "triangular2", "exp_range"] = "triangular"
        base_lr: float | None = Field(None, ge=0)
        max_lr: float = Field(gt=0)
        step_size: int | None = Field(None, ge=1)
        step_size_epochs: float | None = Field(None, gt=0)
        gamma: float = Field(1.0, gt=0, le=1)

        @model_validator(mode="after")
        def _consistent(self):
            _exactly_one(self, "step_size", "step_size_epochs")
            if self.gamma != 1.0 and self.mode != "exp_range":
                raise ValueError(f"gamma={self.gamma!r} only applies to mode 'exp_range', not {self.mode!r}")
            if self.base_lr is not None and self.max_lr <= self.base_lr:
                raise ValueError(f"max_lr={self.max_lr!r} must be above base_lr={self.base_lr!r}")
            return self

    settings: Settings

    def build(self, record: StartRecord, run: RunView) -> tuple[dict[str, Any], str]:
        s = self.settings
        base, base_text = self._lr(s.base_lr, "base_lr", record, run)
        if s.max_lr <= base:
            raise ValueError(f"{self.name}: max_lr={s.max_lr!r} must be above base_lr {base_text}")
        steps, steps_text = self._steps("step_size", "step_size_epochs", record, run)
        spec = {
            "kind": "cyclic",
            "base_lr": base,
            "max_lr": s.max_lr,
            "step_size": steps,
            "mode": s.mode,
            "gamma": s.gamma,
        }
        return spec, f"{s.mode} cyclic lr between {base_text} and {_fmt(s.max_lr)}, half a cycle = {steps_text}"


class OneCycle(SchedulePolicy):
    """Smith's 1cycle policy, LR part, as PyTorch's OneCycleLR: up to ``max_lr``, then far down.

    Example (lrsup.toml)::

        [[policy]]
        use = "one_cycle"
        max_lr = 0.1             # default: the optimizer's LR
        pct_start = 0.3          # total_steps defaults to epochs x steps_per_epoch of fit

    Args:
        max_lr: float or None. The peak; default: the optimizer's LR.
        total_steps: int or None. Length of the cycle; default: the rest of ``fit``.
        pct_start: float. Fraction of the cycle spent going up, in (0, 1).
        div_factor: float. The start is ``max_lr / div_factor``.
        final_div_factor: float. The end is ``max_lr / div_factor / final_div_factor``.
        anneal: str. ``"cos"`` or ``"linear"``.
        three_phase: bool. Come back to the start LR before going to the end LR.
    """

    name = "one_cycle"

    class Settings(ScheduleSettings):
        max_lr: float | None = Field(None, gt=0)
        total_steps: int | None = Field(None, ge=2)
        pct_start: float = Field(0.3, gt=0, lt=1)
        div_factor: float = Field(25.0, gt=0)
        final_div_factor: float = Field(1e4, gt=0)
        anneal: Literal["cos", "linear"] = "cos"
        three_phase: bool = False

    settings: Settings

    def build(self, record: StartRecord, run: RunView) -> tuple[dict[str, Any], str]:
        s = self.settings
        peak, peak_text = self._lr(s.max_lr, "max_lr", record, run)
        if s.total_steps is not None:
            total, total_text = s.total_steps, f"{s.total_steps} steps"
        else:
            total, total_text = self._rest_of_run(record, run, "total_steps")
        spec = {
            "kind": "one_cycle",
            "max_lr": peak,
            "total_steps": total,
            "pct_start": s.pct_start,
            "div_factor": s.div_factor,
            "final_div_factor": s.final_div_factor,
            "anneal": s.anneal,
            "three_phase": s.three_phase,
        }
        return spec, f"one cycle ({s.anneal}) peaking at lr {peak_text} over {total_text}"


class Warmup(SchedulePolicy):
    """Linear warmup from ``start_lr`` to ``target`` over ``steps``, then constant or ``then``.

    Example (lrsup.toml)::

        [[policy]]
        use = "warmup"
        steps = 1000             # from 0 to the optimizer's LR, then constant

        [[policy]]
        use = "warmup"
        steps = 1000
        then = { kind = "exponential_decay", initial_learning_rate = 0.1, decay_steps = 10000, decay_rate = 0.5 }

    Args:
        steps: int. Length of the warmup in steps.
        start_lr: float. The LR at the first step.
        target: float or None. The LR at the warmup's end; default: the optimizer's LR, or
            ``then``'s first value when ``then`` is given.
        then: dict or None. A schedule spec to follow after the warmup (see
            lrsup.supervisor.protocol.schedules); its step counts from the warmup's end.
    """

    name = "warmup"

    class Settings(ScheduleSettings):
        steps: int = Field(ge=1)
        start_lr: float = Field(0.0, ge=0)
        target: float | None = Field(None, ge=0)
        then: dict | None = None

        @field_validator("then")
        @classmethod
        def _spec(cls, value: dict | None) -> dict | None:
            return None if value is None else validate_spec(value)

    settings: Settings

    def build(self, record: StartRecord, run: RunView) -> tuple[dict[str, Any], str]:
        s = self.settings
        spec: dict[str, Any] = {"kind": "warmup", "steps": s.steps, "start_lr": s.start_lr, "then": s.then}
        if s.then is None or s.target is not None:
            spec["target"], target_text = self._lr(s.target, "target", record, run)
        else:
            target_text = f"{_fmt(evaluate(s.then, 0))} (the then schedule's first value)"
        after = "then constant" if s.then is None else f"then {s.then['kind']}"
        return spec, f"linear warmup from lr {_fmt(s.start_lr)} to {target_text} over {s.steps} steps, {after}"


class Cosine(SchedulePolicy):
    """Cosine decay with optional linear warmup, as Keras's CosineDecay.

    Example (lrsup.toml)::

        [[policy]]
        use = "cosine"
        warmup_steps = 500       # 0 -> the optimizer's LR over 500 steps
        alpha = 0.01             # then down to 1% of it by the end of fit

    Args:
        initial_lr: float or None. The peak (the decay's start); default: the optimizer's LR.
        decay_steps: int or None. Steps of the cosine phase.
        decay_epochs: float or None. Epochs of the cosine phase. Give neither to decay
            over what is left of ``fit`` after the warmup.
        alpha: float. The floor as a fraction of the peak, in [0, 1].
        warmup_steps: int. Steps of linear warmup before the decay (0: none).
        warmup_start_lr: float. The LR the warmup starts from.
    """

    name = "cosine"

    class Settings(ScheduleSettings):
        initial_lr: float | None = Field(None, ge=0)
        decay_steps: int | None = Field(None, ge=1)
        decay_epochs: float | None = Field(None, gt=0)
        alpha: float = Field(0.0, ge=0, le=1)
        warmup_steps: int = Field(0, ge=0)
        warmup_start_lr: float = Field(0.0, ge=0)

        @model_validator(mode="after")
        def _period(self):
            _exactly_one(self, "decay_steps", "decay_epochs", required=False)
            if self.warmup_start_lr != 0.0 and self.warmup_steps == 0:
                raise ValueError(f"warmup_start_lr={self.warmup_start_lr!r} needs warmup_steps > 0")
            return self

    settings: Settings

    def build(self, record: StartRecord, run: RunView) -> tuple[dict[str, Any], str]:
        s = self.settings
        peak, peak_text = self._lr(s.initial_lr, "initial_lr", record, run)
        if s.decay_steps is None and s.decay_epochs is None:
            total, _ = self._rest_of_run(record, run, "decay_steps")
            steps: float = total - s.warmup_steps
            if steps <= 0:
                raise ValueError(
                    f"{self.name}: warmup_steps={s.warmup_steps} leaves no steps to decay over "
                    f"in a fit of {total} steps"
                )
            steps_text = f"{steps} steps (the rest of fit)"
        else:
            steps, steps_text = self._steps("decay_steps", "decay_epochs", record, run)
        spec: dict[str, Any] = {"kind": "cosine_decay", "decay_steps": steps, "alpha": s.alpha}
        if s.warmup_steps:
            spec.update(initial_learning_rate=s.warmup_start_lr, warmup_target=peak, warmup_steps=s.warmup_steps)
            warm = f" after a {s.warmup_steps}-step warmup from {_fmt(s.warmup_start_lr)}"
        else:
            spec["initial_learning_rate"] = peak
            warm = ""
        return spec, f"cosine decay from lr {peak_text} to {_fmt(peak * s.alpha)} over {steps_text}{warm}"
