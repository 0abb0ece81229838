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
   (the checkpoint's own). Others are suppressed: "no checkpoint to roll back to: ...",
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

:class:`Composer` holds these rules (``_resolve``) and applies the winners to the
engine's state; :class:`~lrsup.supervisor.engine.core.Engine` derives from it and owns that
state (the attributes listed in :class:`Composer`'s docstring). The checks and the
arithmetic of each single action are in :mod:`lrsup.supervisor.engine.action_commands`.
"""

from __future__ import annotations

from typing import Any

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
from lrsup.supervisor.engine.checkpoint_book import CheckpointBook, TrackedCheckpoint
from lrsup.supervisor.engine.decision import GIVE_UP_STATUS, Decision
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

_LR_CHANGES = (SetLR, ScaleLR)


class Composer:
    """The composition rules (see the module docstring), as the base of :class:`~lrsup.supervisor.engine.core.Engine`.

    The engine owns the state these methods read and change: ``_lr``, ``_step``,
    ``_schedule``, ``_multiplier``, ``_schedule_before``, ``_pending``, ``_book``
    (a :class:`~lrsup.supervisor.engine.checkpoint_book.CheckpointBook`), ``_cadence``,
    ``_keeps``, ``_retained`` and ``_exit_status``; and ``_probing()`` and ``_retain_set()``.
    """

    _lr: float | None
    _step: int | None
    _schedule: dict | None
    _multiplier: float | None
    _schedule_before: tuple[dict | None, float | None]
    _pending: dict[str, Any] | None
    _book: CheckpointBook
    _cadence: dict[str, int]
    _keeps: dict[str, tuple[str, ...]]
    _retained: tuple[str, ...]
    _exit_status: int | None

    def _probing(self) -> str | None:
        raise NotImplementedError  # abstract

    def _retain_set(self) -> tuple[str, ...]:
        raise NotImplementedError  # abstract

    def _resolve(
        self, actions: list[Action], epoch: int | None, step: int, probing_before: str | None
    ) -> list[Decision]:
        probing = probing_before or self._probing()
        pending = self._pending  # a rollback decided on an earlier record, not applied yet
        decisions: list[Decision] = []

        def suppress(action: Action, why: str) -> None:
            decisions.append(Decision(action, None, None, epoch, step, why))

        def probed(action: Action) -> bool:
            return probing is not None and action.policy != probing

        probe_why = f"policy {probing} is probing (an LR range test); its outcome decides the LR"

        # Pass 1: the winners, by priority.
        rollback: tuple[Rollback, TrackedCheckpoint, float | None] | None = None
        problems: dict[int, str] = {}
        for action in actions:
            if isinstance(action, Rollback) and rollback is None and pending is None and not probed(action):
                target, lr, problem = rollback_plan(action, self._book)
                if problem is not None:
                    problems[id(action)] = problem
                else:
                    rollback = (action, target, lr)  # type: ignore[assignment]
        stop = next((a for a in actions if isinstance(a, Stop)), None)
        lr_winner: Action | None = None
        lr_plans: dict[int, LRPlan] = {}
        if rollback is None and stop is None:
            for action in actions:
                if isinstance(action, _LR_CHANGES) and not probed(action):
                    plan = lr_plan(
                        action,
                        lr=self._lr,
                        schedule=self._schedule,  # type: ignore[arg-type]
                        multiplier=self._multiplier,
                        step=self._step,
                    )
                    lr_plans[id(action)] = plan
                    if plan.why is None:
                        lr_winner = action
                        break
        schedule_winner: Action | None = None
        for action in actions:
            if probed(action):
                continue
            if isinstance(action, SetSchedule) and rollback is None and stop is None and lr_winner is None:
                schedule_winner = action
                break
            if isinstance(action, ClearSchedule) and self._schedule is not None:
                schedule_winner = action
                break

        # Pass 2: the decisions, in the order the actions came.
        overruled = None  # why the record's LR changes and SetSchedules are not sent
        if rollback is not None:
            overruled = f"rollback (policy {rollback[0].policy}) decided at step {step}"
        elif stop is not None:
            overruled = f"stop (policy {stop.policy}) decided at step {step}"
        hparams: dict[str, Action] = {}
        checkpoints: dict[str | None, Action] = {}
        configured: dict[str, Action] = {}
        seen_lr_winner = False
        for action in actions:
            if isinstance(action, Rollback):
                if rollback is not None and action is rollback[0]:
                    decisions.append(self._apply_rollback(*rollback, epoch, step))
                elif probed(action):
                    suppress(action, probe_why)
                elif pending is not None:
                    suppress(
                        action,
                        f"a rollback to {pending['checkpoint']} decided at step "
                        f"{pending['decided_at']} is not applied yet",
                    )
                elif id(action) in problems:
                    suppress(action, problems[id(action)])
                else:
                    suppress(
                        action,
                        f"another rollback (policy {rollback[0].policy}) already "  # type: ignore[index]
                        f"decided at step {step}",
                    )
            elif isinstance(action, Stop):
                if action is stop:
                    status = GIVE_UP_STATUS if action.give_up else None
                    if status is not None:
                        self._exit_status = status
                    decisions.append(Decision(action, StopCommand(), None, epoch, step, None, status))
                else:
                    first_stop: Stop = stop  # type: ignore[assignment]
                    suppress(action, f"another stop (policy {first_stop.policy}) already decided at step {step}")
            elif isinstance(action, _LR_CHANGES):
                if overruled is not None:
                    suppress(action, overruled)
                elif probed(action):
                    suppress(action, probe_why)
                elif action is lr_winner:
                    seen_lr_winner = True
                    decisions.append(self._apply_lr(action, lr_plans[id(action)], epoch, step))
                elif seen_lr_winner:
                    winner: Action = lr_winner  # type: ignore[assignment]
                    suppress(action, f"another LR change (policy {winner.policy}) already decided at step {step}")
                else:
                    suppress(action, lr_plans[id(action)].why)  # type: ignore[arg-type]
            elif isinstance(action, SetSchedule):
                if action is schedule_winner:
                    decisions.append(self._apply_schedule(action, epoch, step))
                elif overruled is not None:
                    suppress(action, overruled)
                elif lr_winner is not None:
                    suppress(action, f"an LR change (policy {lr_winner.policy}) already decided at step {step}")
                elif probed(action):
                    suppress(action, probe_why)
                else:
                    first: Action = schedule_winner  # type: ignore[assignment]
                    suppress(action, f"another schedule change (policy {first.policy}) already decided at step {step}")
            elif isinstance(action, ClearSchedule):
                if action is schedule_winner:
                    decisions.append(self._apply_schedule(action, epoch, step))
                elif probed(action):
                    suppress(action, probe_why)
                elif schedule_winner is not None:
                    suppress(
                        action,
                        f"another schedule change (policy {schedule_winner.policy}) already decided at step {step}",
                    )
                else:
                    suppress(action, "no change (no lrsup schedule in force)")
            elif isinstance(action, SetHparam):
                first = hparams.get(action.name)
                if first is not None:
                    suppress(
                        action,
                        f"another {action.name} change (policy {first.policy}) already decided at step {step}",
                    )
                else:
                    hparams[action.name] = action
                    command = SetHparamCommand(action.name, float(action.value))
                    decisions.append(Decision(action, command, None, epoch, step))
            elif isinstance(action, SaveCheckpoint):
                if action.name is not None and not is_checkpoint_name(action.name):
                    suppress(action, f"invalid: checkpoint name {action.name!r} (1 to 100 of A-Z a-z 0-9 _ . -)")
                elif action.name in checkpoints:
                    first = checkpoints[action.name]
                    suppress(
                        action, f"another checkpoint request (policy {first.policy}) already decided at step {step}"
                    )
                else:
                    checkpoints[action.name] = action
                    decisions.append(Decision(action, CheckpointCommand(action.name), None, epoch, step))
            elif isinstance(action, Configure):
                decisions.append(configure_decision(action, configured, self._cadence, epoch, step))
            elif isinstance(action, Keep):
                decisions.append(self._apply_keep(action, epoch, step))
            else:
                why = f"unsupported action {type(action).__name__} (kind {action.kind!r})"
                if isinstance(action, Retain):
                    why += ": the engine decides retention; a policy asks with Keep"
                suppress(action, why)
        return decisions

    # -- applying the winners ----------------------------------------------------------

    def _apply_rollback(
        self, action: Rollback, target: TrackedCheckpoint, lr: float | None, epoch: int | None, step: int
    ) -> Decision:
        command = rollback_command(action, target, lr)
        self._pending = {"checkpoint": target.name, "step": target.step, "decided_at": step}
        self._book.drop_after(target.step)  # the abandoned run's
        new_lr = lr if lr is not None else target.lr
        if self._schedule is not None:
            self._multiplier = target.multiplier
            if lr is not None:
                self._multiplier = multiplier_for(self._schedule, lr, target.step)
        if new_lr is not None:
            self._lr = new_lr
        self._step = target.step
        return Decision(action, command, new_lr, epoch, step)

    def _apply_lr(self, action: Action, plan: LRPlan, epoch: int | None, step: int) -> Decision:
        command, target, multiplier, _ = plan
        if target is not None:
            self._lr = target
        if self._schedule is not None:
            self._multiplier = multiplier
        return Decision(action, command, target, epoch, step)

    def _apply_schedule(self, action: SetSchedule | ClearSchedule, epoch: int | None, step: int) -> Decision:
        self._schedule_before = (self._schedule, self._multiplier)
        if isinstance(action, ClearSchedule):
            self._schedule, self._multiplier = None, None
            return Decision(action, ClearScheduleCommand(), None, epoch, step)
        if self._schedule is None:
            self._multiplier = 1.0  # a first schedule starts lrsup's multiplier afresh; a later one keeps it
        self._schedule = dict(action.schedule)
        lr = None
        if self._multiplier is not None and self._step is not None:
            lr = evaluate(self._schedule, self._step) * self._multiplier
            self._lr = lr
        return Decision(action, SetScheduleCommand(dict(action.schedule)), lr, epoch, step)

    def _apply_keep(self, action: Keep, epoch: int | None, step: int) -> Decision:
        bad = [n for n in action.checkpoints if not is_checkpoint_name(n)]
        if bad:
            return Decision(action, None, None, epoch, step, f"invalid: checkpoint name(s) {bad!r}")
        self._keeps[action.policy] = tuple(action.checkpoints)
        names = self._retain_set()
        if names == self._retained:
            return Decision(action, None, None, epoch, step, f"no change (retained: {', '.join(names) or 'none'})")
        self._retained = names
        return Decision(action, RetainCommand(names), None, epoch, step)
