"""``lrsup queue run`` for real: supervisors over the fake trainer, killed and drained daemons."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from tests.queue.night_helpers import (
    NO_POLICIES,
    add,
    entries,
    journal_events,
    kill_runs,
    lrsup,
    overlap,
    start_daemon,
    supervisors_up,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def night(tmp_path: Path):
    (tmp_path / "lrsup.toml").write_text(NO_POLICIES)
    daemons = []
    yield tmp_path, daemons
    for d in daemons:
        if d.poll() is None:
            d.kill()
            d.wait(10)
    kill_runs(tmp_path / "runs")


def test_a_night_with_a_failure_and_adds_while_running(night) -> None:
    cwd, daemons = night
    quick = ["--epochs", "3", "--steps", "3", "--sleep", "0.05"]
    for i in range(3):
        add(cwd, *quick, *(["--exit-code", "1"] if i == 1 else []), name=f"r{i}")
    daemon = start_daemon(cwd, "--slots", "2", "--gpus", "none")
    daemons.append(daemon)
    # Two `queue add` at once while the daemon works: both are run.
    adders = [threading.Thread(target=add, args=(cwd, *quick), kwargs={"name": f"late{i}"}) for i in range(2)]
    for t in adders:
        t.start()
    for t in adders:
        t.join(60)
    out, _ = daemon.communicate(timeout=180)
    assert daemon.returncode == 0, out
    found = entries(cwd)
    assert [e["status"] for e in found] == ["done", "failed", "done", "done", "done"], out
    assert found[1]["exit_status"] == 1
    assert overlap(found) <= 2
    assert all(e["starts"] == 1 and journal_events(e["run_dir"], "spawned") == 1 for e in found)
    assert "daemon_ended: 4 done, 1 failed" in out
    listed = lrsup(cwd, "ls")
    assert listed.returncode == 0 and "q2-r1" in listed.stdout  # an ordinary run directory


def test_kill_9_of_queue_run_then_restart_runs_each_once(night) -> None:
    cwd, daemons = night
    for i in range(4):
        add(cwd, "--epochs", "8", "--steps", "4", "--sleep", "0.1", name=f"r{i}")
    first = start_daemon(cwd, "--slots", "2", "--gpus", "none")
    daemons.append(first)
    wait_for(lambda: supervisors_up(cwd, 2), what="two supervised runs")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = start_daemon(cwd, "--slots", "2", "--gpus", "none")
    daemons.append(second)
    out, _ = second.communicate(timeout=180)
    assert second.returncode == 0, out
    found = entries(cwd)
    assert [e["status"] for e in found] == ["done"] * 4, out
    assert "adopted" in out
    # Exactly once: one supervisor per entry and one trainer start per run.
    assert [e["starts"] for e in found] == [1, 1, 1, 1]
    assert all(journal_events(e["run_dir"], "spawned") == 1 for e in found)


def test_after_a_reboot_in_flight_runs_are_resumed(night) -> None:
    cwd, daemons = night
    for i in range(2):
        add(cwd, "--epochs", "8", "--steps", "4", "--sleep", "0.1", "--checkpoints", name=f"r{i}")
    first = start_daemon(cwd, "--slots", "2", "--gpus", "none")
    daemons.append(first)
    wait_for(lambda: supervisors_up(cwd, 2), what="two supervised runs")
    first.send_signal(signal.SIGKILL)  # the machine goes down: the daemon, supervisors and trainers
    first.wait(10)
    kill_runs(cwd / "runs")
    second = start_daemon(cwd, "--slots", "2", "--gpus", "none")
    daemons.append(second)
    out, _ = second.communicate(timeout=180)
    assert second.returncode == 0, out
    found = entries(cwd)
    assert [e["status"] for e in found] == ["done", "done"], out
    assert [e["starts"] for e in found] == [2, 2]
    assert all(journal_events(e["run_dir"], "resumed") == 1 for e in found)


def test_sigterm_drains(night) -> None:
    cwd, daemons = night
    for i in range(3):
        add(cwd, "--epochs", "200", "--steps", "4", "--sleep", "0.1", name=f"r{i}")
    daemon = start_daemon(cwd, "--slots", "1", "--gpus", "none")
    daemons.append(daemon)
    wait_for(lambda: supervisors_up(cwd, 1), what="a supervised run")
    daemon.send_signal(signal.SIGTERM)
    out, _ = daemon.communicate(timeout=120)
    assert daemon.returncode == 0, out
    found = entries(cwd)
    assert [e["status"] for e in found] == ["cancelled", "queued", "queued"], out
    assert "draining" in out
    assert not supervisors_up(cwd, 1)  # the run was stopped, not left behind


def test_a_second_queue_run_is_refused(night) -> None:
    cwd, daemons = night
    add(cwd, "--epochs", "200", "--steps", "4", "--sleep", "0.1")
    daemon = start_daemon(cwd, "--gpus", "none")
    daemons.append(daemon)
    wait_for(lambda: supervisors_up(cwd, 1), what="a supervised run")
    again = lrsup(cwd, "queue", "run", "--gpus", "none")
    assert again.returncode == 2 and "another lrsup queue run" in again.stderr
    daemon.send_signal(signal.SIGTERM)
    daemon.communicate(timeout=120)
