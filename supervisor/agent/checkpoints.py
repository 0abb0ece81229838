"""Checkpoints of a run, kept by the agent in ``RUN_DIR/checkpoints/``: Keras-free.

A checkpoint is a file written by the optimizer handle (``handle.save_state(path)``; the
Keras handle writes Keras's own ``.weights.h5``: model weights and optimizer variables,
never a pickle) plus an entry in ``checkpoints/manifest.json``. **The manifest is the only
thing that makes a checkpoint exist**: a file without an entry, or whose SHA-256 differs
from its entry, is never loaded.

Saving is atomic and verified, in this order:

1. the handle writes ``checkpoints/.tmp-<name>-<pid><suffix>`` (``checkpoints/`` 0700, the
   file set to 0600 whatever the umask; a symbolic link at ``checkpoints`` is refused); the
   file is fsynced;
2. it is renamed to ``checkpoints/<name><suffix>`` and the directory fsynced;
3. its SHA-256 is computed from the bytes on disk;
4. ``manifest.json`` is replaced atomically (temp file, fsync, rename, fsync dir) with the
   new entry appended;
5. only then does the agent append the ``checkpoint`` record to metrics.jsonl.

An ``OSError`` in steps 1-4 (a full disk: ENOSPC) removes what this save wrote and raises
``CheckpointError``; earlier checkpoints and the manifest are untouched.

Example::

    store = CheckpointStore("runs/x")
    entry = store.save("epoch-0003", handle.save_state, suffix=".weights.h5",
                       epoch=3, step=480, lr=0.01, multiplier=None, epoch_end=True)
    entry = store.verify("epoch-0003")       # CheckpointError when torn or unknown
    store.prune(keep_last=3, retain={"step-0000000"})

The manifest is ``{"v": 1, "checkpoints": [entry, ...]}`` in save order, each entry
``{name, file, sha256, size, epoch, step, lr, multiplier, time, epoch_end, meta, fit}``:
``file`` relative to the run directory, ``epoch_end`` True when it was taken at the end
of epoch ``epoch`` (so training resumes at ``epoch + 1``), ``meta`` what the handle and
the agent need to restore (LR multiplier, lrsup schedule), ``fit`` the ordinal of the
process's fit it was taken in (the start record's ``fit``; an entry without it: 1), which
a restarted attempt restores it into.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

from lrsup.supervisor.protocol.wire import CHECKPOINT_DIR, is_checkpoint_name

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be saved, found or verified; the message says which and why."""


@dataclass(frozen=True)
class CheckpointEntry:
    """One manifest entry (see the module docstring)."""

    name: str
    file: str
    sha256: str
    size: int
    epoch: int | None
    step: int
    lr: float | None
    multiplier: float | None
    time: float
    epoch_end: bool = False
    meta: dict = field(default_factory=dict)
    fit: int = 1  # the fit (stage) it was taken in

    def resume_epoch(self) -> int | None:
        """The epoch a restarted fit should begin with; None for a checkpoint taken before any epoch.

        An epoch-end checkpoint resumes at ``epoch + 1``; one taken inside epoch ``e``
        (by step cadence or a ``checkpoint`` command) runs epoch ``e`` again in full.
        """
        if self.epoch is None:
            return None
        return self.epoch + 1 if self.epoch_end else self.epoch

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "CheckpointEntry":
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in obj.items() if k in known})


