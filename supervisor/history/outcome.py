"""How a run ended, inferred from its files: the outcome, its detail and the exit status.

:func:`decide_outcome` reads the journal's ``finished``, ``trainer_exited`` and
give-up events, the last fit's end record, supervisor.json (the supervisor's pid
and exit status) and, for a run without a supervisor, how recently the trainer
wrote. Exit statuses come from an event's fields or its detail text (a signal N
counts as 128 + N). Whether a pid still runs is asked through ``pid_alive``, the
system-call seam (:func:`pid_alive` by default), so tests need no real process.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Callable

from lrsup.supervisor.history.rows import Event, Outcome, as_float, as_int

if TYPE_CHECKING:
    from lrsup.supervisor.history.runinfo import RunInfo

# Journal events that mean the supervisor gave up on the trainer (restarts used up, ...).
_GIVE_UP_EVENTS = ("fatal", "give_up", "gave_up")
# A trainer that has written nothing for this long (and no supervisor pid to ask) is not running.
_STALE_SECONDS = 30.0


def decide_outcome(info: RunInfo, *, now: float, pid_alive: Callable[[int, int | None], bool]) -> None:
    finished = next((e for e in reversed(info.events) if e.event == "finished"), None)
    exited = next((e for e in reversed(info.events) if e.event == "trainer_exited"), None)
    last_start = info.starts[-1].time if info.starts else None
    if exited is not None and last_start and exited.time is not None and exited.time < last_start:
        exited = None  # a restarted trainer is running again
    for source in (finished, exited):
        if source is not None and info.exit_status is None:
            info.exit_status = _exit_status(source)
    state = info.supervisor_state or {}
    if info.exit_status is None:
        info.exit_status = as_int(state.get("exit_status", state.get("status")))
    fatal = next((e for e in reversed(info.events) if e.event in _GIVE_UP_EVENTS), None)
    if fatal is not None:
        info.gave_up = True

    pid = as_int(state.get("supervisor_pid", state.get("pid")))
    started = as_int(state.get("supervisor_start_time"))
    supervisor_alive = pid is not None and finished is None and pid_alive(pid, started)
    trainer_status = _exit_status(exited) if exited is not None else None
    end = info.end
    if supervisor_alive and exited is None:
        outcome, detail = Outcome.RUNNING, f"the supervisor (pid {pid}) is running"
    elif fatal is not None and (not last_start or fatal.time is None or fatal.time >= last_start):
        outcome, detail = Outcome.FAILED, _detail_text(fatal) or "the supervisor gave up on the trainer"
    elif end is not None and end.reason == "exception":
        outcome, detail = Outcome.FAILED, "training raised an exception"
    elif end is not None and trainer_status not in (None, 0):
        outcome, detail = Outcome.FAILED, _detail_text(exited) or f"trainer exited with status {trainer_status}"
    elif end is not None and end.reason == "stopped":
        outcome, detail = Outcome.STOPPED, _detail_text(finished) or ("gave up" if info.gave_up else "stopped early")
    elif end is not None:
        outcome, detail = Outcome.COMPLETED, _detail_text(finished) or "training completed"
    elif exited is not None:
        text = _detail_text(exited) or "the trainer exited"
        outcome = Outcome.COMPLETED if trainer_status == 0 else Outcome.FAILED
        detail = text if trainer_status == 0 else f"{text}, before training ended"
    elif finished is not None:
        outcome, detail = Outcome.FAILED, _detail_text(finished) or "the supervisor finished without an end record"
    elif pid is None and info.last_time is not None and now - info.last_time < _stale_after(info):
        outcome, detail = Outcome.RUNNING, "records are still arriving"
    else:
        outcome = Outcome.INTERRUPTED
        detail = "no end record and no exit recorded: the supervisor or the machine stopped"
    info.outcome, info.outcome_detail = outcome, detail


def _stale_after(info: RunInfo) -> float:
    agent = (info.config or {}).get("agent") if isinstance(info.config, dict) else None
    interval = as_float(agent.get("heartbeat_interval")) if isinstance(agent, dict) else None
    return max(_STALE_SECONDS, 3 * interval) if interval else _STALE_SECONDS


_SIGNAL_RE = re.compile(r"signal\D{0,20}?(\d+)")
_STATUS_RE = re.compile(r"(?:exit status|status|code)\D{0,3}(-?\d+)")


def _exit_status(event: Event) -> int | None:
    """An exit status from an event's fields or detail text; a signal N counts as 128+N."""
    detail = event.detail if isinstance(event.detail, dict) else {}
    for source in (event.extra, detail):
        for key in ("status", "exit_status", "returncode"):
            value = as_int(source.get(key))
            if value is not None:
                return 128 - value if value < 0 else value
    if isinstance(event.detail, int) and not isinstance(event.detail, bool):
        return event.detail
    if isinstance(event.detail, str):
        if m := _SIGNAL_RE.search(event.detail):
            return 128 + int(m.group(1))
        if m := _STATUS_RE.search(event.detail):
            value = int(m.group(1))
            return 128 - value if value < 0 else value
    return None


def _detail_text(event: Event | None) -> str:
    if event is None:
        return ""
    return event.detail if isinstance(event.detail, str) else ""


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """True while ``pid`` exists and is no zombie, and (when known) started at ``start_time``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, belongs to someone else
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return True  # no /proc (not Linux): the pid exists, that is all we can tell
    if not fields or fields[0] == b"Z":
        return False
    try:
        return start_time is None or int(fields[19]) == start_time  # field 22 of /proc/<pid>/stat
    except (IndexError, ValueError):
        return True
