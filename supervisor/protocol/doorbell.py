"""The control doorbell: tells the agent that control.jsonl has new lines, without a system call.

The supervisor keeps ``control.bell`` in the run directory: 8 bytes, a little-endian
unsigned counter that it increments (``Bell.ring``) after every line it appends to
control.jsonl. The agent maps the file read-only (``BellWatch``) and compares those 8 bytes
at each batch end, about 0.1 us with no system call, instead of an ``os.fstat`` of
control.jsonl at each batch end (about 2 us in a tight loop, 10-20 us between TensorFlow
steps, whose work has evicted the caches). It reads control.jsonl when the bytes change.

Example::

    bell = Bell(run_dir / BELL_FILE)        # supervisor: after each append to control.jsonl
    control.write(command); bell.ring()

    watch = BellWatch.open(run_dir / BELL_FILE)   # agent: None if the file is not there
    if watch is not None and watch.changed():
        ...read control.jsonl...

The file is never truncated while a run may use it (a mapped file cut below the mapping
would fault on access): ``Bell`` opens it without O_TRUNC and only ever writes its 8 bytes
in place, and ``BellWatch.open`` maps a file only when it holds at least 8 bytes. Torn
reads are harmless: the agent compares for inequality, so a half-written counter can only
cause one extra read of control.jsonl. Standard library only (the agent imports it).
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any, Mapping

from lrsup.supervisor.protocol.jsonl import Appender
from lrsup.supervisor.protocol.wire import BELL_FILE

__all__ = ["BELL_FILE", "SIZE", "Bell", "BellWatch", "ControlWriter"]

SIZE = 8
_PACK = struct.Struct("<Q")
_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class Bell:
    """The supervisor's side: a counter in ``path``, incremented by ``ring``.

    Opening an existing bell (``lrsup resume``) goes on counting from its value, so a
    running agent sees the next ring as a change.

    Args:
        path: str or PathLike, the bell file (created with mode 0600 if missing).

    Raises:
        OSError: the file cannot be opened or written.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _FLAGS, 0o600)
        try:
            data = os.pread(self._fd, SIZE, 0)
            self.count = _PACK.unpack(data)[0] if len(data) == SIZE else 0
            if len(data) != SIZE:
                os.pwrite(self._fd, _PACK.pack(self.count), 0)
        except OSError:
            os.close(self._fd)
            raise

    def ring(self) -> None:
        """Tell the agent that control.jsonl has new lines (call after appending them)."""
        self.count = (self.count + 1) & 0xFFFF_FFFF_FFFF_FFFF
        os.pwrite(self._fd, _PACK.pack(self.count), 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class BellWatch:
    """The agent's side: ``changed()`` is True once after each ring (or more often, never less).

    Args:
        fd: int, an open read-only descriptor of a bell file of at least 8 bytes (owned).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.ino = os.fstat(fd).st_ino
        self._map = mmap.mmap(fd, SIZE, access=mmap.ACCESS_READ)
        self._last = self._map[:SIZE]

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "BellWatch | None":
        """A watch on the bell at ``path``; None when there is none (or it is not a complete bell)."""
        try:
            fd = os.open(os.fspath(path), os.O_RDONLY | _FLAGS)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size < SIZE:
                os.close(fd)
                return None
            return cls(fd)
        except (OSError, ValueError):
            os.close(fd)
            return None

    def changed(self) -> bool:
        """True when the counter differs from the last call's (the first call compares with the open's)."""
        now = self._map[:SIZE]
        if now == self._last:
            return False
        self._last = now
        return True

    def close(self) -> None:
        self._map.close()  # a second close does nothing
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class ControlWriter:
    """Appends commands to control.jsonl and rings the bell after each: the supervisor's writer.

    Args:
        control: str or PathLike, control.jsonl.
        bell: str or PathLike, control.bell next to it.
    """

    def __init__(self, control: str | os.PathLike[str], bell: str | os.PathLike[str]) -> None:
        self._out = Appender(control)
        try:
            self._bell = Bell(bell)
        except OSError:
            self._out.close()
            raise

    def write(self, obj: Mapping[str, Any]) -> None:
        self._out.write(obj)
        self._bell.ring()

    def close(self) -> None:
        self._out.close()
        self._bell.close()

    def __enter__(self) -> "ControlWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
