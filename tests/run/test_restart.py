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


# -- the same crash twice, and a failure after a resume (issue 13 item 4) --------------------------

from lrsup.supervisor.protocol.wire import EndRecord  # noqa: E402
from lrsup.supervisor.run.restart import AttemptPlace, Crash, crash_from_log, parse_traceback  # noqa: E402

TRACEBACK = [
    "Epoch 4/10",
    "Traceback (most recent call last):",
    '  File "/home/ana/proj/train.py", line 21, in <module>',
    "    model.fit(x, y, callbacks=[Buggy()])",
    '  File "/venv/lib/python3.12/site-packages/keras/src/utils/traceback_utils.py", line 122, in error_handler',
    "    raise e.with_traceback(filtered_tb) from None",
    '  File "/home/ana/proj/train.py", line 9, in on_epoch_end',
    '    raise RuntimeError("bug in the script\'s callback at epoch 4")',
    "    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    "RuntimeError: bug in the script's callback at epoch 4 (object at 0x7f3a2b1c9d80)",
    "lrsup agent: a line after it",
]


def place(fit=1, epoch=3) -> AttemptPlace:
    p = AttemptPlace()
    p.on_record(StartRecord(fit=fit, initial_epoch=0))
    p.on_record(EndRecord(reason="exception", epoch=epoch))
    return p


def test_parse_traceback_takes_the_exception_and_the_scripts_innermost_frame():
    exception, frame, lines = parse_traceback(TRACEBACK)
    assert exception == "RuntimeError: bug in the script's callback at epoch 4 (object at 0x?)"  # address masked
    assert frame == 'File "/home/ana/proj/train.py", line 9, in on_epoch_end'  # not keras's frame
    assert lines[0].startswith("Traceback") and lines[-1].startswith("RuntimeError")
    assert parse_traceback(["no traceback here"]) is None


def test_attempt_place_follows_start_epoch_and_end_records():
    p = AttemptPlace()
    assert (p.fit, p.epoch) == (None, None)
    p.on_record(StartRecord(fit=2, initial_epoch=3))
    p.on_record(EpochRecord(epoch=3, step=10))
    assert (p.fit, p.epoch) == (2, 4)
    p.reset()
    assert crash_from_log(TRACEBACK, p) is None  # died before fit: the fast-failure rule's case


def test_the_same_crash_at_the_same_epoch_twice_gives_up_at_once():
    policy = RestartPolicy(max_restarts=50)
    crash = crash_from_log(TRACEBACK, place())
    assert crash is not None and crash.where == "in epoch 4 of fit 1"
    first = policy.on_failure(0.0, reached_epoch=True, crash=crash)
    assert not first.give_up and first.repeated is None
    # The restarted attempt resumed at epoch 4 and died there again, before its first epoch record.
    again = policy.on_failure(1.0, reached_epoch=False, crash=crash_from_log(TRACEBACK, place()), resumed=True)
    assert again.give_up and again.repeated == crash
    assert again.reason.startswith("the same crash twice, in epoch 4 of fit 1: RuntimeError: bug in the script's")
    assert "before its first epoch" not in again.reason


def test_a_different_exception_or_epoch_is_not_the_same_crash():
    policy = RestartPolicy(max_restarts=50)
    assert not policy.on_failure(0.0, reached_epoch=True, crash=crash_from_log(TRACEBACK, place(epoch=3))).give_up
    assert not policy.on_failure(1.0, reached_epoch=True, crash=crash_from_log(TRACEBACK, place(epoch=5))).give_up
    other = Crash("ValueError: x", 'File "train.py", line 9, in on_epoch_end', 1, 3)
    assert not policy.on_failure(2.0, reached_epoch=True, crash=other).give_up
    assert not policy.on_failure(3.0, reached_epoch=True, crash=crash_from_log(TRACEBACK, place(fit=2))).give_up


def test_the_same_crash_on_a_full_disk_is_restarted_within_the_budget():
    policy = RestartPolicy(max_restarts=50)
    crash = crash_from_log(TRACEBACK, place())
    policy.on_failure(0.0, reached_epoch=True, crash=crash, disk_full="disk full")
    assert not policy.on_failure(1.0, reached_epoch=True, crash=crash, disk_full="disk full").give_up


