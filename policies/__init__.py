"""lrsup policies: pure decision rules over the trainer's records.

Importing this package loads no policy: they are discovered through the
``lrsup.policies`` entry-point group when asked (see lrsup.supervisor.registry).
What a plug-in author needs is exported here, so that a plug-in imports from
``lrsup.policies`` alone:

- the base class and its settings bases: ``Policy``, ``PolicySettings``, and for a
  policy that watches one metric as Keras's ``MonitorCallback`` does, ``MonitorPolicy``,
  ``MonitorSettings`` and the improvement rule ``Monitor`` (``metric_direction``
  answers "is higher better?" as every part of lrsup does);
- what the hooks receive: ``StartRecord``, ``BatchRecord``, ``EpochRecord``,
  ``EndRecord``, ``AckRecord`` and the ``RunView`` (its ``CheckpointInfo`` entries,
  ``pick_checkpoint``);
- the typed actions a hook returns (``Retain`` is the engine's own and not listed).

Example::

    from lrsup.policies import EpochRecord, Policy, PolicySettings, RunView, ScaleLR
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
from lrsup.policies.monitor import Monitor, MonitorPolicy, MonitorSettings, metric_direction
from lrsup.supervisor.protocol.wire import AckRecord, BatchRecord, EndRecord, EpochRecord, StartRecord

__all__ = [
    "AckRecord",
    "Action",
    "BatchRecord",
    "CheckpointInfo",
    "ClearSchedule",
    "Configure",
    "EndRecord",
    "EpochRecord",
    "Keep",
    "Monitor",
    "MonitorPolicy",
    "MonitorSettings",
    "Policy",
    "PolicySettings",
    "Rollback",
    "RunView",
    "SaveCheckpoint",
    "ScaleLR",
    "SetHparam",
    "SetLR",
    "SetSchedule",
    "StartRecord",
    "Stop",
    "metric_direction",
    "pick_checkpoint",
]
