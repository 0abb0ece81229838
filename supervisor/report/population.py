"""A PBT population's figure (population.png of ``lrsup report --group G``): who copied whom, when.

One line per member (its monitored metric per epoch), the population's best value per epoch
(a thick dashed line), and one arrow per exploit, ending at the epoch it was decided, from the donor's
score that vouched for the donated checkpoint (its latest epoch then: members run at different
speeds) to the member's value (the member's color), labelled with the member's new LR. The lineage and
best curve come from lrsup.supervisor.queue.group (``lineage``, ``best_curve``); drawn with
matplotlib's object API like the other report figures (lrsup.supervisor.report.plot).

Example::

    png = plot_population(infos, lineage(infos), best_curve(infos, "val_loss", "min"), "val_loss")
"""

from __future__ import annotations

from typing import Any, Sequence

from lrsup.supervisor.history.runinfo import RunInfo, is_finite_number
from lrsup.supervisor.report.plot import _matplotlib, _png
from lrsup.supervisor.report.series import loss_limits, metric_series, x_of_row
from lrsup.supervisor.report.tables import run_labels


def _point_at(info: RunInfo, metric: str, x: float, when: float | None) -> tuple[float, float] | None:
    """(epoch, value) of ``info`` at the exploit: its latest epoch by time ``when``, else at or before epoch ``x``."""
    rows = [r for r in info.epochs if not r.superseded and is_finite_number(r.logs.get(metric))]
    by_time = [r for r in rows if when is not None and r.time <= when]
    by_epoch = [r for r in rows if x_of_row(r) <= x]
    row = by_time[-1] if by_time else (by_epoch[-1] if by_epoch else None)
    return None if row is None else (x_of_row(row), float(row.logs[metric]))


def plot_population(
    infos: Sequence[RunInfo],
    events: Sequence[dict[str, Any]],
    curve: Sequence[tuple[int, float, str]],
    metric: str,
) -> bytes:
    """The population figure as PNG bytes. Raises MissingExtraError without matplotlib.

    Args:
        infos: the members' RunInfo, in the group's order.
        events: the exploits (``group.lineage``): ``member``, ``donor``, ``epoch``, ``new``.
        curve: the best value per epoch (``group.best_curve``): (epoch, value, member).
        metric: the metric compared.
    """
    Figure, Canvas = _matplotlib()
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 6), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    series: dict[str, tuple[RunInfo, str]] = {}
    values: list[float] = []
    for i, (info, label) in enumerate(zip(infos, run_labels(infos))):
        color = f"C{i % 10}"
        xs, ys = metric_series(info, metric, superseded=False)
        series[info.name] = (info, color)
        values += ys
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.3, color=color, alpha=0.85, label=label)
    if curve:
        ax.plot(
            [n for n, _, _ in curve],
            [v for _, v, _ in curve],
            linestyle="--",
            linewidth=4,
            color="0.55",
            alpha=0.6,
            zorder=1,  # beneath the members' lines
            label=f"population best {metric}",
        )
    last = max((x_of_row(r) for info in infos for r in info.epochs), default=0.0)
    for e in events:
        member, donor = series.get(e["member"]), series.get(e["donor"])
        x = e.get("epoch")
        if member is None or donor is None or not isinstance(x, (int, float)):
            continue
        start = _point_at(donor[0], metric, x, e.get("time"))  # the donor's score that vouched for it
        end = _point_at(member[0], metric, x, None)
        if start is None or end is None:
            continue
        end = (float(x), end[1])
        ax.annotate(
            "",
            xy=end,
            xytext=start,
            arrowprops={"arrowstyle": "-|>", "color": member[1], "linewidth": 1.4, "shrinkA": 2, "shrinkB": 2},
        )
        lr = (e.get("new") or {}).get("lr")
        text = f"{e['member']} ← {e['donor']}" + (f"\nlr {lr:.3g}" if isinstance(lr, (int, float)) else "")
        right = x >= last - 0.5  # at the last epoch: the label goes left of the arrow
        ax.annotate(text, xy=end, xytext=(-4 if right else 4, -4), textcoords="offset points",
                    fontsize=7, color=member[1], ha="right" if right else "left", va="top")  # fmt: skip
    limits = loss_limits(values)
    if limits is not None:
        if limits[2]:
            ax.set_yscale("log")
        ax.set_ylim(limits[0], limits[1])
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"population: {len(infos)} members, {len(events)} exploit(s) (arrow: donor -> member)", loc="left")
    fig.subplots_adjust(left=0.08, right=0.97, top=0.93, bottom=0.09)
    return _png(fig, Canvas)
