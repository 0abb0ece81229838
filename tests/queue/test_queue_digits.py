"""End to end: a sweep of the digits example (real Keras) run by ``lrsup queue run``, then ``report --group``."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("keras")
pytest.importorskip("sklearn")

from tests.queue.night_helpers import entries, lrsup

pytestmark = [pytest.mark.keras, pytest.mark.timeout(400)]

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "digits" / "train.py"


def test_a_digits_sweep_under_the_queue(tmp_path: Path) -> None:
    out = lrsup(tmp_path, "sweep", "--group", "night", "--grid", "lr=0.01,0.05", str(SCRIPT), "--", "--epochs", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["night", "1", "2"]
    night = lrsup(tmp_path, "queue", "run", "--slots", "2", "--gpus", "none", timeout=360)
    assert night.returncode == 0, night.stdout + night.stderr
    found = entries(tmp_path)
    assert [e["status"] for e in found] == ["done", "done"], night.stdout
    assert [e["params"] for e in found] == [{"lr": 0.01}, {"lr": 0.05}]
    report = lrsup(tmp_path, "report", "--group", "night", timeout=120)
    assert report.returncode == 0, report.stderr
    assert "best run: q" in report.stdout and (tmp_path / "runs" / "night-report" / "compare.md").is_file()
