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
from lrsup.supervisor.agent.checkpoints import CheckpointEntry, CheckpointError, CheckpointStore
from lrsup.supervisor.jsonl import Appender, LineSplitter
from lrsup.supervisor.protocol import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CONTROL_FILE,
    ENV_RUN_DIR,
    METRICS_FILE,
    AckRecord,
    BatchRecord,
    CheckpointRecord,
    EndRecord,
    EpochRecord,
    HOUSEKEEPING_COMMANDS,
    ErrorRecord,
    HeartbeatRecord,
    ProtocolError,
    Record,
    StartRecord,
    loads,
    validate_command,
)
from lrsup.supervisor.schedules import Schedule

DEFAULT_BATCH_EVERY = 10
DEFAULT_VERDICT_TIMEOUT = 10.0
DEFAULT_HEARTBEAT_INTERVAL = 5.0
DEFAULT_CHECKPOINT_EVERY_EPOCHS = 1
DEFAULT_CHECKPOINT_EVERY_STEPS = 0
DEFAULT_KEEP_LAST = 3

# Environment variables the supervisor sets when it restarts a crashed trainer.
ENV_RESTORE = "LRSUP_RESTORE"   # the name of the checkpoint to load before the first batch
ENV_ATTEMPT = "LRSUP_ATTEMPT"   # the trainer attempt, 1 for the first (informational)

# The verdict wait polls control.jsonl, sleeping FIRST_DELAY at first and growing to MAX_DELAY.
FIRST_DELAY = 0.0005
MAX_DELAY = 0.005
# Between the barriers batch_end polls control.jsonl at most once per POLL_INTERVAL seconds of
# wall time (a monotonic-clock compare, ~50 ns, instead of an os.stat, ~2-15 us, per batch).
POLL_INTERVAL = 0.001

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

    # -- checkpoints (used when the agent saves, rolls back or restores) --

    state_suffix: str
    """The file-name ending of ``save_state`` files (".weights.h5" for Keras)."""

    native_schedule: str | None
    """The class name of the optimizer's own LR schedule, or None for a plain float LR
    (lrsup's ``set_schedule`` drives float learning rates only)."""

    def save_state(self, path: str) -> Mapping[str, Any] | None:
        """Write the weights and the optimizer state to ``path``; return extra meta to keep
        with it (JSON-safe: e.g. ``{"multiplier": 0.5}``)."""

    def load_state(self, path: str, meta: Mapping[str, Any]) -> None:
        """Load what ``save_state`` wrote to ``path`` (weights, optimizer state, its step counter
        included) and the meta it returned."""

    def set_step(self, step: int) -> None:
        """After a rollback: the global step is now ``step`` (the checkpoint's). The handle sets
        the optimizer's step counter and tells its training loop, whose next batch is ``step + 1``
        (and resets running metrics, if it keeps any)."""


@dataclass(frozen=True)
class Settings:
    """The agent's cadence.

    Args:
        batch_every: int, a batch record every this many optimizer steps (>= 1).
        verdict_timeout: float, seconds to wait at an epoch end for the verdict (>= 0; 0 does not wait).
        heartbeat_interval: float, seconds between heartbeat records (> 0).
        checkpoint_every_epochs: int, a checkpoint at the end of every this many epochs (0: off).
        checkpoint_every_steps: int, a checkpoint every this many optimizer steps (0: off).
        keep_last: int, checkpoints kept besides the retained ones (>= 1).
    """

    batch_every: int = DEFAULT_BATCH_EVERY
    verdict_timeout: float = DEFAULT_VERDICT_TIMEOUT
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    checkpoint_every_epochs: int = DEFAULT_CHECKPOINT_EVERY_EPOCHS
    checkpoint_every_steps: int = DEFAULT_CHECKPOINT_EVERY_STEPS
    keep_last: int = DEFAULT_KEEP_LAST


def check_setting(name: str, value: Any, source: str) -> Any:
    """``value`` as setting ``name`` takes it; ValueError quoting it when out of range.

    Args:
        name: str, a ``Settings`` field (else TypeError).
        value: the value given.
        source: str, where it came from, for the message.
    """
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if name in ("checkpoint_every_epochs", "checkpoint_every_steps"):
        if not (is_int and value >= 0):
            raise ValueError(f"{source}: {name} must be an integer >= 0 (0: off), got {value!r}")
        return value
    if name == "keep_last":
        if not (is_int and value >= 1):
            raise ValueError(f"{source}: keep_last must be an integer >= 1, got {value!r}")
        return value
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
        **overrides: ``Settings`` fields; None means "not given".

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


