"""The report and the comparison printed to a rich Console (rich is imported only when printing)."""

from __future__ import annotations

from typing import Any, Sequence

from lrsup.supervisor.history.outcome import DEAD_MODEL_MARK
from lrsup.supervisor.history.runinfo import RunInfo
from lrsup.supervisor.report.tables import (
    COMPARE_HEADER,
    DECISION_HEADER,
    INTERRUPTION_HEADER,
    REPORT_MD,
    STAGE_HEADER,
    compare_rows,
    decision_rows,
    interruption_rows,
    metric_table,
    stage_rows,
    summary_rows,
)

# Rows shown in the terminal before pointing at report.md.
_TERMINAL_ROWS = 20


def render_terminal(info: RunInfo, console: Any) -> None:
    """Print the summary (a panel), the metrics and the decisions (tables) to a rich Console."""
    from rich.panel import Panel
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    style = {"completed": "green", "stopped": "yellow", "running": "cyan"}.get(info.outcome.value, "red")
    if DEAD_MODEL_MARK in info.outcome_detail:
        style = "red"  # completed, but the model did not learn
    for label, value in summary_rows(info):
        grid.add_row(label, f"[{style}]{escape_markup(value)}[/]" if label == "Outcome" else escape_markup(value))
    console.print(Panel(grid, title=f"lrsup report: {escape_markup(info.name)}", expand=False))

    stages = stage_rows(info)
    if stages:
        table = Table(title="Stages (one per fit)", title_justify="left")
        for h in STAGE_HEADER:
            table.add_column(h, overflow="fold")
        for row in stages:
            table.add_row(*(escape_markup(c) for c in row))
        console.print(table)

    header, rows = metric_table(info)
    if rows:
        table = Table(title="Metrics", title_justify="left")
        for h in header:
            table.add_column(h, justify="left" if h == "metric" else "right")
        for row in rows:
            table.add_row(*(escape_markup(c) for c in row))
        console.print(table)

    decisions = info.policy_decisions
    if decisions:
        table = Table(title="Decisions", title_justify="left")
        for h in DECISION_HEADER:
            table.add_column(h, overflow="fold")
        shown = decisions[-_TERMINAL_ROWS:]
        for d, row in zip(shown, decision_rows(info)[-_TERMINAL_ROWS:]):
            table.add_row(
                *(escape_markup(c) for c in row), style="yellow" if d.late else ("dim" if d.suppressed else None)
            )
        console.print(table)
        if len(decisions) > len(shown):
            console.print(f"[dim]… {len(decisions) - len(shown)} earlier decisions in {REPORT_MD}[/]")
    if info.interruptions:
        table = Table(title="Restarts and rollbacks", title_justify="left")
        for h in INTERRUPTION_HEADER:
            table.add_column(h, overflow="fold")
        for row in interruption_rows(info):
            table.add_row(*(escape_markup(c) for c in row))
        console.print(table)
    for w in info.warnings:
        console.print(f"[yellow]note:[/] {escape_markup(w)}")


def render_compare_terminal(infos: Sequence[RunInfo], console: Any) -> None:
    """Print the comparison table to a rich Console."""
    from rich.table import Table

    table = Table(title="Runs compared", title_justify="left")
    for h in COMPARE_HEADER:
        table.add_column(h, justify="right" if h in ("decisions", "wall time", "best epoch") else "left")
    for row in compare_rows(infos):
        table.add_row(*(escape_markup(c) for c in row))
    console.print(table)


def escape_markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)
