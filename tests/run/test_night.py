"""The unattended-night features of the runner, with fakes: restarts, LRSUP_RESTORE, the
watchdog, operator requests, a full disk and supervisor.json (no real processes)."""

from __future__ import annotations

import errno
import json
import signal
from pathlib import Path

import pytest

from lrsup.supervisor.config import load_config
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.history.runinfo import load_run
from lrsup.supervisor.protocol.jsonl import Appender, iter_objects
from lrsup.supervisor.report.series import decision_markers
from lrsup.supervisor.run.lifecycle import State
from lrsup.supervisor.run.operator import send_request
from lrsup.supervisor.run.runner import ENV_ATTEMPT, ENV_RESTORE, Runner
from lrsup.supervisor.rundir.layout import RunDir
from tests.fakes import FakeClock, FakeSpawner
from tests.run.test_runner import RecordingDisplay, ScriptedTrainer

pytestmark = pytest.mark.timeout(60)


class TickingClock(FakeClock):
    """A fake clock that moves 0.1 s each time the loop reads it (so backoffs elapse)."""

    def monotonic(self) -> float:
        self.now += 0.1
        return self.now


TOML = """
[[policy]]
use = "plateau"
factor = 0.5
patience = 1

[run]
backoff_base = 2.0
backoff_cap = 10.0
hang_timeout = 30.0
stall_timeout = 100.0
stop_timeout = 5.0
"""


class PerAttemptSpawner(FakeSpawner):
    """Each spawn gets its own scripted trainer from ``factories[attempt - 1]``."""

    def __init__(self, root: Path, factories, **kw) -> None:
        super().__init__(**kw)
        self.root, self.factories = root, factories

    def spawn(self, argv, env, cwd):
        handle = super().spawn(argv, env, cwd)
        handle.step = self.factories[len(self.spawned) - 1](self.root)
        return handle


def make(tmp_path: Path, factories, *, engine=None, clock=None, writers=None, toml: str = TOML, **kw):
    (tmp_path / "lrsup.toml").write_text(toml)
    config = load_config(None, tmp_path)
    paths = RunDir.prepare(Path("run"), script=Path("t.py"), cwd=tmp_path).create()
    spawner = PerAttemptSpawner(paths.root, factories, **kw)
    runner = Runner(
        config,
        engine or Engine(config.build_policies()),
        paths,
        ["python", "t.py"],
        {"A": "1"},
        tmp_path,
        spawner=spawner,
        display=RecordingDisplay(),
        clock=clock or FakeClock(),
        grace=1.0,
        poll_interval=0.005,
        tick=0.01,
        use_watchdog=False,
        writers=writers,
    )
    return runner, spawner


def journal(runner, kind=None):
    return [x for x in iter_objects(runner.paths.journal) if kind is None or x["type"] == kind]


def events(runner):
    return [x["event"] for x in journal(runner, "event")]


class Crashing(ScriptedTrainer):
    """Plays ``epochs_before`` epochs, then exits with status 1 (a crash, no end record)."""

    def __init__(self, root, epochs_before: int, clock: FakeClock | None = None) -> None:
        super().__init__(root, [1.0] * 10)
        self.limit, self.clock = epochs_before, clock

    def __call__(self):
        if self.clock is not None:
            self.clock.advance(0.5)
        if len(self.epoch_lrs) > self.limit:
            return 1
        return super().__call__()


class GoodEngine(Engine):
    """An engine that knows a good checkpoint (what the checkpointing engine will offer)."""

    known_good_checkpoint = "epoch-0001"


