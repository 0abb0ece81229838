"""The LR range test as a probe: a hidden fit before the script's first fit, then everything put back.

Under ``lrsup run`` with a stack that holds ``lr_find`` (the supervisor sets ``$LRSUP_PROBE``),
the launcher's ``Model.fit`` runs this before the script's first fit::

    run_probe(original_fit, model, fit_arguments, script_callback)
    original_fit(model, ...)                  # the script's own fit, as it asked for it

:func:`run_probe` calls the original ``fit`` on the same model with the same training data
(``x``, ``y``, ``batch_size``, ``sample_weight``, ``class_weight``, ``steps_per_epoch``,
``shuffle``; the training part of a ``validation_split``), no validation, ``verbose=0``, as
many epochs as the script's fit plans (the ramp is at most a share of them), and one callback
only: an ``LrsupCallback`` marked as a probe. Its start record says ``probe``; the
supervisor's ``lr_find`` drives the ramp from the probe's batch records and ends it
(``clear_schedule``); the probe callback then stops the fit. The script's own callbacks,
its History, its progress bar never see it.

Before the probe's first batch (in the probe callback's ``on_train_begin``, once Keras has
built the model, its metrics and the optimizer) a :class:`Snapshot` copies every variable of
the model (trainable, non-trainable, seed generators' states), of its metrics and of the
optimizer (iterations, learning rate, slots; a LossScaleOptimizer's and its inner
optimizer's), the multiplier of a ``ScaledSchedule``, Keras's global seed generator, and
the Python and NumPy random states. After the probe they are all put back, so the script's
fit starts where it would have started plainly: same weights, a fresh optimizer at step 0,
the same random draws. The LR the test decided reaches the script's fit through its start
barrier (the supervisor sends it on the fit's start record), in force from the first batch.

A ``keras.utils.PyDataset`` is served to the probe through :class:`QuietEpochs`, which
never calls its ``on_epoch_begin``/``on_epoch_end``: a dataset that reshuffles itself there
is left as it was. Not put back, because nothing else outside the model is known to lrsup:
a data pipeline's own state (a ``tf.data`` shuffle is drawn afresh for each iteration) and
whatever the script's model code keeps outside Keras variables. Data that can be iterated
only once (a Python generator, an iterator) gets no probe, and neither does a model whose layers make their weights at the first training
step (a subclassed model never called before fit, on TensorFlow): an error record says
why, and the fit runs without a range test.
"""

from __future__ import annotations

import collections.abc
import random
from typing import Any, Callable, Mapping

import keras
import numpy as np

from lrsup.supervisor.agent.keras_callback import LrsupCallback, ScaledSchedule, _shared_agent

# validation_freq that never comes: a probe over a validation_split trains on the same rows
# as the script's fit and evaluates nothing.
NEVER = 2**31 - 1

# The arguments of fit that shape the training data, passed on to the probe as they are.
DATA_ARGUMENTS = ("x", "y", "batch_size", "sample_weight", "class_weight", "steps_per_epoch", "shuffle")


def probe_arguments(arguments: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The keyword arguments of the probe's fit for the script's fit ``arguments``, or (None, why not).

    Example::

        probe_arguments({"x": x, "y": y, "epochs": 10, "validation_split": 0.2})
        # ({"x": x, "y": y, "validation_split": 0.2, "validation_freq": NEVER, "epochs": 10,
        #   "verbose": 0, "initial_epoch": 0}, "")

    Args:
        arguments: the script's fit arguments by name (``inspect.BoundArguments.arguments``:
            only those it passed).
    """
    x = arguments.get("x")
    if isinstance(x, collections.abc.Iterator):
        kind = "a Python generator" if isinstance(x, collections.abc.Generator) else f"an iterator ({type(x).__name__})"
        return None, f"its training data is {kind}, which can be iterated only once"
    kwargs = {name: arguments[name] for name in DATA_ARGUMENTS if name in arguments}
    split = arguments.get("validation_split")
    if split and arguments.get("validation_data") is None:
        kwargs["validation_split"] = split  # the same training rows as the script's fit
        kwargs["validation_freq"] = NEVER
    epochs = arguments.get("epochs", 1)
    initial = arguments.get("initial_epoch", 0)
    epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else 1
    initial = initial if isinstance(initial, int) and not isinstance(initial, bool) else 0
    kwargs.update(epochs=max(1, epochs - initial), verbose=0, initial_epoch=0)
    return kwargs, ""


class QuietEpochs(keras.utils.PyDataset):
    """The batches of a script's PyDataset, without its epoch hooks: the probe leaves its state alone.

    Args:
        dataset: keras.utils.PyDataset, the script's (its workers and queue settings are kept).
    """

    def __init__(self, dataset: Any) -> None:
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    @property
    def num_batches(self) -> int | None:
        return self.dataset.num_batches


def _state_variables(model: Any) -> list[Any]:
    """Every variable whose value a probe may change: the model's, its metrics', the optimizer's."""
    groups: list[Any] = [model.variables, getattr(model, "metrics_variables", ())]
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        groups.append(optimizer.variables)
        inner = getattr(optimizer, "inner_optimizer", None)
        if inner is not None:
            groups.append(inner.variables)
    try:  # keras.random's global seed generator (draws with seed=None), if one was made
        from keras.src.backend.common import global_state

        generator = global_state.get_global_attribute("global_seed_generator")
        if generator is not None:
            groups.append([generator.state])
    except Exception:
        pass
    seen: set[int] = set()
    out = []
    for group in groups:
        for variable in group or ():
            if id(variable) not in seen:
                seen.add(id(variable))
                out.append(variable)
    return out


