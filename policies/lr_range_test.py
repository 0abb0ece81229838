"""The LR range test alone: :class:`~lrsup.policies.lr_find.LRFind`, then stop the run.

What ``lrsup lr-find`` runs. The test is lr_find's own (checkpoint, exponential ramp,
suggestion, rollback to the start); once it has ended, with a suggestion or called off,
a ``Stop`` follows in the same decision, so the trainer stops after the batch it is on
(Keras checks ``stop_training`` after every batch) instead of training on. The journal
names the policy ``lr_find``, as in any run.

Not registered under a name: it is meant for ``lrsup lr-find``. From a config file::

    [[policy]]
    use = "lrsup.policies.lr_range_test:LRRangeTest"
    mode = "always"
    num_steps = 100

Example (Python)::

    policy = LRRangeTest(mode="always", num_steps=200, min_lr=1e-5, max_lr=10.0)
"""

from __future__ import annotations

from typing import Sequence

from lrsup.policies.actions import Action, Stop
from lrsup.policies.base import RunView
from lrsup.policies.lr_find import LRFind


class LRRangeTest(LRFind):
    """lr_find's range test, followed by a stop of the run once the test is over.

    Example::

        engine = Engine([LRRangeTest(mode="always", num_steps=100)], batch_every=1, batch_min_interval=0)

    Args:
        settings: LRFindSettings, or the same fields as keyword arguments.

    The test always runs inside the fit (``in_fit``), whatever ``probe`` says: the run stops
    once it is over, so there is no fit of the script's to spare.
    """

    in_fit = True

    def _finish(self, why: str, run: RunView, blow_up: float | None = None) -> Sequence[Action]:
        return [
            *super()._finish(why, run, blow_up),
            Stop(reason="LR range test over: the run ends here (lrsup lr-find)"),
        ]

    def _call_off(self, why: str, run: RunView) -> Sequence[Action]:
        return [
            *super()._call_off(why, run),
            Stop(reason="LR range test called off: the run ends here (lrsup lr-find)"),
        ]


__all__ = ["LRRangeTest"]
