"""Runner: the loop's wiring, with a fake spawner whose "process" plays the trainer's side.

The scripted trainer writes records to metrics.jsonl and reads control.jsonl on each
``poll()``, so the real follower, engine, journal and lifecycle run with no process.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lrsup.policies.actions import ScaleLR, SetHparam, SetLR, Stop
from lrsup.supervisor import protocol
from lrsup.supervisor.config import load_config
from lrsup.supervisor.engine.core import Decision, Engine
from lrsup.supervisor.protocol.commands import RollbackCommand, SetHparamCommand, SetLRCommand, StopCommand
from lrsup.supervisor.protocol.jsonl import Appender, iter_objects
from lrsup.supervisor.protocol.wire import (
    AckRecord,
    BatchRecord,
    EndRecord,
    EpochRecord,
    ErrorRecord,
    StartRecord,
)
from lrsup.supervisor.run.runner import LAUNCHER, Runner, run, trainer_argv
from lrsup.supervisor.rundir.layout import RunDir
from lrsup.supervisor.view.display import PlainDisplay
from tests.fakes import FakeClock, FakeSpawner


class ScriptedTrainer:
    """One protocol step per ``poll()``: start, then per epoch a batch and an epoch record,
    waiting (polls) for that epoch's verdict and applying set_lr / scale_lr / stop meanwhile.

    Args:
        run_dir: Path.
        val_losses: list of float, one per epoch.
        steps: int, steps per epoch.
        exit_code: int, returned when training ends.
        extra: optional callable(poll_number) run on each poll (inject signals, garbage...).
    """

    def __init__(
        self,
        run_dir: Path,
        val_losses: list[float],
        *,
        steps: int = 10,
        lr: float = 0.1,
        exit_code: int = 0,
        extra=None,
        hang_after_start: bool = False,
    ) -> None:
        self.run_dir, self.val_losses, self.steps, self.lr = run_dir, val_losses, steps, lr
        self.exit_code, self.extra, self.hang = exit_code, extra, hang_after_start
        self.polls = 0
        self.epoch_lrs: list[float] = []
        self._gen = self._play()

    def __call__(self) -> int | None:
        self.polls += 1
        if self.extra is not None:
            self.extra(self.polls)
        try:
            next(self._gen)
        except StopIteration as stop:
            return stop.value
        return None

    def _commands(self):
        for obj in iter_objects(self.run_dir / protocol.CONTROL_FILE):
            if obj["seq"] > self._seen:
                self._seen = obj["seq"]
                yield obj

    def _play(self):
        out = Appender(self.run_dir / protocol.METRICS_FILE)
        self._seen, step, stop, epoch = 0, 0, False, -1
        out.write(
            StartRecord(
                time=1.0, pid=99, optimizer="SGD", lr=self.lr, epochs=len(self.val_losses), steps_per_epoch=self.steps
            ).to_json()
        )
        yield
        while self.hang:
            yield
        for epoch, val_loss in enumerate(self.val_losses):
            step += self.steps
            self.epoch_lrs.append(self.lr)
            out.write(
                BatchRecord(epoch=epoch, batch=self.steps - 1, step=step, lr=self.lr, logs={"loss": val_loss}).to_json()
            )
            out.write(
                EpochRecord(epoch=epoch, step=step, lr=self.lr, logs={"loss": val_loss, "val_loss": val_loss}).to_json()
            )
            verdict = False
            while not verdict:
                yield
                for cmd in self._commands():
                    if cmd["cmd"] == "verdict":
                        verdict = cmd["epoch"] >= epoch
                        continue
                    if cmd["cmd"] == "set_lr":
                        self.lr = cmd["lr"]
                    elif cmd["cmd"] == "scale_lr":
                        self.lr *= cmd["factor"]
                    elif cmd["cmd"] == "stop":
                        stop = True
                    else:
                        out.write(ErrorRecord(seq=cmd["seq"], cmd=cmd["cmd"], message="not supported").to_json())
                        continue
                    out.write(AckRecord(seq=cmd["seq"], cmd=cmd["cmd"], epoch=epoch, step=step, lr=self.lr).to_json())
            if stop:
                break
        out.write(EndRecord(reason="stopped" if stop else "completed", epoch=epoch, step=step).to_json())
        out.close()
        return self.exit_code


class RecordingDisplay:
    def __init__(self) -> None:
        self.records: list = []
        self.decisions: list = []
        self.lines: list[str] = []
        self.states: list[tuple[str, str]] = []
        self.closed = False

    def on_record(self, record) -> None:
        self.records.append(record)

    def on_decision(self, decision) -> None:
        self.decisions.append(decision)

    def on_output_line(self, line: str) -> None:
        self.lines.append(line)

    def on_state(self, state: str, detail: str) -> None:
        self.states.append((state, detail))

    def close(self) -> None:
        self.closed = True


def make_runner(
    tmp_path: Path,
    trainer_factory,
    *,
    engine=None,
    toml: str | None = None,
    display=None,
    exit_on=None,
    grace: float = 10.0,
    clock=None,
) -> tuple[Runner, FakeSpawner, Any]:
    if toml is not None:
        (tmp_path / "lrsup.toml").write_text(toml)
    config = load_config(None, tmp_path)
    paths = RunDir.prepare(Path("run"), script=Path("t.py"), cwd=tmp_path).create()
    trainer = trainer_factory(paths.root)
    spawner = FakeSpawner(step=trainer, exit_on=exit_on)
    runner = Runner(
        config,
        engine or Engine(config.build_policies()),
        paths,
        ["python", "t.py"],
        {},
        tmp_path,
        spawner=spawner,
        display=display or RecordingDisplay(),
        clock=clock or FakeClock(),
        grace=grace,
        poll_interval=0.005,
        tick=0.01,
        use_watchdog=False,
    )
    return runner, spawner, trainer


def journal(runner: Runner, kind: str | None = None) -> list[dict]:
    lines = list(iter_objects(runner.paths.journal))
    return [x for x in lines if kind is None or x["type"] == kind]


def commands(runner: Runner) -> list[dict]:
    return list(iter_objects(runner.paths.control))


PLATEAU = """
[[policy]]
use = "plateau"
factor = 0.5
patience = 1
"""


def test_plateau_cut_is_commanded_journaled_and_applied_before_the_next_epoch(tmp_path):
    losses = [1.0, 0.9, 0.9, 0.8, 0.7]
    runner, spawner, trainer = make_runner(tmp_path, lambda root: ScriptedTrainer(root, losses), toml=PLATEAU)
    assert runner.run() == 0
    cmds = commands(runner)
    assert [c["seq"] for c in cmds] == list(range(1, len(cmds) + 1))
    verdicts = [c["epoch"] for c in cmds if c["cmd"] == "verdict"]
    assert verdicts == [-1, 0, 1, 2, 3, 4]  # -1: the verdict on the start record (the start barrier)
    (cut,) = [c for c in cmds if c["cmd"] == "set_lr"]
    assert cut["lr"] == pytest.approx(0.05) and "val_loss" in cut["reason"]
    # The cut of epoch 2 comes before epoch 2's verdict, so epoch 3 already runs at 0.05.
    after = cmds[cmds.index(cut) + 1]
    assert (after["cmd"], after["epoch"]) == ("verdict", 2)
    assert trainer.epoch_lrs == [0.1, 0.1, 0.1, 0.05, 0.05]
    (decision,) = journal(runner, "decision")
    assert decision == {
        "v": 1,
        "type": "decision",
        "time": decision["time"],
        "seq": cut["seq"],
        "policy": "plateau",
        "action": "scale_lr",
        "lr": pytest.approx(0.05),
        "reason": cut["reason"],
        "epoch": 2,
        "step": 30,
        "suppressed": None,
    }
    (applied,) = journal(runner, "applied")
    assert (applied["seq"], applied["epoch"], applied["step"], applied["late"]) == (cut["seq"], 2, 30, False)
    events = [e["event"] for e in journal(runner, "event")]
    assert events == ["spawned", "started", "trainer_exited", "finished"]
    assert journal(runner, "event")[-1]["status"] == 0
    assert journal(runner, "event")[-1]["detail"] == "training completed (exit status 0)"
    assert json.loads(runner.paths.config.read_text())["policies"][0]["patience"] == 1
    assert spawner.handle.closed and runner.display.closed


def test_display_sees_records_decisions_and_states(tmp_path):
    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0, 1.0, 0.5]), toml=PLATEAU)
    runner.run()
    display = runner.display
    assert [type(r).__name__ for r in display.records][:3] == ["StartRecord", "BatchRecord", "EpochRecord"]
    assert isinstance(display.records[-1], EndRecord)
    assert len(display.decisions) == 1 and display.decisions[0].action.policy == "plateau"
    assert display.states[0] == ("starting", "trainer pid 4242")
    assert display.states[-1] == ("exited", "training completed (exit status 0)")


@dataclass
class FakeEngine:
    """Returns the given decisions on the first epoch record; records every record fed."""

    decisions: list
    fed: list
    exit_status: int | None = None

    def state_dict(self) -> dict:
        return {}

    def feed(self, record):
        self.fed.append(record)
        if isinstance(record, EpochRecord) and record.epoch == 0:
            return list(self.decisions)
        return []

    def take_notes(self) -> list:
        return []


def decision(action, command, lr=None, suppressed=None):
    return Decision(action=action, command=command, lr=lr, epoch=0, step=10, suppressed=suppressed)


def test_policy_stop_ends_with_status_0_and_suppressed_decisions_are_journaled(tmp_path):
    stop = Stop(reason="enough", policy="budget")
    late_cut = SetLR(lr=0.01, reason="cut", policy="plateau")
    engine = FakeEngine([decision(stop, StopCommand()), decision(late_cut, None, suppressed="stop decided")], [])
    runner, _, trainer = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0, 1.0, 1.0]), engine=engine)
    assert runner.run() == 0
    assert trainer.epoch_lrs == [0.1]  # stopped after epoch 0
    assert [c["cmd"] for c in commands(runner)] == ["verdict", "stop", "verdict"]  # the start's, then epoch 0's
    stop_line, cut_line = journal(runner, "decision")
    assert (stop_line["seq"], stop_line["action"], stop_line["policy"]) == (2, "stop", "budget")
    assert (cut_line["seq"], cut_line["suppressed"], cut_line["lr"]) == (None, "stop decided", None)
    assert journal(runner, "event")[-1]["detail"] == "training stopped early by a policy (exit status 0)"
    assert any(isinstance(r, AckRecord) for r in engine.fed)  # every record reaches the engine


def test_invalid_command_is_journaled_not_sent(tmp_path):
    bad = SetLR(lr=-1.0, reason="oops", policy="buggy")
    engine = FakeEngine([decision(bad, SetLRCommand(lr=-1.0), lr=-1.0)], [])
    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0, 1.0]), engine=engine)
    assert runner.run() == 0
    assert [c["cmd"] for c in commands(runner)] == ["verdict", "verdict", "verdict"]  # start, epochs 0 and 1
    (line,) = journal(runner, "decision")
    assert line["seq"] is None and line["suppressed"].startswith("invalid command not sent: set_lr command: lr")


def test_trainer_error_record_is_journaled_and_shown(tmp_path):
    hp = SetHparam(name="momentum", value=0.9, reason="r", policy="p")
    engine = FakeEngine([decision(hp, SetHparamCommand(name="momentum", value=0.9))], [])
    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0, 1.0]), engine=engine)
    runner.run()
    (err,) = journal(runner, "command_error")
    assert (err["seq"], err["cmd"], err["message"]) == (2, "set_hparam", "not supported")  # seq 1: the start's verdict
    assert any(isinstance(r, ErrorRecord) for r in runner.display.records)


def test_trainer_failure_status_passes_through(tmp_path):
    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0], exit_code=3))
    assert runner.run() == 3
    assert journal(runner, "event")[-1]["status"] == 3
    (exited,) = [e for e in journal(runner, "event") if e["event"] == "trainer_exited"]
    assert (exited["returncode"], exited["detail"]) == (3, "trainer exited with status 3")


def test_spawn_failure(tmp_path):
    runner, spawner, _ = make_runner(tmp_path, lambda root: None)
    spawner.fail = FileNotFoundError(2, "No such file or directory")
    assert runner.run() == 127
    events = [e["event"] for e in journal(runner, "event")]
    assert events == ["failed_to_start", "finished"]


def test_user_interrupt_forwards_sigint_and_returns_130(tmp_path):
    holder = {}

    def extra(poll):
        if poll == 3:
            holder["runner"].signals.append(signal.SIGINT)  # what the handler does

    runner, spawner, _ = make_runner(
        tmp_path, lambda root: ScriptedTrainer(root, [1.0] * 50, extra=extra), exit_on={signal.SIGINT: 1}
    )
    holder["runner"] = runner
    assert runner.run() == 130
    assert spawner.handle.signals == [signal.SIGINT] and spawner.handle.group_signals == []
    details = [(e["event"], e["detail"]) for e in journal(runner, "event")]
    assert ("stop_requested", "interrupted by the user (SIGINT)") in details
    assert details[-1][1].startswith("interrupted by the user (SIGINT); trainer exited with status 1")


def test_hung_trainer_is_escalated_to_sigkill_on_the_clock(tmp_path):
    clock = FakeClock()
    holder = {}

    def extra(poll):
        clock.advance(1.0)
        if poll == 2:
            holder["runner"].signals.append(signal.SIGTERM)

    runner, spawner, _ = make_runner(
        tmp_path,
        lambda root: ScriptedTrainer(root, [1.0], extra=extra, hang_after_start=True),
        clock=clock,
        grace=5.0,
    )
    holder["runner"] = runner
    assert runner.run() == 130
    assert spawner.handle.signals == [signal.SIGINT]
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL]
    assert 10.0 <= clock.now <= 14.0  # two graces of 5 s, on the injected clock
    assert "SIGKILL" in journal(runner, "event")[-1]["detail"]


def test_second_signal_escalates_at_once(tmp_path):
    holder = {}

    def extra(poll):
        if poll in (2, 3, 4):
            holder["runner"].signals.append(signal.SIGINT)

    runner, spawner, _ = make_runner(
        tmp_path, lambda root: ScriptedTrainer(root, [1.0], extra=extra, hang_after_start=True)
    )
    holder["runner"] = runner
    assert runner.run() == 130
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL]


class BrokenEngine:
    exit_status = None

    def state_dict(self) -> dict:
        return {}

    def feed(self, record):
        if isinstance(record, EpochRecord):
            raise RuntimeError("engine bug")
        return []

    def take_notes(self) -> list:
        return []


def test_exception_in_loop_kills_the_trainer_group_then_propagates(tmp_path):
    runner, spawner, _ = make_runner(
        tmp_path,
        lambda root: ScriptedTrainer(root, [1.0, 1.0]),
        engine=BrokenEngine(),
        exit_on={signal.SIGTERM: -signal.SIGTERM},
    )
    with pytest.raises(RuntimeError, match="engine bug"):
        runner.run()
    assert spawner.handle.signals == []  # no polite SIGINT on an internal error
    assert spawner.handle.group_signals == [signal.SIGTERM]
    assert spawner.handle.returncode == -signal.SIGTERM
    assert runner.display.closed
    assert runner.follower.mode == "polling" and not runner.follower.is_open  # stopped


def test_exception_with_a_trainer_ignoring_sigterm_ends_in_sigkill(tmp_path):
    runner, spawner, _ = make_runner(
        tmp_path, lambda root: ScriptedTrainer(root, [1.0, 1.0]), engine=BrokenEngine(), grace=1.0
    )
    with pytest.raises(RuntimeError):
        runner.run()
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL]
    assert spawner.handle.group_members == 0


def test_leftover_group_members_are_terminated_after_exit(tmp_path):
    def factory(root):
        trainer = ScriptedTrainer(root, [1.0])

        def step():
            rc = trainer()
            if rc is not None:
                holder["handle"].exit(rc, leave_children=1)
                return rc
            return None

        return step

    holder: dict = {}
    runner, spawner, _ = make_runner(tmp_path, factory, exit_on={signal.SIGTERM: 0})
    original = spawner.spawn

    def spawn(*a, **k):
        holder["handle"] = original(*a, **k)
        return holder["handle"]

    spawner.spawn = spawn
    assert runner.run() == 0
    assert holder["handle"].group_signals == [signal.SIGTERM]
    assert "leftovers" in [e["event"] for e in journal(runner, "event")]


def test_garbage_lines_are_reported_as_events(tmp_path):
    def extra(poll):
        if poll == 2:
            with open(tmp_path / "run" / protocol.METRICS_FILE, "ab") as f:
                f.write(b"this is not json\n")
        if poll == 4:
            with open(tmp_path / "run" / protocol.METRICS_FILE, "ab") as f:
                f.write(b"".join(b'{"v":1,"type":"t%d"}\n' % i for i in range(7)))

    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0, 1.0], extra=extra))
    assert runner.run() == 0
    garbage = [e["detail"] for e in journal(runner, "event") if e["event"] == "garbage"]
    assert len(garbage) == 1 + 5 + 1 and "not JSON" in garbage[0]
    assert garbage[1].endswith("unknown record type 't2'") and garbage[5].endswith("'t6'")
    assert garbage[6] == "... 2 more bad lines skipped"
    assert runner.follower.stats.garbage == 8 and len(runner.follower.stats.last_errors) == 5


def test_plain_display_output(tmp_path):
    out = io.StringIO()
    runner, _, _ = make_runner(
        tmp_path, lambda root: ScriptedTrainer(root, [1.0, 0.9, 0.9, 0.9]), toml=PLATEAU, display=PlainDisplay(out)
    )
    runner.output.put("hello from the trainer")
    runner.run()
    text = out.getvalue()
    assert "epoch 1/4 loss=1 val_loss=1 lr=0.1" in text
    assert "decision plateau scale_lr 0.05: " in text
    assert "epoch 4/4 loss=0.9 val_loss=0.9 lr=0.05" in text
    assert "hello from the trainer\n" in text
    assert text.rstrip().endswith("lrsup: training completed (exit status 0)")


def test_run_builds_the_trainer_command_and_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, tmp_path)
    spawner = FakeSpawner(step=lambda: 0)
    prepared = RunDir.prepare(None, script=Path("train.py"), cwd=tmp_path)
    status = run(
        config,
        script=Path("train.py"),
        args=["--epochs", "3"],
        run_dir=prepared,
        cwd=tmp_path,
        display=RecordingDisplay(),
        spawner=spawner,
        handle_signals=False,
        use_watchdog=False,
        tick=0.01,
    )
    assert status == 0
    argv, env, cwd, _ = spawner.spawned[0]
    assert argv == [sys.executable, "-m", LAUNCHER, "train.py", "--epochs", "3"]
    assert env[protocol.ENV_RUN_DIR] == str(prepared.path) and os.path.isabs(env[protocol.ENV_RUN_DIR])
    assert env["PYTHONUNBUFFERED"] == "1" and env.get("PATH") == os.environ.get("PATH")
    assert cwd == tmp_path
    assert prepared.path.parent == tmp_path / "runs"
    assert oct(os.stat(prepared.path / protocol.CONFIG_FILE).st_mode & 0o777) == "0o600"


def test_run_leaves_no_directory_when_policies_cannot_be_built(tmp_path, monkeypatch):
    config = load_config(None, tmp_path)
    monkeypatch.setattr(type(config), "build_policies", lambda self: (_ for _ in ()).throw(ValueError("boom")))
    prepared = RunDir.prepare(None, script=Path("train.py"), cwd=tmp_path)
    with pytest.raises(ValueError, match="boom"):
        run(
            config,
            script=Path("train.py"),
            args=[],
            run_dir=prepared,
            cwd=tmp_path,
            display=RecordingDisplay(),
            spawner=FakeSpawner(),
            handle_signals=False,
        )
    assert list(tmp_path.iterdir()) == []


def test_trainer_argv():
    assert trainer_argv("a.py", ["x"]) == [sys.executable, "-m", "lrsup.supervisor.agent.launcher", "a.py", "x"]


# -- displays (the runner's view of the user) -----------------------------------------


def plateau_decision(**kw):
    action = ScaleLR(factor=0.5, reason="val_loss 0.8 has not improved", policy="plateau")
    return Decision(action=action, command=SetLRCommand(lr=0.005), lr=0.005, epoch=2, step=30, **kw)


def test_plain_display_lines():
    out = io.StringIO()
    display = PlainDisplay(out)
    display.on_record(StartRecord(pid=1, optimizer="SGD", lr=0.01, epochs=15, steps_per_epoch=100))
    display.on_record(BatchRecord(epoch=2, batch=5, step=205, lr=0.01, logs={"loss": 0.5}))
    display.on_record(EpochRecord(epoch=2, step=300, lr=0.01, logs={"loss": 0.41, "val_loss": 0.43}))
    display.on_decision(plateau_decision())
    display.on_decision(
        Decision(
            action=SetHparam(name="momentum", value=0.95, reason="warm", policy="mom"),
            command=None,
            lr=None,
            epoch=2,
            step=30,
            suppressed="another momentum change",
        )
    )
    display.on_record(AckRecord(seq=4, cmd="set_lr", epoch=2, step=300, lr=0.005))
    display.on_record(ErrorRecord(seq=5, cmd="set_hparam", message="no such hyperparameter"))
    display.on_output_line("trainer says hi")
    display.on_state("exited", "trainer exited with status 0")
    assert out.getvalue().splitlines() == [
        "training started: SGD lr=0.01, 15 epochs x 100 steps",
        "epoch 3/15 loss=0.41 val_loss=0.43 lr=0.01",
        "decision plateau scale_lr 0.005: val_loss 0.8 has not improved",
        "decision mom set_hparam momentum=0.95 [suppressed: another momentum change]: warm",
        # no "applied set_lr" line: the decision line said it (only a late ack gets one)
        "trainer error set_hparam (seq 5): no such hyperparameter",
        "trainer says hi",
        "lrsup: trainer exited with status 0",
    ]


def test_live_display_renders_progress_lr_metrics_and_decisions():
    from rich.console import Console

    from lrsup.supervisor.view.display import LiveDisplay

    console = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    display = LiveDisplay(console)
    try:
        display.on_record(StartRecord(pid=1, optimizer="SGD", lr=0.01, epochs=15, steps_per_epoch=100))
        display.on_record(BatchRecord(epoch=2, batch=49, step=250, lr=0.01, logs={"loss": 0.5}))
        display.on_decision(plateau_decision())
        display.on_output_line("[not markup] trainer line")
        display.on_state("running", "training started")
        rendered = Console(file=io.StringIO(), width=120, color_system=None)
        rendered.print(display._render())
        text = rendered.file.getvalue()
    finally:
        display.close()
    assert "2/15" in text and "50/100 (step 250)" in text
    assert "lr 0.01" in " ".join(text.split())
    assert "last batch" in text and "0.5" in text
    assert "decision plateau scale_lr 0.005: val_loss 0.8 has not improved" in text
    printed = console.file.getvalue()
    assert "[not markup] trainer line" in printed
    assert "training started" in printed


def test_live_display_keeps_only_five_decisions():
    from rich.console import Console

    from lrsup.supervisor.view.display import LiveDisplay

    display = LiveDisplay(Console(file=io.StringIO(), force_terminal=True))
    try:
        for _ in range(7):
            display.on_decision(plateau_decision())
    finally:
        display.close()
    assert len(display.decisions) == 5


def test_make_display_picks_by_tty():
    from lrsup.supervisor.view.display import make_display

    assert isinstance(make_display(io.StringIO()), PlainDisplay)


def test_signal_handlers_only_record_and_are_restored(tmp_path):
    from lrsup.supervisor.run.runner import install_signal_handlers

    runner, _, _ = make_runner(tmp_path, lambda root: None)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup: left alone
    try:
        restore = install_signal_handlers(runner)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGHUP)
        finally:
            restore()
        assert runner.signals == [signal.SIGINT, signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is before[signal.SIGINT]
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before[signal.SIGHUP])


# -- the real spawner (the one place with real processes in these unit tests) ---------


def test_process_spawner_logs_and_echoes_output_and_owns_a_process_group(tmp_path):
    from lrsup.supervisor.run.process import ProcessSpawner

    lines: list[str] = []
    log = tmp_path / "trainer.log"
    spawner = ProcessSpawner(log_path=log, sink=lines.append)
    code = "import os, sys; print('out', os.getpgid(0) == os.getpid()); print('err', file=sys.stderr)"
    handle = spawner.spawn([sys.executable, "-c", code], env=dict(os.environ), cwd=tmp_path)
    assert handle.wait(30) == 0 and handle.poll() == 0
    handle.close()
    assert sorted(lines) == ["err", "out True"]
    assert sorted(log.read_text().splitlines()) == ["err", "out True"]
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    assert handle.signal_group(0) is False  # the group is gone with its only member


def test_process_spawner_signals_the_whole_group(tmp_path):
    from lrsup.supervisor.run.process import ProcessSpawner

    code = (
        "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        " print(c.pid, flush=True); time.sleep(60)"
    )
    lines: list[str] = []
    handle = ProcessSpawner(sink=lines.append).spawn([sys.executable, "-c", code], env=dict(os.environ), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline:
            time.sleep(0.02)
        grandchild = int(lines[0])
        assert handle.signal_group(0) is True
        assert handle.signal_group(signal.SIGKILL) is True
        assert handle.wait(30) == -signal.SIGKILL
        for _ in range(200):  # the grandchild got the same SIGKILL (reaped by init, or a zombie)
            try:
                with open(f"/proc/{grandchild}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
            except FileNotFoundError:
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"grandchild {grandchild} survived SIGKILL to the group")
    finally:
        handle.signal_group(signal.SIGKILL)
        handle.close(timeout=5)


def test_process_spawner_raises_when_the_program_is_missing(tmp_path):
    from lrsup.supervisor.run.process import ProcessSpawner

    with pytest.raises(FileNotFoundError):
        ProcessSpawner(log_path=tmp_path / "log").spawn([str(tmp_path / "nope")], env={}, cwd=tmp_path)


def test_run_removes_the_directory_when_start_up_fails_before_the_trainer(tmp_path, monkeypatch):
    config = load_config(None, tmp_path)
    monkeypatch.setattr(type(config), "to_json", lambda self: (_ for _ in ()).throw(OSError("disk full")))
    prepared = RunDir.prepare(None, script=Path("train.py"), cwd=tmp_path)
    spawner = FakeSpawner()
    with pytest.raises(OSError, match="disk full"):
        run(
            config,
            script=Path("train.py"),
            args=[],
            run_dir=prepared,
            cwd=tmp_path,
            display=RecordingDisplay(),
            spawner=spawner,
            handle_signals=False,
        )
    assert spawner.spawned == []
    assert list(tmp_path.iterdir()) == []


def test_run_keeps_the_directory_when_the_trainer_cannot_start(tmp_path):
    config = load_config(None, tmp_path)
    prepared = RunDir.prepare(None, script=Path("train.py"), cwd=tmp_path)
    status = run(
        config,
        script=Path("train.py"),
        args=[],
        run_dir=prepared,
        cwd=tmp_path,
        display=RecordingDisplay(),
        spawner=FakeSpawner(fail=PermissionError(13, "Permission denied")),
        handle_signals=False,
    )
    assert status == 126
    assert "failed_to_start" in (prepared.path / protocol.JOURNAL_FILE).read_text()


# -- notifications and the report at the end ----------------------------------


class RecordingNotifier:
    """A Notifier's interface: records (event, payload); ``fail`` makes notify raise."""

    def __init__(self, fail: bool = False) -> None:
        from lrsup.supervisor.config import NotifySettings

        self.settings = NotifySettings(webhook="http://127.0.0.1:9/")
        self.sent: list[tuple[str, dict]] = []
        self.flushed: list[float] = []
        self.fail = fail

    def notify(self, event: str, payload: dict | None = None) -> bool:
        if self.fail:
            raise RuntimeError("receiver exploded")
        self.sent.append((event, dict(payload or {})))
        return True

    def flush(self, timeout: float) -> bool:
        self.flushed.append(timeout)
        return True


