"""When a dead or hung trainer is restarted, and when it is given up (pure, ``now`` passed in).

Two small objects the runner and the lifecycle consult:

- :class:`RestartPolicy`: after a failed attempt, wait ``min(base * 2**k, cap)`` seconds
  (k: restarts within the window so far) and restart, at most ``max_restarts`` times
  within ``window`` seconds; beyond that, give up (FATAL). A script that fails before
  its first epoch record twice in a row is given up at once: a fast-failing program
  (an ImportError, a typo) is never restarted all night (supervisord's known trap).
  An attempt that dies in the first epoch after it resumed from a checkpoint counts the
  same way, and is said so (the run had trained; it is the resumed epoch that fails).
- The same crash twice: an attempt that died in training with the same exception (type,
  message, the script's innermost frame: :class:`Crash`, read from its traceback by
  :func:`crash_from_log`) in the same fit and epoch as an earlier attempt is given up at
  once: a deterministic bug (a callback that raises at epoch 4) is never retried blindly.
- :class:`Watchdog`: a trainer that sent no record at all for ``hang_timeout`` seconds
  (SIGSTOPped, deadlocked with its heartbeat thread) is hung; one whose records show no
  larger ``step`` for ``stall_timeout`` seconds is stalled. Stall timing starts at the
  first batch/epoch record of an attempt, so compiling the first batch never counts,
  and a slow trainer whose batches keep coming is never killed. Hang timing starts at
  the start record (the agent beats only while a fit runs), so the time before it is
  timed on its own: an attempt with no start record ``start_timeout`` seconds after it
  was spawned (data loading or model building that hangs before ``fit``) is hung too.
  An end record stops hang and stall timing until the next start record (evaluating or
  saving after ``fit`` beats no heart, and is not a hang).

Example::

    policy = RestartPolicy(max_restarts=5, window=3600, base=5, cap=300)
    verdict = policy.on_failure(now, reached_epoch=True)
    if verdict.give_up: ... else: restart after verdict.delay seconds
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from lrsup.supervisor.protocol.commands import (
    ClearScheduleCommand,
    Command,
    RollbackCommand,
    ScaleLRCommand,
    SetLRCommand,
    SetScheduleCommand,
)
from lrsup.supervisor.protocol.wire import BatchRecord, EndRecord, EpochRecord, Record, StartRecord
from lrsup.supervisor.rundir.progress import RunProgress

FAST_FAILURES_TO_GIVE_UP = 2
TRACEBACK_HEAD = "Traceback (most recent call last)"
MAX_TRACEBACK_LINES = 30
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]*)", line (?P<line>\d+), in (?P<func>.*)$')
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}")
# Frames that are not the script's own: libraries, the standard library, lrsup's launcher.
_NOT_SCRIPT = ("site-packages", "dist-packages", "/lib/python", "<frozen", "lrsup/supervisor/", "lrsup/policies/")


@dataclass(frozen=True)
class Crash:
    """How an attempt died in training: its exception, the script's innermost frame, and where.

    Two crashes are the same (:meth:`same`) when the exception line (addresses masked), the
    frame, the fit and the epoch all match: restarting cannot get past such a crash.

    Args:
        exception: str, the traceback's last line (``RuntimeError: bug ...``).
        frame: str, the innermost frame in the script's own code (``File "train.py", line 9, in on_epoch_end``).
        fit: int, the fit it died in (the start record's ``fit``).
        epoch: int | None, the epoch it died in (0-based; None: before its first epoch began).
        traceback: tuple of str, the traceback as the trainer printed it (at most 30 lines).
    """

    exception: str
    frame: str
    fit: int
    epoch: int | None
    traceback: tuple[str, ...] = field(default=(), compare=False)

    def same(self, other: "Crash") -> bool:
        return (self.exception, self.frame, self.fit, self.epoch) == (
            other.exception,
            other.frame,
            other.fit,
            other.epoch,
        )

    @property
    def where(self) -> str:
        """``in epoch 4 of fit 1`` (epochs counted from 1, as Keras prints them)."""
        epoch = "before its first epoch" if self.epoch is None else f"in epoch {self.epoch + 1}"
        return f"{epoch} of fit {self.fit}"


class AttemptPlace:
    """Where the current attempt is in training: its fit and the epoch under way (fed every record)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A new attempt: it has not started training."""
        self.fit: int | None = None
        self.epoch: int | None = None

    def on_record(self, record: Record) -> None:
        if isinstance(record, StartRecord):
            self.fit, self.epoch = record.fit, record.initial_epoch
        elif isinstance(record, EpochRecord):
            self.epoch = record.epoch + 1  # that epoch is done: the next one is under way
        elif isinstance(record, EndRecord) and record.epoch is not None:
            self.epoch = record.epoch  # the agent's own word for where fit ended


def parse_traceback(lines: Sequence[str]) -> tuple[str, str, tuple[str, ...]] | None:
    """The last traceback in ``lines``: (exception line, the script's innermost frame, the traceback), or None.

    The exception line is the first unindented line after the traceback's frames (the
    type and message; hex addresses masked so that two runs of one bug compare equal);
    the frame is the innermost ``File ...`` line outside libraries, the standard library
    and lrsup (else the innermost of all).
    """
    starts = [i for i, line in enumerate(lines) if line.startswith(TRACEBACK_HEAD)]
    if not starts:
        return None
    block = list(lines[starts[-1] :])
    frames: list[tuple[int, str]] = []
    exception = None
    for index, line in enumerate(block[1:], start=1):
        match = _FRAME.match(line)
        if match:
            frames.append((index, line.strip()))
            continue
        if frames and line and not line[0].isspace():
            exception = line.strip()
            block = block[: index + 1]
            break
    if exception is None or not frames:
        return None
    own = [text for _, text in frames if not any(mark in text for mark in _NOT_SCRIPT)]
    frame = (own or [frames[-1][1]])[-1]
    return _ADDRESS.sub("0x?", exception)[:500], frame, tuple(block[-MAX_TRACEBACK_LINES:])


def crash_from_log(lines: Sequence[str], place: AttemptPlace) -> Crash | None:
    """The attempt's :class:`Crash` from its output ``lines`` and ``place``; None before training or without a traceback."""
    if place.fit is None:
        return None  # it died before fit: the fast-failure rule judges it
    parsed = parse_traceback(lines)
    if parsed is None:
        return None
    exception, frame, traceback = parsed
    return Crash(exception, frame, place.fit, place.epoch, traceback)


class DecidedLr:
    """The LR lrsup last decided, per fit: what a restarted attempt must train at.

    Set by every LR that lrsup sent (``set_lr``, ``scale_lr``, a rollback's ``lr``, an
    operator's ``set-lr``); a schedule lrsup sends owns the LR from then on (forgotten),
    except an experiment's (a probing policy's ramp): that one keeps the LR decided before
    it, or the LR the run had when it began. A fit in which lrsup decided nothing has none:
    the script's own LR is left alone.
    """

    def __init__(self) -> None:
        self.lr: dict[int, float] = {}
        self.fit = 1

    def on_start(self, record: StartRecord) -> None:
        self.fit = record.fit

    def on_sent(self, command: Command, lr: float | None, *, probing: bool, lr_before: float | None) -> None:
        """A command lrsup sent: ``lr`` the LR it sets (None: none); ``lr_before`` the LR in force before it."""
        if isinstance(command, SetScheduleCommand):
            if not probing:
                self.lr.pop(self.fit, None)
            elif self.fit not in self.lr and lr_before is not None:
                self.lr[self.fit] = lr_before
            return
        if isinstance(command, (SetLRCommand, ScaleLRCommand, RollbackCommand)) and lr is not None:
            self.lr[self.fit] = lr

    def after_restart(self, record: StartRecord, restored_multiplier: float | None) -> list[Command]:
        """What a restarted attempt's start record needs so that it trains at the LR lrsup last decided.

        Call only when no decision on that start record set an LR or a schedule. ``restored_multiplier``:
        the restored checkpoint's lrsup multiplier (not None: it was taken under an lrsup schedule,
        which the agent restored with it and no policy sent again: it is cleared first).
        """
        expected = self.lr.get(record.fit)
        if expected is None:
            return []
        scheduled = restored_multiplier is not None
        if not scheduled and record.lr is not None and abs(record.lr - expected) <= 1e-6 * abs(expected):
            return []
        return [*([ClearScheduleCommand()] if scheduled else []), SetLRCommand(expected)]


def moot_after_restart(command: Command, checkpoints: set[str], *, lr_set: bool = False) -> str | None:
    """Why a command the dead attempt never acknowledged is not sent again to the new one (None: it is).

    A rollback to a checkpoint lrsup no longer knows (pruned, refused, abandoned) has nothing
    to go to; a schedule belongs to the attempt it was sent to (a policy whose schedule still
    holds sends it again on the new start record; an experiment's is over). ``lr_set``: the
    restart sets the LR lrsup last decided itself (:meth:`DecidedLr.after_restart`), which a
    ``scale_lr`` in flight is part of (re-sent on top, it would scale it twice).
    """
    if lr_set and isinstance(command, ScaleLRCommand):
        return "moot: the restart sets the LR lrsup last decided"
    if isinstance(command, RollbackCommand) and command.from_run is None and command.checkpoint not in checkpoints:
        return f"moot: checkpoint {command.checkpoint!r} no longer exists"
    if isinstance(command, (SetScheduleCommand, ClearScheduleCommand)):
        return "moot: a schedule belongs to the attempt it was sent to (its policy sends it again on the new start)"
    return None


@dataclass(frozen=True)
class RestartVerdict:
    """``give_up`` (with ``reason``), or restart after ``delay`` seconds (``reason`` says which restart).

    ``repeated``: the crash that was given up on had happened before, the same (the
    traceback to show is ``repeated.traceback``).
    """

    give_up: bool
    delay: float
    reason: str
    repeated: Crash | None = None


class RestartPolicy:
    """Exponential backoff, a budget of restarts per window, and the fast-failure rule.

    Args:
        max_restarts: int, restarts allowed within ``window`` (>= 0; 0 never restarts).
        window: float, seconds over which restarts are counted (> 0).
        base: float, the first backoff in seconds (> 0).
        cap: float, the longest backoff in seconds (>= base).
    """

    def __init__(self, max_restarts: int = 5, window: float = 3600.0, base: float = 5.0, cap: float = 300.0) -> None:
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts!r}")
        if not window > 0:
            raise ValueError(f"restart_window must be > 0 seconds, got {window!r}")
        if not base > 0:
            raise ValueError(f"backoff_base must be > 0 seconds, got {base!r}")
        if not cap >= base:
            raise ValueError(f"backoff_cap must be >= backoff_base ({base!r}), got {cap!r}")
        self.max_restarts, self.window, self.base, self.cap = max_restarts, window, base, cap
        self.restarts: list[float] = []  # when each restart was decided (monotonic)
        self.fast_failures = 0  # consecutive attempts that failed before their first epoch record
        self.crashes: list[Crash] = []  # each failed attempt's crash, when its traceback told one

    @property
    def total(self) -> int:
        return len(self.restarts)

    def on_failure(
        self,
        now: float,
        *,
        reached_epoch: bool,
        disk_full: str | None = None,
        crash: Crash | None = None,
        resumed: bool = False,
    ) -> RestartVerdict:
        """An attempt failed at ``now``; ``reached_epoch``: it wrote at least one epoch record.

        ``disk_full``: a phrase when the run directory's disk is full. Such a failure is not
        a program that cannot start (the fast-failure rule does not count it, nor the
        same-crash rule): it is restarted within the budget, and every reason names the full disk.
        ``crash``: the attempt's exception and place, when its traceback told them; the same
        crash as an earlier attempt's gives up at once. ``resumed``: an earlier attempt had
        trained (the run got through an epoch), so a failure before this attempt's first
        epoch record is a failure of the epoch it resumed at, not a program that cannot start.
        """
        verdict = self._decide(now, reached_epoch, disk_full is not None, crash, resumed)
        if disk_full is not None:
            return RestartVerdict(verdict.give_up, verdict.delay, f"{disk_full}; {verdict.reason}")
        return verdict

    def _decide(
        self, now: float, reached_epoch: bool, disk_full: bool, crash: Crash | None, resumed: bool
    ) -> RestartVerdict:
        if not disk_full and crash is not None:
            first = next((c for c in self.crashes if c.same(crash)), None)
            self.crashes.append(crash)
            if first is not None:
                return RestartVerdict(
                    True,
                    0.0,
                    f"the same crash twice, {crash.where}: {crash.exception} ({crash.frame}); "
                    "a restart cannot get past it",
                    repeated=crash,
                )
        if not disk_full:
            self.fast_failures = 0 if reached_epoch else self.fast_failures + 1
        if self.fast_failures >= FAST_FAILURES_TO_GIVE_UP:
            if resumed:
                return RestartVerdict(
                    True,
                    0.0,
                    f"the trainer failed {self.fast_failures} times in a row in the first epoch after resuming "
                    "from a checkpoint (earlier attempts had trained); not restarting a crash that repeats",
                )
            return RestartVerdict(
                True,
                0.0,
                f"the trainer failed before its first epoch {self.fast_failures} times "
                "in a row; not restarting a program that cannot start",
            )
        recent = [t for t in self.restarts if now - t < self.window]
        if len(recent) >= self.max_restarts:
            return RestartVerdict(
                True,
                0.0,
                f"{len(recent)} restarts within {self.window:g} s (max_restarts = {self.max_restarts}); giving up",
            )
        delay = min(self.base * 2 ** len(recent), self.cap)
        self.restarts.append(now)
        return RestartVerdict(
            False,
            delay,
            f"restart {len(recent) + 1} of at most {self.max_restarts} within {self.window:g} s, in {delay:g} s",
        )


