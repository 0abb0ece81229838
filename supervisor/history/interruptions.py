"""Restarts and rollbacks: which epochs were redone, the interruptions, and the time they cost.

After the files are read, :func:`mark_superseded` flags the epoch rows and batch
points that a later part of the same fit redid, and :func:`find_interruptions` lists
every restart and rollback (from the journal's decisions and events, one entry per
interruption), taking the time lost from the journal when it says so and estimating
it from the epoch rows otherwise (with the span of epochs lost, for the figure).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Mapping

from lrsup.supervisor.history.rows import BatchPoint, EpochRow, Interruption, as_float, as_int, as_str

if TYPE_CHECKING:
    from lrsup.supervisor.history.runinfo import RunInfo

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
# Fields (on the line or inside a dict ``detail``) that say how many seconds were lost.
_TIME_LOST_KEYS = ("time_lost", "lost_seconds", "seconds_lost")


def mark_superseded(info: RunInfo, fits: list[int]) -> None:
    """Epochs and batch points redone later in the same fit (rollback, restart) are superseded.

    ``fits[i]`` counts the fits that had ended (completed or stopped) before row i:
    a script that calls ``fit`` twice starts again at epoch 0 without redoing anything.
    """
    min_later: float = math.inf
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


def find_interruptions(info: RunInfo) -> None:
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
        seq = as_int(e.extra.get("seq", detail.get("seq")))
        lost = _explicit_time_lost({**detail, **e.extra})
        if seq is not None and seq in by_seq:  # the event reports on a decision already counted
            if lost is not None:
                by_seq[seq].time_lost = lost
            continue
        epoch = as_int(e.extra.get("epoch", detail.get("epoch")))
        reason = e.detail if isinstance(e.detail, str) else as_str(detail.get("reason"))
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
    partial = [
        p for p in info.batches.points if p.epoch == before[-1].epoch + 1 and before[-1].time < p.time <= item.time
    ]
    if spe and partial:  # it struck in the middle of an epoch
        span_end += min(1.0, (partial[-1].batch + 1) / spe)
    item.span = (float(resumed_at), max(float(resumed_at), span_end))


def _explicit_time_lost(obj: Mapping[str, Any]) -> float | None:
    for key in _TIME_LOST_KEYS:
        value = as_float(obj.get(key))
        if value is not None and value >= 0:
            return value
    detail = obj.get("detail")
    return _explicit_time_lost(detail) if isinstance(detail, dict) else None
