"""The queue of runs: an embedded SQLite database in the runs directory (``runs/.queue/queue.sqlite``).

One table, one row per run asked for (:class:`Entry`). WAL mode and a busy timeout make it
safe for several ``lrsup queue add`` while ``lrsup queue run`` works; every change of state
is one ``UPDATE ... WHERE status = ?`` so that two writers can never both move an entry out
of the same state (``claim`` is how a run is started at most once).

Statuses: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``
(``queued`` -> ``cancelled`` too). ``group`` tags the entries a sweep added together (a
group is what ``lrsup report --group`` and, later, population-based training work on).

Example::

    store = QueueStore.open(Path("runs"))
    entry_id = store.add(NewEntry(script="train.py", args=["--lr", "0.01"], cwd="/home/ana/proj"))
    store.claim(entry_id, run_dir="runs/q1-train", gpus="0")
    store.finish(entry_id, Status.DONE, exit_status=0, reason="completed")
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterator

QUEUE_DIR = ".queue"  # under the runs directory; not a run directory (lrsup ls skips it)
DB_NAME = "queue.sqlite"
BUSY_TIMEOUT_S = 30.0


class Status(str, Enum):
    """Where an entry stands."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (Status.DONE, Status.FAILED, Status.CANCELLED)


@dataclass(frozen=True)
class NewEntry:
    """What ``queue add`` / ``sweep`` ask for.

    Args:
        script: str, the training script (relative to ``cwd``).
        args: list[str], its arguments.
        cwd: str, where the run is started.
        name: str or None, a short name (the run directory is ``q<id>-<name>``).
        group: str or None, the group (a sweep's entries share one).
        config: str or None, the ``--config`` file (absolute).
        gpus: int or None, GPUs it needs (None: one when the machine has GPUs, else none).
        cpus: float, CPUs it needs (Ray's resource request; locally informational).
        priority: int, higher first; equal priorities in arrival order.
        params: dict, what a sweep varied (shown by ``queue ls`` and ``report --group``).
    """

    script: str
    args: list[str] = field(default_factory=list)
    cwd: str = "."
    name: str | None = None
    group: str | None = None
    config: str | None = None
    gpus: int | None = None
    cpus: float = 1.0
    priority: int = 0
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One row of the queue."""

    id: int
    status: Status
    script: str
    args: list[str]
    cwd: str
    name: str | None
    group: str | None
    config: str | None
    gpus: int | None
    cpus: float
    priority: int
    params: dict
    created: float
    run_dir: str | None = None
    assigned_gpus: str | None = None  # CUDA_VISIBLE_DEVICES given to it ("" for none, None: not set)
    worker: str | None = None  # where it runs: "local" or a Ray node id
    starts: int = 0  # how often a supervisor was started for it (the first run, then resumes)
    started: float | None = None
    ended: float | None = None
    exit_status: int | None = None
    reason: str | None = None

    def to_json(self) -> dict:
        """The row as ``queue ls --json`` prints it."""
        return {
            "id": self.id,
            "name": self.name,
            "group": self.group,
            "status": self.status.value,
            "priority": self.priority,
            "script": self.script,
            "args": self.args,
            "params": self.params,
            "run_dir": self.run_dir,
            "exit_status": self.exit_status,
            "reason": self.reason,
            "gpus": self.assigned_gpus,
            "worker": self.worker,
            "starts": self.starts,
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
        }


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    script TEXT NOT NULL,
    args TEXT NOT NULL,
    cwd TEXT NOT NULL,
    name TEXT,
    grp TEXT,
    config TEXT,
    gpus INTEGER,
    cpus REAL NOT NULL,
    priority INTEGER NOT NULL,
    params TEXT NOT NULL,
    created REAL NOT NULL,
    run_dir TEXT,
    assigned_gpus TEXT,
    worker TEXT,
    starts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    ended REAL,
    exit_status INTEGER,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS entries_status ON entries (status, priority, id);
CREATE INDEX IF NOT EXISTS entries_group ON entries (grp);
"""

_COLUMNS = (
    "id, status, script, args, cwd, name, grp, config, gpus, cpus, priority, params, created, "
    "run_dir, assigned_gpus, worker, starts, started, ended, exit_status, reason"
)


def queue_dir(runs_dir: Path) -> Path:
    """Where the queue's files live: ``runs_dir/.queue``."""
    return Path(runs_dir) / QUEUE_DIR


