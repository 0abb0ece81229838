"""Turning one action into a command: the checks and the arithmetic, as pure functions.

Each function takes the engine's view of the run as arguments and says what the
action would send (and the LR and multiplier after it), or why it cannot be sent
("invalid: ...", "no change (...)", "no checkpoint to roll back to: ..."). Which of
the record's actions takes effect is the composition's business
(:mod:`lrsup.supervisor.engine.composition`); applying it is the engine's.

Example::

    plan = lr_plan(ScaleLR(factor=0.5), lr=0.01, schedule=None, multiplier=None, step=400)
    # LRPlan(command=SetLRCommand(lr=0.005), lr=0.005, multiplier=None, why=None)
"""

from __future__ import annotations

import math
from typing import NamedTuple

from lrsup.policies.actions import Action, Configure, Rollback, ScaleLR, SetLR
from lrsup.policies.base import pick_checkpoint
from lrsup.policies.monitor import to_float32
from lrsup.supervisor.engine.checkpoint_book import CheckpointBook, TrackedCheckpoint
from lrsup.supervisor.engine.decision import Decision
from lrsup.supervisor.protocol.bounds import check_agent_setting
from lrsup.supervisor.protocol.commands import (
    ConfigureCommand,
    RollbackCommand,
    ScaleLRCommand,
    SetLRCommand,
    is_valid_lr,
)
from lrsup.supervisor.protocol.schedules import evaluate
from lrsup.supervisor.protocol.wire import CADENCE_FIELDS

# The agent's cadence settings a Configure may change (the configure command's fields).
CADENCE = CADENCE_FIELDS


class LRPlan(NamedTuple):
    """What a SetLR or ScaleLR would send: the command and the LR and multiplier after it, or why not."""

    command: SetLRCommand | ScaleLRCommand | None
    lr: float | None  # the effective LR after it, when known
    multiplier: float | None  # lrsup's multiplier after it, while a schedule is in force
    why: str | None = None  # why it is not sent ("invalid: ...", "no change (...)"); then command is None


class RollbackPlan(NamedTuple):
    """Where a Rollback would go and the LR after it, or why it cannot be sent."""

    target: TrackedCheckpoint | None
    lr: float | None  # the LR the command sets (None: the checkpoint's own)
    why: str | None = None


def _no_lr_plan(why: str) -> LRPlan:
    return LRPlan(None, None, None, why)


def rollback_plan(action: Rollback, book: CheckpointBook, lr_now: float | None = None) -> RollbackPlan:
    """The checkpoint ``action`` goes to and the LR after it, or why it cannot be sent.

    ``lr_now``: given while the script owns the LR, ``lr_factor`` cuts the lower of the
    script's LR now (the LR that failed) and the checkpoint's.
    """
    if action.lr is not None and not is_valid_lr(action.lr):
        return RollbackPlan(None, None, f"invalid: lr must be finite and >= 0 (got {action.lr!r})")
    if action.lr_factor is not None and not (math.isfinite(action.lr_factor) and action.lr_factor > 0):
        return RollbackPlan(None, None, f"invalid: lr_factor must be finite and > 0 (got {action.lr_factor!r})")
    if not isinstance(action.skip_batches, int) or action.skip_batches < 0:
        return RollbackPlan(None, None, f"invalid: skip_batches must be an int >= 0 (got {action.skip_batches!r})")
    if action.checkpoint is not None:
        target = book.get(action.checkpoint)
        if target is None:
            known = ", ".join(c.name for c in book.infos()) or "none"
            why = f"no checkpoint to roll back to: no checkpoint named {action.checkpoint!r} (known: {known})"
            return RollbackPlan(None, None, why)
    elif action.best:
        target, why = book.best()
        if target is None:
            return RollbackPlan(None, None, f"no checkpoint to roll back to: {why}")
    else:
        info, why = pick_checkpoint(book.infos(), action.before_step)
        if info is None:
            return RollbackPlan(None, None, f"no checkpoint to roll back to: {why}")
        target = book.get(info.name)
    if action.lr is not None:
        lr = float(action.lr)
    elif action.lr_factor is not None and lr_now is not None:
        base = lr_now if target.lr is None else min(lr_now, target.lr)  # type: ignore[union-attr]
        lr = base * action.lr_factor
    elif action.lr_factor is not None and target.lr is not None:  # type: ignore[union-attr]
        lr = target.lr * action.lr_factor  # type: ignore[union-attr]
    else:
        lr = None
    return RollbackPlan(target, lr)


def rollback_command(action: Rollback, target: TrackedCheckpoint, lr: float | None) -> RollbackCommand:
    return RollbackCommand(target.name, action.skip_batches, lr)


def lr_plan(
    action: SetLR | ScaleLR, *, lr: float | None, schedule: dict | None, multiplier: float | None, step: int | None
) -> LRPlan:
    """What a SetLR or ScaleLR sends, given the effective LR and the lrsup schedule in force (if any)."""
    current = lr
    if isinstance(action, SetLR):
        target = float(action.lr)
        if not is_valid_lr(target):
            return _no_lr_plan(f"invalid: lr must be finite and >= 0 (got {action.lr!r})")
        if current is not None and to_float32(target) == to_float32(current):
            return _no_lr_plan(f"no change (LR already {current:.6g})")
        new_multiplier = multiplier_for(schedule, target, step) if schedule is not None else None
        return LRPlan(SetLRCommand(target), target, new_multiplier)
    factor, min_lr = float(action.factor), float(action.min_lr)
    if not (math.isfinite(factor) and factor > 0):
        return _no_lr_plan(f"invalid: factor must be finite and > 0 (got {action.factor!r})")
    if not (math.isfinite(min_lr) and min_lr >= 0):
        return _no_lr_plan(f"invalid: min_lr must be finite and >= 0 (got {action.min_lr!r})")
    if current is None:
        new_multiplier = None if multiplier is None else multiplier * factor
        return LRPlan(ScaleLRCommand(factor), None, new_multiplier)
    target = max(current * factor, min_lr)
    if to_float32(target) == to_float32(current):
        return _no_lr_plan(f"no change (LR already {current:.6g})")
    if schedule is None:
        return LRPlan(SetLRCommand(target), target, None)
    effective = target / current if current > 0 else factor
    if effective >= 1.0:
        return _no_lr_plan(f"no change (LR {current:.6g} is not above min_lr {min_lr:.6g})")
    new_multiplier = None if multiplier is None else multiplier * effective
    return LRPlan(ScaleLRCommand(effective), target, new_multiplier)


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
    return Decision(action, ConfigureCommand(**changes), None, epoch, step)
