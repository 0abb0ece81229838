"""The Keras side of the agent: a callback over the Keras-free core, and the optimizer handle.

Under ``lrsup run`` the launcher appends one ``LrsupCallback`` to every ``Model.fit``; a
script may also pass one itself (it is then not added twice)::

    model.fit(x, y, epochs=10, callbacks=[LrsupCallback()])   # run dir from $LRSUP_RUN_DIR

Without a run directory the callback warns once and does nothing, so the script runs
standalone. One ``Agent`` per run directory is shared by all fits of the process, so that
commands are handled once across fits.

Keras facts this relies on (Keras 3.15, TensorFlow backend):

- ``CallbackList`` converts batch logs to Python floats (``pythonify_logs``) before calling
  ``on_train_batch_end``; the callback passes that dict on, and the core only reads it
  for the batches it records.
- ``fit`` calls ``make_train_function()`` and then ``on_train_begin``, before the first call
  of the train function, so a schedule wrapped there is traced into the graph.
- A Python-float hyperparameter (``momentum``, ``beta_1``...) is a constant in the traced
  train function: after ``set_hparam`` the train function is rebuilt (traced again on the
  next batch). Learning rates live in variables and need no retrace.
"""

from __future__ import annotations

import atexit
import math
import os
import struct
import time
import warnings
from typing import Any, Mapping

import keras
from keras.optimizers.schedules import LearningRateSchedule

from lrsup.supervisor.agent.checkpoints import CheckpointEntry, CheckpointError, CheckpointStore
from lrsup.supervisor.agent.core import Agent
from lrsup.supervisor.agent.settings import check_setting
from lrsup.supervisor.protocol.wire import ENV_RESTORE, ENV_RUN_DIR, METRICS_FILE

# Attributes that look like numbers but are structure, not hyperparameters.
_NOT_HPARAMS = frozenset({"learning_rate", "iterations", "gradient_accumulation_steps", "ema_overwrite_frequency"})

_agents: dict[str, Agent] = {}
_warned_standalone = False