def test_failing_twice_in_the_first_epoch_after_a_resume_says_so():
    policy = RestartPolicy(max_restarts=50)
    policy.on_failure(0.0, reached_epoch=True)  # trained some epochs, then died without a traceback
    assert not policy.on_failure(1.0, reached_epoch=False, resumed=True).give_up
    verdict = policy.on_failure(2.0, reached_epoch=False, resumed=True)
    assert verdict.give_up and "in the first epoch after resuming from a checkpoint" in verdict.reason
    assert "before its first epoch" not in verdict.reason


# -- what a restarted attempt gets: the LR lrsup last decided, and only meaningful re-sends ---------

from lrsup.supervisor.protocol.commands import (  # noqa: E402
    ClearScheduleCommand,
    RollbackCommand,
    ScaleLRCommand,
    SetLRCommand,
    SetScheduleCommand,
    StopCommand,
)
from lrsup.supervisor.run.restart import DecidedLr, moot_after_restart  # noqa: E402

RAMP = SetScheduleCommand({"kind": "exponential_ramp"})


def test_a_restart_trains_at_the_lr_lrsup_last_decided_not_the_checkpoints():
    decided = DecidedLr()
    decided.on_start(StartRecord(fit=1, lr=0.1))
    assert decided.after_restart(StartRecord(fit=1, lr=0.5), None) == []  # lrsup decided nothing: the script's LR
    decided.on_sent(ScaleLRCommand(0.5), 0.05, probing=False, lr_before=0.1)
    # The checkpoint restored was taken before the cut was applied: bring the cut back.
    assert decided.after_restart(StartRecord(fit=1, lr=0.1), None) == [SetLRCommand(0.05)]
    assert decided.after_restart(StartRecord(fit=1, lr=0.05), None) == []
    assert decided.after_restart(StartRecord(fit=2, lr=0.3), None) == []  # another fit: nothing decided there


def test_a_checkpoint_taken_inside_an_experiment_never_sets_the_restarts_lr():
    decided = DecidedLr()
    decided.on_start(StartRecord(fit=1, lr=0.001))
    decided.on_sent(RAMP, None, probing=True, lr_before=0.001)  # the range test's ramp
    # The restored checkpoint carries the ramp (multiplier 1.0) at LR 0.0178: off with it, back to 0.001.
    assert decided.after_restart(StartRecord(fit=1, lr=0.0178), 1.0) == [ClearScheduleCommand(), SetLRCommand(0.001)]
    decided.on_sent(RollbackCommand("lr_find-0", lr=0.0115), 0.0115, probing=False, lr_before=0.5)
    assert decided.after_restart(StartRecord(fit=1, lr=0.0178), None) == [SetLRCommand(0.0115)]
    decided.on_sent(SetScheduleCommand({"kind": "cosine"}), None, probing=False, lr_before=0.0115)
    assert decided.after_restart(StartRecord(fit=1, lr=0.0178), None) == []  # a schedule of lrsup's owns the LR


def test_only_meaningful_commands_are_resent_after_a_restart():
    known = {"epoch-0003", "lr_find-0"}
    assert "no longer exists" in moot_after_restart(RollbackCommand("step-0000000", lr=0.1), known)
    assert moot_after_restart(RollbackCommand("epoch-0003", lr=0.1), known) is None
    assert moot_after_restart(RollbackCommand("epoch-0009", from_run="/runs/peer"), known) is None  # a PBT donor's
    assert "schedule" in moot_after_restart(RAMP, known)
    assert moot_after_restart(SetLRCommand(0.1), known) is None and moot_after_restart(StopCommand(), known) is None
    # The restart sets the LR lrsup last decided itself: an LR change in flight is not applied on top.
    assert "the restart sets the LR" in moot_after_restart(ScaleLRCommand(0.5), known, lr_set=True)
    assert moot_after_restart(RollbackCommand("epoch-0003", lr=0.1), known, lr_set=True) is None
    assert moot_after_restart(SetLRCommand(0.1), known, lr_set=True) is None  # re-sent as it was (same LR)
