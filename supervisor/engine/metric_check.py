"""Missing monitored metrics: said once per fit, never passed over in silence.

A policy that monitors a metric the trainer never reports (plateau on ``val_loss`` in a
script without validation data) does nothing; Keras's own callbacks warn then, and so
does lrsup. The metrics a policy monitors are the ones it declares
(:attr:`~lrsup.policies.base.Policy.monitors`: a monitor policy's ``monitor``). At the
first epoch record of each fit (the start record's ``fit``: a restarted attempt of the same
fit is not checked again), :class:`MetricCheck` looks for each of them in the epoch's logs;
one that is missing becomes a :class:`MissingMetric` decision of the engine (no command),
naming the policy, the metric and the metrics that do exist. The runner journals it as a
``missing_metric`` entry and shows it; the report lists it; ``lrsup replay`` yields it.

Example::

    check = MetricCheck([Plateau(monitor="val_loss")])
    check.on_start(StartRecord(fit=1))
    check.on_epoch(EpochRecord(epoch=0, step=10, logs={"loss": 0.4}))
    # [MissingMetric(metric="val_loss", available=("loss",), fit=1, policy="plateau", ...)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from lrsup.policies.actions import Action
from lrsup.policies.base import Policy
from lrsup.supervisor.protocol.journal import MISSING_METRIC  # the decision's kind is the journal entry's type
from lrsup.supervisor.protocol.wire import EpochRecord, StartRecord


@dataclass(frozen=True, kw_only=True)
class MissingMetric(Action):
    """Decided by the engine for a policy (``policy``): its ``metric`` is not in fit ``fit``'s epoch logs.

    Args:
        metric: str. The key the policy monitors.
        available: tuple of str. The keys the epoch's logs do have.
        fit: int. The fit (start record's ``fit``) whose first epoch lacked it.
    """

    kind: ClassVar[str] = MISSING_METRIC
    metric: str
    available: tuple[str, ...] = ()
    fit: int = 1


def missing_metric_reason(policy: str, metric: str, available: Sequence[str], fit: int) -> str:
    """The sentence a missing metric is said with (terminal, journal, report)."""
    have = ", ".join(available) if available else "none"
    hint = (
        " (no validation data? pass validation_data or validation_split to fit, or monitor another metric)"
        if metric.startswith("val_")
        else f" (set {policy}'s monitor to one of these)"
    )
    return (
        f"{policy} monitors {metric}, which is missing from the epoch logs of fit {fit} (the metrics are: {have}): "
        f"{policy} does nothing until it appears{hint}"
    )


class MetricCheck:
    """Checks each fit's first epoch record for the metrics the policies monitor (see the module).

    Args:
        policies: sequence of Policy. The stack; each one's ``monitors`` are checked.
    """

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.monitors = tuple((p.name, metric) for p in policies for metric in p.monitors)
        self.fit = 1  # the fit of the latest start record
        self.checked: set[int] = set()  # the fits whose first epoch was checked

    def on_start(self, record: StartRecord) -> None:
        self.fit = record.fit

    def on_epoch(self, record: EpochRecord) -> list[MissingMetric]:
        """The monitored metrics missing from ``record`` when it is its fit's first epoch record, else []."""
        if self.fit in self.checked or not self.monitors:
            return []
        self.checked.add(self.fit)
        available = tuple(record.logs)
        return [
            MissingMetric(
                policy=name,
                metric=metric,
                available=available,
                fit=self.fit,
                reason=missing_metric_reason(name, metric, available, self.fit),
            )
            for name, metric in self.monitors
            if metric not in record.logs
        ]

    def state(self) -> dict[str, Any]:
        """JSON-safe: the fits already checked (so a resumed supervisor does not say it twice)."""
        return {"fit": self.fit, "checked": sorted(self.checked)}

    def load(self, state: Any) -> None:
        """Continue from :meth:`state`; anything else (an older snapshot) starts afresh."""
        self.fit, self.checked = 1, set()
        if isinstance(state, dict):
            fit, checked = state.get("fit"), state.get("checked")
            if isinstance(fit, int) and not isinstance(fit, bool):
                self.fit = fit
            if isinstance(checked, list):
                self.checked = {c for c in checked if isinstance(c, int) and not isinstance(c, bool)}


__all__ = ["MISSING_METRIC", "MetricCheck", "MissingMetric", "missing_metric_reason"]
