"""Finding runs and summarising them cheaply, for ``lrsup ls``, ``status``, ``logs`` and ``watch``.

Example::

    run_dir = resolve_run("20261126T11", Path("runs"))     # a path, or a unique name prefix
    summary = summarize(run_dir)
    summary.state, summary.epoch, summary.epochs, summary.lr

Everything here reads files another process is writing, so everything is optional:
a missing or half-written ``supervisor.json`` is an empty dict, a torn or garbage
line is skipped. ``metrics.jsonl`` is never parsed whole: the start record comes
from its first 64 KiB, the latest epoch and learning rate from its last 64 KiB, and
the best epoch from a byte search for epoch lines (batch lines, the bulk of a big
file, are never decoded). Whether the supervisor lives is asked through ``pid_alive``
(:func:`lrsup.supervisor.rundir.liveness.pid_alive` by default), so tests pass a fake.
Only the keys :mod:`lrsup.supervisor.rundir.statefile` writes are read from supervisor.json.
"""

from __future__ import annotations

import os
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from lrsup.supervisor import protocol
from lrsup.supervisor.history.rows import monitor_direction
from lrsup.supervisor.protocol.journal import DecisionEntry, read_entry
from lrsup.supervisor.protocol.jsonl import JsonlReader, ReadStats, iter_objects
from lrsup.supervisor.protocol.wire import HOUSEKEEPING_ACTIONS
from lrsup.supervisor.rundir.layout import RUNS_DIR
from lrsup.supervisor.rundir.liveness import pid_alive as _pid_alive
from lrsup.supervisor.rundir.statefile import read_json

# How much of a file's head and tail the cheap readers look at.
WINDOW = 64 * 1024
# A metrics file larger than this is not scanned for the best epoch by ``ls``.
MAX_BEST_SCAN = 512 * 1024 * 1024
# Without a supervisor pid, files written in the last RECENT seconds mean "running".
RECENT = 60.0

FINAL_STATES = ("completed", "failed", "stopped", "fatal")
# Final lifecycle states (supervisor.json "state", as rundir.statefile writes it) whose meaning
# the files refine: a stop ends "exited", Ctrl-C "failed" with 130.
_REFINED = ("exited", "failed")

# Is this pid (with this start time) alive? The system-call seam; tests pass a fake.
PidAlive = Callable[[int, "int | None"], bool]


class RunRefError(ValueError):
    """RUN names no run, or more than one; the message lists the candidates."""


def supervisor_alive(state: dict, pid_alive: PidAlive | None = None) -> bool | None:
    """True / False whether supervisor.json's pid is this run's live supervisor; None: no pid recorded.

    A pid that exists but started at another time than recorded is a reused pid: False
    (the rule is :func:`lrsup.supervisor.rundir.liveness.pid_alive`'s).
    """
    pid = _int(state.get("supervisor_pid"))
    if pid is None or pid <= 0:
        return None
    return (pid_alive or _pid_alive)(pid, _int(state.get("supervisor_start_time")))


# ---------------------------------------------------------------------------
# Cheap readers


def read_state(run_dir: Path) -> dict:
    """supervisor.json as a dict; {} when missing, half-written or not an object."""
    return read_json(run_dir / protocol.STATE_FILE)[0] or {}


def _parse_lines(data: bytes, *, first_is_partial: bool) -> list[dict]:
    lines = data.split(b"\n")
    lines.pop()  # no newline yet: not a line
    if first_is_partial and lines:
        lines.pop(0)
    return _objects(lines)


def _objects(lines: list[bytes]) -> list[dict]:
    """The JSON objects among ``lines``; blank and garbage lines are skipped."""
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            out.append(protocol.loads(line))
        except protocol.ProtocolError:
            continue
    return out


def head_objects(path: Path, window: int = WINDOW) -> list[dict]:
    """The complete lines among the first ``window`` bytes of a JSON-lines file."""
    try:
        with open(path, "rb") as f:
            data = f.read(window)
    except OSError:
        return []
    return _parse_lines(data, first_is_partial=False)


