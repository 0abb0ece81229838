"""The shared "is this an improvement?" rule, with Keras's semantics, in one place.

Keras's ``MonitorCallback`` (the base of ReduceLROnPlateau, EarlyStopping and
ModelCheckpoint) decides improvement like this, and so does :class:`Monitor`:

- ``mode`` is ``"min"``, ``"max"`` or ``"auto"``. Keras resolves ``"auto"`` from the
  model's compiled metrics (their ``_direction``) and from the name ``loss``; lrsup
  has no model, so it resolves it from the name with a table of Keras's built-in
  metrics (``accuracy``, ``auc``, ``precision``... go up; ``loss``, ``mae``,
  ``*_crossentropy``... go down), after stripping ``val_``. A name it cannot place is
  refused, as Keras refuses it: set ``mode`` explicitly.
- ``min_delta`` is taken as ``abs(min_delta)``; ``current`` improves on ``best`` when
  ``current + min_delta < best`` (min) or ``current - min_delta > best`` (max).
- Keras compares with ``keras.ops.less``/``greater`` on Python floats, which the
  backend converts to float32 tensors: both sides are rounded to float32 before the
  comparison, and so they are here (:func:`to_float32`), so that the same sequence of
  metric values gives the same answer to the last bit.
- ``best`` starts as ``None`` (no baseline): the first value is always an improvement,
  even NaN. Any comparison with NaN is False, so a NaN ``current`` never improves, and a
  NaN ``best`` is never improved on, exactly as in Keras.

Example::

    m = Monitor("val_accuracy")            # auto -> "max"
    m.is_improvement(0.91, best=0.90)      # True
    Monitor("val_loss", min_delta=0.01).is_improvement(0.995, best=1.0)  # False
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field, ValidationInfo, field_validator

from lrsup.policies.actions import Action
from lrsup.policies.base import Policy, PolicySettings, RunView
from lrsup.supervisor.protocol.wire import AckRecord, EpochRecord

Direction = Literal["min", "max"]
MODES = ("auto", "min", "max")

_F32 = struct.Struct("<f")

# Keras 3.x built-in metrics and the direction their ``_direction`` attribute declares,
# plus the short identifiers ``compile(metrics=[...])`` accepts (the metric is then
# named after the identifier). Keys are lower-cased with underscores removed, so that
# ``mean_squared_error``, ``MeanSquaredError`` and ``meansquarederror`` all match.
_DIRECTION_NAMES: dict[Direction, tuple[str, ...]] = {
    "max": (
        "accuracy",
        "acc",
        "binary_accuracy",
        "categorical_accuracy",
        "sparse_categorical_accuracy",
        "top_k_categorical_accuracy",
        "sparse_top_k_categorical_accuracy",
        "auc",
        "precision",
        "recall",
        "f1_score",
        "fbeta_score",
        "r2_score",
        "iou",
        "io_u",
        "binary_io_u",
        "mean_io_u",
        "one_hot_io_u",
        "one_hot_mean_io_u",
        "cosine_similarity",
        "pearson_correlation",
        "concordance_correlation",
        "precision_at_recall",
        "recall_at_precision",
        "sensitivity_at_specificity",
        "specificity_at_sensitivity",
    ),
    "min": (
        "loss",
        "mean_squared_error",
        "mse",
        "mean_absolute_error",
        "mae",
        "mean_absolute_percentage_error",
        "mape",
        "mean_squared_logarithmic_error",
        "msle",
        "root_mean_squared_error",
        "rmse",
        "binary_crossentropy",
        "bce",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
        "crossentropy",
        "hinge",
        "squared_hinge",
        "categorical_hinge",
        "kl_divergence",
        "kld",
        "poisson",
        "logcosh",
        "log_cosh",
        "log_cosh_error",
    ),
}
_DIRECTIONS: dict[str, Direction] = {
    key.replace("_", ""): direction for direction, names in _DIRECTION_NAMES.items() for key in names
}

_NUMBERED = re.compile(r"_\d+$")


_F32_MIN_NORMAL = 1.1754943508222875e-38


def to_float32(x: float) -> float:
    """Round ``x`` to the nearest float32, as a Python float (what a float32 tensor holds).

    Example::

        to_float32(0.1)   # 0.10000000149011612
        to_float32(1e39)  # inf (overflow rounds to infinity, as a cast does)

    Args:
        x: float. Any double, NaN and infinities included.
    """
    try:
        y = _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)
    # TensorFlow's CPU kernels run with flush-to-zero and denormals-are-zero: a float32
    # subnormal compares as zero in Keras's monitor ops, so it must here too.
    if 0.0 < abs(y) < _F32_MIN_NORMAL:
        return math.copysign(0.0, y)
    return y


def infer_direction(monitor: str) -> Direction | None:
    """The direction Keras would give ``monitor`` in ``mode="auto"``, or None if unknown.

    ``val_`` is stripped; then the name is looked up in the table of Keras's metrics,
    then without a ``_<n>`` suffix (``auc_1``), then without leading ``<output>_``
    parts (``dense_accuracy``, ``val_out_loss``).

    Example::

        infer_direction("val_accuracy")  # "max"
        infer_direction("val_loss")      # "min"
        infer_direction("my_score")      # None

    Args:
        monitor: str. The name of a key in Keras's logs.
    """
    name = monitor.removeprefix("val_")
    candidates = [name]
    stripped = _NUMBERED.sub("", name)
    if stripped != name:
        candidates.append(stripped)
    for base in list(candidates):
        parts = base.split("_")
        candidates.extend("_".join(parts[i:]) for i in range(1, len(parts)))
    for candidate in candidates:
        direction = _DIRECTIONS.get(candidate.lower().replace("_", ""))
        if direction is not None:
            return direction
    return None


def resolve_mode(monitor: str, mode: str) -> Direction:
    """Turn ``mode`` (auto/min/max) into ``"min"`` or ``"max"`` for ``monitor``.

    Example::

        resolve_mode("val_auc", "auto")  # "max"

    Args:
        monitor: str. The monitored key.
        mode: str. One of ``"auto"``, ``"min"``, ``"max"``.

    Raises:
        ValueError: ``mode`` is not one of the three, or it is ``"auto"`` and the
            direction of ``monitor`` cannot be inferred from its name.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of 'auto', 'min', 'max'; got mode={mode!r}")
    direction = metric_direction(monitor, mode)
    if direction is None:
        raise ValueError(
            f"mode='auto' cannot tell whether monitor={monitor!r} should be minimised or "
            "maximised; set mode to 'min' or 'max'"
        )
    return direction


