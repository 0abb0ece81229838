"""The run-directory protocol shared by the trainer-side agent and the supervisor.

Standard library only: the agent imports this inside the training process, and
policies import the record types, so nothing here may pull in pydantic, rich,
keras or tensorflow. One optional exception, never imported by the agent:
``loads_many``, the supervisor's batched reader, decodes with orjson when it is
installed (a dependency of lrsup; the json module otherwise). docs/protocol.md is
the prose version of this module; keep the two in step and bump
``PROTOCOL_VERSION`` on any incompatible change.

Every line of every ``.jsonl`` file is one JSON object terminated by ``\\n`` and
carrying ``v`` (the protocol version) and ``type`` (records) or ``cmd``
(commands). Non-finite floats are written as the bare tokens ``NaN``,
``Infinity`` and ``-Infinity`` (what Python's json module writes and reads).
"""

from __future__ import annotations

import functools
import json
import math
import re
import reprlib
from dataclasses import dataclass, field, fields
from itertools import product
from operator import itemgetter
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeGuard

PROTOCOL_VERSION = 1

# Environment variables. The supervisor hands the trainer the run directory, and on a restart the
# checkpoint to load before the first batch and the attempt (1 for the first, informational).
ENV_RUN_DIR = "LRSUP_RUN_DIR"
# A restarted attempt's keep-list: a JSON list of checkpoint names its retention must not delete.
ENV_RETAIN = "LRSUP_RETAIN"
ENV_RESTORE = "LRSUP_RESTORE"
ENV_ATTEMPT = "LRSUP_ATTEMPT"
# A notification command gets the event and its JSON payload (besides ENV_RUN_DIR).
ENV_NOTIFY_EVENT = "LRSUP_EVENT"
ENV_NOTIFY_PAYLOAD = "LRSUP_PAYLOAD"

# Exit statuses of ``lrsup run`` (besides the trainer's own, passed through).
EXIT_USAGE = 2  # bad command line or configuration
EXIT_GIVE_UP = 3  # FATAL (restarts used up), or a policy gave the run up (Stop(give_up=True))
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C / SIGINT, as a shell reports it
EXIT_UNKNOWN = 255  # a trainer lrsup did not start vanished without a clean end record

# File names inside a run directory.
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CONTROL_FILE = "control.jsonl"
BELL_FILE = "control.bell"  # the doorbell: see lrsup.supervisor.protocol.doorbell
JOURNAL_FILE = "journal.jsonl"
TRAINER_LOG = "trainer.log"
STATE_FILE = "supervisor.json"
REQUESTS_FILE = "requests.jsonl"  # operator requests: lrsup set-lr, hold, release, stop
CHECKPOINT_DIR = "checkpoints"

# A line longer than this is garbage, whatever it holds.
MAX_LINE_BYTES = 1 << 20
# Bounds on what one line may hold (deeper or larger is garbage, never an exception): records
# and commands nest 3 levels (a schedule spec 4); an integer must fit in 64 bits (a float field
# takes it, and ``float()`` of a 400-digit integer raises OverflowError).
MAX_DEPTH = 32
MAX_INT = 1 << 63


class ProtocolError(ValueError):
    """A line that is not a valid record or command."""


def dumps(obj: Mapping[str, Any]) -> str:
    """One protocol line (without the newline). NaN and infinities are kept as bare tokens."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=True, default=_json_default)


_raw_decode = json.JSONDecoder().raw_decode


def _decode(text: str) -> Any:
    """``json.loads`` for one line, minus its per-call encoding detection and regex scans."""
    text = text.strip()
    obj, end = _raw_decode(text)
    if end != len(text):
        raise ValueError(f"extra data after the JSON value at column {end + 1}")
    return obj


def loads(line: str | bytes) -> dict[str, Any]:
    """Parse one line; raise ProtocolError unless it is a JSON object within the bounds.

    The bounds (``MAX_LINE_BYTES``, ``MAX_DEPTH``, ``MAX_INT``) are checked before or right
    after decoding, so no line makes any reader raise anything but ProtocolError (no
    RecursionError on deep nesting, no OverflowError later on a huge integer).
    """
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"line of {len(line)} bytes is longer than {MAX_LINE_BYTES}")
    if isinstance(line, str):
        text, data = line, line.encode("utf-8", "surrogatepass")
    else:
        text, data = None, bytes(line)
    shape = data.translate(_SHAPE)  # one pass for both bounds: openers as "[", digits as "0"
    if shape.count(b"[") > MAX_DEPTH and _depth(data) > MAX_DEPTH:
        raise ProtocolError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        obj = _decode(text if text is not None else data.decode())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {short(str(exc))}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"not a JSON object: {type(obj).__name__}")
    if _LONG_RUN in shape and _has_huge_int(obj):  # 19 digits in a row somewhere (rare): look closer
        raise ProtocolError(f"an integer of {MAX_INT.bit_length()} bits or more")
    return obj


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def _depth(data: bytes) -> int:
    """How deep the arrays and objects of one JSON text nest (strings skipped; garbage counts as it comes)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub(b"", data)):
        if bracket in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _has_huge_int(obj: Any) -> bool:
    """Whether an integer of abs >= MAX_INT is anywhere in ``obj`` (depth already bounded)."""
    stack = [obj]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is int and not -MAX_INT < value < MAX_INT:
            return True
        if kind is dict:
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
    return False


