"""The report figures (report.png, compare.png), drawn with matplotlib.

matplotlib is a dependency of lrsup, imported only when a figure is drawn (the CLI
starts without it), through its object API (no pyplot, no global backend); an
installation that lacks it makes :func:`plot_run` and :func:`plot_compare` raise
:class:`~lrsup.supervisor.history.runinfo.MissingExtraError`. The series they draw come from
``report_series``.
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

from lrsup.supervisor.history.runinfo import MissingExtraError, RunInfo, is_finite_number
from lrsup.supervisor.report.series import (
    Marker,
    batch_xy,
    decision_markers,
    fit_boundaries,
    loss_limits,
    lr_series,
    metric_series,
    offset_at,
    plotted_metric,
    x_of_row,
)
from lrsup.supervisor.report.tables import fmt_duration, fmt_epoch, fmt_num, run_labels

_LABEL_COLORS = {
    "cut": "#6a3d9a",
    "raise": "#b15928",
    "stop": "#e31a1c",
    "give up": "#e31a1c",
    "rollback": "#8c510a",
    "restart": "#000000",
    "override": "#d01c8b",
    "hparam": "#636363",
    "set lr": "#1f78b4",
}


def _matplotlib() -> tuple[Any, Any]:
    """(Figure, FigureCanvasAgg), or MissingExtraError naming the extra."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("drawing the report figure", "matplotlib", None) from None
    return Figure, FigureCanvasAgg


