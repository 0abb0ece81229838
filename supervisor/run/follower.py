"""Follow metrics.jsonl as the trainer appends to it.

Example::

    with Follower(paths.metrics) as follower:
        while running:
            follower.wait(0.5)           # wakes early when the file changes
            for record in follower.read():
                ...

``wait`` has three ways to learn that the file changed, tried in this order (``mode``
says which one ``start`` got):

- ``"inotify"`` (Linux): the calling thread blocks in poll(2) on an inotify descriptor
  watching the file's directory (lrsup.supervisor.run.inotify) and on a self-pipe that
  ``wake`` writes to. No thread in between, so a change wakes the loop with no hand-off
  of the GIL between Python threads.
- ``"watchdog"``: a watchdog Observer (its emitter and dispatcher threads) sets an event
  the caller waits on; used where the binding is unavailable, or with ``use_inotify=False``.
- ``"polling"``: the file's size and inode every ``poll_interval`` seconds; used when
  neither can start (no inotify instances left, a missing directory), when a watch dies
  (its directory went away), or when asked (``use_watchdog=False``).

``read`` reads only the bytes appended since the last call; a line is parsed once its
newline has arrived. Garbage lines are skipped and counted in ``stats``, never raised.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lrsup.supervisor.protocol.jsonl import CHUNK, JsonlReader, ReadStats
from lrsup.supervisor.protocol.wire import ProtocolError, Record, loads_many, parse_fast, parse_record

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

    from lrsup.supervisor.run.inotify import FileWatch

# What the follower read and skipped (``last_errors``: the newest few messages).
FollowStats = ReadStats


class Follower:
    """Reads new records from a JSON-lines file that another process appends to.

    Args:
        path: Path, the file to follow (it need not exist yet).
        use_watchdog: bool, wake on changes to the file (inotify, else a watchdog
            Observer); False polls.
        poll_interval: float, seconds between size checks when polling.
        offset: int, where to start reading (resume: the end of the records replayed);
            a file replaced or truncated later is read again from its start.
        use_inotify: bool, try the direct inotify binding first; False goes straight to
            the watchdog Observer (the reaction benchmark compares the two).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        use_watchdog: bool = True,
        poll_interval: float = 0.1,
        offset: int = 0,
        use_inotify: bool = True,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.stats = ReadStats()
        self.mode = "polling"
        self._want_watchdog = use_watchdog
        self._want_inotify = use_inotify
        self._changed = threading.Event()
        self._observer: BaseObserver | None = None
        self._watch: FileWatch | None = None  # in mode "inotify"
        self._poller: select.poll | None = None  # on the watch and the wake pipe's read end
        self._wake_lock = threading.Lock()  # wake() (another thread) never writes to a closed pipe
        self._wake_r = self._wake_w = -1
        self._reader = JsonlReader(path, offset, stats=self.stats)  # the bytes and lines; waiting is ours

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> "Follower":
        """Start watching (inotify, else watchdog, else polling). Idempotent."""
        if self._want_watchdog and self._observer is None and self._watch is None:
            if not (self._want_inotify and self._start_inotify()):
                self._start_observer()
        return self

    def _start_inotify(self) -> bool:
        """Watch the directory with the inotify binding; False (nothing left open) if it cannot."""
        try:
            from lrsup.supervisor.run import inotify
        except ImportError:  # a Python without ctypes
            return False
        if not inotify.available():
            return False
        try:
            watch = inotify.FileWatch(self.path)
        except OSError:  # a missing directory, the watch limit
            return False
        try:
            r, w = os.pipe()
        except OSError:  # out of file descriptors
            watch.close()
            return False
        os.set_blocking(r, False)
        os.set_blocking(w, False)  # a full pipe already holds a pending wake
        poller = select.poll()
        poller.register(watch.fileno(), select.POLLIN)
        poller.register(r, select.POLLIN)
        with self._wake_lock:
            self._wake_r, self._wake_w = r, w
        self._watch, self._poller = watch, poller
        self.mode = "inotify"
        return True

    def _stop_inotify(self) -> None:
        with self._wake_lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
        if self._watch is not None:
            self._watch.close()
        self._watch = self._poller = None

    def _start_observer(self) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return
        # watchdog logs a benign stop-time race at ERROR; without this Python's last-resort
        # handler would print it on the user's terminal. Configured logging still sees it.
        quiet = logging.getLogger("watchdog")
        if not any(isinstance(h, logging.NullHandler) for h in quiet.handlers):
            quiet.addHandler(logging.NullHandler())
        target = os.path.abspath(self.path)
        changed = self._changed

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # created, modified, moved, closed...
                paths = (event.src_path, getattr(event, "dest_path", ""))
                if any(os.fsdecode(p) == target for p in paths if p):
                    changed.set()

        observer = Observer()
        try:
            observer.schedule(_Handler(), os.path.dirname(target), recursive=False)
            observer.start()
        except (OSError, RuntimeError):  # inotify limits, missing directory, no thread
            self._stop_observer(observer)
            return
        self._observer = observer
        self.mode = "watchdog"

    @staticmethod
    def _stop_observer(observer) -> None:
        try:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=5)
        except (OSError, RuntimeError):
            pass

    def stop(self) -> None:
        """Stop the observer thread or close the inotify descriptors, and close the file. Safe to call twice."""
        if self._observer is not None:
            self._stop_observer(self._observer)
            self._observer = None
            self.mode = "polling"
        if self._watch is not None:
            self._stop_inotify()
            self.mode = "polling"
        self._reader.close()
        self._changed.set()  # release a waiter

    def __enter__(self) -> "Follower":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- waiting --------------------------------------------------------------
    def wake(self) -> None:
        """Make a pending or the next ``wait`` return now (e.g. trainer output arrived). Thread-safe."""
        self._changed.set()
        with self._wake_lock:
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"\0")
                except OSError:  # the pipe is full: a wake is pending already
                    pass

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until the file may have changed; True if it may have."""
        if self._watch is not None:
            fired = self._wait_inotify(timeout)
            if not self._watch.dead:
                return fired
            self._stop_inotify()  # the directory went away: poll for the path from now on
            self.mode = "polling"
            return True
        if self._observer is not None and not self._observer.is_alive():
            self._observer, self.mode = None, "polling"  # the observer died (inotify error): poll
        if self._observer is not None:
            fired = self._changed.wait(timeout)
            self._changed.clear()
            return fired
        remaining = timeout
        while True:
            if self._changed.is_set() or self._reader.changed():
                self._changed.clear()
                return True
            if remaining <= 0:
                return False
            step = min(self.poll_interval, remaining)
            if self._changed.wait(step):
                continue
            remaining -= step

    def _wait_inotify(self, timeout: float) -> bool:
        """Block in poll(2) on the watch and the wake pipe; events about other files wait on."""
        watch, poller = self._watch, self._poller
        assert watch is not None and poller is not None  # mode "inotify"
        watch_fd = watch.fileno()
        deadline = time.monotonic() + timeout
        while True:
            if self._changed.is_set():  # wake(), maybe before start(): its byte is read with it
                self._drain_wake()
                return True
            ready = {fd for fd, _ in poller.poll(max(deadline - time.monotonic(), 0.0) * 1000.0)}
            changed = watch_fd in ready and watch.drain()
            if self._wake_r in ready:
                self._drain_wake()
                return True
            if changed or watch.dead:
                return True
            if time.monotonic() >= deadline:
                return False

    def _drain_wake(self) -> None:
        self._changed.clear()
        try:
            while os.read(self._wake_r, 512):
                pass
        except OSError:  # BlockingIOError: empty
            pass

    # -- reading --------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """Whether the followed file is open (it is closed by ``stop``)."""
        return self._reader.is_open

    @property
    def consumed(self) -> int:
        """The offset after the last complete line ``read`` returned: where a new reader would go on."""
        return self._reader.consumed

    def read(self) -> list[Record]:
        """Records from the complete lines appended since the last call (maybe none)."""
        records: list[Record] = []
        for chunk in self._reader.chunks(CHUNK):
            lines = [line for line in chunk if line.strip()]
            self.stats.lines += len(lines)
            for obj in loads_many(lines):
                if type(obj) is dict and (record := parse_fast(obj)) is not None:
                    records.append(record)  # the common case, without the checked path's try
                elif (record := self._parse(obj)) is not None:
                    records.append(record)
        self.stats.records += len(records)
        return records

    def _parse(self, obj: dict | ProtocolError) -> Record | None:
        try:
            if isinstance(obj, ProtocolError):
                raise obj
            return parse_record(obj)
        except ProtocolError as exc:
            self.stats.bad(str(exc))
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # belt and braces: never fatal
            self.stats.bad(f"unreadable record: {type(exc).__name__}")
        return None