class RollbackOnFirstEpoch:
    """An engine that decides one rollback on epoch 0 (the scripted trainer refuses it)."""

    exit_status = None

    def state_dict(self) -> dict:
        return {}

    def feed(self, record):
        if isinstance(record, EpochRecord) and record.epoch == 0:
            from lrsup.policies.actions import Rollback

            action = Rollback(checkpoint="c1", lr=0.01, reason="loss spike", policy="divergence")
            return [
                Decision(
                    action=action,
                    command=RollbackCommand(checkpoint="c1", lr=0.01),
                    lr=0.01,
                    epoch=0,
                    step=record.step,
                )
            ]
        return []

    def take_notes(self) -> list:
        return []


def test_a_sent_rollback_and_the_end_are_notified(tmp_path):
    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0, 0.9]), engine=RollbackOnFirstEpoch())
    runner.notifier = notifier = RecordingNotifier()
    assert runner.run() == 0
    assert [event for event, _ in notifier.sent] == ["rollback", "end"]
    rollback, end = notifier.sent[0][1], notifier.sent[1][1]
    assert (rollback["policy"], rollback["checkpoint"], rollback["lr"], rollback["epoch"]) == (
        "divergence",
        "c1",
        0.01,
        0,
    )
    assert rollback["seq"] == [c for c in commands(runner) if c["cmd"] == "rollback"][0]["seq"]
    assert (end["outcome"], end["exit_status"], end["summary"]["epochs"]) == ("completed", 0, 2)
    assert notifier.flushed and notifier.flushed[0] <= 10


