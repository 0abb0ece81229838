"""lrsup policies: pure decision rules over the trainer's records.

Importing this package loads no policy: they are discovered through the
``lrsup.policies`` entry-point group when asked (see lrsup.supervisor.registry).
"""

from lrsup.policies.actions import Action, ScaleLR, SetHparam, SetLR, Stop
from lrsup.policies.base import Policy, PolicySettings, RunView

__all__ = ["Action", "Policy", "PolicySettings", "RunView", "ScaleLR", "SetHparam", "SetLR", "Stop"]
