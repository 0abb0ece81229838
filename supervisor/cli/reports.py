"""``lrsup replay``, ``lrsup report`` and ``lrsup export``: reading a run's files back.

Owns the what-if replay (a table or JSON lines), the report of one run or comparison of
several (``report``), the CSV and TensorBoard export (``export``), and the progress bar
shown on stderr when the files to read are large.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from lrsup.supervisor.cli.app import RunArgument, RunsDirOption, app, fail, load_config, resolve
from lrsup.supervisor.cli.format import fmt, fmt_lr

BIG_RUN_BYTES = 50 * 1024 * 1024  # show a progress bar on stderr above this much to read


def _run_bytes(run_dirs: list[Path]) -> int:
    from lrsup.supervisor import protocol

    total = 0
    for d in run_dirs:
        for name in (protocol.METRICS_FILE, protocol.JOURNAL_FILE):
            try:
                total += (d / name).stat().st_size
            except OSError:
                pass
    return total


class _ByteProgress:
    """A rich progress bar on stderr fed by ``callback(done, total)``; a no-op for small runs."""

    def __init__(self, total: int, label: str) -> None:
        self.progress = None
        self.callback: Any = None
        if total > BIG_RUN_BYTES:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn(label),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.progress.add_task(label, total=total)
            self.callback = lambda done, total: self.progress.update(self.task, completed=done, total=total)

    def __enter__(self) -> "_ByteProgress":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


@app.command()
def replay(
    run: str = typer.Argument(
        ..., metavar="RUN_DIR", help="The run whose records are replayed (a directory or a name prefix)."
    ),
    config: Optional[Path] = typer.Option(
        None, "--config", help="Replay under this configuration instead of the run's own."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per decision per line, instead of a table."),
    show_all: bool = typer.Option(
        False, "--all", help="Also list checkpoint bookkeeping (retain, keep, checkpoint, configure)."
    ),
    runs_dir: Path = RunsDirOption,
) -> None:
    """What would this stack have decided on a run's metrics, at its own LR? (a what-if)

    The recorded metrics are fed to the policies with the LR the replayed stack's own
    decisions give (its cuts, its schedule); the what-if ends at the first rollback or stop
    it sends, after which the records describe a run that would not have happened.
    """
    raise typer.Exit(_replay(resolve(run, runs_dir), config, as_json, show_all))


def _replay(run_dir: Path, config_path: Path | None, as_json: bool, housekeeping: bool = False) -> int:
    import json

    resolved = load_config(config_path, Path.cwd()) if config_path is not None else None
    from lrsup.supervisor import protocol
    from lrsup.supervisor.engine.replay import replay as replay_run

    size = _run_bytes([run_dir])
    rows: list[dict] = []
    with _ByteProgress(size, "replaying") as bar:
        if bar.progress is not None:
            bar.progress.update(bar.task, total=None)  # no byte counts from replay: a pulsing bar
        try:
            for item in replay_run(run_dir, resolved, housekeeping=housekeeping):
                if as_json:
                    print(protocol.dumps(item) if isinstance(item, dict) else json.dumps(str(item)), flush=False)
                else:
                    rows.append(item)
        except (ValueError, FileNotFoundError) as err:
            fail(f"cannot replay {run_dir.name}: {err}")
    if as_json:
        sys.stdout.flush()
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if not rows:
        print(f"no decisions when replaying {run_dir.name}")
        return 0
    table = Table(title=f"replay of {run_dir.name}", title_justify="left")
    for column in ("epoch", "step", "policy", "action", "lr", "reason", "suppressed"):
        table.add_column(column, overflow="fold")
    for r in rows:
        epoch = r.get("epoch")
        table.add_row(
            fmt(epoch + 1 if isinstance(epoch, int) else epoch),
            fmt(r.get("step")),
            escape(str(r.get("policy") or "")),
            escape(str(r.get("action") or "")),
            fmt_lr(r.get("lr")),
            escape(str(r.get("reason") or "")),
            escape(str(r.get("suppressed") or "")),
        )
    Console().print(table)
    return 0


@app.command()
def report(
    runs: Optional[List[str]] = typer.Argument(
        None, metavar="RUN [RUN ...]", help="One run (a report) or several (a comparison)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Where a comparison of several runs goes (default: .)."),
    group: Optional[str] = typer.Option(
        None, "--group", help="Compare the runs of a queue group (lrsup sweep, queue add --group) and name the best."
    ),
    runs_dir: Path = RunsDirOption,
) -> None:
    """Write report.md, report.png and report.html into a run directory, or compare several runs."""
    if group is not None:
        from lrsup.supervisor.cli.queue import report_group

        raise typer.Exit(report_group(group, runs, out, runs_dir, _report))
    if not runs:
        fail("report needs RUN [RUN ...] or --group G")
    raise typer.Exit(_report([resolve(r, runs_dir) for r in runs], out))


def _report(run_dirs: list[Path], out: Path | None) -> int:
    from rich.console import Console

    from lrsup.supervisor.history.runinfo import RunInfoError, load_run
    from lrsup.supervisor.report.write import compare_runs, render_compare_terminal, render_terminal, write_report

    console = Console()
    try:
        with _ByteProgress(_run_bytes(run_dirs), "reading") as bar:
            if len(run_dirs) == 1:
                if out is not None:
                    fail("--out is for comparisons of several runs; a report is written into its run directory")
                info = load_run(run_dirs[0], progress=bar.callback)
            else:
                out_dir = Path.cwd() / (out or Path("."))
                out_dir.mkdir(parents=True, exist_ok=True)
                paths = compare_runs(run_dirs, out_dir, progress=bar.callback)
        if len(run_dirs) == 1:
            render_terminal(info, console)
            report = write_report(run_dirs[0], info=info)
            written, notes = [report.md, report.png, report.html], report.notes
        else:
            render_compare_terminal(paths.infos, console)
            written, notes = [paths.md, paths.png], paths.notes
    except RunInfoError as err:
        fail(str(err))
    for note in notes:
        print(f"lrsup: note: {note}", file=sys.stderr)
    for path in written:
        if path is not None:
            print(path)
    return 0


@app.command()
def export(
    run: str = RunArgument,
    csv: bool = typer.Option(False, "--csv", help="Write the epochs as CSV (to --out, default <run dir>/epochs.csv)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", metavar="PATH", help="The CSV file to write ('-': stdout)."),
    tensorboard: Optional[Path] = typer.Option(
        None,
        "--tensorboard",
        metavar="DIR",
        help="Write TensorBoard event files under DIR (needs lrsup[tensorboard]).",
    ),
    runs_dir: Path = RunsDirOption,
) -> None:
    """Export a run's numbers as CSV and/or TensorBoard event files."""
    if not csv and tensorboard is None:
        fail("export needs --csv [--out PATH] or --tensorboard DIR")
    if out is not None and not csv:
        fail("--out is the CSV file: give --csv with it")
    run_dir = resolve(run, runs_dir)
    raise typer.Exit(_export(run_dir, (out or str(run_dir / "epochs.csv")) if csv else None, tensorboard))


def _export(run_dir: Path, csv: str | None, tensorboard: Path | None) -> int:
    from lrsup.supervisor.history.runinfo import MissingExtraError, RunInfoError, load_run
    from lrsup.supervisor.report.export import export_csv, export_tensorboard, write_csv

    try:
        with _ByteProgress(_run_bytes([run_dir]) * (1 + (tensorboard is not None)), "exporting") as bar:
            if csv == "-":
                write_csv(load_run(run_dir, progress=bar.callback), sys.stdout)
            elif csv is not None:
                target = Path(csv)
                if not target.parent.is_dir():
                    fail(f"cannot write {str(target)!r}: {str(target.parent)!r} is not a directory")
                print(export_csv(run_dir, target, progress=bar.callback))
            if tensorboard is not None:
                files = export_tensorboard(run_dir, tensorboard, progress=bar.callback)
                print(f"{tensorboard} ({len(files)} event files; view with: tensorboard --logdir {tensorboard})")
    except MissingExtraError as err:
        print(f"lrsup: {err}", file=sys.stderr)
        return 1
    except RunInfoError as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot export {run_dir.name}: {err}")
    return 0
