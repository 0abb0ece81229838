"""Snapshots: an engine restored from one and fed the rest decides exactly as one fed everything.

Also which snapshots ``load_snapshot`` refuses (another config, a rewritten metrics file,
lines lost from control.jsonl, garbage), and when ``SnapshotWriter`` writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lrsup.supervisor.config import load_config
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.protocol.wire import (
    AckRecord,
    BatchRecord,
    CheckpointRecord,
    EndRecord,
    EpochRecord,
    StartRecord,
    dumps,
    loads,
)
from lrsup.supervisor.rundir.progress import RunProgress
from lrsup.supervisor.rundir.recovery import ControlHistory, read_records
from lrsup.supervisor.rundir.snapshot import SnapshotWriter, load_snapshot

SHA = "ab" * 32


def default_engine(tmp_path: Path) -> Engine:
    config = load_config(None, cwd=tmp_path)
    return Engine.from_config(config)


def stream(epochs: int = 12, steps: int = 40, spike_at: int | None = 170, probe: bool = False) -> list:
    """A run as the default stack sees it: a start, batch records every step, epoch records, checkpoints.

    The loss falls and then flattens (plateau cuts), with one spike (divergence) and one NaN.
    ``probe``: the LR range test's probe before the fit (a few ramp steps, then the fit's start).
    """
    shape = dict(time=0.0, pid=1, optimizer="SGD", lr=0.1, steps_per_epoch=steps, epochs=epochs)
    records: list = []
    if probe:
        records.append(StartRecord(**shape, probe=True))
        records += [BatchRecord(time=0.0, epoch=0, batch=i, step=i + 1, lr=1e-4, logs={"loss": 2.0}) for i in range(5)]
    records.append(StartRecord(**shape))
    records.append(
        CheckpointRecord(time=0.0, name="start-0", epoch=None, step=0, lr=0.1, file="checkpoints/s.keras", sha256=SHA)
    )
    step = 0
    for epoch in range(epochs):
        total = 0.0
        for batch in range(steps):
            step += 1
            loss = 2.3 / (1 + 0.02 * min(step, 200))
            if step == spike_at:
                loss *= 50
            if step == spike_at + 60 if spike_at else False:
                loss = math.nan
            total += loss
            records.append(
                BatchRecord(time=step, epoch=epoch, batch=batch, step=step, lr=0.1, logs={"loss": total / (batch + 1)})
            )
        val = 2.3 / (1 + 0.02 * min(step, 150))
        records.append(EpochRecord(time=step, epoch=epoch, step=step, lr=0.1, logs={"loss": val, "val_loss": val}))
        records.append(
            CheckpointRecord(
                time=step,
                name=f"epoch-{epoch:04d}",
                epoch=epoch,
                step=step,
                lr=0.1,
                file=f"checkpoints/e{epoch}.keras",
                sha256=SHA,
            )
        )
    records.append(EndRecord(time=step, reason="completed", epoch=epochs - 1, step=step))
    return records


def run(engine: Engine, records: list) -> list[tuple]:
    """Feed ``records``, acknowledging every command at once as a trainer would; the decisions made."""
    out, seq = [], 0
    for record in records:
        for d in engine.feed(record):
            out.append((d.action.kind, d.action.policy, d.lr, d.step, d.suppressed))
            if d.command is not None:
                seq += 1
                engine.feed(AckRecord(time=record.time, seq=seq, cmd=d.command.cmd, step=record.step))
    return out


@pytest.mark.parametrize("split", [1, 2, 30, 45, 171, 200, 231, 260, 400, 499])
def test_an_engine_restored_from_a_snapshot_goes_on_as_if_never_stopped(tmp_path, split):
    records = stream(probe=True)
    whole = default_engine(tmp_path)
    decided = run(whole, records)
    assert {kind for kind, *_ in decided} >= {"scale_lr", "rollback", "set_schedule", "stop"}  # the stack was exercised

    first = default_engine(tmp_path)
    before = run(first, records[:split])
    state = loads(dumps(first.state_dict()))  # through the protocol's JSON, as snapshot.json holds it
    second = default_engine(tmp_path)
    second.load_state_dict(state)
    after = run(second, records[split:])
    assert before + after == decided
    assert loads(dumps(second.state_dict())) == loads(dumps(whole.state_dict()))


def test_progress_counts_what_the_lifecycle_and_resume_need():
    progress = RunProgress()
    for record in stream(epochs=2, steps=3, spike_at=None):
        progress.on_record(record)
    assert (progress.records, progress.verdicts, progress.max_step) == (13, 3, 6)
    assert progress.started and progress.progressed and progress.end_reason == "completed"
    assert progress.epoch == 1 and progress.lr is not None
    progress.new_attempt()  # what the last attempt did no longer counts for the next one; the run's facts stay
    assert (progress.attempt_progressed, progress.end_reason, progress.started) == (False, None, True)
    assert RunProgress.from_json(json.loads(json.dumps(progress.__dict__))) == progress
    with pytest.raises(ValueError, match="verdicts"):
        RunProgress.from_json({**progress.__dict__, "verdicts": -1})
    with pytest.raises(ValueError, match="keys"):
        RunProgress.from_json({"records": 1, "verdicts": 0, "max_step": 0, "unknown": 1})
    assert RunProgress.from_json({"records": 1, "verdicts": 0, "max_step": 0}) == RunProgress(
        records=1
    )  # older snapshots
    assert progress.fit == 1
    progress.on_record(StartRecord(pid=2, lr=5.0, step=0, fit=2))  # the script's second fit: a stage
    assert progress.fit == 2 and RunProgress.from_json(json.loads(json.dumps(progress.__dict__))).fit == 2
    with pytest.raises(ValueError, match="fit"):
        RunProgress.from_json({**progress.__dict__, "fit": 0})


class FakeEngine:
    def __init__(self, state=None):
        self.state = state or {"x": 1}

    def state_dict(self):
        return self.state


def make_run_dir(tmp_path: Path, lines: int = 5) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"policy": []}\n')
    with open(run_dir / "metrics.jsonl", "w") as f:
        for i in range(lines):
            f.write(dumps({"v": 1, "type": "heartbeat", "time": float(i), "step": i}) + "\n")
    return run_dir


def write(run_dir: Path, progress: RunProgress | None = None, max_seq: int = 3) -> dict:
    writer = SnapshotWriter(run_dir, interval=10.0)
    offset = (run_dir / "metrics.jsonl").stat().st_size
    assert writer.maybe_write(
        0.0,
        engine=FakeEngine(),
        progress=progress or RunProgress(verdicts=2),
        offset=offset,
        max_seq=max_seq,
        unacked=[3, 2],
        wall_time=5.0,
    )
    return json.loads((run_dir / "snapshot.json").read_text())


def history(verdicts: int = 2, max_seq: int = 3) -> ControlHistory:
    return ControlHistory(max_seq=max_seq, verdicts=verdicts)


def test_writer_writes_at_most_every_interval_and_only_news(tmp_path):
    run_dir = make_run_dir(tmp_path)
    writer = SnapshotWriter(run_dir, interval=10.0)
    size = (run_dir / "metrics.jsonl").stat().st_size
    kw = dict(engine=FakeEngine(), progress=RunProgress(), max_seq=0, unacked=[], wall_time=0.0)
    assert not writer.maybe_write(0.0, offset=0, **kw)  # nothing read yet
    assert writer.maybe_write(0.0, offset=size, **kw)
    assert not writer.maybe_write(5.0, offset=size, **kw)  # too soon
    assert not writer.maybe_write(20.0, offset=size, **kw)  # nothing new
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(dumps({"v": 1, "type": "heartbeat", "time": 9.0, "step": 9}) + "\n")
    assert writer.maybe_write(20.0, offset=(run_dir / "metrics.jsonl").stat().st_size, **kw)
    assert writer.written == 2 and (run_dir / "snapshot.json").stat().st_mode & 0o777 == 0o600
    assert not SnapshotWriter(run_dir, interval=0).maybe_write(100.0, offset=size, **kw)  # 0: never


def test_writer_survives_a_refusing_disk(tmp_path):
    run_dir = make_run_dir(tmp_path)
    (run_dir / "config.json").unlink()  # unreadable config: the snapshot is skipped, never raised
    writer = SnapshotWriter(run_dir, interval=1.0)
    assert not writer.maybe_write(
        0.0, engine=FakeEngine(), progress=RunProgress(), offset=10, max_seq=0, unacked=[], wall_time=0.0
    )
    assert writer.error and "config.json" in writer.error


def test_a_fitting_snapshot_is_loaded(tmp_path):
    run_dir = make_run_dir(tmp_path)
    written = write(run_dir)
    snap, how = load_snapshot(run_dir, history())
    assert snap is not None and how == "snapshot of 0 record(s)"
    assert (snap.offset, snap.engine, snap.unacked, snap.max_seq) == (written["offset"], {"x": 1}, [2, 3], 3)
    records, end = read_records(run_dir / "metrics.jsonl", start=snap.offset)
    assert records == [] and end == snap.offset


@pytest.mark.parametrize(
    "spoil, why",
    [
        (lambda d: (d / "snapshot.json").unlink(), "no snapshot"),
        (lambda d: (d / "config.json").write_text('{"policy": [1]}\n'), "config.json changed"),
        (lambda d: (d / "metrics.jsonl").write_text(""), "not the file the snapshot was taken of"),
        (
            lambda d: (d / "metrics.jsonl").write_text(
                (d / "metrics.jsonl").read_text().replace('"step":4', '"step":5')
            ),
            "not the file the snapshot was taken of",
        ),
        (lambda d: (d / "snapshot.json").write_text("{"), "snapshot unreadable"),
        (lambda d: (d / "snapshot.json").write_text('{"snapshot": 99}'), "snapshot version 99"),
        (
            lambda d: (d / "snapshot.json").write_text(
                (d / "snapshot.json").read_text().replace('"offset": ', '"offset": -')
            ),
            "snapshot unreadable",
        ),
    ],
)
def test_a_snapshot_that_does_not_fit_is_refused_with_a_reason(tmp_path, spoil, why):
    run_dir = make_run_dir(tmp_path)
    write(run_dir)
    spoil(run_dir)
    snap, how = load_snapshot(run_dir, history())
    assert snap is None and why in how


def test_a_snapshot_ahead_of_control_jsonl_is_refused(tmp_path):
    run_dir = make_run_dir(tmp_path)
    write(run_dir, RunProgress(verdicts=4), max_seq=3)
    assert load_snapshot(run_dir, history(verdicts=3, max_seq=3))[0] is None  # verdict lines lost
    write(run_dir, RunProgress(verdicts=2), max_seq=5)
    snap, how = load_snapshot(run_dir, history(verdicts=2, max_seq=4))
    assert snap is None and "less than the snapshot knows was sent" in how


def test_appended_lines_after_the_snapshot_are_read_from_its_offset(tmp_path):
    run_dir = make_run_dir(tmp_path)
    write(run_dir)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(dumps({"v": 1, "type": "heartbeat", "time": 9.0, "step": 9}) + "\n" + '{"v":1,"type":"hea')
    snap, _ = load_snapshot(run_dir, history())
    records, end = read_records(run_dir / "metrics.jsonl", start=snap.offset)
    assert [r.step for r in records] == [9] and end == (run_dir / "metrics.jsonl").stat().st_size - len(
        b'{"v":1,"type":"hea'
    )
