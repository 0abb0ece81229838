"""supervisor.json: who supervises a run and how it stands, for ``lrsup ls/status`` and resume.

Rewritten atomically (temporary file, fsync, rename) on every state change
(``Runner.write_state``), so a reader sees the old or the new version, never a mix. Fields::

    {"v": 1, "supervisor_pid": 123, "supervisor_start_time": 4567,  # /proc/<pid>/stat field 22
     "trainer_pid": 124, "trainer_start_time": 4570,
     "state": "running",          # starting running stopping backoff parked exited failed fatal
     "attempt": 1, "restarts": 0, "turns": 0,         # turns: attempts a PBT turn started (unpark)
     "time_lost": 0.0,                               # seconds in failed attempts + backoff
     "exit_status": null, "reason": null,              # set when the supervisor finished
     "held": null,                # "user@host" while an operator holds the policies
     "degraded": null,            # why, while the disk is full
     "script": "train.py", "argv": [...], "cwd": "/home/ana/proj",
     "started": 1790000000.0, "updated": 1790000100.0}

A pid alone does not name a process for long (pids are reused); the pair (pid, start
time in clock ticks since boot) does, which is what
:func:`lrsup.supervisor.rundir.liveness.pid_alive` checks.

Example::

    write_state(paths.state, {"state": "running", ...})
    if pid_alive(state["trainer_pid"], state["trainer_start_time"]): ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from lrsup.supervisor import protocol


def write_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Replace ``path`` atomically with ``state`` as JSON (mode 0600, never through a symlink)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        data = (json.dumps({"v": protocol.PROTOCOL_VERSION, **state}, indent=2, allow_nan=True) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The state written by :func:`write_state`; ValueError naming the file if it is not a JSON object."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ValueError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        raw = f.read()
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{os.fspath(path)!r} does not hold a JSON object (got {type(obj).__name__})")
    return obj


def read_json(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON object file, leniently, for readers that show what they can (reports, ``lrsup ls``).

    Returns (object, None); (None, None) when the file does not exist; (None, why) when it
    cannot be read, is not JSON or not an object. :func:`read_state` is the strict reader.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name}: cannot be read ({exc})"
    try:
        obj = json.loads(text)
    except ValueError as exc:
        return None, f"{path.name}: not valid JSON ({exc})"
    if not isinstance(obj, dict):
        return None, f"{path.name}: not a JSON object"
    return obj, None


def file_size(path: str | os.PathLike[str]) -> int:
    """The size of ``path`` in bytes; 0 when it is missing or unreadable."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