def metric_direction(name: str, mode: str = "auto") -> Direction | None:
    """Whether higher or lower is better for ``name``, for everything that reads a run back.

    The one answer to "is higher better?" in lrsup: the policies decide with it (through
    :func:`resolve_mode`), and so do the live display, the report, ``lrsup ls`` and
    ``status``, so that they never disagree. ``mode`` is a policy's setting when the caller
    knows it (``"min"``/``"max"`` win); ``"auto"`` infers from the name as Keras does.

    Example::

        metric_direction("val_precision")            # "max"
        metric_direction("my_score")                 # None: nobody can tell
        metric_direction("my_score", mode="max")     # "max"

    Args:
        name: str. A key of Keras's logs.
        mode: str. ``"auto"``, ``"min"`` or ``"max"``; anything else counts as ``"auto"``.

    Returns:
        ``"min"``, ``"max"``, or None when the direction of ``name`` cannot be inferred.
    """
    if mode == "min":
        return "min"
    if mode == "max":
        return "max"
    return infer_direction(name)


@dataclass(frozen=True)
class Monitor:
    """Keras's improvement rule for one monitored quantity.

    Example::

        m = Monitor("val_loss", mode="auto", min_delta=1e-4)
        best = None
        for value in (0.9, 0.8, 0.80005):
            if m.is_improvement(value, best):
                best = value          # 0.9, then 0.8; 0.80005 is not better by 1e-4

    Args:
        monitor: str. The key in Keras's logs, e.g. ``"val_loss"``.
        mode: str. ``"auto"``, ``"min"`` or ``"max"`` (see :func:`resolve_mode`).
        min_delta: float. Smallest change that counts; its sign is ignored, as in Keras.
    """

    monitor: str = "val_loss"
    mode: str = "auto"
    min_delta: float = 0.0
    direction: Direction = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", resolve_mode(self.monitor, self.mode))
        object.__setattr__(self, "min_delta", abs(float(self.min_delta)))

    def is_improvement(self, current: float, best: float | None) -> bool:
        """True when ``current`` improves on ``best`` (always when ``best`` is None).

        Args:
            current: float. The new value of the monitored quantity (may be NaN).
            best: float or None. The best value so far; None when there is none yet.
        """
        if best is None:
            return True
        if self.direction == "min":
            return to_float32(current + self.min_delta) < to_float32(best)
        return to_float32(current - self.min_delta) > to_float32(best)

    def value(self, logs: dict) -> float | None:
        """The monitored value in ``logs`` as a float, or None when the key is absent.

        Args:
            logs: dict. Keras's logs (an epoch or batch record's ``logs``).
        """
        value = logs.get(self.monitor)
        return None if value is None else float(value)


