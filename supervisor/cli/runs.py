"""``lrsup ls`` and ``lrsup status``: tables of the runs under --runs-dir and of one run.

Owns the two views over ``runs.summarize``: one row per run (state, epoch, best, LR,
start, duration), and one run in detail with its last decisions and its hold/degraded
flags. rich is imported inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import typer

from lrsup.supervisor.cli.app import RunArgument, RunsDirOption, app, resolve
from lrsup.supervisor.cli.format import (
    STATE_STYLE,
    best_text,
    epoch_text,
    fit_text,
    fmt,
    fmt_duration,
    fmt_lr,
    fmt_time,
    state_text,
)


@app.command("ls")
def ls(runs_dir: Path = RunsDirOption) -> None:
    """List the runs under --runs-dir, newest first: state, epoch, best metric, LR, start, duration."""
    raise typer.Exit(_ls(runs_dir))


@app.command()
def status(run: str = RunArgument, runs_dir: Path = RunsDirOption) -> None:
    """Show one run in detail: state, attempts, epoch, step, LR, metrics, best, last decisions, hold."""
    raise typer.Exit(_status(resolve(run, runs_dir)))


def _ls(runs_dir: Path) -> int:
    from rich import box
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
    summaries = [summarize(path) for path in found]
    rows = [_ls_row(s) for s in summaries]
    console = Console()
    shown = _ls_columns(rows, console.width)
    # The name is what RUN is typed as: whole, on one line; columns that do not fit are left out.
    table = Table(title=f"lrsup runs in {runs_dir}", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for column, justify in _LS_COLUMNS:
        if column in shown:
            table.add_column(column, justify=justify, no_wrap=True)
    for s, row in zip(summaries, rows):
        cells = [escape(row[c]) for c, _ in _LS_COLUMNS if c in shown]
        style = STATE_STYLE.get(s.state, "")
        if style and "state" in shown:
            cells[1] = f"[{style}]{cells[1]}[/]"
        table.add_row(*cells)
    if any(s.stale for s in summaries):
        table.caption = "stale: its supervisor is gone; `lrsup resume RUN` goes on with it"
        table.caption_justify = "left"
    console.print(table)
    return 0


_LS_COLUMNS: tuple[tuple[str, Literal["left", "right"]], ...] = (
    ("name", "left"),
    ("state", "left"),
    ("epoch", "right"),
    ("best", "left"),
    ("lr", "right"),
    ("started", "left"),
    ("duration", "right"),
)
_LS_GAP = 3  # between two columns: padding, the box's blank separator, padding
# Left out first when the terminal is too narrow for every column (name and state always stay).
_LS_OPTIONAL = ("started", "duration", "best", "lr", "epoch")


def _ls_row(s: Any) -> dict[str, str]:
    return {
        "name": s.name,
        "state": s.state,
        "epoch": epoch_text(s),
        "best": best_text(s),
        "lr": fmt_lr(s.lr),
        "started": fmt_time(s.started),
        "duration": fmt_duration(s.duration()),
    }


def _ls_columns(rows: list[dict[str, str]], width: int) -> set[str]:
    """The columns of ``ls`` that fit in ``width`` on one line each, dropping optional ones in order."""
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c, _ in _LS_COLUMNS}
    shown = set(widths)
    for column in (None, *_LS_OPTIONAL):
        shown.discard(column)
        if sum(widths[c] for c in shown) + _LS_GAP * (len(shown) - 1) <= width:
            break
    return shown


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
        ("fit", fit_text(s)),
        ("epoch", epoch_text(s)),
        ("step", fmt(s.step)),
        ("lr", fmt_lr(s.lr)),
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
                fmt_lr(d.lr),
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
