"""``lrsup ls`` and ``lrsup status``: tables of the runs under --runs-dir and of one run.

Owns the two views over ``runs.summarize``: one row per run (state, epoch, best, LR,
start, duration), and one run in detail with its last decisions and its hold/degraded
flags. rich is imported inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from lrsup.supervisor.cli.app import RunArgument, RunsDirOption, app, resolve
from lrsup.supervisor.cli.format import STATE_STYLE, best_text, epoch_text, fmt, fmt_duration, fmt_time, state_text


@app.command("ls")
def ls(runs_dir: Path = RunsDirOption) -> None:
    """List the runs under --runs-dir, newest first: state, epoch, best metric, LR, start, duration."""
    raise typer.Exit(_ls(runs_dir))


@app.command()
def status(run: str = RunArgument, runs_dir: Path = RunsDirOption) -> None:
    """Show one run in detail: state, attempts, epoch, step, LR, metrics, best, last decisions, hold."""
    raise typer.Exit(_status(resolve(run, runs_dir)))


def _ls(runs_dir: Path) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from lrsup.supervisor.history.runs import list_runs, summarize

    root = Path.cwd() / runs_dir
    if not root.is_dir():
        print(f"no runs: {runs_dir} is not a directory", file=sys.stderr)
        return 0
    found = list_runs(root)
    if not found:
        print(f"no runs in {runs_dir}", file=sys.stderr)
        return 0
    table = Table(title=f"lrsup runs in {runs_dir}", title_justify="left")
    for column, justify in (
        ("name", "left"),
        ("state", "left"),
        ("epoch", "right"),
        ("best", "left"),
        ("lr", "right"),
        ("started", "left"),
        ("duration", "right"),
    ):
        table.add_column(
            column, justify=justify, overflow="fold", no_wrap=column in ("epoch", "lr", "started", "duration")
        )
    for path in found:
        s = summarize(path)
        style = STATE_STYLE.get(s.state, "")
        table.add_row(
            escape(s.name),
            f"[{style}]{escape(state_text(s))}[/]" if style else escape(state_text(s)),
            epoch_text(s),
            escape(best_text(s)),
            fmt(s.lr),
            fmt_time(s.started),
            fmt_duration(s.duration()),
        )
    Console().print(table)
    return 0


def _status(run_dir: Path) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from lrsup.supervisor.history.runs import summarize

    s = summarize(run_dir, full_journal=True)
    console = Console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    style = STATE_STYLE.get(s.state, "")
    state = escape(state_text(s)) + (f" ({escape(s.detail)})" if s.detail and s.state != "stale" else "")
    rows = [
        ("run", escape(str(s.path))),
        ("state", f"[{style}]{state}[/]" if style else state),
        ("supervisor", "-" if s.pid is None else f"pid {s.pid} ({'alive' if s.alive else 'gone'})"),
        ("attempt", fmt(s.attempt)),
        ("restarts", fmt(s.restarts)),
        ("epoch", epoch_text(s)),
        ("step", fmt(s.step)),
        ("lr", fmt(s.lr, 6)),
        ("last metrics", escape(" ".join(f"{k}={fmt(v)}" for k, v in s.last_logs.items())) or "-"),
        ("best", escape(best_text(s))),
        ("held", _flag_text(s.held, s.supervisor)),
        ("degraded", _flag_text(s.degraded, s.supervisor)),
        ("started", fmt_time(s.started)),
        ("duration", fmt_duration(s.duration())),
    ]
    if s.exit_status is not None:
        rows.append(("exit status", str(s.exit_status)))
    for label, value in rows:
        grid.add_row(label, value)
    console.print(grid)
    if s.decisions:
        table = Table(title="last decisions", title_justify="left")
        for column in ("epoch", "step", "policy", "action", "lr", "reason"):
            table.add_column(column, overflow="fold")
        for d in s.decisions[-5:]:
            reason = d.reason + (f" [suppressed: {d.suppressed}]" if d.suppressed else "")
            table.add_row(
                fmt(None if d.epoch is None else d.epoch + 1),
                fmt(d.step),
                escape(d.policy),
                escape(d.action),
                fmt(d.lr),
                escape(reason),
            )
        console.print(table)
    else:
        console.print("no decisions yet")
    return 0


def _flag_text(value: Any, state: dict) -> str:
    """supervisor.json's held/degraded: null or false is "no" (unknown "-" without a state file); else why."""
    from rich.markup import escape

    if value is None or value is False:
        return "no" if state else "-"
    if value is True:
        return "yes"
    if isinstance(value, dict):
        return "yes: " + escape(", ".join(f"{k}={v}" for k, v in value.items() if v is not None))
    return f"yes: {escape(str(value))}"