class ProbeRefused(Exception):
    """Raised by the probe's callback before its first batch when the probe could not be put back."""


def unbuilt_layers(model: Any) -> list[str]:
    """The names of the model's layers whose variables do not exist yet (made by the first step).

    Keras's TensorFlow trainer (without a distribution strategy) builds a model, its
    metrics and its optimizer while tracing the first step, not before ``on_train_begin``:
    a subclassed model that was never called has no weights yet there. A probe would make
    and train them, and no snapshot holds their initial values: such a fit gets no probe.
    """
    layers = model._flatten_layers(include_self=False) if hasattr(model, "_flatten_layers") else model.layers
    return [layer.name for layer in layers if not layer.built]


class Snapshot:
    """A model's and its optimizer's state and the random states, to put back exactly.

    Example::

        snapshot = Snapshot(model)     # after Keras built the model and the optimizer
        model.fit(x, y, epochs=3)
        snapshot.restore()             # as before the fit, to the bit

    Args:
        model: keras.Model, compiled.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        unbuilt = unbuilt_layers(model)
        if unbuilt:
            raise ProbeRefused(
                f"the model's layers {', '.join(unbuilt[:3])}{' ...' if len(unbuilt) > 3 else ''} make their "
                "weights at the first training step, which a probe could not put back (call the model once, "
                "or build it, before fit to have one)"
            )
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            # As the first step would (Keras builds it there): fresh slots (zeros) and step 0,
            # now, so that they are in the snapshot and the fit starts with a fresh optimizer.
            optimizer.build(model.trainable_variables)
        self.variables = _state_variables(model)
        self.values = [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in self.variables]
        optimizer = getattr(model, "optimizer", None)
        self.optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        self.learning_rate = getattr(self.optimizer, "_learning_rate", None)
        multiplier = getattr(self.learning_rate, "multiplier", None)
        self.multiplier: float | None = None
        if multiplier is not None:
            self.multiplier = float(keras.ops.convert_to_numpy(multiplier))
        self.python_random = random.getstate()
        self.numpy_random = np.random.get_state()

    def restore(self) -> list[str]:
        """Put everything back; returns the paths of variables made since, which keep their values."""
        for variable, value in zip(self.variables, self.values):
            variable.assign(value)
        lr: Any = getattr(self.optimizer, "_learning_rate", None)
        multiplier: Any = getattr(lr, "multiplier", None) if isinstance(lr, ScaledSchedule) else None
        if multiplier is not None:
            if lr is self.learning_rate and self.multiplier is not None:
                multiplier.assign(self.multiplier)
            elif lr.inner is self.learning_rate:
                multiplier.assign(1.0)  # wrapped by the probe's handle: as a fresh wrapper
        random.setstate(self.python_random)
        np.random.set_state(self.numpy_random)
        # Metrics made by the first step are left out: fit resets them at every epoch's start.
        known = {id(v) for v in [*self.variables, *getattr(self.model, "metrics_variables", ())]}
        return [getattr(v, "path", getattr(v, "name", "?")) for v in _state_variables(self.model) if id(v) not in known]


def run_probe(fit: Callable[..., Any], model: Any, arguments: Mapping[str, Any], callback: LrsupCallback) -> bool:
    """Run the LR range test probe before the script's fit; False when there was none.

    The model, the optimizer and the random states are as before when this returns (see the
    module docstring), whether the probe ended as planned, raised an ``Exception`` (said in
    an error record: the script's fit runs anyway) or ran no batch. ``KeyboardInterrupt`` and
    ``SystemExit`` pass through (the end record says "exception").

    Args:
        fit: the original ``keras.Model.fit``.
        model: the model being fit.
        arguments: the script's fit arguments by name.
        callback: the script's fit's LrsupCallback (its run directory and settings are the probe's).
    """
    if callback.run_dir is None:
        return False
    agent = _shared_agent(callback.run_dir, callback._settings)
    kwargs, why_not = probe_arguments(arguments)
    if kwargs is None:
        agent.records.error(
            None, None, f"LR range test: no probe before fit {agent.fits + 1}: {why_not}; no range test"
        )
        return False
    if isinstance(kwargs.get("x"), keras.utils.PyDataset):
        kwargs["x"] = QuietEpochs(kwargs["x"])
    probe = LrsupCallback(callback.run_dir, probe=True)
    probe._settings = dict(callback._settings)
    probe.lr_callbacks = callback.lr_callbacks  # the script's LR logic is known before the range test
    kwargs["callbacks"] = [probe]
    try:
        fit(model, **kwargs)
    except ProbeRefused as exc:
        agent.records.error(None, None, f"LR range test: no probe before fit {agent.fits + 1}: {exc}; no range test")
        probe.end_probe()
        return False
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"[:300]
        agent.records.error(None, None, f"LR range test: the probe failed ({text}); the fit runs without it")
    except BaseException:
        probe.report_exception()
        raise
    probe.end_probe()
    return True


__all__ = ["NEVER", "ProbeRefused", "QuietEpochs", "Snapshot", "probe_arguments", "run_probe", "unbuilt_layers"]
