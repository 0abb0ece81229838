"""Reading a run's files in one pass: the line streams, the metrics and journal readers, downsampling.

Batch records are the bulk of a big run: :class:`BatchSeries` decides from a count
alone whether a batch line is kept, so the metrics reader decodes only the kept ones
(a million-record file reads in about a second with memory bounded by
``MAX_BATCH_POINTS``). Reading is tolerant, as the protocol asks: a torn last line is
ignored, garbage is skipped and counted in a :class:`~lrsup.supervisor.protocol.jsonl.ReadStats`,
a missing file reads as empty.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from lrsup.supervisor import protocol
from lrsup.supervisor.history.rows import Applied, BatchPoint, DecisionRow, EpochRow, Event
from lrsup.supervisor.protocol.journal import (
    OVERRIDE,
    AppliedEntry,
    CommandErrorEntry,
    DecisionEntry,
    EventEntry,
    LrOwnerEntry,
    MissingMetricEntry,
    OverrideEntry,
    read_entry,
)
from lrsup.supervisor.protocol.jsonl import LineSplitter, ReadStats
from lrsup.supervisor.protocol.wire import (
    AckRecord,
    BatchRecord,
    EndRecord,
    EpochRecord,
    ErrorRecord,
    ProtocolError,
    Record,
    StartRecord,
    loads,
    parse_record,
)
from lrsup.supervisor.rundir.statefile import file_size

if TYPE_CHECKING:
    from lrsup.supervisor.history.runinfo import RunInfo

# Progress callbacks receive (bytes read so far, total bytes to read).
ProgressFn = Callable[[int, int], None]

# At most this many batch points are kept for plots (between half and all of it).
MAX_BATCH_POINTS = 5000

_CHUNK = 1 << 20
# How the protocol's writer starts a batch line (protocol.dumps of BatchRecord.to_json()).
BATCH_LINE_PREFIX = b'{"v":%d,"type":"batch",' % protocol.PROTOCOL_VERSION


class BatchSeries:
    """Keeps at most ``cap`` evenly spaced points of a stream of unknown length.

    Point ``i`` of the stream is kept when ``i % stride == 0``; when the list is
    full, every other point is dropped and the stride doubles. Memory stays
    O(cap), the kept points stay evenly spaced, and deciding whether to keep a
    point (``wants``) costs nothing, so the caller decodes only kept points.
    """

    def __init__(self, cap: int = MAX_BATCH_POINTS) -> None:
        if cap < 2:
            raise ValueError(f"cap must be >= 2, got {cap!r}")
        self.cap = cap
        self.stride = 1
        self.seen = 0  # points offered so far
        self.points: list[BatchPoint] = []

    def wants(self) -> bool:
        """Count one more point of the stream; True if it should be decoded and ``add``-ed."""
        index = self.seen
        self.seen += 1
        return index % self.stride == 0

    def add(self, point: BatchPoint) -> None:
        self.points.append(point)
        if len(self.points) >= self.cap:
            self.points = self.points[::2]
            self.stride *= 2


class ReadProgress:
    """Adds up bytes over the files read and calls the callback once per chunk."""

    def __init__(self, paths: list[Path], callback: ProgressFn | None) -> None:
        self.total = sum(file_size(p) for p in paths)
        self.done = 0
        self.callback = callback

    def advance(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(min(self.done, self.total), self.total)

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(self.total, self.total)


def iter_lines(path: Path, stats: ReadStats, progress: ReadProgress | None = None) -> Iterator[bytes]:
    """Complete, non-blank lines of ``path`` (missing file: none). Torn tail and over-long lines are counted."""
    splitter = LineSplitter()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        stats.bad(f"cannot read {path.name}: {exc.strerror}")
        return
    with f:
        while chunk := f.read(_CHUNK):
            for line in splitter.feed(chunk):
                if line.strip():
                    yield line
            if progress is not None:
                progress.advance(len(chunk))
    if splitter.pending:
        stats.torn_tail += 1
    stats.garbage += splitter.overlong


def iter_records(
    path: str | os.PathLike[str],
    stats: ReadStats | None = None,
    progress: ProgressFn | None = None,
    *,
    batch_stride: int = 1,
) -> Iterator[Record]:
    """Every valid record of a metrics file, parsed (garbage skipped and counted).

    Args:
        path: the metrics file.
        stats: ReadStats or None, filled with what was skipped.
        progress: callable(bytes_read, total_bytes) or None.
        batch_stride: int >= 1. Keep every ``batch_stride``-th batch record (the first
            included); the others are counted as lines but never decoded.
    """
    if batch_stride < 1:
        raise ValueError(f"batch_stride must be >= 1, got {batch_stride!r}")
    stats = stats if stats is not None else ReadStats()
    path = Path(path)
    tracker = ReadProgress([path], progress)
    batches = 0
    for line in iter_lines(path, stats, tracker):
        stats.lines += 1
        if batch_stride > 1 and line.startswith(BATCH_LINE_PREFIX):
            batches += 1
            if (batches - 1) % batch_stride:
                continue
        try:
            yield parse_record(loads(line))
        except ProtocolError as exc:
            stats.bad(str(exc))
    tracker.finish()


@dataclass
class MetricsExtras:
    """What the metrics pass collects for the later joins, beside RunInfo."""

    acks: dict[int, AckRecord] = field(default_factory=dict)
    refusals: dict[int, str] = field(default_factory=dict)
    fits: list[int] = field(default_factory=list)  # per epoch row: the key of its fit (see ``read_metrics``)


def read_metrics(info: RunInfo, path: Path, tracker: ReadProgress) -> MetricsExtras:
    stats = info.metrics_stats
    batches = info.batches
    extras = MetricsExtras()
    attempt = -1
    # The key of the fit a row belongs to, so that only a redo within one fit supersedes: a start
    # record's ``fit`` when it is a later fit (as -fit: the same in every attempt, also after a
    # restart that skipped the fits before it), else the fits ended so far (a run from before
    # stages numbers every fit 1: a new fit may legitimately start again at epoch 0).
    ended = 0
    fit = 0
    previous_time: float | None = None  # end of the previous epoch of this attempt (or its start)
    last_batch_line: bytes | None = None
    first = last = None
    last_step = None
    probe = False  # inside a probe's stage (from its start record to the next one)
    for line in iter_lines(path, stats, tracker):
        stats.lines += 1
        if line.startswith(BATCH_LINE_PREFIX):
            last_batch_line = line
            if not batches.wants():
                continue
        try:
            record = parse_record(loads(line))
        except ProtocolError as exc:
            stats.bad(str(exc))
            continue
        if record.time:
            first = record.time if first is None else min(first, record.time)
            last = record.time if last is None else max(last, record.time)
        step = getattr(record, "step", None)
        if isinstance(step, int) and not isinstance(record, StartRecord):
            last_step = step if last_step is None else max(last_step, step)
        if isinstance(record, StartRecord):
            if info.probes and info.probes[-1][1] is None:  # the stage after a probe begins
                info.probes[-1] = (info.probes[-1][0], record.time)
            probe = record.probe  # the LR range test's probe: its records are no training of the run's
            if probe:
                info.probes.append((record.time, None))
                continue
        elif probe and not isinstance(record, (AckRecord, ErrorRecord)):
            continue
        if isinstance(record, BatchRecord):
            loss = record.logs.get("loss")
            batches.add(
                BatchPoint(
                    record.epoch,
                    record.batch,
                    record.step,
                    None if loss is None else float(loss),
                    record.lr,
                    record.time,
                    fit,
                )
            )
        elif isinstance(record, EpochRecord):
            duration = record.time - previous_time if previous_time is not None and record.time else None
            info.epochs.append(
                EpochRow(
                    record.epoch, record.step, record.lr, dict(record.logs), record.time, duration, max(attempt, 0)
                )
            )
            extras.fits.append(fit)
            previous_time = record.time or previous_time
        elif isinstance(record, StartRecord):
            info.starts.append(record)
            info.end = None
            attempt += 1
            fit = -record.fit if record.fit > 1 else ended
            previous_time = record.time or None
        elif isinstance(record, EndRecord):
            info.end = record
            if record.reason in ("completed", "stopped"):
                ended += 1
                fit = ended
        elif isinstance(record, AckRecord):
            extras.acks[record.seq] = record
        elif isinstance(record, ErrorRecord):
            info.agent_errors.append(record)
            if record.seq is not None:
                extras.refusals[record.seq] = record.message
    if last_batch_line is not None:  # the newest batch may have been skipped by the downsampler
        try:
            record = parse_record(loads(last_batch_line))
            assert isinstance(record, BatchRecord)  # the line was kept as a batch record's
            if record.time:
                last = record.time if last is None else max(last, record.time)
            last_step = record.step if last_step is None else max(last_step, record.step)
        except ProtocolError:
            pass
    info.first_time, info.last_time, info.last_step = first, last, last_step
    return extras


def read_journal(info: RunInfo, path: Path, tracker: ReadProgress) -> None:
    stats = info.journal_stats
    applied: dict[int, Applied] = {}
    errors: dict[int, str] = {}
    for line in iter_lines(path, stats, tracker):
        stats.lines += 1
        try:
            obj = loads(line)
        except ProtocolError as exc:
            stats.bad(str(exc))
            continue
        if obj.get("v") != protocol.PROTOCOL_VERSION:
            stats.bad(f"unsupported protocol version {obj.get('v')!r}")
            continue
        entry = read_entry(obj)
        t = entry.time
        if t is not None:
            info.first_time = t if info.first_time is None else min(info.first_time, t)
            info.last_time = t if info.last_time is None else max(info.last_time, t)
        if isinstance(entry, DecisionEntry):
            info.decisions.append(
                DecisionRow(
                    t,
                    entry.seq,
                    entry.policy,
                    entry.action,
                    entry.lr,
                    entry.reason,
                    entry.epoch,
                    entry.step,
                    entry.suppressed,
                    dict(entry.extra),
                )
            )
        elif isinstance(entry, OverrideEntry):
            # An operator's set-lr: a decision of the operator's, labelled "override" (placed by its ack).
            why = f"operator override by {entry.who}" + (f" ({entry.why})" if entry.why else "")
            extra = {"who": entry.who, "why": entry.why, **entry.extra}
            info.decisions.append(
                DecisionRow(t, entry.seq, entry.who, OVERRIDE, entry.lr, why, None, None, entry.suppressed, extra)
            )
        elif isinstance(entry, AppliedEntry):
            if entry.seq is not None:
                applied[entry.seq] = Applied(entry.epoch, entry.step, entry.late, entry.lr, t)
        elif isinstance(entry, CommandErrorEntry):
            if entry.seq is not None:
                errors[entry.seq] = entry.message or "refused"
        elif isinstance(entry, EventEntry):
            if not entry.event:
                stats.bad("event line without an event name")
                continue
            info.events.append(Event(t, entry.event, entry.detail, dict(entry.fields)))
        elif isinstance(entry, MissingMetricEntry):
            info.missing_metrics.append(entry)
        elif isinstance(entry, LrOwnerEntry):
            info.lr_owner.append(entry)
        # UnknownEntry: a newer kind this reader does not know: skipped, as the protocol allows.
