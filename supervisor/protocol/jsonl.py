"""Reading and appending JSON-lines files, tolerant of torn and garbage lines.

Standard library only (the agent uses it too). A writer appends each line with a
single ``os.write`` on an ``O_APPEND`` descriptor, so a reader sees a line whole
or not yet; a line without its newline is the writer still writing it (or a writer
that died mid-line) and is never parsed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from lrsup.supervisor.protocol.wire import MAX_LINE_BYTES, ProtocolError, dumps, loads


class LineSplitter:
    """Turns a byte stream into complete lines; keeps the partial tail for the next feed.

    A line that grows past MAX_LINE_BYTES without a newline is dropped as garbage (its
    bytes up to the next newline are skipped), so a runaway writer cannot exhaust memory.
    """

    def __init__(self) -> None:
        self._tail = b""
        self._discarding = False
        self.overlong = 0

    @property
    def pending(self) -> int:
        """Bytes of an incomplete last line waiting for their newline."""
        return len(self._tail)

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
    """What a reader skipped: counted and reported, never fatal."""

    lines: int = 0
    garbage: int = 0
    torn_tail: int = 0
    errors: list[str] = field(default_factory=list)

    def bad(self, message: str) -> None:
        self.garbage += 1
        if len(self.errors) < 20:
            self.errors.append(message)


def iter_objects(path: str | os.PathLike[str], stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of every complete line of ``path``.

    A torn last line (no newline) is dropped; a garbage line is skipped and counted.
    A missing file yields nothing.
    """
    stats = stats if stats is not None else ReadStats()
    splitter = LineSplitter()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        while chunk := f.read(1 << 16):
            for line in splitter.feed(chunk):
                if not line.strip():
                    continue
                stats.lines += 1
                try:
                    yield loads(line)
                except ProtocolError as exc:
                    stats.bad(str(exc))
    if splitter.pending:
        stats.torn_tail += 1
    stats.garbage += splitter.overlong


class Appender:
    """Appends protocol lines to one file, one ``os.write`` per line."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = os.fspath(path)
        self._fsync = fsync
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.path, flags, 0o600)

    def write(self, obj: Mapping[str, Any]) -> None:
        self.write_line((dumps(obj) + "\n").encode())

    def write_line(self, data: bytes) -> None:
        """Append one line already encoded, newline included."""
        view = memoryview(data)
        while view:  # a regular file takes it whole; loop only for the pathological short write
            n = os.write(self._fd, view)
            view = view[n:]
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
