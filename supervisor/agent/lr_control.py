"""The learning rate as the agent sets it: straight on the optimizer, or as lrsup's
schedule times a multiplier.

Owns ``LrControl``, the agent's collaborator that applies ``set_lr`` / ``scale_lr`` /
``set_schedule`` and restores a checkpoint's schedule and multiplier. While an lrsup
schedule is active the LR is ``schedule(step) * multiplier``: ``set_lr`` changes the
multiplier to ``lr / schedule(step)``, ``scale_lr`` multiplies it. Standard library only
(plus ``lrsup.supervisor.protocol.schedules``).

Example::

    lr = LrControl()
    lr.set_schedule(handle, {"kind": "cosine", ...}, step=0)
    lr.apply(handle, step)          # before each batch while ``lr.schedule`` is not None
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from lrsup.supervisor.agent.checkpoints import CheckpointEntry
from lrsup.supervisor.agent.handle import OptimizerHandle
from lrsup.supervisor.protocol.schedules import Schedule


class LrControl:
    """lrsup's own LR schedule: ``schedule`` (None: the optimizer's LR is set directly) and ``multiplier``."""

    def __init__(self) -> None:
        self.schedule: Schedule | None = None
        self.multiplier = 1.0
        # Over an optimizer's own schedule: its multiplier before lrsup's schedule (clear puts it back).
        self.native_multiplier: float | None = None

    def apply(self, handle: OptimizerHandle, step: int) -> None:
        """Set the LR to ``schedule(step) * multiplier`` (only while a schedule is active)."""
        handle.set_lr(self.schedule(step) * self.multiplier)  # type: ignore[misc]

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
        """Drive the LR by ``spec`` from ``step`` on.

        Over an optimizer's own LearningRateSchedule (``handle.native_schedule``) the effective
        LR follows lrsup's schedule all the same: ``handle.set_lr`` sets the multiplier over the
        script's schedule to ``lrsup's LR / schedule(step)`` at each step. The multiplier in
        force before is kept (``native_multiplier``) and put back by ``clear``, so that the
        script's own schedule resumes exactly as it was.
        """
        schedule = Schedule(spec)
        if self.schedule is None and getattr(handle, "native_schedule", None) is not None:
            self.native_multiplier = float(handle.native_multiplier())  # type: ignore[attr-defined]
        self.schedule = schedule
        self.multiplier = 1.0
        self.apply(handle, step)

    def clear(self, handle: OptimizerHandle | None = None) -> None:
        """Drop the schedule. A float LR stays where it is; over the optimizer's own schedule
        the multiplier goes back to what it was before lrsup's schedule (the script's schedule,
        as it was scaled)."""
        if self.schedule is not None and self.native_multiplier is not None and handle is not None:
            handle.set_native_multiplier(self.native_multiplier)  # type: ignore[attr-defined]
        self.schedule = None
        self.multiplier = 1.0
        self.native_multiplier = None

    def meta(self) -> dict[str, Any]:
        """What a checkpoint keeps of it (``restore`` reads it back)."""
        return {
            "lrsup_schedule": self.schedule.spec if self.schedule is not None else None,
            "lrsup_multiplier": self.multiplier,
            "lrsup_native_multiplier": self.native_multiplier,
        }

    def restore(self, entry: CheckpointEntry) -> None:
        """The schedule and multiplier as they were when ``entry`` was saved."""
        spec = entry.meta.get("lrsup_schedule")
        self.schedule = Schedule(spec) if spec else None
        multiplier = entry.meta.get("lrsup_multiplier")
        self.multiplier = float(multiplier) if multiplier is not None else 1.0
        native = entry.meta.get("lrsup_native_multiplier") if self.schedule is not None else None
        self.native_multiplier = float(native) if native is not None else None
