"""Is this process alive? The one answer lrsup gives, for resume, the report, ``ls`` and ``status``.

A pid alone does not name a process for long (pids are reused); the pair (pid, start
time in clock ticks since boot, field 22 of ``/proc/<pid>/stat``) does. supervisor.json
records that pair for the supervisor and the trainer, and :func:`pid_alive` checks it:

- no pid, or a pid <= 0: not alive;
- ``kill(pid, 0)`` says there is no such process: not alive;
- it says ``PermissionError``: the process exists and belongs to another user: alive
  (a run directory shared between accounts is still supervised; taking it over would
  start a second supervisor beside the live one);
- a zombie has finished: not alive;
- a start time was recorded and the process started at another time: a reused pid, not alive;
- no ``/proc`` to read (not Linux): the pid exists, which is all that can be told: alive.

Example::

    pid_alive(state["supervisor_pid"], state["supervisor_start_time"])
"""

from __future__ import annotations

import os

__all__ = ["pid_alive", "process_start_time"]


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after ``pid (comm)``; None when it cannot be read."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the last ')'.
    return data.rsplit(b")", 1)[-1].split()


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks after boot, /proc/<pid>/stat field 22); None if gone/unknown.

    Args:
        pid: int. A process id.
    """
    fields = _stat_fields(pid)
    if not fields or fields[0] == b"Z":  # a zombie has finished: not a live process
        return None
    try:
        return int(fields[19])  # field 22 is the 20th after "pid (comm)"
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """True while ``pid`` exists, is no zombie and (when ``start_time`` is known) started then.

    Args:
        pid: int or None. The process id as recorded (None or <= 0: not alive).
        start_time: int or None. Its start time as recorded (clock ticks after boot);
            None: any process with this pid counts.
    """
    if pid is None or isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, and belongs to another user: alive
    except OSError:
        return False
    fields = _stat_fields(pid)
    if fields is None:  # gone since kill(), or no /proc (not Linux): then the pid exists, all we can tell
        return not os.path.exists("/proc/self/stat")
    if not fields or fields[0] == b"Z":
        return False
    if start_time is None:
        return True
    try:
        return int(fields[19]) == start_time
    except (IndexError, ValueError):
        return True  # an unreadable start time: the pid exists
