"""Stop when a metric has stopped improving: Keras's EarlyStopping, as a policy.

Same parameters, defaults and algorithm as ``keras.callbacks.EarlyStopping`` (Keras 3):
the same stop epoch on the same sequence of metric values, and with
``restore_best_weights`` the same weights at the end; a differential test holds it to
that. Improvement is Keras's rule (``mode``, ``min_delta``, float32 comparison), from
lrsup.policies.monitor. Per epoch, as Keras does it:

- a missing metric, or an epoch before ``start_from_epoch``, changes nothing;
- ``wait`` goes up by one; an improvement on the best makes it the best (its weights
  the best weights) and, when it also improves on ``baseline`` (or there is none),
  sets ``wait`` back to 0;
- otherwise, once ``wait >= patience`` (and not on epoch 0), training stops.

``restore_best_weights``: Keras keeps the best epoch's weights in memory and puts them
back when training ends, whether it stopped early or ran all its epochs. lrsup keeps
them as a checkpoint: on each new best it takes the checkpoint of that epoch's end
(the agent's epoch-end checkpoint when the cadence made one, else it asks for one named
``early_stop-best``) and asks the engine to keep it (Keep); when it stops it sends a
``Rollback`` to it before the ``Stop``; on the fit's last epoch (when the start record
says how many) it sends the Rollback alone. The restore cannot happen when training
ends some other way (another policy's stop, an exception).

Config example (lrsup.toml)::

    [[policy]]
    use = "early_stop"
    monitor = "val_loss"
    patience = 5
    min_delta = 1e-4
    restore_best_weights = true

Example (Python)::

    policy = EarlyStop(monitor="val_accuracy", patience=5, restore_best_weights=True)
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from pydantic import Field

from lrsup.policies.actions import Action, Keep, Rollback, SaveCheckpoint, Stop
from lrsup.policies.base import PolicySettings, RunView
from lrsup.policies.monitor import MonitorPolicy, MonitorSettings
from lrsup.supervisor.protocol.wire import EpochRecord, StartRecord

# The checkpoint asked for when the agent made none at a best epoch's end.
BEST_CHECKPOINT = "early_stop-best"


class EarlyStopSettings(MonitorSettings):
    """Settings of :class:`EarlyStop`: EarlyStopping's names and defaults.

    Example::

        EarlyStopSettings(monitor="val_accuracy", patience=5, baseline=0.9)

    Args:
        monitor: str. The logs key to watch. Defaults to ``"val_loss"``.
        min_delta: float. Smallest change that counts as an improvement (its sign is
            ignored, as in Keras). Defaults to 0.
        patience: int. Epochs without improvement before stopping (>= 0). Defaults to 0.
        mode: str. ``"auto"``, ``"min"`` or ``"max"``. Defaults to ``"auto"``.
        baseline: float or None. A value to beat: ``wait`` is reset only by an epoch that
            beats both the best and this. Defaults to None.
        restore_best_weights: bool. Roll back to the best epoch's weights at the end.
            Defaults to False.
        start_from_epoch: int. Epochs (0-based index) before which nothing is watched
            (>= 0). Defaults to 0.
    """

    min_delta: float = Field(0.0, strict=True, allow_inf_nan=False)
    patience: int = Field(0, strict=True, ge=0)
    baseline: float | None = Field(None, strict=True)
    restore_best_weights: bool = Field(False, strict=True)
    start_from_epoch: int = Field(0, strict=True, ge=0)


class EarlyStop(MonitorPolicy):
    """Stop training when ``monitor`` has stopped improving (EarlyStopping).

    Example::

        engine = Engine([EarlyStop(monitor="val_loss", patience=3, restore_best_weights=True)])

    Args:
        settings: EarlyStopSettings, or the same fields as keyword arguments.
    """

    name: ClassVar[str] = "early_stop"
    Settings: ClassVar[type[PolicySettings]] = EarlyStopSettings
    settings: EarlyStopSettings
    # Not rewound by a rollback: its best weights live in one checkpoint name that each new best
    # overwrites, so an older state could name weights that are gone.
    rewinds: ClassVar[bool] = False

    def reset(self) -> None:
        """Keras's ``on_train_begin``: every counter and the best afresh."""
        super().reset()
        self.wait = 0
        self.stopped_epoch = 0
        self.best: float | None = None
        self.best_epoch = 0
        self.best_checkpoint: str | None = None  # Keras's best_weights, as a checkpoint name
        self.has_best_weights = False

    def on_start(self, record: StartRecord, run: RunView) -> Sequence[Action]:
        self.reset()
        return ()

    def decide_epoch(self, record: EpochRecord, run: RunView) -> Sequence[Action]:
        s = self.settings
        epoch = record.epoch
        current = self._monitor.value(record.logs)
        if current is None or epoch < s.start_from_epoch:
            return self._restore_at_last_epoch(record, run, [])
        actions: list[Action] = []
        if s.restore_best_weights and not self.has_best_weights:
            # Keras: "if best weights were never set, then the current weights are the best".
            self.best_epoch = epoch
            actions += self._capture(record, run)
        self.wait += 1
        if self._monitor.is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if s.restore_best_weights and not actions:
                actions += self._capture(record, run)
            if s.baseline is None or self._monitor.is_improvement(current, s.baseline):
                self.wait = 0
            return self._restore_at_last_epoch(record, run, actions)
        if self.wait >= s.patience and epoch > 0:
            self.stopped_epoch = epoch
            best = "none" if self.best is None else f"{self.best:.4g}"
            epochs = "epoch" if self.wait == 1 else "epochs"
            why = (
                f"{s.monitor} {current:.4g} has not improved on best {best} (epoch {self.best_epoch + 1}) "
                f"for {self.wait} {epochs}"
            )
            actions += self._restore(why)
            actions.append(Stop(reason=f"{why}: early stopping at epoch {epoch + 1}"))
            return actions
        return self._restore_at_last_epoch(record, run, actions)

    def _capture(self, record: EpochRecord, run: RunView) -> list[Action]:
        """Keep this epoch's weights as the best: its epoch-end checkpoint, or a new one."""
        self.has_best_weights = True
        made = [c for c in run.checkpoints if c.step == record.step and c.epoch in (None, record.epoch)]
        actions: list[Action] = []
        if made:
            name = made[-1].name
        else:
            name = BEST_CHECKPOINT
            actions.append(
                SaveCheckpoint(
                    name=name,
                    reason=f"best {self.settings.monitor} so far at epoch {record.epoch + 1}: keep its weights",
                )
            )
        if name != self.best_checkpoint:
            actions.append(Keep(checkpoints=(name,), reason=f"the best weights so far (epoch {record.epoch + 1})"))
        self.best_checkpoint = name
        return actions

    def _restore(self, why: str) -> list[Action]:
        if not (self.settings.restore_best_weights and self.best_checkpoint is not None):
            return []
        return [
            Rollback(
                checkpoint=self.best_checkpoint,
                reason=f"{why}: restoring the weights of the best epoch, {self.best_epoch + 1}",
            )
        ]

    def _restore_at_last_epoch(self, record: EpochRecord, run: RunView, actions: list[Action]) -> list[Action]:
        # Keras restores the best weights at on_train_end even when training ran to the end.
        if run.epochs is not None and record.epoch == run.epochs - 1 and self.best_epoch != record.epoch:
            actions = actions + self._restore(f"the last epoch, {record.epoch + 1}, has ended")
        return actions

    def own_state(self) -> dict[str, Any]:
        return {
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_checkpoint": self.best_checkpoint,
            "has_best_weights": self.has_best_weights,
        }

    def load_own_state(self, state: dict[str, Any]) -> None:
        expected = set(self.own_state())
        if set(state) != expected:
            raise ValueError(f"policy 'early_stop' state must have keys {sorted(expected)}; got {sorted(state)}")
        for key in ("wait", "stopped_epoch", "best_epoch"):
            value = state[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"policy 'early_stop' state: {key} must be an int >= 0; got {value!r}")
        best = state["best"]
        if best is not None and (not isinstance(best, (int, float)) or isinstance(best, bool)):
            raise ValueError(f"policy 'early_stop' state: best must be a number or None; got {best!r}")
        self.wait, self.stopped_epoch, self.best_epoch = state["wait"], state["stopped_epoch"], state["best_epoch"]
        self.best = None if best is None else float(best)
        self.best_checkpoint = state["best_checkpoint"]
        self.has_best_weights = bool(state["has_best_weights"])


__all__ = ["BEST_CHECKPOINT", "EarlyStop", "EarlyStopSettings"]
