"""The report and the comparison as Markdown (report.md, compare.md).

Every table cell is escaped (pipes, backslashes, HTML), and the configuration is
fenced with more backticks than it contains.
"""

from __future__ import annotations

import re
from typing import Sequence

from lrsup.supervisor.history.runinfo import RunInfo
from lrsup.supervisor.report.tables import (
    COMPARE_HEADER,
    COMPARE_PNG,
    DECISION_HEADER,
    INTERRUPTION_HEADER,
    MAX_EVENTS,
    REPORT_PNG,
    STAGE_HEADER,
    compare_rows,
    config_text,
    decision_rows,
    event_rows,
    interruption_rows,
    metric_table,
    run_labels,
    stage_rows,
    summary_rows,
)


def md_cell(text: str) -> str:
    """One table cell: pipes and backslashes escaped, HTML neutralised (renderers pass raw HTML through)."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(info: RunInfo, *, png_name: str | None = REPORT_PNG, notes: Sequence[str] = ()) -> str:
    """The whole report as Markdown (epochs counted from 1, as Keras prints them)."""
    lines = [f"# lrsup report: {md_cell(info.name)}", ""]
    lines += md_table(["", ""], [[f"**{k}**", v] for k, v in summary_rows(info)])
    lines.append("")
    if png_name:
        lines += [f"![loss, val_loss and learning rate per epoch]({png_name})", ""]
    stages = stage_rows(info)
    if stages:
        lines += ["## Stages", "", "Each `fit` call of the script is a stage; rescues never cross stages.", ""]
        lines += md_table(STAGE_HEADER, stages) + [""]
    lines += ["## Metrics", ""]
    header, rows = metric_table(info)
    lines += (md_table(header, rows) if rows else ["No epoch was recorded."]) + [""]
    lines += ["## Decisions", ""]
    if info.policy_decisions:
        lines += md_table(DECISION_HEADER, decision_rows(info))
        lines += [
            "",
            "Epochs count from 1. A *late* change was applied after the trainer's epoch barrier "
            "had timed out, so it took effect a few batches into the next epoch.",
        ]
    else:
        lines.append("No decision was taken.")
    lines.append("")
    lines += ["## Restarts and rollbacks", ""]
    if info.interruptions:
        lines += md_table(INTERRUPTION_HEADER, interruption_rows(info))
        if any(i.estimated for i in info.interruptions):
            lines += ["", "≈: estimated from the records (end of the last kept epoch to the moment training resumed)."]
    else:
        lines.append("None.")
    lines.append("")
    lines += ["## Events", ""]
    if info.events:
        lines += md_table(["when", "event", "detail"], event_rows(info))
        if len(info.events) > MAX_EVENTS:
            lines.append(f"\n… and {len(info.events) - MAX_EVENTS} more events in journal.jsonl.")
    else:
        lines.append("No journal events.")
    lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {md_cell(n)}" for n in notes] + [""]
    config = config_text(info)
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", config)), default=0))
    lines += ["## Configuration", "", f"{fence}json", config, fence, ""]
    return "\n".join(lines)


def render_compare_markdown(
    infos: Sequence[RunInfo], *, png_name: str | None = COMPARE_PNG, notes: Sequence[str] = ()
) -> str:
    lines = ["# lrsup: runs compared", ""]
    lines += md_table(COMPARE_HEADER, compare_rows(infos)) + [""]
    lines.append(
        "Best and final values are of each run's monitored metric (val_loss when recorded, else loss); "
        "epochs count from 1."
    )
    lines.append("")
    if png_name:
        lines += [f"![validation loss and learning rate per run]({png_name})", ""]
    lines += (
        ["## Runs", ""]
        + [f"- {md_cell(label)}: `{md_cell(str(i.run_dir))}`" for i, label in zip(infos, run_labels(infos))]
        + [""]
    )
    if notes:
        lines += ["## Notes", ""] + [f"- {md_cell(n)}" for n in notes] + [""]
    return "\n".join(lines)
