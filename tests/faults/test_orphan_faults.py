"""No orphan, with real processes: whatever ends the supervisor, the trainer's group goes with it.

The trainer (tests/fakes/fault_trainer.py ``--stubborn-child``) starts a child in its own
process group that ignores SIGINT and SIGTERM, like a data loader that outlives its
parent. Each test ends ``lrsup run`` one way, then asserts that no live process of the
trainer's group is left. Every wait is bounded; every pid is killed in teardown.
"""

from __future__ import annotations

import re
import signal
import time

from lrsup.supervisor.run.process import group_members
from tests.faults.conftest import alive, events, finish, trainer_pids, wait_for


def child_pids(run_dir) -> list[int]:
    try:
        text = (run_dir / "trainer.log").read_text()
    except FileNotFoundError:
        return []
    return [int(m) for m in re.findall(r"^fault: child pid (\d+)", text, re.M)]


def started(procs, workdir, *args: str):
    """``lrsup run`` with a stubborn child in the trainer's group, both pids known and tracked."""
    proc = procs.lrsup_run(workdir, "r", "--stubborn-child", *args)
    procs.add(proc.pid)
    run_dir = workdir / "r"
    trainer = wait_for(lambda: trainer_pids(run_dir), 30, "the trainer to start")[0]
    procs.add(trainer)
    child = wait_for(lambda: child_pids(run_dir), 30, "the stubborn child to start")[0]
    procs.add(child)
    return proc, run_dir, trainer, child


def assert_group_gone(trainer: int, child: int) -> None:
    assert not alive(child), "the stubborn child outlived the supervisor"
    assert not alive(trainer), "the trainer outlived the supervisor"
    assert group_members(trainer) == [], f"processes of group {trainer} left: {group_members(trainer)}"


def test_sigterm_to_lrsup_takes_the_whole_trainer_group_down(workdir, procs):
    proc, run_dir, trainer, child = started(procs, workdir, "--epochs", "500", "--sleep", "0.05")
    wait_for(lambda: any(e["event"] == "started" for e in events(run_dir)), 30, "the start record")
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc, 30)
    assert proc.returncode == 130, out + err
    assert time.monotonic() - began < 15  # grace_period 0.5 s in lrsup.toml: SIGINT, SIGTERM, SIGKILL
    assert_group_gone(trainer, child)
    names = [e["event"] for e in events(run_dir)]
    assert "leftovers_killed" in names and "leftovers_gone" in names and names[-1] == "finished"


def test_sigterm_with_stdout_closed_still_takes_the_group_down(workdir, procs):
    """The incident: the harness reading lrsup's output died, then lrsup got SIGTERM."""
    proc, run_dir, trainer, child = started(procs, workdir, "--epochs", "500", "--sleep", "0.05")
    wait_for(lambda: any(e["event"] == "started" for e in events(run_dir)), 30, "the start record")
    proc.stdout.close()  # lrsup's stdout is now a pipe without a reader: every write fails (EPIPE)
    time.sleep(0.3)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    wait_for(lambda: proc.poll() is not None, 30, "lrsup to exit")
    wait_for(lambda: not alive(child) and not group_members(trainer), 5, "the trainer's group to be gone")
    assert_group_gone(trainer, child)
    pids = trainer_pids(run_dir)
    procs.add(*pids)
    assert pids == [trainer], "a new attempt was started while the supervisor was shutting down"


def test_a_completed_trainer_leaving_a_stubborn_child_is_cleaned_up(workdir, procs):
    proc, run_dir, trainer, child = started(procs, workdir, "--epochs", "2")
    out, err = finish(proc, 30)
    assert proc.returncode == 0, out + err
    assert_group_gone(trainer, child)
    details = {e["event"]: e["detail"] for e in events(run_dir)}
    assert "SIGKILL" in details["leftovers_killed"] and "leftovers_gone" in details


def test_a_second_sigterm_while_stopping_still_leaves_nothing(workdir, procs):
    (workdir / "lrsup.toml").write_text(
        (workdir / "lrsup.toml").read_text().replace("grace_period = 0.5", "grace_period = 3.0")
    )
    proc, run_dir, trainer, child = started(procs, workdir, "--epochs", "500", "--sleep", "0.05")
    wait_for(lambda: any(e["event"] == "started" for e in events(run_dir)), 30, "the start record")
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: any(e["event"] == "leftovers" for e in events(run_dir)), 30, "the leftovers to be seen")
    proc.send_signal(signal.SIGTERM)  # impatient: no need to wait out the 3 s grace
    finish(proc, 30)
    assert time.monotonic() - began < 3.0 + 10
    assert_group_gone(trainer, child)
    killed = next(e["detail"] for e in events(run_dir) if e["event"] == "leftovers_killed")
    assert "asked again to stop" in killed


def test_sigterm_during_backoff_leaves_no_leftover_of_the_dead_attempt(workdir, procs):
    (workdir / "lrsup.toml").write_text(
        (workdir / "lrsup.toml")
        .read_text()
        .replace("backoff_base = 0.2", "backoff_base = 30.0")
        .replace("backoff_cap = 1.0", "backoff_cap = 60.0")
    )
    proc, run_dir, trainer, child = started(procs, workdir, "--epochs", "5", "--die-at-epoch", "1")
    wait_for(lambda: any(e["event"] == "backoff" for e in events(run_dir)), 30, "the backoff")
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc, 30)
    assert proc.returncode == 130, out + err
    assert_group_gone(trainer, child)
    assert len(trainer_pids(run_dir)) == 1  # not restarted
    names = [e["event"] for e in events(run_dir)]
    assert names.index("leftovers") < names.index("backoff")


def session_child_pids(run_dir) -> list[int]:
    try:
        text = (run_dir / "trainer.log").read_text()
    except FileNotFoundError:
        return []
    return [int(m) for m in re.findall(r"^fault: session child pid (\d+)", text, re.M)]


def session_started(procs, workdir, *args: str):
    """``lrsup run`` whose trainer starts a child in a session of its own (outside its group)."""
    proc = procs.lrsup_run(workdir, "r", "--session-child", *args)
    procs.add(proc.pid)
    run_dir = workdir / "r"
    trainer = wait_for(lambda: trainer_pids(run_dir), 30, "the trainer to start")[0]
    procs.add(trainer)
    child = wait_for(lambda: session_child_pids(run_dir), 30, "the session child to start")[0]
    procs.add(child)
    return proc, run_dir, trainer, child


def test_sigterm_stops_a_child_in_its_own_session(workdir, procs):
    """Issue 17 item 12: ``start_new_session=True`` took the child out of the group; it outlived lrsup."""
    proc, run_dir, trainer, child = session_started(procs, workdir, "--epochs", "500", "--sleep", "0.05")
    wait_for(lambda: any(e["event"] == "started" for e in events(run_dir)), 30, "the start record")
    time.sleep(0.8)  # the tree is walked every 0.5 s while the trainer runs
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc, 30)
    assert proc.returncode == 130, out + err
    assert not alive(child), "the child in its own session outlived lrsup"
    assert not alive(trainer)


def test_a_completed_trainer_leaving_a_child_in_its_own_session_is_cleaned_up(workdir, procs):
    proc, run_dir, trainer, child = session_started(procs, workdir, "--epochs", "4", "--sleep", "0.2")
    out, err = finish(proc, 60)
    assert proc.returncode == 0, out + err
    assert not alive(child), "the child in its own session outlived lrsup"
    assert "leftovers_gone" in {e["event"] for e in events(run_dir)}
