"""Reading and appending JSON-lines files, tolerant of torn and garbage lines.

Standard library only (the agent uses it too). A writer appends each line with a
single ``os.write`` on an ``O_APPEND`` descriptor, so a reader sees a line whole
or not yet; a line without its newline is the writer still writing it (or a writer
that died mid-line) and is never parsed.
"""

from __future__ import annotations

import errno
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from lrsup.supervisor.protocol.wire import MAX_LINE_BYTES, ProtocolError, dumps, loads, short


class LineSplitter:
    """Turns a byte stream into complete lines; keeps the partial tail for the next feed.

    A line that grows past MAX_LINE_BYTES without a newline is dropped as garbage (its
    bytes up to the next newline are skipped), so a runaway writer cannot exhaust memory;
    ``overlong`` counts them (a reader reports each as a bad line).
    """

    def __init__(self) -> None:
        self._tail = b""
        self._discarding = False
        self.overlong = 0

    @property
    def pending(self) -> int:
        """Bytes of an incomplete last line waiting for their newline."""
        return len(self._tail)

    def skip_partial(self) -> None:
        """Drop what comes before the next newline (a reader that started in the middle of a line)."""
        self._tail = b""
        self._discarding = True

    def feed(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        parts = (self._tail + data).split(b"\n")
        self._tail = parts.pop()
        lines: list[bytes] = []
        for part in parts:
            if self._discarding:
                self._discarding = False
                continue
            if len(part) > MAX_LINE_BYTES:
                self.overlong += 1
                continue
            lines.append(part)
        if len(self._tail) > MAX_LINE_BYTES:
            self.overlong += 1
            self._tail = b""
            self._discarding = True
        return lines


@dataclass
class ReadStats:
    """What a reader read and skipped: counted and reported, never fatal.

    ``errors`` keeps the first 20 messages (a report quotes the first), ``last_errors`` the
    newest 5 (a live reader reports what is new).
    """

    lines: int = 0
    records: int = 0
    garbage: int = 0  # every skipped line, over-long ones included
    overlong: int = 0
    torn_tail: int = 0
    restarts: int = 0  # the file shrank or was replaced: read again from its start
    errors: list[str] = field(default_factory=list)
    last_errors: deque[str] = field(default_factory=lambda: deque(maxlen=5))

    def bad(self, message: str) -> None:
        self.garbage += 1
        message = short(message)
        if len(self.errors) < 20:
            self.errors.append(message)
        self.last_errors.append(message)


def iter_objects(path: str | os.PathLike[str], stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of every complete line of ``path``.

    A torn last line (no newline) is dropped; a garbage line (not JSON, beyond the protocol's
    bounds, over-long) is skipped and counted. A missing file yields nothing.
    """
    stats = stats if stats is not None else ReadStats()
    reader = JsonlReader(path, stats=stats)
    try:
        for lines in reader.chunks():
            yield from reader.objects(lines)
        if reader.pending:
            stats.torn_tail += 1
    finally:
        reader.close()


CHUNK = 1 << 16
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class JsonlReader:
    """The complete lines appended to one JSON-lines file since the last read.

    The one incremental reader behind the supervisor's ``Follower`` (metrics.jsonl), the
    agent's ``ControlReader`` (control.jsonl), the operator's ``RequestReader``
    (requests.jsonl) and ``TailReader`` (``lrsup watch``/``logs``): they differ only in how
    they wait for more. Every line it cannot use (over ``MAX_LINE_BYTES``; through
    ``objects``: not JSON, beyond the protocol's bounds) is counted in ``stats`` with a
    message, never raised. A file replaced (another inode) or shrunk is read again from its
    start (``stats.restarts``); one that is not there yet reads as empty; a symlink is never
    followed.

    Example::

        reader = JsonlReader("runs/x/requests.jsonl")
        for obj in reader.objects(reader.read_lines()):
            ...

    Args:
        path: str or PathLike, the file.
        offset: int, where to start (at the start of a line); None: at the file's current
            end, skipping the rest of a line being written.
        stat_every: float, seconds between looks at the path itself; in between, a read
            looks only at the open file (one ``fstat``: what the agent polls per batch).
            0 looks at the path on every read.
        clock: callable returning monotonic seconds (tests pass a fake).
        stats: ReadStats or None, where to count (a caller's, or a new one).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        offset: int | None = 0,
        *,
        stat_every: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        stats: ReadStats | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.stats = stats if stats is not None else ReadStats()
        self.stat_every = stat_every
        self._clock = clock
        self.next_stat = 0.0  # when (on ``clock``) the next read looks at the path itself (``stat_every``)
        self._fd = -1
        self._ino: int | None = None
        self._size = -1  # the size seen by the last look (``changed``)
        self._at_end = offset is None
        self._start = offset or 0
        self.offset = self._start  # bytes read so far
        self._splitter = LineSplitter()
        if self._at_end and not self._reopen():  # "the current end" is now, not at the first read
            self._at_end = False  # not there yet: all of it is new

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    @property
    def pending(self) -> int:
        """Bytes of a line read without its newline yet."""
        return self._splitter.pending

    @property
    def consumed(self) -> int:
        """The offset after the last complete line read: where a new reader would go on."""
        return self.offset - self._splitter.pending

    def changed(self) -> bool:
        """Whether the path's size or inode differs from what was read (a polling waiter's test)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return st.st_size != self.offset or st.st_ino != self._ino

    def _look(self) -> os.stat_result | None:
        """The file's stat, (re)opening it when it was replaced, shrank or is not open yet."""
        if self._fd >= 0:
            st = None
            if self.stat_every > 0:
                now = self._clock()
                if now < self.next_stat:
                    st = os.fstat(self._fd)  # the same file, unless replaced: seen at the next look
                else:
                    self.next_stat = now + self.stat_every
            if st is None:
                try:
                    st = os.stat(self.path)
                except OSError:
                    st = os.fstat(self._fd)  # gone: what is open can still be read
            if st.st_ino == self._ino and st.st_size >= self.offset:
                return st
            self.stats.restarts += 1
        else:
            try:
                os.stat(self.path)
            except OSError:
                return None
        if not self._reopen():
            return None
        return os.fstat(self._fd)

    def _reopen(self) -> bool:
        self._close_file()
        self._splitter = LineSplitter()
        try:
            self._fd = os.open(self.path, _OPEN_FLAGS)
        except OSError:
            return False
        st = os.fstat(self._fd)
        self._ino = st.st_ino
        if self._at_end:  # from the current end, on the first open only
            self._at_end = False
            self._start = st.st_size
            if st.st_size and os.pread(self._fd, 1, st.st_size - 1) != b"\n":
                self._splitter.skip_partial()
        self.offset, self._start = self._start, 0
        return True

    def read_bytes(self, limit: int | None = None) -> bytes:
        """The raw bytes appended since the last read (at most ``limit``), lines not split."""
        st = self._look()
        if st is None or st.st_size <= self.offset:
            return b""
        size = st.st_size - self.offset
        data = os.pread(self._fd, size if limit is None else min(size, limit), self.offset)
        self.offset += len(data)
        return data

    def _split(self, data: bytes) -> list[bytes]:
        before = self._splitter.overlong
        lines = self._splitter.feed(data)
        for _ in range(self._splitter.overlong - before):
            self.stats.overlong += 1
            self.stats.bad(f"line longer than {MAX_LINE_BYTES} bytes skipped before byte {self.offset}")
        return lines

    def chunks(self, size: int = CHUNK) -> Iterator[list[bytes]]:
        """The complete lines appended since the last read, a list per chunk of ``size`` bytes."""
        while data := self.read_bytes(size):
            yield self._split(data)

    def read_lines(self) -> list[bytes]:
        """Every complete line appended since the last read (blank ones included)."""
        if self._fd >= 0 and self.stat_every > 0 and self._clock() < self.next_stat:
            # The agent's poll between looks at the path: one fstat, and nothing new (the common case).
            st = os.fstat(self._fd)
            if st.st_size == self.offset:
                return []
        data = self.read_bytes()
        return self._split(data) if data else []

    def objects(self, lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
        """The JSON object of each non-blank line; the others counted as garbage."""
        for line in lines:
            if not line.strip():
                continue
            self.stats.lines += 1
            try:
                yield loads(line)
            except ProtocolError as exc:
                self.stats.bad(str(exc))

    def _close_file(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._ino = None

    def close(self) -> None:
        """Close the file (a later read opens it again from where it was). Safe to call twice."""
        self._start = self.offset
        self._close_file()


class Appender:
    """Appends protocol lines to one file, one ``os.write`` per line.

    A line never continues a torn one: when the file does not end with a newline at open (a
    writer died mid-line, or a full disk took part of a line) or a write of ours stopped
    part-way (ENOSPC), the next line is written with a newline before it, so that the torn
    line is one garbage line and the new one reads whole. Write errors are raised (OSError);
    what to do on a full disk is the caller's (the agent drops records and says so).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = os.fspath(path)
        self._fsync = fsync
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.path, flags, 0o600)
        size = os.fstat(self._fd).st_size
        self._torn = size > 0 and os.pread(self._fd, 1, size - 1) != b"\n"

    @property
    def torn(self) -> bool:
        """The file ends in the middle of a line: the next line starts with a newline."""
        return self._torn

    def write(self, obj: Mapping[str, Any]) -> None:
        self.write_line((dumps(obj) + "\n").encode())

    def write_line(self, data: bytes) -> None:
        """Append one line already encoded, newline included (OSError, e.g. ENOSPC, raised)."""
        view = memoryview(b"\n" + data if self._torn else data)
        written = 0
        try:
            while view:  # a regular file takes it whole; loop only for a short write (a full disk)
                n = os.write(self._fd, view)
                view = view[n:]
                written += n
        except OSError:
            if written:
                self._torn = True
            raise
        self._torn = False
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "Appender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# What a full disk (or quota) raises: the agent drops records then, instead of dying.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
