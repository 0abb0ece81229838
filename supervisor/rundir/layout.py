"""The run directory: where one supervised run keeps its files.

A run directory is ``runs/<UTC timestamp>-<script stem>/`` under the current
directory, or the directory given with ``--run-dir``. It is private to the user
(mode 0700, set explicitly so the umask does not matter) because the trainer
obeys whatever appears in its ``control.jsonl``.

Example::

    run_dir = RunDir.prepare(None, script=Path("train.py"), cwd=Path.cwd())
    run_dir.create()
    ...                      # start-up fails?
    run_dir.discard()        # removes only what create() made

``prepare`` checks everything it can without touching the disk, so a start-up
that fails later (bad configuration, missing script) leaves nothing behind when
the caller validates first and creates last.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lrsup.supervisor import protocol

RUNS_DIR = "runs"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"


class RunDirError(ValueError):
    """A run directory that cannot be used; the message names the path and why."""


@dataclass(frozen=True)
class RunPaths:
    """The files of one run directory (names from lrsup.supervisor.protocol.wire)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / protocol.CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.root / protocol.METRICS_FILE

    @property
    def control(self) -> Path:
        return self.root / protocol.CONTROL_FILE

    @property
    def bell(self) -> Path:
        return self.root / protocol.BELL_FILE

    @property
    def journal(self) -> Path:
        return self.root / protocol.JOURNAL_FILE

    @property
    def trainer_log(self) -> Path:
        return self.root / protocol.TRAINER_LOG

    @property
    def state(self) -> Path:
        return self.root / protocol.STATE_FILE

    @property
    def requests(self) -> Path:
        return self.root / protocol.REQUESTS_FILE


# The files whose content steers the run: refused when a symlink or another user's.
CONTROLLED_FILES = (
    protocol.CONTROL_FILE,
    protocol.BELL_FILE,
    protocol.METRICS_FILE,
    protocol.REQUESTS_FILE,
    protocol.JOURNAL_FILE,
    protocol.STATE_FILE,
    protocol.CONFIG_FILE,
)