def tail_objects(path: Path, window: int = WINDOW) -> list[dict]:
    """The complete lines among the last ``window`` bytes (a line cut by the window is dropped)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - window)
            f.seek(start)
            data = f.read(size - start)
    except OSError:
        return []
    return _parse_lines(data, first_is_partial=start > 0)


def scan_epoch_lines(path: Path, limit: int = MAX_BEST_SCAN) -> Iterator[dict] | None:
    """Every epoch record of a metrics file, found by a byte search (batch lines are never decoded).

    Returns None when the file is larger than ``limit`` (the caller falls back to the tail).
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        return iter(())
    if size > limit:
        return None
    return _scan(path)


def _scan(path: Path) -> Iterator[dict]:
    needle = b'"type":"epoch"'
    try:
        f = open(path, "rb")
    except OSError:
        return
    with f:
        carry = b""
        while chunk := f.read(1 << 20):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            data, carry = data[:cut], data[cut:]
            pos = data.find(needle)
            while pos >= 0:
                start = data.rfind(b"\n", 0, pos) + 1
                end = data.find(b"\n", pos)
                try:
                    obj = protocol.loads(data[start:end])
                except protocol.ProtocolError:
                    obj = None
                if obj is not None and obj.get("type") == "epoch":
                    yield obj
                pos = data.find(needle, end)


# ---------------------------------------------------------------------------
# Summaries


@dataclass
class RecentDecision:
    """One journal decision, as ``status`` shows it."""

    epoch: int | None
    step: int | None
    policy: str
    action: str
    lr: float | None
    reason: str
    suppressed: str | None
    time: float | None


@dataclass
class RunSummary:
    """What ``ls`` and ``status`` show about one run; every field may be unknown (None)."""

    path: Path
    name: str
    state: str = "unknown"  # running, completed, failed, stopped, fatal, stale, unknown
    detail: str = ""
    pid: int | None = None
    alive: bool | None = None
    epoch: int | None = None  # 1-based: epochs finished
    epochs: int | None = None
    fit: int = 1  # the current (or last) fit: a stage of the run (start records' and stage lines' ``fit``)
    step: int | None = None
    lr: float | None = None
    last_logs: dict = field(default_factory=dict)
    monitor: str | None = None
    best: float | None = None
    best_epoch: int | None = None  # 1-based
    started: float | None = None
    ended: float | None = None
    exit_status: int | None = None
    attempt: int | None = None
    restarts: int | None = None
    held: Any = None  # supervisor.json's value: null / false (no), true, or who and why
    degraded: Any = None
    decisions: list[RecentDecision] = field(default_factory=list)
    supervisor: dict = field(default_factory=dict)

    @property
    def stale(self) -> bool:
        return self.state == "stale"

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def duration(self, now: float | None = None) -> float | None:
        """Seconds from start to end (to now while it runs); None when unknown."""
        if self.started is None:
            return None
        if self.ended is not None:
            return max(0.0, self.ended - self.started)
        if self.state in ("running", "stale"):
            return max(0.0, (now if now is not None else _time.time()) - self.started)
        return None


def is_run_dir(path: Path) -> bool:
    """A directory holding at least one of the files only lrsup writes (a run's metrics, journal or state)."""
    try:
        return path.is_dir() and any(
            (path / name).is_file()
            for name in (protocol.STATE_FILE, protocol.METRICS_FILE, protocol.JOURNAL_FILE, protocol.CONFIG_FILE)
        )
    except OSError:  # a name too long, a loop of links: not a run
        return False


def list_runs(runs_dir: Path) -> list[Path]:
    """The run directories directly under ``runs_dir``, newest first (by start time, then name)."""
    try:
        entries = [p for p in runs_dir.iterdir() if is_run_dir(p)]
    except OSError:
        return []
    return sorted(entries, key=lambda p: (_started_guess(p), p.name), reverse=True)


def _started_guess(path: Path) -> float:
    started = _num(read_state(path).get("started"))
    if started is not None:
        return started
    for name in (protocol.JOURNAL_FILE, protocol.METRICS_FILE):
        t = _first_time(path / name)
        if t is not None:
            return t
    return _mtime(path)


