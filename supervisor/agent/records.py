"""What the agent writes: records to metrics.jsonl, lines to the trainer's stderr.

Owns ``metrics_of`` (Keras-style logs as ``{name: float}``), ``warn`` (one ``lrsup:``
line on stderr), ``describe_command`` (the log line for an applied command) and
``RecordWriter``, the agent's collaborator that writes records under its lock and
rides out a full disk, and ``lr_of`` (a handle's LR, or None). Standard library only.

Example::

    metrics_of(lambda: {"loss": tensor})  # {"loss": 0.25}: called, then float() on each value
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Callable, Mapping, Union

from lrsup import __version__
from lrsup.supervisor.agent.handle import OptimizerHandle
from lrsup.supervisor.agent.settings import AgentError
from lrsup.supervisor.protocol.jsonl import DISK_FULL, Appender
from lrsup.supervisor.protocol.wire import PROTOCOL_VERSION, ErrorRecord, Record, dumps

AGENT_NAME = f"lrsup {__version__}"

Logs = Union[Mapping[str, Any], Callable[[], Mapping[str, Any]], None]


def metrics_of(logs: Logs) -> dict[str, float]:
    """Keras-style logs as ``{name: float}``: tensors and numpy scalars through ``float()``.

    Non-finite values are kept (the protocol writes NaN and Infinity); values that do not
    convert to one float (strings, arrays of several elements) are left out.

    Args:
        logs: a mapping, a zero-argument callable returning one, or None.
    """
    if callable(logs):
        logs = logs()
    if not logs:
        return {}
    out: dict[str, float] = {}
    for key, value in logs.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


_encode_key = json.encoder.encode_basestring_ascii
_INF, _NINF = float("inf"), float("-inf")


def _number(value: float) -> str:
    """A float as ``json.dumps`` writes it (``allow_nan``: NaN and the infinities as bare tokens)."""
    if value != value:
        return "NaN"
    if value == _INF:
        return "Infinity"
    if value == _NINF:
        return "-Infinity"
    return float.__repr__(value)


def batch_line(time: float, epoch: int, batch: int, step: int, lr: float | None, logs: Mapping[str, float]) -> bytes:
    """The line of ``BatchRecord(...)`` exactly as ``Appender.write`` would write it, newline included.

    The batch record is the one record the agent writes every few steps. Between TensorFlow
    steps, whose work has evicted the caches, every Python operation costs several times what
    it costs in a tight loop: building the frozen dataclass and running ``json.dumps`` (which
    makes a new encoder per call for non-default options) took about 65 us there, this about
    15: one %-format with a template made once per set of log names. Tests hold the two equal.

    Args:
        time, epoch, batch, step, lr: the record's fields (ints for epoch, batch and step).
        logs: ``{name: float}``, as ``metrics_of`` returns.
    """
    names = tuple(logs)
    template = _TEMPLATES.get(names)
    if template is None:
        template = _template(names)
    values = tuple(logs.values())
    if lr is not None:
        total = time + lr + sum(values)
        if total - total == 0:  # every number finite: repr is what json writes
            return (template % (time, epoch, batch, step, lr, *values)).encode()
    lr_text = _Json("null" if lr is None else _number(lr))
    numbers = [_Json(_number(v)) for v in values]
    return (template % (_Json(_number(time)), epoch, batch, step, lr_text, *numbers)).encode()


class _Json(str):
    """JSON text that a template's ``%r`` writes as it is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


_TEMPLATES: dict[tuple[str, ...], str] = {}


def _template(names: tuple[str, ...]) -> str:
    """The %-template of a batch line with these log names (cached; at most 64 kept)."""
    logs = ",".join(f"{_encode_key(str(k)).replace('%', '%%')}:%r" for k in names)
    template = (
        f'{{"v":{PROTOCOL_VERSION},"type":"batch","time":%r,"epoch":%d,"batch":%d,"step":%d,"lr":%r,'
        f'"logs":{{{logs}}}}}\n'
    )
    if len(_TEMPLATES) < 64:
        _TEMPLATES[names] = template
    return template


def warn(message: str) -> None:
    """One ``lrsup: message`` line on the trainer's stderr."""
    print(f"lrsup: {message}", file=sys.stderr, flush=True)


