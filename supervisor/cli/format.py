"""Text for the run views: numbers, times, durations and a run summary's fields.

Owns the small formatters that ``ls``, ``status``, ``watch``, ``stop`` and ``replay``
share, and the colour of each run state. Pure functions over values or a
``runs.RunSummary``; standard library only at import time.
"""

from __future__ import annotations

from typing import Any


def fmt_lr(lr: float | None) -> str:
    """A learning rate (``history.rows.fmt_lr``, the one LR format), ``-`` when unknown."""
    from lrsup.supervisor.history.rows import fmt_lr as one_format

    return one_format(lr, "-")


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    import datetime as _dt

    return _dt.datetime.fromtimestamp(t).strftime("%m-%d %H:%M")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


STATE_STYLE = {
    "running": "cyan",
    "completed": "green",
    "stopped": "yellow",
    "failed": "red",
    "fatal": "red",
    "stale": "magenta",
    "unknown": "dim",
}


def state_text(summary: Any) -> str:
    if summary.state == "stale":
        return f"stale (supervisor gone: lrsup resume {summary.name})"
    return summary.state


def fit_text(summary: Any) -> str:
    """The stage: "2/?" while the run goes on (the script's number of fits is known only at its end), "2/2" after."""
    fit = getattr(summary, "fit", 1)
    return f"{fit}/{fit}" if summary.finished else f"{fit}/?"


def epoch_text(summary: Any) -> str:
    if summary.epoch is None:
        return "-" if summary.epochs is None else f"0/{summary.epochs}"
    return f"{summary.epoch}/{summary.epochs}" if summary.epochs else str(summary.epoch)


def best_text(summary: Any) -> str:
    if summary.best is None:
        return "-"
    where = f" @{summary.best_epoch}" if summary.best_epoch else ""
    return f"{summary.monitor}={summary.best:.4g}{where}"
