"""How a run ended, inferred from its files: the outcome, its detail and the exit status.

:func:`decide_outcome` reads the journal's ``finished``, ``trainer_exited`` and
give-up events, the last fit's end record, supervisor.json (the supervisor's pid
and exit status) and, for a run without a supervisor, how recently the trainer
wrote. Exit statuses come from an event's fields or its detail text (a signal N
counts as 128 + N). Whether a pid still runs is asked through ``pid_alive``, the
system-call seam (``load_run`` passes :func:`lrsup.supervisor.rundir.liveness.pid_alive`),
so tests need no real process.

A run that ended but whose model did not learn is never called a plain success:
:func:`dead_model` is the one rule, used by the run's end line, the journal, the report and
the notification alike. It looks at the last epoch's logs (the validation metrics when
there are any, else the training ones) and names:

- a non-finite loss (``nan``, ``inf``): the model diverged;
- chance level: a loss within 5% of ``ln k`` for a whole ``k >= 2`` (the cross-entropy of
  predicting ``k`` classes uniformly) together with an accuracy of at most ``1.2 / k``
  (what guessing among ``k`` balanced classes gets). Both must hold, so a model still
  learning (loss 1.5 at accuracy 0.6) is not flagged; a model without an accuracy metric
  (a regression) is judged by the non-finite rule only.

The exit status stays the script's: the outcome stays ``completed`` (or ``stopped``) and
its detail says it (``training completed; the model ended at chance level: ...``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Tuple

from lrsup.supervisor.history.rows import Event, Outcome, as_float, as_int
from lrsup.supervisor.protocol.wire import EndRecord

if TYPE_CHECKING:
    from lrsup.supervisor.history.runinfo import RunInfo

__all__ = ["DEAD_MODEL_MARK", "dead_model", "decide_outcome", "with_dead_model"]

# Accuracy metrics as Keras names them (compile(metrics=["accuracy"]) logs "accuracy"), in preference order.
_ACCURACY = ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy", "acc")
CHANCE_LOSS_TOLERANCE = 0.05  # |loss - ln k| <= 5% of ln k
CHANCE_ACCURACY_FACTOR = 1.2  # accuracy <= 1.2 / k
DEAD_MODEL_MARK = "the model ended"  # every note of dead_model starts so (not added twice)


def dead_model(logs: Mapping[str, Any]) -> str | None:
    """Why the model whose last epoch logged ``logs`` did not learn (diverged, at chance level), or None.

    Example::

        dead_model({"val_loss": 2.3026, "val_accuracy": 0.1})
        # 'the model ended at chance level: val_loss 2.303, near ln 10, and val_accuracy 0.100, near 1/10 ...'
    """
    prefix = "val_" if "val_loss" in logs else ""  # held-out data decides when there is some
    loss = _number(logs.get(f"{prefix}loss"))
    if loss is None:
        return None
    if not math.isfinite(loss):
        return f"{DEAD_MODEL_MARK} diverged: its {prefix}loss is {loss}"
    name = next((f"{prefix}{n}" for n in _ACCURACY if _number(logs.get(f"{prefix}{n}")) is not None), None)
    if name is None or loss <= 0:
        return None
    accuracy = float(logs[name])
    k = round(math.exp(min(loss, 50.0)))
    if k < 2 or abs(loss - math.log(k)) > CHANCE_LOSS_TOLERANCE * math.log(k):
        return None
    if accuracy <= CHANCE_ACCURACY_FACTOR / k:
        return (
            f"{DEAD_MODEL_MARK} at chance level: {prefix}loss {loss:.3f}, near ln {k}, and {name} "
            f"{accuracy:.3f}, near 1/{k} (what guessing among {k} classes gives)"
        )
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def with_dead_model(detail: str, logs: Mapping[str, Any] | None) -> str:
    """``detail``, with :func:`dead_model`'s note appended when the model did not learn (once)."""
    note = dead_model(logs) if logs else None
    if note is None or DEAD_MODEL_MARK in detail:
        return detail
    return f"{detail}; {note}" if detail else note


# Journal events that mean the supervisor gave up on the trainer (restarts used up, ...).
_GIVE_UP_EVENTS = ("fatal", "give_up", "gave_up")
# A trainer that has written nothing for this long (and no supervisor pid to ask) is not running.
_STALE_SECONDS = 30.0


@dataclass(frozen=True)
class _Evidence:
    """What the files say about the end of a run, gathered once for the cases below."""

    finished: Event | None  # the supervisor's last ``finished`` event
    exited: Event | None  # the trainer's last exit, unless a restarted trainer runs again
    fatal: Event | None  # the last give-up event
    last_start: float | None  # time of the last start record
    pid: int | None  # the supervisor's, from supervisor.json
    supervisor_alive: bool  # that pid is this run's live supervisor and it has not finished
    trainer_status: int | None  # the exit status of ``exited``
    end: EndRecord | None  # the last fit's end record
    gave_up: bool
    recent: bool  # no supervisor pid, and records arrived moments ago