def _first_time(path: Path) -> float | None:
    for obj in head_objects(path, 4096):
        t = _num(obj.get("time"))
        if t is not None:
            return t
    return None


def script_of(name: str) -> str:
    """The script part of a run's name: ``train`` in ``20261126T123325Z-train`` (``""`` if none)."""
    stamp, sep, rest = name.partition("-")
    return rest if sep and len(stamp) == 16 and stamp.endswith("Z") and stamp[8] == "T" else ""


def resolve_run(
    ref: str | os.PathLike[str], runs_dir: str | os.PathLike[str] = RUNS_DIR, cwd: Path | None = None
) -> Path:
    """RUN as given on the command line: a run directory's path, or what names one run in ``runs_dir``.

    A run is named by its whole name, a prefix of it (its timestamp: ``20261126T12``), or a
    prefix of its script's part (``train`` for ``20261126T123325Z-train``), in that order.

    Raises:
        RunRefError: no such run, a directory that is not a run, or a name that matches
            several runs (they are listed).
    """
    cwd = cwd or Path.cwd()
    text = os.fspath(ref)
    runs = Path(cwd, runs_dir)
    if not text:
        raise RunRefError("RUN is empty: give a run directory or a run name")
    if len(os.fsencode(text)) > 4096 or "\0" in text:
        raise RunRefError(f"RUN is not a run directory or a run name: {len(text)} characters, starting {text[:40]!r}")
    direct = Path(cwd, text)
    if _is_dir(direct) and (os.sep in text or text in (".", "..") or is_run_dir(direct)):
        if not is_run_dir(direct):
            raise RunRefError(f"{text!r} is not an lrsup run directory (it holds none of the files a run has)")
        return Path(os.path.abspath(direct))
    names = sorted((p.name for p in list_runs(runs)), reverse=True)
    matches = _matching_names(text, names)
    if len(matches) == 1:
        return Path(os.path.abspath(runs / matches[0]))
    if matches:
        raise RunRefError(
            f"{text!r} matches {len(matches)} runs in {runs_dir}; give more of the name:\n{_listed(matches)}"
        )
    if _exists(direct):
        raise RunRefError(f"{text!r} is not an lrsup run directory")
    hint = f"; runs in {runs_dir}:\n{_listed(names, 10)}" if names else f" (and {runs_dir} holds no runs)"
    raise RunRefError(f"no run {text!r}: not a directory and no run name in {runs_dir} starts with it{hint}")


def _matching_names(text: str, names: list[str]) -> list[str]:
    """The names ``text`` picks: itself, else those it starts, else those whose script part it starts."""
    if text in names:
        return [text]
    by_name = [n for n in names if n.startswith(text)]
    return by_name or [n for n in names if script_of(n).startswith(text)]


def _listed(names: list[str], limit: int = 20) -> str:
    more = f"\n  ... {len(names) - limit} more" if len(names) > limit else ""
    return "\n".join(f"  {n}" for n in names[:limit]) + more


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # ENAMETOOLONG, ELOOP: not a directory we can use
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def summarize(
    run_dir: Path,
    *,
    pid_alive: PidAlive | None = None,
    now: float | None = None,
    full_journal: bool = False,
    scan_best: bool = True,
) -> RunSummary:
    """Summarise one run from supervisor.json and the heads and tails of its files.

    Args:
        run_dir: Path, the run directory.
        pid_alive: callable(pid, start_time) -> bool, the system-call seam (default: rundir.liveness's).
        now: float | None, the wall clock (tests pass one).
        full_journal: bool, read the whole journal (``status``: the last decisions); else its tail.
        scan_best: bool, search the metrics file for every epoch record to find the best one.
    """
    now = _time.time() if now is None else now
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    s = RunSummary(path=run_dir, name=run_dir.name, supervisor=state)
    metrics, journal = run_dir / protocol.METRICS_FILE, run_dir / protocol.JOURNAL_FILE
    head, tail = head_objects(metrics), tail_objects(metrics)
    _progress(s, head, tail)
    entries = list(iter_objects(journal)) if full_journal else head_objects(journal, 4096) + tail_objects(journal)
    events = [e for e in entries if e.get("type") == "event"]
    _stage(s, head + tail, entries)
    s.decisions = _decisions(entries)
    _monitor_and_best(s, run_dir, tail, scan_best)
    _times(s, state, head, entries, events)
    _state(s, state, events, tail, pid_alive, now, run_dir)
    s.attempt = _int(state.get("attempt"))
    s.restarts = _int(state.get("restarts"))
    if s.restarts is None and full_journal:
        s.restarts = sum(1 for e in events if e.get("event") in ("restart", "restarted", "restarting"))
    s.held, s.degraded = state.get("held"), state.get("degraded")
    return s


