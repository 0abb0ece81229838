"""Checkpoint bookkeeping (retain, keep, configure, checkpoint) stays in the journal only."""

from __future__ import annotations

from rich.console import Console

from lrsup.supervisor.history.runinfo import load_run
from lrsup.supervisor.report.series import decision_markers
from lrsup.supervisor.report.tables import COMPARE_HEADER, compare_rows, decision_rows, summary_rows
from lrsup.supervisor.report.terminal import render_terminal


def test_bookkeeping_decisions_are_not_drawn_or_tabled_but_counted(synthetic_run):
    info = load_run(synthetic_run)
    before_rows, before_markers = len(decision_rows(info)), len(decision_markers(info))
    with open(synthetic_run / "journal.jsonl", "a") as f:
        for seq, action in ((901, "retain"), (902, "configure"), (903, "checkpoint"), (None, "keep")):
            f.write(
                '{"v":1,"type":"decision","time":1.0,"seq":%s,"policy":"engine","action":"%s","lr":null,'
                '"reason":"bookkeeping","epoch":1,"step":20,"suppressed":null}\n'
                % ("null" if seq is None else seq, action)
            )
    info = load_run(synthetic_run)
    assert len(decision_rows(info)) == before_rows
    assert len(decision_markers(info)) == before_markers
    decisions = dict(summary_rows(info))["Decisions"]
    assert decisions.endswith("; 4 on checkpoint bookkeeping (in the journal)")


def _with_bookkeeping(run, count: int = 60) -> None:
    with open(run / "journal.jsonl", "a") as f:
        f.write("\n")  # the synthetic run ends with a torn line
        for i in range(count):
            f.write(
                '{"v":1,"type":"decision","time":1.0,"seq":%d,"policy":"engine","action":"retain","lr":null,'
                '"reason":"bookkeeping","epoch":1,"step":20,"suppressed":null}\n' % (2000 + i)
            )


def test_the_compare_table_counts_what_the_report_counts(synthetic_run):
    _with_bookkeeping(synthetic_run)
    info = load_run(synthetic_run)
    (row,) = compare_rows([info])
    counted = dict(summary_rows(info))["Decisions"]  # "3 (1 late), 1 suppressed; 60 on checkpoint bookkeeping..."
    assert counted.split()[0].rstrip(",;") == row[COMPARE_HEADER.index("decisions")]
    assert int(row[COMPARE_HEADER.index("decisions")]) == len(info.active_decisions) < 60


def test_the_terminal_report_points_at_earlier_decisions_only_when_some_are_left_out(synthetic_run):
    _with_bookkeeping(synthetic_run, count=30)  # more journal lines than the terminal shows
    info = load_run(synthetic_run)
    assert len(info.decisions) > 20 >= len(info.policy_decisions)
    console = Console(record=True, width=200)
    render_terminal(info, console)
    text = console.export_text()
    assert "earlier decisions" not in text and "retain" not in text
