"""A trainer that hangs before ``fit`` (``[run] start_timeout``), on a fake clock.

The watchdog alone (pure, ``now`` passed in), then the runner with a FakeSpawner whose
"process" writes its start record late or never: killed as hung, restarted per the
restart policy, journaled; one that is alive and writing records but not yet in ``fit``
is left alone while the timeout lasts.
"""

from __future__ import annotations

import signal

import pytest

from lrsup.supervisor import protocol
from lrsup.supervisor.config import load_config
from lrsup.supervisor.protocol.jsonl import Appender
from lrsup.supervisor.protocol.wire import BatchRecord, EndRecord, EpochRecord, HeartbeatRecord, StartRecord
from lrsup.supervisor.run.restart import Watchdog
from tests.fakes import FakeClock
from tests.run.test_runner import ScriptedTrainer, journal, make_runner

START = StartRecord(pid=1, epochs=3)


# -- the watchdog --------------------------------------------------------------------
def test_no_start_record_within_start_timeout_is_a_hang():
    dog = Watchdog(hang_timeout=10.0, stall_timeout=30.0, start_timeout=100.0)
    dog.reset(now=0.0)
    assert dog.check(100.0) is None
    reason = dog.check(100.5)
    assert reason is not None and reason.startswith("trainer hung before training: no start record 100 s")
    assert "start_timeout = 100 s" in reason


def test_records_before_the_start_record_neither_hang_nor_rescue_it():
    """Alive and beating but not in fit: not hung (hang_timeout does not apply) until start_timeout."""
    dog = Watchdog(hang_timeout=10.0, stall_timeout=30.0, start_timeout=100.0)
    dog.reset(now=0.0)
    for t in range(0, 100, 5):
        dog.on_record(HeartbeatRecord(epoch=None, step=0), float(t))
        assert dog.check(float(t) + 4.0) is None  # far past hang_timeout since the spawn
    assert dog.check(101.0) is not None  # a heartbeat is not a start


def test_the_start_record_ends_start_timing_and_arms_hang_timing():
    dog = Watchdog(hang_timeout=10.0, stall_timeout=30.0, start_timeout=100.0)
    dog.reset(now=0.0)
    dog.on_record(START, 99.0)
    assert dog.check(108.0) is None  # past start_timeout: started, so no longer timed
    assert dog.check(109.5).startswith("trainer hung: no record or heartbeat")


def test_start_timeout_zero_is_off():
    dog = Watchdog(hang_timeout=10.0, stall_timeout=30.0, start_timeout=0.0)
    dog.reset(now=0.0)
    assert dog.check(1e9) is None


def test_without_a_spawn_time_start_timing_begins_at_the_first_check():
    dog = Watchdog(hang_timeout=10.0, stall_timeout=30.0, start_timeout=50.0)
    dog.reset()  # how the runner resets it: the first check of the new attempt starts the clock
    assert dog.check(1000.0) is None
    assert dog.check(1050.0) is None and dog.check(1050.5) is not None


def test_a_new_attempt_is_start_timed_afresh():
    dog = Watchdog(hang_timeout=10.0, stall_timeout=30.0, start_timeout=50.0)
    dog.reset(now=0.0)
    dog.on_record(START, 1.0)
    dog.reset(now=200.0)
    assert dog.check(249.0) is None and dog.check(251.0) is not None


def test_after_the_end_record_only_start_timeout_bounds_the_time_outside_fit():
    """Evaluating or saving after fit writes no heartbeat: not a hang (it used to be one) while
    start_timeout lasts; past it, a trainer that neither fits again nor exits is hung."""
    dog = Watchdog(hang_timeout=10.0, stall_timeout=30.0, start_timeout=50.0)
    dog.reset(now=0.0)
    dog.on_record(START, 1.0)
    dog.on_record(BatchRecord(epoch=0, batch=0, step=1), 2.0)
    dog.on_record(EpochRecord(epoch=0, step=1), 3.0)
    dog.on_record(EndRecord(reason="completed", epoch=0, step=1), 4.0)
    assert dog.check(4.0 + 49.0) is None  # far past hang_timeout: an evaluate, a save
    assert "hung after fit" in dog.check(4.0 + 51.0)
    dog.on_record(START, 40.0)  # a second fit in time: timed again, its compile not a stall
    assert dog.check(49.0) is None and "no record or heartbeat" in dog.check(51.0)