_monotonic = time.monotonic


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
    built-in defaults (10, 10.0, 5.0, checkpoints every epoch, none by steps, keep 3).

    Checkpoints, rollback and lrsup schedules:

    - ``start`` checkpoints the state before the first batch (``step-0000000``), ``epoch_end``
      every ``checkpoint_every_epochs`` epochs before the epoch record (``epoch-0003``: the
      weights after epoch 3), ``batch_end`` every ``checkpoint_every_steps`` steps, and the
      ``checkpoint`` command on demand. After each save the checkpoints beyond the last
      ``keep_last`` that the latest ``retain`` command does not name are deleted, except the
      latest start checkpoint (or the one restored at start): the state a run that never
      learned is rolled back to stays available whatever the retain list says.
    - ``rollback`` verifies the checkpoint, loads weights and optimizer state and **sets the
      global step back to the checkpoint's** (``handle.set_step``; a Keras schedule and
      lrsup's schedule restart from there, as the supervisor's engine expects). The epoch does
      not go back: the ack carries the current epoch and the checkpoint's step, the next
      batch is step + 1, and the Keras handle resets the model's metrics, so the running
      means of later batch records count from the rollback. lrsup's schedule and multiplier
      are restored as they were at the checkpoint, then the command's ``lr`` is applied.
      The data iterator is not rewound, so the batches trained since the checkpoint are never
      trained on again: that is how ``skip_batches`` is honoured; a ``skip_batches`` larger
      than that count is only reported on stderr.
    - ``set_schedule`` makes the LR ``schedule(step) * multiplier`` at every ``batch_begin``
      (the caller calls it only while ``schedule_active``); ``set_lr`` then sets the multiplier
      to ``lr / schedule(step)``, ``scale_lr`` multiplies it, ``clear_schedule`` keeps the LR
      where it is. Refused (error record) for a handle whose ``native_schedule`` is set.

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
        checkpoint_every_epochs: int | None = None,
        checkpoint_every_steps: int | None = None,
        keep_last: int | None = None,
    ) -> None:
        self.run_dir = os.fspath(run_dir)
        if not os.path.isdir(self.run_dir):
            raise AgentError(f"lrsup run directory {self.run_dir!r} does not exist or is not a directory")
        self.settings = load_settings(
            self.run_dir,
            batch_every=batch_every,
            verdict_timeout=verdict_timeout,
            heartbeat_interval=heartbeat_interval,
            checkpoint_every_epochs=checkpoint_every_epochs,
            checkpoint_every_steps=checkpoint_every_steps,
            keep_last=keep_last,
        )
        self.checkpoints = CheckpointStore(self.run_dir)
        self._retain: frozenset[str] = frozenset()
        # lrsup's own schedule (set_schedule): the LR is schedule(step) * multiplier, set at each batch begin.
        self._schedule: Schedule | None = None
        self._multiplier = 1.0
        # The next step at which batch_end has more to do than a poll (a batch record or a checkpoint).
        self._next_event = 0
        self._ckpt_bucket = 0
        self._warned_no_state = False
        self._pinned: str | None = None  # the latest start (or restored) checkpoint: never pruned
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
        self.poll_interval = POLL_INTERVAL  # seconds; 0 polls at every batch end
        self._next_poll = 0.0  # time.monotonic() from which batch_end polls again
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
        checkpoint: bool = True,
        barrier: bool = True,
    ) -> None:
        """Begin one fit: apply what is pending, write the start record, start heartbeats,
        checkpoint, then wait for the supervisor's verdict on the start record (the start barrier).

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
            checkpoint: bool, save a checkpoint of the state before the first batch (skipped by
                a caller that has just restored one).
            barrier: bool, wait for the verdict on the start record (``verdict {epoch:
                initial_epoch - 1}``, at most ``verdict_timeout``), applying commands as they
                come, so that decisions on the start record (an LR range test, a schedule) are in
                effect from the first batch. False for a fit that will run no batch.
        """
        # Verdicts read so far belong to an earlier fit; a new fit's epochs start again (below the
        # start barrier's epoch, initial_epoch - 1, so that only a verdict read from now on counts).
        self._poll(handle)
        self._verdict_epoch = initial_epoch - 2
        self._late_epoch = None
        self._position = (initial_epoch, step)
        self._batch_bucket = step // self.batch_every
        every = self.settings.checkpoint_every_steps
        self._ckpt_bucket = step // every if every else 0
        self._plan_next_event()
        if self._schedule is not None:
            self._apply_schedule(handle, step)
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
        if checkpoint:
            self.checkpoint(handle, epoch=None, step=step, pin=True)
        if barrier:
            self._barrier(handle, initial_epoch - 1, "the start of training")

    @property
    def schedule_active(self) -> bool:
        """True while an lrsup schedule drives the LR: call ``batch_begin`` before every batch then."""
        return self._schedule is not None

    def batch_begin(self, handle: OptimizerHandle, step: int) -> None:
        """Before the update after ``step`` updates: set the LR from lrsup's schedule, if one is active.

        Args:
            handle: OptimizerHandle.
            step: int, the global optimizer step before this batch.
        """
        schedule = self._schedule
        if schedule is not None:
            handle.set_lr(schedule(step) * self._multiplier)

    def batch_end(self, handle: OptimizerHandle, *, epoch: int, batch: int, step: int, logs: Logs = None) -> None:
        """After each batch: a batch record when ``step`` enters a new block of ``batch_every``, then a
        poll of control.jsonl if ``poll_interval`` seconds have passed since the last one.

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
        if step >= self._next_event:
            bucket = step // self.settings.batch_every
            if bucket > self._batch_bucket:
                self._batch_bucket = bucket
                self._write(
                    BatchRecord(
                        time=time.time(), epoch=epoch, batch=batch, step=step, lr=self._lr(handle),
                        logs=metrics_of(logs),
                    )
                )
            every = self.settings.checkpoint_every_steps
            if every and step // every > self._ckpt_bucket:
                self._ckpt_bucket = step // every
                self.checkpoint(handle, epoch=epoch, step=step)
            self._plan_next_event()
        now = _monotonic()
        if now >= self._next_poll:
            self._next_poll = now + self.poll_interval
            self._poll(handle)

    def epoch_end(self, handle: OptimizerHandle, *, epoch: int, step: int, logs: Logs) -> None:
        """Checkpoint (every ``checkpoint_every_epochs``), write the epoch record, then apply
        commands until the verdict for ``epoch`` arrives.

        The checkpoint comes first so that the supervisor knows it when it judges the epoch.

        Waits at most ``verdict_timeout`` seconds. On timeout training goes on, a warning is
        printed, and commands applied before that verdict arrives are acked with ``late``.

        Args:
            handle: OptimizerHandle.
            epoch: int, the epoch that ended (0-based, as Keras passes it).
            step: int, the global optimizer step.
            logs: the epoch logs (loss, metrics, val_*), or a callable returning them.
        """
        self._position = (epoch, step)
        every = self.settings.checkpoint_every_epochs
        if every and (epoch + 1) % every == 0:
            self.checkpoint(handle, epoch=epoch, step=step, epoch_end=True)
        self._write(EpochRecord(time=time.time(), epoch=epoch, step=step, lr=self._lr(handle), logs=metrics_of(logs)))
        self._barrier(handle, epoch, f"epoch {epoch + 1}")

    def _barrier(self, handle: OptimizerHandle, epoch: int, what: str) -> None:
        """Apply commands until the verdict for ``epoch`` arrives; on timeout, mark later ones late.

        A ``verdict_timeout`` of 0 turns the barriers off: one poll, no wait, nothing marked late.
        """
        if self._wait_for_verdict(handle, epoch) or self.verdict_timeout <= 0:
            return
        self._late_epoch = epoch
        _warn(
            f"no verdict from the supervisor for {what} after {self.verdict_timeout:g} s; "
            "training goes on (commands for it will be applied late)"
        )

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint(
        self,
        handle: OptimizerHandle,
        name: str | None = None,
        *,
        epoch: int | None,
        step: int,
        epoch_end: bool = False,
        seq: int | None = None,
        pin: bool = False,
    ) -> CheckpointEntry | None:
        """Save a checkpoint, write its ``checkpoint`` record, prune old ones; None when it failed.

        A failed save (a full disk...) writes an ``error`` record and a stderr line; training
        goes on and earlier checkpoints are untouched.

        Args:
            handle: OptimizerHandle, whose ``save_state`` writes the file.
            name: str or None, the name (None: ``epoch-EEEE`` at an epoch end, else
                ``step-SSSSSSS``, with ``.2``, ``.3``... added when the name is taken).
            epoch: int or None, the epoch it is taken in (None before the first batch).
            step: int, the optimizer step of the weights.
            epoch_end: bool, taken at the end of ``epoch``.
            seq: int or None, the ``checkpoint`` command it answers (for the error record).
            pin: bool, exempt it from retention (the start checkpoint of a fit: the fallback a
                supervisor rolls a run that never learned back to).

        A handle without ``save_state`` (a custom loop's) takes no checkpoints: one warning,
        and ``checkpoint`` commands are refused.
        """
        if not hasattr(handle, "save_state"):
            if seq is not None:
                self._error(seq, "checkpoint", f"checkpoint failed: {type(handle).__name__} has no save_state")
            elif not self._warned_no_state:
                self._warned_no_state = True
                _warn(f"{type(handle).__name__} has no save_state: no checkpoints are taken")
            return None
        if name is None:
            name = self._fresh_name(f"epoch-{epoch:04d}" if epoch_end and epoch is not None else f"step-{step:07d}")
        lr = self._lr(handle)
        meta = {"lrsup_schedule": self._schedule.spec if self._schedule is not None else None,
                "lrsup_multiplier": self._multiplier}
        try:
            entry = self.checkpoints.save(
                name, handle.save_state, suffix=getattr(handle, "state_suffix", ".state"),
                epoch=epoch, step=step, lr=lr, multiplier=None, epoch_end=epoch_end, meta=meta,
            )
        except (CheckpointError, Exception) as exc:
            self._error(seq, "checkpoint", f"checkpoint failed: {type(exc).__name__}: {exc}")
            return None
        if pin:
            self._pinned = entry.name
        multiplier = self._multiplier if self._schedule is not None else entry.meta.get("multiplier")
        self._write(
            CheckpointRecord(
                time=entry.time, name=entry.name, epoch=entry.epoch, step=entry.step, lr=entry.lr,
                multiplier=float(multiplier) if multiplier is not None else None,
                file=entry.file, sha256=entry.sha256,
            )
        )
        self._prune()
        return entry

    def restore(self, handle: OptimizerHandle, name: str) -> CheckpointEntry | None:
        """Load checkpoint ``name`` before a fit's first batch (``LRSUP_RESTORE`` on a restart).

        Verifies it, loads weights and optimizer state (its step counter included: training
        continues from the checkpoint's step) and lrsup's schedule and multiplier. A missing or
        unverified checkpoint writes an ``error`` record and a stderr line and returns None:
        the fit starts from scratch.

        Args:
            handle: OptimizerHandle.
            name: str, the checkpoint's name.
        """
        try:
            entry = self.checkpoints.verify(name)
            handle.load_state(self.checkpoints.path_of(entry), entry.meta)
        except Exception as exc:
            self._error(None, None, f"restore of checkpoint {name!r} failed, starting from scratch: "
                                    f"{type(exc).__name__}: {exc}")
            return None
        self._restore_schedule(entry)
        self._pinned = entry.name
        _warn(f"restored checkpoint {name!r} (epoch {entry.epoch}, step {entry.step})")
        return entry

    def _restore_schedule(self, entry: CheckpointEntry) -> None:
        spec = entry.meta.get("lrsup_schedule")
        self._schedule = Schedule(spec) if spec else None
        multiplier = entry.meta.get("lrsup_multiplier")
        self._multiplier = float(multiplier) if multiplier is not None else 1.0

    def _fresh_name(self, base: str) -> str:
        taken = {e.name for e in self.checkpoints.entries()}
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}.{n}"
        return name

    def _prune(self) -> None:
        try:
            retain = self._retain | {self._pinned} if self._pinned else self._retain
            self.checkpoints.prune(self.settings.keep_last, retain)  # the manifest says what is left
        except (OSError, CheckpointError) as exc:
            _warn(f"checkpoint retention failed: {exc}")

    def _plan_next_event(self) -> None:
        nxt = (self._batch_bucket + 1) * self.settings.batch_every
        every = self.settings.checkpoint_every_steps
        if every:
            nxt = min(nxt, (self._ckpt_bucket + 1) * every)
        self._next_event = nxt

    # -- the learning rate under lrsup's schedule --------------------------------------

    def _apply_schedule(self, handle: OptimizerHandle, step: int) -> None:
        handle.set_lr(self._schedule(step) * self._multiplier)

    def _set_lr(self, handle: OptimizerHandle, lr: float) -> None:
        if self._schedule is None:
            handle.set_lr(lr)
            return
        step = self._position[1]
        base = self._schedule(step)
        if not (math.isfinite(base) and base > 0):
            raise ValueError(f"lrsup's schedule gives {base!r} at step {step}; no multiplier turns it into {lr!r}")
        self._multiplier = lr / base
        self._apply_schedule(handle, step)

    def _scale_lr(self, handle: OptimizerHandle, factor: float) -> None:
        if self._schedule is None:
            handle.scale_lr(factor)
            return
        self._multiplier *= factor
        self._apply_schedule(handle, self._position[1])

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
        epoch, step = self._position
        try:
            if cmd == "set_lr":
                self._set_lr(handle, float(obj["lr"]))
            elif cmd == "scale_lr":
                self._scale_lr(handle, float(obj["factor"]))
            elif cmd == "set_hparam":
                handle.set_hparam(obj["name"], float(obj["value"]))
            elif cmd == "checkpoint":
                if self.checkpoint(handle, obj.get("name"), epoch=epoch, step=step, seq=seq) is None:
                    return  # the error record is written
            elif cmd == "rollback":
                self._rollback(handle, obj)
            elif cmd == "set_schedule":
                self._set_schedule(handle, obj["schedule"])
            elif cmd == "clear_schedule":
                self._schedule = None
                self._multiplier = 1.0
            elif cmd == "retain":
                self._retain = frozenset(obj["keep"])
                self._prune()
            elif cmd == "configure":
                self._configure(obj)
        except Exception as exc:  # a refused command never stops training
            self._error(seq, cmd, f"{cmd} failed: {type(exc).__name__}: {exc}")
            return
        epoch, step = self._position  # a rollback moved it
        lr = self._lr(handle)
        self._write(AckRecord(time=time.time(), seq=seq, cmd=cmd, epoch=epoch, step=step, lr=lr, late=late))
        if cmd not in HOUSEKEEPING_COMMANDS:  # checkpoints and cadence: the ack record is enough
            _warn(_describe(obj, epoch, step, lr, late))
        if cmd == "stop":
            handle.request_stop()

    def _rollback(self, handle: OptimizerHandle, obj: Mapping[str, Any]) -> None:
        """Load checkpoint ``obj["checkpoint"]`` in the running process (see ``Agent`` docs)."""
        name = obj["checkpoint"]
        entry = self.checkpoints.verify(name)  # CheckpointError: refused, nothing loaded
        epoch, now = self._position
        handle.load_state(self.checkpoints.path_of(entry), entry.meta)
        step = entry.step
        handle.set_step(step)  # the global step goes back to the checkpoint's
        self._position = (epoch, step)
        self._batch_bucket = step // self.settings.batch_every
        every = self.settings.checkpoint_every_steps
        self._ckpt_bucket = step // every if every else 0
        self._plan_next_event()
        self._restore_schedule(entry)
        if self._schedule is not None:
            self._apply_schedule(handle, step)
        if obj.get("lr") is not None:
            self._set_lr(handle, float(obj["lr"]))
        skip = obj.get("skip_batches") or 0
        since = now - entry.step
        if skip > since:
            _warn(f"rollback to {name!r}: skip_batches={skip}, but the data is not rewound: the {since} "
                  f"batch(es) trained since the checkpoint are the ones skipped")

    def _set_schedule(self, handle: OptimizerHandle, spec: Mapping[str, Any]) -> None:
        native = getattr(handle, "native_schedule", None)
        if native is not None:
            raise ValueError(
                f"the optimizer's learning rate is a {native}; lrsup schedules drive a float learning "
                "rate only (use set_lr / scale_lr, which scale the optimizer's own schedule)"
            )
        self._schedule = Schedule(spec)
        self._multiplier = 1.0
        self._apply_schedule(handle, self._position[1])

    def _configure(self, obj: Mapping[str, Any]) -> None:
        from dataclasses import replace

        changes = {k: obj[k] for k in ("batch_every", "checkpoint_every_epochs", "checkpoint_every_steps")
                   if obj.get(k) is not None}
        for name, value in changes.items():
            check_setting(name, value, "configure")
        self.settings = replace(self.settings, **changes)
        step = self._position[1]
        self._batch_bucket = step // self.settings.batch_every
        every = self.settings.checkpoint_every_steps
        self._ckpt_bucket = step // every if every else 0
        self._plan_next_event()

    def _error(self, seq: int | None, cmd: str | None, message: str) -> None:
        self._write(ErrorRecord(time=time.time(), seq=seq, cmd=cmd, message=message))
        _warn(f"{'command refused' if seq is not None else 'error'}: {message}")

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
    """One line for the trainer's log: what was applied, where, and the supervisor's reason.

    The epoch is shown 1-based, as Keras's progress bar and lrsup's display show it.
    """
    def shown(value: Any) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    args = " ".join(f"{k}={shown(obj[k])}" for k in ("checkpoint", "lr", "factor", "name", "value", "keep")
                    if obj.get(k) is not None)
    where = f"epoch {epoch + 1} step {step}" if epoch is not None else f"step {step}"
    text = f"{where}: {obj['cmd']}{' ' + args if args else ''}"
    if lr is not None:
        text += f" (lr now {lr:.6g})"
    if late:
        text += " [late]"
    if obj.get("reason"):
        text += f": {obj['reason']}"
    return text
