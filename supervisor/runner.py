"""The supervisor's main loop: wire config, run directory, trainer, policies and display.

Example::

    status = run(config, script=Path("train.py"), args=["--epochs", "3"],
                 run_dir=RunDir.prepare(None, script=Path("train.py"), cwd=Path.cwd()))

One tick of the loop: act on a recorded Ctrl-C / SIGTERM (``lifecycle.request_stop``),
advance the lifecycle (exit noticed, stop escalated), show the trainer's output,
read new records and answer them (engine decisions become commands in
control.jsonl and lines in journal.jsonl; every epoch record gets its ``verdict``
once its decisions are written, which releases the trainer), then wait on the
follower until metrics.jsonl changes or ``tick`` seconds pass. After the
trainer exits, the rest of its records and output are drained. Whatever happens,
the trainer's process group is gone when ``run`` returns.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import time as _time
from pathlib import Path
from typing import Any, Callable, Sequence

from lrsup.supervisor import protocol
from lrsup.supervisor.display import Display, make_display
from lrsup.supervisor.follower import Follower
from lrsup.supervisor.jsonl import Appender
from lrsup.supervisor.lifecycle import Lifecycle, State
from lrsup.supervisor.process import ProcessSpawner, Spawner
from lrsup.supervisor.protocol import AckRecord, EpochRecord, ErrorRecord, ProtocolError, Record
from lrsup.supervisor.rundir import RunDir, RunPaths

LAUNCHER = "lrsup.supervisor.agent.launcher"


class SystemClock:
    """The real clocks; tests pass an object with the same three methods."""

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)
    sleep = staticmethod(_time.sleep)


def trainer_argv(script: Path | str, args: Sequence[str]) -> list[str]:
    """The trainer's command line: the user's script under the agent's launcher."""
    return [sys.executable, "-m", LAUNCHER, os.fspath(script), *args]