def check_run_file(path: Path) -> None:
    """Refuse a run file that is a symbolic link, not a regular file, or owned by another user (absent is fine)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise RunDirError(
            f"{str(path)!r} is a symbolic link; refusing to follow it (someone may be redirecting the run's files)"
        )
    if not stat.S_ISREG(st.st_mode):
        raise RunDirError(f"{str(path)!r} is not a regular file")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise RunDirError(f"{str(path)!r} belongs to another user (uid {st.st_uid}, you are {os.getuid()})")


def check_checkpoint_dir(root: Path) -> None:
    """Refuse ``root/checkpoints`` when it is a symbolic link, not a directory, or another user's (absent is fine).

    The trainer restores whatever checkpoint file it finds there: a link planted after the
    run directory was created would redirect its loads and saves.
    """
    path = root / protocol.CHECKPOINT_DIR
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise RunDirError(f"{str(path)!r} is a symbolic link; refusing to follow it (checkpoints are loaded from it)")
    if not stat.S_ISDIR(st.st_mode):
        raise RunDirError(f"{str(path)!r} is not a directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise RunDirError(f"{str(path)!r} belongs to another user (uid {st.st_uid}, you are {os.getuid()})")


def is_temp_file(name: str) -> bool:
    """A temporary file of an atomic write: ``.<file>.tmp``, ``.<file>.<pid>.tmp`` (the run directory),
    ``.tmp-<name>-<pid><suffix>`` and ``manifest.json.tmp-<pid>`` (checkpoints/)."""
    return (name.startswith(".") and name.endswith(".tmp")) or name.startswith(".tmp-") or ".json.tmp-" in name


def remove_temp_files(root: Path) -> list[str]:
    """Remove what interrupted atomic writes left in the run directory and ``checkpoints/``; their names.

    Only when no writer is alive: before an attempt starts and after the run (a trainer
    killed while saving a checkpoint leaves ``checkpoints/.tmp-<name>-<pid>.weights.h5``).
    A ``checkpoints`` that is a symbolic link is not entered.
    """
    removed = []
    for folder in (root, root / protocol.CHECKPOINT_DIR):
        try:
            if folder != root and stat.S_ISLNK(os.lstat(folder).st_mode):
                continue
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if is_temp_file(name):
                try:
                    os.unlink(folder / name)
                    removed.append(os.path.relpath(folder / name, root))
                except OSError:
                    pass
    return sorted(removed)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` through ``.<name>.tmp`` (mode 0600 whatever the umask, never
    through a symlink); the temporary file is removed when the write fails (a full disk)."""
    tmp = path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an old temporary file keeps its mode otherwise
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def check_existing_run_dir(path: Path) -> RunPaths:
    """Check a run directory being resumed: ours, a real directory, not world-writable, safe files."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise RunDirError(f"run directory {str(path)!r} cannot be inspected: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RunDirError(f"run directory {str(path)!r} is not a directory (or is a symbolic link)")
    if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
        raise RunDirError(
            f"run directory {str(path)!r} is writable by others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); anyone could write commands into it"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise RunDirError(f"run directory {str(path)!r} belongs to another user (uid {st.st_uid})")
    paths = RunPaths(Path(os.path.abspath(path)))
    for name in CONTROLLED_FILES:
        check_run_file(paths.root / name)
    check_checkpoint_dir(paths.root)
    return paths


def default_run_dir(script: Path, cwd: Path, now: datetime | None = None) -> Path:
    """``cwd/runs/<YYYYmmddTHHMMSSZ>-<script stem>``; a ``-2``, ``-3``... suffix if that exists."""
    now = now or datetime.now(timezone.utc)
    base = cwd / RUNS_DIR / f"{now.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)}-{script.stem}"
    candidate, n = base, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def check_run_dir(path: Path) -> None:
    """Refuse a path that exists and is not an empty, private-enough directory of ours."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RunDirError(f"run directory {str(path)!r} cannot be inspected: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise RunDirError(f"run directory {str(path)!r} is a symbolic link; give the real path")
    if not stat.S_ISDIR(st.st_mode):
        raise RunDirError(f"run directory {str(path)!r} exists and is not a directory")
    if st.st_mode & stat.S_IWOTH:
        raise RunDirError(
            f"run directory {str(path)!r} is world-writable (mode {stat.S_IMODE(st.st_mode):04o}); "
            "anyone could write commands into it"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise RunDirError(f"run directory {str(path)!r} belongs to another user (uid {st.st_uid})")
    try:
        entries = os.listdir(path)
    except OSError as exc:
        raise RunDirError(f"run directory {str(path)!r} cannot be read: {exc.strerror}") from None
    if entries:
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise RunDirError(
            f"run directory {str(path)!r} already exists and is not empty ({shown}); give a new or empty directory"
        )


class RunDir:
    """A checked run-directory path, created on demand and removable if start-up fails."""

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(path))
        self.paths = RunPaths(self.path)
        self._made: list[Path] = []  # directories create() made, deepest last
        self._existed = False

    @classmethod
    def prepare(cls, run_dir: Path | None, *, script: Path, cwd: Path, now: datetime | None = None) -> "RunDir":
        """Choose (``run_dir`` or the default under ``cwd/runs``) and check the path; create nothing."""
        path = Path(cwd, run_dir) if run_dir is not None else default_run_dir(script, cwd, now)
        check_run_dir(path)
        return cls(path)

    def create(self) -> RunPaths:
        """Create the directory (and missing parents) with mode 0700; return its paths."""
        check_run_dir(self.path)  # again: it may have changed since prepare()
        self._existed = self.path.is_dir()
        missing = []
        p = self.path
        while not os.path.lexists(p):
            missing.append(p)
            p = p.parent
        try:
            for d in reversed(missing):
                os.mkdir(d, 0o700)
                self._made.append(d)
            os.chmod(self.path, 0o700)
            # Made now, private, so that nothing can be planted there later (the agent only enters it).
            os.mkdir(self.path / protocol.CHECKPOINT_DIR, 0o700)
            os.chmod(self.path / protocol.CHECKPOINT_DIR, 0o700)
        except OSError as exc:
            self.discard()
            raise RunDirError(f"cannot create run directory {str(self.path)!r}: {exc.strerror}") from None
        return self.paths

    def discard(self) -> None:
        """Undo create(): remove what it made (the run dir's contents too), nothing else."""
        if self._existed:
            for entry in os.listdir(self.path):
                target = self.path / entry
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
        elif self._made:
            if self.path in self._made:
                shutil.rmtree(self.path, ignore_errors=True)
            for d in reversed(self._made):  # parents made for it (e.g. runs/), if still empty
                if d != self.path:
                    try:
                        os.rmdir(d)
                    except OSError:
                        break
        self._made.clear()
