"""``lrsup resume`` continues from snapshot.json instead of replaying the whole run, and falls back when it can't."""

from __future__ import annotations

import json

import pytest

from tests.faults.conftest import BASE_TOML, events, finish, read_jsonl
from tests.faults.test_resume_faults import check_commands_unique, kill_supervisor_mid_run


def resume_to_the_end(workdir, procs, run_dir):
    resumed = procs.resume(workdir, run_dir)
    procs.add(resumed.pid)
    out, err = finish(resumed, 90)
    assert resumed.returncode == 0, out + err
    (event,) = [e for e in events(run_dir) if e["event"] == "resumed"]
    return event


def snapshot_records(run_dir) -> int:
    """How many records snapshot.json covers (0 while there is none or it is being replaced)."""
    try:
        return json.loads((run_dir / "snapshot.json").read_text())["progress"]["records"]
    except (OSError, ValueError, KeyError):
        return 0


def check_plateau_continued(run_dir, epochs: int) -> None:
    control = check_commands_unique(run_dir)
    assert [c["epoch"] for c in control if c["cmd"] == "verdict"] == [-1, *range(epochs)]
    lrs = [c["lr"] for c in control if c["cmd"] == "set_lr"]
    assert lrs and all(b == pytest.approx(a * 0.5) for a, b in zip([0.1] + lrs, lrs))


def test_resume_starts_from_the_snapshot_and_replays_only_what_came_after(workdir, procs):
    (workdir / "lrsup.toml").write_text(BASE_TOML + "snapshot_interval = 0.1\n")
    run_dir, trainer = kill_supervisor_mid_run(
        workdir, procs, "--epochs", "14", "--sleep", "0.03", ready=lambda run_dir: snapshot_records(run_dir) > 10
    )
    snap = json.loads((run_dir / "snapshot.json").read_text())
    covered = snap["progress"]["records"]
    assert covered > 10 and snap["offset"] <= (run_dir / "metrics.jsonl").stat().st_size
    event = resume_to_the_end(workdir, procs, run_dir)
    assert "state from its snapshot of" in event["detail"] and event["snapshot_records"] == covered
    # It replayed fewer records than the run had when the supervisor died.
    assert event["replayed"] < len(read_jsonl(run_dir / "metrics.jsonl")) - covered + 1
    check_plateau_continued(run_dir, 14)


def test_without_snapshots_resume_replays_everything(workdir, procs):
    (workdir / "lrsup.toml").write_text(BASE_TOML + "snapshot_interval = 0\n")
    run_dir, trainer = kill_supervisor_mid_run(workdir, procs, "--epochs", "14", "--sleep", "0.03")
    assert not (run_dir / "snapshot.json").exists()
    event = resume_to_the_end(workdir, procs, run_dir)
    assert "state full replay (no snapshot)" in event["detail"] and event["snapshot_records"] == 0
    check_plateau_continued(run_dir, 14)


def test_a_snapshot_of_another_config_is_not_used(workdir, procs):
    (workdir / "lrsup.toml").write_text(BASE_TOML + "snapshot_interval = 0.1\n")
    run_dir, trainer = kill_supervisor_mid_run(workdir, procs, "--epochs", "14", "--sleep", "0.03")
    snap = json.loads((run_dir / "snapshot.json").read_text())
    snap["config_sha256"] = "0" * 64
    (run_dir / "snapshot.json").write_text(json.dumps(snap))
    event = resume_to_the_end(workdir, procs, run_dir)
    assert "full replay (config.json changed since the snapshot)" in event["detail"]
    check_plateau_continued(run_dir, 14)