def test_a_held_rollback_is_not_notified(tmp_path):
    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0, 0.9]), engine=RollbackOnFirstEpoch())
    runner.notifier = notifier = RecordingNotifier()
    runner.held_by = "alice@host"
    assert runner.run() == 0
    assert [event for event, _ in notifier.sent] == ["end"]


def test_a_broken_notifier_is_journaled_and_never_changes_the_status(tmp_path):
    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0], exit_code=3))
    runner.notifier = RecordingNotifier(fail=True)
    assert runner.run() == 3
    failed = [e for e in journal(runner, "event") if e["event"] == "notify_failed"]
    assert [f["detail"] for f in failed] == ["give_up: receiver exploded", "end: receiver exploded"]


def test_no_notify_table_means_no_notifier(tmp_path):
    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0]))
    assert runner.notifier is None
    (tmp_path / "b").mkdir()
    runner, _, _ = make_runner(
        tmp_path / "b", lambda root: ScriptedTrainer(root, [1.0]), toml='[notify]\nwebhook = "http://127.0.0.1:9/"\n'
    )
    assert runner.notifier is not None and runner.notifier.settings.on == ["end", "give_up"]


def test_the_report_is_written_at_the_end_and_its_path_printed(tmp_path, capsys):
    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0, 0.9]))
    runner.report = True
    assert runner.run() == 0
    assert (runner.paths.root / "report.md").is_file() and (runner.paths.root / "report.html").is_file()
    assert capsys.readouterr().err == f"lrsup: report: {runner.paths.root / 'report.md'}\n"


