"""What the report figures draw, as plain data: x/y series, y limits and decision markers.

The x axis counts epochs as people do: x = 3 is the end of the third epoch (protocol
epoch 2); batch points fall in between. A script that fits several times has its fits
(stages) one after the other: a later fit's epochs start where the earlier fit's last
recorded epoch ended (``fit_offsets``), and the figure marks each boundary. Pure:
matplotlib is ``report_plot``'s alone.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Sequence

from lrsup.supervisor.history.runinfo import DecisionRow, EpochRow, RunInfo, is_finite_number

# The last run's offsets, by the run's identity and size (a figure asks for them once per point).
_last_offsets: tuple[RunInfo, int, int, dict[int, float]] | None = None


def fit_offsets(info: RunInfo) -> dict[int, float]:
    """The x offset of each fit: the epochs its earlier fits recorded ({} for a single fit)."""
    global _last_offsets
    extent: dict[int, int] = {start.fit: 0 for start in info.starts}
    if len(extent) < 2:
        return {}
    if (
        _last_offsets is not None
        and _last_offsets[0] is info
        and _last_offsets[1:3] == (len(info.starts), len(info.epochs))
    ):
        return _last_offsets[3]
    offsets: dict[int, float] = {}
    for row in info.epochs:
        fit = info.fit_of(row)
        extent[fit] = max(extent.get(fit, 0), row.epoch + 1)
    total = 0.0
    for fit in sorted(extent):
        offsets[fit] = total
        total += extent[fit]
    _last_offsets = (info, len(info.starts), len(info.epochs), offsets)
    return offsets


def offset_at(info: RunInfo, time: float | None) -> float:
    """The x offset of the fit running at ``time`` (the last start record before it)."""
    offsets = fit_offsets(info)
    if not offsets or time is None:
        return 0.0
    times = [start.time for start in info.starts]
    index = bisect.bisect_right(times, time) - 1
    return offsets.get(info.starts[max(index, 0)].fit, 0.0)


def fit_boundaries(info: RunInfo) -> list[tuple[float, int]]:
    """(x, fit) where each fit after the first begins on the x axis ([] for a single fit)."""
    return [(x, fit) for fit, x in sorted(fit_offsets(info).items()) if fit > 1]


def x_of_row(row: EpochRow, info: RunInfo | None = None) -> float:
    """The x of an epoch row (after its earlier fits' epochs when ``info`` is given)."""
    offsets = fit_offsets(info) if info is not None else None
    return row.epoch + 1.0 + (offsets.get(info.fit_of(row), 0.0) if offsets and info is not None else 0.0)


def batch_xy(info: RunInfo) -> tuple[list[float], list[float], list[float], list[float]]:
    """(x, loss) of finite batch losses and (x, lr) of batch LRs, x in epochs (1 = end of the first)."""
    spe = info.steps_per_epoch
    xs: list[float] = []
    ys: list[float] = []
    lx: list[float] = []
    ly: list[float] = []
    if not spe:
        return xs, ys, lx, ly
    for p in info.batches.points:
        if p.superseded:
            continue
        x = p.epoch + min(1.0, (p.batch + 1) / spe) + offset_at(info, p.time)
        if p.loss is not None and math.isfinite(p.loss):
            xs.append(x)
            ys.append(p.loss)
        if p.lr is not None and p.lr > 0 and math.isfinite(p.lr):
            lx.append(x)
            ly.append(p.lr)
    return xs, ys, lx, ly


def lr_series(info: RunInfo) -> tuple[list[float], list[float]]:
    """The LR along the kept trajectory: start, batch points, epoch rows and applied changes, by x.

    At equal x the LR in force before (an epoch's own LR) sorts before a change decided
    at that epoch's end, so that ``steps-post`` drawing shows the change from there on.
    """
    points: list[tuple[float, int, float]] = []
    start = info.start
    if start is not None and is_finite_number(start.lr) and start.lr > 0:
        points.append((float(start.initial_epoch), 0, start.lr))
    offsets = fit_offsets(info)
    for later in info.starts:  # each later fit begins at the LR the script gave it
        if later.fit > 1 and later.fit in offsets and is_finite_number(later.lr) and later.lr > 0:
            points.append((offsets[later.fit] + later.initial_epoch, 2, later.lr))  # after all of the last fit
    _, _, lx, ly = batch_xy(info)
    points += [(x, 0, y) for x, y in zip(lx, ly)]
    points += [
        (x_of_row(r, info), 0, r.lr) for r in info.epochs if is_finite_number(r.lr) and r.lr > 0 and not r.superseded
    ]
    for d in info.decisions:
        lr = d.applied.lr if d.applied is not None else None
        if is_finite_number(lr) and lr > 0 and d.epoch is not None and not _decided_on_superseded(info, d):
            points.append((d.epoch + 1.0 + offset_at(info, d.time), 1, lr))
    points.sort(key=lambda p: (p[0], p[1]))
    return [p[0] for p in points], [p[2] for p in points]


def _decided_on_superseded(info: RunInfo, d: DecisionRow) -> bool:
    """True when the epoch the decision was taken on was later redone (its LR change was undone too)."""
    rows = [r for r in info.epochs if r.epoch == d.epoch and (d.time is None or r.time <= d.time)]
    return bool(rows) and rows[-1].superseded


def metric_series(info: RunInfo, key: str, *, superseded: bool) -> tuple[list[float], list[float]]:
    rows = [r for r in info.epochs if r.superseded == superseded and is_finite_number(r.logs.get(key))]
    return [x_of_row(r, info) for r in rows], [float(r.logs[key]) for r in rows]


def loss_limits(epoch_values: list[float], batch_values: Sequence[float] = ()) -> tuple[float, float, bool] | None:
    """y limits (bottom, top, log scale?) that keep a divergent spike from flattening the rest.

    The top is capped at 10x (log scale) or 3x (linear) the 90th percentile of the
    epoch values; anything above is drawn off the chart and flagged by the caller.
    A log scale is used when the values kept span more than a factor 30.
    """
    finite = sorted(v for v in epoch_values if math.isfinite(v))
    batches = [v for v in batch_values if math.isfinite(v)]
    if not finite:
        finite = sorted(batches)
    if not finite:
        return None
    p90 = finite[min(len(finite) - 1, int(0.9 * len(finite)))]
    lo = min(finite + batches)
    spread_log = lo > 0 and p90 / lo > 30
    cap = p90 * (10.0 if spread_log else 3.0) if p90 > 0 else finite[-1]
    kept = [v for v in finite + batches if v <= cap]
    hi = max(kept) if kept else p90
    log = lo > 0 and hi / lo > 30
    if log:
        return lo / 1.3, hi * 1.3, True
    bottom = 0.0 if 0 <= lo < 0.2 * hi else lo - 0.05 * (hi - lo)
    pad = 0.05 * (hi - bottom) or abs(hi) * 0.05 or 1.0
    return bottom, hi + pad, False


@dataclass(frozen=True)
class Marker:
    """A vertical line with a short label: a decision, or a restart/rollback the journal reported."""

    x: float
    label: str
    late: bool = False


def decision_markers(info: RunInfo) -> list[Marker]:
    out = [
        Marker(d.epoch + 1.0 + offset_at(info, d.time), d.label, d.late)
        for d in info.decisions
        if d.epoch is not None and _marked(d)
    ]
    decided = {d.seq for d in info.decisions if d.seq is not None and _marked(d)}
    for item in info.interruptions:
        if item.seq in decided and item.seq is not None:
            continue
        shift = offset_at(info, item.time)
        if item.span is not None:
            out.append(Marker(item.span[0] + shift, item.kind))
        elif item.epoch is not None:
            out.append(Marker(item.epoch + 1.0 + shift, item.kind))
    return out


def _marked(d: DecisionRow) -> bool:
    """Decisions drawn on the figure: those that produced a command the trainer did not refuse,
    checkpoint bookkeeping left out."""
    return not d.suppressed and d.error is None and d.epoch is not None and not d.housekeeping


def plotted_metric(info: RunInfo) -> str | None:
    keys = {k for r in info.epochs for k in r.logs}
    return "val_loss" if "val_loss" in keys else ("loss" if "loss" in keys else info.monitor)
