"""Checkpoints from the agent's side: when to save, what to record, what to prune.

Owns ``Checkpointer``, the agent's collaborator that saves a checkpoint through the
handle's ``save_state`` (writing its ``checkpoint`` record, or an ``error`` record when
the save fails), restores one before a fit's first batch (``LRSUP_RESTORE``) and prunes
old ones after each save. The files and the manifest are ``CheckpointStore``'s
(``checkpoints.py``). Standard library only.
"""

from __future__ import annotations

from typing import Iterable

from lrsup.supervisor.agent.checkpoints import CheckpointEntry, CheckpointError, CheckpointStore
from lrsup.supervisor.agent.handle import OptimizerHandle
from lrsup.supervisor.agent.lr_control import LrControl
from lrsup.supervisor.agent.records import RecordWriter, lr_of, warn
from lrsup.supervisor.protocol.wire import CheckpointRecord


class Checkpointer:
    """Checkpoint saving, restoring and retention for the agent.

    Args:
        store: CheckpointStore, the files and the manifest.
        records: RecordWriter, for the ``checkpoint`` and ``error`` records.
        lr: LrControl, whose schedule and multiplier each checkpoint keeps.
        keep_last: int, checkpoints kept besides the retained and the pinned one.
    """

    def __init__(self, store: CheckpointStore, records: RecordWriter, lr: LrControl, keep_last: int) -> None:
        self.store = store
        self.keep_last = keep_last
        self._records = records
        self._lr = lr
        self._retain: frozenset[str] = frozenset()
        self._pinned: str | None = None  # the latest start (or restored) checkpoint: never pruned
        self._warned_no_state = False
        self.fit = 1  # the agent's current fit (``Agent.fits``), stamped on each manifest entry

    def save(
        self,
        handle: OptimizerHandle,
        name: str | None = None,
        *,
        epoch: int | None,
        step: int,
        epoch_end: bool = False,
        seq: int | None = None,
        pin: bool = False,
    ) -> CheckpointEntry | None:
        """Save a checkpoint, write its ``checkpoint`` record, prune old ones; None when it failed.

        A failed save (a full disk...) writes an ``error`` record and a stderr line; training
        goes on and earlier checkpoints are untouched.

        Args:
            handle: OptimizerHandle, whose ``save_state`` writes the file.
            name: str or None, the name (None: ``epoch-EEEE`` at an epoch end, else
                ``step-SSSSSSS``, with ``.2``, ``.3``... added when the name is taken).
            epoch: int or None, the epoch it is taken in (None before the first batch).
            step: int, the optimizer step of the weights.
            epoch_end: bool, taken at the end of ``epoch``.
            seq: int or None, the ``checkpoint`` command it answers (for the error record).
            pin: bool, exempt it from retention (the start checkpoint of a fit: the fallback a
                supervisor rolls a run that never learned back to).

        A handle without ``save_state`` (a custom loop's) takes no checkpoints: one warning,
        and ``checkpoint`` commands are refused.
        """
        if not hasattr(handle, "save_state"):
            if seq is not None:
                self._records.error(seq, "checkpoint", f"checkpoint failed: {type(handle).__name__} has no save_state")
            elif not self._warned_no_state:
                self._warned_no_state = True
                warn(f"{type(handle).__name__} has no save_state: no checkpoints are taken")
            return None
        if name is None:
            # Named as people count epochs (epoch-0001 is the first epoch's end), as docs/protocol.md says.
            name = self._fresh_name(f"epoch-{epoch + 1:04d}" if epoch_end and epoch is not None else f"step-{step:07d}")
        lr = lr_of(handle)
        meta = self._lr.meta()
        try:
            entry = self.store.save(
                name,
                handle.save_state,
                suffix=getattr(handle, "state_suffix", ".state"),
                epoch=epoch,
                step=step,
                lr=lr,
                multiplier=None,
                epoch_end=epoch_end,
                meta=meta,
                fit=self.fit,
            )
        except (CheckpointError, Exception) as exc:
            self._records.error(seq, "checkpoint", f"checkpoint failed: {type(exc).__name__}: {exc}")
            return None
        if pin:
            self._pinned = entry.name
        if seq is not None:
            # Asked for by the supervisor (a PBT exploit's new origin...): kept until its next
            # ``retain`` says otherwise. An epoch-end checkpoint taken right after it, before that
            # retain arrives, would otherwise prune it with the stale list.
            self._retain = self._retain | {entry.name}
        multiplier = self._lr.multiplier if self._lr.schedule is not None else entry.meta.get("multiplier")
        self._records.write(
            CheckpointRecord(
                time=entry.time,
                name=entry.name,
                epoch=entry.epoch,
                step=entry.step,
                lr=entry.lr,
                multiplier=float(multiplier) if multiplier is not None else None,
                file=entry.file,
                sha256=entry.sha256,
            )
        )
        self._prune()
        return entry

    def restore(self, handle: OptimizerHandle, name: str) -> CheckpointEntry | None:
        """Load checkpoint ``name`` before a fit's first batch (``LRSUP_RESTORE`` on a restart).

        Verifies it, loads weights and optimizer state (its step counter included: training
        continues from the checkpoint's step) and lrsup's schedule and multiplier. A missing or
        unverified checkpoint writes an ``error`` record and a stderr line and returns None:
        the fit starts from scratch.

        Args:
            handle: OptimizerHandle.
            name: str, the checkpoint's name.
        """
        try:
            entry = self.store.verify(name)
            handle.load_state(self.store.path_of(entry), entry.meta)
        except Exception as exc:
            self._records.error(
                None, None, f"restore of checkpoint {name!r} failed, starting from scratch: {type(exc).__name__}: {exc}"
            )
            return None
        self._lr.restore(entry)
        self._pinned = entry.name
        warn(f"restored checkpoint {name!r} (epoch {entry.epoch}, step {entry.step})")
        return entry

    def retain(self, names: Iterable[str]) -> None:
        """Keep these checkpoints whatever ``keep_last`` says (replaces the last list), then prune."""
        self._retain = frozenset(names)
        self._prune()

    def _fresh_name(self, base: str) -> str:
        taken = {e.name for e in self.store.entries()}
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}.{n}"
        return name

    def _prune(self) -> None:
        try:
            retain = self._retain | {self._pinned} if self._pinned else self._retain
            self.store.prune(self.keep_last, retain)  # the manifest says what is left
        except (OSError, CheckpointError) as exc:
            warn(f"checkpoint retention failed: {exc}")
