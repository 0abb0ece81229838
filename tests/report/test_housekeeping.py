"""Checkpoint bookkeeping (retain, keep, configure, checkpoint) stays in the journal only."""

from __future__ import annotations

from lrsup.supervisor.history.runinfo import load_run
from lrsup.supervisor.report.series import decision_markers
from lrsup.supervisor.report.tables import decision_rows, summary_rows


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