class QueueStore:
    """The queue database. One connection per instance; open one per process.

    Args:
        path: Path of the SQLite file (created with its table when missing).
        clock: callable returning the wall-clock time (default ``time.time``).
    """

    def __init__(self, path: Path, clock=time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def open(cls, runs_dir: Path, clock=time.time) -> "QueueStore":
        """The queue of ``runs_dir`` (``runs_dir/.queue/queue.sqlite``)."""
        return cls(queue_dir(runs_dir) / DB_NAME, clock)

    def close(self) -> None:
        self._db.close()

    # -- adding and reading -------------------------------------------------
    def add(self, new: NewEntry) -> int:
        """Queue ``new``; its id."""
        cur = self._db.execute(
            "INSERT INTO entries (status, script, args, cwd, name, grp, config, gpus, cpus, priority, params, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                Status.QUEUED.value,
                new.script,
                json.dumps(list(new.args)),
                new.cwd,
                new.name,
                new.group,
                new.config,
                new.gpus,
                float(new.cpus),
                int(new.priority),
                json.dumps(new.params, sort_keys=True),
                self.clock(),
            ),
        )
        return int(cur.lastrowid or 0)

    def get(self, entry_id: int) -> Entry | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else _entry(row)

    def entries(self, *, group: str | None = None, status: Status | None = None) -> list[Entry]:
        """All entries (of ``group``, in ``status``), in arrival order."""
        where, params = _where(group=group, status=status)
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM entries{where} ORDER BY id", params).fetchall()
        return [_entry(r) for r in rows]

    def next_queued(self) -> Iterator[Entry]:
        """Queued entries in the order they are started: priority (highest first), then arrival."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE status = ? ORDER BY priority DESC, id", (Status.QUEUED.value,)
        ).fetchall()
        return (_entry(r) for r in rows)

    def groups(self) -> list[str]:
        """The groups, in order of their first entry."""
        rows = self._db.execute("SELECT grp, MIN(id) FROM entries WHERE grp IS NOT NULL GROUP BY grp ORDER BY 2")
        return [r[0] for r in rows.fetchall()]

    # -- changes of state (each one guarded by the state it leaves) ---------------
    def claim(self, entry_id: int, *, run_dir: str, gpus: str | None, worker: str = "local") -> bool:
        """queued -> running, with its run directory; False when it was not queued (taken or cancelled)."""
        cur = self._db.execute(
            "UPDATE entries SET status = ?, run_dir = ?, assigned_gpus = ?, worker = ?, started = ?, starts = 1"
            " WHERE id = ? AND status = ?",
            (Status.RUNNING.value, run_dir, gpus, worker, self.clock(), entry_id, Status.QUEUED.value),
        )
        return cur.rowcount == 1

    def restarted(self, entry_id: int, *, worker: str | None = None) -> None:
        """Count one more supervisor started for a running entry (a resume)."""
        self._db.execute(
            "UPDATE entries SET starts = starts + 1, worker = COALESCE(?, worker) WHERE id = ? AND status = ?",
            (worker, entry_id, Status.RUNNING.value),
        )

    def set_worker(self, entry_id: int, worker: str) -> None:
        """Where a running entry runs (``local``, a Ray node), once known."""
        self._db.execute(
            "UPDATE entries SET worker = ? WHERE id = ? AND status = ?", (worker, entry_id, Status.RUNNING.value)
        )

    def finish(self, entry_id: int, status: Status, *, exit_status: int | None, reason: str) -> bool:
        """running -> done | failed | cancelled; False when it was not running."""
        if not status.final:
            raise ValueError(f"status must be done, failed or cancelled; got status={status.value!r}")
        cur = self._db.execute(
            "UPDATE entries SET status = ?, exit_status = ?, reason = ?, ended = ? WHERE id = ? AND status = ?",
            (status.value, exit_status, reason, self.clock(), entry_id, Status.RUNNING.value),
        )
        return cur.rowcount == 1

    def cancel(self, entry_id: int | None = None, *, group: str | None = None, reason: str = "cancelled") -> list[int]:
        """Cancel queued entries (by id, or all of ``group``); the ids cancelled. Running ones are left."""
        if (entry_id is None) == (group is None):
            raise ValueError("cancel takes an entry id or a group, not both")
        column, value = ("id", entry_id) if entry_id is not None else ("grp", group)
        with self._transaction():
            ids = [
                r[0]
                for r in self._db.execute(
                    f"SELECT id FROM entries WHERE {column} = ? AND status = ?", (value, Status.QUEUED.value)
                )
            ]
            self._db.executemany(
                "UPDATE entries SET status = ?, reason = ?, ended = ? WHERE id = ? AND status = ?",
                [(Status.CANCELLED.value, reason, self.clock(), i, Status.QUEUED.value) for i in ids],
            )
        return ids

    def _transaction(self):
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *exc: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _where(**filters) -> tuple[str, tuple]:
    clauses, params = [], []
    if filters.get("group") is not None:
        clauses.append("grp = ?")
        params.append(filters["group"])
    if filters.get("status") is not None:
        clauses.append("status = ?")
        params.append(filters["status"].value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _entry(row: tuple) -> Entry:
    (id_, status, script, args, cwd, name, grp, config, gpus, cpus, priority, params, created) = row[:13]
    (run_dir, assigned, worker, starts, started, ended, exit_status, reason) = row[13:]
    return Entry(
        id=id_,
        status=Status(status),
        script=script,
        args=json.loads(args),
        cwd=cwd,
        name=name,
        group=grp,
        config=config,
        gpus=gpus,
        cpus=cpus,
        priority=priority,
        params=json.loads(params),
        created=created,
        run_dir=run_dir,
        assigned_gpus=assigned,
        worker=worker,
        starts=starts,
        started=started,
        ended=ended,
        exit_status=exit_status,
        reason=reason,
    )