def decide_outcome(info: RunInfo, *, now: float, pid_alive: Callable[[int, int | None], bool]) -> None:
    """Set ``info.outcome``, ``outcome_detail``, ``exit_status`` and ``gave_up`` from the files.

    The first case of :data:`_CASES` that applies decides (they are in priority order).

    Args:
        info: RunInfo, read (events, starts, end, supervisor_state, last_time).
        now: float. Unix time, to judge whether records are still arriving.
        pid_alive: callable(pid, start_time) -> bool, the system-call seam.
    """
    evidence = _gather(info, now, pid_alive)
    if info.exit_status is None:
        info.exit_status = _recorded_status(info, evidence)
    info.gave_up = info.gave_up or evidence.fatal is not None
    for case in _CASES:
        found = case(evidence)
        if found is not None:
            info.outcome, info.outcome_detail = found
            if info.outcome in (Outcome.COMPLETED, Outcome.STOPPED) and info.epochs:
                info.outcome_detail = with_dead_model(info.outcome_detail, info.epochs[-1].logs)
            return


def _gather(info: RunInfo, now: float, pid_alive: Callable[[int, int | None], bool]) -> _Evidence:
    finished = _last_event(info, ("finished",))
    exited = _last_event(info, ("trainer_exited",))
    last_start = info.starts[-1].time if info.starts else None
    if exited is not None and last_start and exited.time is not None and exited.time < last_start:
        exited = None  # a restarted trainer is running again
    state = info.supervisor_state or {}
    pid = as_int(state.get("supervisor_pid"))
    started = as_int(state.get("supervisor_start_time"))
    fatal = _last_event(info, _GIVE_UP_EVENTS)
    return _Evidence(
        finished=finished,
        exited=exited,
        fatal=fatal,
        last_start=last_start,
        pid=pid,
        supervisor_alive=pid is not None and finished is None and pid_alive(pid, started),
        trainer_status=_exit_status(exited) if exited is not None else None,
        end=info.end,
        gave_up=info.gave_up or fatal is not None,
        recent=pid is None and info.last_time is not None and now - info.last_time < _stale_after(info),
    )


def _last_event(info: RunInfo, names: tuple[str, ...]) -> Event | None:
    return next((e for e in reversed(info.events) if e.event in names), None)


def _recorded_status(info: RunInfo, ev: _Evidence) -> int | None:
    """The exit status: the supervisor's ``finished``, else the trainer's exit, else supervisor.json."""
    for source in (ev.finished, ev.exited):
        status = _exit_status(source) if source is not None else None
        if status is not None:
            return status
    return as_int((info.supervisor_state or {}).get("exit_status"))


# The cases, in priority order: each returns (outcome, detail) when it applies, else None.
_Found = Optional[Tuple[Outcome, str]]


def _running(ev: _Evidence) -> _Found:
    if ev.supervisor_alive and ev.exited is None:
        return Outcome.RUNNING, f"the supervisor (pid {ev.pid}) is running"
    return None


def _gave_up(ev: _Evidence) -> _Found:
    fatal = ev.fatal
    if fatal is not None and (not ev.last_start or fatal.time is None or fatal.time >= ev.last_start):
        return Outcome.FAILED, _detail_text(fatal) or "the supervisor gave up on the trainer"
    return None


def _fit_ended(ev: _Evidence) -> _Found:
    """The last fit wrote its end record: how it ended, and how its trainer exited."""
    end = ev.end
    if end is None:
        return None
    if end.reason == "exception":
        return Outcome.FAILED, "training raised an exception"
    if ev.trainer_status not in (None, 0):
        return Outcome.FAILED, _detail_text(ev.exited) or f"trainer exited with status {ev.trainer_status}"
    if end.reason == "stopped":
        return Outcome.STOPPED, _detail_text(ev.finished) or ("gave up" if ev.gave_up else "stopped early")
    return Outcome.COMPLETED, _detail_text(ev.finished) or "training completed"


def _trainer_exited(ev: _Evidence) -> _Found:
    """No end record, but the trainer's exit was seen."""
    if ev.exited is None:
        return None
    text = _detail_text(ev.exited) or "the trainer exited"
    if ev.trainer_status == 0:
        return Outcome.COMPLETED, text
    return Outcome.FAILED, f"{text}, before training ended"


def _supervisor_finished(ev: _Evidence) -> _Found:
    if ev.finished is None:
        return None
    return Outcome.FAILED, _detail_text(ev.finished) or "the supervisor finished without an end record"


def _still_writing(ev: _Evidence) -> _Found:
    return (Outcome.RUNNING, "records are still arriving") if ev.recent else None


def _interrupted(ev: _Evidence) -> _Found:
    return Outcome.INTERRUPTED, "no end record and no exit recorded: the supervisor or the machine stopped"


_CASES: tuple[Callable[[_Evidence], _Found], ...] = (
    _running,
    _gave_up,
    _fit_ended,
    _trainer_exited,
    _supervisor_finished,
    _still_writing,
    _interrupted,
)


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
