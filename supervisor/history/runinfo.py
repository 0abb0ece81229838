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

This module owns :class:`RunInfo` and :func:`load_run` (and the joins done after
reading: decisions with their acks, labels, the best epoch). The parts, all
re-exported here: ``run_rows`` (the row types and errors), ``run_reader`` (the
one-pass streaming readers and the batch downsampler), ``interruptions``
(superseded epochs, restarts, rollbacks and time lost) and ``outcome`` (how the
run ended, its exit status).
"""

from __future__ import annotations

import os
import statistics
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from lrsup.supervisor import protocol
from lrsup.supervisor.history.interruptions import INTERRUPTION_NAMES, find_interruptions, mark_superseded
from lrsup.supervisor.history.outcome import decide_outcome
from lrsup.supervisor.history.reader import (
    BATCH_LINE_PREFIX,
    MAX_BATCH_POINTS,
    BatchSeries,
    ProgressFn,
    ReadProgress,
    iter_lines,
    iter_records,
    read_journal,
    read_metrics,
)
from lrsup.supervisor.history.rows import (
    Applied,
    BatchPoint,
    DecisionRow,
    EpochRow,
    Event,
    Interruption,
    MissingExtraError,
    Outcome,
    RunInfoError,
    Stage,
    fmt_lr,
    is_finite_number,
    monitor_direction,
    order_metric_keys,
)
from lrsup.supervisor.protocol.journal import OVERRIDE, LrOwnerEntry, MissingMetricEntry
from lrsup.supervisor.protocol.jsonl import ReadStats
from lrsup.supervisor.protocol.wire import AckRecord, EndRecord, ErrorRecord, StartRecord
from lrsup.supervisor.rundir.liveness import pid_alive as _default_pid_alive
from lrsup.supervisor.rundir.statefile import read_json

__all__ = [
    "BATCH_LINE_PREFIX",
    "INTERRUPTION_NAMES",
    "MAX_BATCH_POINTS",
    "Applied",
    "BatchPoint",
    "BatchSeries",
    "DecisionRow",
    "EpochRow",
    "Event",
    "Interruption",
    "MissingExtraError",
    "Outcome",
    "ProgressFn",
    "RunInfo",
    "RunInfoError",
    "Stage",
    "fmt_lr",
    "is_finite_number",
    "iter_lines",
    "iter_records",
    "load_run",
    "monitor_direction",
    "order_metric_keys",
]


@dataclass
class RunInfo:
    """Everything a report needs about one run. Built by :func:`load_run`."""

    run_dir: Path
    starts: list[StartRecord] = field(default_factory=list)
    # The LR range test's probes: (time of the probe's start record, time of the next start
    # record or None); what was decided in between belongs to the probe, not to an epoch.
    probes: list[tuple[float, float | None]] = field(default_factory=list)
    epochs: list[EpochRow] = field(default_factory=list)
    batches: BatchSeries = field(default_factory=BatchSeries)
    decisions: list[DecisionRow] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    missing_metrics: list[MissingMetricEntry] = field(default_factory=list)  # monitored metrics a fit lacked
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
    mode: str | None = None  # "min" / "max" for the monitor; None: its direction is unknown (no best)
    best: EpochRow | None = None
    metrics_stats: ReadStats = field(default_factory=ReadStats)
    journal_stats: ReadStats = field(default_factory=ReadStats)
    lr_owner: list[LrOwnerEntry] = field(default_factory=list)  # who owned the LR, per fit (the journal's)

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
        deltas = [
            b.step - a.step for a, b in zip(self.epochs, self.epochs[1:]) if b.epoch == a.epoch + 1 and b.step > a.step
        ]
        return int(statistics.median(deltas)) if deltas else None

    @property
    def final(self) -> EpochRow | None:
        return self.epochs[-1] if self.epochs else None

    def in_probe(self, time: float | None) -> bool:
        """True when ``time`` falls inside one of the LR range test's probes."""
        if time is None:
            return False
        return any(begin <= time and (end is None or time < end) for begin, end in self.probes)

    @property
    def final_lr(self) -> float | None:
        """The newest LR known: the last epoch's, or a later acknowledged change.

        "Later" by time when both are timed (steps start again in a new fit, after a rollback
        and after the LR range test's probe), else by step.
        """
        best: tuple[float | None, int, int, float] | None = None  # (time, step, after-the-step, lr)
        if self.final is not None and self.final.lr is not None:
            best = (self.final.time, self.final.step, 0, self.final.lr)
        # Steps count afresh in a later fit (a new optimizer): only the last fit's changes compare.
        since = self.starts[-1].time if len({s.fit for s in self.starts}) > 1 else None
        for d in self.decisions:
            if since and d.applied is not None and (d.applied.time or d.time or 0.0) < since:
                continue
            if d.applied is not None and d.applied.lr is not None and d.applied.step is not None:
                candidate = (d.applied.time, d.applied.step, 1, d.applied.lr)
                if best is None:
                    best = candidate
                elif candidate[0] is not None and best[0] is not None:
                    best = candidate if candidate[0] >= best[0] else best
                elif candidate[1:3] >= best[1:3]:
                    best = candidate
        return best[3] if best is not None else self.initial_lr

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

    def fit_of(self, row: EpochRow) -> int:
        """The fit (stage) an epoch row belongs to: its start record's ``fit``."""
        return self.starts[row.attempt].fit if row.attempt < len(self.starts) else 1

    @property
    def stages(self) -> list[Stage]:
        """One :class:`Stage` per fit of the script, in order (a single-fit run has one).

        A decision belongs to the fit whose start record came last before it (by time).
        """
        by_fit: dict[int, Stage] = {}
        for start in self.starts:
            stage = by_fit.get(start.fit)
            if stage is None:
                by_fit[start.fit] = Stage(start.fit, start.optimizer, start.lr, start.lr, 0, start.epochs, [], 1)
            else:
                stage.attempts += 1
                stage.epochs = start.epochs if start.epochs is not None else stage.epochs
        done: dict[int, set[int]] = {}
        for row in self.epochs:
            fit = self.fit_of(row)
            done.setdefault(fit, set()).add(row.epoch)
            if fit in by_fit and not row.superseded and row.lr is not None:
                by_fit[fit].lr_end = row.lr
        for fit, epochs in done.items():
            if fit in by_fit:
                by_fit[fit].epochs_done = len(epochs)
        times = [(start.time, start.fit) for start in self.starts if start.time]
        for d in self.decisions:
            if d.suppressed or d.label not in ("rollback", "give up") or d.time is None:
                continue
            fits = [fit for t, fit in times if t <= d.time]
            if fits and fits[-1] in by_fit:
                by_fit[fits[-1]].rescues.append(d)
        return [by_fit[fit] for fit in sorted(by_fit)]

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
    def policy_decisions(self) -> list[DecisionRow]:
        """The decisions a person reads: every journal decision but checkpoint bookkeeping (retain, keep...)."""
        return [d for d in self.decisions if not d.housekeeping]

    @property
    def active_decisions(self) -> list[DecisionRow]:
        """Decisions that produced a command (not suppressed), bookkeeping left out."""
        return [d for d in self.policy_decisions if not d.suppressed]

    @property
    def housekeeping_count(self) -> int:
        """Journal decisions on checkpoint bookkeeping (``protocol.HOUSEKEEPING_ACTIONS``), never counted as decisions."""
        return len(self.decisions) - len(self.policy_decisions)

    @property
    def metric_keys(self) -> list[str]:
        """Every key of the epoch logs: loss first, then others sorted, then val_loss, then val_* sorted."""
        return order_metric_keys(k for row in self.epochs for k in row.logs)

    @property
    def warnings(self) -> list[str]:
        """Monitored metrics a fit lacked, skipped lines and unreadable files, for a note in the report."""
        out = [m.message for m in self.missing_metrics if m.message]
        for label, stats in ((protocol.METRICS_FILE, self.metrics_stats), (protocol.JOURNAL_FILE, self.journal_stats)):
            if stats.garbage:
                first = f" (first: {stats.errors[0]})" if stats.errors else ""
                out.append(f"{label}: {stats.garbage} unreadable line(s) skipped{first}")
            if stats.torn_tail:
                out.append(f"{label}: the last line is incomplete (being written, or the writer died) and was ignored")
        if self.config_error:
            out.append(self.config_error)
        return out


