"""Cut the learning rate when a metric stops improving: Keras's ReduceLROnPlateau, as a policy.

Same parameters, defaults and algorithm as ``keras.callbacks.ReduceLROnPlateau``
(Keras 3), so that a run supervised by lrsup changes its LR on the same epochs, to
the same values, as the callback would; a differential test holds it to that. The
only differences: a bad ``mode`` or a ``factor`` outside (0, 1) is refused when the
settings are built (Keras warns or refuses at fit time), and ``mode="auto"`` is
resolved from the metric's name (see lrsup.policies.monitor).

The decision is a :class:`~lrsup.policies.actions.ScaleLR` (factor, min_lr): the
engine turns it into the concrete ``max(lr * factor, min_lr)``. Each ``fit`` (each
start record) starts afresh, as Keras resets the callback at train begin. Epoch
numbers in reasons are 1-based, as Keras prints them.

Config example (lrsup.toml)::

    [[policy]]
    use = "plateau"
    monitor = "val_loss"
    factor = 0.5
    patience = 2

Example (Python)::

    policy = Plateau(monitor="val_loss", factor=0.5, patience=2)
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from pydantic import Field, field_validator

from lrsup.policies.actions import Action, ScaleLR
from lrsup.policies.base import PolicySettings, RunView
from lrsup.policies.monitor import MonitorPolicy, MonitorSettings, to_float32
from lrsup.supervisor.protocol.wire import EpochRecord, StartRecord


class PlateauSettings(MonitorSettings):
    """Settings of :class:`Plateau`: ReduceLROnPlateau's names and defaults.

    Example::

        PlateauSettings(monitor="val_accuracy", factor=0.2, patience=5, min_lr=1e-5)

    Args:
        monitor: str. The logs key to watch. Defaults to ``"val_loss"``.
        factor: float. ``new_lr = lr * factor``; must be in (0, 1). Defaults to 0.1.
        patience: int. Epochs with no improvement before a cut (>= 0). Defaults to 10.
        mode: str. ``"auto"``, ``"min"`` or ``"max"``. Defaults to ``"auto"``.
        min_delta: float. Smallest change that counts as an improvement (its sign is
            ignored, as in Keras). Defaults to 1e-4.
        cooldown: int. Epochs after a cut during which no improvement is expected (>= 0).
            Defaults to 0.
        min_lr: float. Lower bound on the learning rate (>= 0). Defaults to 0.0.
    """

    factor: float = Field(0.1, strict=True)
    patience: int = Field(10, strict=True, ge=0)
    min_delta: float = Field(1e-4, strict=True, allow_inf_nan=False)
    cooldown: int = Field(0, strict=True, ge=0)
    min_lr: float = Field(0.0, strict=True, ge=0.0, allow_inf_nan=False)

    @field_validator("factor")
    @classmethod
    def _check_factor(cls, factor: float) -> float:
        if factor >= 1.0:
            raise ValueError(f"Plateau does not support a factor >= 1.0; got factor={factor!r}")
        if not factor > 0.0:  # also catches NaN
            raise ValueError(f"factor must be > 0; got factor={factor!r}")
        return factor


class Plateau(MonitorPolicy):
    """Reduce the learning rate when ``monitor`` has stopped improving (ReduceLROnPlateau).

    Example::

        engine = Engine([Plateau(monitor="val_loss", factor=0.5, patience=2)])

    Args:
        settings: PlateauSettings, or the same fields as keyword arguments.
    """

    name: ClassVar[str] = "plateau"
    lr_role: ClassVar[str] = "tunes"
    Settings: ClassVar[type[PolicySettings]] = PlateauSettings
    settings: PlateauSettings

    def reset(self) -> None:
        """Forget the best value and the counters (Keras's ``_reset`` at train begin)."""
        super().reset()
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.cooldown_counter = 0

    def on_start(self, record: StartRecord, run: RunView) -> Sequence[Action]:
        self.reset()
        return ()

    def decide_epoch(self, record: EpochRecord, run: RunView) -> Sequence[Action]:
        s = self.settings
        current = self._monitor.value(record.logs)
        if current is None:
            # Keras warns and leaves every counter as it was.
            return ()
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._monitor.is_improvement(current, self.best):
            self.best = current
            self.best_epoch = record.epoch
            self.wait = 0
            return ()
        if self.cooldown_counter > 0:
            return ()
        self.wait += 1
        if self.wait < s.patience:
            return ()
        old_lr = run.lr
        # Keras: `if old_lr > np.float32(min_lr)`, compared in float32 (NEP 50).
        if old_lr is not None and not to_float32(old_lr) > to_float32(s.min_lr):
            return ()  # already at the floor: no cut, and `wait` keeps counting, as in Keras
        reason = self._reason(s.monitor, current, record.epoch, old_lr)
        self.cooldown_counter = s.cooldown
        self.wait = 0
        return (ScaleLR(factor=s.factor, min_lr=s.min_lr, reason=reason),)

    def _reason(self, monitor: str, current: float, epoch: int, old_lr: float | None) -> str:
        s = self.settings
        best = "none" if self.best is None else f"{self.best:.4g}"
        since = "" if self.best_epoch is None else f" (epoch {self.best_epoch + 1})"
        epochs = "epoch" if self.wait == 1 else "epochs"
        text = f"{monitor} {current:.4g} has not improved on best {best}{since} for {self.wait} {epochs}"
        if old_lr is None:
            return f"{text}; LR x{s.factor:g} (current LR unknown)"
        new_lr = max(old_lr * s.factor, s.min_lr)
        return f"{text}; LR {old_lr:.4g} -> {new_lr:.4g}"

    def own_state(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "cooldown_counter": self.cooldown_counter,
        }

    def load_own_state(self, state: dict[str, Any]) -> None:
        expected = {"best", "best_epoch", "wait", "cooldown_counter"}
        if set(state) != expected:
            raise ValueError(f"policy 'plateau' state must have keys {sorted(expected)}; got {sorted(state)}")
        best = state["best"]
        if best is not None and (not isinstance(best, (int, float)) or isinstance(best, bool)):
            raise ValueError(f"policy 'plateau' state: best must be a number or None; got {best!r}")
        for key in ("wait", "cooldown_counter"):
            value = state[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"policy 'plateau' state: {key} must be an int >= 0; got {value!r}")
        best_epoch = state["best_epoch"]
        if best_epoch is not None and (not isinstance(best_epoch, int) or isinstance(best_epoch, bool)):
            raise ValueError(f"policy 'plateau' state: best_epoch must be an int or None; got {best_epoch!r}")
        self.best = None if best is None else float(best)
        self.best_epoch = best_epoch
        self.wait = state["wait"]
        self.cooldown_counter = state["cooldown_counter"]


__all__ = ["Plateau", "PlateauSettings"]
