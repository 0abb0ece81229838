"""Turning one action into a command: the checks and the arithmetic, as pure functions.

Each function takes the engine's view of the run as arguments and says what the
action would send (and the LR and multiplier after it), or why it cannot be sent
("invalid: ...", "no change (...)", "no checkpoint to roll back to: ..."). Which of
the record's actions takes effect is the composition's business
(:mod:`lrsup.supervisor.engine.composition`); applying it is the engine's.

Example::

    command, lr, multiplier, why = lr_plan(ScaleLR(factor=0.5), lr=0.01, schedule=None,
                                           multiplier=None, step=400)
    # ({"cmd": "set_lr", "lr": 0.005}, 0.005, None, None)
"""

from __future__ import annotations

import math
from typing import Any

from lrsup.policies.actions import Action, Configure, Rollback, ScaleLR, SetLR
from lrsup.policies.base import pick_checkpoint
from lrsup.policies.monitor import to_float32
from lrsup.supervisor.engine.checkpoint_book import CheckpointBook, TrackedCheckpoint
from lrsup.supervisor.engine.decision import Decision
from lrsup.supervisor.protocol.bounds import check_agent_setting
from lrsup.supervisor.protocol.schedules import evaluate
from lrsup.supervisor.protocol.wire import CADENCE_FIELDS

# The agent's cadence settings a Configure may change (the configure command's fields).
CADENCE = CADENCE_FIELDS

# (command or None, new LR or None, new multiplier or None, why suppressed or None).
LRPlan = tuple[dict | None, float | None, float | None, str | None]


def rollback_plan(action: Rollback, book: CheckpointBook) -> tuple[TrackedCheckpoint | None, float | None, str | None]:
    """(target, LR after it or None, why it cannot be sent or None)."""
    if action.lr is not None and not (math.isfinite(action.lr) and action.lr >= 0):
        return None, None, f"invalid: lr must be finite and >= 0 (got {action.lr!r})"
    if action.lr_factor is not None and not (math.isfinite(action.lr_factor) and action.lr_factor > 0):
        return None, None, f"invalid: lr_factor must be finite and > 0 (got {action.lr_factor!r})"
    if not isinstance(action.skip_batches, int) or action.skip_batches < 0:
        return None, None, f"invalid: skip_batches must be an int >= 0 (got {action.skip_batches!r})"
    if action.checkpoint is not None:
        target = book.get(action.checkpoint)
        if target is None:
            known = ", ".join(c.name for c in book.infos()) or "none"
            return (
                None,
                None,
                (f"no checkpoint to roll back to: no checkpoint named {action.checkpoint!r} (known: {known})"),
            )
    elif action.best:
        target, why = book.best()
        if target is None:
            return None, None, f"no checkpoint to roll back to: {why}"
    else:
        info, why = pick_checkpoint(book.infos(), action.before_step)
        if info is None:
            return None, None, f"no checkpoint to roll back to: {why}"
        target = book.get(info.name)
    if action.lr is not None:
        lr = float(action.lr)
    elif action.lr_factor is not None and target.lr is not None:  # type: ignore[union-attr]
        lr = target.lr * action.lr_factor  # type: ignore[union-attr]
    else:
        lr = None
    return target, lr, None


def rollback_command(action: Rollback, target: TrackedCheckpoint, lr: float | None) -> dict[str, Any]:
    command: dict[str, Any] = {"cmd": "rollback", "checkpoint": target.name, "skip_batches": action.skip_batches}
    if lr is not None:
        command["lr"] = lr
    return command


def lr_plan(
    action: SetLR | ScaleLR, *, lr: float | None, schedule: dict | None, multiplier: float | None, step: int | None
) -> LRPlan:
    """What a SetLR or ScaleLR sends, given the effective LR and the lrsup schedule in force (if any)."""
    current = lr
    if isinstance(action, SetLR):
        target = float(action.lr)
        if not (math.isfinite(target) and target >= 0):
            return None, None, None, f"invalid: lr must be finite and >= 0 (got {action.lr!r})"
        if current is not None and to_float32(target) == to_float32(current):
            return None, None, None, f"no change (LR already {current:.6g})"
        new_multiplier = multiplier_for(schedule, target, step) if schedule is not None else None
        return {"cmd": "set_lr", "lr": target}, target, new_multiplier, None
    factor, min_lr = float(action.factor), float(action.min_lr)
    if not (math.isfinite(factor) and factor > 0):
        return None, None, None, f"invalid: factor must be finite and > 0 (got {action.factor!r})"
    if not (math.isfinite(min_lr) and min_lr >= 0):
        return None, None, None, f"invalid: min_lr must be finite and >= 0 (got {action.min_lr!r})"
    if current is None:
        new_multiplier = None if multiplier is None else multiplier * factor
        return {"cmd": "scale_lr", "factor": factor}, None, new_multiplier, None
    target = max(current * factor, min_lr)
    if to_float32(target) == to_float32(current):
        return None, None, None, f"no change (LR already {current:.6g})"
    if schedule is None:
        return {"cmd": "set_lr", "lr": target}, target, None, None
    effective = target / current if current > 0 else factor
    if effective >= 1.0:
        return None, None, None, f"no change (LR {current:.6g} is not above min_lr {min_lr:.6g})"
    new_multiplier = None if multiplier is None else multiplier * effective
    return {"cmd": "scale_lr", "factor": effective}, target, new_multiplier, None


def multiplier_for(schedule: dict | None, lr: float, step: int | None) -> float | None:
    """lrsup's multiplier that makes ``schedule`` give ``lr`` at ``step`` (None if unknowable)."""
    if schedule is None or step is None:
        return None
    base = evaluate(schedule, step)
    return lr / base if base > 0 and math.isfinite(base) else None


def configure_decision(
    action: Configure, configured: dict[str, Action], cadence: dict[str, float], epoch: int | None, step: int
) -> Decision:
    """A Configure as a decision: only the settings that differ from ``cadence`` and no earlier
    Configure on the record set. ``configured`` and ``cadence`` are updated with what is sent."""
    asked = {k: getattr(action, k) for k in CADENCE if getattr(action, k) is not None}
    for key, value in asked.items():
        try:
            asked[key] = check_agent_setting(key, value)
        except ValueError as exc:
            return Decision(action, None, None, epoch, step, f"invalid: {exc}")
    taken = {k: configured[k] for k in asked if k in configured}
    changes = {k: v for k, v in asked.items() if k not in taken and cadence[k] != v}
    if not changes:
        if taken:
            key, first = next(iter(taken.items()))
            why = f"another configure (policy {first.policy}) already set {key} at step {step}"
        elif asked:
            why = "no change (" + ", ".join(f"{k} already {v}" for k, v in asked.items()) + ")"
        else:
            why = "no change (no setting given)"
        return Decision(action, None, None, epoch, step, why)
    for key, value in changes.items():
        configured[key] = action
        cadence[key] = value
    return Decision(action, {"cmd": "configure", **changes}, None, epoch, step)
