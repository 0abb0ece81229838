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