def describe_command(
    obj: Mapping[str, Any], epoch: int | None, step: int, lr: float | None, late: bool, probe: bool = False
) -> str:
    """One line for the trainer's log: what was applied, where, and the supervisor's reason.

    The epoch is shown 1-based, as Keras's progress bar and lrsup's display show it; inside
    the LR range test's probe (``probe``) the step is the probe's, which is undone after it.
    """

    def shown(value: Any) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    args = " ".join(
        f"{k}={shown(obj[k])}"
        for k in ("checkpoint", "lr", "factor", "name", "value", "keep")
        if obj.get(k) is not None
    )
    where = f"epoch {epoch + 1} step {step}" if epoch is not None else f"step {step}"
    if probe:
        where = f"LR range test probe, step {step}"
    text = f"{where}: {obj['cmd']}{' ' + args if args else ''}"
    if lr is not None:
        text += f" (lr now {lr:.6g})"
    if late:
        text += " [late]"
    if obj.get("reason"):
        text += f": {obj['reason']}"
    return text


class RecordWriter:
    """The agent's records out: one line per record appended to metrics.jsonl, under a lock
    (the heartbeat thread writes too).

    A full disk (ENOSPC, EDQUOT) never ends the training: records are dropped and counted,
    one stderr line says so, and when a write succeeds again an ``error`` record (and a
    stderr line) says how many were lost. A line cut short by the full disk is never glued
    to the next one (``Appender`` starts that on a fresh line).

    Args:
        path: str, metrics.jsonl.

    Raises:
        AgentError: the file cannot be opened for writing.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._out = Appender(path)
        except OSError as exc:
            raise AgentError(f"cannot write {path!r}: {exc.strerror or exc}") from None
        self._lock = threading.Lock()
        self._closed = False
        self.dropped = 0  # records lost to a full disk since the last that was written
        self.dropped_total = 0
        self._dropped_since: float | None = None

    def write(self, record: Record) -> None:
        """Append one record (AgentError once closed; other write errors than a full disk raised)."""
        self.write_line((dumps(record.to_json()) + "\n").encode(), record.type)

    def write_line(self, data: bytes, what: str) -> None:
        """Write one encoded line (``write``'s, or ``batch_line``'s; ``what``: its record type)."""
        with self._lock:
            if self._closed:
                raise AgentError(f"agent for {self.path!r} is closed; cannot write a {what} record")
            try:
                if self.dropped:
                    self._out.write_line(self._dropped_line())
                    warn(f"disk space is back: {self.dropped} record(s) were dropped while {self.path} was full")
                    self.dropped, self._dropped_since = 0, None
                self._out.write_line(data)
            except OSError as exc:
                if exc.errno not in DISK_FULL:
                    raise
                if not self.dropped:
                    self._dropped_since = time.time()
                    warn(f"cannot write {self.path}: {exc.strerror}; records are dropped until space returns")
                self.dropped += 1
                self.dropped_total += 1

    def _dropped_line(self) -> bytes:
        message = (
            f"disk full: {self.dropped} record(s) dropped since "
            f"{time.strftime('%H:%M:%S', time.localtime(self._dropped_since or time.time()))}"
        )
        return (dumps(ErrorRecord(time=time.time(), message=message).to_json()) + "\n").encode()

    def error(self, seq: int | None, cmd: str | None, message: str, *, quiet: bool = False) -> None:
        """An ``error`` record (a refused command: ``seq``/``cmd``), and a stderr line unless ``quiet``."""
        self.write(ErrorRecord(time=time.time(), seq=seq, cmd=cmd, message=message))
        if not quiet:
            warn(f"{'command refused' if seq is not None else 'error'}: {message}")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._out.close()


def lr_of(handle: OptimizerHandle, recent: bool = False) -> float | None:
    """The handle's learning rate (None if it cannot say); ``recent``: accept the value the
    handle last read or set if it has ``recent_lr`` (batch records)."""
    try:
        lr = handle.recent_lr() if recent and hasattr(handle, "recent_lr") else handle.get_lr()
    except Exception:
        return None
    return None if lr is None else float(lr)
