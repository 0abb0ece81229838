"""The agent's heartbeat: a daemon thread writing a ``heartbeat`` record every interval.

Owns ``Heartbeats``, the part of ``Agent`` that starts and stops the thread. The thread
reads ``Agent._position`` (a tuple replaced whole, so it always sees a consistent pair)
and writes through ``Agent._write``, which holds the write lock. Standard library only.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from lrsup.supervisor.agent.records import warn
from lrsup.supervisor.agent.settings import AgentError
from lrsup.supervisor.protocol.wire import HeartbeatRecord


class Heartbeats:
    """Heartbeat records for ``Agent`` every ``settings.heartbeat_interval`` seconds while a fit runs."""

    _heartbeat: tuple[threading.Thread, threading.Event] | None
    _position: tuple[int | None, int]
    settings: Any

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None:
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._beat, args=(stop,), name="lrsup-heartbeat", daemon=True)
        self._heartbeat = (thread, stop)
        thread.start()

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is None:
            return
        thread, stop = self._heartbeat
        self._heartbeat = None
        stop.set()
        if thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.heartbeat_interval):
            epoch, step = self._position
            try:
                self._write(HeartbeatRecord(time=time.time(), epoch=epoch, step=step))  # type: ignore[attr-defined]
            except (OSError, AgentError) as exc:
                warn(f"heartbeats stopped: {exc}")
                return
