"""supervisor.json: who supervises a run and how it stands, for ``lrsup ls/status`` and resume.

Rewritten atomically (temporary file, fsync, rename) on every state change, so a
reader sees the old or the new version, never a mix. Fields::

    {"v": 1, "supervisor_pid": 123, "supervisor_start_time": 4567,  # /proc/<pid>/stat field 22
     "trainer_pid": 124, "trainer_start_time": 4570,
     "state": "running",          # starting running stopping backoff exited failed fatal
     "attempt": 1, "restarts": 0, "time_lost": 0.0,   # seconds in failed attempts + backoff
     "exit_status": null, "reason": null,              # set when the supervisor finished
     "held": null,                # "user@host" while an operator holds the policies
     "degraded": null,            # why, while the disk is full
     "script": "train.py", "argv": [...], "cwd": "/home/ana/proj",
     "started": 1790000000.0, "updated": 1790000100.0}

A pid alone does not name a process for long (pids are reused); the pair (pid, start
time in clock ticks since boot) does, which is what
:func:`lrsup.supervisor.rundir.liveness.pid_alive` checks (``same_process`` here is that
function, under the name run/ imports it by).

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
from lrsup.supervisor.rundir.liveness import pid_alive, process_start_time

# The one liveness rule, under the name run/process.py and run/resume.py import it by.
same_process = pid_alive


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


def write_runner_state(runner: Any, exit_status: int | None = None, reason: str | None = None) -> bool:
    """Write a Runner's supervisor.json (the fields in the module docstring); False if the disk refused."""
    life, handle = runner.lifecycle, runner.lifecycle.handle
    trainer_pid = getattr(handle, "pid", None)
    if trainer_pid is not None and trainer_pid != getattr(runner, "_trainer_pid", None):
        runner._trainer_pid = trainer_pid
        runner._trainer_start = getattr(handle, "start_time", None) or process_start_time(trainer_pid)
    state = {
        "supervisor_pid": os.getpid(),
        "supervisor_start_time": process_start_time(os.getpid()),
        "trainer_pid": trainer_pid,
        "trainer_start_time": getattr(runner, "_trainer_start", None),
        "state": life.state.value,
        "attempt": life.attempt,
        "restarts": life.restarts,
        "time_lost": round(life.time_lost, 3),
        "exit_status": exit_status,
        "reason": reason,
        "held": runner.held_by,
        "degraded": runner.channel.degraded,
        "script": runner.script,
        "argv": runner.argv,
        "cwd": os.fspath(runner.cwd),
        "started": runner.started,
        "updated": runner.clock.time(),
    }
    try:
        write_state(runner.paths.state, state)
    except OSError:
        return False  # disk full: the journal's degraded condition says it; tried again on the next change
    return True
