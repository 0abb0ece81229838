"""Reports of what happened in a run: report.md, report.png, report.html, and the terminal.

Example::

    paths = write_report("runs/20260101T000000Z-train")
    paths.md, paths.html, paths.png      # png is None only when matplotlib is missing
    for note in paths.notes: print(note)

    render_terminal(load_run(run_dir), rich.console.Console())
    compare_runs(["runs/a", "runs/b"], "runs/compare")

The figure shows loss and val_loss per epoch, the per-batch loss faintly where it
was recorded, the learning rate on a log-scaled twin axis, a dotted line and a
short label (cut, raise, stop, give up, rollback, restart, override) at every
decision, and shaded spans for the work lost to restarts and rollbacks. Its x axis
counts epochs as people do: x = 3 is the end of the third epoch (protocol epoch 2).

matplotlib (a dependency) is imported only when a figure is drawn, through its
object API (no pyplot, no global backend). In an installation that lacks it, the
Markdown, HTML and terminal parts are written anyway and ``notes`` says why the
figure is missing.

The parts: ``report_tables`` (the facts as rows of text, shared by every renderer),
``report_markdown``, ``report_html``, ``report_terminal``, ``report_series`` (what
the figures draw) and ``report_plot`` (matplotlib). This module writes the files and
re-exports the public names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from lrsup.supervisor.history.runinfo import MissingExtraError, ProgressFn, RunInfo, load_run
from lrsup.supervisor.protocol.wire import JOURNAL_FILE, METRICS_FILE
from lrsup.supervisor.report.html import render_html
from lrsup.supervisor.report.markdown import render_compare_markdown, render_markdown
from lrsup.supervisor.report.plot import plot_compare, plot_run
from lrsup.supervisor.report.tables import (
    COMPARE_MD,
    COMPARE_PNG,
    REPORT_HTML,
    REPORT_MD,
    REPORT_PNG,
    compare_rows,
    fmt_duration,
    fmt_epoch,
    fmt_num,
    summary_rows,
)
from lrsup.supervisor.report.terminal import render_compare_terminal, render_terminal
from lrsup.supervisor.rundir.layout import write_atomic
from lrsup.supervisor.rundir.statefile import file_size

__all__ = [
    "COMPARE_MD",
    "COMPARE_PNG",
    "REPORT_HTML",
    "REPORT_MD",
    "REPORT_PNG",
    "ComparePaths",
    "ReportPaths",
    "compare_rows",
    "compare_runs",
    "fmt_duration",
    "fmt_epoch",
    "fmt_num",
    "plot_compare",
    "plot_run",
    "render_compare_markdown",
    "render_compare_terminal",
    "render_html",
    "render_markdown",
    "render_terminal",
    "summary_rows",
    "write_report",
]


@dataclass(frozen=True)
class ReportPaths:
    """The files ``write_report`` wrote; ``png`` is None when it could not be drawn (see ``notes``)."""

    md: Path
    html: Path
    png: Path | None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ComparePaths:
    """The files ``compare_runs`` wrote, and the runs it read."""

    md: Path
    png: Path | None
    infos: list[RunInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Entry points


def write_report(
    run_dir: str | os.PathLike[str], *, progress: ProgressFn | None = None, info: RunInfo | None = None
) -> ReportPaths:
    """Write report.md, report.png and report.html into the run directory.

    Args:
        run_dir: the run directory.
        progress: callable(bytes_read, total_bytes) or None, while the files are read.
        info: RunInfo or None; pass one already loaded to skip reading the files again.

    Raises:
        RunInfoError: ``run_dir`` is not a run directory.
    """
    root = Path(run_dir)
    info = info if info is not None else load_run(root, progress=progress)
    notes = list(info.warnings)
    png_path: Path | None = root / REPORT_PNG
    png_bytes: bytes | None = None
    try:
        png_bytes = plot_run(info)
    except MissingExtraError as exc:
        notes.append(f"{REPORT_PNG} not written: {exc}")
        png_path = None
    if png_bytes is not None and png_path is not None:
        _write_bytes(png_path, png_bytes)
    md_path, html_path = root / REPORT_MD, root / REPORT_HTML
    _write_bytes(md_path, render_markdown(info, png_name=REPORT_PNG if png_path else None, notes=notes).encode())
    _write_bytes(html_path, render_html(info, png_bytes, notes=notes).encode())
    return ReportPaths(md_path, html_path, png_path, notes)


def compare_runs(
    run_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *, progress: ProgressFn | None = None
) -> ComparePaths:
    """Compare runs side by side: compare.md (one table) and compare.png (two panels) in ``out_dir``.

    Args:
        run_dirs: the run directories, in the order to show them.
        out_dir: where to write (created if missing).
        progress: callable(bytes_read, total_bytes) or None, over all the runs.

    Raises:
        ValueError: no run directory given.
        RunInfoError: one of them is not a run directory.
    """
    if not run_dirs:
        raise ValueError("compare_runs needs at least one run directory")
    infos = _load_all([Path(p) for p in run_dirs], progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes = [f"{info.name}: {w}" for info in infos for w in info.warnings]
    png_path: Path | None = out / COMPARE_PNG
    try:
        _write_bytes(out / COMPARE_PNG, plot_compare(infos))
    except MissingExtraError as exc:
        notes.append(f"{COMPARE_PNG} not written: {exc}")
        png_path = None
    md_path = out / COMPARE_MD
    _write_bytes(
        md_path, render_compare_markdown(infos, png_name=COMPARE_PNG if png_path else None, notes=notes).encode()
    )
    return ComparePaths(md_path, png_path, infos, notes)


def _shifted(progress: ProgressFn, offset: int, total: int) -> ProgressFn:
    """``progress`` for one run of several: its bytes counted after the ``offset`` read before it."""
    return lambda done, _total: progress(min(offset + done, total), total)


def _load_all(paths: list[Path], progress: ProgressFn | None) -> list[RunInfo]:
    sizes = [sum(file_size(p / name) for name in (METRICS_FILE, JOURNAL_FILE)) for p in paths]
    total, offset, infos = sum(sizes), 0, []
    for path, size in zip(paths, sizes):
        infos.append(load_run(path, progress=None if progress is None else _shifted(progress, offset, total)))
        offset += size
    return infos


def _write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so a reader never sees half a report (0600; no
    temporary file is left when the disk is full)."""
    write_atomic(path, data)
