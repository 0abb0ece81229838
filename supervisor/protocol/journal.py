"""The journal's line kinds (``journal.jsonl``): one frozen dataclass each, one writer, one reader.

The supervisor writes one line per decision (suppressed ones included), per command the
trainer applied or refused, per operator override, per fit the trainer begins (``stage``:
each ``fit`` call is a stage of the run), per event (started, restart, hold, garbage, ...)
and per monitored metric a fit lacks (``missing_metric``). Each line is a JSON object with
``v``, ``type`` (the entry's kind),
``time`` (the supervisor's wall clock) and the entry's fields, in the order below; a line
journaled late because the disk was full also carries ``late`` (why; read back among the
entry's extra fields, or for ``applied``, over its own ``late``). People and
``lrsup report``/``status``/``watch`` read it back.

:func:`journal_line` is the one writer (the object of one line), :func:`read_entry` the
one reader: tolerant of old and foreign lines, it never raises. A field of the wrong type
reads as None (``""`` for text), and a line of a kind it does not know comes back as an
:class:`UnknownEntry` holding its fields.

Example::

    obj = journal_line(EventEntry("started", "trainer pid 12"), time=1790000000.0)
    entry = read_entry(obj)  # EventEntry(event='started', detail='trainer pid 12', ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Union

from lrsup.supervisor.protocol.wire import PROTOCOL_VERSION

# The journal's entry kinds (the ``type`` of a line).
DECISION = "decision"
APPLIED = "applied"
COMMAND_ERROR = "command_error"
OVERRIDE = "override"
EVENT = "event"
REQUEST = "request"
MISSING_METRIC = "missing_metric"
LR_OWNER = "lr_owner"
STAGE = "stage"

# Keys every line has besides its entry's fields.
_COMMON = ("v", "type", "time")


def as_int(value: Any) -> int | None:
    """``value`` if it is an int (not a bool), else None: the lenient reading of a line's field."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_float(value: Any) -> float | None:
    """``value`` as a float if it is a number (not a bool), else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def as_str(value: Any) -> str:
    """``value`` if it is a str, else ``""``."""
    return value if isinstance(value, str) else ""


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class DecisionEntry:
    """What the engine decided about one policy action, and the command's ``seq`` if one was sent.

    ``suppressed`` says why no command was sent (None when one was).
    """

    kind: ClassVar[str] = DECISION
    seq: int | None
    policy: str
    action: str
    lr: float | None
    reason: str
    epoch: int | None
    step: int | None
    suppressed: str | None
    time: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields this reader does not know

    @classmethod
    def _read(cls, obj: Mapping[str, Any], time: float | None, extra: dict) -> "DecisionEntry":
        return cls(
            as_int(obj.get("seq")),
            as_str(obj.get("policy")),
            as_str(obj.get("action")),
            as_float(obj.get("lr")),
            as_str(obj.get("reason")),
            as_int(obj.get("epoch")),
            as_int(obj.get("step")),
            as_str(obj.get("suppressed")) or None,
            time,
            extra,
        )


@dataclass(frozen=True)
class AppliedEntry:
    """The trainer acknowledged command ``seq`` (its ``ack`` record)."""

    kind: ClassVar[str] = APPLIED
    seq: int | None
    cmd: str
    epoch: int | None
    step: int | None
    lr: float | None
    late: bool  # the ack's: applied after its epoch's verdict timed out
    time: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def _read(cls, obj: Mapping[str, Any], time: float | None, extra: dict) -> "AppliedEntry":
        return cls(
            as_int(obj.get("seq")),
            as_str(obj.get("cmd")),
            as_int(obj.get("epoch")),
            as_int(obj.get("step")),
            as_float(obj.get("lr")),
            obj.get("late") is True,
            time,
            extra,
        )


@dataclass(frozen=True)
class CommandErrorEntry:
    """The trainer refused command ``seq`` (its ``error`` record)."""

    kind: ClassVar[str] = COMMAND_ERROR
    seq: int | None
    cmd: str | None
    message: str
    time: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def _read(cls, obj: Mapping[str, Any], time: float | None, extra: dict) -> "CommandErrorEntry":
        return cls(as_int(obj.get("seq")), _str_or_none(obj.get("cmd")), as_str(obj.get("message")), time, extra)


@dataclass(frozen=True)
class OverrideEntry:
    """An operator's ``lrsup set-lr``: a ``set_lr`` command sent as ``seq`` (None when not sent)."""

    kind: ClassVar[str] = OVERRIDE
    who: str
    why: str | None
    lr: float | None
    seq: int | None
    suppressed: str | None
    time: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def _read(cls, obj: Mapping[str, Any], time: float | None, extra: dict) -> "OverrideEntry":
        return cls(
            as_str(obj.get("who")),
            _str_or_none(obj.get("why")),
            as_float(obj.get("lr")),
            as_int(obj.get("seq")),
            as_str(obj.get("suppressed")) or None,
            time,
            extra,
        )


