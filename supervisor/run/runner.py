"""The supervisor's main loop: wire config, run directory, trainer, policies and display.

Example::

    status = run(config, script=Path("train.py"), args=["--epochs", "3"],
                 run_dir=RunDir.prepare(None, script=Path("train.py"), cwd=Path.cwd()))

One tick of the loop: act on a recorded Ctrl-C / SIGTERM (``lifecycle.request_stop``)
and on operator requests (requests.jsonl: set_lr, hold, release, stop), kill a hung or
stalled trainer (the watchdog), advance the lifecycle (exit noticed, stop escalated,
a failed attempt restarted after its backoff), show the trainer's output,
read new records and answer them (engine decisions become commands in
control.jsonl and lines in journal.jsonl; every epoch record gets its ``verdict``
once its decisions are written, which releases the trainer), then wait on the
follower until metrics.jsonl changes or ``tick`` seconds pass. After the
trainer exits, the rest of its records and output are drained. Whatever happens,
the trainer's process group is gone when ``run`` returns. supervisor.json is
rewritten on every change of state (lrsup.supervisor.rundir.statefile).

Restarts: attempt ``n`` gets ``LRSUP_ATTEMPT=n`` and, when ``restore_point()`` names a
known-good checkpoint, ``LRSUP_RESTORE=<name>`` (a name from checkpoints/manifest.json);
once its start record arrives, the commands the dead attempt never acknowledged are
re-sent (lrsup.supervisor.run.commands). ``resume(run_dir)`` takes over a run whose
supervisor died (lrsup.supervisor.run.resume).

At the end: a ``[notify]`` table gets its ``end`` (and ``give_up`` on exit status 3)
notification, with the run's summary (lrsup.supervisor.run.notify); ``rollback`` and
``restart`` are sent as they happen. ``run`` and ``resume`` then write the morning
report (report.md, report.html, report.png) into the run directory; neither a failed
notification nor a failed report changes the exit status.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from lrsup.supervisor import protocol
from lrsup.supervisor.history.outcome import dead_model, with_dead_model
from lrsup.supervisor.protocol.commands import (
    Command,
    RetainCommand,
    SetLRCommand,
    SetScheduleCommand,
    StopCommand,
    VerdictCommand,
)
from lrsup.supervisor.protocol.doorbell import ControlWriter
from lrsup.supervisor.protocol.journal import (
    MISSING_METRIC,
    AppliedEntry,
    CommandErrorEntry,
    DecisionEntry,
    EventEntry,
    JournalEntry,
    MissingMetricEntry,
    OverrideEntry,
    RequestEntry,
    StageEntry,
)
from lrsup.supervisor.protocol.jsonl import Appender
from lrsup.supervisor.protocol.wire import (
    EXIT_GIVE_UP,
    AckRecord,
    EpochRecord,
    ErrorRecord,
    ProtocolError,
    Record,
    StartRecord,
)
from lrsup.supervisor.run.commands import CommandChannel
from lrsup.supervisor.run.credence import Credence
from lrsup.supervisor.run.follower import Follower
from lrsup.supervisor.run.launch import (  # noqa: F401  (re-exported: the runner's public names)
    ENV_ATTEMPT,
    ENV_RESTORE,
    LAUNCHER,
    build_engine,
    engine_restore_point,
    trainer_argv,
    trainer_env,
)
from lrsup.supervisor.run.lifecycle import Lifecycle, State
from lrsup.supervisor.run.operator import PBT_OPS, Request, RequestReader, apply_pbt, pbt_done, plan_pbt
from lrsup.supervisor.run.process import (  # noqa: F401  (SystemClock, install_signal_handlers: re-exported)
    AttachedHandle,
    ProcessSpawner,
    Spawner,
    SystemClock,
    install_signal_handlers,
    write_private,
)
from lrsup.supervisor.run.restart import (
    AttemptPlace,
    Crash,
    DecidedLr,
    RestartPolicy,
    Watchdog,
    crash_from_log,
    moot_after_restart,
)
from lrsup.supervisor.run.space import SPACE_WAIT, disk_full, is_enospc, wait_for_space
from lrsup.supervisor.run.terminal import Terminal, say
from lrsup.supervisor.rundir.layout import RunDir, RunDirError, RunPaths, check_run_file, remove_temp_files
from lrsup.supervisor.rundir.liveness import process_start_time
from lrsup.supervisor.rundir.progress import RunProgress
from lrsup.supervisor.rundir.recovery import TakeOver, fatal_report
from lrsup.supervisor.rundir.snapshot import SnapshotWriter
from lrsup.supervisor.rundir.statefile import write_state
from lrsup.supervisor.view.display import Display, make_display

if TYPE_CHECKING:
    from lrsup.supervisor.config import ResolvedConfig
    from lrsup.supervisor.engine.core import Decision, Engine

PARK_WAIT = 30.0  # seconds a park request waits for the commands before it to be acknowledged
NOTIFY_FLUSH = 10.0  # longest wait, in seconds, for notifications in flight when the run ends

# Journal events that name a condition the display shows instead of the lifecycle state.
_CONDITION_EVENTS = frozenset({"hold", "released", "degraded", "recovered"})
# A command's identity for "was it already sent": everything but its number and time.
_NOT_CONTENT = ("v", "seq", "time")


def _content(command: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in command.items() if k not in _NOT_CONTENT}


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
        use_watchdog: bool, wake on changes to metrics.jsonl (inotify, else a watchdog observer;
            False: polling).
        restore_point: callable() -> str | None, the checkpoint a restarted attempt loads
            (``LRSUP_RESTORE``); default: the engine's newest known-good checkpoint.
        writers: (control, journal) | None, writers with ``write(obj)``/``close()``
            (default: Appenders; tests inject a full disk).
        script: str | None, the user's script, for supervisor.json.
        offset: int, where the follower starts in metrics.jsonl (resume: after the replay).
        notifier: Notifier | None, where notifications go (default: built from ``config.notify``).
        report: bool, write report.md/.html/.png into the run directory when the run ends.
        space_wait: float, seconds the last writes (journal, supervisor.json, report) wait for
            space on a full disk before lrsup says they could not be written.
    """

    def __init__(
        self,
        config: ResolvedConfig,
        engine: Engine,
        paths: RunPaths,
        argv: Sequence[str],
        env: dict[str, str],
        cwd: Path,
        *,
        spawner: Spawner | None = None,
        display: Display | None = None,
        clock: Any = None,
        grace: float = 10.0,
        poll_interval: float = 0.05,
        tick: float = 0.25,
        use_watchdog: bool = True,
        restore_point: Callable[[], str | None] | None = None,
        writers: tuple[Any, Any] | None = None,
        script: str | None = None,
        offset: int = 0,
        notifier: Any = None,
        report: bool = False,
        space_wait: float = SPACE_WAIT,
    ) -> None:
        self.config, self.engine, self.paths = config, engine, paths
        self.argv, self.env, self.cwd, self.script = list(argv), env, cwd, script
        self.output: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.follower = Follower(paths.metrics, use_watchdog=use_watchdog, poll_interval=poll_interval, offset=offset)
        self.spawner = spawner or ProcessSpawner(log_path=paths.trainer_log, sink=self._on_output)
        self.display = display
        self.terminal: Terminal  # the display as open() wraps it (also self.display from then on)
        self.clock = clock or SystemClock()
        self.grace, self.tick_interval = grace, tick
        settings = config.run
        restart = None
        if settings.max_restarts > 0:
            restart = RestartPolicy(
                settings.max_restarts, settings.restart_window, settings.backoff_base, settings.backoff_cap
            )
        self.progress = RunProgress()  # where the run is: fed by _on_record only (resume: restored first)
        self.lifecycle = Lifecycle(
            self.spawner,
            grace=grace,
            restart=restart,
            env_for_attempt=self._env_for,
            drain=self._read_records,
            progress=self.progress,
            disk_full=lambda: disk_full(self.paths.root),
            crash=self._crash,
        )
        self.place = AttemptPlace()  # where the current attempt is (its crash's place)
        self._final_logs: dict[str, Any] | None = None  # the last epoch record's logs (did the model learn?)
        self.decided = DecidedLr()  # the LR lrsup last decided, per fit: where a restarted attempt trains
        self._log_offset: int | None = None  # trainer.log's size when the current attempt was spawned
        self.watchdog = Watchdog(settings.hang_timeout, settings.stall_timeout, settings.start_timeout)
        self.restore_point = restore_point or (lambda: engine_restore_point(engine))
        self.space_wait = space_wait  # longest wait for space for the last writes (state, report)
        self.credence = Credence()  # records that would steer the run if wrongly believed
        self.snapshots = SnapshotWriter(paths.root, settings.snapshot_interval)
        self.requests = RequestReader(paths.requests)
        self.held_by: str | None = None
        self._parking: tuple[str, float] | None = None  # a park request waiting for its acks: (reason, deadline)
        self.retained: list[str] = []  # the checkpoints the engine keeps (the last retain decided)
        self._requests_done: tuple[int, int] | None = None  # resume: (offset, index) of the last request acted on
        self._request_journaled: tuple[int, int] | None = None  # resume: the last request's journal line
        self._request_missing: int | None = 0  # resume: that request's commands control.jsonl lacks (None: all)
        self._presend: list[dict[str, Any]] = []  # resume: commands already sent on records still to handle
        self._journaled_seqs: set[int] = set()  # resume: seqs whose decision line is journaled
        self._applied_seqs: set[int] = set()  # resume: seqs whose ack/refusal is journaled
        self._catching_up = False  # resume: deciding on records written while no supervisor ran
        self._catch_up_lr: float | None = None  # the LR decided during the catch-up (later records predate it)
        self._trainer: tuple[int | None, int | None] = (None, None)  # (pid, start time) in supervisor.json
        self._restore: str | None = None  # the checkpoint the current attempt restores
        self.signals: list[int] = []  # appended by the signal handler, consumed by the loop
        self.hangups: list[int] = []  # SIGHUP (the terminal hung up): the run goes on without it
        self._writers = writers  # (control, journal) writers; default: Appenders (tests inject failing ones)
        self._handled_signals = 0
        self._garbage_seen = 0
        self._attempt_seen = 0
        self._resend_on_start = False
        self._state_key: tuple | None = None
        self._recoveries_seen = 0
        self._degraded_shown = False
        self.started = self.clock.time()
        self.report = report
        self._notify_failures: queue.SimpleQueue[EventEntry] = queue.SimpleQueue()  # from delivery threads
        self.notifier = notifier if notifier is not None else self._make_notifier()

    def _env_for(self, attempt: int) -> dict[str, str]:
        """Attempt ``attempt``'s environment: LRSUP_ATTEMPT, and LRSUP_RESTORE when a good checkpoint is known."""
        remove_temp_files(self.paths.root)  # what a killed attempt left half written (none is alive now)
        self.place.reset()
        self._log_offset = _size(self.paths.trainer_log)  # this attempt's output starts here
        env = dict(self.env)
        env[ENV_ATTEMPT] = str(attempt)
        restore = self.restore_point() if attempt > 1 else None
        if restore:
            env[ENV_RESTORE] = restore
        if attempt > 1 and self.retained:  # an experiment's checkpoints survive the restart's pruning
            env[protocol.ENV_RETAIN] = json.dumps(self.retained)
        if not restore and getattr(self.engine, "wants_probe", False):  # the LR range test, before fit 1
            env[protocol.ENV_PROBE] = "1"
        self._restore = restore
        return env

    # -- the loop -------------------------------------------------------------
    def open(self, seq: int = 0) -> None:
        """Open the display and the writers (control, journal); ``seq``: the highest seq already sent."""
        own = self.display is None  # make_display() writes to the real stdout: silence it when it closes
        self.display = self.terminal = Terminal(
            self.display or make_display(), lambda e, d: self.event(e, d), silence=own
        )
        for path in (self.paths.control, self.paths.bell, self.paths.journal, self.paths.metrics, self.paths.requests):
            check_run_file(path)
        control, journal = self._writers or (
            ControlWriter(self.paths.control, self.paths.bell),
            Appender(self.paths.journal),
        )
        self.channel = CommandChannel(control, journal, self.clock, seq=seq)

    def run(self, start: Callable[[], None] | None = None) -> int:
        """Start the trainer (or ``start()``: resume), supervise it to the end, return the exit status."""
        ended = False
        try:
            if start is None:
                self.open()
                write_private(self.paths.config, json.dumps(self.config.to_json(), indent=2) + "\n")
                self.follower.start()
                self.lifecycle.start(self.argv, self.env, self.cwd, self.clock.monotonic())
                self.write_state()  # the trainer's pid, before anything else is written: resume needs it
            else:
                start()
            while not self.tick():
                self.follower.wait(self.tick_interval)
            self._finish()
            outcome = self.lifecycle.outcome()
            gave_up = self.engine.exit_status
            if gave_up and outcome.status == 0:  # a policy gave the run up (engine.exit_status)
                outcome = type(outcome)(gave_up, f"{outcome.reason}; a policy gave the run up")
            if self.lifecycle.state is State.FATAL:
                self._fatal_report(outcome.reason)
            if outcome.status == 0 and (note := dead_model(self._final_logs or {})) is not None:
                self.event("dead_model", note)  # never a plain "completed" for a model that did not learn
                outcome = type(outcome)(0, with_dead_model(outcome.reason, self._final_logs))
            self.event("finished", f"{outcome.reason} (exit status {outcome.status})", status=outcome.status)
            self._write_last_state(outcome.status, outcome.reason)
            ended = True
            self._notify_end(outcome.status)
            return outcome.status
        finally:
            self._cleanup()
            self._close()
            if self.report and ended:
                self._write_report()

    def tick(self) -> bool:
        """One pass of the loop; True once the trainer is gone for good."""
        now = self.clock.monotonic()
        while self._handled_signals < len(self.signals):
            sig = self.signals[self._handled_signals]
            self._handled_signals += 1
            self.lifecycle.request_stop(now, f"interrupted by the user ({signal.Signals(sig).name})")
        if self.hangups:  # the terminal hung up: go on, writing to the run directory only
            self.hangups.clear()
            self.terminal.hang_up()
        self._apply_requests(now)
        self._park(now)
        if self.lifecycle.state in (State.STARTING, State.RUNNING):
            reason = self.watchdog.check(now)
            if reason is not None:
                self.lifecycle.kill(now, reason)
        self.lifecycle.transition(now)
        if self.lifecycle.attempt != self._attempt_seen:
            self._on_new_attempt()
        self._pump()
        self._journal_notify_failures()
        self._disk_condition()
        self._snapshot()
        self.write_state()
        return self.lifecycle.state.done

    def _park(self, now: float) -> None:
        """A ``park`` request, carried out once the commands sent before it are acknowledged (an
        exploit's rollback lands first), or after PARK_WAIT seconds; moot once the trainer is gone."""
        if self._parking is None:
            return
        reason, deadline = self._parking
        if self.lifecycle.state not in (State.STARTING, State.RUNNING):
            self._parking = None
            return
        if self.channel.unacked and now < deadline:
            return
        self._parking = None
        self.lifecycle.park(now, reason)

    def _on_new_attempt(self) -> None:
        """A new attempt was spawned: time it afresh, re-send (on its start) what the last one never acked."""
        attempt = self.lifecycle.attempt
        self._attempt_seen, self._resend_on_start = attempt, attempt > 1
        self.watchdog.reset()
        self._drain_events()
        if attempt > 1:
            restore = self._restore
            how = f"restoring checkpoint {restore!r}" if restore else "from scratch (no known-good checkpoint)"
            self.event("restarted", f"attempt {attempt}: {how}", attempt=attempt, restore=restore)
            self._notify("restart", {"attempt": attempt, "restore": restore})

    def _disk_condition(self) -> None:
        """Retry the journal lines waiting for space; say once when the disk fills and when it clears."""
        self.channel.flush()
        if self.channel.degraded is not None and not self._degraded_shown:
            self._degraded_shown = True  # journaled (late) once space returns
            self.event(
                "degraded", f"DEGRADED: {self.channel.degraded}; no commands are sent until it clears, training goes on"
            )
        if self.channel.recoveries != self._recoveries_seen:
            self._degraded_shown = False
            self._recoveries_seen = self.channel.recoveries
            self.event("recovered", "disk space is back: the journal is written again")

    def _snapshot(self) -> None:
        """Every ``snapshot_interval`` seconds: the engine's state after every record read so far.

        Only when every command decided on them is written (not degraded), so that what the
        snapshot says was sent is in control.jsonl; ``lrsup resume`` then replays only what
        came after it (see lrsup.supervisor.rundir.snapshot).
        """
        if self.channel.degraded is None:
            self.snapshots.maybe_write(
                self.clock.monotonic(),
                engine=self.engine,
                progress=self.progress,
                offset=self.follower.consumed,
                max_seq=self.channel.seq,
                unacked=list(self.channel.unacked),
                wall_time=self.clock.time(),
            )

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
            self.terminal.on_output_line(line)
        self._read_records()
        self._drain_events()

    def _read_records(self) -> None:
        for record in self.follower.read():
            self._on_record(record)

    # -- records --------------------------------------------------------------
    def _on_record(self, record: Record, live: bool = True) -> None:
        """One record: journal acks/errors, feed the engine, answer epoch records with their verdict.

        ``live=False`` (resume replay): the engine and the lifecycle see it, nothing is written.
        A record the supervisor cannot believe (``Credence``) is journaled as such and goes nowhere else.
        """
        doubt = self.credence.doubt(record, self.channel.seq)
        if doubt is not None:
            if live:
                self.event("unbelievable", f"a record in {protocol.METRICS_FILE} not believed: {doubt}")
            return
        lr_before = self.progress.lr
        self.progress.on_record(record)
        self.place.on_record(record)
        self.lifecycle.on_record(record)
        if isinstance(record, EpochRecord):
            self._final_logs = record.logs
        if isinstance(record, StartRecord):
            self.decided.on_start(record)
        if isinstance(record, (AckRecord, ErrorRecord)):
            self.channel.settled(record.seq)
        if not live:
            for decision in self.engine.feed(record):
                self._note_retain(decision)
                if decision.command is not None:  # sent before the crash
                    self._note_sent(decision.command, decision.lr, lr_before)
            self.engine.take_notes()  # journaled by the supervisor that read the record first
            return
        self.watchdog.on_record(record, self.clock.monotonic())
        self.terminal.on_record(record)
        if isinstance(record, (AckRecord, ErrorRecord)) and record.seq not in self._applied_seqs:
            self._journal_answer(record)  # (a resumed run's dead supervisor may have journaled it)
        sets_lr = False
        if isinstance(record, StartRecord) and not record.probe:  # a fit begins: a stage of the run
            self.journal(
                StageEntry(
                    record.fit,
                    record.optimizer,
                    record.lr,
                    record.epochs,
                    record.initial_epoch,
                    record.step,
                    record.pid,
                )
            )
        for decision in self.engine.feed(record):
            self._on_decision(decision, lr_before)
            sets_lr = sets_lr or decision.lr is not None or isinstance(decision.command, SetScheduleCommand)
        for note in self.engine.take_notes():  # who owns the LR (lr_owner entries)
            self.journal(note)
            self.terminal.on_note(note.detail)
        if isinstance(record, EpochRecord):
            # Everything decided on this epoch is written: release the trainer.
            self.send(VerdictCommand(record.epoch))
        if isinstance(record, StartRecord) and self._resend_on_start:
            self._resend_on_start = False  # the new attempt's agent is up: it reads what comes now
            self._after_restart(record, sets_lr)
        if isinstance(record, StartRecord):
            # The start barrier: decisions on the start record (and resent commands) go first.
            self.send(VerdictCommand(record.initial_epoch - 1))

    def _journal_answer(self, record: AckRecord | ErrorRecord) -> None:
        """The trainer applied (``applied``) or refused (``command_error``) a command."""
        if isinstance(record, AckRecord):
            self.journal(AppliedEntry(record.seq, record.cmd, record.epoch, record.step, record.lr, record.late))
        else:
            self.journal(CommandErrorEntry(record.seq, record.cmd, record.message))

    def _after_restart(self, record: StartRecord, sets_lr: bool) -> None:
        """A restarted attempt started: re-send what is still meaningful, and bring back the LR lrsup last decided.

        ``sets_lr``: a decision on this start record set the LR or a schedule (then that is
        the LR lrsup decided, and nothing is added).
        """
        checkpoints = getattr(self.engine, "checkpoints", ())
        restored = next((c for c in checkpoints if c.name == self._restore), None)
        fixes = [] if sets_lr else self.decided.after_restart(record, None if restored is None else restored.multiplier)
        known, lr_set = {c.name for c in checkpoints}, any(isinstance(c, SetLRCommand) for c in fixes)

        def moot(command: Command) -> str | None:
            return moot_after_restart(command, known, lr_set=lr_set)

        resent_lr = None  # the LR the last re-sent set_lr sets
        for old, new, what in self.channel.resend_unacked(moot):
            self.event(
                "resent",
                f"command seq {old}: {what}" + (f" as seq {new}" if new else ""),
                seq=new,
                original_seq=old,
            )
            command = self.channel.sent_command(new)
            if isinstance(command, SetLRCommand):
                resent_lr = command.lr
        for command in fixes:
            if isinstance(command, SetLRCommand) and resent_lr == command.lr:
                continue  # the dead attempt's set_lr, re-sent, already sets it
            if isinstance(command, SetLRCommand):
                started = f"; the attempt started at {record.lr:g}" if record.lr is not None else ""
                why = f"restart: back to the LR lrsup last decided ({command.lr:g}){started}"
            else:
                why = "restart: the checkpoint brought back an lrsup schedule no policy holds any more"
            seq = self.send(command, reason=why)
            self.event("restart_lr", f"command seq {seq}: {command.cmd}: {why}", seq=seq)

    def _note_sent(self, command: Command, lr: float | None, lr_before: float | None) -> None:
        probing = any(getattr(policy, "probing", None) for policy in getattr(self.engine, "policies", ()))
        self.decided.on_sent(command, lr, probing=probing, lr_before=lr_before)

    def _note_retain(self, decision: Decision) -> None:
        if isinstance(decision.command, RetainCommand):
            self.retained = list(decision.command.keep)

    def _already_sent(self, decision: Decision) -> int | None:
        """The seq under which a resumed run's dead supervisor sent this decision's command, if it did."""
        if not self._presend or decision.command is None:
            return None
        wanted = {"cmd": decision.command.cmd, **decision.command.args(), "reason": decision.action.reason}
        for index, sent in enumerate(self._presend):
            if _content(sent) == wanted:
                del self._presend[: index + 1]  # the ones before it were not decisions (a lost resend)
                return sent["seq"]
        return None

    def _on_decision(self, decision: Decision, lr_before: float | None = None) -> None:
        if decision.action.kind == MISSING_METRIC:
            self._say_missing_metric(decision)
            return
        self._note_retain(decision)
        sent = self._already_sent(decision)
        if sent is not None and decision.command is not None:
            self._note_sent(decision.command, decision.lr, lr_before)
        if sent is not None and sent in self._journaled_seqs:
            return  # decided, sent and journaled before the crash: nothing left to do
        action, seq, suppressed = decision.action, sent, decision.suppressed
        if decision.command is not None and sent is None:
            seq, suppressed = self._send_decided(decision)
            if seq is not None:
                self._note_sent(decision.command, decision.lr, lr_before)
                if self._catching_up and decision.lr is not None:
                    self._catch_up_lr = decision.lr
                elif self._catching_up and decision.command.cmd in ("set_schedule", "clear_schedule"):
                    self._catch_up_lr = None  # the LR follows a schedule the records cannot show yet
        self.journal(
            DecisionEntry(
                seq, action.policy, action.kind, decision.lr, action.reason, decision.epoch, decision.step, suppressed
            )
        )
        self.terminal.on_decision(decision)
        if action.kind == "rollback" and seq is not None:
            self._notify(
                "rollback",
                {
                    "seq": seq,
                    "policy": action.policy,
                    "reason": action.reason,
                    "lr": decision.lr,
                    "epoch": decision.epoch,
                    "step": decision.step,
                    "checkpoint": getattr(decision.command, "checkpoint", None),
                },
            )

    def _say_missing_metric(self, decision: Decision) -> None:
        """A metric a policy monitors is missing from a fit's epoch logs: journaled and shown (engine.metric_check)."""
        a: Any = decision.action
        entry = MissingMetricEntry(a.policy, a.metric, a.available, a.fit, decision.epoch, decision.step, a.reason)
        self.journal(entry)
        self.terminal.on_decision(decision)

    def _send_decided(self, decision: Decision) -> tuple[int | None, str | None]:
        """Send a decision's command unless held or degraded: (its seq, None) or (None, why not)."""
        if self.held_by is not None:
            return None, f"held by {self.held_by}"
        if self.channel.degraded is not None:
            return None, f"not sent: {self.channel.degraded}"
        assert decision.command is not None
        try:
            seq = self.send(decision.command, reason=decision.action.reason)
        except ProtocolError as exc:  # an engine bug must not end the run
            return None, f"invalid command not sent: {exc}"
        return seq, None if seq is not None else f"not sent: {self.channel.degraded}"

    def send(self, command: Command, *, reason: str | None = None) -> int | None:
        """Send one command; its seq, or None when not sent (the disk is full)."""
        return self.channel.send(command, reason=reason)

    # -- operator requests (lrsup.supervisor.run.operator) -----------------------
    def hold(self, who: str, why: str | None = None) -> None:
        """Hold the policies: their decisions are journaled as suppressed, no command is sent."""
        self.held_by = who
        because = f" ({why})" if why else ""
        self.event("hold", f"policies held by {who}{because}: decisions are journaled, not sent", who=who)

    def release(self, who: str, why: str | None = None) -> None:
        """End a hold: decisions are sent again."""
        self.held_by = None
        because = f" ({why})" if why else ""
        self.event("released", f"policies released by {who}{because}", who=who)

    def apply_request(self, request: Request, now: float, position: tuple[int, int] | None = None) -> None:
        """Apply one operator request, exactly once: a ``request`` journal line first, then its effect.

        ``position``: (offset, index), where the request's batch of requests.jsonl starts and
        its place in it; the journal line carries it, and the seq its (last) command is to get,
        so that ``lrsup resume`` goes on after it and knows whether its commands were written
        (a PBT request's are planned first: lrsup.supervisor.run.operator.plan_pbt).
        """
        pbt = request.op in PBT_OPS
        planned = plan_pbt(self, request) if pbt else []
        count = len(planned) if pbt else int(request.op in ("set_lr", "stop"))  # the commands it sends
        offset, index = position if position is not None else (None, None)
        skip = 0  # its commands written before the supervisor died (a PBT request sends several)
        if position is None or position != self._request_journaled:
            seq = self.channel.seq + count if count else None  # its last command's
            self.journal(RequestEntry(request.op, request.who, request.why, request.lr, seq, offset, index))
        else:  # journaled, then the supervisor died before its last command (or a PBT request's event) was written
            skip = 0 if self._request_missing is None else max(0, count - self._request_missing)
        because = f" ({request.why})" if request.why else ""
        if request.op == "hold":
            self.hold(request.who, request.why)
        elif request.op == "release":
            self.release(request.who, request.why)
        elif request.op == "set_lr":
            self._override(request, because)
        elif request.op == "stop":
            self.send(StopCommand(), reason=f"stop requested by {request.who}{because}")
            reason = f"stopped by {request.who}{because}"
            self.lifecycle.request_graceful_stop(now, reason, self.config.run.stop_timeout)
        elif request.op == "park":  # its population takes turns for the queue's slots: once its commands landed
            self._parking = (f"parked by {request.who}{because}", now + PARK_WAIT)
        elif request.op == "unpark":
            self.lifecycle.unpark(now, f"unparked by {request.who}{because}")
        elif pbt:  # population-based training (lrsup.supervisor.queue.population)
            apply_pbt(self, request, planned, skip)

    def _override(self, request: Request, because: str) -> None:
        assert request.lr is not None  # a set_lr request's (parse_request)
        seq = self.send(SetLRCommand(request.lr), reason=f"operator override by {request.who}{because}")
        if seq is not None:
            self.decided.on_sent(SetLRCommand(request.lr), request.lr, probing=False, lr_before=None)
        suppressed = None if seq is not None else f"not sent: {self.channel.degraded}"
        self.journal(OverrideEntry(request.who, request.why, request.lr, seq, suppressed))
        self.event("override", f"{request.who} set the learning rate to {request.lr:g}{because}", seq=seq)

    def _apply_requests(self, now: float) -> None:
        """The operator requests that arrived since the last tick (requests.jsonl), each applied once."""
        reader = self.requests
        if self.lifecycle.state.done or reader.refused is not None:
            return
        start = reader.offset
        try:
            requests = reader.read()
        except (RunDirError, OSError) as exc:  # replaced by a symlink, another user's...: ignored from now on
            reader.refused = str(exc)
            self.event("bad_request", f"operator requests ignored from now on: {exc}")
            return
        done = self._requests_done
        if requests:
            self._requests_done = None
        for index, request in enumerate(requests):
            if done is not None and start == done[0] and index <= done[1]:
                continue  # acted on before the supervisor's crash
            self.apply_request(request, now, (start, index))
        while reader.errors:
            self.event("bad_request", reader.errors.pop(0))

    # -- taking over a run whose supervisor died (lrsup.supervisor.run.resume) --
    def take_over(self, plan: TakeOver) -> None:
        """Continue a run from its files (``run(start=...)``): replay, then reattach to the trainer or restart it.

        Before anything is decided: the hold in force, the operator requests already acted on
        and the commands already sent are restored; records already decided on (a verdict was
        sent) are replayed silently; on the records after the last verdict, a command already
        sent (``plan.presend``) is not sent again, a line already journaled not written again.
        """
        self.open(seq=plan.seq)
        self.channel.unacked = dict(plan.unacked)
        self.progress.load(plan.progress)
        self.held_by, self.retained = plan.journal.held_by, list(plan.retained)
        self._restore_requests(plan)
        self._presend = list(plan.presend)
        self._journaled_seqs, self._applied_seqs = plan.journal.decision_seqs, plan.journal.applied_seqs
        life = self.lifecycle
        life.attempt, life.turns = plan.attempt, plan.turns
        for record in plan.replay:
            self._on_record(record, live=False)
        life.pop_events()
        pid, start_time = plan.trainer
        self.event(
            "resumed",
            f"supervisor resumed after a crash: state {plan.how}, replayed {len(plan.replay)} record(s) "
            f"({plan.torn}); "
            + (
                f"reattaching to trainer pid {pid}"
                if plan.alive
                else "parked: waiting for its turn"
                if plan.parked
                else f"trainer pid {pid} is gone: restarting it"
            ),
            replayed=len(plan.replay),
            seq=self.channel.seq,
            snapshot_records=plan.progress.records,
        )
        self.follower.start()
        self.started = plan.started or self.started
        now = self.clock.monotonic()
        if plan.alive and pid is not None:
            self._log_offset = _size(self.paths.trainer_log)  # an older attempt's traceback is not this one's
            life.attach(AttachedHandle(pid, start_time, self.paths.trainer_log, self._on_output), now)
            self.watchdog.arm(now, self.progress)
            self._attempt_seen = life.attempt
        self._apply_requests(now)  # what the operator asked meanwhile (a hold) comes before any decision
        self._catch_up(plan.live)
        if not plan.alive and plan.parked and not life.state.done:  # its turn has not come: no trainer yet
            life.set_command(self.argv, self.env, self.cwd)
            life.resume_parked("the supervisor died while parked: waiting for its turn again")
        elif not plan.alive:
            self._restart_after_crash(now)

    def _catch_up(self, records: Sequence[Record]) -> None:
        """Decide on the records the trainer wrote while no supervisor ran (after the last verdict), in order.

        Each is decided once. The trainer wrote all of them before it could read any command sent
        now: once an LR has been decided on one of them, the LR the later ones carry is the old one,
        and is read as the LR decided (as if each decision had reached the trainer before its next
        epoch), so that a policy does not decide the same cut again on every epoch the trainer went
        through alone (a ``scale_lr`` applied five times over).
        """
        self._catching_up, self._catch_up_lr = True, None
        try:
            for record in records:
                if self._catch_up_lr is not None and getattr(record, "lr", None) is not None:
                    record = dataclasses.replace(record, lr=self._catch_up_lr)
                self._on_record(record)
        finally:
            self._catching_up = False

    def _restore_requests(self, plan: TakeOver) -> None:
        """Go on reading requests.jsonl after the last request acted on (its command written, if it has one)."""
        last = plan.journal.request
        if last is None or last.offset is None or last.index is None:
            return
        index = last.index
        missing = None if last.seq is None else max(0, last.seq - plan.seq)  # None: it had no command
        if missing or not pbt_done(last.op, plan.journal.after_request):
            index -= 1  # journaled, but its (last) command never reached control.jsonl, or a PBT request's
            # event never reached the journal: act on it again
            self._request_missing = missing  # its commands are written in a row: the last ones are missing
        self.requests = RequestReader(self.paths.requests, last.offset)
        self._requests_done = (last.offset, index)
        self._request_journaled = (last.offset, last.index)

    def _restart_after_crash(self, now: float) -> None:
        """The trainer died with the supervisor: restart it, unless it had ended its training cleanly."""
        life = self.lifecycle
        if life.state.done:
            return
        if self.progress.end_reason in ("completed", "stopped"):
            life.ended_unsupervised(f"the trainer had ended its training ({self.progress.end_reason}) unsupervised")
            return
        life.set_command(self.argv, self.env, self.cwd)
        self._attempt_seen = life.attempt  # tick() announces the new attempt and re-sends on its start
        life.respawn(now, "restarting the trainer after the supervisor's crash")

    # -- journal, events, state file ------------------------------------------
    def journal(self, entry: JournalEntry) -> None:
        """Append one line to journal.jsonl (kept in memory while the disk is full)."""
        self.channel.journal(entry)

    def decision_journaled(self, seq: int | None) -> bool:
        """Whether the decision line of command ``seq`` was journaled before a supervisor's death (resume)."""
        return seq is not None and seq in self._journaled_seqs

    def write_state(self, exit_status: int | None = None, reason: str | None = None) -> None:
        """Rewrite supervisor.json when something it shows changed (best effort: a full disk is tolerated)."""
        key = (self.lifecycle.state, self.lifecycle.attempt, self.held_by, self.channel.degraded, exit_status)
        if key == self._state_key:
            return
        try:
            write_state(self.paths.state, self._state(exit_status, reason))
        except OSError:
            return  # disk full: the journal's degraded condition says it; tried again on the next change
        self._state_key = key

    def _state(self, exit_status: int | None, reason: str | None) -> dict[str, Any]:
        """supervisor.json's fields (lrsup.supervisor.rundir.statefile)."""
        life = self.lifecycle
        pid = getattr(life.handle, "pid", None)
        if pid is not None and pid != self._trainer[0]:
            self._trainer = (pid, getattr(life.handle, "start_time", None) or process_start_time(pid))
        return {
            "supervisor_pid": os.getpid(),
            "supervisor_start_time": process_start_time(os.getpid()),
            "trainer_pid": pid,
            "trainer_start_time": self._trainer[1],
            "state": life.state.value,
            "attempt": life.attempt,
            "restarts": life.restarts,
            "turns": life.turns,
            "time_lost": round(life.time_lost, 3),
            "exit_status": exit_status,
            "reason": reason,
            "held": self.held_by,
            "degraded": self.channel.degraded,
            "script": self.script,
            "argv": self.argv,
            "cwd": os.fspath(self.cwd),
            "started": self.started,
            "updated": self.clock.time(),
        }

    def _write_last_state(self, exit_status: int, reason: str) -> None:
        """The journal's last lines and supervisor.json's final state, waiting for space on a full disk."""

        def write() -> bool:
            self.channel.flush()
            self.write_state(exit_status, reason)
            return not self.channel.pending and self._state_key is not None and self._state_key[-1] == exit_status

        stop = len(self.signals)
        if not wait_for_space(
            write, self.clock, self.space_wait, say, protocol.STATE_FILE, lambda: len(self.signals) > stop
        ):
            say(
                f"lrsup: disk full: supervisor.json or the journal's last lines not written within {self.space_wait:g} s"
            )

    def _crash(self) -> Crash | None:
        """How the attempt that just exited died: the traceback in its part of trainer.log, and its place."""
        return crash_from_log(_log_lines(self.paths.trainer_log, self._log_offset), self.place)

    def _fatal_report(self, reason: str) -> None:
        """Tell the person reading stderr in the morning why the run was given up."""
        say(fatal_report(self.lifecycle, self.paths.trainer_log, reason))

    def event(self, event: str, detail: str, state: State | None = None, **extra: Any) -> None:
        """Journal an event and show it."""
        self.journal(EventEntry(event, detail, extra))
        # Conditions beside the lifecycle (held, degraded) are shown by their event's name.
        shown = event if event in _CONDITION_EVENTS else (state or self.lifecycle.state).value
        self.terminal.on_state(shown, detail)
        if event in ("backoff", "restarted") and hasattr(self.display, "on_time_lost"):
            self.terminal.on_time_lost(self.lifecycle.time_lost)

    def _drain_events(self) -> None:
        for event in self.lifecycle.pop_events():
            extra: dict[str, Any] = {"returncode": self.lifecycle.returncode} if event.name == "trainer_exited" else {}
            crash = self.lifecycle.repeated_crash
            if event.name == "fatal" and crash is not None:  # the script's own words, for the journal's reader
                extra = {"exception": crash.exception, "frame": crash.frame, "traceback": list(crash.traceback)}
            self.event(event.name, event.detail, event.state, **extra)
        stats = self.follower.stats
        new, self._garbage_seen = stats.garbage - self._garbage_seen, stats.garbage
        for message in list(stats.last_errors)[-new:] if new else ():
            self.event("garbage", f"skipped a bad line in {protocol.METRICS_FILE}: {message}")
        if new > len(stats.last_errors):
            self.event("garbage", f"... {new - len(stats.last_errors)} more bad lines skipped")

    # -- notifications and the report -----------------------------------------
    def _make_notifier(self) -> Any:
        settings = self.config.notify
        if settings is None or not settings.enabled:
            return None
        from lrsup.supervisor.run.notify import Notifier

        return Notifier(settings, self._notify_failures.put, run_dir=self.paths.root)

    def _notify(self, event: str, payload: dict) -> None:
        """Start one notification; never lets a failure reach the run (the notifier journals its own)."""
        if self.notifier is None:
            return
        try:
            self.notifier.notify(event, payload)
        except Exception as exc:  # a broken notifier must not disturb the run
            self._notify_failures.put(EventEntry("notify_failed", f"{event}: {exc}"))

    def _journal_notify_failures(self) -> None:
        """Journal the failures the delivery threads reported (the journal is written from this thread only)."""
        while True:
            try:
                entry = self._notify_failures.get_nowait()
            except queue.Empty:
                return
            self.journal(entry)

    def _notify_end(self, status: int) -> None:
        """``end`` with the run's summary (and ``give_up`` on exit status 3); wait briefly for delivery."""
        if self.notifier is None:
            return
        try:
            from lrsup.supervisor.history.runinfo import load_run
            from lrsup.supervisor.run.notify import summary_payload

            payload = summary_payload(load_run(self.paths.root))
        except Exception as exc:  # the summary is a courtesy: notify without it
            payload = {"exit_status": status, "detail": f"no summary: {type(exc).__name__}: {exc}"}
        if status == EXIT_GIVE_UP:
            self._notify("give_up", payload)
        self._notify("end", payload)
        self.notifier.flush(min(NOTIFY_FLUSH, self.notifier.settings.timeout + 0.5))
        self._journal_notify_failures()

    def _write_report(self) -> None:
        """The morning report, best effort: a failure is one line on stderr, never a changed status."""
        from lrsup.supervisor.report.write import write_report

        done: list = []
        failed: list[BaseException] = []

        def write() -> bool:
            try:
                done.append(write_report(self.paths.root))
                return True
            except Exception as exc:
                failed[:] = [exc]
                return not is_enospc(exc)  # only a full disk is worth waiting for

        wait_for_space(write, self.clock, self.space_wait, say, "the report")
        if done:
            say(f"lrsup: report: {done[0].md}")
        elif failed:
            exc = failed[0]
            later = f" (write it later: lrsup report {self.paths.root})" if is_enospc(exc) else ""
            say(f"lrsup: report not written: {type(exc).__name__}: {exc}{later}")

    # -- never leave an orphan ------------------------------------------------
    def _cleanup(self) -> None:
        """Runs always: a trainer still alive (the loop failed) is stopped, then its group is reaped.

        Nothing here may raise before the group is gone: a failing drain or display (a
        closed stdout) ends the polite stop early, never the reaping.
        """
        try:
            live = self.lifecycle.state not in (State.BACKOFF, State.PARKED) and not self.lifecycle.state.done
            if self.lifecycle.handle is not None and live:
                try:
                    self.lifecycle.terminate(self.clock.monotonic(), "the supervisor is shutting down after an error")
                    deadline = self.clock.monotonic() + 2 * self.grace + 5
                    while not self.lifecycle.transition(self.clock.monotonic()).done:
                        if self.clock.monotonic() > deadline:
                            break
                        self.clock.sleep(0.05)
                    self._drain_events()  # the stop and the exit, into the journal
                except Exception:
                    pass  # the reaping below still SIGTERMs and SIGKILLs the group
            self._reap_group()  # also when the state is done: _finish may not have run or got through
            remove_temp_files(self.paths.root)
            if self.lifecycle.handle is not None:
                self.lifecycle.handle.close(timeout=1.0)
        finally:
            self.follower.stop()

    def _reap_group(self) -> None:
        """Whatever is left of the trainer's group: SIGTERM, SIGKILL after ``grace``, wait until gone.

        Signals first, journal after (a failing display cannot stop it); a signal to the
        supervisor meanwhile (Ctrl-C again) SIGKILLs at once. See process.reap_group.
        """
        from lrsup.supervisor.run.process import reap_group

        handle = self.lifecycle.handle
        if handle is None:
            return
        signals_before = len(self.signals)
        reap_group(handle, self.clock, self.grace, self.event, hurry=lambda: len(self.signals) > signals_before)

    def _close(self) -> None:
        try:
            if hasattr(self, "channel"):
                self.channel.close()
        finally:
            if self.display is not None:
                try:
                    self.display.close()
                except OSError:  # stdout closed under us (its reader died): nothing left to show
                    pass