def short(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (error messages quote values from untrusted lines)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _brief(value: Any) -> str:
    """A bounded repr of an untrusted value: nesting and length cut (never a RecursionError)."""
    return short(_REPR.repr(value))


def loads_many(lines: Sequence[bytes]) -> list[dict[str, Any] | ProtocolError]:
    """``loads`` for many lines at once: per line, its object or the ProtocolError ``loads`` raises.

    The lines are decoded as one JSON array (one call into a C decoder instead of one per
    line: see ``_decode_array``); if that fails, or a line held more than one value, each
    line is decoded on its own, so a garbage line costs its chunk the slow path and never
    loses a good line.
    """
    if not lines:
        return []
    objs = None
    if max(map(len, lines)) <= MAX_LINE_BYTES:
        objs = _decode_array(b"[" + b",".join(lines) + b"]")  # None: a huge integer or a decoder limit
    if objs is None or len(objs) != len(lines):
        out: list[dict[str, Any] | ProtocolError] = []
        for line in lines:
            try:
                out.append(loads(line))
            except ProtocolError as exc:
                out.append(exc)
        return out
    return [obj if type(obj) is dict else ProtocolError(f"not a JSON object: {type(obj).__name__}") for obj in objs]


@functools.cache
def _orjson_loads() -> Callable[[bytes], Any] | None:
    """``orjson.loads`` if orjson is installed, else None (imported on first use: the agent never needs it)."""
    try:
        import orjson
    except ImportError:
        return None
    return orjson.loads


# orjson reads an integer beyond 64 bits as a float where the json module keeps it exact:
# such an integer has 19 digits or more, not after a decimal point. ``_decode_array`` looks
# for one as the needle below in the text mapped through this table (digits to "0", the
# point kept, any other byte to "x"); a float's long fraction never matches, a long string
# of digits may (and is then decoded by the json module: slower, never wrong).
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80
_DIGIT_RUNS = bytes(ord("0") if chr(i) in "0123456789" else ord(".") if chr(i) == "." else ord("x") for i in range(256))
_LONG_INTEGER = b"x" + b"0" * 19
# ``loads``'s table: the same, and the openers of arrays and objects as "[" (counted for the depth bound).
_SHAPE = bytes(
    ord("0") if chr(i) in "0123456789" else ord(".") if chr(i) == "." else ord("[") if chr(i) in "[{" else ord("x")
    for i in range(256)
)
_LONG_RUN = b"0" * 19


def _decode_array(data: bytes) -> list | None:
    """The JSON array ``data`` as the json module decodes it, or None when that refuses it.

    orjson decodes it when installed (about twice as fast) unless it holds a long integer
    (see ``_DIGIT_RUNS``); what orjson refuses (the bare ``NaN`` and ``Infinity`` that
    non-finite losses are written as, numbers beyond its range, lone surrogates) goes to the
    json module, which accepts more, so the result never depends on orjson being there.
    """
    if _LONG_INTEGER in data.translate(_DIGIT_RUNS):
        return None  # maybe an integer beyond MAX_INT: each line through ``loads``, which checks
    fast = _orjson_loads()
    if fast is not None:
        try:
            return fast(data)  # nests at most 1024 levels (else JSONDecodeError); records bound fields deeper
        except ValueError:  # orjson.JSONDecodeError
            pass
    try:
        return json.loads(data.decode())  # decoded as ``loads`` does (json.loads of bytes would let surrogates in)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays (the agent may hand them over) without importing numpy.
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


# ---------------------------------------------------------------------------
# Field checking shared by records and commands. Deliberately small: a type per
# field, unknown fields refused. bool is not accepted where a number is asked.


def _is_number(value: Any) -> bool:
    kind = type(value)  # the exact-type tests are the fast path; subclasses (numpy floats) still pass
    return kind is float or kind is int or (isinstance(value, (int, float)) and kind is not bool)


def _nests_within(value: Any, limit: int = MAX_DEPTH - 1) -> bool:
    """Whether ``value``'s lists and dicts nest at most ``limit`` levels (iterative: never a RecursionError)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if level >= limit:
                    return False
                stack.append((child, level + 1))
    return True


_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "int?": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "float": _is_number,
    "float?": lambda v: v is None or _is_number(v),
    "str": lambda v: isinstance(v, str),
    "str?": lambda v: v is None or isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    # Containers: a line within MAX_DEPTH is checked by ``loads``; these bound what came another way.
    "dict": lambda v: isinstance(v, dict) and _nests_within(v),
    "dict?": lambda v: v is None or (isinstance(v, dict) and _nests_within(v)),
    "list": lambda v: isinstance(v, list) and _nests_within(v),
    "names": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "metrics": lambda v: isinstance(v, dict) and all(isinstance(k, str) and _is_number(x) for k, x in v.items()),
    "any": lambda v: True,
}


def _check_fields(kind: str, obj: Mapping[str, Any], spec: Mapping[str, str], required: set[str]) -> None:
    # One pass over the fields: this runs for every record the supervisor reads.
    for name, value in obj.items():
        expected = spec.get(name)
        if expected is None:
            raise ProtocolError(f"{kind}: unknown field(s) {_brief(sorted(set(obj) - set(spec)))}")
        if not _CHECKS[expected](value):
            raise ProtocolError(f"{kind}: field {_brief(name)} has invalid value {_brief(value)} (expected {expected})")
    if len(required) > len(obj) or not required.issubset(obj.keys()):
        missing = sorted(required - obj.keys())
        raise ProtocolError(f"{kind}: missing field {_brief(missing[0])}")


# ---------------------------------------------------------------------------
# Records: trainer -> supervisor, in metrics.jsonl.


@dataclass(frozen=True)
class Record:
    """Base of all records. ``time`` is the trainer's wall clock (Unix seconds)."""

    type: ClassVar[str] = ""
    _spec: ClassVar[dict[str, str]] = {}
    time: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": self.type}
        for f in fields(self):
            out[f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True)
class StartRecord(Record):
    """Written once per ``fit`` (and per trainer attempt) when training begins."""

    type: ClassVar[str] = "start"
    pid: int = 0
    optimizer: str | None = None
    optimizer_config: dict = field(default_factory=dict)
    lr: float | None = None
    lr_schedule: str | None = None
    steps_per_epoch: int | None = None
    epochs: int | None = None
    initial_epoch: int = 0
    step: int = 0
    keras_version: str | None = None
    backend: str | None = None
    agent: str | None = None
    # The ordinal (1-based) of this fit among the process's fit calls, in the script's order:
    # the same number for the same fit in every attempt. A stage of the run is one fit.
    fit: int = 1
    # The script's own LR callbacks in this fit's callbacks (class names: ReduceLROnPlateau,
    # LearningRateScheduler, or a subclass's name), and whether lrsup left them out of the fit
    # (``[run] lr_owner = "lrsup"``: lrsup owns the LR; the script's list itself is untouched).
    lr_callbacks: list = field(default_factory=list)
    lr_callbacks_left_out: bool = False


@dataclass(frozen=True)
class BatchRecord(Record):
    """Every ``batch_every`` batches: Keras's batch logs after optimizer step ``step``."""

    type: ClassVar[str] = "batch"
    epoch: int = 0
    batch: int = 0
    step: int = 0
    lr: float | None = None
    logs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EpochRecord(Record):
    """At each epoch end: Keras's epoch logs (loss, metrics, val_*), ``epoch`` 0-based as Keras counts."""

    type: ClassVar[str] = "epoch"
    epoch: int = 0
    step: int = 0
    lr: float | None = None
    logs: dict = field(default_factory=dict)
    # The LR as lrsup last left it, when ``lr`` differs from it: something lrsup did not
    # command (a callback of the script) moved the LR during this epoch. None otherwise, and
    # under the optimizer's own LearningRateSchedule (which moves the LR at every step).
    lr_moved_from: float | None = None


@dataclass(frozen=True)
class HeartbeatRecord(Record):
    type: ClassVar[str] = "heartbeat"
    epoch: int | None = None
    step: int = 0


@dataclass(frozen=True)
class AckRecord(Record):
    """A command was applied: ``epoch``/``step`` is where it took effect (before step ``step + 1``)."""

    type: ClassVar[str] = "ack"
    seq: int = 0
    cmd: str = ""
    epoch: int | None = None
    step: int = 0
    lr: float | None = None
    late: bool = False


@dataclass(frozen=True)
class ErrorRecord(Record):
    """A command (or the agent itself) failed; training goes on."""

    type: ClassVar[str] = "error"
    seq: int | None = None
    cmd: str | None = None
    message: str = ""


@dataclass(frozen=True)
class EndRecord(Record):
    """``fit`` returned (``reason``: completed, stopped) or raised (exception)."""

    type: ClassVar[str] = "end"
    reason: str = "completed"
    epoch: int | None = None
    step: int = 0


@dataclass(frozen=True)
class CheckpointRecord(Record):
    """A checkpoint was saved, verified and entered in ``checkpoints/manifest.json``.

    ``epoch`` is the epoch it was taken in (an epoch-end checkpoint: that epoch; None
    for one taken before the first batch of a fit), ``step`` the optimizer step of its
    weights, ``lr`` the effective LR and ``multiplier`` lrsup's LR multiplier then (None
    when lrsup has none), ``file`` its path relative to the run directory and ``sha256``
    the hex digest of that file's bytes.
    """

    type: ClassVar[str] = "checkpoint"
    name: str = ""
    epoch: int | None = None
    step: int = 0
    lr: float | None = None
    multiplier: float | None = None
    file: str = ""
    sha256: str = ""


_RECORD_SPECS: dict[type[Record], tuple[dict[str, str], set[str]]] = {
    StartRecord: (
        {
            "pid": "int",
            "optimizer": "str?",
            "optimizer_config": "dict",
            "lr": "float?",
            "lr_schedule": "str?",
            "steps_per_epoch": "int?",
            "epochs": "int?",
            "initial_epoch": "int",
            "step": "int",
            "keras_version": "str?",
            "backend": "str?",
            "agent": "str?",
            "fit": "int",
            "lr_callbacks": "names",
            "lr_callbacks_left_out": "bool",
        },
        {"pid"},
    ),
    BatchRecord: (
        {"epoch": "int", "batch": "int", "step": "int", "lr": "float?", "logs": "metrics"},
        {"epoch", "step"},
    ),
    EpochRecord: (
        {"epoch": "int", "step": "int", "lr": "float?", "logs": "metrics", "lr_moved_from": "float?"},
        {"epoch", "step"},
    ),
    HeartbeatRecord: ({"epoch": "int?", "step": "int"}, set()),
    AckRecord: (
        {"seq": "int", "cmd": "str", "epoch": "int?", "step": "int", "lr": "float?", "late": "bool"},
        {"seq", "cmd", "step"},
    ),
    ErrorRecord: ({"seq": "int?", "cmd": "str?", "message": "str"}, {"message"}),
    EndRecord: ({"reason": "str", "epoch": "int?", "step": "int"}, {"reason"}),
    CheckpointRecord: (
        {
            "name": "str",
            "epoch": "int?",
            "step": "int",
            "lr": "float?",
            "multiplier": "float?",
            "file": "str",
            "sha256": "str",
        },
        {"name", "step", "file", "sha256"},
    ),
}

# Every record has a ``time``: merged into each spec once, not per record.
_RECORD_SPECS = {cls: ({"time": "float", **spec}, required) for cls, (spec, required) in _RECORD_SPECS.items()}
RECORD_TYPES: dict[str, type[Record]] = {cls.type: cls for cls in _RECORD_SPECS}


def parse_record(obj: Mapping[str, Any]) -> Record:
    """Validate a decoded metrics line and build its record. Raises ProtocolError."""
    record = parse_fast(obj)
    return record if record is not None else _parse_checked(obj)


# The fast path: what JSON decoding gives for a valid record (exact built-in types, string
# keys) is accepted by a few C-level set and type tests, and the frozen record is built
# without its generated ``__init__`` (which costs more than the checks). Anything else, an
# invalid line included, takes ``_parse_checked``, which says what is wrong. The supervisor
# reads every record through here, so this is what bounds ingest and replay speed.
_NONE = type(None)
_FAST_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "int?": (int, _NONE),
    "float": (float, int),
    "float?": (float, int, _NONE),
    "str": (str,),
    "str?": (str, _NONE),
    "bool": (bool,),
    "dict": (dict,),
    "dict?": (dict, _NONE),
    "list": (list,),
    "metrics": (dict,),
}
_NUMBER_TYPES = frozenset({float, int})
_MAX_SHAPES = 4096


