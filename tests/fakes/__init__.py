"""Test doubles for the supervisor's seams: a clock and a process spawner that record calls.

``fake_trainer.py`` beside this file is a protocol-speaking trainer script for the
integration tests (a real process, no TensorFlow).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable, Mapping, Sequence


class FakeClock:
    """``monotonic`` starts at 0 and moves only by ``advance``/``sleep``; ``time`` is a wall clock."""

    def __init__(self, start: float = 0.0, wall: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall = wall

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall + self.now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeHandle:
    """A "process" that records the signals it gets and exits when told to.

    Args:
        pid: int.
        exit_on: {signal: returncode}: the process exits with that code when sent that
            signal (to itself or its group). SIGKILL to the group always kills it (-9).
        step: optional callable run on each ``poll`` (a scripted trainer); when it
            returns an int the process exits with it.
    """

    def __init__(
        self, pid: int, exit_on: Mapping[int, int] | None = None, step: Callable[[], int | None] | None = None
    ) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.exit_on = dict(exit_on or {})
        self.step = step
        self.signals: list[int] = []  # sent to the process itself
        self.group_signals: list[int] = []  # sent to its group (signal 0 not recorded)
        self.group_members = 1  # the process itself, plus children still alive
        self.unkillable = False  # True: even SIGKILL leaves the group (a process stuck in D state)
        self.closed = False

    def exit(self, returncode: int, *, leave_children: int = 0) -> None:
        self.returncode = returncode
        self.group_members = leave_children

    def poll(self) -> int | None:
        if self.returncode is None and self.step is not None:
            rc = self.step()
            if rc is not None and self.returncode is None:  # the step may have called exit() itself
                self.exit(rc)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return  # reaped: Popen ignores it too
        self.signals.append(sig)
        if sig in self.exit_on:
            self.exit(self.exit_on[sig])

    def signal_group(self, sig: int) -> bool:
        if self.group_members == 0:
            return False
        if sig == 0:
            return True
        self.group_signals.append(sig)
        if sig == signal.SIGKILL:
            if self.returncode is None:
                self.returncode = -signal.SIGKILL
            if not self.unkillable:
                self.group_members = 0
        elif sig in self.exit_on:
            if self.returncode is None:
                self.returncode = self.exit_on[sig]
            self.group_members = 0
        return True

    def group_alive(self) -> bool:
        return self.group_members > 0

    def close(self, timeout: float = 5.0) -> None:
        self.closed = True


class FakeSpawner:
    """Hands out FakeHandles (or raises ``fail``) and remembers every spawn."""

    def __init__(
        self,
        *,
        fail: OSError | None = None,
        exit_on: Mapping[int, int] | None = None,
        step: Callable[[], int | None] | None = None,
    ) -> None:
        self.fail = fail
        self.exit_on = exit_on
        self.step = step
        self.spawned: list[tuple[list[str], dict[str, str], Path, FakeHandle]] = []

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> FakeHandle:
        if self.fail is not None:
            raise self.fail
        handle = FakeHandle(4242 + len(self.spawned), exit_on=self.exit_on, step=self.step)
        self.spawned.append((list(argv), dict(env), Path(cwd), handle))
        return handle

    @property
    def handle(self) -> FakeHandle:
        return self.spawned[-1][3]


def feed(life, record) -> None:
    """What the runner's record handler does for the lifecycle: ``progress`` first, then the edge."""
    life.progress.on_record(record)
    life.on_record(record)
