"""When a dead or hung trainer is restarted, and when it is given up (pure, ``now`` passed in).

Two small objects the runner and the lifecycle consult:

- :class:`RestartPolicy`: after a failed attempt, wait ``min(base * 2**k, cap)`` seconds
  (k: restarts within the window so far) and restart, at most ``max_restarts`` times
  within ``window`` seconds; beyond that, give up (FATAL). A script that fails before
  its first epoch record twice in a row is given up at once: a fast-failing program
  (an ImportError, a typo) is never restarted all night (supervisord's known trap).
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

from dataclasses import dataclass

from lrsup.supervisor.protocol.wire import BatchRecord, EndRecord, EpochRecord, Record, StartRecord
from lrsup.supervisor.rundir.progress import RunProgress

FAST_FAILURES_TO_GIVE_UP = 2


@dataclass(frozen=True)
class RestartVerdict:
    """``give_up`` (with ``reason``), or restart after ``delay`` seconds (``reason`` says which restart)."""

    give_up: bool
    delay: float
    reason: str


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

    @property
    def total(self) -> int:
        return len(self.restarts)

    def on_failure(self, now: float, *, reached_epoch: bool, disk_full: str | None = None) -> RestartVerdict:
        """An attempt failed at ``now``; ``reached_epoch``: it wrote at least one epoch record.

        ``disk_full``: a phrase when the run directory's disk is full. Such a failure is not
        a program that cannot start (the fast-failure rule does not count it): it is
        restarted within the budget, and every reason names the full disk.
        """
        verdict = self._decide(now, reached_epoch, disk_full is not None)
        if disk_full is not None:
            return RestartVerdict(verdict.give_up, verdict.delay, f"{disk_full}; {verdict.reason}")
        return verdict

    def _decide(self, now: float, reached_epoch: bool, disk_full: bool) -> RestartVerdict:
        if not disk_full:
            self.fast_failures = 0 if reached_epoch else self.fast_failures + 1
        if self.fast_failures >= FAST_FAILURES_TO_GIVE_UP:
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
