"""The ranges of the agent's settings: one rule, used wherever one is given or sent.

The ``[agent]`` table (config.py), the agent's own loading of ``config.json`` and its
constructor's arguments (agent/settings.py), the ``configure`` command (wire.py, when it is
built and when it is read) and a policy's ``Configure`` action (engine/action_commands.py) all
ask ``check_agent_setting``. Standard library only.

Intervals and timeouts are bounded above where the platform bounds them:
``threading.TIMEOUT_MAX`` (about 292 years on Linux) is the longest wait a thread can make,
and a heartbeat interval beyond it kills the heartbeat thread with OverflowError.

Example::

    check_agent_setting("batch_every", 20)          # 20
    check_agent_setting("heartbeat_interval", 1e10)  # ValueError: heartbeat_interval must be ...
"""

from __future__ import annotations

import math
import reprlib
import threading
from dataclasses import dataclass
from typing import Any

# The longest wait (seconds) any interval or timeout may ask for.
MAX_SECONDS = float(threading.TIMEOUT_MAX)
# The largest count (steps, epochs, checkpoints) a setting may hold: an int64.
MAX_COUNT = (1 << 63) - 1


@dataclass(frozen=True)
class Bound:
    """One setting's range: an integer or a number of seconds, from ``low`` to ``high``.

    Args:
        integer: bool, an int (bool refused) rather than a finite number of seconds.
        low: the smallest value allowed.
        high: the largest value allowed.
        low_open: bool, ``low`` itself is refused (``> low`` instead of ``>= low``).
        note: str, appended to the message (what 0 means).
    """

    integer: bool
    low: float
    high: float
    low_open: bool = False
    note: str = ""

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number of seconds"
        low = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        high = "" if self.integer and self.high == MAX_COUNT else f" and <= {self.high:.4g}"
        return f"{kind} {low}{high}{self.note}"

    def admits(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        if not self.integer and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high


AGENT_BOUNDS: dict[str, Bound] = {
    "batch_every": Bound(True, 1, MAX_COUNT),
    "batch_min_interval": Bound(False, 0, MAX_SECONDS, note=" (0: no minimum)"),
    "checkpoint_every_epochs": Bound(True, 0, MAX_COUNT, note=" (0: off)"),
    "checkpoint_every_steps": Bound(True, 0, MAX_COUNT, note=" (0: off)"),
    "keep_last": Bound(True, 1, MAX_COUNT),
    "verdict_timeout": Bound(False, 0, MAX_SECONDS, note=" (0: no wait)"),
    "heartbeat_interval": Bound(False, 0, MAX_SECONDS, low_open=True),
}


def check_agent_setting(name: str, value: Any) -> Any:
    """``value`` as setting ``name`` takes it (a float for seconds); ValueError naming both when out of range.

    Args:
        name: str, an agent setting (a key of ``AGENT_BOUNDS``; else KeyError).
        value: the value given.
    """
    bound = AGENT_BOUNDS[name]
    if not bound.admits(value):
        raise ValueError(f"{name} must be {bound.describe()}, got {reprlib.repr(value)}")
    return value if bound.integer else float(value)
