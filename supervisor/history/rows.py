"""The rows of a run as :func:`~lrsup.supervisor.history.runinfo.load_run` reads them.

Owns the small types a :class:`~lrsup.supervisor.history.runinfo.RunInfo` is made of (an
epoch row, a kept batch point, a journal decision joined with what became of it, an
event, an interruption, the outcome), the errors of reading a run, and the few
helpers every part of the reader shares: metric ordering and mode, and the lenient
coercions of JSON values (a wrong type reads as missing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterator, TypeGuard

from lrsup.policies.monitor import Direction, metric_direction
from lrsup.supervisor.protocol.journal import as_float, as_int, as_str  # noqa: F401  (re-exported: the readers use them from here)
from lrsup.supervisor.protocol.wire import HOUSEKEEPING_ACTIONS


class RunInfoError(ValueError):
    """A path that is not a readable lrsup run directory; the message says why."""


class MissingExtraError(ImportError):
    """A package lrsup needs for one feature is not installed; the message says how to install it.

    ``export`` raises it for tensorboard (the ``tensorboard`` extra); ``report`` for matplotlib,
    a plain dependency (``extra`` None) that a partial installation may still lack.
    """

    def __init__(self, what: str, package: str, extra: str | None) -> None:
        self.package, self.extra = package, extra
        how = f"pip install 'lrsup[{extra}]'" if extra else f"pip install {package} (a dependency of lrsup)"
        super().__init__(f"{what} needs {package}, which is not installed: {how}")


class Outcome(str, Enum):
    """How the run ended, as far as the files tell."""

    COMPLETED = "completed"  # fit ran its epochs (or the trainer exited 0)
    STOPPED = "stopped"  # a policy or the user stopped it early
    FAILED = "failed"  # training raised, or the trainer exited non-zero / was killed
    RUNNING = "running"  # the supervisor is alive, or the trainer wrote something moments ago
    INTERRUPTED = "interrupted"  # none of the above: the supervisor died or the files were cut short


@dataclass(frozen=True)
class EpochRow:
    """One epoch record, with its duration and place in the run.

    Args:
        epoch: int, 0-based as in the protocol.
        step, lr, logs, time: as in the record.
        duration: float or None, seconds since the previous epoch (or the start) of the same fit.
        attempt: int, index of the start record this epoch followed (0 for the first fit).
        superseded: bool, a later epoch of the same fit redid this one (after a rollback or restart).
    """

    epoch: int
    step: int
    lr: float | None
    logs: dict
    time: float
    duration: float | None = None
    attempt: int = 0
    superseded: bool = False


@dataclass
class Stage:
    """One ``fit`` call of the script: a stage of the run (its start records' ``fit``).

    Args:
        fit: int, the fit's ordinal (1-based, in the script's order).
        optimizer: str or None, its optimizer's class name (from its first start record).
        lr_start: float or None, the LR it began with (the script's, from its first start record).
        lr_end: float or None, the LR of its last epoch (its start LR when it recorded none).
        epochs_done: int, the distinct epochs it recorded (in any attempt).
        epochs: int or None, the epoch budget the script gave it.
        rescues: list of DecisionRow, the rollbacks and give-ups sent while it ran.
        attempts: int, its start records (a restarted attempt begins it again, or skips it).
    """

    fit: int
    optimizer: str | None
    lr_start: float | None
    lr_end: float | None
    epochs_done: int
    epochs: int | None
    rescues: list[DecisionRow] = field(default_factory=list)
    attempts: int = 1


@dataclass(frozen=True)
class BatchPoint:
    """One kept batch record: where it was, the loss (None if not logged) and the LR.

    ``fit`` is the key of its fit (``-fit`` for a later fit of the script, else the count of
    fits ended before it: runs from before stages number every fit 1); ``superseded`` is set like
    :class:`EpochRow`'s: a later batch of the same fit redid this part of training.
    """

    epoch: int
    batch: int
    step: int
    loss: float | None
    lr: float | None
    time: float = 0.0
    fit: int = 0
    superseded: bool = False


@dataclass
class Applied:
    """Where a command took effect (journal ``applied`` line or the agent's ``ack``)."""

    epoch: int | None
    step: int | None
    late: bool
    lr: float | None = None
    time: float | None = None


@dataclass
class DecisionRow:
    """A journal ``decision`` (or operator ``override``) line joined (by ``seq``) with what became of it.

    Not the engine's :class:`~lrsup.supervisor.engine.decision.Decision`: this is its record, read back.
    """

    time: float | None
    seq: int | None
    policy: str
    action: str
    lr: float | None
    reason: str
    epoch: int | None
    step: int | None
    suppressed: str | None
    extra: dict = field(default_factory=dict)  # fields this reader does not know (give_up, ...)
    applied: Applied | None = None
    error: str | None = None
    label: str = ""  # short name for plots: cut, raise, stop, give up, rollback...

    @property
    def housekeeping(self) -> bool:
        """Checkpoint retention and cadence: in the journal, not on figures or in report tables."""
        return self.action in HOUSEKEEPING_ACTIONS

    @property
    def status(self) -> str:
        """What became of it, in a few words."""
        if self.suppressed:
            return f"suppressed: {self.suppressed}"
        if self.error is not None:
            return f"refused: {self.error}"
        if self.applied is not None:
            where = f" at step {self.applied.step}" if self.applied.step is not None else ""
            return f"applied late{where}" if self.applied.late else f"applied{where}"
        if self.seq is None:
            return "no command"
        return "not acknowledged"

    @property
    def late(self) -> bool:
        return self.applied is not None and self.applied.late


@dataclass(frozen=True)
class Event:
    """A journal ``event`` line: ``event`` name, ``detail``, and any other fields in ``extra``."""

    time: float | None
    event: str
    detail: Any
    extra: dict = field(default_factory=dict)


@dataclass
class Interruption:
    """A restart or rollback: training went back and redid work.

    ``time_lost`` is what the journal said, or else an estimate from the records:
    from the end of the last epoch that was kept to the moment training got going
    again after the interruption (the next start record for a restart).
    ``span`` is that loss in plot units (epochs, 1-based as people count) or None.
    """

    kind: str
    time: float | None
    epoch: int | None
    seq: int | None = None
    reason: str = ""
    time_lost: float | None = None
    estimated: bool = False
    span: tuple[float, float] | None = None


def order_metric_keys(keys: Iterator[str] | list[str]) -> list[str]:
    """Stable metric order: ``loss``, other training metrics sorted, ``val_loss``, other ``val_*`` sorted."""
    seen = set(keys)
    train = sorted(k for k in seen if not k.startswith("val_") and k != "loss")
    val = sorted(k for k in seen if k.startswith("val_") and k != "val_loss")
    return (["loss"] if "loss" in seen else []) + train + (["val_loss"] if "val_loss" in seen else []) + val


def monitor_direction(monitor: str, config: Any = None) -> Direction | None:
    """``"min"``/``"max"`` for the run's monitored metric, None when nobody can tell.

    The first configured policy that watches ``monitor`` with an explicit ``mode`` decides;
    else the name does, by the policies' own rule (:func:`lrsup.policies.monitor.metric_direction`).

    Args:
        monitor: str. The metric that picks the best epoch.
        config: the run's config.json (a dict; anything else is ignored).
    """
    policies = config.get("policies") if isinstance(config, dict) else None
    for policy in policies if isinstance(policies, list) else ():
        if isinstance(policy, dict) and policy.get("monitor") == monitor and policy.get("mode") in ("min", "max"):
            return metric_direction(monitor, policy["mode"])
    return metric_direction(monitor)


def fmt_lr(lr: Any, missing: str = "–") -> str:
    """A learning rate as people read it, everywhere lrsup prints one: 4 significant digits.

    An LR read back from a float32 optimizer variable is ``0.009999999776482582``: this prints
    ``0.01``. Terminal, report, status, replay and the live display all print LRs through here.

    Example::

        fmt_lr(0.009999999776482582)  # '0.01'
        fmt_lr(1.15e-05)              # '1.15e-05'
        fmt_lr(None)                  # '–'

    Args:
        lr: the value (a number, or None when unknown).
        missing: str. What an unknown LR reads as.
    """
    if lr is None:
        return missing
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        return str(lr)
    if math.isnan(lr):
        return "NaN"
    if math.isinf(lr):
        return "inf" if lr > 0 else "-inf"
    return f"{lr:.4g}"


def is_finite_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
