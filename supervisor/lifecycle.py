"""The run's lifecycle: one state machine, advanced by events and one tick.

States (supervisord style)::

    STARTING --start record--> RUNNING
    STARTING/RUNNING --request_stop--> STOPPING   (SIGINT to the trainer, then SIGTERM
                                                   to its group after ``grace``, then SIGKILL)
    STARTING/RUNNING/STOPPING --exit 0--> EXITED
    STARTING/RUNNING/STOPPING --exit != 0 or signal--> FAILED
    (spawn) --cannot start--> FAILED

``change_state`` is the only place the state is set. The machine never sleeps
and never reads a clock: ``now`` (monotonic seconds) is passed to ``start``,
``request_stop`` and ``transition``. It touches processes only through the
spawner seam (lrsup.supervisor.process), so its tests use a fake spawner.

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
from typing import Mapping, NamedTuple, Sequence

from lrsup.supervisor.process import Handle, Spawner
from lrsup.supervisor.protocol import EndRecord, Record, StartRecord

EXIT_INTERRUPTED = 130


class State(Enum):
    STARTING = "starting"  # spawned, no start record yet
    RUNNING = "running"  # the trainer announced training (start record)
    STOPPING = "stopping"  # the user asked to stop; signals escalate on a timer
    EXITED = "exited"  # the trainer exited with status 0
    FAILED = "failed"  # non-zero status, killed by a signal, or never started

    @property
    def done(self) -> bool:
        return self in (State.EXITED, State.FAILED)


class StopPhase(Enum):
    INTERRUPT = "SIGINT to the trainer"
    TERMINATE = "SIGTERM to the trainer's process group"
    KILL = "SIGKILL to the trainer's process group"


# The event each state's entry is journaled as.
_EVENTS = {
    State.STARTING: "spawned",
    State.RUNNING: "started",
    State.STOPPING: "stop_requested",
    State.EXITED: "trainer_exited",
    State.FAILED: "trainer_exited",
}


class Event(NamedTuple):
    """Something that happened, for the journal and the display; ``state`` is the state just after."""

    name: str
    detail: str
    state: State


@dataclass(frozen=True)
class Outcome:
    status: int
    reason: str


class Lifecycle:
    """Owns the trainer process from spawn to exit status.

    Args:
        spawner: Spawner, the system-call seam.
        grace: float, seconds between SIGINT, SIGTERM and SIGKILL when stopping.
    """

    def __init__(self, spawner: Spawner, *, grace: float = 10.0) -> None:
        if grace < 0:
            raise ValueError(f"grace must be >= 0 seconds, got {grace!r}")
        self.spawner = spawner
        self.grace = grace
        self.state = State.STARTING
        self.handle: Handle | None = None
        self.returncode: int | None = None
        self.stop_reason: str | None = None  # set by request_stop: the user's interrupt
        self.phase: StopPhase | None = None
        self._deadline: float | None = None
        self._start_error: str | None = None
        self._start_status = 0
        self._started_training = False
        self._end_reason: str | None = None
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
    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        """Spawn the trainer. The state stays STARTING, or becomes FAILED if it cannot start."""
        try:
            self.handle = self.spawner.spawn(argv, env, cwd)
        except OSError as exc:
            # (spawn) -> FAILED: exec failed; shell conventions 127 (not found) / 126 (not runnable).
            self._start_status = 127 if isinstance(exc, FileNotFoundError) else 126
            self._start_error = f"trainer failed to start: {exc.strerror or exc} ({argv[0]!r})"
            self.change_state(State.FAILED, self._start_error, event="failed_to_start")
            return
        self._events.append(Event("spawned", f"trainer pid {self.handle.pid}", self.state))

    def on_record(self, record: Record) -> None:
        """A record from the trainer (also after exit, while the runner drains the file)."""
        if isinstance(record, StartRecord):
            self._started_training = True
            if self.state is State.STARTING:
                # STARTING -> RUNNING: the agent is up and fit() has begun.
                self.change_state(State.RUNNING, _describe_start(record))
        elif isinstance(record, EndRecord):
            self._end_reason = record.reason  # no edge: the exit status decides

    def on_exit(self, returncode: int) -> None:
        """The trainer exited (``returncode`` < 0: killed by that signal)."""
        if self.state.done:
            return
        self.returncode = returncode
        # STARTING/RUNNING/STOPPING -> EXITED on status 0, FAILED otherwise.
        new = State.EXITED if returncode == 0 else State.FAILED
        self.phase, self._deadline = None, None
        self.change_state(new, describe_returncode(returncode))

    def request_stop(self, now: float, reason: str = "interrupted by the user") -> None:
        """The user asked to stop (Ctrl-C / SIGTERM). A second request escalates at once."""
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
        """Emergency stop (the supervisor itself failed): SIGTERM the group now, SIGKILL after grace."""
        if self.state.done or self.handle is None:
            return
        # STARTING/RUNNING/STOPPING -> STOPPING, skipping the polite SIGINT (or keeping a later phase).
        self.change_state(State.STOPPING, reason)
        if self.phase in (None, StopPhase.INTERRUPT):
            self._signal(StopPhase.TERMINATE, now)

    def transition(self, now: float) -> State:
        """One tick: notice the trainer's exit, escalate a stop whose grace has run out."""
        if self.state.done or self.handle is None:
            return self.state
        returncode = self.handle.poll()
        if returncode is not None:
            self.on_exit(returncode)
        elif self.state is State.STOPPING and self._deadline is not None and now >= self._deadline:
            # STOPPING -> STOPPING: the trainer ignored the last signal for ``grace`` seconds.
            self._signal(StopPhase.TERMINATE if self.phase is StopPhase.INTERRUPT else StopPhase.KILL, now)
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
    def outcome(self) -> Outcome:
        """The supervisor's exit status and why; meaningful once ``state.done``."""
        if self._start_error is not None:
            return Outcome(self._start_status, self._start_error)
        rc = self.returncode
        if rc is None:
            return Outcome(1, f"trainer still {self.state.value}")
        if self.stop_reason is not None:
            return Outcome(EXIT_INTERRUPTED, f"{self.stop_reason}; {describe_returncode(rc)}")
        if rc < 0:
            return Outcome(128 - rc, describe_returncode(rc))
        if rc > 0:
            extra = " (training raised an exception)" if self._end_reason == "exception" else ""
            return Outcome(rc, describe_returncode(rc) + extra)
        if self._end_reason == "stopped":
            return Outcome(0, "training stopped early by a policy")
        if self._end_reason == "completed":
            return Outcome(0, "training completed")
        if not self._started_training:
            return Outcome(0, "trainer exited with status 0 without starting training")
        return Outcome(0, "trainer exited with status 0")


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
    parts = [f"training started (pid {record.pid}"]
    if record.optimizer:
        parts.append(f", {record.optimizer}")
    if record.lr is not None:
        parts.append(f", lr={record.lr:g}")
    if record.epochs is not None:
        parts.append(f", {record.epochs} epochs")
    return "".join(parts) + ")"
