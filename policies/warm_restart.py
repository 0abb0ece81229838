"""SGDR: cosine decay with warm restarts, optionally restarting early when a metric plateaus.

On start the policy sends a ``cosine_restarts`` schedule (Keras's CosineDecayRestarts):
cycle ``i`` lasts ``first_period * t_mul**i`` and peaks at ``lr0 * m_mul**i`` (above the
floor ``lr0 * alpha``). With ``on_plateau``, when ``monitor`` has not improved for
``patience`` epochs within the current cycle, it starts the next cycle at once: a new
SetSchedule that continues the same progression (peak ``m_mul``, length ``t_mul``) from
the current step. The patience count and the best value start afresh with every cycle,
scheduled or early, since a restart's high LR is expected to set the metric back.

Improvement is Keras's rule (mode, min_delta), from lrsup.policies.monitor.

Example (lrsup.toml)::

    [[policy]]
    use = "warm_restart"
    first_period_epochs = 10     # or first_period_steps = 5000
    t_mul = 2.0                  # 10, 20, 40, ... epochs
    m_mul = 0.8                  # each peak 80% of the one before
    on_plateau = true            # and restart early after 3 epochs without a better val_loss
    monitor = "val_loss"
    patience = 3
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import Field, model_validator

from lrsup.policies.actions import Action, SetSchedule
from lrsup.policies.base import RunView
from lrsup.policies.monitor import Monitor, resolve_mode
from lrsup.policies.schedules import SchedulePolicy, ScheduleSettings, _exactly_one, _fmt
from lrsup.supervisor.protocol.schedules import cosine_restarts_cycle, validate_spec
from lrsup.supervisor.protocol.wire import EpochRecord, StartRecord

__all__ = ["WarmRestart", "restart_now"]

_PLATEAU_SETTINGS = ("monitor", "mode", "min_delta", "patience")


def _current_cycle(spec: dict[str, Any], step: int) -> int:
    """The cycle of the last update before ``step``: update ``step - 1`` (step counts updates done)."""
    local = max(step - 1 - spec["start_step"], 0)
    return cosine_restarts_cycle(local, spec["first_decay_steps"], spec["t_mul"])[0]


def restart_now(spec: dict[str, Any], step: int) -> dict[str, Any]:
    """The ``cosine_restarts`` spec that starts ``spec``'s next cycle at global ``step``.

    If the current cycle is ``k``, the new spec's cycle ``j`` is ``spec``'s cycle
    ``k + 1 + j``, moved to begin at ``step``: the same peaks, floor and lengths, one
    cycle early. With ``lr0``, ``alpha``, ``first`` the old spec's, ``n = k + 1``::

        initial_learning_rate = lr0 * ((1 - alpha) * m_mul**n + alpha)   # the peak of cycle n
        alpha = lr0 * alpha / initial_learning_rate                      # the same floor
        first_decay_steps = first * t_mul**n

    Example::

        old = validate_spec({"kind": "cosine_restarts", "initial_learning_rate": 0.1,
                             "first_decay_steps": 100, "m_mul": 0.5})
        restart_now(old, 40)["initial_learning_rate"]   # 0.05: cycle 1's peak, from step 40

    Args:
        spec: dict. A validated ``cosine_restarts`` spec.
        step: int. The global step the new cycle starts at (updates done so far).
    """
    if spec.get("kind") != "cosine_restarts":
        raise ValueError(f"restart_now needs a cosine_restarts spec, got kind {spec.get('kind')!r}")
    lr0, alpha, t_mul, m_mul = spec["initial_learning_rate"], spec["alpha"], spec["t_mul"], spec["m_mul"]
    n = _current_cycle(spec, step) + 1
    peak = lr0 * ((1 - alpha) * m_mul**n + alpha)
    floor = lr0 * alpha
    return validate_spec(
        {
            "kind": "cosine_restarts",
            "initial_learning_rate": peak,
            "first_decay_steps": spec["first_decay_steps"] * t_mul**n,
            "t_mul": t_mul,
            "m_mul": m_mul,
            "alpha": min(floor / peak, 1.0) if peak > 0 else alpha,
            "start_step": step,
        }
    )


class WarmRestart(SchedulePolicy):
    """Cosine annealing with warm restarts (SGDR), restarting early on a plateau if asked.

    Example (lrsup.toml)::

        [[policy]]
        use = "warm_restart"
        first_period_steps = 1000    # every 1000 steps (t_mul = 1) ...
        t_mul = 1.0
        on_plateau = true            # ... or sooner, after 2 epochs without a better val_loss
        patience = 2

    Args:
        initial_lr: float or None. The first peak; default: the optimizer's LR.
        first_period_epochs: float or None. Length of the first cycle in epochs.
        first_period_steps: int or None. Length of the first cycle in steps (give one).
        t_mul: float. Each cycle is ``t_mul`` times longer than the one before (>= 1).
        m_mul: float. Each peak is ``m_mul`` times the one before (> 0).
        alpha: float. The floor as a fraction of ``initial_lr``, in [0, 1].
        on_plateau: bool. Restart early when ``monitor`` stops improving.
        monitor: str. The key of the epoch logs to watch.
        mode: str. ``"auto"``, ``"min"`` or ``"max"`` (Keras's rule).
        min_delta: float. The least change that counts as an improvement.
        patience: int. Epochs without improvement, within a cycle, before restarting.
    """

    name = "warm_restart"

    class Settings(ScheduleSettings):
        initial_lr: float | None = Field(None, ge=0)
        first_period_epochs: float | None = Field(None, gt=0)
        first_period_steps: int | None = Field(None, ge=1)
        t_mul: float = Field(2.0, ge=1)
        m_mul: float = Field(1.0, gt=0)
        alpha: float = Field(0.0, ge=0, le=1)
        on_plateau: bool = False
        monitor: str = "val_loss"
        mode: Literal["auto", "min", "max"] = "auto"
        min_delta: float = Field(0.0, ge=0)
        patience: int = Field(10, ge=1)

        @model_validator(mode="after")
        def _consistent(self):
            _exactly_one(self, "first_period_steps", "first_period_epochs")
            if self.on_plateau:
                resolve_mode(self.monitor, self.mode)  # ValueError naming monitor and mode
            else:
                unused = sorted(set(_PLATEAU_SETTINGS) & self.model_fields_set)
                if unused:
                    given = ", ".join(f"{k}={getattr(self, k)!r}" for k in unused)
                    raise ValueError(f"{given} only apply with on_plateau = true")
            return self

    settings: Settings

    def reset(self) -> None:
        super().reset()
        s = self.settings
        self._monitor = Monitor(s.monitor, s.mode, s.min_delta) if s.on_plateau else None
        self._best: float | None = None
        self._wait = 0
        self._cycle = 0

    @property
    def monitors(self) -> tuple[str, ...]:
        """``monitor`` when it restarts on a plateau, else nothing."""
        return (self.settings.monitor,) if self.settings.on_plateau else ()

    def build(self, record: StartRecord, run: RunView) -> tuple[dict[str, Any], str]:
        s = self.settings
        lr0, lr_text = self._lr(s.initial_lr, "initial_lr", record, run)
        steps, steps_text = self._steps("first_period_steps", "first_period_epochs", record, run)
        spec = {
            "kind": "cosine_restarts",
            "initial_learning_rate": lr0,
            "first_decay_steps": steps,
            "t_mul": s.t_mul,
            "m_mul": s.m_mul,
            "alpha": s.alpha,
        }
        early = f", early when {s.monitor} stalls for {s.patience} epochs" if s.on_plateau else ""
        return spec, (
            f"cosine with warm restarts from lr {lr_text}: first cycle {steps_text}, "
            f"then x{s.t_mul} longer and x{s.m_mul} lower each{early}"
        )

    def on_epoch(self, record: EpochRecord, run: RunView) -> Sequence[Action]:
        if self._monitor is None or self._schedule is None:
            return ()
        cycle = _current_cycle(self._schedule, record.step)
        if cycle != self._cycle:  # a scheduled restart happened during this epoch: start afresh
            self._cycle, self._best, self._wait = cycle, None, 0
        value = self._monitor.value(record.logs)
        if value is None:
            return ()
        if self._monitor.is_improvement(value, self._best):
            self._best, self._wait = value, 0
            return ()
        self._wait += 1
        if self._wait < self.settings.patience:
            return ()
        best = self._best
        assert best is not None  # a wait is counted only after a first value became the best
        self._schedule = restart_now(self._schedule, record.step)
        self._cycle, self._best, self._wait = 0, None, 0
        peak, length = self._schedule["initial_learning_rate"], self._schedule["first_decay_steps"]
        reason = (
            f"{self.settings.monitor} has not improved on {_fmt(best)} for {self.settings.patience} "
            f"epochs (now {_fmt(value)}): restarting the cosine cycle at step {record.step}, peak lr "
            f"{_fmt(peak)} for {_fmt(length)} steps"
        )
        return [SetSchedule(schedule=self._schedule, reason=reason)]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best": self._best, "wait": self._wait, "cycle": self._cycle}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self._best = state.pop("best", None)
        self._wait = int(state.pop("wait", 0))
        self._cycle = int(state.pop("cycle", 0))
        super().load_state_dict(state)
