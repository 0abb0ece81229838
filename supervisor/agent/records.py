"""What the agent writes: records to metrics.jsonl, lines to the trainer's stderr.

Owns ``metrics_of`` (Keras-style logs as ``{name: float}``), ``warn`` (one ``lrsup:``
line on stderr), ``describe_command`` (the log line for an applied command) and
``RecordWriter``, the part of ``Agent`` that writes records under its lock (``_write``,
``_error``, ``_lr``). Standard library only.

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
from lrsup.supervisor.protocol.jsonl import Appender
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


def describe_command(obj: Mapping[str, Any], epoch: int | None, step: int, lr: float | None, late: bool) -> str:
    """One line for the trainer's log: what was applied, where, and the supervisor's reason.

    The epoch is shown 1-based, as Keras's progress bar and lrsup's display show it.
    """

    def shown(value: Any) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    args = " ".join(
        f"{k}={shown(obj[k])}"
        for k in ("checkpoint", "lr", "factor", "name", "value", "keep")
        if obj.get(k) is not None
    )
    where = f"epoch {epoch + 1} step {step}" if epoch is not None else f"step {step}"
    text = f"{where}: {obj['cmd']}{' ' + args if args else ''}"
    if lr is not None:
        text += f" (lr now {lr:.6g})"
    if late:
        text += " [late]"
    if obj.get("reason"):
        text += f": {obj['reason']}"
    return text


class RecordWriter:
    """Record output for ``Agent``: one record a line, under a lock (the heartbeat thread writes too)."""

    run_dir: str
    _out: Appender
    _write_lock: threading.Lock
    _closed: bool

    def _write(self, record: Record) -> None:
        self._write_line((dumps(record.to_json()) + "\n").encode(), record.type)

    def _write_line(self, data: bytes, what: str) -> None:
        """Write one encoded line (``_write``'s, or ``batch_line``'s; ``what``: its record type)."""
        with self._write_lock:
            if self._closed:
                raise AgentError(f"agent for {self.run_dir!r} is closed; cannot write a {what} record")
            self._out.write_line(data)

    def _error(self, seq: int | None, cmd: str | None, message: str) -> None:
        self._write(ErrorRecord(time=time.time(), seq=seq, cmd=cmd, message=message))
        warn(f"{'command refused' if seq is not None else 'error'}: {message}")

    @staticmethod
    def _lr(handle: OptimizerHandle, recent: bool = False) -> float | None:
        """The handle's learning rate (None if it cannot say); ``recent``: accept the value the
        handle last read or set if it has ``recent_lr`` (batch records)."""
        try:
            lr = handle.recent_lr() if recent and hasattr(handle, "recent_lr") else handle.get_lr()
        except Exception:
            return None
        return None if lr is None else float(lr)