@dataclass(frozen=True)
class EventEntry:
    """Something that happened to the run (``event``: started, restart, hold, garbage, finished, ...).

    ``fields`` holds the event's own extra fields (``returncode``, ``seq``, ``who``, ...).
    """

    kind: ClassVar[str] = EVENT
    event: str
    detail: Any = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    time: float | None = None

    @classmethod
    def _read(cls, obj: Mapping[str, Any], time: float | None, extra: dict) -> "EventEntry":
        return cls(as_str(obj.get("event")), obj.get("detail"), extra, time)


@dataclass(frozen=True)
class RequestEntry:
    """An operator request the supervisor is about to act on (requests.jsonl), journaled first so that
    ``lrsup resume`` acts on each request once: ``offset`` is where its batch of requests.jsonl starts,
    ``index`` its place in the batch, ``seq`` the command it is to send (None for hold/release).
    """

    kind: ClassVar[str] = REQUEST
    op: str
    who: str
    why: str | None
    lr: float | None
    seq: int | None
    offset: int | None
    index: int | None
    time: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def _read(cls, obj: Mapping[str, Any], time: float | None, extra: dict) -> "RequestEntry":
        return cls(
            as_str(obj.get("op")),
            as_str(obj.get("who")),
            _str_or_none(obj.get("why")),
            as_float(obj.get("lr")),
            as_int(obj.get("seq")),
            as_int(obj.get("offset")),
            as_int(obj.get("index")),
            time,
            extra,
        )


@dataclass(frozen=True)
class MissingMetricEntry:
    """A policy monitors ``metric``, which fit ``fit``'s first epoch record (``epoch``, ``step``) lacked.

    ``available`` lists the keys that epoch's logs had; ``message`` is the sentence shown.
    Written once per fit and policy (the engine's missing-metric check).
    """

    kind: ClassVar[str] = MISSING_METRIC
    policy: str
    metric: str
    available: tuple[str, ...]
    fit: int | None
    epoch: int | None
    step: int | None
    message: str
    time: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def _read(cls, obj: Mapping[str, Any], time: float | None, extra: dict) -> "MissingMetricEntry":
        available = obj.get("available")
        keys = tuple(k for k in available if isinstance(k, str)) if isinstance(available, list) else ()
        return cls(
            as_str(obj.get("policy")),
            as_str(obj.get("metric")),
            keys,
            as_int(obj.get("fit")),
            as_int(obj.get("epoch")),
            as_int(obj.get("step")),
            as_str(obj.get("message")),
            time,
            extra,
        )


@dataclass(frozen=True)
class LrOwnerEntry:
    """Who owns the learning rate in fit ``fit`` (issue 13: one owner per learning rate), and what it changed.

    ``event``: ``stand_down`` (the script's own LR logic keeps the LR: lrsup's LR-tuning
    ``policies`` stand down for the fit; the rescues stay on), ``take_over`` (``[run] lr_owner
    = "lrsup"``: lrsup owns the LR, the script's LR callbacks left out of the fit where they
    could be), ``rescue`` (a rescue moved the script's LR: ``lr`` is the LR it restores) or
    ``moved`` (under lrsup's ownership, an LR change lrsup did not command). ``owner`` is
    ``script`` or ``lrsup``; ``movers`` what of the script moves the LR (its LR callbacks,
    its optimizer's LearningRateSchedule, an uncommanded change); ``detail`` says it in a sentence.
    """

    kind: ClassVar[str] = LR_OWNER
    event: str
    owner: str
    fit: int | None
    movers: tuple[str, ...]
    policies: tuple[str, ...]
    lr: float | None
    epoch: int | None
    step: int | None
    detail: str
    time: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def _read(cls, obj: Mapping[str, Any], time: float | None, extra: dict) -> "LrOwnerEntry":
        return cls(
            as_str(obj.get("event")),
            as_str(obj.get("owner")),
            as_int(obj.get("fit")),
            _strs(obj.get("movers")),
            _strs(obj.get("policies")),
            as_float(obj.get("lr")),
            as_int(obj.get("epoch")),
            as_int(obj.get("step")),
            as_str(obj.get("detail")),
            time,
            extra,
        )


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