@keras.saving.register_keras_serializable(package="lrsup")
class ScaledSchedule(LearningRateSchedule):
    """A LearningRateSchedule times a multiplier variable that lrsup can change during fit.

    Example::

        schedule = ScaledSchedule(keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.5))
        schedule.multiplier.assign(0.5)   # halves every later learning rate

    Args:
        inner: LearningRateSchedule, the schedule the script built.
        multiplier: a float32 keras Variable, or a float to create one with (default 1.0).
    """

    def __init__(self, inner: LearningRateSchedule, multiplier: Any = 1.0) -> None:
        if not isinstance(inner, LearningRateSchedule):
            raise TypeError(f"ScaledSchedule wraps a LearningRateSchedule, got {inner!r}")
        self.inner = inner
        if not isinstance(multiplier, keras.Variable):
            multiplier = keras.Variable(float(multiplier), dtype="float32", trainable=False, name="lrsup_lr_multiplier")
        self.multiplier = multiplier

    def __call__(self, step: Any) -> Any:
        return keras.ops.multiply(keras.ops.cast(self.inner(step), "float32"), self.multiplier)

    def get_config(self) -> dict[str, Any]:
        return {
            "inner": keras.optimizers.schedules.serialize(self.inner),
            "multiplier": _to_float(self.multiplier),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ScaledSchedule":
        return cls(keras.optimizers.schedules.deserialize(config["inner"]), config["multiplier"])


# How long a learning rate read or set by KerasOptimizerHandle stands for the current one in
# batch records (recent_lr); seconds.
LR_MAX_AGE = 1.0
_F32 = struct.Struct("<f")


def _as_dtype(value: float, dtype: Any) -> float | None:
    """``value`` as a variable of ``dtype`` holds it (rounded to float32 for "float32"); None
    for another dtype or a value float32 cannot hold (read the variable instead)."""
    if str(dtype) == "float64":
        return float(value)
    if str(dtype) != "float32":
        return None
    try:
        return _F32.unpack(_F32.pack(value))[0]
    except OverflowError:
        return None


def _to_float(value: Any) -> float:
    """A scalar tensor, variable or number as a float (``float(x)`` works on each backend's scalars)."""
    try:
        return float(value)
    except TypeError:
        return float(keras.ops.convert_to_numpy(value))


def json_safe(value: Any) -> Any:
    """``value`` with every leaf a JSON type: numpy and tensor scalars as numbers, others as str.

    Args:
        value: a config value (dicts and lists are walked).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_safe(value.tolist())
    try:
        return _to_float(value)
    except Exception:
        return str(value)


class KerasOptimizerHandle:
    """Changes a Keras optimizer's learning rate and hyperparameters for the agent.

    A float learning rate is assigned to the optimizer's variable. A LearningRateSchedule is
    wrapped once in a ``ScaledSchedule`` (Keras refuses to assign a learning rate under a
    schedule) and lrsup sets its multiplier; the effective rate is schedule(step) * multiplier.

    Args:
        optimizer: keras.optimizers.Optimizer (a LossScaleOptimizer is driven through its
            inner optimizer).
        model: keras.Model or None, whose train function is rebuilt after ``set_hparam``.

    Attributes:
        schedule: the ScaledSchedule in use, or None with a float learning rate.
        wrapped: bool, True when this handle installed the ScaledSchedule (a train function
            traced before then must be rebuilt).
        stop_requested: bool, set by ``request_stop``.
    """

    def __init__(self, optimizer: Any, model: Any = None) -> None:
        self.optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        self.model = model
        self.stop_requested = False
        self.wrapped = False
        self.rewound_to: int | None = None
        self._lr_seen: tuple[float, float] | None = None  # (lr, time.monotonic()) as last read or set
        current = self.optimizer._learning_rate
        if isinstance(current, ScaledSchedule):
            self.schedule: ScaledSchedule | None = current
        elif isinstance(current, LearningRateSchedule):
            self.schedule = ScaledSchedule(current)
            self.optimizer._learning_rate = self.schedule
            self.wrapped = True
        else:
            self.schedule = None
        if self.schedule is not None and keras.backend.backend() == "jax":
            _track_in_state(self.optimizer, self.schedule.multiplier)

    def _sync(self) -> None:
        """Bring the variables up to date before reading or assigning them (JAX, inside an epoch).

        Keras's JAX trainer keeps the model's and the optimizer's state outside their variables
        during an epoch (the variables are purged) and writes it back at the epoch's end, so an
        assignment made in between would be overwritten and a read would see nothing.
        ``jax_state_sync()`` writes the state back now and makes the next step read the
        variables again (``_jax_state_synced``), so what the agent reads is what trains and
        what it assigns is trained with. A no-op between epochs and on the other backends
        (TensorFlow and PyTorch train on the variables themselves).
        """
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()

    def get_lr(self) -> float:
        """The effective learning rate (the schedule's value at the current step times the multiplier)."""
        self._sync()
        lr = _to_float(self.optimizer.learning_rate)
        self._lr_seen = (lr, time.monotonic())
        return lr

    def recent_lr(self) -> float | None:
        """The learning rate as this handle last read or set it, if less than ``LR_MAX_AGE`` s ago.

        For batch records: reading the LR variable dispatches a TensorFlow op (20 us in a tight
        loop, 60-130 us between training steps), several times the rest of a record. A float
        learning rate changes only when someone sets it: lrsup sets it through this handle,
        which remembers the value (rounded to the variable's dtype); another callback of the
        script that sets it shows in the batch records at most ``LR_MAX_AGE`` s later (epoch
        records and acks always read it). Under a LearningRateSchedule, which moves at every
        step, this is ``get_lr()``.
        """
        seen = self._lr_seen
        if self.schedule is None and seen is not None and time.monotonic() - seen[1] < LR_MAX_AGE:
            return seen[0]
        return self.get_lr()

    def set_lr(self, lr: float) -> None:
        """Set the effective learning rate; under a schedule, multiplier = lr / schedule(step)."""
        self._sync()
        if self.schedule is not None:
            base = _to_float(self.schedule.inner(self.optimizer._iterations))
            if not (math.isfinite(base) and base > 0):
                raise ValueError(
                    f"the schedule {type(self.schedule.inner).__name__} gives learning rate {base!r} "
                    f"at this step; no multiplier turns it into {lr!r}"
                )
            self.schedule.multiplier.assign(lr / base)
        elif isinstance(self.optimizer._learning_rate, keras.Variable):
            self.optimizer.learning_rate = lr
            held = _as_dtype(lr, self.optimizer._learning_rate.dtype)
            self._lr_seen = (held, time.monotonic()) if held is not None else None
            return
        else:
            raise ValueError(
                f"the optimizer's learning_rate is {self.optimizer._learning_rate!r}: lrsup can change "
                "a float learning rate or a LearningRateSchedule, not a plain callable"
            )

    def scale_lr(self, factor: float) -> None:
        """Multiply the effective learning rate (under a schedule: the multiplier) by ``factor``."""
        self._sync()
        if self.schedule is not None:
            self.schedule.multiplier.assign(_to_float(self.schedule.multiplier) * factor)
        else:
            self.set_lr(self.get_lr() * factor)

    def set_hparam(self, name: str, value: float) -> None:
        """Set a numeric hyperparameter the optimizer has (momentum, beta_1, weight_decay...).

        Raises:
            ValueError: no such attribute, not a number, a structural one (learning_rate,
                iterations...), or one that is 0 now (the optimizer may have built no state
                for it, as SGD does for momentum 0).
        """
        self._sync()
        kind = type(self.optimizer).__name__
        if name.startswith("_") or name in _NOT_HPARAMS:
            raise ValueError(f"{kind}: {name!r} cannot be set with set_hparam")
        if not hasattr(self.optimizer, name):
            raise ValueError(f"{kind} has no hyperparameter {name!r}")
        current = getattr(self.optimizer, name)
        if isinstance(current, keras.Variable):
            current.assign(value)
            return
        if isinstance(current, bool) or not isinstance(current, (int, float)):
            raise ValueError(f"{kind}.{name} is {current!r}, not a number that set_hparam can change")
        if current == 0 and value != 0:
            raise ValueError(f"{kind}.{name} is 0, so the optimizer may hold no state for it; cannot set {value!r}")
        setattr(self.optimizer, name, value)
        # A Python number is a constant in the traced train function: trace it again.
        if self.model is not None and getattr(self.model, "train_function", None) is not None:
            self.model.make_train_function(force=True)

    def request_stop(self) -> None:
        """Ask for the end of fit after the current epoch (the callback acts on it at epoch end)."""
        self.stop_requested = True

    # -- checkpoints: Keras's own weights format, never a pickle --

    state_suffix = ".weights.h5"

    @property
    def native_schedule(self) -> str | None:
        """The class name of the optimizer's LearningRateSchedule, or None for a float LR."""
        return type(self.schedule.inner).__name__ if self.schedule is not None else None

    def native_multiplier(self) -> float:
        """The multiplier over the optimizer's own schedule (1.0 without one)."""
        if self.schedule is None:
            return 1.0
        self._sync()
        return _to_float(self.schedule.multiplier)

    def set_native_multiplier(self, value: float) -> None:
        """Set the multiplier over the optimizer's own schedule (lrsup's schedule is cleared: the
        script's schedule comes back exactly as it was scaled before)."""
        if self.schedule is None:
            return
        self._sync()
        self.schedule.multiplier.assign(value)

    def save_state(self, path: str) -> dict[str, Any]:
        """``model.save_weights(path)``: the weights and the optimizer's variables (iterations,
        learning rate, slots) in one ``.weights.h5``; returns the schedule multiplier, if any.

        Raises:
            ValueError: the model has no variables yet and no shape given to ``model.build``
                to build its layers from (the checkpoint could hold no weights).
        """
        self._sync()
        self._build_optimizer()
        self.model.save_weights(path)
        return {"multiplier": _to_float(self.schedule.multiplier)} if self.schedule is not None else {}

    def load_state(self, path: str, meta: Mapping[str, Any]) -> None:
        """``model.load_weights(path)`` after building the optimizer if no step has built it yet;
        then the schedule multiplier from ``meta``."""
        self._lr_seen = None  # the checkpoint's learning rate: read it again
        self._sync()
        self._build_optimizer()
        self.model.load_weights(path)
        if self.schedule is not None and meta.get("multiplier") is not None:
            self.schedule.multiplier.assign(float(meta["multiplier"]))

    def set_step(self, step: int) -> None:
        """After a rollback: ``optimizer.iterations = step``, reset the model's metrics (later batch
        logs are means since the rollback) and leave ``rewound_to`` for the callback."""
        self._sync()
        self.optimizer.iterations.assign(step)
        self._lr_seen = None
        if self.model is not None:
            self.model.reset_metrics()
        self.rewound_to = step

    def _build_optimizer(self) -> None:
        """Build the model's layers and the optimizer's slots (momentum, moments) if no step has yet.

        A checkpoint taken before the first step must hold the optimizer's initial state:
        without the slots, restoring it would keep whatever momentum the run built since
        (after an LR range test that ramped to LR 10, enough to wreck the restored weights).

        The optimizer is built only from the model's complete variables: an optimizer built
        from fewer variables than train refuses the others at the first step ("Unknown
        variable"). On TensorFlow, Keras builds the layers of a subclassed model whose
        ``build()`` it does not define only when the train function is first traced;
        ``model.build(shape)`` then recorded the shape, and the layers are built from it here
        as Keras's own symbolic build would (``compute_output_spec`` over that shape).
        """
        if self.model is None:
            raise ValueError("this KerasOptimizerHandle has no model: checkpoints need one")
        model = self.model
        if not _layers_built(model):
            shape = _build_shape(model)
            if shape is not None:
                model.compute_output_spec(keras.KerasTensor(shape))
            elif not model.trainable_variables:  # (with some, an unbuilt layer may be one call() never uses)
                raise ValueError(
                    f"the layers of {type(model).__name__} are not built before the first step and no "
                    "input shape is known to build them: no checkpoint before the first step (call the "
                    "model on a batch, or give it a build() method)"
                )
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)


def _layers_built(model: Any) -> bool:
    """Whether every layer of ``model`` has its variables (Keras's own test before fit's symbolic build)."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return bool(getattr(model, "built", True))
    return all(layer.built for layer in flatten())


def _build_shape(model: Any) -> Any:
    """The one input shape ``model.build(shape)`` recorded, or None."""
    shapes = getattr(model, "_build_shapes_dict", None)
    if isinstance(shapes, Mapping) and len(shapes) == 1:
        (shape,) = shapes.values()
        if isinstance(shape, (tuple, list)) and all(d is None or isinstance(d, int) for d in shape):
            return tuple(shape)
    return None


def _track_in_state(optimizer: Any, variable: Any) -> None:
    """Make ``variable`` one of the optimizer's variables (once).

    Keras's JAX train step is a pure function of the state it is handed (the model's and the
    optimizer's variables); any other variable it reads, as a ScaledSchedule's multiplier, is a
    constant traced into it, and changing it would change the records but not the training.
    As an optimizer variable the multiplier travels in that state (and in checkpoints).
    """
    if any(v is variable for v in optimizer.variables):
        return
    optimizer._track_variable(variable)


class _RestorePlan:
    """``$LRSUP_RESTORE`` as read once per process: the checkpoint a restarted attempt resumes from.

    The checkpoint belongs to fit ``fit`` of the script (its manifest entry's ``fit``; 1 for an
    entry without it, or when it cannot be verified). That fit restores it and resumes after
    it. The process's fits before it completed in an earlier attempt: under ``lrsup run`` they
    are skipped (``restore_initial_epoch`` makes them run no epoch, and ``skipped_history``
    gives the script the History their recorded epochs rebuild); called without the launcher,
    they train again and fit ``fit`` then restores over what they trained.
    """

    def __init__(self) -> None:
        self.name = os.environ.get(ENV_RESTORE) or None
        self.run_dir = os.environ.get(ENV_RUN_DIR) or None
        self.entry: CheckpointEntry | None = None
        self.used = False
        self.skipping = False  # the fit being run now is one the restart skips
        if self.name and self.run_dir:
            try:
                self.entry = CheckpointStore(self.run_dir).verify(self.name)
            except CheckpointError:
                self.entry = None  # the agent reports it when it tries the restore
        self.fit = self.entry.fit if self.entry is not None else 1

    def next_fit(self) -> int:
        """The ordinal of the fit about to begin: the process's agent's ``fits`` + 1."""
        agent = _agents.get(os.path.realpath(self.run_dir)) if self.run_dir else None
        return 1 if agent is None else agent.fits + 1


_plan: _RestorePlan | None = None


def _restore_plan() -> _RestorePlan:
    global _plan
    if _plan is None:
        _plan = _RestorePlan()
    return _plan


def restore_initial_epoch(initial_epoch: int, epochs: int | None = None) -> int:
    """The ``initial_epoch`` for the fit about to begin under ``$LRSUP_RESTORE``.

    For the fit the checkpoint belongs to: the epoch after the checkpoint's (an epoch-end
    checkpoint of epoch 4 resumes at 5; one taken inside epoch 4 runs epoch 4 again; a step-0
    checkpoint changes nothing), unless the script asked for a later one. For an earlier fit
    of the process (given its ``epochs``): ``epochs``, so that it runs no epoch (it completed
    in an earlier attempt; the checkpoint holds what it trained). Otherwise, or without a
    verified checkpoint to restore: ``initial_epoch``.

    Args:
        initial_epoch: int, what the script passed to fit (0 by default).
        epochs: int or None, what the script passed to fit (1 by default).
    """
    plan = _restore_plan()
    plan.skipping = False
    if plan.used or plan.entry is None:
        return initial_epoch
    upcoming = plan.next_fit()
    if upcoming < plan.fit and epochs is not None:
        plan.skipping = True
        return max(initial_epoch, epochs)
    if upcoming != plan.fit:
        return initial_epoch
    resume = plan.entry.resume_epoch()
    return initial_epoch if resume is None else max(initial_epoch, resume)


def skipped_history(history: Any) -> Any:
    """What fit returns: for a fit a restart skipped, its History rebuilt from its recorded epochs.

    The epochs are the epoch records of that fit (the start records' ``fit``) in
    ``metrics.jsonl``, the last of each epoch number winning (a rollback or a restart ran it
    again). Any other fit's History is returned as it is.
    """
    plan = _restore_plan()
    if not plan.skipping or plan.run_dir is None or not hasattr(history, "history"):
        return history
    plan.skipping = False
    fit = plan.next_fit() - 1  # the skipped fit wrote its start record
    epochs = recorded_epochs(plan.run_dir, fit)
    history.epoch = sorted(epochs)
    history.history = {}
    for epoch in history.epoch:
        for key, value in epochs[epoch].items():
            history.history.setdefault(key, []).append(value)
    return history


def recorded_epochs(run_dir: str, fit: int) -> dict[int, dict[str, Any]]:
    """The logs of each epoch of fit ``fit`` recorded in ``run_dir``'s metrics.jsonl (0-based epoch keys)."""
    from lrsup.supervisor.protocol.jsonl import ReadStats, iter_objects

    epochs: dict[int, dict[str, Any]] = {}
    current = 1
    for obj in iter_objects(os.path.join(run_dir, METRICS_FILE), ReadStats()):
        kind = obj.get("type")
        if kind == "start":
            value = obj.get("fit", 1)
            current = value if isinstance(value, int) else 1
        elif kind == "epoch" and current == fit and isinstance(obj.get("epoch"), int):
            logs = obj.get("logs")
            epochs[obj["epoch"]] = dict(logs) if isinstance(logs, dict) else {}
    return epochs


def _shared_agent(run_dir: str, settings: Mapping[str, Any]) -> Agent:
    """The process's agent for ``run_dir``, created on first use (later settings are ignored)."""
    key = os.path.realpath(run_dir)
    agent = _agents.get(key)
    if agent is None:
        agent = _agents[key] = Agent(run_dir, **settings)
    return agent


@atexit.register
def _close_agents() -> None:
    for agent in _agents.values():
        agent.close()
    _agents.clear()


class LrsupCallback(keras.callbacks.Callback):
    """Reports a fit to the lrsup supervisor and applies its commands.

    Example::

        model.fit(x, y, epochs=10, callbacks=[LrsupCallback(verdict_timeout=2.0)])

    Args:
        run_dir: str, PathLike or None, the run directory; None reads ``$LRSUP_RUN_DIR``. With
            neither, the callback does nothing (one warning per process).
        batch_every: int or None, a batch record every this many steps (None: config.json or 10).
        batch_min_interval: float or None, seconds at least between two batch records (None:
            config.json or 0.1; 0: a record every ``batch_every`` steps).
        verdict_timeout: float or None, seconds to wait for each epoch's verdict (None: config.json or 10.0).
        heartbeat_interval: float or None, seconds between heartbeats (None: config.json or 5.0).
        probe: bool, the launcher's LR range test probe (``lrsup.supervisor.agent.probe``): the
            callback takes a ``Snapshot`` before the first batch, writes a start record marked
            ``probe``, no checkpoints and no epoch records, stops the fit once lrsup's ramp is
            over (or when none came at the start barrier), and ``end_probe`` puts the snapshot
            back. Not for scripts.

    The global step is ``optimizer.iterations`` read once at train begin plus the batches run
    since (counted, not read: reading the variable costs about 20 us a batch). With
    ``gradient_accumulation_steps`` it therefore counts batches, not optimizer updates.

    Per-batch work is in ``on_train_batch_end``. On the TensorFlow backend Keras calls every
    batch hook synchronously on the training thread (``backend.IS_THREAD_SAFE`` is False, so
    ``CallbackList`` never dispatches batch ends to its thread pool, ``async_safe`` or not) and
    converts the batch logs to floats after every batch, with or without callbacks: the hook
    costs only its own work.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        batch_every: int | None = None,
        batch_min_interval: float | None = None,
        verdict_timeout: float | None = None,
        heartbeat_interval: float | None = None,
        probe: bool = False,
    ) -> None:
        super().__init__()
        self.probe = probe
        self._settings = {
            name: check_setting(name, value, "LrsupCallback") if value is not None else None
            for name, value in (
                ("batch_every", batch_every),
                ("batch_min_interval", batch_min_interval),
                ("verdict_timeout", verdict_timeout),
                ("heartbeat_interval", heartbeat_interval),
            )
        }
        self.run_dir = os.fspath(run_dir) if run_dir is not None else (os.environ.get(ENV_RUN_DIR) or None)
        if self.run_dir is None:
            _warn_standalone()
        # The script's LR callbacks in the coming fit and whether they were left out of it:
        # set by the launcher before each fit (it sees fit's callbacks; this callback does not).
        self.lr_callbacks: tuple[list[str], bool] = ([], False)
        self._reset()

    def _reset(self) -> None:
        self._agent: Agent | None = None
        self._handle: KerasOptimizerHandle | None = None
        self._start_info: dict[str, Any] | None = None
        self._epoch = 0
        self._epoch_base = 0
        self._step = 0
        self._running = False
        self._restored = False
        self._ramped = False  # a probe: lrsup's ramp has been seen in force
        self.snapshot: Any = None  # a probe: the state to put back (probe.Snapshot)
        self._skipped = False  # a fit a restarted attempt skips (it completed in an earlier attempt)

    @property
    def agent(self) -> Agent | None:
        """The agent of the current (or last) fit; None before it or without a run dir."""
        return self._agent

    def on_train_begin(self, logs=None):
        self._reset()
        if self.run_dir is None:
            return
        model = self.model
        optimizer = model.optimizer
        if self.probe:  # before anything of lrsup's touches the optimizer
            from lrsup.supervisor.agent.probe import Snapshot

            self.snapshot = Snapshot(model)
        config = json_safe(optimizer.get_config())
        self._handle = handle = KerasOptimizerHandle(optimizer, model=model)
        if handle.wrapped and getattr(model, "train_function", None) is not None:
            model.make_train_function(force=True)  # a function traced by an earlier fit knows no multiplier
        self._agent = agent = _shared_agent(self.run_dir, self._settings)
        plan = _restore_plan()
        self._restored = False
        if plan.name and not plan.used and not self.probe:
            upcoming = agent.fits + 1
            if upcoming >= plan.fit:
                plan.used = True  # the fit the checkpoint belongs to (a later one: it was never reached)
                if upcoming == plan.fit:
                    self._restored = agent.restore(handle, plan.name) is not None
            self._skipped = plan.skipping
        self._step = self._epoch_base = int(_to_float(optimizer.iterations))
        params = self.params or {}
        # Written at the first on_epoch_begin, right after this, which knows fit's initial_epoch.
        self._start_info = dict(
            optimizer=type(optimizer).__name__,
            optimizer_config=config,
            lr_schedule=type(handle.schedule.inner).__name__ if handle.schedule is not None else None,
            steps_per_epoch=params.get("steps"),
            epochs=params.get("epochs"),
            step=self._step,
            keras_version=keras.version(),
            backend=keras.backend.backend(),
            lr_callbacks=list(self.lr_callbacks[0]),
            lr_callbacks_left_out=self.lr_callbacks[1],
        )
        self._running = True

    def _write_start(self, initial_epoch: int, barrier: bool = True) -> None:
        if self._start_info is None:
            return
        info, self._start_info = self._start_info, None
        assert self._agent is not None and self._handle is not None  # set with _start_info
        self._epoch = initial_epoch
        self._agent.start(
            self._handle,
            initial_epoch=initial_epoch,
            checkpoint=not (self._restored or self._skipped),
            barrier=barrier,
            probe=self.probe,
            **info,
        )

    def on_epoch_begin(self, epoch, logs=None):
        if self._agent is None:
            return
        self._write_start(epoch)
        self._epoch = epoch
        self._epoch_base = self._step

    def on_train_batch_begin(self, batch, logs=None):
        # Keras calls every callback's batch-begin hook anyway; this one costs a call and a
        # test unless an lrsup schedule is active.
        agent = self._agent
        if agent is not None and agent.lr_control.schedule is not None:
            agent.batch_begin(self._handle, self._epoch_base + batch)

    def on_train_batch_end(self, batch, logs=None):
        # Every step goes through here: no model or optimizer access, no conversion.
        agent = self._agent
        if agent is None:
            return
        handle = self._handle
        step = self._step = self._epoch_base + batch + 1
        agent.batch_end(handle, epoch=self._epoch, batch=batch, step=step, logs=logs)
        if handle.rewound_to is not None:  # a rollback: the next batch is the checkpoint's step + 1
            self._step = handle.rewound_to
            self._epoch_base = handle.rewound_to - batch - 1
            handle.rewound_to = None
        if self.probe:
            if agent.lr_control.schedule is not None:
                self._ramped = True
            else:  # the ramp is over (cleared), or none came at the start barrier
                self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self._agent is None or self.probe:  # a probe's epochs are no epochs of the run
            return
        self._agent.epoch_end(self._handle, epoch=epoch, step=self._step, logs=logs)
        if self._handle.rewound_to is not None:
            self._step = self._handle.rewound_to  # on_epoch_begin bases the next epoch on it
            self._handle.rewound_to = None
        if self._handle.stop_requested:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if not self._running or self.probe:  # a probe ends in end_probe
            return
        self._running = False
        self._write_start((self.params or {}).get("epochs") or 0, barrier=False)  # fit ran no epoch
        reason = "stopped" if self._handle.stop_requested else "completed"
        self._agent.end(reason=reason, epoch=self._epoch, step=self._step)

    def end_probe(self) -> list[str]:
        """A probe's fit returned or raised: end its stage and put the snapshot back.

        Returns the paths of variables the probe created, which keep the values it gave them
        (an error record names them); none for a model Keras builds before the first batch.
        """
        self._running = False
        if self._agent is not None and self._handle is not None and self._start_info is None:
            self._agent.end_probe(self._handle)
        if self.snapshot is None:
            return []
        snapshot, self.snapshot = self.snapshot, None
        kept = snapshot.restore()
        if kept and self._agent is not None:
            self._agent.records.error(
                None, None, f"LR range test: the probe created variables it cannot put back: {', '.join(kept[:5])}"
            )
        return kept

    def report_exception(self) -> None:
        """Write the end record with reason "exception" if fit raised while this callback ran."""
        if not self._running:
            return
        self._running = False
        self._write_start(self._epoch, barrier=False)
        assert self._agent is not None  # set before _running
        self._agent.end(reason="exception", epoch=self._epoch, step=self._step)


def _warn_standalone() -> None:
    global _warned_standalone
    if _warned_standalone:
        return
    _warned_standalone = True
    warnings.warn(
        f"lrsup: ${ENV_RUN_DIR} is not set and no run_dir was given; LrsupCallback does nothing "
        "(run the script with `lrsup run` to supervise it)",
        RuntimeWarning,
        stacklevel=3,
    )