def _progress(s: RunSummary, head: list[dict], tail: list[dict]) -> None:
    """Epochs planned and done, the step, the LR and the last epoch's logs, from the metrics' head and tail."""
    starts = [r for r in head + tail if r.get("type") == "start"]
    if starts:
        s.epochs = _int(starts[-1].get("epochs"))
    for r in tail or head:
        kind = r.get("type")
        if kind == "epoch":
            _last_epoch(s, r)
        if kind in ("batch", "epoch", "ack", "start") and _num(r.get("lr")) is not None:
            s.lr = float(r["lr"])
        if _int(r.get("step")) is not None:
            s.step = _int(r.get("step"))
    if s.epoch is None:  # the tail held no epoch record (a long epoch): the last one in the head
        seen = [r for r in head if r.get("type") == "epoch"]
        if seen:
            _last_epoch(s, seen[-1])


def _stage(s: RunSummary, records: list[dict], entries: list[dict]) -> None:
    """The current fit: the newest of the start records read and the journal's stage lines."""
    found = [
        (_num(r.get("time")) or 0.0, r.get("fit", 1)) for r in records + entries if r.get("type") in ("start", "stage")
    ]
    if found:
        fit = max(found, key=lambda f: f[0])[1]
        s.fit = fit if _int(fit) is not None and fit >= 1 else 1


def _last_epoch(s: RunSummary, record: dict) -> None:
    s.epoch = (_int(record.get("epoch")) or 0) + 1
    logs = record.get("logs")
    s.last_logs = logs if isinstance(logs, dict) else {}


def _decisions(entries: list[dict]) -> list[RecentDecision]:
    """The journal's decisions, once each (the head and tail of a small journal overlap), bookkeeping left out."""
    seen: set[tuple] = set()
    out = []
    for entry in map(read_entry, entries):
        if not isinstance(entry, DecisionEntry) or entry.action in HOUSEKEEPING_ACTIONS:
            continue
        d = _decision(entry)
        key = (d.time, d.policy, d.action, d.epoch, d.step)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _decision(d: DecisionEntry) -> RecentDecision:
    return RecentDecision(
        epoch=d.epoch,
        step=d.step,
        policy=d.policy or "?",
        action=d.action or "?",
        lr=d.lr,
        reason=d.reason,
        suppressed=d.suppressed,
        time=d.time,
    )


def monitor_of(config: dict, logs: dict) -> str | None:
    """The metric that picks the best epoch: the first policy's ``monitor``, else val_loss, else loss."""
    for policy in config.get("policies") or ():
        if isinstance(policy, dict) and isinstance(policy.get("monitor"), str):
            if not logs or policy["monitor"] in logs:
                return policy["monitor"]
    for name in ("val_loss", "loss"):
        if name in logs:
            return name
    return None


def _monitor_and_best(s: RunSummary, run_dir: Path, tail: list[dict], scan: bool) -> None:
    config = read_json(run_dir / protocol.CONFIG_FILE)[0] or {}
    s.monitor = monitor_of(config, s.last_logs)
    direction = monitor_direction(s.monitor, config) if s.monitor is not None else None
    if s.monitor is None or direction is None:
        return
    epochs = scan_epoch_lines(run_dir / protocol.METRICS_FILE) if scan else None
    if epochs is None:
        epochs = iter([r for r in tail if r.get("type") == "epoch"])
    sign = 1 if direction == "min" else -1
    for r in epochs:
        logs = r.get("logs")
        value = _num(logs.get(s.monitor)) if isinstance(logs, dict) else None
        if value is None or value != value:  # NaN is never best
            continue
        if s.best is None or sign * value < sign * s.best:
            s.best, s.best_epoch = value, (_int(r.get("epoch")) or 0) + 1


