"""The report as one self-contained HTML page (report.html), every piece of text escaped."""

from __future__ import annotations

import base64
import html
from typing import Any, Sequence

from lrsup.supervisor.history.runinfo import RunInfo
from lrsup.supervisor.report.tables import (
    DECISION_HEADER,
    INTERRUPTION_HEADER,
    MAX_EVENTS,
    STAGE_HEADER,
    config_text,
    decision_rows,
    event_rows,
    interruption_rows,
    metric_table,
    stage_rows,
    summary_rows,
)

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


def _html_table(
    header: list[str], rows: list[list[str]], *, table_id: str | None = None, row_classes: list[str] | None = None
) -> str:
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
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_h(title)}</h1>",
    ]
    parts.append('<table class="summary" id="summary"><tbody>')
    for label, value in summary_rows(info):
        cls = f' class="outcome-{_h(info.outcome.value)}"' if label == "Outcome" else ""
        parts.append(f"<tr><th>{_h(label)}</th><td{cls}>{_h(value)}</td></tr>")
    parts.append("</tbody></table>")
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<p><img id="plot" alt="loss, val_loss and learning rate per epoch" '
            f'src="data:image/png;base64,{data}"></p>'
        )
    stages = stage_rows(info)
    if stages:
        parts.append("<h2>Stages</h2>")
        parts.append(_html_table(STAGE_HEADER, stages, table_id="stages"))
    parts.append("<h2>Metrics</h2>")
    header, rows = metric_table(info)
    parts.append(_html_table(header, rows, table_id="metrics") if rows else "<p>No epoch was recorded.</p>")
    parts.append("<h2>Decisions</h2>")
    if info.policy_decisions:
        classes = [
            "late" if d.late else "suppressed" if d.suppressed else "refused" if d.error else ""
            for d in info.policy_decisions
        ]
        parts.append(_html_table(DECISION_HEADER, decision_rows(info), table_id="decisions", row_classes=classes))
        parts.append(
            '<p>Epochs count from 1. A <span class="late">late</span> change was applied after the '
            "trainer's epoch barrier had timed out.</p>"
        )
    else:
        parts.append('<p id="decisions">No decision was taken.</p>')
    parts.append("<h2>Restarts and rollbacks</h2>")
    if info.interruptions:
        parts.append(_html_table(INTERRUPTION_HEADER, interruption_rows(info), table_id="interruptions"))
    else:
        parts.append("<p>None.</p>")
    parts.append("<h2>Events</h2>")
    if info.events:
        parts.append(_html_table(["when", "event", "detail"], event_rows(info), table_id="events"))
        if len(info.events) > MAX_EVENTS:
            parts.append(f"<p>… and {len(info.events) - MAX_EVENTS} more events in journal.jsonl.</p>")
    else:
        parts.append("<p>No journal events.</p>")
    if notes:
        parts.append('<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{_h(n)}</li>" for n in notes) + "</ul>")
    parts.append(f'<h2>Configuration</h2><pre id="config">{_h(config_text(info))}</pre>')
    parts.append("</body></html>\n")
    return "\n".join(parts)
