"""A full disk, seen from the supervisor: name it, and let the end of a run wait for space.

``disk_full(run_dir)`` says whether the run directory's file system is (nearly) full, so a
trainer failing there is diagnosed as such ("the run directory's disk is full") and never
as "a program that cannot start". ``wait_for_space`` retries the last writes of a run
(the journal's ``finished``, supervisor.json, the report) until they get through, for at
most ``limit`` seconds: a given-up or finished run never stays "running" in supervisor.json
because the disk was full at the moment it ended.

Example::

    if not wait_for_space(lambda: write_state(...), clock, limit=600, say=print):
        print("supervisor.json not written: the disk stayed full")
"""

from __future__ import annotations

import errno
import os
from typing import Any, Callable

MIN_FREE = 1 << 20  # bytes: below this the run directory's disk counts as full
SPACE_WAIT = 600.0  # seconds the end of a run waits for space for its last writes
RETRY_EVERY = 2.0  # seconds between two tries meanwhile


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes an unprivileged writer may still use on ``path``'s file system; None when unknown."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def disk_full(path: str | os.PathLike[str], minimum: int = MIN_FREE) -> str | None:
    """A phrase naming the full disk when ``path``'s file system has less than ``minimum`` bytes free, else None."""
    free = free_bytes(path)
    if free is None or free >= minimum:
        return None
    return f"the run directory's disk is full ({free // 1024} KB free)"


def is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def wait_for_space(
    write: Callable[[], bool],
    clock: Any,
    limit: float = SPACE_WAIT,
    say: Callable[[str], Any] | None = None,
    what: str = "the run's last state",
    stop: Callable[[], bool] | None = None,
) -> bool:
    """Call ``write`` until it returns True, every ``RETRY_EVERY`` seconds for at most ``limit`` seconds.

    Args:
        write: callable() -> bool, one try (False: the disk is still full).
        clock: object with ``monotonic()`` and ``sleep()``.
        limit: float, seconds to wait in all.
        say: callable(str) | None, told once that lrsup waits.
        what: str, what waits (for the message).
        stop: callable() -> bool | None, True to give up waiting at once (Ctrl-C).

    Returns:
        bool: True once ``write`` succeeded.
    """
    if write():
        return True
    deadline = clock.monotonic() + limit
    if say is not None:
        say(f"lrsup: disk full: {what} waits for space (up to {limit:g} s)")
    while clock.monotonic() < deadline and not (stop is not None and stop()):
        clock.sleep(min(RETRY_EVERY, max(0.0, deadline - clock.monotonic())))
        if write():
            return True
    return False
