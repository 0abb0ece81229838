"""A full disk, the supervisor's side (issue 17, item 5): the give-up names the disk, supervisor.json
never stays "running", the last writes and the report wait for space instead of dying."""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest

from lrsup.supervisor.run.restart import RestartPolicy
from lrsup.supervisor.run.space import disk_full, wait_for_space
from tests.fakes import FakeClock
from tests.faults.conftest import BASE_TOML, FAULT, LRSUP, trainer_pids


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB tmpfs, nearly filled by ``filler`` (needs root and CAP_SYS_ADMIN: skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (not root?)")
    try:
        (mount / "filler").write_bytes(b"\0" * (1024 * 1024 - 96 * 1024))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_run_given_up_on_a_full_disk_says_so_and_ends_in_supervisor_json(tiny_disk, tmp_path, procs):
    (tmp_path / "lrsup.toml").write_text(BASE_TOML)
    run_dir = tiny_disk / "r"
    proc = subprocess.Popen(
        [*LRSUP, "run", "--run-dir", str(run_dir), str(FAULT), "--", "--epochs", "400", "--steps", "20"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    procs.popens.append(proc)
    procs.add(proc.pid)
    bound = threading.Timer(120, proc.kill)
    bound.start()
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "waits for space" in line:
                (tiny_disk / "filler").unlink()  # space is back: the last writes go through
        proc.wait()
    finally:
        bound.cancel()
    procs.add(*trainer_pids(run_dir))
    err = "".join(lines)
    assert proc.returncode == 3, err
    state = json.loads((run_dir / "supervisor.json").read_text())
    assert state["state"] == "fatal" and state["exit_status"] == 3, state
    assert "disk is full" in state["reason"] and "before its first epoch" not in state["reason"]
    assert "lrsup: report: " in err
    assert (run_dir / "report.md").exists() and not [n for n in os.listdir(run_dir) if n.endswith(".tmp")]
    finished = [json.loads(x) for x in (run_dir / "journal.jsonl").read_text().splitlines() if '"finished"' in x]
    assert finished and finished[-1]["status"] == 3


def test_failures_on_a_full_disk_are_not_a_program_that_cannot_start():
    policy = RestartPolicy(max_restarts=3, window=3600, base=1, cap=1)
    verdicts = [policy.on_failure(float(t), reached_epoch=False, disk_full="the disk is full") for t in range(4)]
    assert [v.give_up for v in verdicts] == [False, False, False, True]
    assert all(v.reason.startswith("the disk is full; ") for v in verdicts)
    assert "before its first epoch" not in verdicts[-1].reason
    fresh = RestartPolicy(max_restarts=3, window=3600, base=1, cap=1)
    assert [fresh.on_failure(float(t), reached_epoch=False).give_up for t in range(2)] == [False, True]


def test_wait_for_space_retries_until_written_or_the_limit(tmp_path):
    clock, said, tries = FakeClock(), [], []

    def write() -> bool:
        tries.append(clock.monotonic())
        return len(tries) >= 3

    assert wait_for_space(write, clock, limit=60, say=said.append) and len(tries) == 3
    assert len(said) == 1 and "waits for space" in said[0]
    assert not wait_for_space(lambda: False, clock, limit=10, say=said.append)
    assert disk_full(tmp_path) is None  # pytest's temporary directory is not full
