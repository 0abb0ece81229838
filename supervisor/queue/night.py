"""``lrsup queue run``: the daemon's loop around the scheduler (lock, signals, journal, notification).

One ``queue run`` per queue: it holds an exclusive lock on ``runs/.queue/daemon.lock`` (a second
one exits 2, naming the first one's pid). Signal handlers only record the signal; the loop
acts on it: the first SIGTERM/SIGINT/SIGHUP drains (no new runs; running ones stopped cleanly,
or with ``finish`` left to end), a second one stops them even under ``finish``. Each event goes
to ``runs/.queue/daemon.jsonl`` and, one line each, to ``out``. At the end, the ``[notify]``
settings of the configuration get an ``end`` notification with the queue's counts.

Example::

    status = run_queue(QueueOptions(runs_dir=Path("runs"), slots=2, gpus=["0", "1"]))
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from lrsup.supervisor.queue.daemon import Scheduler, Spawner
from lrsup.supervisor.queue.population import CoordinatorHost, Populations
from lrsup.supervisor.queue.store import Entry, QueueStore, Status, queue_dir

LOCK_NAME = "daemon.lock"
JOURNAL_NAME = "daemon.jsonl"
POLL_INTERVAL = 0.5


class QueueBusyError(RuntimeError):
    """Another ``queue run`` holds this queue."""


@dataclass
class QueueOptions:
    """What ``lrsup queue run`` was asked.

    Args:
        runs_dir: Path, the runs directory (the queue is in its ``.queue``).
        slots: int, supervisors at a time.
        gpus: list[str], GPU ids to hand out (empty: none).
        per_gpu: int, runs one GPU may hold at once.
        follow: bool, keep waiting for new entries when the queue is empty.
        finish: bool, on SIGTERM let running runs finish instead of stopping them.
        notify: NotifySettings or None, where the end of the queue is announced.
        poll_interval: float, seconds between ticks.
        place_gpus: bool, hand out ``gpus`` here (False on Ray, which places GPUs itself).
    """

    runs_dir: Path
    slots: int = 1
    gpus: list[str] = field(default_factory=list)
    per_gpu: int = 1
    follow: bool = False
    finish: bool = False
    notify: Any = None
    poll_interval: float = POLL_INTERVAL
    place_gpus: bool = True


class DaemonLock:
    """An exclusive ``flock`` on the queue's lock file, holding the owner's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise QueueBusyError(f"another lrsup queue run (pid {owner}) is running this queue") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Journal:
    """The daemon's events: JSON lines in ``daemon.jsonl``, and one readable line each on ``out``."""

    def __init__(self, path: Path, out: TextIO | None) -> None:
        self.path, self.out = path, out

    def __call__(self, event: str, entry: Entry | None, detail: str) -> None:
        line = {"time": time.time(), "event": event, "id": entry.id if entry else None, "detail": detail}
        if entry is not None and entry.group:
            line["group"] = entry.group
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        if self.out is not None:
            who = f"q{entry.id} " if entry is not None else ""
            print(f"lrsup queue: {who}{event}: {detail}", file=self.out, flush=True)


def run_queue(
    options: QueueOptions,
    spawner: Spawner,
    *,
    out: TextIO | None = sys.stdout,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    populations: CoordinatorHost | None = None,
) -> int:
    """Run the queue until it is empty (or drained); 0, or 2 when another daemon holds it.

    ``populations``: where the PBT groups' coordinators run (``queue run --ray``: a Ray actor);
    by default here, reading the members' records from their run directories.
    """
    qdir = queue_dir(options.runs_dir)
    lock = DaemonLock(qdir / LOCK_NAME)
    lock.acquire()
    store = QueueStore.open(options.runs_dir)
    journal = Journal(qdir / JOURNAL_NAME, out)
    scheduler = Scheduler(
        store,
        spawner,
        options.runs_dir,
        slots=options.slots,
        gpus=options.gpus,
        per_gpu=options.per_gpu,
        emit=journal,
        place_gpus=options.place_gpus,
    )
    if populations is None:  # PBT groups (lrsup sweep --pbt), their members' records read here
        populations = Populations(options.runs_dir, slots=options.slots)
    signals: list[int] = []
    restore = _record_signals(signals)
    handled = 0
    try:
        gpus = f", GPUs {','.join(options.gpus)}" if options.gpus else ""
        journal("daemon_started", None, f"pid {os.getpid()}, {options.slots} slot(s){gpus}")
        scheduler.recover(clock())
        while True:
            while handled < len(signals):
                handled += 1
                name = signal.Signals(signals[handled - 1]).name
                first = handled == 1
                journal(
                    "draining",
                    None,
                    f"{name}: " + ("letting runs finish" if first and options.finish else "stopping runs cleanly"),
                )
                scheduler.drain(finish=options.finish and first)
            scheduler.tick(clock())
            populations.tick(store.entries(), journal)
            if scheduler.idle() and (not options.follow or scheduler.draining):
                break
            sleep(options.poll_interval)
        counts = _counts(store)
        journal("daemon_ended", None, ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing ran")
        _notify_end(options, counts, journal)
        return 0
    finally:
        restore()
        store.close()
        lock.release()


def _counts(store: QueueStore) -> dict[str, int]:
    counts = {s.value: 0 for s in Status}
    for entry in store.entries():
        counts[entry.status.value] += 1
    return counts


def _notify_end(options: QueueOptions, counts: dict[str, int], journal: Journal) -> None:
    settings = options.notify
    if settings is None or not settings.enabled:
        return
    from lrsup.supervisor.protocol.journal import EventEntry
    from lrsup.supervisor.run.notify import Notifier

    def failed(entry: EventEntry) -> None:
        journal("notify_failed", None, str(entry.detail))

    notifier = Notifier(settings, failed, run_dir=options.runs_dir)
    notifier.notify("end", {"queue": True, "counts": counts, "runs_dir": str(options.runs_dir)})
    notifier.flush(settings.timeout + 1.0)


def _record_signals(signals: list[int]) -> Callable[[], None]:
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: object) -> None:
        signals.append(signum)  # only record it: the loop acts

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            break

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