def sha256_of(path: str) -> str:
    """The hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        _fsync_path(path)
    except OSError:  # some filesystems refuse fsync on a directory; the rename is still atomic
        pass


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class CheckpointStore:
    """The checkpoints of one run directory: save, verify, list, prune.

    Args:
        run_dir: str or PathLike, the run directory (``checkpoints/`` is created on the first save).

    One writer per run directory (the agent of the training process); readers (the
    supervisor, a restarted trainer) only read ``manifest.json``, which is always whole.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = os.fspath(run_dir)
        self.dir = os.path.join(self.run_dir, CHECKPOINT_DIR)
        self.manifest_path = os.path.join(self.dir, MANIFEST_FILE)

    # -- reading -----------------------------------------------------------------------

    def entries(self) -> list[CheckpointEntry]:
        """The manifest's entries in save order ([] when there is no manifest).

        Raises:
            CheckpointError: the manifest exists but is not a readable lrsup manifest.
        """
        try:
            with open(self.manifest_path, encoding="utf-8") as f:
                obj = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {self.manifest_path}: {exc}") from None
        items = obj.get("checkpoints") if isinstance(obj, dict) else None
        if not isinstance(items, list):
            raise CheckpointError(f"{self.manifest_path} is not an lrsup checkpoint manifest")
        try:
            return [CheckpointEntry.from_json(item) for item in items]
        except TypeError as exc:
            raise CheckpointError(f"{self.manifest_path}: bad entry: {exc}") from None

    def get(self, name: str) -> CheckpointEntry | None:
        """The entry named ``name`` (the latest if the name was reused), or None."""
        found = None
        for entry in self.entries():
            if entry.name == name:
                found = entry
        return found

    def path_of(self, entry: CheckpointEntry) -> str:
        """The absolute path of an entry's file."""
        return os.path.join(self.run_dir, entry.file)

    def verify(self, name: str) -> CheckpointEntry:
        """The entry ``name`` after checking its file's SHA-256 against the manifest.

        Raises:
            CheckpointError: no such entry, the file is missing or unreadable, or its digest
                differs (a torn or replaced file). Nothing else is tried: the caller decides.
        """
        if not is_checkpoint_name(name):
            raise CheckpointError(f"invalid checkpoint name {name!r}")
        entry = self.get(name)
        if entry is None:
            raise CheckpointError(f"no checkpoint {name!r} in {self.manifest_path}")
        path = self.path_of(entry)
        try:
            digest = sha256_of(path)
        except OSError as exc:
            raise CheckpointError(f"checkpoint {name!r}: cannot read {entry.file}: {exc.strerror or exc}") from None
        if digest != entry.sha256:
            raise CheckpointError(
                f"checkpoint {name!r}: {entry.file} has sha256 {digest[:12]}..., the manifest says "
                f"{entry.sha256[:12]}... (torn or replaced); not used"
            )
        return entry

    def is_verified(self, entry: CheckpointEntry) -> bool:
        """True when ``entry``'s file exists and matches its digest."""
        try:
            return sha256_of(self.path_of(entry)) == entry.sha256
        except OSError:
            return False

    # -- writing -----------------------------------------------------------------------

    def save(
        self,
        name: str,
        writer: Callable[[str], Mapping[str, Any] | None],
        *,
        suffix: str,
        epoch: int | None,
        step: int,
        lr: float | None,
        multiplier: float | None,
        epoch_end: bool = False,
        meta: Mapping[str, Any] | None = None,
        fit: int = 1,
    ) -> CheckpointEntry:
        """Write, fsync, rename, hash and enter checkpoint ``name``; return its entry.

        Args:
            name: str, a valid checkpoint name (an existing entry of that name is replaced).
            writer: callable(path) -> mapping or None, writes the state to ``path`` and returns
                extra meta (``OptimizerHandle.save_state``).
            suffix: str, the file name's ending (".weights.h5" for Keras).
            epoch, step, lr, multiplier, epoch_end: what the entry records.
            meta: mapping or None, more meta from the agent (merged over the writer's).
            fit: int, the ordinal of the process's fit it is taken in.

        Raises:
            CheckpointError: an invalid name, or an OSError while saving (the message names
                errno, e.g. ENOSPC); what this call wrote is removed, older checkpoints stay.
        """
        if not is_checkpoint_name(name):
            raise CheckpointError(f"invalid checkpoint name {name!r}")
        file = f"{CHECKPOINT_DIR}/{name}{suffix}"
        final = os.path.join(self.run_dir, file)
        tmp = os.path.join(self.dir, f".tmp-{name}-{os.getpid()}{suffix}")
        renamed = False
        try:
            self._make_dir()
            extra = dict(writer(tmp) or {})
            os.chmod(tmp, 0o600, follow_symlinks=False)  # the writer (h5py) creates it 0666 & ~umask
            _fsync_path(tmp)
            size = os.path.getsize(tmp)
            os.replace(tmp, final)
            renamed = True
            _fsync_dir(self.dir)
            digest = sha256_of(final)
            extra.update(meta or {})
            entry = CheckpointEntry(
                name=name,
                file=file,
                sha256=digest,
                size=size,
                epoch=epoch,
                step=step,
                lr=lr,
                multiplier=multiplier,
                time=time.time(),
                epoch_end=epoch_end,
                meta=extra,
                fit=fit,
            )
            entries = [e for e in self.entries() if e.name != name]
            self._write_manifest(entries + [entry])
        except OSError as exc:
            _remove(tmp)
            if renamed:
                _remove(final)
            code = errno.errorcode.get(exc.errno or 0, "")
            raise CheckpointError(
                f"checkpoint {name!r} not saved: {code + ': ' if code else ''}{exc.strerror or exc}"
            ) from exc
        except BaseException:
            _remove(tmp)
            raise
        return entry

    def _make_dir(self) -> None:
        """``checkpoints/``, mode 0700 whatever the umask; a symbolic link planted there is refused."""
        try:
            os.mkdir(self.dir, 0o700)
        except FileExistsError:
            pass
        if os.path.islink(self.dir) or not os.path.isdir(self.dir):
            raise OSError(errno.ELOOP, f"{self.dir!r} is a symbolic link or not a directory; refusing to use it")
        os.chmod(self.dir, 0o700)

    def prune(self, keep_last: int, retain: Iterable[str] = ()) -> list[str]:
        """Delete checkpoints beyond the last ``keep_last`` that are not in ``retain``.

        Never deletes the only verified checkpoint: when none of the kept ones verifies,
        the newest verified candidate is spared. Each deletion removes the entry from the
        manifest first, then the file (a crash between the two leaves a stray file, never
        an entry without its file).

        Args:
            keep_last: int >= 1.
            retain: names to keep whatever their age.

        Returns:
            list of str, the names deleted.
        """
        entries = self.entries()
        retain = set(retain)
        keep_idx = set(range(max(0, len(entries) - keep_last), len(entries)))
        keep_idx |= {i for i, e in enumerate(entries) if e.name in retain}
        doomed = [i for i in range(len(entries)) if i not in keep_idx]
        if not doomed:
            return []
        if not any(self.is_verified(entries[i]) for i in sorted(keep_idx, reverse=True)):
            for i in reversed(doomed):
                if self.is_verified(entries[i]):
                    doomed.remove(i)
                    break
        if not doomed:
            return []
        gone = [entries[i] for i in doomed]
        self._write_manifest([e for i, e in enumerate(entries) if i not in set(doomed)])
        still = {e.file for e in self.entries()}
        for entry in gone:
            if entry.file not in still:
                _remove(self.path_of(entry))
        return [e.name for e in gone]

    def _write_manifest(self, entries: list[CheckpointEntry]) -> None:
        text = json.dumps(
            {"v": MANIFEST_VERSION, "checkpoints": [asdict(e) for e in entries]}, indent=1, allow_nan=True
        )
        tmp = f"{self.manifest_path}.tmp-{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                data = text.encode("utf-8")
                while data:
                    n = os.write(fd, data)
                    data = data[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.manifest_path)
        except BaseException:
            _remove(tmp)
            raise
        _fsync_dir(self.dir)
