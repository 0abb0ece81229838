"""The engine's book of checkpoints: which exist, which are known good, the best, which to retain.

Every ``checkpoint`` record is tracked by name (a name seen again replaces the older
entry) with its step, epoch, LR, multiplier and, for an epoch-end checkpoint, the logs
of the epoch record at its step. A checkpoint at step ``s`` becomes **known good** at
the first later epoch record whose ``loss`` (and ``val_loss``, when present) is finite:
one with ``step > s``, or the epoch record at ``step == s`` when it has ``val_loss``
(evaluated on exactly those weights). A checkpoint taken at a start record's step is a
**start checkpoint**. When a rollback is decided, every checkpoint taken after its
target is dropped (it belongs to the abandoned run), and so is the target if the
trainer refuses the rollback. A checkpoint named ``exploit-...`` (:data:`EXPLOIT_BASE`: the
checkpoint a PBT member takes right after it loaded a donor's state, lrsup.supervisor.run.operator)
is a new origin: every checkpoint tracked before it is forgotten (it holds the abandoned
weights), and it is a start checkpoint, known good once an epoch record vouches for it.

Stages: each checkpoint belongs to the fit (stage) it was taken in: the start record's
``fit`` at the time its record came (:meth:`CheckpointBook.begin_fit`). Only the current
fit's checkpoints are seen (``infos``), known good, best, rolled back to or dropped: a
later fit recompiles the model (another trainable set, another optimizer whose steps
count from 0 again), so an earlier fit's checkpoint is no state of this fit to go back to.
An epoch record vouches only for checkpoints of its own fit. Earlier fits' entries stay in
the book (a restart's report names them) but nothing aims at them.

Retention (what the engine asks the agent to keep): the newest known-good, the best
known-good by ``monitor``, the newest start checkpoint while none is known good (all of
the current fit), the target of a rollback in flight, and every name a policy asked to keep.

Example::

    book = CheckpointBook(Monitor("val_loss", "auto"))
    book.add(checkpoint_record, lr=0.01, multiplier=None, start=False)
    book.vouch(epoch_record)
    book.newest_good(), book.best()
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from lrsup.policies.base import CheckpointInfo
from lrsup.policies.monitor import Monitor
from lrsup.supervisor.protocol.wire import CheckpointRecord, EpochRecord

# One reason to retain: (the names it keeps, what the retain decision's reason says of it).
RetentionPart = tuple[tuple[str, ...], str]
# The name prefix of the checkpoint a PBT member takes right after an exploit: its new origin.
EXPLOIT_BASE = "exploit-"


@dataclass
class TrackedCheckpoint:
    """A checkpoint as the engine tracks it (the JSON of the engine state's ``checkpoints``)."""

    name: str
    step: int
    epoch: int | None
    lr: float | None
    multiplier: float | None
    good: bool = False
    start: bool = False
    metrics: dict | None = None
    fit: int = 1  # the fit (stage) it was taken in; a state from before stages: 1

    def info(self) -> CheckpointInfo:
        return CheckpointInfo(
            self.name,
            self.step,
            self.epoch,
            self.lr,
            self.multiplier,
            self.good,
            self.start,
            None if self.metrics is None else dict(self.metrics),
        )


def finite_losses(logs: dict) -> bool:
    """True when ``logs`` has a loss or val_loss and every one of the two present is finite."""
    keys = [k for k in ("loss", "val_loss") if k in logs]
    return bool(keys) and all(math.isfinite(logs[k]) for k in keys)


class CheckpointBook:
    """The checkpoints a rollback may go to, and the epoch records that vouch for them.

    Args:
        monitor: Monitor. The metric (and mode) that makes a known-good checkpoint the best;
            ``loss`` (min) when no known-good checkpoint has it.
    """

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor
        self.reset()

    def reset(self) -> None:
        self._entries: dict[str, TrackedCheckpoint] = {}
        self._infos: tuple[CheckpointInfo, ...] | None = None
        self.last_epoch: dict[str, Any] | None = None  # {"epoch", "step", "logs"} of the newest epoch record
        self.fit = 1  # the current fit (stage): the start record's ``fit``

    def begin_fit(self, fit: int) -> None:
        """A start record of fit ``fit``: from now on only that fit's checkpoints count.

        The same fit again (a restarted attempt resuming it) keeps its checkpoints.
        """
        if fit != self.fit:
            self.fit = fit
            self.last_epoch = None
            self._infos = None

    def _current(self) -> list[TrackedCheckpoint]:
        """The current fit's checkpoints, in the order they were tracked."""
        return [c for c in self._entries.values() if c.fit == self.fit]

    # -- reading -----------------------------------------------------------------------

    def infos(self) -> tuple[CheckpointInfo, ...]:
        """The current fit's checkpoints as policies see them, oldest first (cached until the next change)."""
        if self._infos is None:
            ordered = sorted(self._current(), key=lambda c: c.step)
            self._infos = tuple(c.info() for c in ordered)
        return self._infos

    def get(self, name: str) -> TrackedCheckpoint | None:
        """The current fit's checkpoint ``name``, or None (another fit's is not there to go back to)."""
        found = self._entries.get(name)
        return found if found is not None and found.fit == self.fit else None

    def entry(self, name: str) -> TrackedCheckpoint | None:
        """The checkpoint ``name`` whatever its fit, or None."""
        return self._entries.get(name)

    def newest_good(self) -> TrackedCheckpoint | None:
        """The current fit's newest known-good checkpoint, or None."""
        good = [c for c in self._current() if c.good]
        return max(good, key=lambda c: c.step) if good else None

    def newest_start(self) -> TrackedCheckpoint | None:
        """The current fit's newest start checkpoint, or None."""
        start = [c for c in self._current() if c.start]
        return max(start, key=lambda c: c.step) if start else None

    def best(self) -> tuple[TrackedCheckpoint | None, str]:
        """(the current fit's known-good checkpoint with the best monitored value or None, why)."""
        good = sorted((c for c in self._current() if c.good), key=lambda c: c.step)
        if not good:
            return None, "no checkpoint of this fit is known good yet"
        for monitor in (self._monitor, Monitor("loss", "min")):
            best, best_value = None, None
            for checkpoint in good:
                value = (checkpoint.metrics or {}).get(monitor.monitor)
                if value is None or not math.isfinite(value):
                    continue
                if monitor.is_improvement(value, best_value):
                    best, best_value = checkpoint, value
            if best is not None:
                return best, f"{best.name} (step {best.step}) has the best {monitor.monitor}, {best_value:.6g}"
        return None, f"no known-good checkpoint has a finite {self._monitor.monitor} or loss"

    def retention(self, pending: str | None, keeps: Mapping[str, tuple[str, ...]]) -> list[RetentionPart]:
        """Why each checkpoint is to be kept, given a rollback target in flight and the policies' Keeps."""
        parts: list[RetentionPart] = []
        newest = self.newest_good()
        if newest is not None:
            parts.append(((newest.name,), f"newest known-good {newest.name}"))
            best, _ = self.best()
            if best is not None:
                parts.append(((best.name,), f"best {best.name}"))
        else:
            start = self.newest_start()
            if start is not None:
                name = start.name
                parts.append(((name,), f"start checkpoint {name} (none known good yet)"))
        if pending is not None:
            parts.append(((pending,), f"rollback target {pending}"))
        for policy, kept in keeps.items():
            if kept:
                parts.append((kept, f"kept by {policy}: {', '.join(kept)}"))
        return parts

    # -- changing ----------------------------------------------------------------------

    def add(self, record: CheckpointRecord, *, lr: float | None, multiplier: float | None, start: bool) -> None:
        """Track a checkpoint record; ``lr`` and ``multiplier`` are the engine's, used when the record lacks them."""
        checkpoint = TrackedCheckpoint(
            name=record.name,
            step=record.step,
            epoch=record.epoch,
            lr=float(record.lr) if record.lr is not None else lr,
            multiplier=record.multiplier if record.multiplier is not None else multiplier,
            start=start,
            fit=self.fit,
        )
        if record.name.startswith(EXPLOIT_BASE):  # a PBT exploit: the donor's state is the new origin
            self._entries.clear()
            self.last_epoch = None  # it describes the abandoned weights
            checkpoint.start = True
        last = self.last_epoch
        if last is not None and last["step"] == record.step and record.epoch in (None, last["epoch"]):
            # The epoch record at its step came first: its logs are this checkpoint's.
            checkpoint.metrics = dict(last["logs"])
            checkpoint.good = "val_loss" in last["logs"] and finite_losses(last["logs"])
        self._entries.pop(record.name, None)
        self._entries[record.name] = checkpoint
        self._infos = None

    def vouch(self, record: EpochRecord) -> None:
        """An epoch record: it gives its logs to the checkpoints at its step and vouches for earlier ones."""
        logs = record.logs
        self.last_epoch = {"epoch": record.epoch, "step": record.step, "logs": dict(logs)}
        finite = finite_losses(logs)
        for checkpoint in self._current():
            if checkpoint.step == record.step and checkpoint.epoch in (None, record.epoch):
                checkpoint.metrics = dict(logs)
                self._infos = None
            if checkpoint.good or not finite:
                continue
            if checkpoint.step < record.step or (checkpoint.step == record.step and "val_loss" in logs):
                checkpoint.good = True
                self._infos = None

    def drop(self, name: str) -> None:
        self._entries.pop(name, None)
        self._infos = None

    def drop_after(self, step: int) -> None:
        """Forget every checkpoint of the current fit taken after ``step`` (the abandoned run's, after a rollback)."""
        for name in [c.name for c in self._current() if c.step > step]:
            del self._entries[name]
        self._infos = None

    # -- state -------------------------------------------------------------------------

    def state(self) -> list[dict[str, Any]]:
        """The checkpoints as JSON-safe dicts, in the order they were tracked."""
        return [dataclasses.asdict(c) for c in self._entries.values()]

    def load(self, checkpoints: list[dict[str, Any]], last_epoch: dict[str, Any] | None, fit: int = 1) -> None:
        """Continue from :meth:`state`, a saved ``last_epoch`` and the current ``fit`` (entries without
        ``fit`` are fit 1's; TypeError/KeyError/ValueError on malformed input)."""
        if not isinstance(fit, int) or isinstance(fit, bool) or fit < 1:
            raise ValueError(f"fit must be an integer >= 1; got {fit!r}")
        self._entries = {c["name"]: TrackedCheckpoint(**c) for c in checkpoints}
        self.last_epoch = last_epoch
        self.fit = fit
        self._infos = None


def retained_names(parts: list[RetentionPart]) -> tuple[str, ...]:
    """The names to retain, sorted."""
    return tuple(sorted({name for names, _ in parts for name in names}))


def retention_reason(parts: list[RetentionPart]) -> str:
    """The reason of a retain decision: what each kept checkpoint is."""
    return "keep " + ("; ".join(text for _, text in parts) if parts else "no checkpoint beyond the last ones")