class MonitorSettings(PolicySettings):
    """The settings every policy that watches one quantity shares: ``monitor`` and its ``mode``.

    ``mode`` is checked against ``monitor`` here, once (``"auto"`` must be able to tell the
    direction from the name), so the error names both whichever policy is configured.
    """

    monitor: str = Field("val_loss", strict=True, min_length=1)
    mode: Literal["auto", "min", "max"] = Field("auto", validate_default=True)

    @field_validator("mode")
    @classmethod
    def _check_mode(cls, mode: str, info: ValidationInfo) -> str:
        monitor = info.data.get("monitor")
        if isinstance(monitor, str):
            resolve_mode(monitor, mode)  # raises ValueError naming the monitor
        return mode


class MonitorPolicy(Policy):
    """A policy deciding on one monitored quantity, as Keras's ``MonitorCallback``: holds its :class:`Monitor`.

    Its state goes back with the weights: after each epoch it remembers its state, and when a
    rollback takes the run back to step ``S`` (its ack), it continues from the state it had
    after the last epoch at or before ``S`` (or from scratch). Epochs of an abandoned stretch,
    such as an LR range test's or a diverging run's, then count for nothing: their best value,
    their patience, their checkpoints are forgotten with them.

    Subclasses' settings derive from :class:`MonitorSettings` (and add ``min_delta``); they
    implement ``decide_epoch`` (what ``on_epoch`` would be), ``own_state`` and
    ``load_own_state`` (their ``state_dict`` without the history), and call ``super().reset()``.
    """

    settings: MonitorSettings
    rewinds: ClassVar[bool] = True  # False: keep the state through rollbacks (no history kept)
    history_limit: ClassVar[int] = 1000  # epochs remembered: memory and snapshot.json stay bounded

    def __init__(self, settings: MonitorSettings | None = None, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        s = self.settings
        self._monitor = Monitor(s.monitor, s.mode, getattr(s, "min_delta", 0.0))

    def reset(self) -> None:
        self._history: list[tuple[int, dict[str, Any]]] = []  # (epoch record's step, own state after it)

    @property
    def monitors(self) -> tuple[str, ...]:
        """The monitored key (``settings.monitor``): what the engine checks each fit's epoch logs for."""
        return (self.settings.monitor,)

    def decide_epoch(self, record: EpochRecord, run: RunView) -> Sequence[Action]:
        raise NotImplementedError  # abstract

    def own_state(self) -> dict[str, Any]:
        raise NotImplementedError  # abstract

    def load_own_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError  # abstract

    def on_epoch(self, record: EpochRecord, run: RunView) -> Sequence[Action]:
        actions = self.decide_epoch(record, run)
        if self.rewinds:
            self._history.append((record.step, self.own_state()))
            if len(self._history) > self.history_limit:
                del self._history[0]  # a rollback further back than this starts the policy afresh
        return actions

    def on_ack(self, record: AckRecord, run: RunView) -> Sequence[Action]:
        if record.cmd == "rollback" and self.rewinds:
            self._rewind(record.step)
        return ()

    def _rewind(self, step: int) -> None:
        history = self._history
        while history and history[-1][0] > step:
            history.pop()
        if history:
            self.load_own_state(dict(history[-1][1]))
        else:
            self.reset()

    def state_dict(self) -> dict[str, Any]:
        return {**self.own_state(), "history": [[step, dict(state)] for step, state in self._history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        history = state.pop("history", [])  # a state saved before the history existed has none
        if not isinstance(history, list) or not all(
            isinstance(h, (list, tuple)) and len(h) == 2 and isinstance(h[0], int) and isinstance(h[1], dict)
            for h in history
        ):
            raise ValueError(f"policy {self.name!r} state: history must be a list of [step, state]; got {history!r}")
        self.load_own_state(state)
        self._history = [(int(step), dict(own)) for step, own in history]
