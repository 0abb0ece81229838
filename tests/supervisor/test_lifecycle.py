"""Lifecycle state machine: every edge, with a fake clock and a fake spawner (no processes)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from lrsup.supervisor.lifecycle import EXIT_INTERRUPTED, Lifecycle, State, StopPhase, describe_returncode
from lrsup.supervisor.protocol import EndRecord, EpochRecord, StartRecord
from tests.fakes import FakeClock, FakeSpawner

ARGV = ["python", "-m", "launcher", "train.py"]
START = StartRecord(pid=4242, optimizer="SGD", lr=0.1, epochs=5)


def started(spawner: FakeSpawner | None = None, grace: float = 10.0) -> tuple[Lifecycle, FakeSpawner]:
    spawner = spawner or FakeSpawner()
    life = Lifecycle(spawner, grace=grace)
    life.start(ARGV, {"A": "1"}, Path("/tmp"))
    return life, spawner


def events(life: Lifecycle) -> list[str]:
    return [event.name for event in life.pop_events()]


def test_start_spawns_through_the_seam_and_stays_starting():
    life, spawner = started()
    assert spawner.spawned[0][0] == ARGV and spawner.spawned[0][1] == {"A": "1"}
    assert life.state is State.STARTING
    assert life.pop_events() == [("spawned", "trainer pid 4242", State.STARTING)]
    assert life.transition(0.0) is State.STARTING


def test_start_record_moves_to_running_once():
    life, _ = started()
    life.pop_events()
    life.on_record(START)
    assert life.state is State.RUNNING
    (event,) = life.pop_events()
    assert event.name == "started" and "SGD" in event.detail and "lr=0.1" in event.detail
    assert event.state is State.RUNNING
    life.on_record(START)  # a second fit: no edge
    assert life.pop_events() == []


@pytest.mark.parametrize(
    "returncode, state, status, reason",
    [
        (0, State.EXITED, 0, "trainer exited with status 0"),
        (3, State.FAILED, 3, "trainer exited with status 3"),
        (-signal.SIGKILL, State.FAILED, 137, "trainer killed by signal SIGKILL (9)"),
        (-signal.SIGSEGV, State.FAILED, 128 + signal.SIGSEGV, "trainer killed by signal SIGSEGV"),
    ],
)
def test_exit_sets_state_and_status(returncode, state, status, reason):
    life, spawner = started()
    life.on_record(START)
    spawner.handle.exit(returncode)
    assert life.transition(1.0) is state
    assert life.state.done
    assert life.outcome().status == status
    assert reason in life.outcome().reason
    assert events(life)[-1] == "trainer_exited"


def test_exit_while_starting():
    life, spawner = started()
    spawner.handle.exit(0)
    life.transition(0.0)
    assert life.state is State.EXITED
    assert life.outcome().reason == "trainer exited with status 0 without starting training"


@pytest.mark.parametrize(
    "end_reason, expected",
    [("completed", "training completed"), ("stopped", "training stopped early by a policy")],
)
def test_end_record_drained_after_exit_names_the_reason(end_reason, expected):
    life, spawner = started()
    life.on_record(START)
    spawner.handle.exit(0)
    life.transition(1.0)
    life.on_record(EndRecord(reason=end_reason, epoch=3, step=40))  # drained after the exit
    assert life.state is State.EXITED
    assert (life.outcome().status, life.outcome().reason) == (0, expected)


def test_crash_reports_exception_end():
    life, spawner = started()
    life.on_record(START)
    life.on_record(EndRecord(reason="exception", epoch=1, step=3))
    spawner.handle.exit(1)
    life.transition(0.0)
    assert life.outcome().status == 1
    assert life.outcome().reason == "trainer exited with status 1 (training raised an exception)"


@pytest.mark.parametrize(
    "error, status", [(FileNotFoundError(2, "No such file or directory"), 127), (PermissionError(13, "Denied"), 126)]
)
def test_failure_to_start(error, status):
    life, _ = started(FakeSpawner(fail=error))
    assert life.state is State.FAILED
    assert life.handle is None
    assert life.outcome().status == status
    assert "trainer failed to start" in life.outcome().reason and "'python'" in life.outcome().reason
    assert events(life) == ["failed_to_start"]
    life.request_stop(1.0)  # nothing to stop
    assert life.transition(2.0) is State.FAILED


def test_user_stop_forwards_sigint_and_exits_130():
    life, spawner = started(FakeSpawner(exit_on={signal.SIGINT: 1}))
    life.on_record(START)
    life.pop_events()
    life.request_stop(5.0)
    assert spawner.handle.signals == [signal.SIGINT]
    assert spawner.handle.group_signals == []
    assert life.state is State.STOPPING
    life.transition(5.1)
    assert life.state is State.FAILED  # the trainer died of its KeyboardInterrupt
    assert life.outcome().status == EXIT_INTERRUPTED
    assert life.outcome().reason.startswith("interrupted by the user; trainer exited with status 1")
    assert events(life) == ["stop_requested", "signal", "trainer_exited"]


def test_user_stop_with_clean_exit_is_still_130():
    life, spawner = started(FakeSpawner(exit_on={signal.SIGINT: 0}))
    life.request_stop(0.0, "interrupted by the user (SIGTERM)")
    life.transition(0.0)
    assert life.state is State.EXITED
    assert life.outcome().status == 130
    assert "SIGTERM" in life.outcome().reason


def test_stop_escalates_sigint_then_sigterm_then_sigkill_on_the_clock():
    clock = FakeClock()
    life, spawner = started(grace=10.0)
    handle = spawner.handle
    life.on_record(START)
    life.request_stop(clock.monotonic())
    assert life.phase is StopPhase.INTERRUPT and handle.signals == [signal.SIGINT]
    clock.advance(9.9)
    life.transition(clock.monotonic())
    assert handle.group_signals == []  # still within grace
    clock.advance(0.1)
    life.transition(clock.monotonic())
    assert life.phase is StopPhase.TERMINATE and handle.group_signals == [signal.SIGTERM]
    clock.advance(9.0)
    life.transition(clock.monotonic())
    assert handle.group_signals == [signal.SIGTERM]
    clock.advance(1.0)
    life.transition(clock.monotonic())
    assert life.phase is StopPhase.KILL and handle.group_signals == [signal.SIGTERM, signal.SIGKILL]
    assert life.state is State.STOPPING  # the kill is noticed on the next tick
    life.transition(clock.monotonic())
    assert life.state is State.FAILED
    assert life.outcome().status == 130
    assert "SIGKILL" in life.outcome().reason
    assert handle.signals == [signal.SIGINT]  # only the trainer itself got SIGINT


def test_second_request_escalates_immediately():
    life, spawner = started(grace=30.0)
    life.request_stop(0.0)
    life.request_stop(0.5)
    assert spawner.handle.group_signals == [signal.SIGTERM]
    life.request_stop(0.6)
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL]
    spawner.handle.returncode = None  # pretend the kill has not landed yet
    spawner.handle.group_members = 1
    life.request_stop(0.7)  # nothing left to escalate to
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL]
    assert life.state is State.STOPPING


def test_stop_after_exit_does_nothing():
    life, spawner = started()
    spawner.handle.exit(0)
    life.transition(0.0)
    life.request_stop(1.0)
    assert spawner.handle.signals == [] and life.state is State.EXITED
    assert life.outcome().status == 0


def test_exit_during_grace_cancels_escalation():
    life, spawner = started(grace=1.0)
    life.request_stop(0.0)
    spawner.handle.exit(0)
    life.transition(0.5)
    life.transition(100.0)
    assert spawner.handle.group_signals == []
    assert life.state is State.EXITED


def test_terminate_during_a_user_stop_keeps_escalating_from_where_it_is():
    life, spawner = started(grace=5.0)
    life.request_stop(0.0)
    life.transition(5.0)  # SIGTERM already sent
    life.terminate(6.0, "supervisor error")
    assert spawner.handle.group_signals == [signal.SIGTERM]  # not sent twice
    life.transition(10.0)
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL]
    assert life.stop_reason == "interrupted by the user"


def test_terminate_skips_sigint_then_kills_after_grace():
    life, spawner = started(grace=2.0)
    life.on_record(START)
    life.terminate(0.0, "supervisor error")
    assert spawner.handle.signals == [] and spawner.handle.group_signals == [signal.SIGTERM]
    life.transition(2.0)
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL]
    life.transition(2.0)
    assert life.state is State.FAILED
    assert life.outcome().status == 137  # not the user's 130: nobody pressed Ctrl-C


def test_records_after_exit_do_not_move_the_state():
    life, spawner = started()
    spawner.handle.exit(2)
    life.transition(0.0)
    life.on_record(START)
    life.on_record(EpochRecord(epoch=0, step=1))
    assert life.state is State.FAILED and life.outcome().status == 2


def test_grace_must_be_non_negative():
    with pytest.raises(ValueError, match="grace must be >= 0 seconds, got -1"):
        Lifecycle(FakeSpawner(), grace=-1)


def test_describe_returncode():
    assert describe_returncode(0) == "trainer exited with status 0"
    assert describe_returncode(-2) == "trainer killed by signal SIGINT (2)"
    assert describe_returncode(-200).startswith("trainer killed by signal")
