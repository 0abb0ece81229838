"""Typed actions: what a policy decides. The engine turns them into commands.

Each action carries the deciding policy's name (stamped by the engine) and a
human-readable reason naming the metric values behind it; both go to the journal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

# Schedules: the spec format and its checks live in lrsup.supervisor.protocol.schedules (standard
# library only, shared with the agent, which evaluates the spec at every batch).
from lrsup.supervisor.protocol.schedules import validate_spec as _validate_schedule


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
    # A stop that gives up on a run (repeated divergence past the cap): exit status 3.
    give_up: bool = False


@dataclass(frozen=True, kw_only=True)
class Rollback(Action):
    """Restore weights and optimizer state from a checkpoint in the running trainer.

    Args:
        checkpoint: a checkpoint name; None picks the newest known-good checkpoint
            taken at or before ``before_step`` (or any step when that is None too).
        before_step: see ``checkpoint``.
        best: pick the best checkpoint by the monitored metric instead.
        lr: the LR to train on with after the restore; or
        lr_factor: multiply the LR the checkpoint was taken at by this factor.
        skip_batches: batches to skip after the restore (the data iterator is not
            rewound, so training after a rollback always sees new batches).
    """

    kind: ClassVar[str] = "rollback"
    checkpoint: str | None = None
    before_step: int | None = None
    best: bool = False
    lr: float | None = None
    lr_factor: float | None = None
    skip_batches: int = 0


@dataclass(frozen=True, kw_only=True)
class SaveCheckpoint(Action):
    """Ask the trainer for a checkpoint now (besides the regular cadence).

    Args:
        name: the checkpoint's name (1 to 100 of ``A-Z a-z 0-9 _ . -``); None lets the
            agent pick one. A name already in use replaces that checkpoint.
    """

    kind: ClassVar[str] = "checkpoint"
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class ClearSchedule(Action):
    """Drop lrsup's schedule (set by SetSchedule); the effective LR stays where it is."""

    kind: ClassVar[str] = "clear_schedule"


@dataclass(frozen=True, kw_only=True)
class Configure(Action):
    """Change the agent's cadence; None leaves a setting as it is.

    Args:
        batch_every: a batch record every this many steps (>= 1).
        batch_min_interval: seconds at least between two batch records (>= 0; 0: a record at
            every multiple of ``batch_every``, as an LR range test needs).
        checkpoint_every_epochs: a checkpoint every this many epochs (0: off).
        checkpoint_every_steps: a checkpoint every this many steps (0: off).
    """

    kind: ClassVar[str] = "configure"
    batch_every: int | None = None
    batch_min_interval: float | None = None
    checkpoint_every_epochs: int | None = None
    checkpoint_every_steps: int | None = None


@dataclass(frozen=True, kw_only=True)
class Keep(Action):
    """The checkpoints this policy needs kept: replaces the policy's previous set.

    The engine sends the agent the union of every policy's set, with the known-good and
    the best checkpoint, in a ``retain`` command. ``Keep(checkpoints=())`` releases them.
    A name may be one asked for with SaveCheckpoint whose record has not arrived yet.
    """

    kind: ClassVar[str] = "keep"
    checkpoints: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Retain(Action):
    """Decided by the engine (policy ``"engine"``), never by a policy: the agent's retain list."""

    kind: ClassVar[str] = "retain"
    keep: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SetSchedule(Action):
    """Drive the learning rate by ``schedule``, a spec the agent evaluates at every step.

    The effective LR becomes ``evaluate(schedule, step) * multiplier``, where the
    multiplier is what ScaleLR and SetLR act on. ``schedule`` is validated (a bad spec
    raises ValueError here, in the policy) and stored normalised, defaults filled in.

    Example::

        SetSchedule(schedule={"kind": "cosine_decay", "initial_learning_rate": 0.1,
                              "decay_steps": 5000}, reason="cosine over 50 epochs")
    """

    kind: ClassVar[str] = "set_schedule"
    schedule: dict

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", _validate_schedule(self.schedule))