class Watchdog:
    """Hang, stall and start detection for one trainer attempt (monotonic seconds passed in).

    Args:
        hang_timeout: float, seconds without any record (heartbeats included) before
            the trainer is declared hung (> 0).
        stall_timeout: float, seconds without a record showing a larger step, counted
            from the attempt's first batch/epoch record, before it is declared stalled (> 0).
        start_timeout: float, seconds from the attempt's spawn to its start record before
            it is declared hung (>= 0; 0: never). A trainer that is alive but has not
            started ``fit`` is not hung while it lasts, whatever it writes meanwhile.
    """

    def __init__(
        self, hang_timeout: float = 120.0, stall_timeout: float = 1800.0, start_timeout: float = 1800.0
    ) -> None:
        if not hang_timeout > 0:
            raise ValueError(f"hang_timeout must be > 0 seconds, got {hang_timeout!r}")
        if not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be > 0 seconds, got {stall_timeout!r}")
        if not start_timeout >= 0:
            raise ValueError(f"start_timeout must be >= 0 seconds (0: off), got {start_timeout!r}")
        self.hang_timeout, self.stall_timeout, self.start_timeout = hang_timeout, stall_timeout, start_timeout
        self.reset()

    def reset(self, now: float | None = None) -> None:
        """A new attempt, spawned at ``now``: nothing but its start is timed until its start record.

        Without ``now`` the start is timed from the first ``check`` (the runner checks every tick).
        """
        self.last_record: float | None = None
        self.progress_at: float | None = None
        self.step: int | None = None
        self.started = False  # a start record of this attempt was seen (and no end record since)
        self.outside_since = (
            now  # when the time outside fit began: the spawn, or the last end record (None: first check)
        )
        self.ended = False  # a fit of this attempt ended: the time outside fit is after it

    def arm(self, now: float, progress: RunProgress) -> None:
        """Time an attempt already under way (a resumed supervisor reattaching to its trainer).

        A trainer that had not started training is timed as a new attempt (``start_timeout``).
        """
        if not progress.started:
            self.reset(now)
            return
        self.last_record, self.step, self.started = now, progress.max_step, True
        self.progress_at = now if progress.progressed else None

    def on_record(self, record: Record, now: float) -> None:
        """Any record proves the trainer alive; a larger step (or the first batch/epoch) is progress."""
        if isinstance(record, StartRecord):
            self.last_record, self.step, self.started = now, record.step, True
            self.progress_at = None  # a new fit: its first batch compiles again
            return
        if isinstance(record, EndRecord):
            self.last_record = self.progress_at = None  # fit is over: no heartbeats until the next one
            # Outside fit again (an evaluate, a save, the next fit's data): start_timeout bounds it.
            self.started, self.outside_since, self.ended = False, now, True
            return
        if self.last_record is None:
            return  # records of an attempt that had not started (replayed history), or between fits
        self.last_record = now
        step = getattr(record, "step", None)
        if self.progress_at is None:
            if isinstance(record, (BatchRecord, EpochRecord)):
                self.progress_at, self.step = now, step  # compile is over: stall timing starts
            return
        if isinstance(step, int) and (self.step is None or step > self.step):
            self.progress_at, self.step = now, step

    def check(self, now: float) -> str | None:
        """Why the trainer must be killed (hung / stalled / never started), or None."""
        if not self.started and self.start_timeout > 0:
            if self.outside_since is None:
                self.outside_since = now
            elif now - self.outside_since > self.start_timeout:
                if self.ended:
                    return (
                        f"trainer hung after fit: neither a new fit nor an exit {now - self.outside_since:.0f} s "
                        f"after fit ended (start_timeout = {self.start_timeout:g} s)"
                    )
                return (
                    f"trainer hung before training: no start record {now - self.outside_since:.0f} s after it "
                    f"was started (start_timeout = {self.start_timeout:g} s)"
                )
        if self.last_record is not None and now - self.last_record > self.hang_timeout:
            return (
                f"trainer hung: no record or heartbeat for {now - self.last_record:.0f} s "
                f"(hang_timeout = {self.hang_timeout:g} s)"
            )
        if self.progress_at is not None and now - self.progress_at > self.stall_timeout:
            return (
                f"trainer stalled: no step progress past step {self.step} for {now - self.progress_at:.0f} s "
                f"(stall_timeout = {self.stall_timeout:g} s)"
            )
        return None
