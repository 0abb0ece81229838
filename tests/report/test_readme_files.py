"""The README's run-directory table lists every file lrsup writes into a run directory."""

from __future__ import annotations

from pathlib import Path

from lrsup.supervisor import protocol
from lrsup.supervisor.report import tables
from lrsup.supervisor.run import operator, range_test
from lrsup.supervisor.rundir import snapshot

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_lists_every_run_file():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| file | written by | what |") :]
    table = table[: table.index("\n\n")]
    names = [
        protocol.CONFIG_FILE,
        protocol.METRICS_FILE,
        protocol.CONTROL_FILE,
        protocol.BELL_FILE,
        protocol.JOURNAL_FILE,
        protocol.TRAINER_LOG,
        protocol.STATE_FILE,
        protocol.CHECKPOINT_DIR + "/",
        snapshot.SNAPSHOT_FILE,
        operator.REQUESTS_FILE,
        tables.REPORT_MD,
        tables.REPORT_HTML,
        tables.REPORT_PNG,
        range_test.LR_FIND_PNG,
    ]
    missing = [n for n in names if f"`{n}`" not in table]
    assert not missing, f"README.md's run-directory table lacks {missing}"
