"""``lrsup lr-find`` without TensorFlow: the range test on the fake trainer, its options, its output.

The real ``lrsup`` runs in a subprocess (bounded by a timeout); the curve, the plot and the
progress display are also tested in-process.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lrsup.supervisor.history.runinfo import MissingExtraError
from lrsup.supervisor.protocol.wire import AckRecord, BatchRecord
from lrsup.supervisor.run.range_test import (
    LR_FIND_PNG,
    RangeTestCurve,
    RangeTestDisplay,
    plot_range_test,
    range_test_config,
    range_test_curve,
)

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_trainer.py"
LRSUP = [sys.executable, "-m", "lrsup.supervisor.cli.main"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def lrsup(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LRSUP, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """One range test of 20 steps on the fake trainer (10 epochs x 10 steps asked)."""
    cwd = tmp_path_factory.mktemp("lr_find")
    result = lrsup(
        "lr-find",
        "--steps",
        "20",
        "--run-dir",
        "run",
        str(FAKE),
        "--",
        "--epochs",
        "10",
        "--steps",
        "10",
        "--checkpoints",
        cwd=cwd,
    )
    return result, cwd / "run"


def test_lr_find_prints_the_suggestion_it_rolled_back_with(fake_run):
    result, run_dir = fake_run
    assert result.returncode == 0, result.stdout + result.stderr
    journal = read_jsonl(run_dir / "journal.jsonl")
    (rollback,) = [d for d in journal if d["type"] == "decision" and d["action"] == "rollback"]
    assert rollback["policy"] == "lr_find" and rollback["suppressed"] is None
    printed = [line for line in result.stdout.splitlines() if line.startswith("suggested learning rate: ")]
    assert printed == [f"suggested learning rate: {rollback['lr']:.3g} (valley)"]
    assert "for information: steepest " in result.stdout and " min_loss " in result.stdout
    # The curve read back is the one the policy decided on.
    curve = range_test_curve(run_dir)
    assert curve.finished and curve.suggestion == pytest.approx(rollback["lr"])
    # The fake's family range, 1e-7 .. 10 over 20 steps, ramped from the very first update (the
    # ramp goes out in the start barrier): 21 updates from 1e-7 to 10, x 10**0.4 a step.
    assert len(curve.lrs) == len(curve.losses) == len(curve.smoothed) == 21
    assert curve.lrs[0] == pytest.approx(1e-7) and curve.lrs[-1] == pytest.approx(10.0)
    assert [b / a for a, b in zip(curve.lrs, curve.lrs[1:])] == pytest.approx([10**0.4] * 20)


def test_lr_find_stops_the_run_once_the_test_is_over(fake_run):
    result, run_dir = fake_run
    journal = read_jsonl(run_dir / "journal.jsonl")
    stops = [d for d in journal if d["type"] == "decision" and d["action"] == "stop"]
    assert [(d["policy"], d["suppressed"]) for d in stops] == [("lr_find", None)]
    epochs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["type"] == "epoch"]
    assert len(epochs) < 10  # 10 asked; the test needs about 3
    config = json.loads((run_dir / "config.json").read_text())
    assert [p["use"] for p in config["policies"]] == ["lrsup.policies.lr_range_test:LRRangeTest"]
    assert config["policies"][0]["mode"] == "always" and config["policies"][0]["num_steps"] == 20
    assert config["agent"]["batch_every"] == 1


def test_lr_find_writes_the_plot(fake_run):
    pytest.importorskip("matplotlib")
    result, run_dir = fake_run
    png = run_dir / LR_FIND_PNG
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert f"plot: {png}" in result.stdout


@pytest.mark.parametrize(
    "options, message",
    [
        (["--steps", "5"], "--steps: Input should be greater than or equal to 20 (got 5)"),
        (["--min-lr", "1", "--max-lr", "0.1"], "min_lr must be below max_lr"),
        (["--min-lr", "-1"], "--min-lr: Input should be greater than 0"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path, options, message):
    result = lrsup("lr-find", *options, str(FAKE), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("lrsup: ") and message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_script_is_exit_2(tmp_path):
    result = lrsup("lr-find", "nope.py", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (2, "lrsup: script 'nope.py' not found\n")


def test_a_script_too_short_for_the_test_gives_no_suggestion(tmp_path):
    result = lrsup(
        "lr-find",
        "--steps",
        "40",
        "--run-dir",
        "run",
        str(FAKE),
        "--",
        "--epochs",
        "2",
        "--steps",
        "10",
        "--checkpoints",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "suggested learning rate" not in result.stdout
    assert "lrsup: no suggestion: the run ended after" in result.stderr
    assert "give the script enough steps for --steps 40" in result.stderr


def test_config_defaults_and_errors():
    config = range_test_config()
    ((name, cls, settings),) = config.policies
    assert (settings.mode, settings.num_steps, settings.min_lr, settings.max_lr) == ("always", 100, None, None)
    assert config.run.max_restarts == 0 and config.agent.batch_every == 1
    with pytest.raises(ValueError, match=r"^--max-lr: Input should be greater than 0 \(got 0.0\)$"):
        range_test_config(max_lr=0.0)


def curve(**changes) -> RangeTestCurve:
    lrs = [10 ** (-6 + i / 10) for i in range(60)]
    losses = [2.0 - 0.02 * i if i < 50 else 1.0 + (i - 50) for i in range(60)]
    fields = dict(
        lrs=lrs,
        losses=losses,
        smoothed=losses,
        num_steps=60,
        method="valley",
        suggestion=1e-3,
        suggestions={"valley": 1e-3, "steepest": 2e-3, "min_loss": None},
        finished=True,
        why="done",
    )
    fields.update(changes)
    return RangeTestCurve(**fields)


def test_plot_range_test_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_range_test(curve(), tmp_path / "x.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="no points"):
        plot_range_test(curve(lrs=[], losses=[], smoothed=[]), tmp_path / "y.png")


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(MissingExtraError, match="matplotlib"):
        plot_range_test(curve(), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_display_counts_the_steps_of_the_ramp():
    out = io.StringIO()
    display = RangeTestDisplay(20, out, live=False)
    display.on_record(BatchRecord(step=3, lr=0.1, logs={"loss": 1.0}))  # before the ramp: not counted
    assert display.done == 0
    display.on_record(AckRecord(seq=1, cmd="set_schedule", step=4))
    for step in range(5, 30):
        display.on_record(BatchRecord(step=step, lr=0.1, logs={"loss": 1.0}))
    assert display.done == 20
    lines = [line for line in out.getvalue().splitlines() if line.startswith("LR range test: ")]
    assert lines == [f"LR range test: {n}/20 steps" for n in (5, 10, 15, 20)]
    display.close()


def test_live_display_drives_a_progress_bar():
    out = io.StringIO()
    display = RangeTestDisplay(10, out, live=True)
    try:
        display.on_record(AckRecord(seq=1, cmd="set_schedule", step=0))
        display.on_record(BatchRecord(step=4, lr=0.01, logs={"loss": 2.5}))
        task = display.progress.tasks[0]
        assert (task.completed, task.total) == (4, 10) and "lr 0.01" in task.fields["info"]
    finally:
        display.close()
    assert display.progress is None