def load_run(
    run_dir: str | os.PathLike[str],
    *,
    progress: ProgressFn | None = None,
    monitor: str | None = None,
    now: float | None = None,
    pid_alive: Callable[[int, int | None], bool] | None = None,
    max_batch_points: int = MAX_BATCH_POINTS,
) -> RunInfo:
    """Read a run directory into a :class:`RunInfo`.

    Args:
        run_dir: path of the run directory.
        progress: callable(bytes_read, total_bytes) or None; called about once per MiB.
        monitor: str or None. The metric that picks the best epoch; default ``val_loss``
            if any epoch has it, else ``loss``. Its direction: the configured policy's ``mode`` for it,
            else inferred from the name by the policies' rule (``monitor_direction``).
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
    tracker = ReadProgress([metrics_path, journal_path], progress)
    extras = read_metrics(info, metrics_path, tracker)
    read_journal(info, journal_path, tracker)
    tracker.finish()
    info.config, info.config_error = read_json(root / protocol.CONFIG_FILE)
    info.supervisor_state, _ = read_json(root / protocol.STATE_FILE)
    _join_decisions(info, extras.acks, extras.refusals)
    mark_superseded(info, extras.fits)
    find_interruptions(info)
    _find_best(info, monitor)
    decide_outcome(info, now=_time.time() if now is None else now, pid_alive=pid_alive or _default_pid_alive)
    return info


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
        if d.action == OVERRIDE and d.epoch is None and d.applied is not None:
            d.epoch, d.step = d.applied.epoch, d.applied.step  # an override is placed where it took effect
        d.label = _label(d, lr)
        if d.label == "give up":
            info.gave_up = True
        if not d.suppressed and d.error is None:
            new = d.applied.lr if d.applied is not None and d.applied.lr is not None else d.lr
            lr = new if new is not None else lr


def _label(d: DecisionRow, lr_before: float | None) -> str:
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


def _find_best(info: RunInfo, monitor: str | None) -> None:
    keys = {k for row in info.epochs for k in row.logs}
    if monitor is None:
        monitor = "val_loss" if "val_loss" in keys else ("loss" if "loss" in keys else None)
    info.monitor = monitor
    if monitor is None:
        return
    info.mode = monitor_direction(monitor, info.config)
    candidates = [r for r in info.epochs if not r.superseded and is_finite_number(r.logs.get(monitor))]
    if candidates and info.mode is not None:
        pick = max if info.mode == "max" else min
        info.best = pick(candidates, key=lambda r: r.logs[monitor])
