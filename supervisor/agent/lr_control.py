"""The learning rate as the agent sets it: straight on the optimizer, or as lrsup's
schedule times a multiplier.

Owns ``LrControl``, the part of ``Agent`` that applies ``set_lr`` / ``scale_lr`` /
``set_schedule`` and restores a checkpoint's schedule and multiplier. While an lrsup
schedule is active the LR is ``schedule(step) * multiplier``: ``set_lr`` changes the
multiplier to ``lr / schedule(step)``, ``scale_lr`` multiplies it. Standard library only
(plus ``lrsup.supervisor.protocol.schedules``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from lrsup.supervisor.agent.checkpoints import CheckpointEntry
from lrsup.supervisor.agent.handle import OptimizerHandle
from lrsup.supervisor.protocol.schedules import Schedule


class LrControl:
    """lrsup's own LR schedule for ``Agent``: ``_schedule`` (or None) and ``_multiplier``."""

    _schedule: Schedule | None
    _multiplier: float
    _position: tuple[int | None, int]

    def _apply_schedule(self, handle: OptimizerHandle, step: int) -> None:
        handle.set_lr(self._schedule(step) * self._multiplier)  # type: ignore[misc]

    def _set_lr(self, handle: OptimizerHandle, lr: float) -> None:
        if self._schedule is None:
            handle.set_lr(lr)
            return
        step = self._position[1]
        base = self._schedule(step)
        if not (math.isfinite(base) and base > 0):
            raise ValueError(f"lrsup's schedule gives {base!r} at step {step}; no multiplier turns it into {lr!r}")
        self._multiplier = lr / base
        self._apply_schedule(handle, step)

    def _scale_lr(self, handle: OptimizerHandle, factor: float) -> None:
        if self._schedule is None:
            handle.scale_lr(factor)
            return
        self._multiplier *= factor
        self._apply_schedule(handle, self._position[1])

    def _set_schedule(self, handle: OptimizerHandle, spec: Mapping[str, Any]) -> None:
        native = getattr(handle, "native_schedule", None)
        if native is not None:
            raise ValueError(
                f"the optimizer's learning rate is a {native}; lrsup schedules drive a float learning "
                "rate only (use set_lr / scale_lr, which scale the optimizer's own schedule)"
            )
        self._schedule = Schedule(spec)
        self._multiplier = 1.0
        self._apply_schedule(handle, self._position[1])

    def _restore_schedule(self, entry: CheckpointEntry) -> None:
        spec = entry.meta.get("lrsup_schedule")
        self._schedule = Schedule(spec) if spec else None
        multiplier = entry.meta.get("lrsup_multiplier")
        self._multiplier = float(multiplier) if multiplier is not None else 1.0
