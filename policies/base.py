"""The policy interface: records in, typed actions out.

A policy is pure: no IO, no clock, no keras. It sees the trainer's records in
order through no-op hooks (override the ones you need; the engine never calls a
hook a policy did not override) and returns actions, each with its reason. Its
settings are a pydantic model with unknown keys forbidden; its state is a JSON-safe
dict so that a supervisor can be resumed.

Example::

    class HalveEveryTen(Policy):
        name = "halve_every_ten"

        def on_epoch(self, record, run):
            if record.epoch % 10 == 9:
                return [ScaleLR(factor=0.5, reason=f"epoch {record.epoch + 1} is a multiple of 10")]
            return []
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict

from lrsup.policies.actions import Action
from lrsup.supervisor.protocol.wire import AckRecord, BatchRecord, EndRecord, EpochRecord, StartRecord


class PolicySettings(BaseModel):
    """Base of every policy's settings: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint the engine knows of, from the trainer's ``checkpoint`` records.

    Args:
        name: str. The name to roll back to.
        step: int. The optimizer step of its weights.
        epoch: int or None. The epoch it was taken in (None: before a fit's first batch).
        lr: float or None. The effective LR when it was taken.
        multiplier: float or None. lrsup's LR multiplier then.
        good: bool. Known good: a later epoch record showed a finite loss (and val_loss).
        start: bool. Taken at the start of a fit, before any update of that fit.
        metrics: dict or None. The logs of the epoch record at its step (an epoch-end
            checkpoint), when known.
    """

    name: str
    step: int
    epoch: int | None = None
    lr: float | None = None
    multiplier: float | None = None
    good: bool = False
    start: bool = False
    metrics: dict | None = None


def pick_checkpoint(
    checkpoints: Sequence[CheckpointInfo], before_step: int | None = None
) -> tuple[CheckpointInfo | None, str]:
    """The checkpoint a rollback "to before ``before_step``" goes to, and a sentence saying why.

    The newest known-good checkpoint taken at or before ``before_step`` (any step when it
    is None). When none of those is good, a start checkpoint among them (taken before any
    update of its fit, so it cannot hold diverged weights). Otherwise None, and the
    sentence says why not. The engine resolves ``Rollback(checkpoint=None)`` with this
    function, so a policy can ask the same question of ``run.checkpoints`` first.

    Example::

        target, why = pick_checkpoint(run.checkpoints, before_step=812)
        if target is None:
            return [Stop(give_up=True, reason=f"cannot roll back: {why}")]

    Args:
        checkpoints: sequence of CheckpointInfo. Usually ``run.checkpoints``.
        before_step: int or None. The step trouble started at.
    """
    at = f" at or before step {before_step}" if before_step is not None else ""
    candidates = [c for c in checkpoints if before_step is None or c.step <= before_step]
    if not candidates:
        if not checkpoints:
            return None, "no checkpoint has been taken"
        return None, f"no checkpoint{at} (the earliest is {_describe(min(checkpoints, key=_step))})"
    good = [c for c in candidates if c.good]
    if good:
        target = max(good, key=_step)
        return target, f"{target.name} (step {target.step}) is the newest known-good checkpoint{at}"
    start = [c for c in candidates if c.start]
    if start:
        target = max(start, key=_step)
        return target, f"{target.name} (step {target.step}) is the start checkpoint: none{at} is known good yet"
    listed = ", ".join(_describe(c) for c in sorted(candidates, key=_step)[-3:])
    return None, f"no known-good checkpoint{at} ({listed} not yet confirmed by a finite epoch loss)"


def _step(checkpoint: CheckpointInfo) -> int:
    return checkpoint.step


def _describe(checkpoint: CheckpointInfo) -> str:
    return f"{checkpoint.name} at step {checkpoint.step}"


@dataclass(frozen=True)
class RunView:
    """What the engine tells a policy about the run besides the record itself.

    Everything here is the current fit's (a stage of the run): a start record begins it
    afresh with that fit's LR, optimizer, epochs and checkpoints.

    Args:
        lr: the effective learning rate now, after every change decided so far.
        optimizer: the optimizer's class name from the start record (e.g. ``"SGD"``).
        optimizer_config: the optimizer's ``get_config()`` from the start record.
        steps_per_epoch: batches per epoch when Keras knows it.
        epochs: the epoch budget ``fit`` was called with.
        step: the optimizer step of the record being decided on (None before any).
        checkpoints: the checkpoints a rollback may go to, oldest first (see
            :class:`CheckpointInfo`); abandoned and unusable ones are left out, and so are
            earlier fits' (each ``fit`` of the script is a stage: its own checkpoints).
        schedule: the lrsup schedule spec in force (SetSchedule), or None.
        multiplier: lrsup's LR multiplier while a schedule is in force, else None.
        batch_every: the agent's batch-record cadence, as last configured.
        batch_min_interval: the agent's minimum seconds between batch records, as last configured.
        probing: the name of a policy running an experiment that upsets the loss on
            purpose (an LR range test), or None. Other policies should not react to
            the loss meanwhile; the engine suppresses their LR changes and rollbacks.
        start_step: the step of the latest start record (where this fit began).
        script_lr: what of the script's own moves the LR in this fit while the script owns
            it (``[run] lr_owner = "script"``, the default): its LR callbacks
            (``ReduceLROnPlateau``...), its optimizer's LearningRateSchedule, an LR change lrsup
            did not command. Empty while lrsup alone moves it. While it is not empty the engine
            consults no policy whose ``lr_role`` is ``"tunes"``.
    """

    lr: float | None = None
    optimizer: str | None = None
    optimizer_config: dict | None = None
    steps_per_epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    checkpoints: tuple[CheckpointInfo, ...] = ()
    schedule: dict | None = None
    multiplier: float | None = None
    batch_every: int | None = None
    batch_min_interval: float | None = None
    probing: str | None = None
    start_step: int = 0
    script_lr: tuple[str, ...] = ()


class Policy:
    """Base class of all policies. Subclasses set ``name`` and ``Settings``."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type[PolicySettings]] = PolicySettings
    # What the policy does to the learning rate, for the engine's one-owner rule (a declaration,
    # not a decision): "tunes" (moves it to train better: stands down in a fit whose LR the
    # script's own logic owns, ``RunView.script_lr``), "rescues" (moves it to save the run: stays
    # on), "" (does not move it).
    lr_role: ClassVar[str] = ""

    def __init__(self, settings: PolicySettings | None = None, **kwargs: Any) -> None:
        if settings is not None and kwargs:
            raise TypeError("pass either a settings object or keyword settings, not both")
        self.settings = settings if settings is not None else self.Settings(**kwargs)
        self.reset()

    def reset(self) -> None:
        """Set every piece of per-run state to its initial value."""

    # Hooks: each returns the actions decided on that record (possibly none).
    def on_start(self, record: StartRecord, run: RunView) -> Sequence[Action]:
        return ()

    def on_batch(self, record: BatchRecord, run: RunView) -> Sequence[Action]:
        return ()

    def on_epoch(self, record: EpochRecord, run: RunView) -> Sequence[Action]:
        return ()

    def on_end(self, record: EndRecord, run: RunView) -> Sequence[Action]:
        return ()

    def on_ack(self, record: AckRecord, run: RunView) -> Sequence[Action]:
        """A command (any policy's) was applied: ``record.cmd``, and ``record.step`` where.

        After a ``rollback`` ack the trainer's step is back at the checkpoint's step, and
        the records that follow describe the restored run.
        """
        return ()

    @property
    def monitors(self) -> tuple[str, ...]:
        """The epoch-log keys this policy decides on (e.g. ``("val_loss",)``); () for none.

        The engine checks them against the first epoch record of each fit and says when one
        is missing (a ``missing_metric`` decision, journaled and shown): a policy whose metric
        never appears does nothing, and must not do it silently. Pure: from the settings.
        """
        return ()

    @property
    def probing(self) -> bool:
        """True while this policy runs an experiment that upsets the loss on purpose.

        An LR range test is one. Meanwhile the engine tells every policy
        (``RunView.probing``) and suppresses other policies' LR changes, schedules and
        rollbacks. Pure: computed from the policy's own state.
        """
        return False

    # State contract: JSON-safe, enough to continue exactly where it stopped.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"policy {self.name!r} keeps no state but was given {sorted(state)}")

    @classmethod
    def overrides(cls, hook: str) -> bool:
        """True when ``cls`` overrides ``hook`` (or the ``probing`` property): the engine skips the others."""
        return getattr(cls, hook) is not getattr(Policy, hook)