def _times(s: RunSummary, state: dict, head: list[dict], entries: list[dict], events: list[dict]) -> None:
    s.started = _num(state.get("started"))
    if s.started is None:
        times = [_num(e.get("time")) for e in entries[:5]] + [_num(r.get("time")) for r in head[:1]]
        known = [t for t in times if t is not None]
        s.started = min(known) if known else None
    finished = [e for e in events if e.get("event") == "finished"]
    if finished:
        s.ended = _num(finished[-1].get("time"))


def _state(
    s: RunSummary,
    state: dict,
    events: list[dict],
    tail: list[dict],
    pid_alive: PidAlive | None,
    now: float,
    run_dir: Path,
) -> None:
    s.pid = _int(state.get("supervisor_pid"))
    s.alive = supervisor_alive(state, pid_alive)
    s.exit_status = _int(state.get("exit_status"))
    finished = next((e for e in reversed(events) if e.get("event") == "finished"), None)
    if s.exit_status is None and finished is not None:
        s.exit_status = _int(finished.get("status"))
    claimed = state.get("state") if isinstance(state.get("state"), str) else None
    final = "fatal" if claimed == "fatal" else None
    if claimed in _REFINED or (final is None and finished is not None):
        final = _final_from_files(s.exit_status, events, tail, failed=claimed == "failed")
    if final is not None:
        s.state = final
        s.detail = str((finished or {}).get("detail") or state.get("reason") or "")
    elif s.alive and claimed == "parked":  # a PBT member waiting for its turn: its supervisor answers requests
        s.state, s.detail = "running", "parked: no trainer until its turn (its population takes turns for the slots)"
    elif s.alive:
        s.state, s.detail = "running", claimed or ""
    elif s.alive is False:
        s.state, s.detail = "stale", f"supervisor gone: lrsup resume {run_dir}"
    else:  # no pid recorded: judge by how fresh the files are
        fresh = max((_mtime(run_dir / n) for n in (protocol.METRICS_FILE, protocol.JOURNAL_FILE)), default=0.0)
        if fresh and now - fresh < RECENT:
            s.state, s.detail = "running", "files still being written"
        else:
            s.state, s.detail = "unknown", claimed or "no supervisor state and no finished event"


def _final_from_files(status: int | None, events: list[dict], tail: list[dict], *, failed: bool = False) -> str:
    """completed / stopped / failed / fatal from the exit status, the journal's events and the end record."""
    if status == 130:  # Ctrl-C or SIGTERM: the user stopped it
        return "stopped"
    if any(e.get("event") in ("give_up", "gave_up", "fatal") for e in events):
        return "fatal"
    end = next((r for r in reversed(tail) if r.get("type") == "end"), None)
    if status not in (None, 0) or (end is not None and end.get("reason") == "exception"):
        return "failed"
    if end is not None and end.get("reason") == "stopped":
        return "stopped"
    return "failed" if failed else "completed"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


# ---------------------------------------------------------------------------
# Following files another process appends to


class TailReader:
    """New complete lines of a growing file, from ``offset`` on (None: from its current end).

    ``read()`` returns the objects of the lines completed since the last call (garbage
    counted in ``stats``, never raised); a partial last line waits for its newline; a file
    that does not exist yet reads as empty. The reading is ``JsonlReader``'s.
    """

    def __init__(self, path: Path, offset: int | None = 0, *, parse: bool = True) -> None:
        self.path, self.parse = Path(path), parse
        self._reader = JsonlReader(self.path, offset)

    @property
    def offset(self) -> int:
        return self._reader.offset

    @property
    def stats(self) -> ReadStats:
        return self._reader.stats

    def read_bytes(self) -> bytes:
        return self._reader.read_bytes()

    def read_lines(self) -> list[bytes]:
        return self._reader.read_lines()

    def read(self) -> list[dict]:
        return list(self._reader.objects(self.read_lines()))