def test_crash_restarts_with_restore_and_attempt_env_after_backoff(tmp_path):
    clock = TickingClock()
    config_engine = GoodEngine([])
    runner, spawner = make(
        tmp_path,
        [lambda r: Crashing(r, 1, clock), lambda r: ScriptedTrainer(r, [1.0, 1.0])],
        engine=config_engine,
        clock=clock,
    )
    assert runner.run() == 0
    first, second = spawner.spawned[0][1], spawner.spawned[1][1]
    assert first[ENV_ATTEMPT] == "1" and ENV_RESTORE not in first
    assert second[ENV_ATTEMPT] == "2" and second[ENV_RESTORE] == "epoch-0001" and second["A"] == "1"
    assert events(runner)[:4] == ["spawned", "started", "trainer_exited", "backoff"] or "backoff" in events(runner)
    restarted = next(e for e in journal(runner, "event") if e["event"] == "restarted")
    assert restarted["restore"] == "epoch-0001" and "restoring checkpoint 'epoch-0001'" in restarted["detail"]
    backoff = next(e for e in journal(runner, "event") if e["event"] == "backoff")
    assert "trainer exited with status 1; restart 1 of at most 5 within 3600 s, in 2 s" == backoff["detail"]
    state = json.loads(runner.paths.state.read_text())
    assert (state["attempt"], state["restarts"], state["state"], state["exit_status"]) == (2, 1, "exited", 0)


def test_restart_from_scratch_without_a_known_checkpoint(tmp_path):
    runner, spawner = make(
        tmp_path, [lambda r: Crashing(r, 1), lambda r: ScriptedTrainer(r, [1.0])], clock=TickingClock()
    )
    assert runner.run() == 0
    assert ENV_RESTORE not in spawner.spawned[1][1]
    restarted = next(e for e in journal(runner, "event") if e["event"] == "restarted")
    assert restarted["restore"] is None and "from scratch" in restarted["detail"]


def test_restarts_used_up_end_fatal_with_status_3(tmp_path, capsys):
    toml = TOML.replace("backoff_base = 2.0", "backoff_base = 2.0\nmax_restarts = 2")
    runner, spawner = make(tmp_path, [lambda r: Crashing(r, 1)] * 3, toml=toml, clock=TickingClock())
    (tmp_path / "run" / "trainer.log").write_text("Traceback (most recent call last):\n  boom\nValueError: bad\n")
    assert runner.run() == 3
    assert len(spawner.spawned) == 3 and runner.lifecycle.state is State.FATAL
    err = capsys.readouterr().err
    assert "lrsup: FATAL: gave up after 2 restart(s)" in err and "2 restarts within 3600 s" in err
    assert "ValueError: bad" in err
    assert json.loads(runner.paths.state.read_text())["state"] == "fatal"


def test_hung_trainer_is_killed_then_restarted(tmp_path):
    clock = TickingClock()

    class Hanging(ScriptedTrainer):
        def __call__(self):
            clock.advance(1.0)
            return super().__call__()

    runner, spawner = make(
        tmp_path,
        [lambda r: Hanging(r, [1.0], hang_after_start=True), lambda r: ScriptedTrainer(r, [1.0])],
        clock=clock,
        exit_on={signal.SIGTERM: -signal.SIGTERM},
    )
    assert runner.run() == 0
    killing = next(e for e in journal(runner, "event") if e["event"] == "killing")
    assert killing["detail"].startswith("trainer hung: no record or heartbeat for 3")
    assert spawner.spawned[0][3].group_signals[0] == signal.SIGTERM
    assert len(spawner.spawned) == 2


class FullDisk:
    def __init__(self, path: Path, failures: int) -> None:
        self.inner, self.failures = Appender(path), failures

    def write(self, obj) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.inner.write(obj)

    def close(self) -> None:
        self.inner.close()


def test_full_disk_degrades_without_commands_then_recovers(tmp_path):
    losses = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    runner, _ = make(tmp_path, [lambda r: ScriptedTrainer(r, losses)])
    runner._writers = (Appender(runner.paths.control), FullDisk(runner.paths.journal, 6))
    assert runner.run() == 0
    decisions = journal(runner, "decision")
    held = [d for d in decisions if d["suppressed"]]
    assert held and all(d["suppressed"].startswith("not sent: disk full") for d in held)
    assert all("late" in d for d in held)  # journaled when space returned
    assert "recovered" in events(runner) and "degraded" in events(runner)
    degraded = next(e for e in journal(runner, "event") if e["event"] == "degraded")
    assert degraded["detail"].startswith("DEGRADED: disk full") and degraded["late"].startswith("journaled late")
    assert ("degraded", degraded["detail"]) in runner.display.states
    sent = [d for d in decisions if d["seq"] is not None]
    assert sent and "late" not in sent[-1]  # after recovery decisions are sent again
    assert json.loads(runner.paths.state.read_text())["degraded"] is None