def test_a_failing_report_is_one_line_and_keeps_the_status(tmp_path, capsys, monkeypatch):
    import lrsup.supervisor.report.write as report

    def boom(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(report, "write_report", boom)
    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0], exit_code=5))
    runner.report = True
    assert runner.run() == 5
    assert capsys.readouterr().err == "lrsup: report not written: OSError: disk on fire\n"


def test_restarts_and_the_watchdog_come_from_the_config_with_no_defaults_of_their_own(tmp_path):
    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0]))
    assert runner.lifecycle.restart is not None and runner.lifecycle.restart.max_restarts == 5  # config.py's default
    assert (runner.watchdog.hang_timeout, runner.watchdog.stall_timeout, runner.watchdog.start_timeout) == (
        120.0,
        1800.0,
        1800.0,
    )
    # The runner used to read these with getattr defaults of its own (max_restarts 0, start_timeout 0:
    # no restart, the start never timed) that contradicted config.py: a settings object without them
    # was silently run without restarts. Now a missing setting is an error.
    config = load_config(None, tmp_path)
    run = {k: v for k, v in vars(config.run).items() if k not in ("max_restarts", "start_timeout")}
    partial = SimpleNamespace(**{**vars(config), "run": SimpleNamespace(**run)})
    paths = RunDir.prepare(Path("partial"), script=Path("t.py"), cwd=tmp_path).create()
    with pytest.raises(AttributeError, match="max_restarts"):
        Runner(partial, Engine(config.build_policies()), paths, ["python", "t.py"], {}, tmp_path, use_watchdog=False)


