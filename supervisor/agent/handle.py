"""``OptimizerHandle``: the protocol of what the agent drives in the training process.

The agent never touches an optimizer itself; it calls these methods. The Keras adapter
(``keras_callback.KerasOptimizerHandle``) implements them for Keras 3; a custom training
loop passes its own object (one without ``save_state`` takes no checkpoints).
Standard library only.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol


class OptimizerHandle(Protocol):
    """What the agent drives; the Keras adapter (``KerasOptimizerHandle``) implements it."""

    def get_lr(self) -> float | None:
        """The effective learning rate now (None when it cannot be read)."""

    def set_lr(self, lr: float) -> None:
        """Set the effective learning rate; under a schedule it becomes a multiplier."""

    # Optional: ``recent_lr() -> float | None``, the learning rate as last read or set, when that
    # is recent enough to stand for the current one; the agent uses it for batch records when the
    # handle has it (reading the LR can cost far more than the rest of a record), ``get_lr``
    # otherwise and for every other record.

    def scale_lr(self, factor: float) -> None:
        """Multiply the effective learning rate (or the schedule's multiplier)."""

    def set_hparam(self, name: str, value: float) -> None:
        """Set another hyperparameter; ValueError if the optimizer has no such number."""

    def request_stop(self) -> None:
        """Finish this epoch, then end fit cleanly."""

    # -- checkpoints (used when the agent saves, rolls back or restores) --

    state_suffix: str
    """The file-name ending of ``save_state`` files (".weights.h5" for Keras)."""

    @property
    def native_schedule(self) -> str | None:
        """The class name of the optimizer's own LR schedule, or None for a plain float LR;
        read-only for the agent."""

    # Required when ``native_schedule`` is set (lrsup's ``set_schedule`` over the optimizer's own
    # schedule drives its multiplier, and ``clear_schedule`` puts the multiplier back):
    # ``native_multiplier() -> float`` and ``set_native_multiplier(value: float) -> None``.

    def save_state(self, path: str) -> Mapping[str, Any] | None:
        """Write the weights and the optimizer state to ``path``; return extra meta to keep
        with it (JSON-safe: e.g. ``{"multiplier": 0.5}``)."""

    def load_state(self, path: str, meta: Mapping[str, Any]) -> None:
        """Load what ``save_state`` wrote to ``path`` (weights, optimizer state, its step counter
        included) and the meta it returned."""

    def set_step(self, step: int) -> None:
        """After a rollback: the global step is now ``step`` (the checkpoint's). The handle sets
        the optimizer's step counter and tells its training loop, whose next batch is ``step + 1``
        (and resets running metrics, if it keeps any)."""
