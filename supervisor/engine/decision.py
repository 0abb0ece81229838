"""What the decision engine decided about one action: :class:`Decision`, and the give-up exit status."""

from __future__ import annotations

from dataclasses import dataclass

from lrsup.policies.actions import Action
from lrsup.supervisor.protocol.commands import Command
from lrsup.supervisor.protocol.wire import EXIT_GIVE_UP

# The exit status of a run a policy gave up on (Stop(give_up=True)).
GIVE_UP_STATUS = EXIT_GIVE_UP


@dataclass(frozen=True)
class Decision:
    """What the engine decided about one action.

    Args:
        action: Action. The policy's action, with ``policy`` stamped.
        command: Command or None. What to send (e.g. ``SetLRCommand(0.005)``), or None when suppressed.
        lr: float or None. The effective LR after this decision, when it sets one.
        epoch: int or None. The record's epoch (None for records without one).
        step: int. The record's step.
        suppressed: str or None. Why no command was sent.
        exit_status: int or None. Set on a sent ``Stop(give_up=True)``: 3, the exit status
            ``lrsup run`` should end with once the trainer has stopped.
    """

    action: Action
    command: Command | None
    lr: float | None
    epoch: int | None
    step: int
    suppressed: str | None = None
    exit_status: int | None = None