def _png(fig: Any, canvas_cls: Any) -> bytes:
    canvas_cls(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_run(info: RunInfo) -> bytes:
    """The report figure as PNG bytes. Raises MissingExtraError without matplotlib.

    Drawn in layers, bottom to top, each by one helper that appends its legend entries
    to ``handles``: batch losses, epoch metrics (redone epochs as crosses), values off the
    chart, the best epoch, NaN epochs, the work lost, the LR (twin axis), the decisions.
    """
    Figure, Canvas = _matplotlib()
    from matplotlib.transforms import blended_transform_factory

    fig = Figure(figsize=(11, 5.6), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    band = blended_transform_factory(ax.transData, ax.transAxes)  # x in data, y in axes fraction
    handles: list[Any] = []
    plotted = _plotted_keys(info)
    bx, by, _, _ = batch_xy(info)
    show_batches = bool(by) and (not plotted or "loss" in plotted)
    if show_batches:
        _draw_batches(ax, bx, by, handles)
    epoch_values = _draw_epochs(ax, info, plotted, handles)
    limits = loss_limits(epoch_values, by if show_batches else ())
    if limits is not None:
        _set_ylim(ax, info, plotted, limits, band, handles)
    _draw_best(ax, info, plotted, handles)
    _draw_nan_epochs(ax, info, plotted, band, handles)
    xmin, xmax = _set_xlim(ax, info, bx)
    _draw_work_lost(ax, info, xmin, xmax, band, handles)
    _draw_lr(ax, info, handles)
    _draw_decisions(ax, info, band, handles)
    _draw_fit_boundaries(ax, info, band, handles)
    _finish(fig, ax, info, plotted, bool(by), handles)
    return _png(fig, Canvas)


def _plotted_keys(info: RunInfo) -> list[str]:
    """loss and val_loss where the epochs have them, else the monitored metric."""
    keys = {k for r in info.epochs for k in r.logs}
    return [k for k in ("loss", "val_loss") if k in keys] or (
        [info.monitor] if info.monitor is not None and info.monitor in keys else []
    )


def _draw_batches(ax: Any, bx: list[float], by: list[float], handles: list[Any]) -> None:
    from matplotlib.lines import Line2D

    ax.plot(bx, by, color="#1f77b4", alpha=0.22, linewidth=0.7, zorder=1)
    handles.append(Line2D([], [], color="#1f77b4", alpha=0.35, linewidth=1, label="loss per batch"))


def _draw_epochs(ax: Any, info: RunInfo, plotted: list[str], handles: list[Any]) -> list[float]:
    """One line per plotted metric, redone epochs as crosses; returns every value drawn (for the limits)."""
    from matplotlib.lines import Line2D

    colors = {"loss": "#1f77b4", "val_loss": "#ff7f0e"}
    values: list[float] = []
    redone = False
    for key in plotted:
        color = colors.get(key, "#2ca02c")
        x, y = metric_series(info, key, superseded=False)
        values += y
        (line,) = ax.plot(x, y, color=color, marker="o", markersize=3.5, linewidth=1.8, label=key, zorder=3)
        handles.append(line)
        sx, sy = metric_series(info, key, superseded=True)
        if sx:
            redone = True
            values += sy
            ax.plot(sx, sy, color=color, linestyle="none", marker="x", markersize=4.5, alpha=0.6, zorder=2)
    if redone:
        handles.append(
            Line2D([], [], color="#555", linestyle="none", marker="x", alpha=0.6, label="epochs later redone")
        )
    return values


def _set_ylim(
    ax: Any, info: RunInfo, plotted: list[str], limits: tuple[float, float, bool], band: Any, handles: list[Any]
) -> None:
    """The y range (log when the values span decades); values above it: a triangle at the top edge, with the value."""

    bottom, top, log = limits
    if log:
        ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    off = [
        (x_of_row(r, info), r.logs[k])
        for r in info.epochs
        for k in plotted
        if is_finite_number(r.logs.get(k)) and r.logs[k] > top
    ]
    if not off:
        return
    _edge_markers(ax, [x for x, _ in off], 0.995, band, "^", 6, "off the chart", handles)
    for x, v in off[:10]:
        ax.text(x, 0.96, fmt_num(v, 2), transform=band, ha="left", va="top", fontsize=7, color="#a50f15")


def _edge_markers(
    ax: Any, xs: list[float], y: float, band: Any, marker: str, size: int, label: str, handles: list[Any]
) -> None:
    """Red markers at height ``y`` of the axes band (0 bottom, 1 top) at each x, with their legend entry."""
    from matplotlib.lines import Line2D

    ax.plot(
        xs,
        [y] * len(xs),
        transform=band,
        marker=marker,
        color="#d62728",
        markersize=size,
        linestyle="none",
        clip_on=False,
        zorder=6,
    )
    handles.append(Line2D([], [], marker=marker, color="#d62728", linestyle="none", label=label))


def _draw_best(ax: Any, info: RunInfo, plotted: list[str], handles: list[Any]) -> None:
    if info.best is None or info.monitor not in plotted:
        return
    (star,) = ax.plot(
        [x_of_row(info.best, info)],
        [info.best.logs[info.monitor]],
        marker="*",
        markersize=13,
        color="#ffd700",
        markeredgecolor="#333",
        linestyle="none",
        zorder=5,
        label=f"best {info.monitor} (epoch {fmt_epoch(info.best.epoch)})",
    )
    handles.append(star)


def _draw_nan_epochs(ax: Any, info: RunInfo, plotted: list[str], band: Any, handles: list[Any]) -> None:
    """NaN / inf epochs: a cross at the bottom edge."""

    nan_x = [
        x_of_row(r, info) for r in info.epochs if any(k in r.logs and not is_finite_number(r.logs[k]) for k in plotted)
    ]
    if not nan_x:
        return
    _edge_markers(ax, nan_x, 0.02, band, "X", 8, "NaN / inf loss", handles)


def _set_xlim(ax: Any, info: RunInfo, bx: list[float]) -> tuple[float, float]:
    """x from the first fit's initial epoch to the last point drawn; returns (xmin, xmax)."""
    xs = [x_of_row(r, info) for r in info.epochs] + bx
    xmin = float(info.start.initial_epoch) if info.start is not None else 0.0
    xmax = max(xs + [xmin + 1.0])
    ax.set_xlim(xmin, xmax + max(0.3, 0.01 * (xmax - xmin)))
    return xmin, xmax


def _draw_work_lost(ax: Any, info: RunInfo, xmin: float, xmax: float, band: Any, handles: list[Any]) -> None:
    """The work thrown away: a shaded span (a restart's downtime has no width in epochs: a thin band)."""
    from matplotlib.patches import Patch

    spans = [(i, i.span) for i in info.interruptions if i.span is not None]
    min_width = 0.008 * (xmax - xmin + 1)
    for item, (x0, x1) in spans:
        shift = offset_at(info, item.time)
        x0, x1 = x0 + shift, max(x1, x0 + min_width) + shift
        ax.axvspan(x0, x1, color="#d62728", alpha=0.1, zorder=0, linewidth=0)
        if item.time_lost is not None:
            ax.text(
                (x0 + x1) / 2,
                0.09,
                f"−{fmt_duration(item.time_lost)}",
                transform=band,
                ha="center",
                va="bottom",
                fontsize=7,
                color="#a50f15",
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.7},
            )
    if spans:
        handles.append(Patch(color="#d62728", alpha=0.15, label="work lost (restart / rollback)"))


def _draw_decisions(ax: Any, info: RunInfo, band: Any, handles: list[Any]) -> None:
    """A dotted line and a label per decision; one legend entry per kind of decision."""
    from matplotlib.lines import Line2D

    markers = decision_markers(info)
    _draw_markers(ax, markers, band)
    for label in sorted({m.label for m in markers}):
        name = f"decision: {label}" if label != "restart" else label
        handles.append(Line2D([], [], color=_LABEL_COLORS.get(label, "#444"), linestyle=":", linewidth=1.4, label=name))
    if any(m.late for m in markers):
        handles.append(Line2D([], [], linestyle="none", label="*: applied late"))


def _draw_fit_boundaries(ax: Any, info: RunInfo, band: Any, handles: list[Any]) -> None:
    """Where each later fit of the script (a stage) begins: a dashed grey line labelled "fit N"."""
    from matplotlib.lines import Line2D

    boundaries = fit_boundaries(info)
    for x, fit in boundaries:
        ax.axvline(x, color="#666", linestyle="--", linewidth=1.2, alpha=0.8, zorder=4)
        ax.text(x, 0.99, f" fit {fit}", transform=band, ha="left", va="top", fontsize=8, color="#444")
    if boundaries:
        handles.append(Line2D([], [], color="#666", linestyle="--", linewidth=1.2, label="a new fit (stage) begins"))


def _finish(fig: Any, ax: Any, info: RunInfo, plotted: list[str], any_batch: bool, handles: list[Any]) -> None:
    """Axis labels, grid, the title (outcome and best epoch) and the legend under the axes."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.set_ylabel(" / ".join(plotted) if plotted else "loss")
    if not info.epochs and not any_batch:
        ax.text(0.5, 0.5, "no epoch recorded yet", transform=ax.transAxes, ha="center", va="center", color="#777")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    ax.grid(True, alpha=0.25, linewidth=0.6)
    title = f"{info.name}: {info.outcome.value}"
    if info.best is not None and info.monitor:
        title += f" · best {info.monitor} {fmt_num(info.best.logs[info.monitor])} at epoch {fmt_epoch(info.best.epoch)}"
    ax.set_title(title, fontsize=11, loc="left")
    ncol = min(len(handles), 5) or 1
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    rows = math.ceil(len(handles) / ncol) if handles else 0
    fig.subplots_adjust(left=0.07, right=0.91, top=0.93, bottom=0.1 + 0.036 * rows)


def _draw_lr(ax: Any, info: RunInfo, handles: list[Any]) -> None:
    """The learning rate as steps on a log-scaled twin axis (at least a decade tall, so that it reads)."""
    x, y = lr_series(info)
    if not y:
        return
    lr_ax = ax.twinx()
    (line,) = lr_ax.plot(
        x,
        y,
        color="#2ca02c",
        drawstyle="steps-post",
        linewidth=1.4,
        alpha=0.85,
        label="learning rate (right, log)",
        zorder=2,
    )
    lr_ax.set_yscale("log")
    lo, hi = min(y), max(y)
    if hi / lo < 10:
        mid = math.sqrt(lo * hi)
        lo, hi = mid / math.sqrt(10), mid * math.sqrt(10)
    lr_ax.set_ylim(lo / 1.5, hi * 1.5)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    lr_ax.yaxis.set_major_formatter(FuncFormatter(_lr_label))
    # On a short axis the 2 and 5 x 10^k minor ticks get labels too; on a long one only the decades.
    short = math.log10(hi * 1.5 / (lo / 1.5)) < 2.5
    lr_ax.yaxis.set_minor_formatter(FuncFormatter(_lr_label) if short else NullFormatter())
    lr_ax.set_ylabel("learning rate (log)", color="#2ca02c")
    lr_ax.tick_params(axis="y", which="both", colors="#2ca02c", labelsize=8)
    handles.append(line)


def _lr_label(value: float, _pos: Any = None) -> str:
    """``0.05`` rather than ``5×10⁻²``; only 1, 2 and 5 times a power of ten are labelled."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if mantissa in (1.0, 2.0, 5.0) else ""


def _draw_markers(ax: Any, markers: list[Marker], band: Any) -> None:
    """A dotted line per marker; labels near the top, staggered on four levels so that they do not collide.

    Markers at the same x share one label (``cut+stop``); a label with no free level
    is left out (the line stays, and the tables list every decision).
    """
    by_x: dict[float, list[Marker]] = {}
    for m in markers:
        by_x.setdefault(m.x, []).append(m)
    lo, hi = ax.get_xlim()
    gap = 0.045 * (hi - lo)
    levels = [0.975, 0.905, 0.835, 0.765]
    last_at = [-math.inf] * len(levels)
    for x in sorted(by_x):
        group = by_x[x]
        for m in group:
            ax.axvline(x, color=_LABEL_COLORS.get(m.label, "#444"), linestyle=":", linewidth=1.3, alpha=0.9, zorder=4)
        names: list[str] = []
        for m in group:
            name = m.label + ("*" if m.late else "")
            if name not in names:
                names.append(name)
        level = next((i for i, at in enumerate(last_at) if x - at >= gap), None)
        if level is None:
            continue
        last_at[level] = x
        ax.text(
            x,
            levels[level],
            "+".join(names),
            transform=band,
            ha="center",
            va="top",
            fontsize=7.5,
            color=_LABEL_COLORS.get(group[0].label, "#444"),
            zorder=7,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
        )


def plot_compare(infos: Sequence[RunInfo]) -> bytes:
    """Two panels, shared x (epochs): each run's val_loss (or loss), and its learning rate (log)."""
    Figure, Canvas = _matplotlib()
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 7.5), dpi=110)
    top = fig.add_subplot(2, 1, 1)
    bottom = fig.add_subplot(2, 1, 2, sharex=top)
    metrics: set[str] = set()
    all_values: list[float] = []
    any_lr = False
    for i, (info, label) in enumerate(zip(infos, run_labels(infos))):
        color = f"C{i % 10}"
        key = plotted_metric(info)
        if key is not None:
            x, y = metric_series(info, key, superseded=False)
            all_values += y
            top.plot(x, y, marker="o", markersize=3, linewidth=1.6, color=color, label=f"{label} ({key})")
            metrics.add(key)
        lx, ly = lr_series(info)
        if ly:
            any_lr = True
            bottom.plot(
                lx,
                ly,
                drawstyle="steps-post",
                linewidth=1.5,
                color=color,
                marker="." if len(ly) == 1 else None,
                label=label,
            )
    limits = loss_limits(all_values)
    if limits is not None:
        if limits[2]:
            top.set_yscale("log")
        top.set_ylim(limits[0], limits[1])
    top.set_ylabel(" / ".join(sorted(metrics)) or "loss")
    if metrics:
        top.legend(fontsize=8, loc="upper right")
    top.grid(True, alpha=0.25)
    top.tick_params(labelbottom=False)
    top.set_title("runs compared", fontsize=11, loc="left")
    if any_lr:
        bottom.set_yscale("log")
        bottom.legend(fontsize=8, loc="upper right")
    bottom.set_ylabel("learning rate (log)")
    bottom.set_xlabel("epoch")
    bottom.grid(True, alpha=0.25)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    fig.subplots_adjust(left=0.08, right=0.97, top=0.95, bottom=0.08, hspace=0.08)
    return _png(fig, Canvas)