def test_with_start_timeout_off_nothing_is_timed_after_fit():
    dog = Watchdog(hang_timeout=10.0, stall_timeout=30.0, start_timeout=0)
    dog.reset(now=0.0)
    dog.on_record(START, 1.0)
    dog.on_record(EndRecord(reason="completed", epoch=0, step=1), 4.0)
    assert dog.check(10_000.0) is None


def test_start_timeout_is_checked_by_name():
    with pytest.raises(ValueError, match=r"start_timeout must be >= 0 seconds \(0: off\), got -1"):
        Watchdog(start_timeout=-1)


def test_the_config_default_and_the_off_switch(tmp_path):
    assert load_config(None, tmp_path).run.start_timeout == 1800.0
    (tmp_path / "lrsup.toml").write_text("[run]\nstart_timeout = 0\n")
    assert load_config(None, tmp_path).run.start_timeout == 0.0


# -- the runner: killed, restarted, journaled ------------------------------------------
class LateStarter:
    """Attempt 1 never writes its start record (a data loader that hangs); later attempts train."""

    def __init__(self, root, clock: FakeClock, *, heartbeats: bool = False, start_after: float | None = None):
        self.root, self.clock, self.heartbeats, self.start_after = root, clock, heartbeats, start_after
        self.attempts = 0
        self.trainer: ScriptedTrainer | None = None
        self._attempt_seen: object = None

    def bind(self, spawner) -> None:
        self.spawner = spawner

    def __call__(self) -> int | None:
        handle = self.spawner.handle
        if handle is not self._attempt_seen:  # a new attempt
            self._attempt_seen, self.attempts = handle, self.attempts + 1
            self.spawned_at = self.clock.now
            self.trainer = ScriptedTrainer(self.root, [1.0, 0.9])
        if signal.SIGTERM in handle.group_signals:
            return -signal.SIGTERM
        if self.clock.now > 300.0:
            return 99  # never killed: end the test instead of hanging it
        self.clock.advance(1.0)  # each poll: one second of the trainer's life
        waiting = self.attempts == 1 and (
            self.start_after is None or self.clock.now - self.spawned_at < self.start_after
        )
        if waiting:
            if self.heartbeats:
                Appender(self.root / protocol.METRICS_FILE).write(HeartbeatRecord(epoch=None, step=0).to_json())
            return None
        return self.trainer()


START_TOML = "[run]\nstart_timeout = 30\nhang_timeout = 5\nbackoff_base = 1\nbackoff_cap = 1\n"


class TickingClock(FakeClock):
    """Moves 0.05 s on each look, so that a backoff ends with no process polled meanwhile."""

    def monotonic(self) -> float:
        self.now += 0.05
        return self.now


def late_runner(tmp_path, **kw):
    clock = TickingClock()
    holder: dict = {}

    def factory(root):
        holder["t"] = LateStarter(root, clock, **kw)
        return holder["t"]

    runner, spawner, trainer = make_runner(tmp_path, factory, toml=START_TOML, clock=clock, grace=2.0)
    holder["t"].bind(spawner)
    return runner, spawner, holder["t"], clock


def test_a_trainer_hanging_before_fit_is_killed_after_start_timeout_and_restarted(tmp_path):
    runner, spawner, trainer, clock = late_runner(tmp_path)
    assert runner.run() == 0
    assert len(spawner.spawned) == 2 and trainer.attempts == 2
    first = spawner.spawned[0][3]
    assert first.group_signals[0] == signal.SIGTERM  # same handling as a hang: the group, then a restart
    details = {e["event"]: e["detail"] for e in journal(runner, "event")}
    assert details["killing"].startswith("trainer hung before training: no start record")
    assert "start_timeout = 30 s" in details["killing"]
    assert "start_timeout" in details["backoff"] and "restart 1 of at most 5" in details["backoff"]
    killed_at = next(e["time"] for e in journal(runner, "event") if e["event"] == "killing") - clock.wall
    assert 30.0 < killed_at <= 36.0


def test_a_trainer_heart_beating_before_fit_is_not_hung_while_start_timeout_lasts(tmp_path):
    """Heartbeats every second for 25 s (far past hang_timeout = 5), then fit: never killed."""
    runner, spawner, trainer, _ = late_runner(tmp_path, heartbeats=True, start_after=25.0)
    assert runner.run() == 0
    assert len(spawner.spawned) == 1
    names = [e["event"] for e in journal(runner, "event")]
    assert "killing" not in names and "backoff" not in names


def test_a_slow_start_within_start_timeout_is_left_alone(tmp_path):
    runner, spawner, _, _ = late_runner(tmp_path, start_after=25.0)
    assert runner.run() == 0
    assert len(spawner.spawned) == 1
