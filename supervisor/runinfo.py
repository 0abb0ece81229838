"""What happened in one run, read from its run directory in one pass.

``load_run`` reads ``metrics.jsonl`` and ``journal.jsonl`` once each (plus
``config.json`` and, when present, ``supervisor.json``) and returns a
:class:`RunInfo`: the start, one row per epoch, a downsampled series of batch
points for plots, every decision joined with what became of it, the events, the
outcome, restarts and rollbacks, timings and the best epoch. ``report``,
``export`` and ``notify`` build on it; nothing here imports matplotlib, rich or
tensorflow.

Example::

    info = load_run("runs/20260101T000000Z-train", progress=lambda done, total: ...)
    info.outcome          # Outcome.COMPLETED
    info.best.epoch, info.best.logs["val_loss"]

Reading is tolerant, as the protocol asks: a torn last line is ignored, garbage
is skipped and counted (``metrics_stats`` / ``journal_stats``), every optional
file or field may be missing. Batch records are the bulk of a big run: they are
counted without being parsed, and only those kept by the downsampler are
decoded, so a million-record file reads in about a second with memory bounded
by ``MAX_BATCH_POINTS``.

Epochs are 0-based here, as in the protocol; people see ``epoch + 1`` (the
report does that conversion, the CSV export does not).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
import time as _time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from lrsup.supervisor import protocol
from lrsup.supervisor.jsonl import LineSplitter, ReadStats
from lrsup.supervisor.protocol import (
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

# Progress callbacks receive (bytes read so far, total bytes to read).
ProgressFn = Callable[[int, int], None]

# At most this many batch points are kept for plots (between half and all of it).
MAX_BATCH_POINTS = 5000

_CHUNK = 1 << 20
# How the protocol's writer starts a batch line (protocol.dumps of BatchRecord.to_json()).
BATCH_LINE_PREFIX = b'{"v":%d,"type":"batch",' % protocol.PROTOCOL_VERSION

# Journal events and decision actions that interrupt training, by the kind they count as.
# Later features (rollback, restart) write these; add a name here to count a new one.
INTERRUPTION_NAMES: dict[str, str] = {
    "rollback": "rollback",
    "rolled_back": "rollback",
    "restart": "restart",
    "restarted": "restart",
    "restarting": "restart",  # the lifecycle's event when a new attempt is spawned
    "trainer_restarted": "restart",
}
# Journal events that mean the supervisor gave up on the trainer (restarts used up, ...).
_GIVE_UP_EVENTS = ("fatal", "give_up", "gave_up")
# Fields (on the line or inside a dict ``detail``) that say how many seconds were lost.
_TIME_LOST_KEYS = ("time_lost", "lost_seconds", "seconds_lost")
# A trainer that has written nothing for this long (and no supervisor pid to ask) is not running.
_STALE_SECONDS = 30.0


class RunInfoError(ValueError):
    """A path that is not a readable lrsup run directory; the message says why."""


class MissingExtraError(ImportError):
    """An optional dependency of lrsup (an "extra") is not installed.

    Shared by ``report`` (matplotlib, the ``plots`` extra) and ``export``
    (tensorboard, the ``tensorboard`` extra).
    """

    def __init__(self, what: str, package: str, extra: str) -> None:
        self.package, self.extra = package, extra
        super().__init__(f"{what} needs {package}, which is not installed: pip install 'lrsup[{extra}]'")


class Outcome(str, Enum):
    """How the run ended, as far as the files tell."""

    COMPLETED = "completed"  # fit ran its epochs (or the trainer exited 0)
    STOPPED = "stopped"  # a policy or the user stopped it early
    FAILED = "failed"  # training raised, or the trainer exited non-zero / was killed
    RUNNING = "running"  # the supervisor is alive, or the trainer wrote something moments ago
    INTERRUPTED = "interrupted"  # none of the above: the supervisor died or the files were cut short


@dataclass(frozen=True)
class EpochRow:
    """One epoch record, with its duration and place in the run.

    Args:
        epoch: int, 0-based as in the protocol.
        step, lr, logs, time: as in the record.
        duration: float or None, seconds since the previous epoch (or the start) of the same fit.
        attempt: int, index of the start record this epoch followed (0 for the first fit).
        superseded: bool, a later epoch of the same fit redid this one (after a rollback or restart).
    """

    epoch: int
    step: int
    lr: float | None
    logs: dict
    time: float
    duration: float | None = None
    attempt: int = 0
    superseded: bool = False


@dataclass(frozen=True)
class BatchPoint:
    """One kept batch record: where it was, the loss (None if not logged) and the LR.

    ``fit`` counts the fits that had ended before it; ``superseded`` is set like
    :class:`EpochRow`'s: a later batch of the same fit redid this part of training.
    """

    epoch: int
    batch: int
    step: int
    loss: float | None
    lr: float | None
    time: float = 0.0
    fit: int = 0
    superseded: bool = False


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


@dataclass
class Applied:
    """Where a command took effect (journal ``applied`` line or the agent's ``ack``)."""

    epoch: int | None
    step: int | None
    late: bool
    lr: float | None = None
    time: float | None = None


@dataclass
class Decision:
    """A journal ``decision`` line joined (by ``seq``) with its ``applied`` or ``command_error``."""

    time: float | None
    seq: int | None
    policy: str
    action: str
    lr: float | None
    reason: str
    epoch: int | None
    step: int | None
    suppressed: str | None
    extra: dict = field(default_factory=dict)  # fields this reader does not know (give_up, ...)
    applied: Applied | None = None
    error: str | None = None
    label: str = ""  # short name for plots: cut, raise, stop, give up, rollback...

    @property
    def status(self) -> str:
        """What became of it, in a few words."""
        if self.suppressed:
            return f"suppressed: {self.suppressed}"
        if self.error is not None:
            return f"refused: {self.error}"
        if self.applied is not None:
            where = f" at step {self.applied.step}" if self.applied.step is not None else ""
            return f"applied late{where}" if self.applied.late else f"applied{where}"
        if self.seq is None:
            return "no command"
        return "not acknowledged"

    @property
    def late(self) -> bool:
        return self.applied is not None and self.applied.late


@dataclass(frozen=True)
class Event:
    """A journal ``event`` line: ``event`` name, ``detail``, and any other fields in ``extra``."""

    time: float | None
    event: str
    detail: Any
    extra: dict = field(default_factory=dict)


@dataclass
class Interruption:
    """A restart or rollback: training went back and redid work.

    ``time_lost`` is what the journal said, or else an estimate from the records:
    from the end of the last epoch that was kept to the moment training got going
    again after the interruption (the next start record for a restart).
    ``span`` is that loss in plot units (epochs, 1-based as people count) or None.
    """

    kind: str
    time: float | None
    epoch: int | None
    seq: int | None = None
    reason: str = ""
    time_lost: float | None = None
    estimated: bool = False
    span: tuple[float, float] | None = None


@dataclass
class RunInfo:
    """Everything a report needs about one run. Built by :func:`load_run`."""

    run_dir: Path
    starts: list[StartRecord] = field(default_factory=list)
    epochs: list[EpochRow] = field(default_factory=list)
    batches: BatchSeries = field(default_factory=BatchSeries)
    decisions: list[Decision] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    interruptions: list[Interruption] = field(default_factory=list)
    end: EndRecord | None = None  # the end record of the last fit, if it ended
    agent_errors: list[ErrorRecord] = field(default_factory=list)
    config: dict | None = None
    config_error: str | None = None
    supervisor_state: dict | None = None
    outcome: Outcome = Outcome.INTERRUPTED
    outcome_detail: str = ""
    exit_status: int | None = None
    gave_up: bool = False
    first_time: float | None = None
    last_time: float | None = None
    last_step: int | None = None
    monitor: str | None = None
    mode: str = "min"
    best: EpochRow | None = None
    metrics_stats: ReadStats = field(default_factory=ReadStats)
    journal_stats: ReadStats = field(default_factory=ReadStats)

    # -- convenience views ------------------------------------------------------
    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def start(self) -> StartRecord | None:
        """The first start record (the fit as it was launched)."""
        return self.starts[0] if self.starts else None

    @property
    def optimizer(self) -> str | None:
        return self.start.optimizer if self.start else None

    @property
    def initial_lr(self) -> float | None:
        return self.start.lr if self.start else None

    @property
    def epochs_budget(self) -> int | None:
        return self.start.epochs if self.start else None

    @property
    def steps_per_epoch(self) -> int | None:
        """From the start record, else estimated from the steps between epoch records."""
        for start in self.starts:
            if start.steps_per_epoch:
                return start.steps_per_epoch
        deltas = [b.step - a.step for a, b in zip(self.epochs, self.epochs[1:]) if b.epoch == a.epoch + 1 and b.step > a.step]
        return int(statistics.median(deltas)) if deltas else None

    @property
    def final(self) -> EpochRow | None:
        return self.epochs[-1] if self.epochs else None

    @property
    def final_lr(self) -> float | None:
        """The newest LR known: the last epoch's, or a later acknowledged change."""
        best: tuple[int, int, float] | None = None  # (step, after-the-step, lr)
        if self.final is not None and self.final.lr is not None:
            best = (self.final.step, 0, self.final.lr)
        for d in self.decisions:
            if d.applied is not None and d.applied.lr is not None and d.applied.step is not None:
                candidate = (d.applied.step, 1, d.applied.lr)
                best = candidate if best is None or candidate[:2] >= best[:2] else best
        return best[2] if best is not None else self.initial_lr

    @property
    def wall_time(self) -> float | None:
        if self.first_time is None or self.last_time is None:
            return None
        return max(0.0, self.last_time - self.first_time)

    @property
    def time_per_epoch(self) -> float | None:
        """Median seconds per epoch (rollbacks and restarts do not skew a median)."""
        durations = [r.duration for r in self.epochs if r.duration is not None and r.duration > 0]
        return statistics.median(durations) if durations else None

    @property
    def restarts(self) -> list[Interruption]:
        return [i for i in self.interruptions if i.kind == "restart"]

    @property
    def rollbacks(self) -> list[Interruption]:
        return [i for i in self.interruptions if i.kind == "rollback"]

    @property
    def time_lost(self) -> float | None:
        """Seconds lost to restarts and rollbacks where known (None if none is known)."""
        known = [i.time_lost for i in self.interruptions if i.time_lost is not None]
        return sum(known) if known else None

    @property
    def active_decisions(self) -> list[Decision]:
        """Decisions that produced a command (not suppressed)."""
        return [d for d in self.decisions if not d.suppressed]

    @property
    def metric_keys(self) -> list[str]:
        """Every key of the epoch logs: loss first, then others sorted, then val_loss, then val_* sorted."""
        return order_metric_keys(k for row in self.epochs for k in row.logs)

    @property
    def warnings(self) -> list[str]:
        """Skipped lines and unreadable files, for a note in the report."""
        out = []
        for label, stats in ((protocol.METRICS_FILE, self.metrics_stats), (protocol.JOURNAL_FILE, self.journal_stats)):
            if stats.garbage:
                first = f" (first: {stats.errors[0]})" if stats.errors else ""
                out.append(f"{label}: {stats.garbage} unreadable line(s) skipped{first}")
            if stats.torn_tail:
                out.append(f"{label}: the last line is incomplete (being written, or the writer died) and was ignored")
        if self.config_error:
            out.append(self.config_error)
        return out


def order_metric_keys(keys: Iterator[str] | list[str]) -> list[str]:
    """Stable metric order: ``loss``, other training metrics sorted, ``val_loss``, other ``val_*`` sorted."""
    seen = set(keys)
    train = sorted(k for k in seen if not k.startswith("val_") and k != "loss")
    val = sorted(k for k in seen if k.startswith("val_") and k != "val_loss")
    return (["loss"] if "loss" in seen else []) + train + (["val_loss"] if "val_loss" in seen else []) + val


def metric_mode(name: str) -> str:
    """``"max"`` for accuracy and AUC style names (``*acc*``, ``*auc*``), else ``"min"``."""
    lowered = name.lower()
    return "max" if "acc" in lowered or "auc" in lowered else "min"


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------
# Reading


class _Progress:
    """Adds up bytes over the files read and calls the callback once per chunk."""

    def __init__(self, paths: list[Path], callback: ProgressFn | None) -> None:
        self.total = sum(_size(p) for p in paths)
        self.done = 0
        self.callback = callback

    def advance(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(min(self.done, self.total), self.total)

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(self.total, self.total)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def iter_lines(path: Path, stats: ReadStats, progress: _Progress | None = None) -> Iterator[bytes]:
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


def iter_records(path: str | os.PathLike[str], stats: ReadStats | None = None,
                 progress: ProgressFn | None = None, *, batch_stride: int = 1) -> Iterator[Record]:
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
    tracker = _Progress([path], progress)
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


def load_run(run_dir: str | os.PathLike[str], *, progress: ProgressFn | None = None, monitor: str | None = None,
             now: float | None = None, pid_alive: Callable[[int, int | None], bool] | None = None,
             max_batch_points: int = MAX_BATCH_POINTS) -> RunInfo:
    """Read a run directory into a :class:`RunInfo`.

    Args:
        run_dir: path of the run directory.
        progress: callable(bytes_read, total_bytes) or None; called about once per MiB.
        monitor: str or None. The metric that picks the best epoch; default ``val_loss``
            if any epoch has it, else ``loss``. Mode: max for ``*acc*``/``*auc*`` names, else min.
        now: float or None. Unix time used to judge whether a run without a supervisor
            pid is still running (default: the clock).
        pid_alive: callable(pid, start_time) -> bool, the system-call seam. The default checks
            that the pid exists, is no zombie and, when supervisor.json recorded the process's
            start time (clock ticks after boot), that it is the same process (pids get reused).
        max_batch_points: int, cap on the batch points kept for plots.

    Raises:
        RunInfoError: the path is not a directory, or holds neither metrics.jsonl nor journal.jsonl.
    """
    root = Path(os.path.abspath(run_dir))
    if not root.is_dir():
        raise RunInfoError(f"run directory {str(root)!r} does not exist or is not a directory")
    metrics_path, journal_path = root / protocol.METRICS_FILE, root / protocol.JOURNAL_FILE
    if not metrics_path.exists() and not journal_path.exists():
        raise RunInfoError(
            f"{str(root)!r} is not an lrsup run directory: it has neither {protocol.METRICS_FILE} "
            f"nor {protocol.JOURNAL_FILE}"
        )
    info = RunInfo(run_dir=root, batches=BatchSeries(max_batch_points))
    tracker = _Progress([metrics_path, journal_path], progress)
    extras = _read_metrics(info, metrics_path, tracker)
    _read_journal(info, journal_path, tracker)
    tracker.finish()
    info.config, info.config_error = _read_json(root / protocol.CONFIG_FILE)
    info.supervisor_state, _ = _read_json(root / protocol.STATE_FILE)
    _join_decisions(info, extras.acks, extras.refusals)
    _mark_superseded(info, extras.fits)
    _find_interruptions(info)
    _find_best(info, monitor)
    _decide_outcome(info, now=_time.time() if now is None else now, pid_alive=pid_alive or _pid_alive)
    return info


@dataclass
class _MetricsExtras:
    """What the metrics pass collects for the later joins, beside RunInfo."""

    acks: dict[int, AckRecord] = field(default_factory=dict)
    refusals: dict[int, str] = field(default_factory=dict)
    fits: list[int] = field(default_factory=list)  # per epoch row: how many fits had ended before it


def _read_metrics(info: RunInfo, path: Path, tracker: _Progress) -> _MetricsExtras:
    stats = info.metrics_stats
    batches = info.batches
    extras = _MetricsExtras()
    attempt = -1
    fit = 0  # completed or stopped fits so far: a new fit may legitimately start again at epoch 0
    previous_time: float | None = None  # end of the previous epoch of this attempt (or its start)
    last_batch_line: bytes | None = None
    first = last = None
    last_step = None
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
        if isinstance(record, BatchRecord):
            loss = record.logs.get("loss")
            batches.add(BatchPoint(record.epoch, record.batch, record.step,
                                   None if loss is None else float(loss), record.lr, record.time, fit))
        elif isinstance(record, EpochRecord):
            duration = record.time - previous_time if previous_time is not None and record.time else None
            info.epochs.append(EpochRow(record.epoch, record.step, record.lr, dict(record.logs), record.time,
                                        duration, max(attempt, 0)))
            extras.fits.append(fit)
            previous_time = record.time or previous_time
        elif isinstance(record, StartRecord):
            info.starts.append(record)
            info.end = None
            attempt += 1
            previous_time = record.time or None
        elif isinstance(record, EndRecord):
            info.end = record
            if record.reason in ("completed", "stopped"):
                fit += 1
        elif isinstance(record, AckRecord):
            extras.acks[record.seq] = record
        elif isinstance(record, ErrorRecord):
            info.agent_errors.append(record)
            if record.seq is not None:
                extras.refusals[record.seq] = record.message
    if last_batch_line is not None:  # the newest batch may have been skipped by the downsampler
        try:
            record = parse_record(loads(last_batch_line))
            if record.time:
                last = record.time if last is None else max(last, record.time)
            last_step = record.step if last_step is None else max(last_step, record.step)
        except ProtocolError:
            pass
    info.first_time, info.last_time, info.last_step = first, last, last_step
    return extras


def _read_journal(info: RunInfo, path: Path, tracker: _Progress) -> None:
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
        kind = obj.get("type")
        t = _num(obj.get("time"))
        if t is not None:
            info.first_time = t if info.first_time is None else min(info.first_time, t)
            info.last_time = t if info.last_time is None else max(info.last_time, t)
        if kind == "decision":
            known = {"v", "type", "time", "seq", "policy", "action", "lr", "reason", "epoch", "step", "suppressed"}
            info.decisions.append(Decision(
                time=t, seq=_int(obj.get("seq")), policy=_str(obj.get("policy")), action=_str(obj.get("action")),
                lr=_num(obj.get("lr")), reason=_str(obj.get("reason")), epoch=_int(obj.get("epoch")),
                step=_int(obj.get("step")), suppressed=_str(obj.get("suppressed")) or None,
                extra={k: v for k, v in obj.items() if k not in known},
            ))
        elif kind == "applied":
            seq = _int(obj.get("seq"))
            if seq is not None:
                applied[seq] = Applied(_int(obj.get("epoch")), _int(obj.get("step")), obj.get("late") is True,
                                       _num(obj.get("lr")), t)
        elif kind == "command_error":
            seq = _int(obj.get("seq"))
            if seq is not None:
                errors[seq] = _str(obj.get("message")) or "refused"
        elif kind == "event":
            name = _str(obj.get("event"))
            if not name:
                stats.bad("event line without an event name")
                continue
            info.events.append(Event(t, name, obj.get("detail"),
                                     {k: v for k, v in obj.items() if k not in ("v", "type", "time", "event", "detail")}))
        # Other line types are newer kinds this reader does not know: skipped, as the protocol allows.
    for d in info.decisions:
        if d.seq is not None:
            d.applied = applied.get(d.seq)
            d.error = errors.get(d.seq)


def _join_decisions(info: RunInfo, acks: Mapping[int, AckRecord], refusals: Mapping[int, str]) -> None:
    """Fill in from the agent's own ack/error records what the journal lacks; label each decision."""
    lr = info.initial_lr
    for d in info.decisions:
        if d.seq is not None:
            ack = acks.get(d.seq)
            if ack is not None:
                if d.applied is None:
                    d.applied = Applied(ack.epoch, ack.step, ack.late, ack.lr, ack.time or None)
                else:
                    d.applied.late = d.applied.late or ack.late
                    if d.applied.lr is None:
                        d.applied.lr = ack.lr
            if d.error is None and d.seq in refusals:
                d.error = refusals[d.seq]
        d.label = _label(d, lr)
        if d.label == "give up":
            info.gave_up = True
        if not d.suppressed and d.error is None:
            new = d.applied.lr if d.applied is not None and d.applied.lr is not None else d.lr
            lr = new if new is not None else lr


def _label(d: Decision, lr_before: float | None) -> str:
    action, policy = d.action.lower(), d.policy.lower()
    if action in ("override", "manual") or policy in ("override", "manual", "user"):
        return "override"
    if action == "give_up" or (action == "stop" and d.extra.get("give_up") is True):
        return "give up"
    if action in INTERRUPTION_NAMES:
        return INTERRUPTION_NAMES[action]
    if action in ("set_lr", "scale_lr"):
        new = d.lr
        if new is None or lr_before is None:
            return "cut" if action == "scale_lr" else "set lr"
        return "cut" if new < lr_before else "raise" if new > lr_before else "set lr"
    if action == "set_hparam":
        return "hparam"
    return action or "decision"


def _mark_superseded(info: RunInfo, fits: list[int]) -> None:
    """Epochs and batch points redone later in the same fit (rollback, restart) are superseded.

    ``fits[i]`` counts the fits that had ended (completed or stopped) before row i:
    a script that calls ``fit`` twice starts again at epoch 0 without redoing anything.
    """
    min_later: float | tuple[int, int] = math.inf
    fit = None
    out: list[EpochRow] = []
    for row, row_fit in zip(reversed(info.epochs), reversed(fits)):
        if row_fit != fit:
            fit, min_later = row_fit, math.inf
        out.append(dataclasses.replace(row, superseded=row.epoch >= min_later))
        min_later = min(min_later, row.epoch)
    info.epochs = out[::-1]
    points: list[BatchPoint] = []
    fit, later = None, None
    for p in reversed(info.batches.points):
        if p.fit != fit:
            fit, later = p.fit, None
        key = (p.epoch, p.batch)
        points.append(dataclasses.replace(p, superseded=later is not None and key >= later))
        later = key if later is None else min(later, key)
    info.batches.points = points[::-1]


def _find_interruptions(info: RunInfo) -> None:
    by_seq: dict[int, Interruption] = {}
    for d in info.decisions:
        kind = INTERRUPTION_NAMES.get(d.action.lower())
        if kind is None or d.suppressed or d.error is not None:
            continue
        item = Interruption(kind, d.time, d.epoch, d.seq, d.reason, _explicit_time_lost(d.extra))
        info.interruptions.append(item)
        if d.seq is not None:
            by_seq[d.seq] = item
    for e in info.events:
        kind = INTERRUPTION_NAMES.get(e.event.lower())
        if kind is None:
            continue
        detail = e.detail if isinstance(e.detail, dict) else {}
        seq = _int(e.extra.get("seq", detail.get("seq")))
        lost = _explicit_time_lost({**detail, **e.extra})
        if seq is not None and seq in by_seq:  # the event reports on a decision already counted
            if lost is not None:
                by_seq[seq].time_lost = lost
            continue
        epoch = _int(e.extra.get("epoch", detail.get("epoch")))
        reason = e.detail if isinstance(e.detail, str) else _str(detail.get("reason"))
        info.interruptions.append(Interruption(kind, e.time, epoch, seq, reason, lost))
    info.interruptions.sort(key=lambda i: (i.time is None, i.time or 0.0))
    for item in info.interruptions:
        _estimate_loss(info, item)


def _estimate_loss(info: RunInfo, item: Interruption) -> None:
    """Estimate the seconds (and the span of epochs) an interruption cost, from the epoch rows."""
    if item.time is None:
        return
    before = [r for r in info.epochs if r.time <= item.time]
    after = [r for r in info.epochs if r.time > item.time]
    if item.epoch is None and before:
        item.epoch = before[-1].epoch + 1  # the epoch in progress when it struck
    if not before or not after:
        return
    resumed_at = after[0].epoch  # the first epoch trained after it
    kept = [r for r in before if r.epoch == resumed_at - 1]
    restart_start = next((s.time for s in info.starts if s.time and s.time > item.time), None)
    resume_time = restart_start if item.kind == "restart" and restart_start else item.time
    if kept:
        base = kept[-1].time
    elif resumed_at == (info.start.initial_epoch if info.start else 0) and info.start is not None:
        base = info.start.time
    else:
        return
    if item.time_lost is None:
        item.time_lost = max(0.0, resume_time - base)
        item.estimated = True
    span_end = before[-1].epoch + 1.0
    spe = info.steps_per_epoch
    partial = [p for p in info.batches.points
               if p.epoch == before[-1].epoch + 1 and before[-1].time < p.time <= item.time]
    if spe and partial:  # it struck in the middle of an epoch
        span_end += min(1.0, (partial[-1].batch + 1) / spe)
    item.span = (float(resumed_at), max(float(resumed_at), span_end))


def _find_best(info: RunInfo, monitor: str | None) -> None:
    keys = {k for row in info.epochs for k in row.logs}
    if monitor is None:
        monitor = "val_loss" if "val_loss" in keys else ("loss" if "loss" in keys else None)
    info.monitor = monitor
    if monitor is None:
        return
    info.mode = metric_mode(monitor)
    candidates = [r for r in info.epochs if not r.superseded and is_finite_number(r.logs.get(monitor))]
    if candidates:
        pick = max if info.mode == "max" else min
        info.best = pick(candidates, key=lambda r: r.logs[monitor])


def _decide_outcome(info: RunInfo, *, now: float, pid_alive: Callable[[int, int | None], bool]) -> None:
    finished = next((e for e in reversed(info.events) if e.event == "finished"), None)
    exited = next((e for e in reversed(info.events) if e.event == "trainer_exited"), None)
    last_start = info.starts[-1].time if info.starts else None
    if exited is not None and last_start and exited.time is not None and exited.time < last_start:
        exited = None  # a restarted trainer is running again
    for source in (finished, exited):
        if source is not None and info.exit_status is None:
            info.exit_status = _exit_status(source)
    state = info.supervisor_state or {}
    if info.exit_status is None:
        info.exit_status = _int(state.get("exit_status", state.get("status")))
    fatal = next((e for e in reversed(info.events) if e.event in _GIVE_UP_EVENTS), None)
    if fatal is not None:
        info.gave_up = True

    pid = _int(state.get("supervisor_pid", state.get("pid")))
    started = _int(state.get("supervisor_start_time"))
    supervisor_alive = pid is not None and finished is None and pid_alive(pid, started)
    trainer_status = _exit_status(exited) if exited is not None else None
    end = info.end
    if supervisor_alive and exited is None:
        outcome, detail = Outcome.RUNNING, f"the supervisor (pid {pid}) is running"
    elif fatal is not None and (not last_start or fatal.time is None or fatal.time >= last_start):
        outcome, detail = Outcome.FAILED, _detail_text(fatal) or "the supervisor gave up on the trainer"
    elif end is not None and end.reason == "exception":
        outcome, detail = Outcome.FAILED, "training raised an exception"
    elif end is not None and trainer_status not in (None, 0):
        outcome, detail = Outcome.FAILED, _detail_text(exited) or f"trainer exited with status {trainer_status}"
    elif end is not None and end.reason == "stopped":
        outcome, detail = Outcome.STOPPED, _detail_text(finished) or ("gave up" if info.gave_up else "stopped early")
    elif end is not None:
        outcome, detail = Outcome.COMPLETED, _detail_text(finished) or "training completed"
    elif exited is not None:
        text = _detail_text(exited) or "the trainer exited"
        outcome = Outcome.COMPLETED if trainer_status == 0 else Outcome.FAILED
        detail = text if trainer_status == 0 else f"{text}, before training ended"
    elif finished is not None:
        outcome, detail = Outcome.FAILED, _detail_text(finished) or "the supervisor finished without an end record"
    elif pid is None and info.last_time is not None and now - info.last_time < _stale_after(info):
        outcome, detail = Outcome.RUNNING, "records are still arriving"
    else:
        outcome = Outcome.INTERRUPTED
        detail = "no end record and no exit recorded: the supervisor or the machine stopped"
    info.outcome, info.outcome_detail = outcome, detail


def _stale_after(info: RunInfo) -> float:
    agent = (info.config or {}).get("agent") if isinstance(info.config, dict) else None
    interval = _num(agent.get("heartbeat_interval")) if isinstance(agent, dict) else None
    return max(_STALE_SECONDS, 3 * interval) if interval else _STALE_SECONDS


_SIGNAL_RE = re.compile(r"signal\D{0,20}?(\d+)")
_STATUS_RE = re.compile(r"(?:exit status|status|code)\D{0,3}(-?\d+)")


def _exit_status(event: Event) -> int | None:
    """An exit status from an event's fields or detail text; a signal N counts as 128+N."""
    detail = event.detail if isinstance(event.detail, dict) else {}
    for source in (event.extra, detail):
        for key in ("status", "exit_status", "returncode"):
            value = _int(source.get(key))
            if value is not None:
                return 128 - value if value < 0 else value
    if isinstance(event.detail, int) and not isinstance(event.detail, bool):
        return event.detail
    if isinstance(event.detail, str):
        if m := _SIGNAL_RE.search(event.detail):
            return 128 + int(m.group(1))
        if m := _STATUS_RE.search(event.detail):
            value = int(m.group(1))
            return 128 - value if value < 0 else value
    return None


def _detail_text(event: Event | None) -> str:
    if event is None:
        return ""
    return event.detail if isinstance(event.detail, str) else ""


def _explicit_time_lost(obj: Mapping[str, Any]) -> float | None:
    for key in _TIME_LOST_KEYS:
        value = _num(obj.get(key))
        if value is not None and value >= 0:
            return value
    detail = obj.get("detail")
    return _explicit_time_lost(detail) if isinstance(detail, dict) else None


def _pid_alive(pid: int, start_time: int | None = None) -> bool:
    """True while ``pid`` exists and is no zombie, and (when known) started at ``start_time``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, belongs to someone else
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return True  # no /proc (not Linux): the pid exists, that is all we can tell
    if not fields or fields[0] == b"Z":
        return False
    try:
        return start_time is None or int(fields[19]) == start_time  # field 22 of /proc/<pid>/stat
    except (IndexError, ValueError):
        return True


def _read_json(path: Path) -> tuple[dict | None, str | None]:
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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
