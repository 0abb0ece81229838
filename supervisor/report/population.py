"""A PBT population's figure (population.png of ``lrsup report --group G``): who copied whom, when.

One line per member (its monitored metric per epoch), the population's best value per epoch
(a thick dashed line), and one arrow per exploit, at the epoch it was decided, from the donor's
value to the member's (the member's color), labelled with the member's new LR. The lineage and
best curve come from lrsup.supervisor.queue.group (``lineage``, ``best_curve``); drawn with
matplotlib's object API like the other report figures (lrsup.supervisor.report.plot).

Example::

    png = plot_population(infos, lineage(infos), best_curve(infos, "val_loss", "min"), "val_loss")
"""

from __future__ import annotations

from typing import Any, Sequence

from lrsup.supervisor.history.runinfo import RunInfo
from lrsup.supervisor.report.plot import _matplotlib, _png
from lrsup.supervisor.report.series import loss_limits, metric_series
from lrsup.supervisor.report.tables import run_labels


def _value_at(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """The value at epoch ``x``, else the last one before it (None when there is none)."""
    before = [y for xi, y in zip(xs, ys) if xi <= x]
    return before[-1] if before else None


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
    series: dict[str, tuple[list[float], list[float], str]] = {}
    values: list[float] = []
    for i, (info, label) in enumerate(zip(infos, run_labels(infos))):
        color = f"C{i % 10}"
        xs, ys = metric_series(info, metric, superseded=False)
        series[info.name] = (xs, ys, color)
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
    last = max((x for xs, _, _ in series.values() for x in xs), default=0.0)
    for e in events:
        member, donor = series.get(e["member"]), series.get(e["donor"])
        x = e.get("epoch")
        if member is None or donor is None or not isinstance(x, (int, float)):
            continue
        y_from, y_to = _value_at(donor[0], donor[1], x), _value_at(member[0], member[1], x)
        if y_from is None or y_to is None:
            continue
        ax.annotate(
            "",
            xy=(x, y_from),
            xytext=(x, y_to),
            arrowprops={"arrowstyle": "<|-", "color": member[2], "linewidth": 1.4, "shrinkA": 2, "shrinkB": 2},
        )
        lr = (e.get("new") or {}).get("lr")
        text = f"{e['member']} ← {e['donor']}" + (f"\nlr {lr:.3g}" if isinstance(lr, (int, float)) else "")
        right = x >= last - 0.5  # at the last epoch: the label goes left of the arrow
        ax.annotate(text, xy=(x, y_to), xytext=(-4 if right else 4, -4), textcoords="offset points",
                    fontsize=7, color=member[2], ha="right" if right else "left", va="top")  # fmt: skip
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
