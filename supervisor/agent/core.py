"""The trainer-side agent: records out to metrics.jsonl, commands in from control.jsonl.

Keras-free (standard library and ``lrsup.supervisor.protocol``/``jsonl`` only): the
Keras callback in ``keras_callback.py`` is a thin adapter over it, a custom training
loop can drive it directly, and its tests need no TensorFlow. What the agent changes
in the optimizer it changes through an ``OptimizerHandle``.

Example::

    agent = Agent.from_env()              # None when not run under lrsup
    agent.start(handle, optimizer="SGD", steps_per_epoch=100, epochs=10, step=0)
    for epoch in range(10):
        for batch in range(100):
            step += 1                     # after one optimizer update
            agent.batch_end(handle, epoch=epoch, batch=batch, step=step, logs=lambda: {"loss": loss})
        agent.epoch_end(handle, epoch=epoch, step=step, logs={"loss": loss, "val_loss": val_loss})
    agent.end(reason="completed", epoch=9, step=step)
    agent.close()

Commands are applied in order, each once (a ``seq`` not above the highest handled is
ignored). Commands already in control.jsonl when the agent is created were meant for an
earlier trainer process (a restarted run) and count as handled: an old ``stop`` or
``set_lr`` is never replayed on a fresh optimizer.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Union

from lrsup.supervisor import __version__
from lrsup.supervisor.jsonl import Appender, LineSplitter
from lrsup.supervisor.protocol import (
    CONFIG_FILE,
    CONTROL_FILE,
    ENV_RUN_DIR,
    METRICS_FILE,
    AckRecord,
    BatchRecord,
    EndRecord,
    EpochRecord,
    ErrorRecord,
    HeartbeatRecord,
    ProtocolError,
    Record,
    StartRecord,
    loads,
    validate_command,
)

DEFAULT_BATCH_EVERY = 10
DEFAULT_VERDICT_TIMEOUT = 10.0
DEFAULT_HEARTBEAT_INTERVAL = 5.0

# The verdict wait polls control.jsonl, sleeping FIRST_DELAY at first and growing to MAX_DELAY.
FIRST_DELAY = 0.0005
MAX_DELAY = 0.005

AGENT_NAME = f"lrsup {__version__}"

Logs = Union[Mapping[str, Any], Callable[[], Mapping[str, Any]], None]


class AgentError(RuntimeError):
    """A run directory or config.json the agent cannot use; the message names the path."""


class OptimizerHandle(Protocol):
    """What the agent drives; the Keras adapter (``KerasOptimizerHandle``) implements it."""

    def get_lr(self) -> float | None:
        """The effective learning rate now (None when it cannot be read)."""

    def set_lr(self, lr: float) -> None:
        """Set the effective learning rate; under a schedule it becomes a multiplier."""

    def scale_lr(self, factor: float) -> None:
        """Multiply the effective learning rate (or the schedule's multiplier)."""

    def set_hparam(self, name: str, value: float) -> None:
        """Set another hyperparameter; ValueError if the optimizer has no such number."""

    def request_stop(self) -> None:
        """Finish this epoch, then end fit cleanly."""


@dataclass(frozen=True)
class Settings:
    """The agent's cadence.

    Args:
        batch_every: int, a batch record every this many optimizer steps (>= 1).
        verdict_timeout: float, seconds to wait at an epoch end for the verdict (>= 0; 0 does not wait).
        heartbeat_interval: float, seconds between heartbeat records (> 0).
    """

    batch_every: int = DEFAULT_BATCH_EVERY
    verdict_timeout: float = DEFAULT_VERDICT_TIMEOUT
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL


def check_setting(name: str, value: Any, source: str) -> Any:
    """``value`` as setting ``name`` takes it; ValueError quoting it when out of range.

    Args:
        name: str, batch_every, verdict_timeout or heartbeat_interval (else TypeError).
        value: the value given.
        source: str, where it came from, for the message.
    """
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "batch_every":
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{source}: batch_every must be an integer >= 1, got {value!r}")
        return value
    if name == "verdict_timeout":
        if not (is_number and math.isfinite(value) and value >= 0):
            raise ValueError(f"{source}: verdict_timeout must be a number of seconds >= 0, got {value!r}")
        return float(value)
    if name == "heartbeat_interval":
        if not (is_number and math.isfinite(value) and value > 0):
            raise ValueError(f"{source}: heartbeat_interval must be a number of seconds > 0, got {value!r}")
        return float(value)
    raise TypeError(f"unknown agent setting {name!r}")


def load_settings(run_dir: str | os.PathLike[str], **overrides: Any) -> Settings:
    """Settings from the "agent" object of ``run_dir/config.json``, then ``overrides`` not None.

    Args:
        run_dir: str or PathLike, the run directory.
        **overrides: batch_every, verdict_timeout, heartbeat_interval; None means "not given".

    Raises:
        AgentError: config.json exists but cannot be read, is not JSON, or has a bad agent value.
        ValueError: an override is out of range (the message quotes it).
    """
    path = os.path.join(os.fspath(run_dir), CONFIG_FILE)
    values: dict[str, Any] = {}
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = None
    except OSError as exc:
        raise AgentError(f"cannot read {path}: {exc.strerror or exc}") from None
    if text is not None:
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise AgentError(f"{path} is not valid JSON: {exc}") from None
        section = config.get("agent", {}) if isinstance(config, dict) else {}
        if not isinstance(section, dict):
            raise AgentError(f"{path}: 'agent' must be an object, got {section!r}")
        for name in Settings.__dataclass_fields__:
            if name in section:
                try:
                    values[name] = check_setting(name, section[name], f"{path}: agent")
                except ValueError as exc:
                    raise AgentError(str(exc)) from None
    for name, value in overrides.items():
        if value is not None:
            values[name] = check_setting(name, value, "Agent")
    return Settings(**values)


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


def _warn(message: str) -> None:
    print(f"lrsup: {message}", file=sys.stderr, flush=True)


class _ControlReader:
    """The complete lines appended to control.jsonl since the last read.

    Cheap when nothing changed: one ``os.stat`` and a comparison. A file that shrank or was
    replaced (another inode) is read again from its start; the caller's seq check keeps that
    idempotent.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._ino: int | None = None
        self._offset = 0
        self._splitter = LineSplitter()

    def read_lines(self) -> list[bytes]:
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        if st.st_ino != self._ino or st.st_size < self._offset:
            if not self._reopen():
                return []
            st = os.fstat(self._fd)
        if st.st_size == self._offset:
            return []
        data = os.pread(self._fd, st.st_size - self._offset, self._offset)
        self._offset += len(data)
        return self._splitter.feed(data)

    def _reopen(self) -> bool:
        self.close()
        self._offset = 0
        self._splitter = LineSplitter()
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return False
        self._ino = os.fstat(self._fd).st_ino
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._ino = None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Agent:
    """Writes a run's records and applies the supervisor's commands, inside the training process.

    Example::

        agent = Agent("runs/20250101T000000Z-train", verdict_timeout=2.0)

    Args:
        run_dir: str or PathLike, the run directory (must exist and be writable).
        batch_every: int or None, a batch record every this many optimizer steps.
        verdict_timeout: float or None, seconds to wait at each epoch end for the verdict.
        heartbeat_interval: float or None, seconds between heartbeat records.

    Settings left None come from the "agent" object of ``run_dir/config.json``, else the
    built-in defaults (10, 10.0, 5.0).

    Raises:
        AgentError: the run directory is missing or metrics.jsonl cannot be opened for writing.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        batch_every: int | None = None,
        verdict_timeout: float | None = None,
        heartbeat_interval: float | None = None,
    ) -> None:
        self.run_dir = os.fspath(run_dir)
        if not os.path.isdir(self.run_dir):
            raise AgentError(f"lrsup run directory {self.run_dir!r} does not exist or is not a directory")
        self.settings = load_settings(
            self.run_dir,
            batch_every=batch_every,
            verdict_timeout=verdict_timeout,
            heartbeat_interval=heartbeat_interval,
        )
        metrics_path = os.path.join(self.run_dir, METRICS_FILE)
        try:
            self._out = Appender(metrics_path)
        except OSError as exc:
            raise AgentError(f"cannot write {metrics_path!r}: {exc.strerror or exc}") from None
        self._write_lock = threading.Lock()
        self._control = _ControlReader(os.path.join(self.run_dir, CONTROL_FILE))
        self._max_seq = 0
        self._skip_history()
        # Where training is: (epoch, step), replaced whole so the heartbeat thread reads a pair.
        self._position: tuple[int | None, int] = (None, 0)
        self._batch_bucket = 0
        self._verdict_epoch = -1
        self._late_epoch: int | None = None
        self._heartbeat: tuple[threading.Thread, threading.Event] | None = None
        self._closed = False

    @classmethod
    def from_env(cls) -> "Agent | None":
        """An agent on ``$LRSUP_RUN_DIR``; None when the variable is unset or empty."""
        run_dir = os.environ.get(ENV_RUN_DIR)
        return cls(run_dir) if run_dir else None

    @property
    def batch_every(self) -> int:
        return self.settings.batch_every

    @property
    def verdict_timeout(self) -> float:
        return self.settings.verdict_timeout

    @property
    def heartbeat_interval(self) -> float:
        return self.settings.heartbeat_interval

    # -- the training loop's calls ---------------------------------------------------

    def start(
        self,
        handle: OptimizerHandle,
        *,
        optimizer: str | None = None,
        optimizer_config: Mapping[str, Any] | None = None,
        lr_schedule: str | None = None,
        steps_per_epoch: int | None = None,
        epochs: int | None = None,
        initial_epoch: int = 0,
        step: int = 0,
        keras_version: str | None = None,
        backend: str | None = None,
    ) -> None:
        """Begin one fit: apply what is pending, write the start record, start heartbeats.

        Args:
            handle: OptimizerHandle, the optimizer this fit trains with.
            optimizer: str or None, its class name.
            optimizer_config: mapping or None, its JSON-safe configuration.
            lr_schedule: str or None, the class name of its LearningRateSchedule.
            steps_per_epoch: int or None, batches per epoch when known.
            epochs: int or None, the epoch count fit was given.
            initial_epoch: int, the first epoch (0-based).
            step: int, the global optimizer step before this fit's first batch.
            keras_version: str or None.
            backend: str or None, the Keras backend.
        """
        # Verdicts read so far belong to an earlier fit; a new fit's epochs start again.
        self._poll(handle)
        self._verdict_epoch = -1
        self._late_epoch = None
        self._position = (initial_epoch, step)
        self._batch_bucket = step // self.batch_every
        self._write(
            StartRecord(
                time=time.time(),
                pid=os.getpid(),
                optimizer=optimizer,
                optimizer_config=dict(optimizer_config or {}),
                lr=self._lr(handle),
                lr_schedule=lr_schedule,
                steps_per_epoch=steps_per_epoch,
                epochs=epochs,
                initial_epoch=initial_epoch,
                step=step,
                keras_version=keras_version,
                backend=backend,
                agent=AGENT_NAME,
            )
        )
        self._start_heartbeat()

    def batch_end(self, handle: OptimizerHandle, *, epoch: int, batch: int, step: int, logs: Logs = None) -> None:
        """After each batch: a batch record when ``step`` enters a new block of ``batch_every``, then a poll.

        Batch records land on the first step at or past each multiple of ``batch_every``
        (10, 20, ... with the default), so they line up across resumed runs.

        Args:
            handle: OptimizerHandle.
            epoch: int, the epoch (0-based).
            batch: int, the batch index within the epoch (0-based).
            step: int, the global optimizer step after this batch.
            logs: the batch logs, or a zero-argument callable returning them (called only
                when a record is written).
        """
        self._position = (epoch, step)
        bucket = step // self.settings.batch_every
        if bucket > self._batch_bucket:
            self._batch_bucket = bucket
            self._write(
                BatchRecord(
                    time=time.time(), epoch=epoch, batch=batch, step=step, lr=self._lr(handle), logs=metrics_of(logs)
                )
            )
        self._poll(handle)

    def epoch_end(self, handle: OptimizerHandle, *, epoch: int, step: int, logs: Logs) -> None:
        """Write the epoch record, then apply commands until the verdict for ``epoch`` arrives.

        Waits at most ``verdict_timeout`` seconds. On timeout training goes on, a warning is
        printed, and commands applied before that verdict arrives are acked with ``late``.

        Args:
            handle: OptimizerHandle.
            epoch: int, the epoch that ended (0-based, as Keras passes it).
            step: int, the global optimizer step.
            logs: the epoch logs (loss, metrics, val_*), or a callable returning them.
        """
        self._position = (epoch, step)
        self._write(EpochRecord(time=time.time(), epoch=epoch, step=step, lr=self._lr(handle), logs=metrics_of(logs)))
        if self._wait_for_verdict(handle, epoch):
            return
        self._late_epoch = epoch
        if self.verdict_timeout > 0:
            _warn(
                f"no verdict from the supervisor for epoch {epoch} after {self.verdict_timeout:g} s; "
                "training goes on (commands for it will be applied late)"
            )

    def end(self, *, reason: str, epoch: int | None, step: int) -> None:
        """Stop heartbeats and write the end record.

        Args:
            reason: str, "completed", "stopped" or "exception".
            epoch: int or None, the last epoch reached.
            step: int, the global optimizer step.
        """
        self._stop_heartbeat()
        self._write(EndRecord(time=time.time(), reason=reason, epoch=epoch, step=step))

    def close(self) -> None:
        """Stop heartbeats and close the files. Safe to call twice."""
        self._stop_heartbeat()
        with self._write_lock:
            self._closed = True
            self._out.close()
        self._control.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------------

    def _skip_history(self) -> None:
        """Count the commands already in control.jsonl as handled (see the module docstring)."""
        for line in self._control.read_lines():
            try:
                seq = _int_or_none(loads(line).get("seq"))
            except ProtocolError:
                continue
            if seq is not None:
                self._max_seq = max(self._max_seq, seq)

    def _poll(self, handle: OptimizerHandle) -> None:
        for line in self._control.read_lines():
            if line.strip():
                self._handle_line(handle, line)

    def _wait_for_verdict(self, handle: OptimizerHandle, epoch: int) -> bool:
        deadline = time.monotonic() + self.verdict_timeout
        delay = FIRST_DELAY
        while True:
            self._poll(handle)
            if self._verdict_epoch >= epoch:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, MAX_DELAY)

    def _handle_line(self, handle: OptimizerHandle, line: bytes) -> None:
        try:
            obj = loads(line)
        except ProtocolError as exc:
            self._error(None, None, f"{CONTROL_FILE}: {exc}")
            return
        try:
            validate_command(obj)
        except ProtocolError as exc:
            cmd = obj.get("cmd")
            self._error(_int_or_none(obj.get("seq")), cmd if isinstance(cmd, str) else None, str(exc))
            return
        seq, cmd = obj["seq"], obj["cmd"]
        if seq <= self._max_seq:
            return  # already handled: commands are idempotent by seq
        self._max_seq = seq
        if cmd == "verdict":
            self._verdict_epoch = max(self._verdict_epoch, obj["epoch"])
            if self._late_epoch is not None and obj["epoch"] >= self._late_epoch:
                self._late_epoch = None
            return
        late = self._late_epoch is not None
        try:
            if cmd == "set_lr":
                handle.set_lr(float(obj["lr"]))
            elif cmd == "scale_lr":
                handle.scale_lr(float(obj["factor"]))
            elif cmd == "set_hparam":
                handle.set_hparam(obj["name"], float(obj["value"]))
        except Exception as exc:  # a refused command never stops training
            self._error(seq, cmd, f"{cmd} failed: {type(exc).__name__}: {exc}")
            return
        epoch, step = self._position
        lr = self._lr(handle)
        self._write(AckRecord(time=time.time(), seq=seq, cmd=cmd, epoch=epoch, step=step, lr=lr, late=late))
        _warn(_describe(obj, epoch, step, lr, late))
        if cmd == "stop":
            handle.request_stop()

    def _error(self, seq: int | None, cmd: str | None, message: str) -> None:
        self._write(ErrorRecord(time=time.time(), seq=seq, cmd=cmd, message=message))
        _warn(f"command refused: {message}")

    # -- output ------------------------------------------------------------------------

    def _write(self, record: Record) -> None:
        with self._write_lock:
            if self._closed:
                raise AgentError(f"agent for {self.run_dir!r} is closed; cannot write a {record.type} record")
            self._out.write(record.to_json())

    @staticmethod
    def _lr(handle: OptimizerHandle) -> float | None:
        try:
            lr = handle.get_lr()
        except Exception:
            return None
        return None if lr is None else float(lr)

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None:
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._beat, args=(stop,), name="lrsup-heartbeat", daemon=True)
        self._heartbeat = (thread, stop)
        thread.start()

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is None:
            return
        thread, stop = self._heartbeat
        self._heartbeat = None
        stop.set()
        if thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.heartbeat_interval):
            epoch, step = self._position
            try:
                self._write(HeartbeatRecord(time=time.time(), epoch=epoch, step=step))
            except (OSError, AgentError) as exc:
                _warn(f"heartbeats stopped: {exc}")
                return


def _describe(obj: Mapping[str, Any], epoch: int | None, step: int, lr: float | None, late: bool) -> str:
    """One line for the trainer's log: what was applied, where, and the supervisor's reason."""
    args = " ".join(f"{k}={obj[k]}" for k in ("lr", "factor", "name", "value") if k in obj)
    text = f"epoch {epoch} step {step}: {obj['cmd']}{' ' + args if args else ''}"
    if lr is not None:
        text += f" (lr now {lr:.6g})"
    if late:
        text += " [late]"
    if obj.get("reason"):
        text += f": {obj['reason']}"
    return text