def run(
    config: Any,
    *,
    script: Path,
    args: Sequence[str],
    run_dir: RunDir,
    cwd: Path | None = None,
    display: Display | None = None,
    spawner: Spawner | None = None,
    clock: Any = None,
    handle_signals: bool = True,
    **options: Any,
) -> int:
    """Create the run directory, supervise ``script args`` to the end, return the exit status."""
    cwd = cwd or Path.cwd()
    # Before the run directory: a failure leaves nothing.
    engine = build_engine(config)
    paths = run_dir.create()
    options.setdefault("grace", config.run.grace_period)
    options.setdefault("poll_interval", config.run.poll_interval)
    options.setdefault("report", True)
    runner: Runner | None = None
    restore: Callable[[], None] = lambda: None  # noqa: E731
    try:
        runner = Runner(
            config,
            engine,
            paths,
            trainer_argv(script, args),
            trainer_env(paths.root),
            cwd,
            spawner=spawner,
            display=display,
            clock=clock,
            script=os.fspath(script),
            **options,
        )
        if handle_signals:
            restore = install_signal_handlers(runner)
        return runner.run()
    except BaseException:
        if runner is None or (runner.lifecycle.handle is None and not runner.lifecycle.state.done):
            run_dir.discard()  # failed before a trainer was started: nothing worth keeping
        raise
    finally:
        restore()


def resume(run_dir: str | os.PathLike[str], **options: Any) -> int:
    """Take over a run whose supervisor died; the exit status (2: refused). See lrsup.supervisor.run.resume."""
    from lrsup.supervisor.run.resume import resume_run

    options.setdefault("report", True)
    return resume_run(Path(run_dir), **options)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _log_lines(path: Path, offset: int | None, limit: int = 1 << 16) -> list[str]:
    """The last ``limit`` bytes of ``path`` from ``offset`` on (None: the last ``limit`` bytes), as lines."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(offset or 0, end - limit))
            return f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
