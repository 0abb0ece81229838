"""The run's lifecycle: one state machine, advanced by events and one tick.

States (supervisord style)::

    STARTING --start record--> RUNNING
    STARTING/RUNNING --request_stop--> STOPPING   (SIGINT to the trainer, then SIGTERM
                                                   to its group after ``grace``, then SIGKILL)
    STARTING/RUNNING --request_graceful_stop--> STOPPING (a ``stop`` command was sent; SIGTERM
                                                   after ``stop_timeout``, SIGKILL after ``grace``)
    STARTING/RUNNING --kill (hung/stalled)--> STOPPING (SIGTERM to the group, SIGKILL after
                                                   ``grace``); its exit takes the restart path
    STARTING/RUNNING/STOPPING --terminate (the supervisor fails)--> STOPPING (SIGTERM to the group,
                                                   SIGKILL after ``grace``); its exit is final, never
                                                   restarted (BACKOFF --terminate--> FAILED)
    STARTING/RUNNING/STOPPING --exit 0--> EXITED
    STARTING/RUNNING/STOPPING --exit != 0 or signal, restartable--> BACKOFF
    STARTING/RUNNING/STOPPING --exit != 0 or signal, restarts used up / fast failures /
                                                   the same crash twice--> FATAL
    STARTING/RUNNING/STOPPING --exit != 0 or signal, no restart policy--> FAILED
    BACKOFF --backoff elapsed--> STARTING          (a new attempt: spawned again)
    BACKOFF --request_stop--> FAILED / --request_graceful_stop--> EXITED
    STARTING/RUNNING --park--> STOPPING (SIGTERM to the group, SIGKILL after ``grace``; a PBT
                                                   member whose population takes turns for the slots)
    STOPPING --exit, parking--> PARKED             (no trainer; not a failure, no restart counted)
    PARKED --unpark--> STARTING                    (a new attempt from the newest known-good checkpoint)
    STARTING --resume_parked--> PARKED             (a resumed supervisor of a parked run: no trainer yet)
    PARKED --request_stop/terminate--> FAILED / --request_graceful_stop--> EXITED
    (spawn) --cannot start--> FAILED (first attempt) / FATAL (a restart)

A failure is restartable when a restart policy is given, nobody asked to stop, and
the trainer did not end its training cleanly (an ``end`` record ``completed`` or
``stopped`` followed by a non-zero status is the script's own status: passed through).
Before deciding, the lifecycle calls ``drain()`` so that the attempt's last records
(an epoch record, the end record) count.

``change_state`` is the only place the state is set. The machine never sleeps
and never reads a clock: ``now`` (monotonic seconds) is passed to ``start``,
``request_stop`` and ``transition``. It touches processes only through the
spawner seam (lrsup.supervisor.run.process), so its tests use a fake spawner.

What happened is queued as ``Event(name, detail, state)`` for the runner to journal
and show (``pop_events``); the exit status and its one-line reason are
``outcome()``, computed when asked so that records drained after the exit (the
end record) still count.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

from lrsup.supervisor.protocol.wire import (
    EXIT_GIVE_UP,
    EXIT_INTERRUPTED,
    EXIT_UNKNOWN,
    Record,
    StartRecord,
)
from lrsup.supervisor.run.process import Handle, Spawner
from lrsup.supervisor.run.restart import Crash, RestartPolicy
from lrsup.supervisor.rundir.progress import RunProgress

EXIT_FATAL = EXIT_GIVE_UP  # restarts used up


class State(Enum):
    STARTING = "starting"  # spawned, no start record yet
    RUNNING = "running"  # the trainer announced training (start record)
    STOPPING = "stopping"  # asked to stop (or killed as hung); signals escalate on a timer
    BACKOFF = "backoff"  # the attempt failed; waiting to restart it
    PARKED = "parked"  # no trainer: its population's turn-taking put it aside until ``unpark``
    EXITED = "exited"  # the trainer exited with status 0
    FAILED = "failed"  # non-zero status, killed by a signal, or never started (no restart)
    FATAL = "fatal"  # restarts used up, or a trainer failing fast: given up

    @property
    def done(self) -> bool:
        return self in (State.EXITED, State.FAILED, State.FATAL)


class StopPhase(Enum):
    COMMAND = "stop command to the trainer"
    INTERRUPT = "SIGINT to the trainer"
    TERMINATE = "SIGTERM to the trainer's process group"
    KILL = "SIGKILL to the trainer's process group"


# The event each state's entry is journaled as.
_EVENTS = {
    State.STARTING: "spawned",
    State.RUNNING: "started",
    State.STOPPING: "stop_requested",
    State.BACKOFF: "backoff",
    State.PARKED: "parked",
    State.EXITED: "trainer_exited",
    State.FAILED: "trainer_exited",
    State.FATAL: "fatal",
}


class Event(NamedTuple):
    """Something that happened, for the journal and the display; ``state`` is the state just after."""

    name: str
    detail: str
    state: State


@dataclass(frozen=True)
class RunExit:
    """How a supervised run ends: ``lrsup run``'s exit status and why (not history's Outcome of a finished run)."""

    status: int
    reason: str


class Lifecycle:
    """Owns the trainer process from spawn to exit status.

    Args:
        spawner: Spawner, the system-call seam.
        grace: float, seconds between SIGINT, SIGTERM and SIGKILL when stopping.
        restart: RestartPolicy | None, restart failed attempts (None: a failure is final).
        env_for_attempt: callable(attempt: int) -> mapping | None, the environment of
            attempt ``n`` (1, 2, ...); None reuses the first environment.
        drain: callable() | None, called when an exit is noticed, before deciding on it
            (the runner reads the attempt's last records).
        progress: RunProgress | None, where the run is (fed by the runner's record handler;
            read here: did training start, did this attempt get through an epoch, how its fit ended).
        disk_full: callable() -> str | None, a phrase when the run directory's disk is full
            (asked when an attempt fails, so the give-up names the disk, not the program).
        crash: callable() -> Crash | None, how the attempt that just failed died (its
            traceback's exception and frame, its fit and epoch), asked when it fails.
    """

    def __init__(
        self,
        spawner: Spawner,
        *,
        grace: float = 10.0,
        restart: RestartPolicy | None = None,
        env_for_attempt: Callable[[int], Mapping[str, str]] | None = None,
        drain: Callable[[], None] | None = None,
        progress: RunProgress | None = None,
        disk_full: Callable[[], str | None] | None = None,
        crash: Callable[[], Crash | None] | None = None,
    ) -> None:
        if grace < 0:
            raise ValueError(f"grace must be >= 0 seconds, got {grace!r}")
        self.spawner = spawner
        self.grace = grace
        self.restart = restart
        self.env_for_attempt = env_for_attempt
        self.drain = drain
        self.progress = progress if progress is not None else RunProgress()
        self.disk_full = disk_full
        self.crash = crash
        self.repeated_crash: Crash | None = None  # set when the run was given up on the same crash twice
        self.attempt = 0
        self.time_lost = 0.0  # seconds spent in failed attempts and backoff
        self.fatal_reason: str | None = None
        self.kill_reason: str | None = None  # set by kill(): hung/stalled, restart after the exit
        self.park_reason: str | None = None  # set by park(): PARKED after the exit, no restart counted
        self.turns = 0  # attempts started by unpark (not restarts)
        self.operator_stop: str | None = None  # set by request_graceful_stop
        self.shutdown_reason: str | None = None  # set by terminate: the supervisor is going away
        self._argv: list[str] = []
        self._env: Mapping[str, str] = {}
        self._cwd = Path(".")
        self._spawned_at: float | None = None
        self._now = 0.0
        self.state = State.STARTING
        self.handle: Handle | None = None
        self.returncode: int | None = None
        self.stop_reason: str | None = None  # set by request_stop: the user's interrupt
        self.phase: StopPhase | None = None
        self._deadline: float | None = None
        self._start_error: str | None = None
        self._start_status = 0
        self._events: list[Event] = []

    # -- the one setter -------------------------------------------------------
    def change_state(self, new: State, detail: str, event: str | None = None) -> None:
        """Set the state and queue the matching event (``started``, ``stop_requested``...)."""
        old, self.state = self.state, new
        if old is not new:
            self._events.append(Event(event or _EVENTS[new], detail, new))

    def pop_events(self) -> list[Event]:
        """What happened since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    # -- events ---------------------------------------------------------------
    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, now: float | None = None) -> None:
        """Spawn the trainer (attempt 1). The state stays STARTING, or becomes FAILED if it cannot start."""
        self._argv, self._env, self._cwd = list(argv), env, cwd
        self._spawn(self._now if now is None else now)

    def attach(self, handle: Handle, now: float) -> None:
        """Supervise an already-running trainer (resume): ``handle`` polls it from outside."""
        self.handle, self.attempt, self._spawned_at = handle, max(self.attempt, 1), now
        detail = f"trainer pid {handle.pid}"
        if self.progress.started and self.state is State.STARTING:
            # STARTING -> RUNNING: the attempt we attach to had started training.
            self.change_state(State.RUNNING, detail, event="attached")
        else:
            self._events.append(Event("attached", detail, self.state))

    def set_command(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        """How to start a new attempt (for a resumed run whose trainer must be restarted)."""
        self._argv, self._env, self._cwd = list(argv), env, cwd

    def respawn(self, now: float, reason: str) -> None:
        """Start a new attempt now (a resumed run whose trainer died with its supervisor)."""
        if self.state is State.STARTING:
            self._events.append(Event("restarting", reason, self.state))
        else:
            # (any) -> STARTING: a new attempt.
            self.change_state(State.STARTING, reason, event="restarting")
        self._spawn(now)

    def ended_unsupervised(self, detail: str) -> None:
        """The trainer ended its training cleanly while no supervisor watched it (resume): nothing to restart."""
        # STARTING/RUNNING -> EXITED: its end record said completed/stopped.
        self.returncode = 0
        self.change_state(State.EXITED, detail)

    def _spawn(self, now: float) -> None:
        self.attempt += 1
        env = self.env_for_attempt(self.attempt) if self.env_for_attempt is not None else self._env
        if self.handle is not None:
            self.handle.close(timeout=1.0)  # the last attempt's output is passed on; stop following it
        try:
            self.handle = self.spawner.spawn(self._argv, env, self._cwd)
        except OSError as exc:
            # (spawn) -> FAILED: exec failed; shell conventions 127 (not found) / 126 (not runnable).
            self._start_status = 127 if isinstance(exc, FileNotFoundError) else 126
            self._start_error = f"trainer failed to start: {exc.strerror or exc} ({self._argv[0]!r})"
            # (spawn) -> FATAL when it was a restart: nothing more to try.
            new = State.FATAL if self.attempt > 1 else State.FAILED
            if new is State.FATAL:
                self.fatal_reason = self._start_error
            self.change_state(new, self._start_error, event="failed_to_start")
            return
        self._spawned_at = now
        self.progress.new_attempt()
        self.returncode, self.kill_reason, self.phase, self._deadline = None, None, None, None
        self.park_reason = None
        self._events.append(
            Event(
                "spawned",
                f"trainer pid {self.handle.pid}" + (f" (attempt {self.attempt})" if self.attempt > 1 else ""),
                self.state,
            )
        )

    def on_record(self, record: Record) -> None:
        """A record from the trainer, after ``progress`` saw it (also after exit, while the runner drains).

        Only a start record is an edge; the rest (an epoch got through, how the fit ended) is
        read from ``progress`` when the exit is decided on.
        """
        if isinstance(record, StartRecord) and self.state is State.STARTING:
            # STARTING -> RUNNING: the agent is up and fit() has begun.
            self.change_state(State.RUNNING, _describe_start(record))

    def on_exit(self, returncode: int, now: float | None = None) -> None:
        """The trainer exited (``returncode`` < 0: killed by that signal)."""
        if self.state.done or self.state in (State.BACKOFF, State.PARKED):
            return
        now = self._now if now is None else now
        self.returncode = returncode
        self.phase, self._deadline = None, None
        detail = describe_returncode(returncode)
        clean = self.progress.end_reason in ("completed", "stopped") and self.kill_reason is None
        asked = any(why is not None for why in (self.stop_reason, self.operator_stop, self.shutdown_reason))
        finished = returncode == 0 and self.progress.end_reason == "completed"
        if self.park_reason is not None and not asked and not finished:
            # (a trainer that answers the SIGTERM with an end record "stopped" is still parked)
            # STOPPING -> PARKED: put aside at its population's request; a new attempt on unpark.
            self._kill_leftovers()
            self.change_state(State.PARKED, f"{self.park_reason}; {detail}")
            return
        if (returncode == 0 and self.kill_reason is None) or asked or clean or self.restart is None:
            # STARTING/RUNNING/STOPPING -> EXITED on status 0, FAILED otherwise (no restart wanted).
            self.change_state(State.EXITED if returncode == 0 else State.FAILED, detail)
            return
        if self._spawned_at is not None:
            self.time_lost += max(0.0, now - self._spawned_at)
        cause = f"{self.kill_reason}; {detail}" if self.kill_reason else detail
        full = self.disk_full() if self.disk_full is not None else None
        crash = self.crash() if self.crash is not None and returncode > 0 and not self.kill_reason else None
        verdict = self.restart.on_failure(
            now,
            reached_epoch=self.progress.attempt_progressed,
            disk_full=full,
            crash=crash,
            resumed=self.progress.progressed,
        )
        self._kill_leftovers()
        if verdict.give_up:
            # STARTING/RUNNING/STOPPING -> FATAL: restarts used up, failing before any epoch, the same crash twice.
            self.fatal_reason = f"{cause}; {verdict.reason}"
            self.repeated_crash = verdict.repeated
            self.change_state(State.FATAL, self.fatal_reason)
            return
        # STARTING/RUNNING/STOPPING -> BACKOFF: restart after the delay.
        self._deadline = now + verdict.delay
        self.time_lost += verdict.delay
        self.change_state(State.BACKOFF, f"{cause}; {verdict.reason}")

    def _kill_leftovers(self) -> None:
        if self.handle is not None and self.handle.signal_group(signal.SIGKILL):
            # What the dead attempt left in its group (a data loader, a forked child): not kept
            # alive beside the next attempt.
            self._events.append(
                Event(
                    "leftovers",
                    f"SIGKILL to what attempt {self.attempt} left in its process group (pgid {self.handle.pid})",
                    self.state,
                )
            )

    def park(self, now: float, reason: str) -> None:
        """Its population takes turns for the slots: end the trainer now (SIGTERM, SIGKILL after grace), then PARKED.

        The checkpoints stay; ``unpark`` starts a new attempt from the newest known-good one. Not a
        failure: no restart is counted, and a trainer that ends its training meanwhile just ends.
        """
        if self.state not in (State.STARTING, State.RUNNING) or self.handle is None:
            return
        self.park_reason = reason
        # STARTING/RUNNING -> STOPPING (its exit goes to PARKED).
        self.change_state(State.STOPPING, reason, event="parking")
        self._signal(StopPhase.TERMINATE, now)

    def unpark(self, now: float, reason: str) -> None:
        """Its turn has come: a new attempt from the newest known-good checkpoint (PARKED only)."""
        if self.state is not State.PARKED:
            return
        self.turns += 1
        # PARKED -> STARTING: a new attempt.
        self.change_state(State.STARTING, f"{reason} (attempt {self.attempt + 1})", event="unparked")
        self._spawn(now)

    def resume_parked(self, reason: str) -> None:
        """A resumed supervisor of a parked run (no trainer): PARKED again, until ``unpark``."""
        if self.state is State.STARTING:
            # STARTING -> PARKED: nothing to spawn before its turn.
            self.change_state(State.PARKED, reason)

    def kill(self, now: float, reason: str) -> None:
        """The trainer is hung or stalled: SIGTERM its group now, SIGKILL after grace, then restart."""
        if self.state not in (State.STARTING, State.RUNNING) or self.handle is None:
            return
        self.kill_reason = reason
        # STARTING/RUNNING -> STOPPING (its exit takes the restart path).
        self.change_state(State.STOPPING, reason, event="killing")
        self._signal(StopPhase.TERMINATE, now)

    def request_graceful_stop(self, now: float, reason: str, timeout: float) -> None:
        """An operator asked to stop: the runner sent a ``stop`` command; force it after ``timeout``."""
        if self.state.done or self.state is State.STOPPING:
            return
        self.operator_stop = reason
        if self.state in (State.BACKOFF, State.PARKED) or self.handle is None:
            # BACKOFF/PARKED -> EXITED: nothing is running; do not restart it.
            self._deadline = None
            self.change_state(State.EXITED, f"{reason} (during {self.state.value})")
            return
        # STARTING/RUNNING -> STOPPING: the trainer finishes its epoch and ends cleanly.
        self.change_state(State.STOPPING, reason)
        self.phase, self._deadline = StopPhase.COMMAND, now + timeout
        self._events.append(Event("signal", f"{StopPhase.COMMAND.value}; forced after {timeout:g} s", self.state))

    def request_stop(self, now: float, reason: str = "interrupted by the user") -> None:
        """The user asked to stop (Ctrl-C / SIGTERM). A second request escalates at once."""
        if self.state in (State.BACKOFF, State.PARKED):
            # BACKOFF/PARKED -> FAILED: interrupted while waiting to restart (or for its turn).
            self.stop_reason, self._deadline = reason, None
            self.change_state(State.FAILED, reason)
            return
        if self.state.done or self.handle is None:
            return
        if self.state is State.STOPPING:
            # STOPPING -> STOPPING: asked again, go to the next signal now (none after SIGKILL).
            if self.phase is not StopPhase.KILL:
                self._deadline = now
                self.transition(now)
            return
        # STARTING/RUNNING -> STOPPING: forward SIGINT, give the trainer ``grace`` to finish.
        self.stop_reason = reason
        self.change_state(State.STOPPING, reason)
        self._signal(StopPhase.INTERRUPT, now)

    def terminate(self, now: float, reason: str) -> None:
        """Emergency stop (the supervisor itself failed): SIGTERM the group now, SIGKILL after grace.

        The exit that follows is final: a supervisor shutting down never restarts the trainer.
        """
        if self.state.done or self.handle is None:
            return
        self.shutdown_reason = reason
        if self.state in (State.BACKOFF, State.PARKED):
            # BACKOFF/PARKED -> FAILED: shutting down while waiting to restart; nothing is running.
            self._deadline = None
            self.change_state(State.FAILED, f"{reason} (during {self.state.value})")
            return
        # STARTING/RUNNING/STOPPING -> STOPPING, skipping the polite SIGINT (or keeping a later phase).
        self.change_state(State.STOPPING, reason)
        if self.phase in (None, StopPhase.INTERRUPT):
            self._signal(StopPhase.TERMINATE, now)

    def transition(self, now: float) -> State:
        """One tick: notice the trainer's exit, escalate a stop whose time has run out, restart after backoff."""
        self._now = now
        if self.state is State.BACKOFF:
            if self._deadline is not None and now >= self._deadline:
                # BACKOFF -> STARTING: a new attempt.
                self.change_state(
                    State.STARTING, f"restarting the trainer (attempt {self.attempt + 1})", event="restarting"
                )
                self._spawn(now)
            return self.state
        if self.state.done or self.state is State.PARKED or self.handle is None:
            return self.state
        returncode = self.handle.poll()
        if returncode is not None:
            if self.drain is not None:
                self.drain()
            if getattr(self.handle, "exit_unknown", False):
                # Not our child (resumed run): its status is unknown; its end record tells.
                returncode = 0 if self.progress.end_reason in ("completed", "stopped") else EXIT_UNKNOWN
            self.on_exit(returncode, now)
        elif self.state is State.STOPPING and self._deadline is not None and now >= self._deadline:
            # STOPPING -> STOPPING: the trainer ignored the last request for its time.
            nxt = StopPhase.TERMINATE if self.phase in (StopPhase.INTERRUPT, StopPhase.COMMAND) else StopPhase.KILL
            self._signal(nxt, now)
        return self.state

    def _signal(self, phase: StopPhase, now: float) -> None:
        assert self.handle is not None
        self.phase = phase
        if phase is StopPhase.INTERRUPT:
            self.handle.send_signal(signal.SIGINT)
        else:
            self.handle.signal_group(signal.SIGTERM if phase is StopPhase.TERMINATE else signal.SIGKILL)
        self._deadline = now + self.grace if phase is not StopPhase.KILL else None
        self._events.append(Event("signal", f"{phase.value} (pid {self.handle.pid})", self.state))

    # -- result ---------------------------------------------------------------
    @property
    def restarts(self) -> int:
        """Restarts decided so far (attempts beyond the first, but those a turn started: ``turns``)."""
        beyond = self.attempt - 1 - self.turns
        return max(0, beyond) if self.restart is None else max(self.restart.total, beyond)

    def outcome(self) -> RunExit:
        """The supervisor's exit status and why; meaningful once ``state.done``."""
        if self.state is State.FATAL:
            return RunExit(EXIT_FATAL, f"gave up after {self.restarts} restart(s): {self.fatal_reason}")
        if self._start_error is not None:
            return RunExit(self._start_status, self._start_error)
        rc = self.returncode
        if self.operator_stop is not None and (rc is None or rc == 0 or self.state is State.EXITED):
            return RunExit(0, self.operator_stop)
        if rc is None:
            return RunExit(1, f"trainer still {self.state.value}")
        if self.stop_reason is not None:
            return RunExit(EXIT_INTERRUPTED, f"{self.stop_reason}; {describe_returncode(rc)}")
        if rc < 0:
            return RunExit(128 - rc, describe_returncode(rc))
        if rc > 0:
            extra = " (training raised an exception)" if self.progress.end_reason == "exception" else ""
            return RunExit(rc, describe_returncode(rc) + extra)
        if self.progress.end_reason == "stopped":
            return RunExit(0, "training stopped early by a policy")
        if self.progress.end_reason == "completed":
            return RunExit(0, "training completed")
        if not self.progress.started:
            return RunExit(0, "trainer exited with status 0 without starting training")
        return RunExit(0, "trainer exited with status 0")


def describe_returncode(returncode: int) -> str:
    """``exited with status 2`` / ``killed by signal SIGKILL (9)``."""
    if returncode >= 0:
        return f"trainer exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "signal"
    return f"trainer killed by signal {name} ({-returncode})"


def _describe_start(record: StartRecord) -> str:
    if record.probe:  # the LR range test's hidden fit: undone before the script's own fit starts
        return f"LR range test probe started (pid {record.pid}, before fit {record.fit}; undone after it)"
    parts = [f"training started (pid {record.pid}"]
    if record.optimizer:
        parts.append(f", {record.optimizer}")
    if record.lr is not None:
        parts.append(f", lr={record.lr:g}")
    if record.epochs is not None:
        parts.append(f", {record.epochs} epochs")
    return "".join(parts) + ")"
