"""Recovering a run directory after a crash: torn tails, the command history, the records to replay.

Whatever killed the writer, every complete line (ending in ``\\n``) of a ``.jsonl`` file
is kept and a torn last line is dropped. The supervisor's own files (control.jsonl,
journal.jsonl) are truncated to their last complete line before it appends again, so
a new line never glues onto garbage; metrics.jsonl belongs to the trainer and is only
read (its torn tail is the trainer still writing, or dead mid-line: never parsed).

Example::

    dropped = truncate_torn_tail(paths.control)
    history = read_control(paths.control)     # highest seq, commands already sent
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from lrsup.supervisor.protocol.jsonl import ReadStats, iter_objects
from lrsup.supervisor.protocol.wire import ProtocolError, Record, parse_record

_DECODE_BATCH = 1024  # lines per JSON array: one garbage line sends only its batch down the slow path


def complete_length(data: bytes) -> int:
    """Length of the prefix of ``data`` made of complete lines (up to and including the last ``\\n``)."""
    return data.rfind(b"\n") + 1


def truncate_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut ``path`` after its last newline; return how many torn bytes were dropped (0: none, or no file)."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        pos, keep = size, 0
        while pos > 0:  # search backwards for the last newline, a block at a time
            start = max(0, pos - (1 << 16))
            block = os.pread(fd, pos - start, start)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        if keep < size:
            os.ftruncate(fd, keep)
            os.fsync(fd)
        return size - keep
    finally:
        os.close(fd)


@dataclass
class ControlHistory:
    """What control.jsonl says was sent: the highest seq and every non-verdict command by seq."""

    max_seq: int = 0
    verdicts: int = 0  # one per epoch record the supervisor finished deciding on
    commands: dict[int, dict[str, Any]] = field(default_factory=dict)
    stats: ReadStats = field(default_factory=ReadStats)


def read_control(path: str | os.PathLike[str]) -> ControlHistory:
    """Scan control.jsonl (torn tail and garbage skipped).

    Only the unbroken run of seqs from 1 counts, as the agent counts it: a line with another
    seq was not written by the supervisor (which numbers without gaps) and is skipped.
    """
    history = ControlHistory()
    for obj in iter_objects(path, history.stats):
        seq = obj.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool) and seq == history.max_seq + 1:
            history.max_seq = seq
            if obj.get("cmd") == "verdict":
                history.verdicts += 1
            else:
                history.commands[seq] = obj
    return history


def read_records(
    path: str | os.PathLike[str], stats: ReadStats | None = None, start: int = 0
) -> tuple[list[Record], int]:
    """Every valid record of the complete lines of ``path`` after byte ``start``, and the offset they end at.

    The follower continues from that offset, so a line being written while we read is
    read once, live. ``start`` must be the start of a line (a snapshot's offset).
    """
    stats = stats if stats is not None else ReadStats()
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return [], start
    end = complete_length(data)
    records = []
    for obj in iter_objects_bytes(data[:end], stats):
        try:
            records.append(parse_record(obj))
        except ProtocolError as exc:
            stats.bad(str(exc))
    if end < len(data):
        stats.torn_tail += 1
    return records, start + end


def iter_objects_bytes(data: bytes, stats: ReadStats) -> list[dict[str, Any]]:
    """The JSON objects of the complete lines in ``data`` (garbage skipped and counted)."""
    from lrsup.supervisor.protocol.wire import loads_many

    lines = [line for line in data[: complete_length(data)].split(b"\n")[:-1] if line.strip()]
    stats.lines += len(lines)
    out = []
    for start in range(0, len(lines), _DECODE_BATCH):
        for obj in loads_many(lines[start : start + _DECODE_BATCH]):
            if isinstance(obj, ProtocolError):
                stats.bad(str(obj))
            else:
                out.append(obj)
    return out


def last_traceback(path: str | os.PathLike[str], max_lines: int = 30) -> list[str]:
    """The trainer log's last traceback (from its last ``Traceback`` line), else its last lines."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - (1 << 16)))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    tail = lines[starts[-1] :] if starts else lines
    return tail[-max_lines:]


def fatal_report(lifecycle: Any, log_path: str | os.PathLike[str], reason: str) -> str:
    """The FATAL message for stderr: why, restarts, time lost, the trainer's last traceback."""
    lines = [
        f"lrsup: FATAL: {reason}",
        f"lrsup: {lifecycle.restarts} restart(s), {lifecycle.time_lost:.0f} s lost in failed attempts and backoff",
        f"lrsup: last lines of {os.fspath(log_path)}:",
    ]
    lines += [f"    {line}" for line in last_traceback(log_path)]
    return "\n".join(lines)


__all__ = [
    "ControlHistory",
    "complete_length",
    "iter_objects",
    "last_traceback",
    "read_control",
    "read_records",
    "truncate_torn_tail",
]
