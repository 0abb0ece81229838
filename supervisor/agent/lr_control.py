"""The learning rate as the agent sets it: straight on the optimizer, or as lrsup's
schedule times a multiplier.

Owns ``LrControl``, the agent's collaborator that applies ``set_lr`` / ``scale_lr`` /
``set_schedule`` and restores a checkpoint's schedule and multiplier. While an lrsup
schedule is active the LR is ``schedule(step) * multiplier``: ``set_lr`` changes the
multiplier to ``lr / schedule(step)``, ``scale_lr`` multiplies it. Standard library only
(plus ``lrsup.supervisor.protocol.schedules``).

It also knows what else moves the LR (issue 13: one owner per learning rate): the LR as
lrsup last left it (``left``), so that an epoch whose LR differs from it shows an LR change
lrsup did not command (``moved_from``), and which of the script's Keras callbacks own the LR
(``lr_callback_names``, ``leave_out_lr_callbacks``: by class and base-class name, without
importing keras).

Example::

    lr = LrControl()
    lr.set_schedule(handle, {"kind": "cosine", ...}, step=0)
    lr.apply(handle, step)          # before each batch while ``lr.schedule`` is not None
    lr.moved_from(lr_of(handle))    # at an epoch end: the LR lrsup had left, if something else moved it
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

from lrsup.supervisor.agent.checkpoints import CheckpointEntry
from lrsup.supervisor.agent.handle import OptimizerHandle
from lrsup.supervisor.protocol.schedules import Schedule

# The Keras callbacks that own a learning rate, by class name; a subclass is known by its bases' names.
LR_CALLBACK_CLASSES = frozenset({"ReduceLROnPlateau", "LearningRateScheduler"})

# Two LRs closer than this (relative) are the same: a float32 variable holds 7 digits.
LR_RTOL = 1e-5


def is_lr_callback(callback: Any) -> bool:
    """True for a ReduceLROnPlateau, a LearningRateScheduler or a subclass of either (by MRO names)."""
    return any(cls.__name__ in LR_CALLBACK_CLASSES for cls in type(callback).__mro__)


def _flat(callbacks: Any) -> Iterator[Any]:
    items = getattr(callbacks, "callbacks", callbacks)  # a keras CallbackList holds a list
    if isinstance(items, (list, tuple)):
        for item in items:
            yield from _flat(item)
    elif items is not None:
        yield items


def lr_callback_names(callbacks: Any) -> list[str]:
    """The class names of the LR callbacks in what fit was given (None, a callback, nested lists, a CallbackList)."""
    return [type(c).__name__ for c in _flat(callbacks) if is_lr_callback(c)]


def leave_out_lr_callbacks(callbacks: Any) -> tuple[Any, bool]:
    """``callbacks`` without its LR callbacks, and whether any was left out.

    Lists and tuples are rebuilt (the script's own objects are never changed); a keras
    CallbackList is returned as it is, with False: it cannot be filtered without changing it.
    """
    if isinstance(callbacks, (list, tuple)):
        kept: list[Any] = []
        dropped = False
        for item in callbacks:
            if isinstance(item, (list, tuple)):
                item, gone = leave_out_lr_callbacks(item)
                dropped = dropped or gone
            elif is_lr_callback(item):
                dropped = True
                continue
            kept.append(item)
        return (kept, True) if dropped else (callbacks, False)
    if callbacks is not None and not hasattr(callbacks, "callbacks") and is_lr_callback(callbacks):
        return [], True
    return callbacks, False


class LrControl:
    """lrsup's own LR schedule: ``schedule`` (None: the optimizer's LR is set directly) and ``multiplier``.

    ``left`` is the LR as lrsup last left it (at a fit's start, after each command, at each
    step of lrsup's schedule); None when it is not watched (``watch`` False: the optimizer's
    own LearningRateSchedule moves the LR at every step).
    """

    def __init__(self) -> None:
        self.schedule: Schedule | None = None
        self.multiplier = 1.0
        self.watch = True
        self.left: float | None = None

    def leave(self, lr: float | None) -> None:
        """The LR is ``lr`` as lrsup leaves it (a fit's start, a command applied)."""
        self.left = lr if self.watch else None

    def moved_from(self, lr: float | None) -> float | None:
        """The LR lrsup had left, when ``lr`` (read now) differs from it: something else moved it; else None.

        From here on ``lr`` counts as left, so each change is reported once.
        """
        left, self.left = self.left, (lr if self.watch else None)
        if left is None or lr is None or abs(lr - left) <= LR_RTOL * max(abs(left), abs(lr)):
            return None
        return left

    def apply(self, handle: OptimizerHandle, step: int) -> None:
        """Set the LR to ``schedule(step) * multiplier`` (only while a schedule is active)."""
        lr = self.schedule(step) * self.multiplier  # type: ignore[misc]
        handle.set_lr(lr)
        self.left = lr if self.watch else None

    def set_lr(self, handle: OptimizerHandle, lr: float, step: int) -> None:
        if self.schedule is None:
            handle.set_lr(lr)
            return
        base = self.schedule(step)
        if not (math.isfinite(base) and base > 0):
            raise ValueError(f"lrsup's schedule gives {base!r} at step {step}; no multiplier turns it into {lr!r}")
        self.multiplier = lr / base
        self.apply(handle, step)

    def scale_lr(self, handle: OptimizerHandle, factor: float, step: int) -> None:
        if self.schedule is None:
            handle.scale_lr(factor)
            return
        self.multiplier *= factor
        self.apply(handle, step)

    def set_schedule(self, handle: OptimizerHandle, spec: Mapping[str, Any], step: int) -> None:
        """Drive the LR by ``spec`` from ``step`` on (ValueError for a handle with a native schedule)."""
        native = getattr(handle, "native_schedule", None)
        if native is not None:
            raise ValueError(
                f"the optimizer's learning rate is a {native}; lrsup schedules drive a float learning "
                "rate only (use set_lr / scale_lr, which scale the optimizer's own schedule)"
            )
        self.schedule = Schedule(spec)
        self.multiplier = 1.0
        self.apply(handle, step)

    def clear(self) -> None:
        """Drop the schedule; the LR stays where it is."""
        self.schedule = None
        self.multiplier = 1.0

    def meta(self) -> dict[str, Any]:
        """What a checkpoint keeps of it (``restore`` reads it back)."""
        return {
            "lrsup_schedule": self.schedule.spec if self.schedule is not None else None,
            "lrsup_multiplier": self.multiplier,
        }

    def restore(self, entry: CheckpointEntry) -> None:
        """The schedule and multiplier as they were when ``entry`` was saved."""
        spec = entry.meta.get("lrsup_schedule")
        self.schedule = Schedule(spec) if spec else None
        multiplier = entry.meta.get("lrsup_multiplier")
        self.multiplier = float(multiplier) if multiplier is not None else 1.0
