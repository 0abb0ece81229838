"""The report's facts as rows of text, shared by the Markdown, HTML and terminal renderers.

Owns the number, duration, epoch and time formats, the summary (label, value) pairs,
the stage (one row per fit of a script that fits several times), metric, decision,
interruption and event tables, the configuration text, and the
comparison table of several runs, so that every renderer says the same thing; and the
file names the report writes. Pure: no IO, no rich, no matplotlib.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Sequence

from lrsup.supervisor.history.outcome import DEAD_MODEL_MARK
from lrsup.supervisor.history.runinfo import RunInfo, fmt_lr

REPORT_MD = "report.md"
REPORT_PNG = "report.png"
REPORT_HTML = "report.html"
COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"

# Journal events listed in md/html before the rest is summarised.
MAX_EVENTS = 200


def fmt_num(value: Any, digits: int = 4) -> str:
    """4 significant digits; NaN and infinities spelled out; missing values as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def fmt_duration(seconds: float | None) -> str:
    """``12.3s``, ``4m 05s``, ``2h 03m``, ``1d 02h``; None as an en dash."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def fmt_epoch(epoch: int | None) -> str:
    """Protocol epoch (0-based) as people count it (1-based)."""
    return "–" if epoch is None else str(epoch + 1)


def _fmt_time(info: RunInfo, t: float | None) -> str:
    if t is None:
        return "–"
    if info.first_time is None:
        return _utc(t)
    return "+" + fmt_duration(max(0.0, t - info.first_time))


def _utc(t: float | None) -> str:
    if t is None:
        return "–"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _outcome_text(info: RunInfo) -> str:
    text = info.outcome.value
    if info.gave_up and "gave up" not in info.outcome_detail:
        text += " (gave up)"
    if DEAD_MODEL_MARK in info.outcome_detail:
        text += " (the model did not learn)"  # never a plain success: history.outcome.dead_model
    return f"{text}: {info.outcome_detail}" if info.outcome_detail else text


def _of_fit(info: RunInfo, row: Any) -> str:
    """ " of fit N" for an epoch row of a run whose script fits several times ("" otherwise)."""
    return f" of fit {info.fit_of(row)}" if len({start.fit for start in info.starts}) > 1 else ""


def summary_rows(info: RunInfo) -> list[tuple[str, str]]:
    """The summary as (label, value) pairs: the same facts in md, html and terminal."""
    rows = [
        ("Outcome", _outcome_text(info)),
        ("Exit status", "–" if info.exit_status is None else str(info.exit_status)),
    ]
    start = info.start
    if start is not None:
        opt = start.optimizer or "?"
        if start.lr_schedule:
            opt += f" with {start.lr_schedule}"
        rows.append(("Optimizer", opt))
    rows.append(("Learning rate", f"{fmt_lr(info.initial_lr)} at start, {fmt_lr(info.final_lr)} at the end"))
    done = len({(r.attempt, r.epoch) for r in info.epochs if not r.superseded})
    budget = info.epochs_budget
    stages = info.stages
    if len(stages) > 1:  # a script that fits several times: each fit's epochs count (see Stages)
        done = sum(stage.epochs_done for stage in stages)
        budgets = [stage.epochs for stage in stages]
        budget = sum(b for b in budgets if b) if all(budgets) else None
        rows.append(("Stages", f"{len(stages)} fits (see Stages)"))
    rows.append(("Epochs", f"{done} of {budget}" if budget else str(done)))
    if info.steps_per_epoch:
        rows.append(("Steps per epoch", str(info.steps_per_epoch)))
    if info.best is not None and info.monitor:
        rows.append(
            (
                "Best epoch",
                f"{fmt_epoch(info.best.epoch)}{_of_fit(info, info.best)} ({info.monitor} = "
                f"{fmt_num(info.best.logs.get(info.monitor))}, {info.mode})",
            )
        )
    elif info.monitor and info.mode is None:
        rows.append(("Best epoch", f"– (whether {info.monitor} should go up or down is unknown: set a policy's mode)"))
    elif info.monitor:
        rows.append(("Best epoch", f"– (no finite {info.monitor})"))
    rows.append(("Started", _utc(info.first_time)))
    rows.append(("Wall time", fmt_duration(info.wall_time)))
    rows.append(("Time per epoch", f"{fmt_duration(info.time_per_epoch)} (median)"))
    active, shown = info.active_decisions, info.policy_decisions
    late = sum(1 for d in active if d.late)
    bookkeeping = info.housekeeping_count
    rows.append(
        (
            "Decisions",
            f"{len(active)}"
            + (f" ({late} late)" if late else "")
            + (f", {len(shown) - len(active)} suppressed" if len(active) < len(shown) else "")
            + (f"; {bookkeeping} on checkpoint bookkeeping (in the journal)" if bookkeeping else ""),
        )
    )
    if info.lr_owner:
        rows.append(("LR owner", "; ".join(entry.detail for entry in info.lr_owner)))
    lost = info.time_lost
    approx = "≈ " if any(i.estimated for i in info.interruptions) else ""
    rows.append(
        (
            "Restarts / rollbacks",
            f"{len(info.restarts)} / {len(info.rollbacks)}"
            + (f", {approx}{fmt_duration(lost)} lost" if lost is not None else ""),
        )
    )
    return rows


def metric_table(info: RunInfo) -> tuple[list[str], list[list[str]]]:
    """Columns: metric, best epoch, final epoch."""
    keys = info.metric_keys
    header = [
        "metric",
        f"best (epoch {fmt_epoch(info.best.epoch)})" if info.best else "best",
        f"final (epoch {fmt_epoch(info.final.epoch)})" if info.final else "final",
    ]
    rows = []
    for k in keys:
        best = info.best.logs.get(k) if info.best else None
        final = info.final.logs.get(k) if info.final else None
        rows.append([k, fmt_num(best), fmt_num(final)])
    return header, rows


def decision_rows(info: RunInfo) -> list[list[str]]:
    """One row per decision a person reads (``info.policy_decisions``: no bookkeeping)."""
    rows = []
    for d in info.policy_decisions:
        action = d.label if d.label == d.action else f"{d.label} ({d.action})"
        rows.append(
            [
                "–" if d.seq is None else str(d.seq),
                "probe" if info.in_probe(d.time) else fmt_epoch(d.epoch),  # the range test's, undone after it
                "–" if d.step is None else str(d.step),
                d.policy or "–",
                action,
                fmt_lr(d.lr),
                d.reason or "–",
                d.status,
            ]
        )
    return rows


DECISION_HEADER = ["seq", "epoch", "step", "policy", "action", "new LR", "reason", "what became of it"]


def stage_rows(info: RunInfo) -> list[list[str]]:
    """One row per fit of the script (a stage): epochs, LR at its start and end, its rescues.

    Empty for a single-fit run (the summary says it all).
    """
    stages = info.stages
    if len(stages) < 2:
        return []
    rows = []
    for stage in stages:
        epochs = f"{stage.epochs_done} of {stage.epochs}" if stage.epochs else str(stage.epochs_done)
        rescues = "; ".join(
            f"{d.label} at epoch {fmt_epoch(d.epoch)}" + (f" (LR {fmt_lr(d.lr)})" if d.lr is not None else "")
            for d in stage.rescues
        )
        rows.append(
            [
                f"fit {stage.fit}",
                stage.optimizer or "?",
                epochs,
                fmt_lr(stage.lr_start),
                fmt_lr(stage.lr_end),
                rescues or "none",
            ]
        )
    return rows


STAGE_HEADER = ["stage", "optimizer", "epochs", "LR at start", "LR at the end", "rescues"]


def interruption_rows(info: RunInfo) -> list[list[str]]:
    rows = []
    for i in info.interruptions:
        lost = fmt_duration(i.time_lost)
        if i.time_lost is not None and i.estimated:
            lost = "≈ " + lost
        rows.append([i.kind, fmt_epoch(i.epoch), _fmt_time(info, i.time), i.reason or "–", lost])
    return rows


INTERRUPTION_HEADER = ["kind", "at epoch", "when", "why", "time lost"]


def event_rows(info: RunInfo) -> list[list[str]]:
    rows = []
    for e in info.events[:MAX_EVENTS]:
        detail = e.detail if isinstance(e.detail, str) else ("" if e.detail is None else json.dumps(e.detail))
        rows.append([_fmt_time(info, e.time), e.event, detail or "–"])
    return rows


def config_text(info: RunInfo) -> str:
    if info.config is None:
        return "(no config.json)"
    return json.dumps(info.config, indent=2, sort_keys=False, default=str)


# The comparison of several runs.

COMPARE_HEADER = ["run", "outcome", "best", "best epoch", "final", "decisions", "wall time"]


def compare_rows(infos: Sequence[RunInfo]) -> list[list[str]]:
    """Per run: name, outcome, best monitored value, its epoch, final value, #decisions, wall time."""
    rows = []
    for info, label in zip(infos, run_labels(infos)):
        m = info.monitor
        best = f"{m} = {fmt_num(info.best.logs.get(m))}" if info.best is not None and m else "–"
        final = f"{m} = {fmt_num(info.final.logs.get(m))}" if info.final is not None and m else "–"
        rows.append(
            [
                label,
                info.outcome.value,
                best,
                fmt_epoch(info.best.epoch) if info.best else "–",
                final,
                str(len(info.active_decisions)),
                fmt_duration(info.wall_time),
            ]
        )
    return rows


def run_labels(infos: Sequence[RunInfo]) -> list[str]:
    names = [i.name for i in infos]
    if len(set(names)) == len(names):
        return names
    return [f"{i.run_dir.parent.name}/{i.name}" if names.count(i.name) > 1 else i.name for i in infos]
