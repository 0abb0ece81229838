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
from typing import Any, Collection

from lrsup.supervisor.protocol.journal import EventEntry, RequestEntry, read_entry
from lrsup.supervisor.protocol.jsonl import ReadStats, iter_objects
from lrsup.supervisor.protocol.wire import ProtocolError, Record, parse_record
from lrsup.supervisor.rundir.progress import RunProgress

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
    """What control.jsonl says was sent: the highest seq and every non-verdict command by seq.

    ``retained``: the last ``retain`` command's list, the checkpoints the run's experiments
    need (None: none sent); ``last_verdict_seq``: the seq of the last verdict (0: none).
    """

    max_seq: int = 0
    verdicts: int = 0  # one per epoch record the supervisor finished deciding on
    commands: dict[int, dict[str, Any]] = field(default_factory=dict)
    stats: ReadStats = field(default_factory=ReadStats)
    last_verdict_seq: int = 0
    retained: list[str] | None = None

    def after_last_verdict(self, exclude: set[int]) -> list[dict[str, Any]]:
        """The commands sent after the last verdict, oldest first, but for the seqs in ``exclude``."""
        return [self.commands[s] for s in sorted(self.commands) if s > self.last_verdict_seq and s not in exclude]


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
                history.last_verdict_seq = seq
            else:
                history.commands[seq] = obj
            if obj.get("cmd") == "retain" and isinstance(obj.get("keep"), list):
                history.retained = [name for name in obj["keep"] if isinstance(name, str)]
    return history


@dataclass
class JournalHistory:
    """What journal.jsonl says the supervisor already did (for ``lrsup resume``: never twice).

    Args:
        request: RequestEntry | None, the last ``request`` line: the operator request last acted on
            (``offset``: where its batch of requests.jsonl starts, ``index``: its place in the
            batch, ``seq``: the command it was to send, if any).
        held_by: str | None, who holds the policies (the last ``hold``/``release`` request).
        request_seqs: set[int], seqs of commands sent for operator requests.
        resent_seqs: set[int], seqs of commands re-sent after a restart.
        decision_seqs: set[int], seqs whose decision line is journaled.
        applied_seqs: set[int], seqs whose ack (``applied``) or refusal (``command_error``) is journaled.
        finished: dict | None, the ``finished`` event, if the dead supervisor got that far.
        events: list[EventEntry], the events of the names ``read_journal`` was asked for, oldest
            first (``lrsup resume``: PBT's, lrsup.supervisor.run.operator).
        after_request: list[str], the names of those of ``events`` journaled after the last
            ``request`` line (whether that request was carried out to its end).
    """

    request: RequestEntry | None = None
    held_by: str | None = None
    request_seqs: set[int] = field(default_factory=set)
    resent_seqs: set[int] = field(default_factory=set)
    decision_seqs: set[int] = field(default_factory=set)
    applied_seqs: set[int] = field(default_factory=set)
    finished: dict[str, Any] | None = None
    events: list[EventEntry] = field(default_factory=list)
    after_request: list[str] = field(default_factory=list)


def read_journal(path: str | os.PathLike[str], events: Collection[str] = ()) -> JournalHistory:
    """Scan journal.jsonl for what must not be done twice (torn tail and garbage skipped).

    ``events``: the names of the events to keep in ``JournalHistory.events`` (none by default).
    """
    journal = JournalHistory()
    seqs = {
        "decision": journal.decision_seqs,
        "override": journal.decision_seqs,
        "applied": journal.applied_seqs,
        "command_error": journal.applied_seqs,
    }
    for obj in iter_objects(path, ReadStats()):
        entry = read_entry(obj)
        seq = getattr(entry, "seq", None)
        if isinstance(entry, RequestEntry):
            journal.request, journal.after_request = entry, []
            if entry.op in ("hold", "release"):
                journal.held_by = entry.who if entry.op == "hold" else None
            if seq is not None:
                journal.request_seqs.add(seq)
        elif isinstance(entry, EventEntry) and entry.event == "resent" and seq is None:
            seq = entry.fields.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                journal.resent_seqs.add(seq)
        elif isinstance(entry, EventEntry) and entry.event == "finished":
            journal.finished = obj
        elif isinstance(entry, EventEntry) and entry.event in events:
            journal.events.append(entry)
            journal.after_request.append(entry.event)
        elif entry.kind in seqs and seq is not None:
            seqs[entry.kind].add(seq)
    return journal


@dataclass
class TakeOver:
    """What ``lrsup resume`` hands a new Runner (``Runner.take_over``), computed from the run directory.

    Args:
        seq: int, the highest seq in control.jsonl (the channel continues after it).
        unacked: dict[int, dict], commands sent and not acknowledged yet.
        progress: RunProgress, what the records before ``replay`` said (from the snapshot).
        attempt: int, the attempt supervisor.json names.
        replay: list[Record], records already decided on (a verdict was sent): fed silently.
        live: list[Record], records after the last verdict: handled live, but a command
            already in ``presend`` is not sent again.
        presend: list[dict], the commands sent after the last verdict (policy decisions on ``live``).
        journal: JournalHistory, what is already journaled.
        retained: list[str], the checkpoints to keep, given to every new attempt.
        trainer: (pid, start time) of the trainer supervisor.json names.
        alive: bool, that trainer is still running (reattach), else restart it.
        started: float | None, when the run started (wall clock).
        how: str, where the engine's state came from, for the journal.
        torn: str, which torn tails were dropped, for the journal.
        parked: bool, the supervisor died parked (a PBT member waiting for its turn, no trainer):
            the new one waits parked too, instead of restarting the trainer.
        turns: int, attempts a turn started so far (not restarts).
    """

    seq: int
    unacked: dict[int, dict[str, Any]]
    progress: RunProgress
    attempt: int
    replay: list[Record]
    live: list[Record]
    presend: list[dict[str, Any]]
    journal: JournalHistory
    retained: list[str]
    trainer: tuple[int | None, int | None]
    alive: bool
    started: float | None
    how: str
    torn: str
    parked: bool = False
    turns: int = 0


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
    "JournalHistory",
    "TakeOver",
    "complete_length",
    "iter_objects",
    "last_traceback",
    "read_control",
    "read_journal",
    "read_records",
    "truncate_torn_tail",
]