@dataclass(frozen=True)
class _FastShape:
    """A record kind's fast path: every field present, each value of an exact JSON type."""

    cls: type[Record]
    size: int  # the number of keys: ``v``, ``type`` and every field
    values: Callable[[Mapping[str, Any]], tuple]  # ``v`` and every field, ``type`` aside
    shapes: frozenset[tuple[type, ...]]  # the allowed types of ``values``, one tuple per combination
    metrics: tuple[str, ...]

    @classmethod
    def of(cls, record_cls: type[Record]) -> "_FastShape | None":
        spec, _ = _RECORD_SPECS[record_cls]
        # Not for a kind with a value checked beyond its type (a checkpoint's name, a start record's
        # optimizer_config: its nesting depth): those take the checked path.
        if record_cls is CheckpointRecord or any(
            kind not in _FAST_TYPES or kind in ("dict", "dict?", "list") for kind in spec.values()
        ):
            return None
        names = ["v", *sorted(spec)]
        choices = [(int,), *(_FAST_TYPES[spec[name]] for name in names[1:])]
        if math.prod(len(c) for c in choices) > _MAX_SHAPES:
            return None
        return cls(
            record_cls,
            len(names) + 1,
            itemgetter(*names),
            frozenset(product(*choices)),
            tuple(name for name in names[1:] if spec[name] == "metrics"),
        )


