"""A group of queue entries (a sweep, a night): its members and its best run.

Groups are first-class in the queue (a column, listed by ``queue ls --group``, cancelled by
``queue cancel --group``, compared by ``report --group``); population-based training works
on one group at a time.

Example::

    members = group_members(store, "sweep-20261203T0800")
    best = best_run(infos)      # the RunInfo with the best value of the shared monitor
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lrsup.supervisor.queue.store import Entry, QueueStore


def group_members(store: QueueStore, group: str) -> list[Entry]:
    """The entries of ``group``, in arrival order."""
    return store.entries(group=group)


def member_run_dirs(members: Sequence[Entry]) -> list[Path]:
    """The run directories of the members that got one and have files (queued ones have none)."""
    return [
        Path(e.run_dir) for e in members if e.run_dir and Path(e.run_dir).is_dir() and any(Path(e.run_dir).iterdir())
    ]


def best_run(infos: Sequence[Any]) -> Any | None:
    """The run whose best epoch is best on the monitor most runs share (None when none has one).

    ``infos`` are RunInfo (lrsup.supervisor.history.runinfo): each has ``monitor``, ``mode``
    ("min"/"max") and ``best`` (an epoch row with ``logs``), or None.
    """
    scored = [i for i in infos if i.best is not None and i.monitor is not None]
    if not scored:
        return None
    monitors = [i.monitor for i in scored]
    monitor = max(set(monitors), key=monitors.count)
    same = [i for i in scored if i.monitor == monitor]
    pick = max if same[0].mode == "max" else min
    return pick(same, key=lambda i: i.best.logs[monitor])


def lineage(infos: Sequence[Any]) -> list[dict[str, Any]]:
    """A population's exploits, in time order: who copied whom, when, with which hyperparameters.

    Read from each run's journal ``exploit`` events (lrsup.supervisor.run.operator): one dict
    ``{time, member, donor, epoch, checkpoint, old, new}`` per exploit.
    """
    out = []
    for info in infos:
        for event in info.events:
            if event.event != "exploit":
                continue
            x = event.extra
            out.append(
                {
                    "time": event.time,
                    "member": info.name,
                    "donor": Path(str(x.get("peer", "?"))).name,
                    "epoch": x.get("at_epoch"),
                    "checkpoint": x.get("checkpoint"),
                    "old": x.get("old") or {},
                    "new": x.get("new") or {},
                }
            )
    return sorted(out, key=lambda e: (e["time"] or 0.0, e["member"]))


def turns(infos: Sequence[Any]) -> dict[str, int]:
    """How often each member was parked so that others could run (more members than slots)."""
    return {info.name: n for info in infos if (n := sum(1 for e in info.events if e.event == "parked"))}


def best_curve(infos: Sequence[Any], metric: str, mode: str) -> list[tuple[int, float, str]]:
    """The population's best curve: for each epoch (1-based), the best ``metric`` of any member and whose.

    Superseded epochs (redone after a rollback or restart) are left out; NaN values never win.
    """
    best: dict[int, tuple[float, str]] = {}
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    for info in infos:
        for row in info.epochs:
            value = row.logs.get(metric)
            if row.superseded or not isinstance(value, (int, float)) or value != value:
                continue
            n = row.epoch + 1
            if n not in best or better(value, best[n][0]):
                best[n] = (float(value), info.name)
    return [(n, v, who) for n, (v, who) in sorted(best.items())]


def lineage_markdown(
    events: Sequence[dict[str, Any]],
    curve: Sequence[tuple[int, float, str]],
    metric: str,
    png_name: str | None = None,
    parked: dict[str, int] | None = None,
) -> str:
    """The lineage, the turns and the best curve as Markdown (``population.md`` of ``report --group``)."""
    lines = ["# Population", ""]
    if png_name is not None:
        lines += [f"![the population: each member's {metric}, the best, and who copied whom]({png_name})", ""]
    lines += ["## Lineage (exploits)", ""]
    if events:
        lines += ["| epoch | member | copied | checkpoint | old | new |", "|---|---|---|---|---|---|"]
        for e in events:
            old = ", ".join(f"{k}={v:g}" for k, v in e["old"].items())
            new = ", ".join(f"{k}={v:g}" for k, v in e["new"].items())
            lines.append(f"| {e['epoch']} | {e['member']} | {e['donor']} | {e['checkpoint']} | {old} | {new} |")
    else:
        lines.append("No exploit yet.")
    if parked:
        lines += ["", "## Turns", "", "More members than slots: these members were parked (their trainer ended, "
                  "their supervisor waited) so that others could run, then went on from their checkpoint.", "",
                  "| member | times parked |", "|---|---|"]  # fmt: skip
        lines += [f"| {name} | {n} |" for name, n in parked.items()]
    lines += ["", f"## Best {metric} of the population per epoch", "", "| epoch | best | member |", "|---|---|---|"]
    lines += [f"| {n} | {v:.6g} | {who} |" for n, v, who in curve]
    return "\n".join(lines) + "\n"


POPULATION_MD, POPULATION_PNG = "population.md", "population.png"
COMPARE_SECTION = "## Population (PBT)"


def write_population(
    out: Path, infos: Sequence[Any], metric: str, mode: str
) -> tuple[list[dict[str, Any]], list[tuple[int, float, str]], str | None]:
    """``report --group`` of a PBT group: population.png and population.md in ``out``, linked from compare.md.

    Returns (the lineage, the best curve, why the figure was not drawn or None).
    """
    from lrsup.supervisor.history.runinfo import MissingExtraError
    from lrsup.supervisor.report.population import plot_population

    events = lineage(infos)
    curve = best_curve(infos, metric, mode)
    parked = turns(infos)
    out.mkdir(parents=True, exist_ok=True)
    png: str | None = POPULATION_PNG
    note = None
    try:
        (out / POPULATION_PNG).write_bytes(plot_population(infos, events, curve, metric))
    except MissingExtraError as exc:
        png, note = None, f"{POPULATION_PNG} not written: {exc}"
    (out / POPULATION_MD).write_text(lineage_markdown(events, curve, metric, png, parked), encoding="utf-8")
    compare = out / "compare.md"
    if compare.is_file() and COMPARE_SECTION not in compare.read_text("utf-8"):
        figure = f"![population]({png})\n\n" if png else ""
        with compare.open("a", encoding="utf-8") as f:
            f.write(f"\n{COMPARE_SECTION}\n\n{figure}Lineage and best curve: [{POPULATION_MD}]({POPULATION_MD})\n")
    return events, curve, note
