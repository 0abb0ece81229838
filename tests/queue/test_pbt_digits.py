"""End to end on real Keras: a digits population of 4 (two LRs far too small, two good) under
``queue run``; the losers copy a winner's weights and optimizer state in place (no restart)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("keras")
pytest.importorskip("sklearn")

from tests.queue.night_helpers import entries, lrsup

pytestmark = [pytest.mark.keras, pytest.mark.timeout(500)]

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "digits" / "train.py"
CONFIG = """policy = []
[run]
snapshot_interval = 0
[population]
interval = 1
burn_in = 2
mutations = { lr = { values = [0.01, 0.02, 0.05] } }
"""


def test_a_digits_population_exploits_in_place(tmp_path: Path) -> None:
    # 6 epochs of about half a second: boundaries at epochs 2 to 5 (none at the last, where a copy
    # would train nothing), so the queue's half-second ticks see the losers at one of them.
    (tmp_path / "pbt.toml").write_text(CONFIG)
    out = lrsup(tmp_path, "sweep", "--pbt", "--population", "4", "--group", "pop", "--config", "pbt.toml",
                "--grid", "lr=0.00001,0.00002,0.02,0.05", str(SCRIPT), "--", "--epochs", "6")  # fmt: skip
    assert out.returncode == 0, out.stderr
    night = lrsup(tmp_path, "queue", "run", "--slots", "4", "--gpus", "none", timeout=450)
    assert night.returncode == 0, night.stdout + night.stderr
    assert [e["status"] for e in entries(tmp_path)] == ["done"] * 4, night.stdout
    exploited = 0
    for run_dir in (tmp_path / "runs").glob("q*"):
        metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert len([r for r in metrics if r["type"] == "start"]) == 1  # no process restart
        acks = [r for r in metrics if r["type"] == "ack" and r["cmd"] == "rollback"]
        if acks:
            # the members started at lr 1e-5 and 2e-5 (over 6 epochs a good member may copy later too)
            exploited += run_dir.name.endswith(("-m1", "-m2"))
            assert not [r for r in metrics if r["type"] == "error"]
            last = [r for r in metrics if r["type"] == "epoch"][-1]
            assert last["logs"]["val_accuracy"] > 0.5  # the donor's weights: an LR of 1e-5 alone stays near chance
    assert exploited >= 1, night.stdout
    report = lrsup(tmp_path, "report", "--group", "pop", timeout=120)
    assert report.returncode == 0 and " copied " in report.stdout, report.stdout + report.stderr