def test_a_monitored_metric_the_trainer_never_reports_is_said_once_journaled_and_reported(tmp_path):
    # issue 13, item 7: plateau on a metric the logs lack does nothing, and says so
    out = io.StringIO()
    toml = '[[policy]]\nuse = "plateau"\nmonitor = "val_accuracy"\npatience = 1\n'
    runner, _, _ = make_runner(
        tmp_path, lambda root: ScriptedTrainer(root, [1.0, 0.9, 0.9]), toml=toml, display=PlainDisplay(out)
    )
    assert runner.run() == 0
    (entry,) = journal(runner, "missing_metric")
    assert {k: entry[k] for k in ("policy", "metric", "available", "fit", "epoch", "step")} == {
        "policy": "plateau",
        "metric": "val_accuracy",
        "available": ["loss", "val_loss"],
        "fit": 1,
        "epoch": 0,
        "step": 10,
    }
    assert journal(runner, "decision") == []  # a warning, not a decision of the policy's
    text = out.getvalue()
    assert text.count("warning: plateau monitors val_accuracy, which is missing") == 1
    from lrsup.supervisor.history.runinfo import load_run
    from lrsup.supervisor.report.markdown import render_markdown

    info = load_run(runner.paths.root)
    (note,) = info.warnings
    assert note == entry["message"] and "(the metrics are: loss, val_loss)" in note
    assert f"## Notes\n\n- {note}" in render_markdown(info, png_name=None, notes=info.warnings)
