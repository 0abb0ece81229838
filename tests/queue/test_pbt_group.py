"""A PBT group's lineage and best curve (pure, over RunInfo-shaped objects), and the sweep's refusals."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lrsup.supervisor.history.rows import Event
from lrsup.supervisor.queue.group import best_curve, lineage, lineage_markdown
from tests.queue.night_helpers import FAKE, lrsup


@dataclass
class Row:
    epoch: int
    logs: dict
    superseded: bool = False


@dataclass
class Info:
    name: str
    epochs: list = field(default_factory=list)
    events: list = field(default_factory=list)


def test_lineage_is_read_from_exploit_events_in_time_order():
    a = Info("q1-a", events=[Event(5.0, "exploit", "x", {"peer": "/r/q2-b", "at_epoch": 4, "checkpoint": "epoch-0003",
                                                          "old": {"lr": 0.1}, "new": {"lr": 0.012}})])  # fmt: skip
    b = Info("q2-b", events=[Event(2.0, "exploit", "x", {"peer": "/r/q1-a", "at_epoch": 2, "checkpoint": "epoch-0001",
                                                          "old": {"lr": 1.0}, "new": {"lr": 0.08}}),
                             Event(3.0, "donated", "x", {"peer": "/r/q1-a"})])  # fmt: skip
    events = lineage([a, b])
    assert [(e["member"], e["donor"], e["epoch"]) for e in events] == [("q2-b", "q1-a", 2), ("q1-a", "q2-b", 4)]
    md = lineage_markdown(events, [(1, 0.5, "q1-a")], "val_loss")
    assert "| 2 | q2-b | q1-a | epoch-0001 | lr=1 | lr=0.08 |" in md and "| 1 | 0.5 | q1-a |" in md


def test_best_curve_takes_the_best_member_per_epoch_and_skips_nan_and_superseded():
    a = Info("a", epochs=[Row(0, {"val_loss": 1.0}), Row(1, {"val_loss": math.nan}), Row(2, {"val_loss": 0.2})])
    b = Info(
        "b", epochs=[Row(0, {"val_loss": 0.9}), Row(1, {"val_loss": 0.1}, superseded=True), Row(1, {"val_loss": 0.7})]
    )
    assert best_curve([a, b], "val_loss", "min") == [(1, 0.9, "b"), (2, 0.7, "b"), (3, 0.2, "a")]
    assert best_curve([a, b], "val_loss", "max")[0] == (1, 1.0, "a")


def test_sweep_refuses_population_without_pbt_and_no_grid_without_pbt(tmp_path: Path):
    out = lrsup(tmp_path, "sweep", "--population", "4", "--grid", "lr=0.1", str(FAKE))
    assert out.returncode == 2 and "--population goes with --pbt" in out.stderr
    out = lrsup(tmp_path, "sweep", str(FAKE))
    assert out.returncode == 2 and "--grid" in out.stderr
    out = lrsup(tmp_path, "sweep", "--pbt", "--population", "3", "--group", "p", str(FAKE), "--", "--epochs", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "p" and len(out.stdout.split()) == 4
    assert (tmp_path / "runs" / ".queue" / "pbt" / "p.json").is_file()
