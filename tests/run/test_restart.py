"""RestartPolicy (backoff, window, fast failures) and Watchdog (hang, stall) on a fake clock."""

from __future__ import annotations

import pytest

from lrsup.supervisor.protocol.wire import AckRecord, BatchRecord, EpochRecord, HeartbeatRecord, StartRecord
from lrsup.supervisor.run.restart import RestartPolicy, Watchdog
from lrsup.supervisor.rundir.progress import RunProgress


def test_backoff_doubles_up_to_the_cap_and_the_budget_is_per_window():
    policy = RestartPolicy(max_restarts=4, window=100.0, base=5.0, cap=12.0)
    delays = [policy.on_failure(t, reached_epoch=True).delay for t in (0.0, 1.0, 2.0, 3.0)]
    assert delays == [5.0, 10.0, 12.0, 12.0]
    verdict = policy.on_failure(4.0, reached_epoch=True)
    assert verdict.give_up and verdict.reason == "4 restarts within 100 s (max_restarts = 4); giving up"
    later = policy.on_failure(102.5, reached_epoch=True)  # the first three restarts left the window
    assert not later.give_up and later.delay == 5.0 * 2 and "restart 2 of at most 4" in later.reason


def test_two_fast_failures_in_a_row_give_up_at_once_but_progress_resets_the_count():
    policy = RestartPolicy(max_restarts=50)
    assert not policy.on_failure(0.0, reached_epoch=False).give_up
    assert not policy.on_failure(1.0, reached_epoch=True).give_up  # progress in between
    assert not policy.on_failure(2.0, reached_epoch=False).give_up
    verdict = policy.on_failure(3.0, reached_epoch=False)
    assert verdict.give_up and "failed before its first epoch 2 times in a row" in verdict.reason


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_restarts": -1}, "max_restarts must be >= 0, got -1"),
        ({"window": 0}, "restart_window must be > 0 seconds, got 0"),
        ({"base": 0}, "backoff_base must be > 0 seconds, got 0"),
        ({"base": 10, "cap": 5}, "backoff_cap must be >= backoff_base (10), got 5"),
    ],
)
def test_policy_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError) as info:
        RestartPolicy(**kwargs)
    assert str(info.value) == message


def test_watchdog_hang_needs_silence_for_hang_timeout():
    dog = Watchdog(hang_timeout=10.0, stall_timeout=100.0)
    assert dog.check(1000.0) is None  # nothing is timed before the start record
    dog.on_record(StartRecord(pid=1), 0.0)
    dog.on_record(HeartbeatRecord(step=0), 9.0)
    assert dog.check(19.0) is None
    assert dog.check(19.5).startswith("trainer hung: no record or heartbeat for 10 s (hang_timeout = 10 s)")


def test_watchdog_stall_starts_at_the_first_batch_and_counts_only_larger_steps():
    dog = Watchdog(hang_timeout=10.0, stall_timeout=30.0)
    dog.on_record(StartRecord(pid=1, step=0), 0.0)
    for t in range(5, 100, 5):  # compiling the first batch for 100 s, heartbeats going: not a stall
        dog.on_record(HeartbeatRecord(step=0), float(t))
    assert dog.check(100.0) is None
    dog.on_record(BatchRecord(epoch=0, batch=0, step=1), 100.0)
    for t in range(105, 135, 5):  # heartbeats, acks, but the same step
        dog.on_record(HeartbeatRecord(step=1) if t % 2 else AckRecord(seq=1, cmd="set_lr", step=1), float(t))
    assert dog.check(130.0) is None
    assert dog.check(131.0).startswith("trainer stalled: no step progress past step 1 for 31 s")


def test_a_slow_trainer_whose_steps_keep_coming_is_never_killed():
    dog = Watchdog(hang_timeout=10.0, stall_timeout=30.0)
    dog.on_record(StartRecord(pid=1), 0.0)
    dog.on_record(EpochRecord(epoch=0, step=1), 1.0)
    for i in range(1, 200):  # one step every 25 s, a heartbeat every 5 s
        t = 1.0 + 5 * i
        dog.on_record(HeartbeatRecord(step=1 + i // 5), t)
        assert dog.check(t + 4.9) is None


def test_reset_and_arm():
    dog = Watchdog(hang_timeout=10.0, stall_timeout=30.0)
    dog.on_record(StartRecord(pid=1), 0.0)
    dog.reset()
    assert dog.check(100.0) is None
    dog.arm(100.0, RunProgress(started=True, progressed=True, max_step=40))
    assert dog.check(131.0).startswith("trainer hung")
    with pytest.raises(ValueError, match="hang_timeout must be > 0 seconds, got 0"):
        Watchdog(hang_timeout=0)
