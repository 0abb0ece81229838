"""The trainer-side agent: records out to metrics.jsonl, commands in from control.jsonl.

Keras-free (standard library and ``lrsup.supervisor.protocol.wire``/``jsonl`` only): the
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

Commands are applied in order, each once: only the next ``seq`` is accepted, anything
else is answered with an error record. Commands already in control.jsonl when the agent
is created were meant for an earlier trainer process (a restarted run) and count as
handled: an old ``stop`` or ``set_lr`` is never replayed on a fresh optimizer.

This module owns ``Agent``: its construction, the training position and cadence, and the
training loop's calls (``start``, ``batch_begin``, ``batch_end``, ``epoch_end``, ``end``,
``close``). The rest is done by collaborators it owns, one concern each, each with a
public method surface: ``records`` (``RecordWriter``: records out, a full disk ridden
out), ``commands`` (``CommandHandler``: control.jsonl in, commands applied),
``checkpointer`` (``Checkpointer``: saving, restoring, pruning), ``lr_control``
(``LrControl``: lrsup's LR schedule) and ``heartbeats`` (``Heartbeats``). A custom
training loop imports what it needs from ``lrsup.supervisor.agent``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from typing import Any, Mapping, Sequence

from lrsup.supervisor.agent.checkpointing import Checkpointer
from lrsup.supervisor.agent.checkpoints import CheckpointEntry, CheckpointStore
from lrsup.supervisor.agent.control import CommandHandler, ControlReader
from lrsup.supervisor.agent.handle import OptimizerHandle
from lrsup.supervisor.agent.heartbeat import Heartbeats
from lrsup.supervisor.agent.lr_control import LrControl
from lrsup.supervisor.agent.records import AGENT_NAME, Logs, RecordWriter, batch_line, lr_of, metrics_of, warn
from lrsup.supervisor.agent.settings import AgentError, load_settings
from lrsup.supervisor.protocol.wire import (
    BELL_FILE,
    CONTROL_FILE,
    ENV_ATTEMPT,  # noqa: F401  (re-exported under its old name; the protocol's, as ENV_RESTORE)
    ENV_RESTORE,  # noqa: F401
    ENV_RUN_DIR,
    METRICS_FILE,
    EndRecord,
    EpochRecord,
    StartRecord,
    retain_from_env,
)

# Between the barriers batch_end reads control.jsonl when the supervisor rings control.bell (a
# compare of 8 mapped bytes, ~0.1 us, see lrsup.supervisor.protocol.doorbell), and anyway every
# BELL_FALLBACK seconds. Without a bell it polls at most once per POLL_INTERVAL seconds of wall
# time (a monotonic-clock compare, ~50 ns, instead of an os.fstat, ~2-15 us, per batch).
POLL_INTERVAL = 0.001
BELL_FALLBACK = 0.25

_monotonic = time.monotonic


class Agent:
    """Writes a run's records and applies the supervisor's commands, inside the training process.

    Example::

        agent = Agent("runs/20250101T000000Z-train", verdict_timeout=2.0)

    Args:
        run_dir: str or PathLike, the run directory (must exist and be writable).
        batch_every: int or None, a batch record every this many optimizer steps.
        batch_min_interval: float or None, seconds at least between two batch records (0: none).
        verdict_timeout: float or None, seconds to wait at each epoch end for the verdict.
        heartbeat_interval: float or None, seconds between heartbeat records.

    Settings left None come from the "agent" object of ``run_dir/config.json``, else the
    built-in defaults (10, 0.1, 10.0, 5.0, checkpoints every epoch, none by steps, keep 3).

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
      where it is. Over the optimizer's own schedule (``native_schedule``) lrsup's schedule
      drives the multiplier over it, and ``clear_schedule`` restores the script's schedule
      exactly (its multiplier as before).
    - What else moves the LR: ``start`` records the script's LR callbacks it is told of
      (``lr_callbacks``: the launcher sees fit's callbacks), and each epoch record carries
      ``lr_moved_from`` when the LR differs from the one lrsup last left (at the start, after
      each command, at each step of lrsup's schedule): an LR change lrsup did not command, such
      as a callback of the script assigning it. Not compared under a ``native_schedule``.

    Raises:
        AgentError: the run directory is missing or metrics.jsonl cannot be opened for writing.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        batch_every: int | None = None,
        batch_min_interval: float | None = None,
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
            batch_min_interval=batch_min_interval,
            verdict_timeout=verdict_timeout,
            heartbeat_interval=heartbeat_interval,
            checkpoint_every_epochs=checkpoint_every_epochs,
            checkpoint_every_steps=checkpoint_every_steps,
            keep_last=keep_last,
        )
        self.records = RecordWriter(os.path.join(self.run_dir, METRICS_FILE))
        self.lr_control = LrControl()
        self.checkpointer = Checkpointer(
            CheckpointStore(self.run_dir), self.records, self.lr_control, self.settings.keep_last
        )
        # A restarted attempt starts with the run's keep-list: an experiment's checkpoints survive its pruning.
        self.checkpointer.retain(retain_from_env(os.environ))
        self.heartbeats = Heartbeats(self.records, self.settings.heartbeat_interval, self.position)
        # Maps the bell first: a command appended after this rings, one before it is history.
        self._control = ControlReader(os.path.join(self.run_dir, CONTROL_FILE), os.path.join(self.run_dir, BELL_FILE))
        self.commands = CommandHandler(
            self._control,
            self.records,
            self.lr_control,
            self.checkpointer,
            position=self.position,
            rewind=self._rewind,
            reconfigure=self._reconfigure,
            verdict_timeout=lambda: self.settings.verdict_timeout,
            probing=lambda: self.probing,
        )
        self.commands.skip_history()
        # How many fits this process has started (the start record's ``fit``: a stage of the run).
        self.fits = 0
        # Inside the launcher's LR range test probe (a hidden fit before fit ``fits + 1``; see ``start``).
        self.probing = False
        self._probe_over = False  # a probe ended and the fit it precedes has not started yet
        # Where training is: (epoch, step), replaced whole so the heartbeat thread reads a pair.
        self._position: tuple[int | None, int] = (None, 0)
        # The next step at which batch_end has more to do than a poll (a batch record or a checkpoint).
        self._next_event = 0
        self._batch_bucket = 0
        self._ckpt_bucket = 0
        self._last_batch_record = -math.inf  # clock() of the last batch record (batch_min_interval)
        self.clock = _monotonic  # what batch_min_interval is measured with (a benchmark replaces it)
        self.poll_interval = POLL_INTERVAL  # seconds; 0 polls at every batch end
        self._next_poll = 0.0  # time.monotonic() from which batch_end polls again

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

    @property
    def checkpoints(self) -> CheckpointStore:
        """The run's checkpoint files and manifest."""
        return self.checkpointer.store

    def position(self) -> tuple[int | None, int]:
        """Where training is: (epoch or None before the first, the global optimizer step)."""
        return self._position

    def checkpoint(
        self,
        handle: OptimizerHandle,
        name: str | None = None,
        *,
        epoch: int | None,
        step: int,
        epoch_end: bool = False,
        pin: bool = False,
    ) -> CheckpointEntry | None:
        """Save a checkpoint now (see ``Checkpointer.save``); None when it failed (an error record says why)."""
        return self.checkpointer.save(handle, name, epoch=epoch, step=step, epoch_end=epoch_end, pin=pin)

    def restore(self, handle: OptimizerHandle, name: str) -> CheckpointEntry | None:
        """Load checkpoint ``name`` before a fit's first batch (see ``Checkpointer.restore``)."""
        return self.checkpointer.restore(handle, name)

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
        lr_callbacks: Sequence[str] = (),
        lr_callbacks_left_out: bool = False,
        probe: bool = False,
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
            lr_callbacks: the class names of the script's own LR callbacks in this fit.
            lr_callbacks_left_out: bool, they were left out of this fit (lrsup owns the LR).
            probe: bool, this is the launcher's LR range test probe (``end_probe`` ends it): its
                start record says ``probe`` and carries the number of the fit it precedes (not
                counted in ``fits``); no start checkpoint, no step checkpoints, no epoch records.
        """
        self.commands.poll(handle)
        if not probe and self.lr_control.schedule is not None and self._probe_over:
            self.lr_control.clear()  # a schedule that reached the probe late never carries into the fit
        self._probe_over = False
        self.commands.begin_fit(initial_epoch)
        self.probing = probe
        if not probe:
            self.fits += 1
            self.checkpointer.fit = self.fits  # its checkpoints belong to this fit (their manifest entries say so)
        self._position = (initial_epoch, step)
        self._reset_buckets(step)
        if self.lr_control.schedule is not None:
            self.lr_control.apply(handle, step)
        lr = lr_of(handle)
        self.lr_control.watch = getattr(handle, "native_schedule", None) is None
        self.lr_control.leave(lr)
        self.records.write(
            StartRecord(
                time=time.time(),
                pid=os.getpid(),
                optimizer=optimizer,
                optimizer_config=dict(optimizer_config or {}),
                lr=lr,
                lr_schedule=lr_schedule,
                steps_per_epoch=steps_per_epoch,
                epochs=epochs,
                initial_epoch=initial_epoch,
                step=step,
                keras_version=keras_version,
                backend=backend,
                agent=AGENT_NAME,
                fit=self.fits + 1 if probe else self.fits,
                lr_callbacks=list(lr_callbacks),
                lr_callbacks_left_out=lr_callbacks_left_out,
                probe=probe,
            )
        )
        self.heartbeats.start()
        if checkpoint and not probe:
            self.checkpointer.save(handle, epoch=None, step=step, pin=True)
        if barrier:
            self._barrier(handle, initial_epoch - 1, "the start of training")

    @property
    def schedule_active(self) -> bool:
        """True while an lrsup schedule drives the LR: call ``batch_begin`` before every batch then."""
        return self.lr_control.schedule is not None

    def batch_begin(self, handle: OptimizerHandle, step: int) -> None:
        """Before the update after ``step`` updates: set the LR from lrsup's schedule, if one is active.

        Args:
            handle: OptimizerHandle.
            step: int, the global optimizer step before this batch.
        """
        lr = self.lr_control
        if lr.schedule is not None:
            lr.apply(handle, step)

    def batch_end(self, handle: OptimizerHandle, *, epoch: int, batch: int, step: int, logs: Logs = None) -> None:
        """After each batch: a batch record when ``step`` enters a new block of ``batch_every``
        and ``batch_min_interval`` seconds have passed since the last one, then a look for commands.

        Batch records land on the first step at or past a multiple of ``batch_every`` (10, 20,
        ... with the default), so they line up across resumed runs; one that would come less than
        ``batch_min_interval`` after the last record is skipped (with steps of 1.5 ms and the
        defaults: a record every 70 steps). The first block after a start, a rollback or a
        ``configure`` is always recorded.

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
                if self._record_due():
                    self.records.write_line(
                        batch_line(time.time(), epoch, batch, step, lr_of(handle, recent=True), metrics_of(logs)),
                        "batch",
                    )
            every = self.settings.checkpoint_every_steps
            if every and step // every > self._ckpt_bucket and not self.probing:  # never mid-ramp
                self._ckpt_bucket = step // every
                self.checkpointer.save(handle, epoch=epoch, step=step)
            self._plan_next_event()
        bell = self._control.bell
        if bell is not None and bell.changed():  # the common case: one compare of 8 mapped bytes
            self.commands.poll(handle)
            return
        now = _monotonic()
        if now >= self._next_poll:
            self._next_poll = now + (self.poll_interval if bell is None else BELL_FALLBACK)
            self.commands.poll(handle)

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
            self.checkpointer.save(handle, epoch=epoch, step=step, epoch_end=True)
        lr = lr_of(handle)
        moved = self.lr_control.moved_from(lr)  # a callback of the script moved it during the epoch
        self.records.write(
            EpochRecord(time=time.time(), epoch=epoch, step=step, lr=lr, logs=metrics_of(logs), lr_moved_from=moved)
        )
        self._barrier(handle, epoch, f"epoch {epoch + 1}")

    def end_probe(self, handle: OptimizerHandle) -> None:
        """The LR range test probe is over (its fit returned or raised); the script's fit comes next.

        If the probe's start barrier timed out, first wait (at most ``verdict_timeout``) for its
        verdict, so that every command decided on the probe's start record (the ramp) is applied
        now and not inside the script's fit; then drop lrsup's schedule (the ramp). The caller
        restores the model and optimizer as they were before the probe. No end record: the
        probe is not a fit, and the next start record ends its stage.
        """
        late = self.commands.late_epoch
        if late is not None:
            self.commands.wait_for_verdict(handle, late)
        self.lr_control.clear()
        self.probing = False
        self._probe_over = True

    def _barrier(self, handle: OptimizerHandle, epoch: int, what: str) -> None:
        """Apply commands until the verdict for ``epoch`` arrives; on timeout, mark later ones late.

        A ``verdict_timeout`` of 0 turns the barriers off: one poll, no wait, nothing marked late.
        """
        if self.commands.wait_for_verdict(handle, epoch) or self.verdict_timeout <= 0:
            return
        self.commands.late_epoch = epoch
        warn(
            f"no verdict from the supervisor for {what} after {self.verdict_timeout:g} s; "
            "training goes on (commands for it will be applied late)"
        )

    def _record_due(self) -> bool:
        """batch_min_interval has passed since the last batch record (then it counts from now)."""
        floor = self.settings.batch_min_interval
        if floor:
            now = self.clock()
            if now - self._last_batch_record < floor:
                return False
            self._last_batch_record = now
        return True

    def _plan_next_event(self) -> None:
        nxt = (self._batch_bucket + 1) * self.settings.batch_every
        every = self.settings.checkpoint_every_steps
        if every:
            nxt = min(nxt, (self._ckpt_bucket + 1) * every)
        self._next_event = nxt

    def _rewind(self, step: int) -> None:
        """A rollback set the global step back to ``step`` (the epoch stays)."""
        self._position = (self._position[0], step)
        self._reset_buckets(step)

    def _reconfigure(self, changes: Mapping[str, Any]) -> None:
        """A ``configure`` command's settings (checked): the cadence from now on."""
        self.settings = replace(self.settings, **changes)
        self._reset_buckets(self._position[1])

    def _reset_buckets(self, step: int) -> None:
        """The step is now ``step`` (a fit's start, a rollback, a new cadence): recount the blocks."""
        self._batch_bucket = step // self.settings.batch_every
        self._last_batch_record = -math.inf
        every = self.settings.checkpoint_every_steps
        self._ckpt_bucket = step // every if every else 0
        self._plan_next_event()

    def end(self, *, reason: str, epoch: int | None, step: int) -> None:
        """Stop heartbeats and write the end record.

        Args:
            reason: str, "completed", "stopped" or "exception".
            epoch: int or None, the last epoch reached.
            step: int, the global optimizer step.
        """
        self.heartbeats.stop()
        self.records.write(EndRecord(time=time.time(), reason=reason, epoch=epoch, step=step))

    def close(self) -> None:
        """Stop heartbeats and close the files. Safe to call twice."""
        self.heartbeats.stop()
        self.records.close()
        self._control.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