def parse_fast(obj: Mapping[str, Any]) -> Record | None:
    """The record of ``obj`` if it takes the fast path (see above), else None: then ask ``parse_record``."""
    if type(obj) is not dict or type(kind := obj.get("type")) is not str:
        return None
    fast = _FAST.get(kind)
    if fast is None or len(obj) != fast.size:
        return None
    try:  # with ``type`` there and as many keys as that, every field present means no other key is
        shape = tuple(map(type, fast.values(obj)))
    except KeyError:
        return None
    if shape not in fast.shapes or obj["v"] != PROTOCOL_VERSION:  # ``v``: an int, by its shape
        return None
    for name in fast.metrics:
        for key, value in obj[name].items():
            if type(key) is not str or type(value) not in _NUMBER_TYPES:
                return None
    record = object.__new__(fast.cls)
    values = record.__dict__  # frozen: the generated __init__ would set each field the slow way
    values.update(obj)
    del values["v"], values["type"]
    return record


_FAST: dict[str, _FastShape] = {}
_FAST.update({cls.type: fast for cls in _RECORD_SPECS if (fast := _FastShape.of(cls)) is not None})


def _parse_checked(obj: Mapping[str, Any]) -> Record:
    obj = dict(obj)
    version = obj.pop("v", None)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {_brief(version)} (this lrsup speaks {PROTOCOL_VERSION})")
    kind = obj.pop("type", None)
    cls = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown record type {_brief(kind)}")
    spec, required = _RECORD_SPECS[cls]
    _check_fields(f"{kind} record", obj, spec, required)
    if cls is CheckpointRecord:
        _check_checkpoint_record(obj)
    return cls(**obj)


