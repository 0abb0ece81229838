"""lrsup policies: pure decision rules over the trainer's records.

Importing this package loads no policy: they are discovered through the
``lrsup.policies`` entry-point group when asked (see lrsup.supervisor.registry).
What a plug-in needs is exported here: the base class, its settings base, the
run view, and the typed actions (``Retain`` is the engine's own and not listed).
"""

from lrsup.policies.actions import (
    Action,
    ClearSchedule,
    Configure,
    Keep,
    Rollback,
    SaveCheckpoint,
    ScaleLR,
    SetHparam,
    SetLR,
    SetSchedule,
    Stop,
)
from lrsup.policies.base import CheckpointInfo, Policy, PolicySettings, RunView, pick_checkpoint

__all__ = [
    "Action",
    "CheckpointInfo",
    "ClearSchedule",
    "Configure",
    "Keep",
    "Policy",
    "PolicySettings",
    "Rollback",
    "RunView",
    "SaveCheckpoint",
    "ScaleLR",
    "SetHparam",
    "SetLR",
    "SetSchedule",
    "Stop",
    "pick_checkpoint",
]
