"""Lifecycle.terminate (the supervisor itself is going away): the exit it causes is never restarted."""

from __future__ import annotations

import signal
from pathlib import Path

from lrsup.supervisor.protocol.wire import EpochRecord, StartRecord
from lrsup.supervisor.run.lifecycle import Lifecycle, State
from lrsup.supervisor.run.restart import RestartPolicy
from tests.fakes import FakeSpawner, feed

ARGV = ["python", "-m", "launcher", "train.py"]


def restartable(**spawner_kw) -> tuple[Lifecycle, FakeSpawner]:
    spawner = FakeSpawner(**spawner_kw)
    life = Lifecycle(spawner, grace=2.0, restart=RestartPolicy(5, 3600.0, 0.5, 60.0))
    life.start(ARGV, {}, Path("/tmp"), now=0.0)
    feed(life, StartRecord(pid=4242, epochs=5))
    feed(life, EpochRecord(epoch=0, step=10))
    return life, spawner


def test_the_exit_after_terminate_is_final_not_a_restart():
    """The incident: a restart was spawned inside the shutdown loop and outlived the supervisor."""
    life, spawner = restartable(exit_on={signal.SIGTERM: -signal.SIGTERM})
    life.terminate(1.0, "the supervisor is shutting down after an error")
    assert spawner.handle.group_signals == [signal.SIGTERM]
    assert life.transition(1.1) is State.FAILED
    for t in (2.0, 10.0, 100.0):
        assert life.transition(t) is State.FAILED
    assert len(spawner.spawned) == 1
    assert life.outcome().status == 128 + signal.SIGTERM


def test_terminate_with_a_trainer_ignoring_sigterm_ends_in_sigkill_and_stays_down():
    life, spawner = restartable()
    life.terminate(1.0, "shutting down")
    assert life.transition(2.9) is State.STOPPING
    life.transition(3.0)  # grace over: SIGKILL
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL]
    assert life.transition(3.1) is State.FAILED and len(spawner.spawned) == 1


def test_terminate_during_backoff_fails_at_once_without_a_new_attempt():
    life, spawner = restartable()
    spawner.handle.exit(1)
    assert life.transition(5.0) is State.BACKOFF
    life.terminate(5.1, "shutting down")
    assert life.state is State.FAILED
    assert life.transition(100.0) is State.FAILED and len(spawner.spawned) == 1


def test_a_crash_without_terminate_still_takes_the_restart_path():
    life, spawner = restartable()
    spawner.handle.exit(-signal.SIGTERM)  # someone else SIGTERMed the trainer
    assert life.transition(5.0) is State.BACKOFF