# Checkpoint names: what the supervisor sends back in rollback and retain commands, and
# what the agent may use in a file name.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def retain_from_env(environ: Mapping[str, str]) -> frozenset[str]:
    """The keep-list ``$LRSUP_RETAIN`` gives a restarted attempt (empty when unset or unreadable)."""
    try:
        names = json.loads(environ.get(ENV_RETAIN) or "[]")
    except ValueError:
        return frozenset()
    if not isinstance(names, list):
        return frozenset()
    return frozenset(name for name in names if is_checkpoint_name(name))


def is_checkpoint_name(name: Any) -> bool:
    """True for a valid checkpoint name: 1 to 100 of ``A-Z a-z 0-9 _ . -``, not starting with ``.`` or ``-``."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def is_valid_lr(value: Any) -> TypeGuard[float]:
    """True for a learning rate a command may set: a finite number >= 0 (not a bool)."""
    try:
        return _is_number(value) and math.isfinite(value) and value >= 0
    except OverflowError:  # an integer past a float's range
        return False


def _check_checkpoint_record(obj: Mapping[str, Any]) -> None:
    if not is_checkpoint_name(obj["name"]):
        raise ProtocolError(f"checkpoint record: invalid name {_brief(obj['name'])}")
    if obj["step"] < 0:
        raise ProtocolError(f"checkpoint record: step must be >= 0, got {obj['step']}")
    file = obj["file"]
    parts = file.replace("\\", "/").split("/")
    if not file or file.startswith("/") or ".." in parts or ":" in file:
        raise ProtocolError(f"checkpoint record: file must be a path inside the run directory, got {_brief(file)}")
    if not _SHA256.fullmatch(obj["sha256"]):
        raise ProtocolError(f"checkpoint record: sha256 must be 64 lower-case hex digits, got {_brief(obj['sha256'])}")


# ---------------------------------------------------------------------------
# Commands: supervisor -> trainer, in control.jsonl. ``seq`` increases by one from 1.

# The agent's batch_min_interval when config.json does not set one: at most 10 batch records a second,
# so a day of training writes at most 864,000 (the scale benchmark checks a million).
DEFAULT_BATCH_MIN_INTERVAL = 0.1

# The agent's settings a ``configure`` command may change (its "cadence").
CADENCE_FIELDS = ("batch_every", "batch_min_interval", "checkpoint_every_epochs", "checkpoint_every_steps")

COMMAND_SPECS: dict[str, tuple[dict[str, str], set[str]]] = {
    # Set the effective learning rate. With a LearningRateSchedule the agent turns it into a multiplier.
    "set_lr": ({"lr": "float"}, {"lr"}),
    # Multiply the effective learning rate (or the schedule's multiplier) by ``factor``.
    "scale_lr": ({"factor": "float"}, {"factor"}),
    # Set another optimizer hyperparameter the optimizer has (momentum, weight_decay, beta_1, ...).
    "set_hparam": ({"name": "str", "value": "float"}, {"name", "value"}),
    # Finish the current epoch, then end fit cleanly.
    "stop": ({}, set()),
    # The supervisor has decided everything it will on epoch ``epoch``: the agent may go on.
    "verdict": ({"epoch": "int"}, {"epoch"}),
    # Save a checkpoint now (``name``: the agent picks one when it is absent).
    "checkpoint": ({"name": "str?"}, set()),
    # Restore weights and optimizer state from a checkpoint, then set ``lr`` if given. ``from_run``:
    # an absolute run directory of the same population whose manifest holds the checkpoint (PBT's exploit).
    "rollback": ({"checkpoint": "str", "lr": "float?", "skip_batches": "int", "from_run": "str?"}, {"checkpoint"}),
    # Drive the LR by a schedule spec (lrsup.supervisor.protocol.schedules) times lrsup's multiplier.
    "set_schedule": ({"schedule": "dict"}, {"schedule"}),
    # Drop lrsup's schedule; the effective LR stays where it is.
    "clear_schedule": ({}, set()),
    # Checkpoints the agent must not delete under its keep-last-K retention (replaces the last list).
    "retain": ({"keep": "names"}, {"keep"}),
    # The agent's cadence: batch records every ``batch_every`` steps but at most one per
    # ``batch_min_interval`` seconds (0: no minimum), checkpoints every N epochs / steps (0: off).
    "configure": (
        {
            "batch_every": "int?",
            "batch_min_interval": "float?",
            "checkpoint_every_epochs": "int?",
            "checkpoint_every_steps": "int?",
        },
        set(),
    ),
}

_COMMAND_COMMON = {"v": "int", "seq": "int", "cmd": "str", "time": "float", "reason": "str?"}

# Commands that manage checkpoints and the agent's cadence, not the training: applied quietly
# (no line in the trainer's log, none in the supervisor's display; the journal keeps them).
HOUSEKEEPING_COMMANDS = frozenset({"retain", "configure", "checkpoint"})
# The journal's action names for the same bookkeeping (a policy's ``keep`` becomes a retain):
# left out of displays, figures and report tables, kept in the journal.
HOUSEKEEPING_ACTIONS = HOUSEKEEPING_COMMANDS | {"keep"}


def make_command(seq: int, cmd: str, *, time: float, reason: str | None = None, **args: Any) -> dict[str, Any]:
    """Build a command line's object and validate it (the supervisor's side of the check)."""
    obj = {"v": PROTOCOL_VERSION, "seq": seq, "cmd": cmd, "time": time, **args}
    if reason is not None:
        obj["reason"] = reason
    validate_command(obj)
    return obj


def validate_command(obj: Mapping[str, Any]) -> None:
    """Raise ProtocolError unless ``obj`` is a well-formed command of a known kind."""
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {_brief(obj.get('v'))}")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or cmd not in COMMAND_SPECS:
        raise ProtocolError(f"unknown command {_brief(cmd)}")
    spec, required = COMMAND_SPECS[cmd]
    _check_fields(f"{cmd} command", obj, {**_COMMAND_COMMON, **spec}, {"seq", "cmd", *required})
    if obj["seq"] < 1:
        raise ProtocolError(f"{cmd} command: seq must be >= 1, got {obj['seq']}")
    if cmd == "set_lr" and not is_valid_lr(obj["lr"]):
        raise ProtocolError(f"set_lr command: lr must be finite and >= 0, got {_brief(obj['lr'])}")
    if cmd == "scale_lr" and not (math.isfinite(obj["factor"]) and obj["factor"] > 0):
        raise ProtocolError(f"scale_lr command: factor must be finite and > 0, got {_brief(obj['factor'])}")
    check = _COMMAND_VALUE_CHECKS.get(cmd)
    if check is not None:
        check(obj)


def _check_checkpoint_command(obj: Mapping[str, Any]) -> None:
    name = obj.get("name")
    if name is not None and not is_checkpoint_name(name):
        raise ProtocolError(f"checkpoint command: invalid name {_brief(name)}")


def _check_rollback(obj: Mapping[str, Any]) -> None:
    if not is_checkpoint_name(obj["checkpoint"]):
        raise ProtocolError(f"rollback command: invalid checkpoint name {_brief(obj['checkpoint'])}")
    lr = obj.get("lr")
    if lr is not None and not is_valid_lr(lr):
        raise ProtocolError(f"rollback command: lr must be finite and >= 0, got {_brief(lr)}")
    if obj.get("skip_batches", 0) < 0:
        raise ProtocolError(f"rollback command: skip_batches must be >= 0, got {_brief(obj['skip_batches'])}")
    from_run = obj.get("from_run")
    if from_run is not None and not (from_run.startswith("/") and "\x00" not in from_run):
        raise ProtocolError(f"rollback command: from_run must be an absolute run directory, got {_brief(from_run)}")


def _check_set_schedule(obj: Mapping[str, Any]) -> None:
    # Standard library only, like this module; imported here so that protocol loads alone.
    from lrsup.supervisor.protocol.schedules import validate_spec

    try:
        validate_spec(obj["schedule"])
    except ValueError as exc:
        raise ProtocolError(f"set_schedule command: invalid schedule: {exc}") from None


def _check_retain(obj: Mapping[str, Any]) -> None:
    bad = [name for name in obj["keep"] if not is_checkpoint_name(name)]
    if bad:
        raise ProtocolError(f"retain command: invalid checkpoint name(s) {_brief(bad)}")


def _check_configure(obj: Mapping[str, Any]) -> None:
    from lrsup.supervisor.protocol.bounds import check_agent_setting

    given = {k: obj[k] for k in CADENCE_FIELDS if obj.get(k) is not None}
    if not given:
        raise ProtocolError(f"configure command: give at least one of {', '.join(CADENCE_FIELDS)}")
    for key, value in given.items():
        try:
            check_agent_setting(key, value)
        except ValueError as exc:
            raise ProtocolError(f"configure command: {exc}") from None


_COMMAND_VALUE_CHECKS = {
    "checkpoint": _check_checkpoint_command,
    "rollback": _check_rollback,
    "set_schedule": _check_set_schedule,
    "retain": _check_retain,
    "configure": _check_configure,
}
