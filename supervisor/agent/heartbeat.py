"""The agent's heartbeat: a daemon thread writing a ``heartbeat`` record every interval.

Owns ``Heartbeats``, the agent's collaborator that starts and stops the thread. The
thread reads the training position through a callable (the agent's ``position``, a tuple
replaced whole, so it always sees a consistent pair) and writes through the
``RecordWriter``, which holds the write lock. Standard library only.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from lrsup.supervisor.agent.records import RecordWriter, warn
from lrsup.supervisor.agent.settings import AgentError
from lrsup.supervisor.protocol.wire import HeartbeatRecord


class Heartbeats:
    """Heartbeat records every ``interval`` seconds while a fit runs.

    Args:
        records: RecordWriter.
        interval: float, seconds between beats (bounded by the protocol: see protocol/bounds.py).
        position: callable returning (epoch or None, step).
    """

    def __init__(self, records: RecordWriter, interval: float, position: Callable[[], tuple[int | None, int]]) -> None:
        self.interval = interval
        self._records = records
        self._position = position
        self._thread: tuple[threading.Thread, threading.Event] | None = None

    def start(self) -> None:
        """Start beating (nothing if already running)."""
        if self._thread is not None:
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._beat, args=(stop,), name="lrsup-heartbeat", daemon=True)
        self._thread = (thread, stop)
        thread.start()

    def stop(self) -> None:
        """Stop beating and wait for the thread (at most 5 s). Safe to call twice."""
        if self._thread is None:
            return
        thread, stop = self._thread
        self._thread = None
        stop.set()
        if thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            epoch, step = self._position()
            try:
                self._records.write(HeartbeatRecord(time=time.time(), epoch=epoch, step=step))
            except (OSError, AgentError) as exc:
                warn(f"heartbeats stopped: {exc}")
                return