def trainer_env(run_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env[protocol.ENV_RUN_DIR] = os.path.abspath(run_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Runner:
    """One supervised run. Every IO object is passed in, so tests swap in fakes.

    Args:
        config: ResolvedConfig, the validated configuration (written to config.json).
        engine: Engine, turns records into decisions (``feed``).
        paths: RunPaths, the created run directory.
        argv / env / cwd: how to start the trainer.
        spawner: Spawner | None, the system-call seam (default: a ProcessSpawner logging to trainer.log).
        display: Display | None, what the user sees (default: chosen by ``sys.stdout.isatty()``).
        clock: object with ``monotonic()``, ``time()``, ``sleep()``.
        grace: float, seconds between SIGINT, SIGTERM and SIGKILL when stopping.
        poll_interval: float, how often the follower checks metrics.jsonl when polling.
        tick: float, longest wait between two passes of the loop (bounds how late a
            Ctrl-C is acted on); new records or output end the wait at once.
        use_watchdog: bool, follow metrics.jsonl with watchdog (False: polling).
    """

    def __init__(self, config: Any, engine: Any, paths: RunPaths, argv: Sequence[str], env: dict[str, str],
                 cwd: Path, *, spawner: Spawner | None = None, display: Display | None = None, clock: Any = None,
                 grace: float = 10.0, poll_interval: float = 0.05, tick: float = 0.25,
                 use_watchdog: bool = True) -> None:
        self.config, self.engine, self.paths = config, engine, paths
        self.argv, self.env, self.cwd = list(argv), env, cwd
        self.output: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.follower = Follower(paths.metrics, use_watchdog=use_watchdog, poll_interval=poll_interval)
        self.spawner = spawner or ProcessSpawner(log_path=paths.trainer_log, sink=self._on_output)
        self.display = display
        self.clock = clock or SystemClock()
        self.grace, self.tick_interval = grace, tick
        self.lifecycle = Lifecycle(self.spawner, grace=grace)
        self.seq = 0
        self.signals: list[int] = []  # appended by the signal handler, consumed by the loop
        self._handled_signals = 0
        self._garbage_seen = 0

    # -- the loop -------------------------------------------------------------
    def run(self) -> int:
        """Start the trainer, supervise it to the end, return the exit status."""
        self.display = self.display or make_display()
        self.control = Appender(self.paths.control)
        self.journal = Appender(self.paths.journal)
        try:
            _write_private(self.paths.config, json.dumps(self.config.to_json(), indent=2) + "\n")
            self.follower.start()
            self.lifecycle.start(self.argv, self.env, self.cwd)
            while not self.tick():
                self.follower.wait(self.tick_interval)
            self._finish()
            outcome = self.lifecycle.outcome()
            self._event("finished", f"{outcome.reason} (exit status {outcome.status})", status=outcome.status)
            return outcome.status
        finally:
            self._cleanup()
            self._close()

    def tick(self) -> bool:
        """One pass of the loop; True once the trainer is gone."""
        while self._handled_signals < len(self.signals):
            sig = self.signals[self._handled_signals]
            self._handled_signals += 1
            self.lifecycle.request_stop(self.clock.monotonic(), f"interrupted by the user ({signal.Signals(sig).name})")
        self.lifecycle.transition(self.clock.monotonic())
        self._pump()
        return self.lifecycle.state.done

    def _finish(self) -> None:
        """The trainer exited: kill what it left in its group, then drain output and records."""
        self._reap_group()
        handle = self.lifecycle.handle
        if handle is not None:
            handle.close()
        self._pump()

    def _on_output(self, line: str) -> None:
        """From the output reader thread: queue the line for the loop and wake it."""
        self.output.put(line)
        self.follower.wake()

    def _pump(self) -> None:
        while True:
            try:
                line = self.output.get_nowait()
            except queue.Empty:
                break
            self.display.on_output_line(line)
        for record in self.follower.read():
            self._on_record(record)
        self._drain_events()

    # -- records --------------------------------------------------------------
    def _on_record(self, record: Record) -> None:
        self.lifecycle.on_record(record)
        self.display.on_record(record)
        if isinstance(record, AckRecord):
            self._journal("applied", seq=record.seq, cmd=record.cmd, epoch=record.epoch, step=record.step,
                          lr=record.lr, late=record.late)
        elif isinstance(record, ErrorRecord):
            self._journal("command_error", seq=record.seq, cmd=record.cmd, message=record.message)
        for decision in self.engine.feed(record):
            self._on_decision(decision)
        if isinstance(record, EpochRecord):
            # Everything decided on this epoch is written: release the trainer.
            self._command("verdict", epoch=record.epoch)

    def _on_decision(self, decision: Any) -> None:
        action, seq, suppressed = decision.action, None, decision.suppressed
        if decision.command is not None:
            args = dict(decision.command)
            args.setdefault("reason", action.reason)
            try:
                seq = self._command(args.pop("cmd"), **args)
            except ProtocolError as exc:  # an engine bug must not end the run
                suppressed = f"invalid command not sent: {exc}"
        self._journal("decision", seq=seq, policy=action.policy, action=action.kind, lr=decision.lr,
                      reason=action.reason, epoch=decision.epoch, step=decision.step, suppressed=suppressed)
        self.display.on_decision(decision)

    def _command(self, cmd: str, **args: Any) -> int:
        obj = protocol.make_command(self.seq + 1, cmd, time=self.clock.time(), **args)
        self.control.write(obj)
        self.seq += 1
        return self.seq

    # -- journal and events ---------------------------------------------------
    def _journal(self, kind: str, **fields: Any) -> None:
        self.journal.write({"v": protocol.PROTOCOL_VERSION, "type": kind, "time": self.clock.time(), **fields})

    def _event(self, event: str, detail: str, state: State | None = None, **extra: Any) -> None:
        self._journal("event", event=event, detail=detail, **extra)
        self.display.on_state((state or self.lifecycle.state).value, detail)

    def _drain_events(self) -> None:
        for event in self.lifecycle.pop_events():
            extra = {"returncode": self.lifecycle.returncode} if event.name == "trainer_exited" else {}
            self._event(event.name, event.detail, event.state, **extra)
        stats = self.follower.stats
        new, self._garbage_seen = stats.garbage - self._garbage_seen, stats.garbage
        for message in list(stats.last_errors)[-new:] if new else ():
            self._event("garbage", f"skipped a bad line in {protocol.METRICS_FILE}: {message}")
        if new > len(stats.last_errors):
            self._event("garbage", f"... {new - len(stats.last_errors)} more bad lines skipped")

    # -- never leave an orphan ------------------------------------------------
    def _cleanup(self) -> None:
        """Runs always: a trainer still alive (the loop failed) is stopped, then its group killed."""
        if self.lifecycle.handle is not None and not self.lifecycle.state.done:
            self.lifecycle.terminate(self.clock.monotonic(), "the supervisor is shutting down after an error")
            deadline = self.clock.monotonic() + 2 * self.grace + 5
            while not self.lifecycle.transition(self.clock.monotonic()).done:
                if self.clock.monotonic() > deadline:
                    break
                self.clock.sleep(0.05)
            self._reap_group()
            self.lifecycle.handle.close(timeout=1.0)
        self.follower.stop()

    def _reap_group(self) -> None:
        """SIGTERM what is left of the trainer's process group, SIGKILL it after a short grace."""
        handle = self.lifecycle.handle
        if handle is None or not handle.signal_group(0):
            return
        self._event("leftovers", f"processes left in the trainer's group (pgid {handle.pid}): terminating")
        handle.signal_group(signal.SIGTERM)
        deadline = self.clock.monotonic() + min(self.grace, 2.0)
        while handle.signal_group(0) and self.clock.monotonic() < deadline:
            self.clock.sleep(0.05)
        handle.signal_group(signal.SIGKILL)

    def _close(self) -> None:
        self.control.close()
        self.journal.close()
        if self.display is not None:
            self.display.close()


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 from the start (never through a symlink) and write ``text``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    with os.fdopen(os.open(path, flags, 0o600), "w", encoding="utf-8") as f:
        f.write(text)


def install_signal_handlers(runner: Runner) -> Callable[[], None]:
    """Record SIGINT/SIGTERM (and SIGHUP unless ignored, as under nohup) for the loop.

    Returns a function restoring the previous handlers.
    """
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: object) -> None:
        runner.signals.append(signum)  # only record it: the loop acts

    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is None or (sig != signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN):
            continue
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (embedded use): no handlers
            break

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def run(config: Any, *, script: Path, args: Sequence[str], run_dir: RunDir, cwd: Path | None = None,
        display: Display | None = None, spawner: Spawner | None = None, clock: Any = None,
        handle_signals: bool = True, **options: Any) -> int:
    """Create the run directory, supervise ``script args`` to the end, return the exit status."""
    from lrsup.supervisor.engine import Engine

    cwd = cwd or Path.cwd()
    engine = Engine(config.build_policies())  # before the run directory: a failure leaves nothing
    paths = run_dir.create()
    options.setdefault("grace", config.run.grace_period)
    options.setdefault("poll_interval", config.run.poll_interval)
    runner: Runner | None = None
    restore: Callable[[], None] = lambda: None  # noqa: E731
    try:
        runner = Runner(config, engine, paths, trainer_argv(script, args), trainer_env(paths.root), cwd,
                        spawner=spawner, display=display, clock=clock, **options)
        if handle_signals:
            restore = install_signal_handlers(runner)
        return runner.run()
    except BaseException:
        if runner is None or (runner.lifecycle.handle is None and not runner.lifecycle.state.done):
            run_dir.discard()  # failed before a trainer was started: nothing worth keeping
        raise
    finally:
        restore()
