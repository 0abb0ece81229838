"""An example third-party lrsup policy: stop once a metric reaches a target.

Install it next to lrsup (``pip install examples/plugin``) and it shows up in
``lrsup policies``; use it from a config file::

    [[policy]]
    use = "target_stop"
    monitor = "val_accuracy"
    target = 0.97
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from lrsup.policies import Policy, PolicySettings, Stop


class TargetStopSettings(PolicySettings):
    monitor: str = "val_accuracy"
    target: float = Field(description="stop once the metric reaches this value")
    mode: Literal["max", "min"] = "max"


class TargetStop(Policy):
    """Stop training at the end of the first epoch whose metric reaches ``target``."""

    name = "target_stop"
    Settings = TargetStopSettings

    def on_epoch(self, record, run):
        value = record.logs.get(self.settings.monitor)
        if value is None or math.isnan(value):
            return []
        reached = value >= self.settings.target if self.settings.mode == "max" else value <= self.settings.target
        if not reached:
            return []
        return [
            Stop(
                reason=f"{self.settings.monitor} {value:.4g} reached the target {self.settings.target:g} "
                f"at epoch {record.epoch + 1}"
            )
        ]
