"""Snapshots of the supervisor's decision state, so that ``lrsup resume`` need not replay a whole run.

Without a snapshot, a resumed supervisor rebuilds its policies' state by replaying every
record of metrics.jsonl (about 10 s per million records). With one, it loads the engine's
state as it was after the first ``offset`` bytes of metrics.jsonl and replays only the
records after them.

The runner writes ``snapshot.json`` (mode 0600, replaced atomically) at most every
``[run] snapshot_interval`` seconds, at the end of a loop pass: after every record read so
far was decided on and the commands and verdicts for them were written to control.jsonl.
It holds:

- ``offset``: the bytes of metrics.jsonl whose records it covers, and ``tail``: the last
  (up to) 64 of those bytes, so that a replaced or rewritten file is noticed;
- ``progress``: what those records told the supervisor besides the engine, the run's
  :class:`~lrsup.supervisor.rundir.progress.RunProgress` (how many start and epoch records
  were answered with a verdict, whether training started and got through an epoch, the
  highest step, the last epoch, the current LR, the last end record's reason);
- ``max_seq`` and ``unacked``: the highest command seq sent and the commands not
  acknowledged yet then;
- ``config_sha256``: the digest of config.json, and ``engine``: ``Engine.state_dict()``.

A snapshot is used only when it fits the run directory as it is now: same config.json,
metrics.jsonl at least ``offset`` long with the same ``tail``, and control.jsonl holding at
least as many verdicts as the snapshot counts (a crash can lose the last lines written,
never the snapshot's past). Otherwise ``lrsup resume`` replays everything and says why.

Example::

    snap, why = load_snapshot(paths, history)
    if snap is not None:
        engine.load_state_dict(snap.engine)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrsup.supervisor.protocol.wire import CONFIG_FILE, METRICS_FILE
from lrsup.supervisor.rundir.progress import RunProgress
from lrsup.supervisor.rundir.statefile import read_state, write_state

SNAPSHOT_FILE = "snapshot.json"
SNAPSHOT_VERSION = 1
TAIL_BYTES = 64


@dataclass
class Snapshot:
    offset: int
    tail: str  # hex of the last TAIL_BYTES bytes before offset
    progress: RunProgress
    max_seq: int
    unacked: list[int]
    config_sha256: str
    engine: dict[str, Any]
    time: float = 0.0


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_tail(path: Path, offset: int) -> bytes | None:
    """The TAIL_BYTES bytes of ``path`` before ``offset`` (fewer near the start); None if unreadable."""
    start = max(0, offset - TAIL_BYTES)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        data = os.pread(fd, offset - start, start)
    finally:
        os.close(fd)
    return data if len(data) == offset - start else None


class SnapshotWriter:
    """Writes ``snapshot.json`` at most every ``interval`` seconds (0: never).

    Args:
        root: Path, the run directory.
        interval: float, the least number of seconds between two snapshots.
    """

    def __init__(self, root: Path, interval: float) -> None:
        self.path = Path(root) / SNAPSHOT_FILE
        self.metrics = Path(root) / METRICS_FILE
        self.config = Path(root) / CONFIG_FILE
        self.interval = interval
        self._last: float | None = None
        self._last_offset = -1
        self._config_sha256: str | None = None
        self.written = 0
        self.error: str | None = None  # the last failure (a full disk): snapshots are best effort

    def due(self, now: float, offset: int) -> bool:
        if self.interval <= 0 or offset <= 0 or offset == self._last_offset:
            return False
        return self._last is None or now - self._last >= self.interval

    def maybe_write(
        self,
        now: float,
        *,
        engine: Any,
        progress: RunProgress,
        offset: int,
        max_seq: int,
        unacked: list[int],
        wall_time: float,
    ) -> bool:
        """Write a snapshot covering the first ``offset`` bytes of metrics.jsonl if one is due."""
        if not self.due(now, offset):
            return False
        self._last = now  # also after a failure: retry at the next interval, not on every pass
        try:
            if self._config_sha256 is None:
                self._config_sha256 = file_sha256(self.config)
            tail = read_tail(self.metrics, offset)
            if tail is None:
                return False
            write_state(
                self.path,
                {
                    "snapshot": SNAPSHOT_VERSION,
                    "time": wall_time,
                    "offset": offset,
                    "tail": tail.hex(),
                    "progress": progress.to_json(),
                    "max_seq": max_seq,
                    "unacked": sorted(unacked),
                    "config_sha256": self._config_sha256,
                    "engine": engine.state_dict(),
                },
            )
        except (OSError, TypeError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        self._last_offset, self.written, self.error = offset, self.written + 1, None
        return True


def load_snapshot(root: Path, history: Any) -> tuple[Snapshot | None, str]:
    """The run directory's snapshot if it fits the files as they are now, else (None, why not).

    Args:
        root: Path, the run directory.
        history: ControlHistory, what control.jsonl holds (``verdicts``, ``max_seq``).
    """
    path = Path(root) / SNAPSHOT_FILE
    if not path.exists():
        return None, "no snapshot"
    try:
        obj = read_state(path)
        if obj.get("snapshot") != SNAPSHOT_VERSION:
            return None, f"snapshot version {obj.get('snapshot')!r} is not {SNAPSHOT_VERSION}"
        snap = Snapshot(
            offset=obj["offset"],
            tail=obj["tail"],
            progress=RunProgress.from_json(obj["progress"]),
            max_seq=obj["max_seq"],
            unacked=list(obj["unacked"]),
            config_sha256=obj["config_sha256"],
            engine=obj["engine"],
            time=float(obj.get("time") or 0.0),
        )
        if not isinstance(snap.offset, int) or isinstance(snap.offset, bool) or snap.offset < 0:
            raise ValueError(f"offset must be an integer >= 0; got {snap.offset!r}")
        if not isinstance(snap.max_seq, int) or not all(isinstance(s, int) for s in snap.unacked):
            raise ValueError("max_seq and unacked must be integers")
        if not isinstance(snap.engine, dict):
            raise ValueError("engine must be an object")
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"snapshot unreadable ({exc})"
    try:
        if file_sha256(Path(root) / CONFIG_FILE) != snap.config_sha256:
            return None, "config.json changed since the snapshot"
    except OSError as exc:
        return None, f"config.json unreadable ({exc.strerror})"
    tail = read_tail(Path(root) / METRICS_FILE, snap.offset)
    if tail is None or tail.hex() != snap.tail:
        return None, "metrics.jsonl is not the file the snapshot was taken of"
    if history.verdicts < snap.progress.verdicts or history.max_seq < snap.max_seq:
        return None, (
            f"control.jsonl holds less than the snapshot knows was sent ({history.verdicts} verdict(s), "
            f"seq {history.max_seq}; snapshot: {snap.progress.verdicts}, seq {snap.max_seq})"
        )
    return snap, f"snapshot of {snap.progress.records:,} record(s)"


__all__ = ["SNAPSHOT_FILE", "Snapshot", "SnapshotWriter", "load_snapshot"]
