"""Typed actions: what a policy decides. The engine turns them into commands.

Each action carries the deciding policy's name (stamped by the engine) and a
human-readable reason naming the metric values behind it; both go to the journal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, kw_only=True)
class Action:
    kind: ClassVar[str] = ""
    reason: str
    policy: str = ""


@dataclass(frozen=True, kw_only=True)
class SetLR(Action):
    """Set the effective learning rate to ``lr``."""

    kind: ClassVar[str] = "set_lr"
    lr: float


@dataclass(frozen=True, kw_only=True)
class ScaleLR(Action):
    """Multiply the effective learning rate by ``factor``, never going below ``min_lr``.

    Reactive policies (plateau cuts) use this: under a schedule it scales the
    schedule instead of replacing it.
    """

    kind: ClassVar[str] = "scale_lr"
    factor: float
    min_lr: float = 0.0


@dataclass(frozen=True, kw_only=True)
class SetHparam(Action):
    """Set another optimizer hyperparameter (momentum, weight_decay, beta_1, ...)."""

    kind: ClassVar[str] = "set_hparam"
    name: str
    value: float


@dataclass(frozen=True, kw_only=True)
class Stop(Action):
    """End training cleanly at the end of the current epoch (exit status 0)."""

    kind: ClassVar[str] = "stop"
