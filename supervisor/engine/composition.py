"""How the decision engine composes the actions of one record into decisions.

Composition rules, per record:

1. Every interested policy is called in stack order; all of them see the same
   :class:`RunView` (the run as it was when the record arrived). Actions with an
   empty ``policy`` are stamped with the policy's name.
2. Safety first. Priorities: Rollback > Stop > LR changes (SetLR, ScaleLR: the
   reactive cuts) > schedules (SetSchedule). At most one LR change takes effect per
   record: a rollback counts as one (it restores the checkpoint's LR, or sets its own).
3. Rollback: the first one in stack order that resolves to a checkpoint wins and is
   sent as ``{"cmd": "rollback", "checkpoint": name, "skip_batches": n[, "lr": x]}``.
   ``checkpoint=None`` resolves to the newest known-good checkpoint at or before
   ``before_step`` (a start checkpoint when none of those is good: see
   :func:`~lrsup.policies.base.pick_checkpoint`); ``best=True`` to the known-good
   checkpoint with the best ``monitor`` value (the engine's, default ``val_loss``,
   falling back to ``loss``); a name is taken as given if the checkpoint is known. The
   LR after it: ``lr``, else the checkpoint's LR times ``lr_factor``, else none given
   (the checkpoint's own); while the script owns the LR (``RunView.script_lr``), ``lr_factor``
   cuts the script's LR now where it is lower than the checkpoint's (never restoring more
   than the LR that failed, cut; ``EngineState.script_lr_base``). Others are suppressed: "no checkpoint to roll back to: ...",
   "another rollback (policy X) already decided at step N", "a rollback to X decided at
   step N is not applied yet", or "invalid: ...". A rollback suppresses every SetLR,
   ScaleLR and SetSchedule on the record ("rollback (policy X) decided at step N").
4. Stop: the first Stop is sent (``{"cmd": "stop"}``); a ``give_up`` stop carries
   ``exit_status`` 3. Later Stops are suppressed ("another stop (policy X) already
   decided at step N"), and so are the record's LR changes and SetSchedules ("stop
   (policy X) decided at step N"). A Stop and a Rollback on one record are both sent,
   in the order returned (early stopping restores the best weights, then stops).
5. LR changes: the first SetLR/ScaleLR in stack order that would change the LR wins;
   later ones are suppressed ("another LR change (policy X) already decided at step N").
   ScaleLR is sent as the concrete ``{"cmd": "set_lr", "lr": max(lr * factor, min_lr)}``
   so that the journal shows the LR, except while an lrsup schedule is in force: then it
   is sent as ``{"cmd": "scale_lr", "factor": f}`` (the agent scales its multiplier and
   the schedule keeps its shape), with ``f`` raised so that the LR now does not go below
   ``min_lr`` (``f = max(factor, min_lr / lr)``; an ``f >= 1`` is no change). When the
   engine does not know the LR it is sent as ``scale_lr`` with ``factor`` and ``min_lr``
   cannot be enforced. An LR change that would leave the LR as it is (equal in float32)
   is suppressed as "no change (LR already x)" and does not count; one with an invalid
   value (negative or non-finite LR, factor <= 0) is suppressed as "invalid: ...".
6. Schedules: at most one SetSchedule or ClearSchedule per record (first wins:
   "another schedule change (policy X) already decided at step N"). An LR change on the
   record beats a SetSchedule ("an LR change (policy X) already decided at step N").
   ClearSchedule keeps the effective LR where it is, so rollbacks, stops and LR changes
   do not suppress it; with no schedule in force it is "no change (no lrsup schedule in
   force)".
7. Probing: while a policy's ``probing`` is true (an LR range test), other policies'
   rollbacks, LR changes and schedule changes are suppressed ("policy X is probing (an
   LR range test); its outcome decides the LR"). Stops are not.
8. SaveCheckpoint becomes ``{"cmd": "checkpoint"[, "name": n]}``; a second request for
   the same name (or for an unnamed one) on the record is suppressed. Configure becomes
   ``configure`` with only the settings that differ from the agent's cadence as the
   engine knows it ("no change (...)" when none does; a setting already changed on the
   record by another Configure is dropped). At most one SetHparam per hyperparameter
   name per record (first wins); SetHparam is not affected by Stop.
9. Retention: the engine sends ``{"cmd": "retain", "keep": [...]}`` whenever the set of
   checkpoints it wants kept changes: the newest known-good, the best known-good by
   ``monitor``, the newest start checkpoint while none is known good, the target of a
   rollback in flight, and every name a policy asked to keep (Keep). A Keep that
   changes the set carries the command itself; the other changes come as a decision of
   the engine (policy ``"engine"``, action Retain) after the record's other decisions.
10. An action kind this engine has no command for is suppressed ("unsupported action").

Suppressed decisions have ``command=None`` and ``lr=None``. Decisions come back in
the order the actions were returned, then the engine's retain decision.

:func:`compose` applies these rules to one record's actions and the engine's
:class:`~lrsup.supervisor.engine.state.EngineState`, which it changes as the winners take
effect. It first picks the winners (:func:`pick_winners`: the rollback, the stop, the LR
change and the schedule change that take effect), then turns each action into its
decision by one rule per action kind (``RULES``: the action's type to its function).
The checks and the arithmetic of each single action are in
:mod:`lrsup.supervisor.engine.action_commands`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from lrsup.policies.actions import (
    Action,
    ClearSchedule,
    Configure,
    Keep,
    Retain,
    Rollback,
    SaveCheckpoint,
    ScaleLR,
    SetHparam,
    SetLR,
    SetSchedule,
    Stop,
)
from lrsup.supervisor.engine.action_commands import (
    LRPlan,
    configure_decision,
    lr_plan,
    multiplier_for,
    rollback_command,
    rollback_plan,
)
from lrsup.supervisor.engine.checkpoint_book import TrackedCheckpoint
from lrsup.supervisor.engine.decision import GIVE_UP_STATUS, Decision
from lrsup.supervisor.engine.state import EngineState, PendingRollback
from lrsup.supervisor.protocol.commands import (
    CheckpointCommand,
    ClearScheduleCommand,
    RetainCommand,
    SetHparamCommand,
    SetScheduleCommand,
    StopCommand,
)
from lrsup.supervisor.protocol.schedules import evaluate
from lrsup.supervisor.protocol.wire import is_checkpoint_name

__all__ = ["RULES", "Round", "Winners", "compose", "pick_winners"]

_LR_CHANGES = (SetLR, ScaleLR)


@dataclass(frozen=True)
class ChosenRollback:
    """The rollback that takes effect: the action, its target and the LR after it (None: the checkpoint's)."""

    action: Rollback
    target: TrackedCheckpoint
    lr: float | None


@dataclass
class Winners:
    """Pass 1: the actions of the record that take effect, by priority (rule 2), and why others cannot."""

    rollback: ChosenRollback | None = None
    problems: dict[int, str] = field(default_factory=dict)  # id(rollback action) -> why it cannot be sent
    stop: Stop | None = None
    lr_change: Action | None = None
    lr_plans: dict[int, LRPlan] = field(default_factory=dict)  # id(LR change) -> its plan
    schedule_change: Action | None = None


@dataclass
class Round:
    """One record's composition: the state, where the record is, the winners, and what was sent so far."""

    state: EngineState
    epoch: int | None
    step: int
    probing: str | None  # the policy probing (an LR range test), or None
    pending: PendingRollback | None  # a rollback decided on an earlier record, not applied yet
    winners: Winners = field(default_factory=Winners)
    hparams: dict[str, Action] = field(default_factory=dict)  # the first SetHparam per name
    checkpoints: dict[str | None, Action] = field(default_factory=dict)  # the first SaveCheckpoint per name
    configured: dict[str, Action] = field(default_factory=dict)  # the Configure that set each setting
    lr_change_seen: bool = False

    def probed(self, action: Action) -> bool:
        """True when another policy's probing suppresses ``action`` (rule 7)."""
        return self.probing is not None and action.policy != self.probing

    @property
    def probe_why(self) -> str:
        return f"policy {self.probing} is probing (an LR range test); its outcome decides the LR"

    @property
    def overruled(self) -> str | None:
        """Why the record's LR changes and SetSchedules are not sent (a rollback or a stop won), or None."""
        w = self.winners
        if w.rollback is not None:
            return f"rollback (policy {w.rollback.action.policy}) decided at step {self.step}"
        if w.stop is not None:
            return f"stop (policy {w.stop.policy}) decided at step {self.step}"
        return None

    def sent(self, action: Action, command, lr: float | None = None, exit_status: int | None = None) -> Decision:
        return Decision(action, command, lr, self.epoch, self.step, None, exit_status)

    def suppress(self, action: Action, why: str) -> Decision:
        return Decision(action, None, None, self.epoch, self.step, why)


def compose(
    state: EngineState, actions: list[Action], epoch: int | None, step: int, probing: str | None
) -> list[Decision]:
    """The decisions on one record's actions, in the order they came; ``state`` takes the winners' effect.

    Args:
        state: EngineState. The engine's state, changed by the decisions sent.
        actions: list of Action. The record's actions, in stack order, ``policy`` stamped.
        epoch: int or None. The record's epoch.
        step: int. The record's step.
        probing: str or None. The policy probing when the record arrived (or now).
    """
    r = Round(state, epoch, step, probing, state.pending)
    r.winners = pick_winners(r, actions)
    return [rule_for(action)(r, action) for action in actions]


def pick_winners(r: Round, actions: list[Action]) -> Winners:
    """Pass 1 (rules 2 to 7): the rollback, stop, LR change and schedule change that take effect."""
    w = Winners()
    state = r.state
    for action in actions:
        if isinstance(action, Rollback) and w.rollback is None and r.pending is None and not r.probed(action):
            target, lr, problem = rollback_plan(action, state.book, state.script_lr_base())
            if problem is not None:
                w.problems[id(action)] = problem
            else:
                w.rollback = ChosenRollback(action, target, lr)  # type: ignore[arg-type]
    w.stop = next((a for a in actions if isinstance(a, Stop)), None)
    if w.rollback is None and w.stop is None:
        for action in actions:
            if isinstance(action, _LR_CHANGES) and not r.probed(action):
                plan = lr_plan(
                    action, lr=state.lr, schedule=state.schedule, multiplier=state.multiplier, step=state.step
                )
                w.lr_plans[id(action)] = plan
                if plan.why is None:
                    w.lr_change = action
                    break
    for action in actions:
        if r.probed(action):
            continue
        if isinstance(action, SetSchedule) and w.rollback is None and w.stop is None and w.lr_change is None:
            w.schedule_change = action
            break
        if isinstance(action, ClearSchedule) and state.schedule is not None:
            w.schedule_change = action
            break
    return w


# -- pass 2: one rule per action kind ------------------------------------------------------


def decide_rollback(r: Round, action: Rollback) -> Decision:
    """Rule 3: the winning rollback is sent; the others say why not."""
    chosen = r.winners.rollback
    if chosen is not None and action is chosen.action:
        return apply_rollback(r, chosen)
    if r.probed(action):
        return r.suppress(action, r.probe_why)
    if r.pending is not None:
        p = r.pending
        return r.suppress(action, f"a rollback to {p.checkpoint} decided at step {p.decided_at} is not applied yet")
    if id(action) in r.winners.problems:
        return r.suppress(action, r.winners.problems[id(action)])
    first = chosen.action.policy  # type: ignore[union-attr]
    return r.suppress(action, f"another rollback (policy {first}) already decided at step {r.step}")


def decide_stop(r: Round, action: Stop) -> Decision:
    """Rule 4: the first Stop is sent (a give-up stop sets the exit status); later ones are suppressed."""
    first = r.winners.stop
    if action is not first:
        return r.suppress(action, f"another stop (policy {first.policy}) already decided at step {r.step}")  # type: ignore[union-attr]
    status = GIVE_UP_STATUS if action.give_up else None
    if status is not None:
        r.state.exit_status = status
    return r.sent(action, StopCommand(), exit_status=status)


def decide_lr_change(r: Round, action: Action) -> Decision:
    """Rule 5: the first SetLR/ScaleLR that changes the LR is sent, unless a rollback, a stop or a probe overrules."""
    overruled = r.overruled
    if overruled is not None:
        return r.suppress(action, overruled)
    if r.probed(action):
        return r.suppress(action, r.probe_why)
    winner = r.winners.lr_change
    if action is winner:
        r.lr_change_seen = True
        return apply_lr(r, action, r.winners.lr_plans[id(action)])
    if r.lr_change_seen:
        return r.suppress(action, f"another LR change (policy {winner.policy}) already decided at step {r.step}")  # type: ignore[union-attr]
    return r.suppress(action, r.winners.lr_plans[id(action)].why)  # type: ignore[arg-type]


def decide_set_schedule(r: Round, action: SetSchedule) -> Decision:
    """Rule 6: one schedule change per record; a rollback, a stop or an LR change beats a SetSchedule."""
    w = r.winners
    if action is w.schedule_change:
        return apply_schedule(r, action)
    overruled = r.overruled
    if overruled is not None:
        return r.suppress(action, overruled)
    if w.lr_change is not None:
        return r.suppress(action, f"an LR change (policy {w.lr_change.policy}) already decided at step {r.step}")
    if r.probed(action):
        return r.suppress(action, r.probe_why)
    first = w.schedule_change.policy  # type: ignore[union-attr]
    return r.suppress(action, f"another schedule change (policy {first}) already decided at step {r.step}")


def decide_clear_schedule(r: Round, action: ClearSchedule) -> Decision:
    """Rule 6: a ClearSchedule keeps the LR, so only probing or another schedule change stops it."""
    w = r.winners
    if action is w.schedule_change:
        return apply_schedule(r, action)
    if r.probed(action):
        return r.suppress(action, r.probe_why)
    if w.schedule_change is not None:
        first = w.schedule_change.policy
        return r.suppress(action, f"another schedule change (policy {first}) already decided at step {r.step}")
    return r.suppress(action, "no change (no lrsup schedule in force)")


def decide_hparam(r: Round, action: SetHparam) -> Decision:
    """Rule 8: at most one SetHparam per hyperparameter name per record."""
    first = r.hparams.get(action.name)
    if first is not None:
        why = f"another {action.name} change (policy {first.policy}) already decided at step {r.step}"
        return r.suppress(action, why)
    r.hparams[action.name] = action
    return r.sent(action, SetHparamCommand(action.name, float(action.value)))


def decide_checkpoint(r: Round, action: SaveCheckpoint) -> Decision:
    """Rule 8: a valid name, once per record (an unnamed request too)."""
    if action.name is not None and not is_checkpoint_name(action.name):
        return r.suppress(action, f"invalid: checkpoint name {action.name!r} (1 to 100 of A-Z a-z 0-9 _ . -)")
    first = r.checkpoints.get(action.name)
    if first is not None:
        why = f"another checkpoint request (policy {first.policy}) already decided at step {r.step}"
        return r.suppress(action, why)
    r.checkpoints[action.name] = action
    return r.sent(action, CheckpointCommand(action.name))


def decide_configure(r: Round, action: Configure) -> Decision:
    """Rule 8: only the settings that differ from the agent's cadence and no earlier Configure set."""
    return configure_decision(action, r.configured, r.state.cadence, r.epoch, r.step)


def decide_keep(r: Round, action: Keep) -> Decision:
    """Rule 9: a Keep that changes the retained set carries the retain command."""
    bad = [n for n in action.checkpoints if not is_checkpoint_name(n)]
    if bad:
        return r.suppress(action, f"invalid: checkpoint name(s) {bad!r}")
    state = r.state
    state.keeps[action.policy] = tuple(action.checkpoints)
    names = state.retain_set()
    if names == state.retained:
        return r.suppress(action, f"no change (retained: {', '.join(names) or 'none'})")
    state.retained = names
    return r.sent(action, RetainCommand(names))


def decide_unsupported(r: Round, action: Action) -> Decision:
    """Rule 10: an action kind this engine has no command for."""
    why = f"unsupported action {type(action).__name__} (kind {action.kind!r})"
    if isinstance(action, Retain):
        why += ": the engine decides retention; a policy asks with Keep"
    return r.suppress(action, why)


Rule = Callable[[Round, Action], Decision]

# Each action kind's rule (a subclass of an action takes its base's).
RULES: dict[type, Rule] = {
    Rollback: decide_rollback,  # type: ignore[dict-item]
    Stop: decide_stop,  # type: ignore[dict-item]
    SetLR: decide_lr_change,
    ScaleLR: decide_lr_change,
    SetSchedule: decide_set_schedule,  # type: ignore[dict-item]
    ClearSchedule: decide_clear_schedule,  # type: ignore[dict-item]
    SetHparam: decide_hparam,  # type: ignore[dict-item]
    SaveCheckpoint: decide_checkpoint,  # type: ignore[dict-item]
    Configure: decide_configure,  # type: ignore[dict-item]
    Keep: decide_keep,  # type: ignore[dict-item]
}


def rule_for(action: Action) -> Rule:
    """The rule for ``action``'s kind (its class or the nearest base in ``RULES``), else ``decide_unsupported``."""
    for cls in type(action).__mro__:
        rule = RULES.get(cls)
        if rule is not None:
            return rule
    return decide_unsupported


# -- applying the winners to the state ---------------------------------------------------


def apply_rollback(r: Round, chosen: ChosenRollback) -> Decision:
    """Send the rollback; the state goes back to its target (LR, multiplier, step) until the ack."""
    state, target, lr = r.state, chosen.target, chosen.lr
    command = rollback_command(chosen.action, target, lr)
    state.pending = PendingRollback(target.name, target.step, r.step)
    state.book.drop_after(target.step)  # the abandoned run's
    new_lr = lr if lr is not None else target.lr
    if state.schedule is not None:
        state.multiplier = target.multiplier
        if lr is not None:
            state.multiplier = multiplier_for(state.schedule, lr, target.step)
    if new_lr is not None:
        state.lr = new_lr
    state.step = target.step
    return r.sent(chosen.action, command, new_lr)


def apply_lr(r: Round, action: Action, plan: LRPlan) -> Decision:
    """Send the LR change; the state takes its LR (and multiplier, under a schedule)."""
    state = r.state
    if plan.lr is not None:
        state.lr = plan.lr
    if state.schedule is not None:
        state.multiplier = plan.multiplier
    return r.sent(action, plan.command, plan.lr)


def apply_schedule(r: Round, action: SetSchedule | ClearSchedule) -> Decision:
    """Send the schedule change; the state remembers the one before (restored if the trainer refuses)."""
    state = r.state
    state.schedule_before = (state.schedule, state.multiplier)
    if isinstance(action, ClearSchedule):
        state.schedule, state.multiplier = None, None
        return r.sent(action, ClearScheduleCommand())
    if state.schedule is None:
        state.multiplier = 1.0  # a first schedule starts lrsup's multiplier afresh; a later one keeps it
    state.schedule = dict(action.schedule)
    lr = None
    if state.multiplier is not None and state.step is not None:
        lr = evaluate(state.schedule, state.step) * state.multiplier
        state.lr = lr
    return r.sent(action, SetScheduleCommand(dict(action.schedule)), lr)
