"""Reports of what happened in a run: report.md, report.png, report.html, and the terminal.

Example::

    paths = write_report("runs/20260101T000000Z-train")
    paths.md, paths.html, paths.png      # png is None when matplotlib is missing
    for note in paths.notes: print(note)

    render_terminal(load_run(run_dir), rich.console.Console())
    compare_runs(["runs/a", "runs/b"], "runs/compare")

The figure shows loss and val_loss per epoch, the per-batch loss faintly where it
was recorded, the learning rate on a log-scaled twin axis, a dotted line and a
short label (cut, raise, stop, give up, rollback, restart, override) at every
decision, and shaded spans for the work lost to restarts and rollbacks. Its x axis
counts epochs as people do: x = 3 is the end of the third epoch (protocol epoch 2).

matplotlib is optional (the ``plots`` extra) and imported only when a figure is
drawn, through its object API (no pyplot, no global backend). Without it, the
Markdown, HTML and terminal parts are written anyway and ``notes`` says why the
figure is missing.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from lrsup.supervisor.runinfo import (
    Decision,
    EpochRow,
    MissingExtraError,
    ProgressFn,
    RunInfo,
    is_finite_number,
    load_run,
)

REPORT_MD = "report.md"
REPORT_PNG = "report.png"
REPORT_HTML = "report.html"
COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"

# Rows shown in the terminal before pointing at report.md.
_TERMINAL_ROWS = 20
# Journal events listed in md/html before the rest is summarised.
_MAX_EVENTS = 200

_LABEL_COLORS = {
    "cut": "#6a3d9a",
    "raise": "#b15928",
    "stop": "#e31a1c",
    "give up": "#e31a1c",
    "rollback": "#8c510a",
    "restart": "#000000",
    "override": "#d01c8b",
    "hparam": "#636363",
    "set lr": "#1f78b4",
}


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


def write_report(run_dir: str | os.PathLike[str], *, progress: ProgressFn | None = None,
                 info: RunInfo | None = None) -> ReportPaths:
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


def compare_runs(run_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
                 progress: ProgressFn | None = None) -> ComparePaths:
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
    _write_bytes(md_path, render_compare_markdown(infos, png_name=COMPARE_PNG if png_path else None,
                                                  notes=notes).encode())
    return ComparePaths(md_path, png_path, infos, notes)


def _load_all(paths: list[Path], progress: ProgressFn | None) -> list[RunInfo]:
    sizes = [sum(_size(p / name) for name in ("metrics.jsonl", "journal.jsonl")) for p in paths]
    total, offset, infos = sum(sizes), 0, []
    for path, size in zip(paths, sizes):
        callback = None
        if progress is not None:
            callback = (lambda done, _t, base=offset: progress(min(base + done, total), total))
        infos.append(load_run(path, progress=callback))
        offset += size
    return infos


# ---------------------------------------------------------------------------
# Formatting shared by md, html and terminal


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
    return f"{text}: {info.outcome_detail}" if info.outcome_detail else text


def summary_rows(info: RunInfo) -> list[tuple[str, str]]:
    """The summary as (label, value) pairs: the same facts in md, html and terminal."""
    rows = [("Outcome", _outcome_text(info)),
            ("Exit status", "–" if info.exit_status is None else str(info.exit_status))]
    start = info.start
    if start is not None:
        opt = start.optimizer or "?"
        if start.lr_schedule:
            opt += f" with {start.lr_schedule}"
        rows.append(("Optimizer", opt))
    rows.append(("Learning rate", f"{fmt_num(info.initial_lr)} at start, {fmt_num(info.final_lr)} at the end"))
    done = len({(r.attempt, r.epoch) for r in info.epochs if not r.superseded})
    budget = info.epochs_budget
    rows.append(("Epochs", f"{done} of {budget}" if budget else str(done)))
    if info.steps_per_epoch:
        rows.append(("Steps per epoch", str(info.steps_per_epoch)))
    if info.best is not None and info.monitor:
        rows.append(("Best epoch", f"{fmt_epoch(info.best.epoch)} ({info.monitor} = "
                                   f"{fmt_num(info.best.logs.get(info.monitor))}, {info.mode})"))
    elif info.monitor:
        rows.append(("Best epoch", f"– (no finite {info.monitor})"))
    rows.append(("Started", _utc(info.first_time)))
    rows.append(("Wall time", fmt_duration(info.wall_time)))
    rows.append(("Time per epoch", f"{fmt_duration(info.time_per_epoch)} (median)"))
    active = info.active_decisions
    late = sum(1 for d in active if d.late)
    rows.append(("Decisions", f"{len(active)}" + (f" ({late} late)" if late else "")
                 + (f", {len(info.decisions) - len(active)} suppressed" if len(active) < len(info.decisions) else "")))
    lost = info.time_lost
    approx = "≈ " if any(i.estimated for i in info.interruptions) else ""
    rows.append(("Restarts / rollbacks", f"{len(info.restarts)} / {len(info.rollbacks)}"
                 + (f", {approx}{fmt_duration(lost)} lost" if lost is not None else "")))
    return rows


def _metric_table(info: RunInfo) -> tuple[list[str], list[list[str]]]:
    """Columns: metric, best epoch, final epoch."""
    keys = info.metric_keys
    header = ["metric",
              f"best (epoch {fmt_epoch(info.best.epoch)})" if info.best else "best",
              f"final (epoch {fmt_epoch(info.final.epoch)})" if info.final else "final"]
    rows = []
    for k in keys:
        best = info.best.logs.get(k) if info.best else None
        final = info.final.logs.get(k) if info.final else None
        rows.append([k, fmt_num(best), fmt_num(final)])
    return header, rows


def _decision_rows(info: RunInfo) -> list[list[str]]:
    rows = []
    for d in info.decisions:
        action = d.label if d.label == d.action else f"{d.label} ({d.action})"
        rows.append(["–" if d.seq is None else str(d.seq), fmt_epoch(d.epoch),
                     "–" if d.step is None else str(d.step), d.policy or "–", action,
                     fmt_num(d.lr), d.reason or "–", d.status])
    return rows


_DECISION_HEADER = ["seq", "epoch", "step", "policy", "action", "new LR", "reason", "what became of it"]


def _interruption_rows(info: RunInfo) -> list[list[str]]:
    rows = []
    for i in info.interruptions:
        lost = fmt_duration(i.time_lost)
        if i.time_lost is not None and i.estimated:
            lost = "≈ " + lost
        rows.append([i.kind, fmt_epoch(i.epoch), _fmt_time(info, i.time), i.reason or "–", lost])
    return rows


_INTERRUPTION_HEADER = ["kind", "at epoch", "when", "why", "time lost"]


def _event_rows(info: RunInfo) -> list[list[str]]:
    rows = []
    for e in info.events[:_MAX_EVENTS]:
        detail = e.detail if isinstance(e.detail, str) else ("" if e.detail is None else json.dumps(e.detail))
        rows.append([_fmt_time(info, e.time), e.event, detail or "–"])
    return rows


def _config_text(info: RunInfo) -> str:
    if info.config is None:
        return "(no config.json)"
    return json.dumps(info.config, indent=2, sort_keys=False, default=str)


# ---------------------------------------------------------------------------
# Markdown


def _md_cell(text: str) -> str:
    """One table cell: pipes and backslashes escaped, HTML neutralised (renderers pass raw HTML through)."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(info: RunInfo, *, png_name: str | None = REPORT_PNG, notes: Sequence[str] = ()) -> str:
    """The whole report as Markdown (epochs counted from 1, as Keras prints them)."""
    lines = [f"# lrsup report: {_md_cell(info.name)}", ""]
    lines += _md_table(["", ""], [[f"**{k}**", v] for k, v in summary_rows(info)])
    lines.append("")
    if png_name:
        lines += [f"![loss, val_loss and learning rate per epoch]({png_name})", ""]
    lines += ["## Metrics", ""]
    header, rows = _metric_table(info)
    lines += (_md_table(header, rows) if rows else ["No epoch was recorded."]) + [""]
    lines += ["## Decisions", ""]
    if info.decisions:
        lines += _md_table(_DECISION_HEADER, _decision_rows(info))
        lines += ["", "Epochs count from 1. A *late* change was applied after the trainer's epoch barrier "
                      "had timed out, so it took effect a few batches into the next epoch."]
    else:
        lines.append("No decision was taken.")
    lines.append("")
    lines += ["## Restarts and rollbacks", ""]
    if info.interruptions:
        lines += _md_table(_INTERRUPTION_HEADER, _interruption_rows(info))
        if any(i.estimated for i in info.interruptions):
            lines += ["", "≈: estimated from the records (end of the last kept epoch to the moment training resumed)."]
    else:
        lines.append("None.")
    lines.append("")
    lines += ["## Events", ""]
    if info.events:
        lines += _md_table(["when", "event", "detail"], _event_rows(info))
        if len(info.events) > _MAX_EVENTS:
            lines.append(f"\n… and {len(info.events) - _MAX_EVENTS} more events in journal.jsonl.")
    else:
        lines.append("No journal events.")
    lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {_md_cell(n)}" for n in notes] + [""]
    config = _config_text(info)
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", config)), default=0))
    lines += ["## Configuration", "", f"{fence}json", config, fence, ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# HTML: one self-contained page, every piece of text escaped.

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#222;line-height:1.4}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}table.summary th{width:12rem}
img{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f7f7f7;padding:.75rem;overflow:auto;font-size:.85rem}
.late{color:#b15928;font-weight:bold}.suppressed{color:#888}.refused{color:#e31a1c}
.outcome-completed{color:#1a7f37}.outcome-failed,.outcome-interrupted{color:#c62828}
.outcome-stopped{color:#b15928}.outcome-running{color:#1565c0}
ul.notes li{color:#8a6d3b}
"""


def _h(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _html_table(header: list[str], rows: list[list[str]], *, table_id: str | None = None,
                row_classes: list[str] | None = None) -> str:
    id_attr = f' id="{_h(table_id)}"' if table_id else ""
    out = [f"<table{id_attr}>", "<thead><tr>"]
    out += [f"<th>{_h(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes else ""
        out.append(f'<tr class="{_h(cls)}">' if cls else "<tr>")
        out += [f"<td>{_h(c)}</td>" for c in row]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render_html(info: RunInfo, png: bytes | None, *, notes: Sequence[str] = ()) -> str:
    """The report as one self-contained HTML page (the PNG inlined as a data URI)."""
    title = f"lrsup report: {info.name}"
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{_h(title)}</h1>"]
    parts.append('<table class="summary" id="summary"><tbody>')
    for label, value in summary_rows(info):
        cls = f' class="outcome-{_h(info.outcome.value)}"' if label == "Outcome" else ""
        parts.append(f"<tr><th>{_h(label)}</th><td{cls}>{_h(value)}</td></tr>")
    parts.append("</tbody></table>")
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<p><img id="plot" alt="loss, val_loss and learning rate per epoch" '
                     f'src="data:image/png;base64,{data}"></p>')
    parts.append("<h2>Metrics</h2>")
    header, rows = _metric_table(info)
    parts.append(_html_table(header, rows, table_id="metrics") if rows else "<p>No epoch was recorded.</p>")
    parts.append("<h2>Decisions</h2>")
    if info.decisions:
        classes = ["late" if d.late else "suppressed" if d.suppressed else "refused" if d.error else ""
                   for d in info.decisions]
        parts.append(_html_table(_DECISION_HEADER, _decision_rows(info), table_id="decisions", row_classes=classes))
        parts.append("<p>Epochs count from 1. A <span class=\"late\">late</span> change was applied after the "
                     "trainer's epoch barrier had timed out.</p>")
    else:
        parts.append('<p id="decisions">No decision was taken.</p>')
    parts.append("<h2>Restarts and rollbacks</h2>")
    if info.interruptions:
        parts.append(_html_table(_INTERRUPTION_HEADER, _interruption_rows(info), table_id="interruptions"))
    else:
        parts.append("<p>None.</p>")
    parts.append("<h2>Events</h2>")
    if info.events:
        parts.append(_html_table(["when", "event", "detail"], _event_rows(info), table_id="events"))
        if len(info.events) > _MAX_EVENTS:
            parts.append(f"<p>… and {len(info.events) - _MAX_EVENTS} more events in journal.jsonl.</p>")
    else:
        parts.append("<p>No journal events.</p>")
    if notes:
        parts.append('<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{_h(n)}</li>" for n in notes) + "</ul>")
    parts.append(f'<h2>Configuration</h2><pre id="config">{_h(_config_text(info))}</pre>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------
# Terminal (rich)


def render_terminal(info: RunInfo, console: Any) -> None:
    """Print the summary (a panel), the metrics and the decisions (tables) to a rich Console."""
    from rich.panel import Panel
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    style = {"completed": "green", "stopped": "yellow", "running": "cyan"}.get(info.outcome.value, "red")
    for label, value in summary_rows(info):
        grid.add_row(label, f"[{style}]{_escape_markup(value)}[/]" if label == "Outcome" else _escape_markup(value))
    console.print(Panel(grid, title=f"lrsup report: {_escape_markup(info.name)}", expand=False))

    header, rows = _metric_table(info)
    if rows:
        table = Table(title="Metrics", title_justify="left")
        for h in header:
            table.add_column(h, justify="left" if h == "metric" else "right")
        for row in rows:
            table.add_row(*(_escape_markup(c) for c in row))
        console.print(table)

    if info.decisions:
        table = Table(title="Decisions", title_justify="left")
        for h in _DECISION_HEADER:
            table.add_column(h, overflow="fold")
        shown = info.decisions[-_TERMINAL_ROWS:]
        for d, row in zip(shown, _decision_rows(info)[-_TERMINAL_ROWS:]):
            table.add_row(*(_escape_markup(c) for c in row), style="yellow" if d.late else ("dim" if d.suppressed else None))
        console.print(table)
        if len(info.decisions) > _TERMINAL_ROWS:
            console.print(f"[dim]… {len(info.decisions) - _TERMINAL_ROWS} earlier decisions in {REPORT_MD}[/]")
    if info.interruptions:
        table = Table(title="Restarts and rollbacks", title_justify="left")
        for h in _INTERRUPTION_HEADER:
            table.add_column(h, overflow="fold")
        for row in _interruption_rows(info):
            table.add_row(*(_escape_markup(c) for c in row))
        console.print(table)
    for w in info.warnings:
        console.print(f"[yellow]note:[/] {_escape_markup(w)}")


def render_compare_terminal(infos: Sequence[RunInfo], console: Any) -> None:
    """Print the comparison table to a rich Console."""
    from rich.table import Table

    table = Table(title="Runs compared", title_justify="left")
    for h in _COMPARE_HEADER:
        table.add_column(h, justify="right" if h in ("decisions", "wall time", "best epoch") else "left")
    for row in compare_rows(infos):
        table.add_row(*(_escape_markup(c) for c in row))
    console.print(table)


def _escape_markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# ---------------------------------------------------------------------------
# Comparison table

_COMPARE_HEADER = ["run", "outcome", "best", "best epoch", "final", "decisions", "wall time"]


def _plotted_metric(info: RunInfo) -> str | None:
    keys = {k for r in info.epochs for k in r.logs}
    return "val_loss" if "val_loss" in keys else ("loss" if "loss" in keys else info.monitor)


def compare_rows(infos: Sequence[RunInfo]) -> list[list[str]]:
    """Per run: name, outcome, best monitored value, its epoch, final value, #decisions, wall time."""
    rows = []
    for info, label in zip(infos, _run_labels(infos)):
        m = info.monitor
        best = f"{m} = {fmt_num(info.best.logs.get(m))}" if info.best is not None and m else "–"
        final = f"{m} = {fmt_num(info.final.logs.get(m))}" if info.final is not None and m else "–"
        rows.append([label, info.outcome.value, best, fmt_epoch(info.best.epoch) if info.best else "–", final,
                     str(len(info.active_decisions)), fmt_duration(info.wall_time)])
    return rows


def _run_labels(infos: Sequence[RunInfo]) -> list[str]:
    names = [i.name for i in infos]
    if len(set(names)) == len(names):
        return names
    return [f"{i.run_dir.parent.name}/{i.name}" if names.count(i.name) > 1 else i.name for i in infos]


def render_compare_markdown(infos: Sequence[RunInfo], *, png_name: str | None = COMPARE_PNG,
                            notes: Sequence[str] = ()) -> str:
    lines = ["# lrsup: runs compared", ""]
    lines += _md_table(_COMPARE_HEADER, compare_rows(infos)) + [""]
    lines.append("Best and final values are of each run's monitored metric (val_loss when recorded, else loss); "
                 "epochs count from 1.")
    lines.append("")
    if png_name:
        lines += [f"![validation loss and learning rate per run]({png_name})", ""]
    lines += ["## Runs", ""] + [f"- {_md_cell(label)}: `{_md_cell(str(i.run_dir))}`"
                                for i, label in zip(infos, _run_labels(infos))] + [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {_md_cell(n)}" for n in notes] + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Figures (matplotlib, imported here only)


def _matplotlib() -> tuple[Any, Any]:
    """(Figure, FigureCanvasAgg), or MissingExtraError naming the extra."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("drawing the report figure", "matplotlib", "plots") from None
    return Figure, FigureCanvasAgg


def _png(fig: Any, canvas_cls: Any) -> bytes:
    canvas_cls(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _x_of_row(row: EpochRow) -> float:
    return row.epoch + 1.0


def _batch_xy(info: RunInfo) -> tuple[list[float], list[float], list[float], list[float]]:
    """(x, loss) of finite batch losses and (x, lr) of batch LRs, x in epochs (1 = end of the first)."""
    spe = info.steps_per_epoch
    xs, ys, lx, ly = [], [], [], []
    if not spe:
        return xs, ys, lx, ly
    for p in info.batches.points:
        if p.superseded:
            continue
        x = p.epoch + min(1.0, (p.batch + 1) / spe)
        if p.loss is not None and math.isfinite(p.loss):
            xs.append(x)
            ys.append(p.loss)
        if p.lr is not None and p.lr > 0 and math.isfinite(p.lr):
            lx.append(x)
            ly.append(p.lr)
    return xs, ys, lx, ly


def _lr_series(info: RunInfo) -> tuple[list[float], list[float]]:
    """The LR along the kept trajectory: start, batch points, epoch rows and applied changes, by x.

    At equal x the LR in force before (an epoch's own LR) sorts before a change decided
    at that epoch's end, so that ``steps-post`` drawing shows the change from there on.
    """
    points: list[tuple[float, int, float]] = []
    start = info.start
    if start is not None and is_finite_number(start.lr) and start.lr > 0:
        points.append((float(start.initial_epoch), 0, start.lr))
    _, _, lx, ly = _batch_xy(info)
    points += [(x, 0, y) for x, y in zip(lx, ly)]
    points += [(_x_of_row(r), 0, r.lr) for r in info.epochs
               if is_finite_number(r.lr) and r.lr > 0 and not r.superseded]
    for d in info.decisions:
        lr = d.applied.lr if d.applied is not None else None
        if is_finite_number(lr) and lr > 0 and d.epoch is not None and not _decided_on_superseded(info, d):
            points.append((d.epoch + 1.0, 1, lr))
    points.sort(key=lambda p: (p[0], p[1]))
    return [p[0] for p in points], [p[2] for p in points]


def _decided_on_superseded(info: RunInfo, d: Decision) -> bool:
    """True when the epoch the decision was taken on was later redone (its LR change was undone too)."""
    rows = [r for r in info.epochs if r.epoch == d.epoch and (d.time is None or r.time <= d.time)]
    return bool(rows) and rows[-1].superseded


def _metric_series(info: RunInfo, key: str, *, superseded: bool) -> tuple[list[float], list[float]]:
    rows = [r for r in info.epochs if r.superseded == superseded and is_finite_number(r.logs.get(key))]
    return [_x_of_row(r) for r in rows], [float(r.logs[key]) for r in rows]


def _loss_limits(epoch_values: list[float], batch_values: Sequence[float] = ()) -> tuple[float, float, bool] | None:
    """y limits (bottom, top, log scale?) that keep a divergent spike from flattening the rest.

    The top is capped at 10x (log scale) or 3x (linear) the 90th percentile of the
    epoch values; anything above is drawn off the chart and flagged by the caller.
    A log scale is used when the values kept span more than a factor 30.
    """
    finite = sorted(v for v in epoch_values if math.isfinite(v))
    batches = [v for v in batch_values if math.isfinite(v)]
    if not finite:
        finite = sorted(batches)
    if not finite:
        return None
    p90 = finite[min(len(finite) - 1, int(0.9 * len(finite)))]
    lo = min(finite + batches)
    spread_log = lo > 0 and p90 / lo > 30
    cap = p90 * (10.0 if spread_log else 3.0) if p90 > 0 else finite[-1]
    kept = [v for v in finite + batches if v <= cap]
    hi = max(kept) if kept else p90
    log = lo > 0 and hi / lo > 30
    if log:
        return lo / 1.3, hi * 1.3, True
    bottom = 0.0 if 0 <= lo < 0.2 * hi else lo - 0.05 * (hi - lo)
    pad = 0.05 * (hi - bottom) or abs(hi) * 0.05 or 1.0
    return bottom, hi + pad, False


@dataclass(frozen=True)
class _Marker:
    """A vertical line with a short label: a decision, or a restart/rollback the journal reported."""

    x: float
    label: str
    late: bool = False


def _markers(info: RunInfo) -> list[_Marker]:
    out = [_Marker(d.epoch + 1.0, d.label, d.late) for d in info.decisions if _marked(d)]
    decided = {d.seq for d in info.decisions if d.seq is not None and _marked(d)}
    for item in info.interruptions:
        if item.seq in decided and item.seq is not None:
            continue
        if item.span is not None:
            out.append(_Marker(item.span[0], item.kind))
        elif item.epoch is not None:
            out.append(_Marker(item.epoch + 1.0, item.kind))
    return out


def plot_run(info: RunInfo) -> bytes:
    """The report figure as PNG bytes. Raises MissingExtraError without matplotlib."""
    Figure, Canvas = _matplotlib()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import blended_transform_factory

    fig = Figure(figsize=(11, 5.6), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    band = blended_transform_factory(ax.transData, ax.transAxes)  # x in data, y in axes fraction
    handles: list[Any] = []
    bx, by, _, _ = _batch_xy(info)
    keys = {k for r in info.epochs for k in r.logs}
    plotted = [k for k in ("loss", "val_loss") if k in keys] or ([info.monitor] if info.monitor in keys else [])
    show_batches = bool(by) and (not plotted or "loss" in plotted)
    if show_batches:
        ax.plot(bx, by, color="#1f77b4", alpha=0.22, linewidth=0.7, zorder=1)
        handles.append(Line2D([], [], color="#1f77b4", alpha=0.35, linewidth=1, label="loss per batch"))
    colors = {"loss": "#1f77b4", "val_loss": "#ff7f0e"}
    epoch_values: list[float] = []
    redone = False
    for key in plotted:
        color = colors.get(key, "#2ca02c")
        x, y = _metric_series(info, key, superseded=False)
        epoch_values += y
        (line,) = ax.plot(x, y, color=color, marker="o", markersize=3.5, linewidth=1.8, label=key, zorder=3)
        handles.append(line)
        sx, sy = _metric_series(info, key, superseded=True)
        if sx:
            redone = True
            epoch_values += sy
            ax.plot(sx, sy, color=color, linestyle="none", marker="x", markersize=4.5, alpha=0.6, zorder=2)
    if redone:
        handles.append(Line2D([], [], color="#555", linestyle="none", marker="x", alpha=0.6,
                              label="epochs later redone"))
    limits = _loss_limits(epoch_values, by if show_batches else ())
    if limits is not None:
        bottom, top, log = limits
        if log:
            ax.set_yscale("log")
        ax.set_ylim(bottom, top)
        off = [(_x_of_row(r), r.logs[k]) for r in info.epochs for k in plotted
               if is_finite_number(r.logs.get(k)) and r.logs[k] > top]
        if off:  # values above the chart: a triangle at the top edge, with the value
            ax.plot([x for x, _ in off], [0.995] * len(off), transform=band, marker="^", color="#d62728",
                    markersize=6, linestyle="none", clip_on=False, zorder=6)
            handles.append(Line2D([], [], marker="^", color="#d62728", linestyle="none", label="off the chart"))
            for x, v in off[:10]:
                ax.text(x, 0.96, fmt_num(v, 2), transform=band, ha="left", va="top", fontsize=7, color="#a50f15")
    if info.best is not None and info.monitor in plotted:
        (star,) = ax.plot([_x_of_row(info.best)], [info.best.logs[info.monitor]], marker="*", markersize=13,
                          color="#ffd700", markeredgecolor="#333", linestyle="none", zorder=5,
                          label=f"best {info.monitor} (epoch {fmt_epoch(info.best.epoch)})")
        handles.append(star)
    nan_x = [_x_of_row(r) for r in info.epochs if any(k in r.logs and not is_finite_number(r.logs[k]) for k in plotted)]
    if nan_x:  # NaN / inf epochs: a cross at the bottom edge
        ax.plot(nan_x, [0.02] * len(nan_x), transform=band, marker="X", color="#d62728", markersize=8,
                linestyle="none", clip_on=False, zorder=6)
        handles.append(Line2D([], [], marker="X", color="#d62728", linestyle="none", label="NaN / inf loss"))

    xs = [_x_of_row(r) for r in info.epochs] + bx
    xmin = float(info.start.initial_epoch) if info.start is not None else 0.0
    xmax = max(xs + [xmin + 1.0])
    ax.set_xlim(xmin, xmax + max(0.3, 0.01 * (xmax - xmin)))
    spans = [i for i in info.interruptions if i.span is not None]
    min_width = 0.008 * (xmax - xmin + 1)
    for item in spans:  # the work thrown away (a restart's downtime has no width in epochs: a thin band)
        x0, x1 = item.span
        ax.axvspan(x0, max(x1, x0 + min_width), color="#d62728", alpha=0.1, zorder=0, linewidth=0)
        if item.time_lost is not None:
            ax.text((x0 + max(x1, x0 + min_width)) / 2, 0.09, f"−{fmt_duration(item.time_lost)}", transform=band,
                    ha="center", va="bottom", fontsize=7, color="#a50f15",
                    bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.7})
    if spans:
        handles.append(Patch(color="#d62728", alpha=0.15, label="work lost (restart / rollback)"))
    _draw_lr(ax, info, handles)
    markers = _markers(info)
    _draw_markers(ax, markers, band)
    for label in sorted({m.label for m in markers}):
        handles.append(Line2D([], [], color=_LABEL_COLORS.get(label, "#444"), linestyle=":", linewidth=1.4,
                              label=f"decision: {label}" if label not in ("restart",) else label))
    if any(m.late for m in markers):
        handles.append(Line2D([], [], linestyle="none", label="*: applied late"))

    ax.set_xlabel("epoch")
    ax.set_ylabel(" / ".join(plotted) if plotted else "loss")
    if not info.epochs and not by:
        ax.text(0.5, 0.5, "no epoch recorded yet", transform=ax.transAxes, ha="center", va="center", color="#777")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    ax.grid(True, alpha=0.25, linewidth=0.6)
    title = f"{info.name}: {info.outcome.value}"
    if info.best is not None and info.monitor:
        title += f" · best {info.monitor} {fmt_num(info.best.logs[info.monitor])} at epoch {fmt_epoch(info.best.epoch)}"
    ax.set_title(title, fontsize=11, loc="left")
    ncol = min(len(handles), 5) or 1
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    rows = math.ceil(len(handles) / ncol) if handles else 0
    fig.subplots_adjust(left=0.07, right=0.91, top=0.93, bottom=0.1 + 0.036 * rows)
    return _png(fig, Canvas)


def _draw_lr(ax: Any, info: RunInfo, handles: list[Any]) -> None:
    """The learning rate as steps on a log-scaled twin axis (at least a decade tall, so that it reads)."""
    x, y = _lr_series(info)
    if not y:
        return
    lr_ax = ax.twinx()
    (line,) = lr_ax.plot(x, y, color="#2ca02c", drawstyle="steps-post", linewidth=1.4, alpha=0.85,
                         label="learning rate (right, log)", zorder=2)
    lr_ax.set_yscale("log")
    lo, hi = min(y), max(y)
    if hi / lo < 10:
        mid = math.sqrt(lo * hi)
        lo, hi = mid / math.sqrt(10), mid * math.sqrt(10)
    lr_ax.set_ylim(lo / 1.5, hi * 1.5)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    lr_ax.yaxis.set_major_formatter(FuncFormatter(_lr_label))
    # On a short axis the 2 and 5 x 10^k minor ticks get labels too; on a long one only the decades.
    short = math.log10(hi * 1.5 / (lo / 1.5)) < 2.5
    lr_ax.yaxis.set_minor_formatter(FuncFormatter(_lr_label) if short else NullFormatter())
    lr_ax.set_ylabel("learning rate (log)", color="#2ca02c")
    lr_ax.tick_params(axis="y", which="both", colors="#2ca02c", labelsize=8)
    handles.append(line)


def _lr_label(value: float, _pos: Any = None) -> str:
    """``0.05`` rather than ``5×10⁻²``; only 1, 2 and 5 times a power of ten are labelled."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if mantissa in (1.0, 2.0, 5.0) else ""


def _marked(d: Decision) -> bool:
    """Decisions drawn on the figure: those that produced a command the trainer did not refuse."""
    return not d.suppressed and d.error is None and d.epoch is not None


def _draw_markers(ax: Any, markers: list[_Marker], band: Any) -> None:
    """A dotted line per marker; labels near the top, staggered on four levels so that they do not collide.

    Markers at the same x share one label (``cut+stop``); a label with no free level
    is left out (the line stays, and the tables list every decision).
    """
    by_x: dict[float, list[_Marker]] = {}
    for m in markers:
        by_x.setdefault(m.x, []).append(m)
    lo, hi = ax.get_xlim()
    gap = 0.045 * (hi - lo)
    levels = [0.975, 0.905, 0.835, 0.765]
    last_at = [-math.inf] * len(levels)
    for x in sorted(by_x):
        group = by_x[x]
        for m in group:
            ax.axvline(x, color=_LABEL_COLORS.get(m.label, "#444"), linestyle=":", linewidth=1.3, alpha=0.9, zorder=4)
        names: list[str] = []
        for m in group:
            name = m.label + ("*" if m.late else "")
            if name not in names:
                names.append(name)
        level = next((i for i, at in enumerate(last_at) if x - at >= gap), None)
        if level is None:
            continue
        last_at[level] = x
        ax.text(x, levels[level], "+".join(names), transform=band, ha="center", va="top", fontsize=7.5,
                color=_LABEL_COLORS.get(group[0].label, "#444"), zorder=7,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})


def plot_compare(infos: Sequence[RunInfo]) -> bytes:
    """Two panels, shared x (epochs): each run's val_loss (or loss), and its learning rate (log)."""
    Figure, Canvas = _matplotlib()
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 7.5), dpi=110)
    top = fig.add_subplot(2, 1, 1)
    bottom = fig.add_subplot(2, 1, 2, sharex=top)
    metrics: set[str] = set()
    all_values: list[float] = []
    any_lr = False
    for i, (info, label) in enumerate(zip(infos, _run_labels(infos))):
        color = f"C{i % 10}"
        key = _plotted_metric(info)
        if key is not None:
            x, y = _metric_series(info, key, superseded=False)
            all_values += y
            top.plot(x, y, marker="o", markersize=3, linewidth=1.6, color=color, label=f"{label} ({key})")
            metrics.add(key)
        lx, ly = _lr_series(info)
        if ly:
            any_lr = True
            bottom.plot(lx, ly, drawstyle="steps-post", linewidth=1.5, color=color, marker="." if len(ly) == 1 else None,
                        label=label)
    limits = _loss_limits(all_values)
    if limits is not None:
        if limits[2]:
            top.set_yscale("log")
        top.set_ylim(limits[0], limits[1])
    top.set_ylabel(" / ".join(sorted(metrics)) or "loss")
    if metrics:
        top.legend(fontsize=8, loc="upper right")
    top.grid(True, alpha=0.25)
    top.tick_params(labelbottom=False)
    top.set_title("runs compared", fontsize=11, loc="left")
    if any_lr:
        bottom.set_yscale("log")
        bottom.legend(fontsize=8, loc="upper right")
    bottom.set_ylabel("learning rate (log)")
    bottom.set_xlabel("epoch")
    bottom.grid(True, alpha=0.25)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    fig.subplots_adjust(left=0.08, right=0.97, top=0.95, bottom=0.08, hspace=0.08)
    return _png(fig, Canvas)


# ---------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