@dataclass(frozen=True)
class StageEntry:
    """A fit (a stage of the run) began: the trainer's start record of fit ``fit`` (1-based, in the
    script's order), with its optimizer, LR and epoch budget as the script set them.

    ``initial_epoch`` and ``step`` say where it begins (a restarted attempt resumes a fit past
    0); ``pid`` is the trainer's. One line per start record, so a restarted attempt journals its
    fits again.
    """

    kind: ClassVar[str] = STAGE
    fit: int | None
    optimizer: str | None
    lr: float | None
    epochs: int | None
    initial_epoch: int | None
    step: int | None
    pid: int | None
    time: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def _read(cls, obj: Mapping[str, Any], time: float | None, extra: dict) -> "StageEntry":
        return cls(
            as_int(obj.get("fit")) or 1,  # a line without it: the first fit
            _str_or_none(obj.get("optimizer")),
            as_float(obj.get("lr")),
            as_int(obj.get("epochs")),
            as_int(obj.get("initial_epoch")),
            as_int(obj.get("step")),
            as_int(obj.get("pid")),
            time,
            extra,
        )


@dataclass(frozen=True)
class UnknownEntry:
    """A line of a kind this reader does not know (a newer supervisor's, or garbage): kept, not read."""

    type: Any
    fields: Mapping[str, Any]
    time: float | None = None

    @property
    def kind(self) -> str:
        return self.type if isinstance(self.type, str) else ""


KnownEntry = Union[
    DecisionEntry,
    AppliedEntry,
    CommandErrorEntry,
    OverrideEntry,
    EventEntry,
    RequestEntry,
    MissingMetricEntry,
    LrOwnerEntry,
    StageEntry,
]
JournalEntry = Union[KnownEntry, UnknownEntry]

ENTRY_TYPES: dict[str, type[KnownEntry]] = {
    cls.kind: cls
    for cls in (
        DecisionEntry,
        AppliedEntry,
        CommandErrorEntry,
        OverrideEntry,
        EventEntry,
        RequestEntry,
        MissingMetricEntry,
        LrOwnerEntry,
        StageEntry,
    )
}

# Fields of each kind that are the line's own (not in ``extra``), in the order they are written.
_WRITTEN: dict[type, tuple[str, ...]] = {
    DecisionEntry: ("seq", "policy", "action", "lr", "reason", "epoch", "step", "suppressed"),
    AppliedEntry: ("seq", "cmd", "epoch", "step", "lr", "late"),
    CommandErrorEntry: ("seq", "cmd", "message"),
    OverrideEntry: ("who", "why", "lr", "seq", "suppressed"),
    EventEntry: ("event", "detail"),
    RequestEntry: ("op", "who", "why", "lr", "seq", "offset", "index"),
    MissingMetricEntry: ("policy", "metric", "available", "fit", "epoch", "step", "message"),
    LrOwnerEntry: ("event", "owner", "fit", "movers", "policies", "lr", "epoch", "step", "detail"),
    StageEntry: ("fit", "optimizer", "lr", "epochs", "initial_epoch", "step", "pid"),
}


def journal_line(entry: JournalEntry, time: float) -> dict[str, Any]:
    """The object of one journal line for ``entry``, written at ``time`` (the one writer).

    Its fields come in a fixed order after ``v``, ``type`` and ``time``, then the entry's
    extra fields (an event's ``fields``). ``entry.time`` is ignored: the writer stamps the time
    (and the command channel adds ``late`` to a line it journals late).
    """
    if isinstance(entry, UnknownEntry):
        return {"v": PROTOCOL_VERSION, "type": entry.type, "time": time, **entry.fields}
    obj: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": entry.kind, "time": time}
    for name in _WRITTEN[type(entry)]:
        value = getattr(entry, name)
        obj[name] = list(value) if isinstance(value, tuple) else value
    obj.update(entry.fields if isinstance(entry, EventEntry) else entry.extra)
    return obj


def read_entry(obj: Mapping[str, Any]) -> JournalEntry:
    """The entry of one decoded journal line (the one reader). Never raises.

    The caller checks ``v`` (a line of another protocol version is not this format).
    """
    kind = obj.get("type")
    time = as_float(obj.get("time"))
    cls = ENTRY_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return UnknownEntry(kind, {k: v for k, v in obj.items() if k not in _COMMON}, time)
    own = _WRITTEN[cls]
    return cls._read(obj, time, {k: v for k, v in obj.items() if k not in own and k not in _COMMON})