def test_operator_set_lr_hold_release_and_stop(tmp_path):

    steps = {"n": 0}

    def factory(r):
        trainer = ScriptedTrainer(r, [1.0] * 40)

        def step():
            steps["n"] += 1
            if steps["n"] == 3:
                send_request(r, "set_lr", lr=0.02, who="ana@gpu3", why="manual", time=1.0)
                send_request(r, "hold", who="ana@gpu3", time=1.0)
            if steps["n"] == 8:
                send_request(r, "release", who="ana@gpu3", time=1.0)
            if steps["n"] == 11:
                send_request(r, "stop", who="bo@gpu3", why="done for today", time=1.0)
            return trainer()

        return step

    runner, _ = make(tmp_path, [factory])
    assert runner.run() == 0
    (override,) = journal(runner, "override")
    assert (override["who"], override["why"], override["lr"]) == ("ana@gpu3", "manual", 0.02)
    cmds = list(iter_objects(runner.paths.control))
    assert any(c["cmd"] == "set_lr" and c["lr"] == 0.02 and c["seq"] == override["seq"] for c in cmds)
    suppressed = [d for d in journal(runner, "decision") if d["suppressed"] == "held by ana@gpu3"]
    assert suppressed and all(d["seq"] is None for d in suppressed)
    names = events(runner)
    assert names.index("hold") < names.index("released") < names.index("stop_requested")
    shown = [state for state, _ in runner.display.states]
    assert shown.index("hold") < shown.index("released")  # the display shows the held condition
    assert [c for c in cmds if c["cmd"] == "stop"][0]["reason"] == "stop requested by bo@gpu3 (done for today)"
    assert journal(runner, "event")[-1]["detail"] == "stopped by bo@gpu3 (done for today) (exit status 0)"


def test_an_operator_override_is_drawn_in_the_report(tmp_path):
    """An operator's set-lr (journaled as an ``override`` entry) is a decision of the report, marked "override"."""

    def factory(r):
        trainer = ScriptedTrainer(r, [1.0] * 6)

        def step():
            if trainer.polls == 3:
                send_request(r, "set_lr", lr=0.02, who="ana@gpu3", why="manual", time=1.0)
            return trainer()

        return step

    runner, _ = make(tmp_path, [factory])
    assert runner.run() == 0
    (override,) = journal(runner, "override")
    info = load_run(runner.paths.root)
    (decision,) = [d for d in info.decisions if d.seq == override["seq"]]
    assert (decision.label, decision.policy, decision.lr) == ("override", "ana@gpu3", 0.02)
    assert decision.applied is not None and decision.epoch == decision.applied.epoch
    assert "override" in [m.label for m in decision_markers(info)]


def test_a_requests_file_turned_symlink_is_ignored_not_fatal(tmp_path):
    def factory(r):
        trainer = ScriptedTrainer(r, [1.0, 1.0, 1.0])

        def step():
            if trainer.polls == 2:
                (tmp_path / "evil").write_text('{"v":1,"op":"stop","who":"x","time":1.0}\n')
                (r / "requests.jsonl").symlink_to(tmp_path / "evil")
            return trainer()

        return step

    runner, _ = make(tmp_path, [factory])
    assert runner.run() == 0  # not stopped by the planted request
    (bad,) = [e for e in journal(runner, "event") if e["event"] == "bad_request"]
    assert "is a symbolic link" in bad["detail"]
    assert not [c for c in iter_objects(runner.paths.control) if c["cmd"] == "stop"]
