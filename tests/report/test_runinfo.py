"""load_run: one pass over a run directory into RunInfo."""

from __future__ import annotations

import json
import math
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from lrsup.supervisor.history.runinfo import (
    BatchSeries,
    Outcome,
    RunInfoError,
    load_run,
    monitor_direction,
    order_metric_keys,
)

from .conftest import EXPECTED, SPE, T0, XSS


def test_synthetic_run_is_read_whole(synthetic_run: Path) -> None:
    info = load_run(synthetic_run)
    assert info.start is not None and info.optimizer == "SGD" and info.initial_lr == 0.1
    assert info.epochs_budget == 12 and info.steps_per_epoch == SPE
    assert len(info.epochs) == EXPECTED["epoch_rows"]
    assert [r.epoch for r in info.epochs if r.superseded] == EXPECTED["superseded_epochs"]
    assert info.best is not None and info.best.epoch == EXPECTED["best_epoch"]
    assert info.best.logs["val_loss"] == EXPECTED["best_val_loss"]
    assert info.monitor == "val_loss" and info.mode == "min"
    assert info.final is not None and info.final.epoch == EXPECTED["final_epoch"]
    assert info.final.logs["loss"] == 0.77
    assert info.wall_time == pytest.approx(EXPECTED["wall_time"])
    assert info.time_per_epoch == pytest.approx(EXPECTED["time_per_epoch"])
    assert info.final_lr == 0.0125
    assert info.outcome is Outcome.STOPPED and info.exit_status == 0
    assert "stopped early by a policy" in info.outcome_detail
    # The NaN epoch is kept as information, never dropped.
    nan_row = next(r for r in info.epochs if r.superseded)
    assert math.isnan(nan_row.logs["loss"])


def test_decisions_are_joined_with_what_became_of_them(synthetic_run: Path) -> None:
    info = load_run(synthetic_run)
    assert len(info.decisions) == EXPECTED["decisions"]
    assert len(info.active_decisions) == EXPECTED["active_decisions"]
    by_seq = {d.seq: d for d in info.decisions}
    suppressed = next(d for d in info.decisions if d.seq is None)
    assert suppressed.suppressed == "cooldown" and suppressed.status == "suppressed: cooldown"
    assert by_seq[1].label == "cut" and by_seq[1].applied.step == 4 * SPE and not by_seq[1].late
    assert by_seq[1].status == "applied at step 200"
    assert by_seq[2].label == "rollback"
    assert by_seq[3].label == "hparam" and by_seq[3].error == "optimizer SGD has no hyperparameter 'beta_9'"
    assert by_seq[3].reason == XSS and by_seq[3].status.startswith("refused:")
    assert by_seq[4].late and by_seq[4].status == "applied late at step 453"
    assert by_seq[5].label == "stop" and by_seq[5].applied is not None


def test_rollback_and_its_time_lost_are_found(synthetic_run: Path) -> None:
    info = load_run(synthetic_run)
    assert len(info.rollbacks) == 1 and info.restarts == []
    rollback = info.rollbacks[0]
    assert rollback.seq == 2 and rollback.estimated
    assert rollback.time_lost == pytest.approx(EXPECTED["rollback_lost"])
    assert rollback.span == (5.0, 6.0)  # protocol epoch 5 (people's 6th) was redone
    assert info.time_lost == pytest.approx(EXPECTED["rollback_lost"])


def test_garbage_and_torn_lines_are_counted_not_fatal(synthetic_run: Path) -> None:
    info = load_run(synthetic_run)
    assert info.metrics_stats.garbage == 2 and info.metrics_stats.torn_tail == 1
    assert info.journal_stats.garbage == 1  # the v=2 line
    assert any("incomplete" in w for w in info.warnings)
    assert info.config is not None and info.config["agent"]["batch_every"] == 10


