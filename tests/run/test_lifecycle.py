"""Lifecycle state machine: every edge, with a fake clock and a fake spawner (no processes)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from lrsup.supervisor.protocol.wire import EndRecord, EpochRecord, StartRecord
from lrsup.supervisor.run.lifecycle import EXIT_INTERRUPTED, Lifecycle, RunExit, State, StopPhase, describe_returncode
from tests.fakes import FakeClock, FakeSpawner, feed

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
    feed(life, START)
    assert life.state is State.RUNNING
    (event,) = life.pop_events()
    assert event.name == "started" and "SGD" in event.detail and "lr=0.1" in event.detail
    assert event.state is State.RUNNING
    feed(life, START)  # a second fit: no edge
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
    feed(life, START)
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
    feed(life, START)
    spawner.handle.exit(0)
    life.transition(1.0)
    feed(life, EndRecord(reason=end_reason, epoch=3, step=40))  # drained after the exit
    assert life.state is State.EXITED
    assert (life.outcome().status, life.outcome().reason) == (0, expected)


def test_crash_reports_exception_end():
    life, spawner = started()
    feed(life, START)
    feed(life, EndRecord(reason="exception", epoch=1, step=3))
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
    feed(life, START)
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
    feed(life, START)
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
    feed(life, START)
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
    feed(life, START)
    feed(life, EpochRecord(epoch=0, step=1))
    assert life.state is State.FAILED and life.outcome().status == 2


def test_grace_must_be_non_negative():
    with pytest.raises(ValueError, match="grace must be >= 0 seconds, got -1"):
        Lifecycle(FakeSpawner(), grace=-1)


def test_describe_returncode():
    assert describe_returncode(0) == "trainer exited with status 0"
    assert describe_returncode(-2) == "trainer killed by signal SIGINT (2)"
    assert describe_returncode(-200).startswith("trainer killed by signal")


# -- restarts: BACKOFF and FATAL ---------------------------------------------------------

from lrsup.supervisor.run.lifecycle import EXIT_FATAL, EXIT_UNKNOWN  # noqa: E402
from lrsup.supervisor.run.restart import RestartPolicy  # noqa: E402


def restartable(max_restarts: int = 3, base: float = 5.0, drain=None) -> tuple[Lifecycle, FakeSpawner, list]:
    spawner = FakeSpawner(exit_on={signal.SIGTERM: -signal.SIGTERM})
    envs: list[int] = []

    def env_for(attempt: int) -> dict:
        envs.append(attempt)
        return {"LRSUP_ATTEMPT": str(attempt)}

    life = Lifecycle(
        spawner,
        grace=2.0,
        restart=RestartPolicy(max_restarts, 3600.0, base, 60.0),
        env_for_attempt=env_for,
        drain=drain,
    )
    life.start(ARGV, {}, Path("/tmp"), now=0.0)
    return life, spawner, envs


def test_crash_after_progress_backs_off_then_restarts_on_the_clock():
    life, spawner, envs = restartable()
    feed(life, START)
    feed(life, EpochRecord(epoch=0, step=10))
    spawner.handle.exit(1, leave_children=1)
    assert life.transition(100.0) is State.BACKOFF
    assert spawner.spawned[0][3].group_signals == [signal.SIGKILL]  # leftovers of the dead attempt
    assert life.transition(104.9) is State.BACKOFF and len(spawner.spawned) == 1
    assert life.transition(105.0) is State.STARTING
    assert len(spawner.spawned) == 2 and spawner.spawned[1][1] == {"LRSUP_ATTEMPT": "2"} and envs == [1, 2]
    assert spawner.spawned[0][3].closed  # the old attempt's output is no longer followed
    names = events(life)
    assert names[-4:] == ["trainer_exited", "backoff", "restarting", "spawned"] or names[-3:] == [
        "backoff",
        "restarting",
        "spawned",
    ]
    assert life.attempt == 2 and life.restarts == 1 and life.time_lost == pytest.approx(105.0)


def test_two_fast_failures_are_fatal_with_status_3():
    life, spawner, _ = restartable()
    spawner.handle.exit(1)
    assert life.transition(1.0) is State.BACKOFF
    life.transition(10.0)
    spawner.handle.exit(1)
    assert life.transition(11.0) is State.FATAL
    outcome = life.outcome()
    assert outcome.status == EXIT_FATAL == 3
    assert outcome.reason.startswith(
        "gave up after 1 restart(s): trainer exited with status 1; the trainer "
        "failed before its first epoch 2 times in a row"
    )


def test_restarts_used_up_is_fatal():
    life, spawner, _ = restartable(max_restarts=1)
    for now in (0.0, 100.0):
        feed(life, EpochRecord(epoch=0, step=1))
        spawner.handle.exit(-9)
        life.transition(now + 1)
        life.transition(now + 50)
    assert life.state is State.FATAL and "1 restarts within 3600 s (max_restarts = 1)" in life.fatal_reason


def test_clean_end_with_nonzero_status_passes_through_without_restart():
    drained = []
    life, spawner, _ = restartable(drain=lambda: (drained.append(1), feed(life, EndRecord(reason="completed"))))
    spawner.handle.exit(4)
    assert life.transition(1.0) is State.FAILED and drained == [1]  # the end record was read first
    assert life.outcome().status == 4


def test_kill_of_a_hung_trainer_escalates_then_takes_the_restart_path():
    life, spawner, _ = restartable()
    spawner.exit_on = {}
    feed(life, START)
    spawner.handle.exit_on = {}
    life.kill(10.0, "trainer hung: no record")
    assert life.state is State.STOPPING and spawner.handle.group_signals == [signal.SIGTERM]
    life.transition(12.0)  # grace 2 s: SIGKILL
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL]
    assert life.transition(12.1) is State.BACKOFF
    assert "killing" in [e for e in events(life)]


def test_graceful_operator_stop_is_forced_after_its_timeout_and_not_restarted():
    life, spawner, _ = restartable()
    spawner.handle.exit_on = {}
    feed(life, START)
    life.request_graceful_stop(0.0, "stopped by ana@gpu3", timeout=30.0)
    assert life.state is State.STOPPING and life.phase is StopPhase.COMMAND
    assert life.transition(29.0) is State.STOPPING and spawner.handle.group_signals == []
    life.transition(30.0)
    assert spawner.handle.group_signals == [signal.SIGTERM]
    spawner.handle.exit(0)
    assert life.transition(31.0) is State.EXITED
    assert life.outcome() == RunExit(0, "stopped by ana@gpu3")


def test_stop_during_backoff():
    life, spawner, _ = restartable()
    feed(life, EpochRecord(epoch=0, step=1))
    spawner.handle.exit(1)
    life.transition(1.0)
    life.request_stop(2.0, "interrupted by the user (SIGINT)")
    assert life.state is State.FAILED and life.outcome().status == EXIT_INTERRUPTED
    assert life.transition(100.0) is State.FAILED and len(spawner.spawned) == 1


def test_attached_trainer_vanishing_without_end_record_is_restarted():
    life, spawner, _ = restartable()

    class Gone:
        pid, exit_unknown, closed = 77, True, False

        def poll(self):
            return 0

        def signal_group(self, sig):
            return False

        def close(self, timeout=5.0):
            self.closed = True

    life2 = Lifecycle(spawner, restart=RestartPolicy(), grace=1.0)
    life2.set_command(ARGV, {}, Path("/tmp"))
    life2.attach(Gone(), 0.0)
    feed(life2, EpochRecord(epoch=3, step=40))
    assert life2.transition(1.0) is State.BACKOFF and life2.returncode == EXIT_UNKNOWN


def test_park_ends_the_trainer_then_waits_with_no_trainer_until_unpark_and_counts_no_restart():
    life, spawner, envs = restartable(max_restarts=1)
    spawner.handle.exit_on = {}
    feed(life, START)
    feed(life, EpochRecord(epoch=0, step=10))
    life.park(10.0, "parked by lrsup-pbt (population g: 2 members waiting)")
    assert life.state is State.STOPPING and spawner.handle.group_signals == [signal.SIGTERM]
    spawner.handle.exit(-15)
    assert life.transition(10.5) is State.PARKED
    assert life.transition(10_000.0) is State.PARKED and len(spawner.spawned) == 1  # no backoff clock: waits
    names = events(life)
    assert "parking" in names and names[-1] == "parked" and "backoff" not in names
    life.park(10_001.0, "again")  # nothing to park
    life.unpark(10_002.0, "unparked by lrsup-queue")
    assert life.state is State.STARTING and len(spawner.spawned) == 2 and envs == [1, 2]
    assert events(life)[-2:] == ["unparked", "spawned"]
    assert life.restarts == 0 and life.turns == 1  # a turn is not a restart: max_restarts 1 is all left
    feed(life, START)
    feed(life, EpochRecord(epoch=1, step=20))
    spawner.handle.exit(1)  # a real crash after the turn: the one restart it has
    assert life.transition(10_100.0) is State.BACKOFF and life.restarts == 1


def test_a_trainer_that_ends_its_training_while_being_parked_just_ends():
    drained = []
    life, spawner, _ = restartable(drain=lambda: (drained.append(1), feed(life, EndRecord(reason="completed"))))
    spawner.handle.exit_on = {}
    feed(life, START)
    life.park(1.0, "parked")
    spawner.handle.exit(0)
    assert life.transition(2.0) is State.EXITED and life.outcome().status == 0


def test_stop_and_terminate_of_a_parked_run_end_it_with_no_trainer_to_signal():
    for verb, final in (("graceful", State.EXITED), ("stop", State.FAILED), ("terminate", State.FAILED)):
        life, spawner, _ = restartable()
        spawner.handle.exit_on = {}
        feed(life, START)
        life.park(1.0, "parked")
        spawner.handle.exit(-15)
        assert life.transition(2.0) is State.PARKED
        if verb == "graceful":
            life.request_graceful_stop(3.0, "stopped by ana", timeout=30.0)
        elif verb == "stop":
            life.request_stop(3.0, "interrupted by the user (SIGTERM)")
        else:
            life.terminate(3.0, "the supervisor failed")
        assert life.state is final and len(spawner.spawned) == 1, verb
        life.unpark(4.0, "too late")
        assert life.state is final and len(spawner.spawned) == 1, verb


def test_a_trainer_that_answers_the_park_sigterm_with_an_end_record_stopped_is_parked():
    life, spawner, _ = restartable(drain=lambda: feed(life, EndRecord(reason="stopped")))
    spawner.handle.exit_on = {}
    feed(life, START)
    life.park(1.0, "parked")
    spawner.handle.exit(-15)
    assert life.transition(2.0) is State.PARKED