def test_batch_points_are_kept_and_the_nan_batch_is_there(synthetic_run: Path) -> None:
    info = load_run(synthetic_run)
    points = info.batches.points
    assert len(points) == 12 * (SPE // 10)
    assert any(p.loss is not None and math.isnan(p.loss) for p in points)
    redone = [p for p in points if p.superseded]
    assert redone and all(p.epoch == 5 for p in redone)  # the first try at epoch 5
    assert info.last_step == 11 * SPE


def test_progress_reports_bytes_up_to_the_total(synthetic_run: Path) -> None:
    calls: list[tuple[int, int]] = []
    load_run(synthetic_run, progress=lambda done, total: calls.append((done, total)))
    total = (synthetic_run / "metrics.jsonl").stat().st_size + (synthetic_run / "journal.jsonl").stat().st_size
    assert calls and calls[-1] == (total, total)
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(RunInfoError, match="does not exist"):
        load_run(tmp_path / "nope")
    with pytest.raises(RunInfoError, match="not an lrsup run directory"):
        load_run(tmp_path)


# ---------------------------------------------------------------------------
# Outcomes


def _simple(w, *, epochs: int = 3, end: str | None = "completed") -> None:
    w.start(0.0, epochs=epochs)
    for e in range(epochs):
        w.epoch(10.0 * (e + 1), e, 0.1, loss=1.0 / (e + 1))
    if end:
        w.end(10.0 * epochs + 1, end, epochs - 1)


def test_completed(run_writer) -> None:
    w = run_writer()
    _simple(w)
    w.event(32, "trainer_exited", "trainer exited with status 0")
    w.event(33, "finished", "training completed (exit status 0)", status=0)
    w.close()
    info = load_run(w.root)
    assert info.outcome is Outcome.COMPLETED and info.exit_status == 0
    assert info.monitor == "loss" and info.best.epoch == 2  # no val_loss: loss decides


def test_exception_is_failed(run_writer) -> None:
    w = run_writer()
    _simple(w, end="exception")
    w.event(32, "trainer_exited", "trainer exited with status 1")
    w.event(33, "finished", "trainer exited with status 1 (training raised an exception) (exit status 1)", status=1)
    w.close()
    info = load_run(w.root)
    assert info.outcome is Outcome.FAILED and info.exit_status == 1


def test_killed_trainer_without_end_record(run_writer) -> None:
    w = run_writer()
    _simple(w, end=None)
    w.event(32, "trainer_exited", "trainer killed by signal SIGKILL (9)")
    w.close()
    info = load_run(w.root)
    assert info.outcome is Outcome.FAILED and info.exit_status == 137
    assert "SIGKILL" in info.outcome_detail


def test_running_while_the_supervisor_pid_is_alive(run_writer) -> None:
    w = run_writer()
    _simple(w, end=None)
    w.close()
    (w.root / "supervisor.json").write_text(json.dumps({"v": 1, "supervisor_pid": 12345, "supervisor_start_time": 777}))
    asked: list[tuple] = []

    def alive(pid, start_time):
        asked.append((pid, start_time))
        return pid == 12345

    assert load_run(w.root, pid_alive=alive).outcome is Outcome.RUNNING
    assert asked == [(12345, 777)]
    assert load_run(w.root, pid_alive=lambda pid, start: False).outcome is Outcome.INTERRUPTED
    # The real check: our own pid is alive; with another start time it is a reused pid.
    (w.root / "supervisor.json").write_text(json.dumps({"supervisor_pid": os.getpid()}))
    assert load_run(w.root).outcome is Outcome.RUNNING
    if Path(f"/proc/{os.getpid()}/stat").exists():
        (w.root / "supervisor.json").write_text(json.dumps({"supervisor_pid": os.getpid(), "supervisor_start_time": 1}))
        assert load_run(w.root).outcome is Outcome.INTERRUPTED


def test_restarts_given_up_are_failed(run_writer) -> None:
    w = run_writer()
    _simple(w, end=None)
    w.event(31.0, "trainer_exited", "trainer exited with status 1", returncode=1)
    w.event(32.0, "backoff", "waiting 5 s before restart 1")
    w.event(37.0, "restarting", "restarting the trainer (attempt 2)")
    w.event(38.0, "trainer_exited", "trainer killed by signal SIGKILL (9)", returncode=-9)
    w.event(39.0, "fatal", "gave up after 1 restart(s): failing before its first epoch")
    w.event(39.5, "finished", "gave up after 1 restart(s) (exit status 3)", status=3)
    w.close()
    info = load_run(w.root)
    assert info.outcome is Outcome.FAILED and info.gave_up and info.exit_status == 3
    assert "gave up after 1 restart" in info.outcome_detail
    assert len(info.restarts) == 1 and info.restarts[0].epoch == 3  # it struck during the 4th epoch


def test_without_supervisor_json_freshness_decides(run_writer) -> None:
    w = run_writer()
    _simple(w, end=None)
    w.close()
    last = T0 + 30.0
    assert load_run(w.root, now=last + 5).outcome is Outcome.RUNNING
    assert load_run(w.root, now=last + 3600).outcome is Outcome.INTERRUPTED


def test_give_up_is_stopped_and_flagged(run_writer) -> None:
    w = run_writer()
    _simple(w, end="stopped")
    w.journal(
        31.5,
        "decision",
        seq=1,
        policy="divergence",
        action="stop",
        lr=None,
        reason="diverged 3 times",
        epoch=2,
        step=150,
        suppressed=None,
        give_up=True,
    )
    w.close()
    info = load_run(w.root)
    assert info.outcome is Outcome.STOPPED and info.gave_up
    assert info.decisions[0].label == "give up" and info.decisions[0].extra == {"give_up": True}


def test_restart_event_with_explicit_time_lost_and_estimate(run_writer) -> None:
    w = run_writer()
    w.start(0.0, epochs=6)
    for e in range(3):
        w.epoch(10.0 * (e + 1), e, 0.1, loss=1.0)
    w.event(35.0, "trainer_exited", "trainer killed by signal SIGKILL (9)")
    w.event(36.0, "restarted", "from the checkpoint of epoch 2")
    w.start(50.0, epochs=6, initial_epoch=2)
    for e in range(2, 6):  # epoch 2 (0-based) is redone
        w.epoch(50.0 + 10.0 * (e - 1), e, 0.1, loss=0.5)
    w.end(100.0, "completed", 5)
    w.event(101.0, "restart", {"reason": "second one", "time_lost": 12.5})  # explicit: no estimate
    w.close()
    info = load_run(w.root)
    assert [i.kind for i in info.restarts] == ["restart", "restart"]
    first, second = info.restarts
    # Kept: epoch 1 ended at +20; training resumed with the start record at +50.
    assert first.estimated and first.time_lost == pytest.approx(30.0)
    assert first.span == (2.0, 3.0)
    assert not second.estimated and second.time_lost == 12.5
    assert [r.epoch for r in info.epochs if r.superseded] == [2]
    assert info.outcome is Outcome.COMPLETED  # the exit before the restart does not count


def test_two_fits_in_one_script_do_not_supersede_each_other(run_writer) -> None:
    w = run_writer()
    _simple(w, epochs=2)
    w.start(30.0, epochs=2)
    w.epoch(40.0, 0, 0.01, loss=0.3)
    w.epoch(50.0, 1, 0.01, loss=0.2)
    w.end(51.0, "completed", 1)
    w.close()
    info = load_run(w.root)
    assert not any(r.superseded for r in info.epochs)
    assert [r.attempt for r in info.epochs] == [0, 0, 1, 1]


def test_monitor_override_and_max_mode(synthetic_run: Path) -> None:
    info = load_run(synthetic_run, monitor="val_accuracy")
    assert info.mode == "max" and info.best.epoch == 10 and info.best.logs["val_accuracy"] == 0.73
    assert monitor_direction("val_auc") == "max" and monitor_direction("val_mae") == "min"


def test_metric_key_order() -> None:
    keys = ["val_accuracy", "accuracy", "val_loss", "loss", "auc", "val_auc"]
    assert order_metric_keys(keys) == ["loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"]


# ---------------------------------------------------------------------------
# Downsampling and size


def test_batch_series_stays_bounded_and_evenly_spaced() -> None:
    series = BatchSeries(cap=100)
    from lrsup.supervisor.history.runinfo import BatchPoint

    for i in range(100_000):
        if series.wants():
            series.add(BatchPoint(0, i, i, float(i), 0.1))
    steps = [p.step for p in series.points]
    assert 50 <= len(steps) < 100
    assert steps[0] == 0
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    assert gaps == {series.stride}
    with pytest.raises(ValueError, match="cap"):
        BatchSeries(cap=1)


def _write_big_metrics(path: Path, n_batches: int) -> None:
    """A metrics file of n_batches batch records (plus epochs), written fast with a template."""
    per_epoch = 100
    template = (
        '{"v":1,"type":"batch","time":%r,"epoch":%d,"batch":%d,"step":%d,"lr":0.01,"logs":{"loss":%r,"accuracy":0.5}}\n'
    )
    epoch_t = '{"v":1,"type":"epoch","time":%r,"epoch":%d,"step":%d,"lr":0.01,"logs":{"loss":%r,"val_loss":%r}}\n'
    with open(path, "w") as f:
        f.write(
            '{"v":1,"type":"start","time":%r,"pid":1,"optimizer":"SGD","optimizer_config":{},"lr":0.01,'
            '"lr_schedule":null,"steps_per_epoch":1000,"epochs":%d,"initial_epoch":0,"step":0,'
            '"keras_version":null,"backend":null,"agent":null}\n' % (T0, n_batches // per_epoch)
        )
        lines = []
        for i in range(n_batches):
            e, b = divmod(i, per_epoch)
            lines.append(template % (T0 + i * 0.01, e, b * 10, i * 10 + 10, 1.0 / (1 + i * 1e-4)))
            if b == per_epoch - 1:
                lines.append(epoch_t % (T0 + i * 0.01, e, i * 10 + 10, 1.0 / (1 + e), 1.1 / (1 + e)))
            if len(lines) >= 50_000:
                f.write("".join(lines))
                lines.clear()
        f.write("".join(lines))


@pytest.mark.timeout(120)
def test_a_million_records_read_fast(tmp_path: Path) -> None:
    run = tmp_path / "big"
    run.mkdir()
    _write_big_metrics(run / "metrics.jsonl", 1_000_000)
    started = time.perf_counter()
    info = load_run(run)
    elapsed = time.perf_counter() - started
    assert len(info.epochs) == 10_000
    assert info.batches.seen == 1_000_000 and len(info.batches.points) <= 5000
    assert info.last_step == 10_000_000  # the newest batch counts even when not kept
    assert info.best.epoch == 9_999
    # About 1.5 s on one free core; generous for a shared CI machine.
    assert elapsed < 20, f"reading 1,000,000 records took {elapsed:.1f}s"


def test_memory_stays_bounded(tmp_path: Path) -> None:
    run = tmp_path / "mem"
    run.mkdir()
    _write_big_metrics(run / "metrics.jsonl", 200_000)
    tracemalloc.start()
    try:
        info = load_run(run)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(info.batches.points) <= 5000
    # 200,000 batch records are ~30 MB on disk; reading them holds a few MB at most.
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_newer_journal_line_types_are_skipped_quietly(run_writer) -> None:
    w = run_writer()
    _simple(w)
    w.journal(40.0, "checkpoint", name="ckpt-3", step=150)  # a kind a later lrsup may write
    w.journal(41.0, "event", detail="no name")  # broken: counted
    w.close()
    info = load_run(w.root)
    assert info.journal_stats.garbage == 1 and info.events == []
