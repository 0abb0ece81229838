"""The decision engine: feeds records to a stack of policies and turns their actions into decisions.

Pure: no IO, no clock. The runner writes each decision's ``command`` to
control.jsonl (assigning ``seq``) and every decision, suppressed ones included, to
journal.jsonl. A decision whose ``exit_status`` is set (3: a policy gave up on the
run) tells the runner the exit status ``lrsup run`` should end with.

Dispatch: for each record type the engine lists, once at construction, the policies
that override that type's hook (StartRecord -> ``on_start``, BatchRecord ->
``on_batch``, EpochRecord -> ``on_epoch``, EndRecord -> ``on_end``, AckRecord ->
``on_ack``); heartbeat, error and checkpoint records reach no policy (policies see
checkpoints in ``RunView.checkpoints``). A record with no interested policy costs a
dict look-up and the bookkeeping below.

Effective LR: ``engine.lr`` is set by each start record's ``lr`` (None if it has
none), replaced by every later record's ``lr`` when present (batch, epoch, ack), and
updated right after each decision that changes it, before the trainer acknowledges it.
While an lrsup schedule is in force (a SetSchedule was sent and not cleared) the
engine also tracks lrsup's multiplier (``RunView.multiplier``); a start record begins
without schedule or multiplier.

Checkpoints: every ``checkpoint`` record is tracked by name (a name seen again
replaces the older entry) with its step, epoch, LR, multiplier and, for an epoch-end
checkpoint, the logs of the epoch record at its step. A checkpoint at step ``s``
becomes **known good** at the first later epoch record whose ``loss`` (and
``val_loss``, when present) is finite: one with ``step > s``, or the epoch record at
``step == s`` when it has ``val_loss`` (evaluated on exactly those weights). A
checkpoint taken at a start record's step is a **start checkpoint**. When a rollback is
decided, every checkpoint taken after its target is dropped (it belongs to the
abandoned run), and so is the target if the trainer refuses the rollback.

Rollbacks in flight: from a rollback decision until the trainer's ``ack`` (or
``error``) for it, batch and epoch records describe the run being abandoned: the
engine passes them to no policy and takes no LR from them, and checkpoint records
taken after the target are ignored. After the ack the trainer's step is the
checkpoint's step again.

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

Example::

    engine = Engine.from_config(config)
    for record in records:
        for decision in engine.feed(record):
            if decision.command is not None:
                runner.send(decision.command, reason=decision.action.reason)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

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
from lrsup.policies.base import CheckpointInfo, Policy, RunView, pick_checkpoint
from lrsup.policies.monitor import Monitor, to_float32
from lrsup.supervisor.protocol import (
    AckRecord,
    BatchRecord,
    CheckpointRecord,
    EndRecord,
    EpochRecord,
    ErrorRecord,
    Record,
    StartRecord,
    is_checkpoint_name,
)
from lrsup.supervisor.schedules import evaluate

# Which hook each record type is dispatched to.
HOOKS: dict[type[Record], str] = {
    StartRecord: "on_start",
    BatchRecord: "on_batch",
    EpochRecord: "on_epoch",
    EndRecord: "on_end",
    AckRecord: "on_ack",
}

# The exit status of a run a policy gave up on (Stop(give_up=True)).
GIVE_UP_STATUS = 3

# The ``policy`` of the engine's own decisions (retain).
ENGINE = "engine"

_RUN_FIELDS = ("optimizer", "optimizer_config", "steps_per_epoch", "epochs")
_CADENCE = ("batch_every", "checkpoint_every_epochs", "checkpoint_every_steps")
_LR_CHANGES = (SetLR, ScaleLR)


@dataclass(frozen=True)
class Decision:
    """What the engine decided about one action.

    Args:
        action: Action. The policy's action, with ``policy`` stamped.
        command: dict or None. Command arguments including ``cmd`` (e.g.
            ``{"cmd": "set_lr", "lr": 0.005}``), or None when suppressed.
        lr: float or None. The effective LR after this decision, when it sets one.
        epoch: int or None. The record's epoch (None for records without one).
        step: int. The record's step.
        suppressed: str or None. Why no command was sent.
        exit_status: int or None. Set on a sent ``Stop(give_up=True)``: 3, the exit status
            ``lrsup run`` should end with once the trainer has stopped.
    """

    action: Action
    command: dict[str, Any] | None
    lr: float | None
    epoch: int | None
    step: int
    suppressed: str | None = None
    exit_status: int | None = None


@dataclass
class _Checkpoint:
    name: str
    step: int
    epoch: int | None
    lr: float | None
    multiplier: float | None
    good: bool = False
    start: bool = False
    metrics: dict | None = None

    def info(self) -> CheckpointInfo:
        return CheckpointInfo(self.name, self.step, self.epoch, self.lr, self.multiplier, self.good,
                              self.start, None if self.metrics is None else dict(self.metrics))


def _finite_losses(logs: dict) -> bool:
    """True when ``logs`` has a loss or val_loss and every one of the two present is finite."""
    keys = [k for k in ("loss", "val_loss") if k in logs]
    return bool(keys) and all(math.isfinite(logs[k]) for k in keys)


def _fmt(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.6g}"


class Engine:
    """Runs a stack of policies over the trainer's records.

    Example::

        engine = Engine([Divergence(), Plateau(patience=2)], batch_every=10)
        decisions = engine.feed(EpochRecord(epoch=3, step=400, lr=0.01, logs={"val_loss": 0.4}))

    Args:
        policies: sequence of Policy. The stack, in priority order (first wins).
        batch_every: int. The agent's batch-record cadence at start (its config.json).
        checkpoint_every_epochs: int. The agent's epoch checkpoint cadence (0: off).
        checkpoint_every_steps: int. The agent's step checkpoint cadence (0: off).
        monitor: str. The metric that makes a checkpoint "best" (retained, and the
            target of ``Rollback(best=True)``); ``loss`` when no checkpoint has it.
        mode: str. ``"auto"``, ``"min"`` or ``"max"`` for ``monitor``.
    """

    def __init__(
        self,
        policies: Sequence[Policy],
        *,
        batch_every: int = 10,
        checkpoint_every_epochs: int = 1,
        checkpoint_every_steps: int = 0,
        monitor: str = "val_loss",
        mode: str = "auto",
    ) -> None:
        for index, policy in enumerate(policies):
            if not isinstance(policy, Policy):
                raise TypeError(f"policies[{index}] must be a Policy instance; got {policy!r}")
        self.policies: tuple[Policy, ...] = tuple(policies)
        self._hooks: dict[type, tuple[tuple[Policy, Any], ...]] = {
            record_type: tuple(
                (policy, getattr(policy, hook)) for policy in self.policies if type(policy).overrides(hook)
            )
            for record_type, hook in HOOKS.items()
        }
        self._probers = tuple(p for p in self.policies if type(p).overrides("probing"))
        self._monitor = Monitor(monitor, mode)
        self._initial_cadence = {
            "batch_every": batch_every,
            "checkpoint_every_epochs": checkpoint_every_epochs,
            "checkpoint_every_steps": checkpoint_every_steps,
        }
        self._lr: float | None = None
        self._run: dict[str, Any] = dict.fromkeys(_RUN_FIELDS)
        self._reset_supervision()

    @classmethod
    def from_config(cls, config: Any) -> "Engine":
        """An engine for a :class:`~lrsup.supervisor.config.ResolvedConfig`: its policies and agent cadence.

        Example::

            engine = Engine.from_config(load_config(None, cwd=Path.cwd()))
        """
        agent = config.agent
        return cls(
            config.build_policies(),
            batch_every=agent.batch_every,
            checkpoint_every_epochs=agent.checkpoint_every_epochs,
            checkpoint_every_steps=agent.checkpoint_every_steps,
        )

    def _reset_supervision(self) -> None:
        self._step: int | None = None
        self._start_step = 0
        self._checkpoints: dict[str, _Checkpoint] = {}
        self._infos: tuple[CheckpointInfo, ...] | None = None
        self._last_epoch: dict[str, Any] | None = None
        self._pending: dict[str, Any] | None = None
        self._schedule: dict | None = None
        self._multiplier: float | None = None
        self._schedule_before: tuple[dict | None, float | None] = (None, None)
        self._cadence = dict(self._initial_cadence)
        self._keeps: dict[str, tuple[str, ...]] = {}
        self._retained: tuple[str, ...] = ()
        self._exit_status: int | None = None

    # -- what the runner and tests read ------------------------------------------------

    @property
    def lr(self) -> float | None:
        """The effective learning rate as the engine knows it (None until a record gives it)."""
        return self._lr

    @property
    def exit_status(self) -> int | None:
        """3 once a give-up stop was sent (the exit status ``lrsup run`` should end with), else None."""
        return self._exit_status

    @property
    def checkpoints(self) -> tuple[CheckpointInfo, ...]:
        """The checkpoints a rollback may go to, oldest first."""
        return self._checkpoint_infos()

    @property
    def known_good_checkpoint(self) -> str | None:
        """The name of the newest known-good checkpoint (a restart's restore point), or None."""
        good = [c for c in self._checkpoints.values() if c.good]
        return max(good, key=lambda c: c.step).name if good else None

    @property
    def rollback_pending(self) -> str | None:
        """The checkpoint of a rollback decided and not yet acknowledged, or None."""
        return None if self._pending is None else self._pending["checkpoint"]

    @property
    def schedule(self) -> dict | None:
        """The lrsup schedule in force as the engine knows it, or None."""
        return self._schedule

    # -- feeding -----------------------------------------------------------------------

    def feed(self, record: Record) -> list[Decision]:
        """Give one record to the interested policies; return their decisions.

        Args:
            record: Record. The next record from metrics.jsonl, in order.
        """
        kind = type(record)
        if kind is CheckpointRecord:
            return self._on_checkpoint(record)  # type: ignore[arg-type]
        if kind is ErrorRecord:
            self._on_error(record)  # type: ignore[arg-type]
            return self._retain_decisions(None, self._step or 0)
        if kind is AckRecord and record.cmd == "rollback" and self._pending is not None:  # type: ignore[attr-defined]
            self._pending = None
        elif self._pending is not None and kind in (BatchRecord, EpochRecord):
            return []  # the abandoned run: see "Rollbacks in flight"
        lr = getattr(record, "lr", None)
        if lr is not None:
            self._lr = float(lr)
        if kind is StartRecord:  # a new fit: nothing carries over from the last one
            self._lr = None if lr is None else float(lr)
            self._run = {name: getattr(record, name) for name in _RUN_FIELDS}
            self._start_step = record.step  # type: ignore[attr-defined]
            self._schedule, self._multiplier, self._pending = None, None, None
        if kind in (StartRecord, BatchRecord, EpochRecord, AckRecord):
            self._step = record.step  # type: ignore[attr-defined]
        epoch, step = getattr(record, "epoch", None), getattr(record, "step", 0)
        if kind is EpochRecord:
            self._vouch(record)  # type: ignore[arg-type]
        hooks = self._hooks.get(kind)
        decisions: list[Decision] = []
        if hooks:
            view = self._view()
            actions: list[Action] = []
            for policy, hook in hooks:
                for action in hook(record, view) or ():
                    if not isinstance(action, Action):
                        raise TypeError(
                            f"policy {policy.name!r} returned {action!r} from "
                            f"{HOOKS[kind]}; expected Action instances"
                        )
                    if not action.policy:
                        action = dataclasses.replace(action, policy=policy.name)
                    actions.append(action)
            if actions:
                decisions = self._resolve(actions, epoch, step, view.probing)
        if decisions or kind is not BatchRecord:  # a batch record changes retention only by a decision
            decisions.extend(self._retain_decisions(epoch, step))
        return decisions

    def _view(self) -> RunView:
        return RunView(
            lr=self._lr,
            **self._run,
            step=self._step,
            checkpoints=self._checkpoint_infos(),
            schedule=self._schedule,
            multiplier=self._multiplier,
            batch_every=self._cadence["batch_every"],
            probing=self._probing(),
            start_step=self._start_step,
        )

    def _probing(self) -> str | None:
        for policy in self._probers:
            if policy.probing:
                return policy.name
        return None

    # -- checkpoints -------------------------------------------------------------------

    def _checkpoint_infos(self) -> tuple[CheckpointInfo, ...]:
        if self._infos is None:
            ordered = sorted(self._checkpoints.values(), key=lambda c: c.step)
            self._infos = tuple(c.info() for c in ordered)
        return self._infos

    def _changed(self) -> None:
        self._infos = None

    def _on_checkpoint(self, record: CheckpointRecord) -> list[Decision]:
        if self._pending is not None and record.step > self._pending["step"]:
            return []  # taken in the run being abandoned
        checkpoint = _Checkpoint(
            name=record.name,
            step=record.step,
            epoch=record.epoch,
            lr=float(record.lr) if record.lr is not None else self._lr,
            multiplier=record.multiplier if record.multiplier is not None else self._multiplier,
            start=record.step == self._start_step,
        )
        last = self._last_epoch
        if last is not None and last["step"] == record.step and record.epoch in (None, last["epoch"]):
            # The epoch record at its step came first: its logs are this checkpoint's.
            checkpoint.metrics = dict(last["logs"])
            checkpoint.good = "val_loss" in last["logs"] and _finite_losses(last["logs"])
        self._checkpoints.pop(record.name, None)
        self._checkpoints[record.name] = checkpoint
        self._changed()
        return self._retain_decisions(record.epoch, record.step)

    def _vouch(self, record: EpochRecord) -> None:
        logs = record.logs
        self._last_epoch = {"epoch": record.epoch, "step": record.step, "logs": dict(logs)}
        finite = _finite_losses(logs)
        for checkpoint in self._checkpoints.values():
            if checkpoint.step == record.step and checkpoint.epoch in (None, record.epoch):
                checkpoint.metrics = dict(logs)
                self._changed()
            if checkpoint.good or not finite:
                continue
            if checkpoint.step < record.step or (checkpoint.step == record.step and "val_loss" in logs):
                checkpoint.good = True
                self._changed()

    def _on_error(self, record: ErrorRecord) -> None:
        if record.cmd == "rollback" and self._pending is not None:
            # The trainer could not restore it: never try that checkpoint again.
            self._checkpoints.pop(self._pending["checkpoint"], None)
            self._changed()
            self._pending = None
        elif record.cmd in ("set_schedule", "clear_schedule"):
            self._schedule, self._multiplier = self._schedule_before

    def _best(self) -> tuple[_Checkpoint | None, str]:
        good = sorted((c for c in self._checkpoints.values() if c.good), key=lambda c: c.step)
        if not good:
            return None, "no checkpoint is known good yet"
        for monitor in (self._monitor, Monitor("loss", "min")):
            best, best_value = None, None
            for checkpoint in good:
                value = (checkpoint.metrics or {}).get(monitor.monitor)
                if value is None or not math.isfinite(value):
                    continue
                if monitor.is_improvement(value, best_value):
                    best, best_value = checkpoint, value
            if best is not None:
                return best, f"{best.name} (step {best.step}) has the best {monitor.monitor}, {best_value:.6g}"
        return None, f"no known-good checkpoint has a finite {self._monitor.monitor} or loss"

    def _retain_set(self) -> tuple[str, ...]:
        names: list[str] = []
        good = [c for c in self._checkpoints.values() if c.good]
        if good:
            names.append(max(good, key=lambda c: c.step).name)
            best, _ = self._best()
            if best is not None:
                names.append(best.name)
        else:
            start = [c for c in self._checkpoints.values() if c.start]
            if start:
                names.append(max(start, key=lambda c: c.step).name)
        if self._pending is not None:
            names.append(self._pending["checkpoint"])
        for kept in self._keeps.values():
            names.extend(kept)
        return tuple(sorted(set(names)))

    def _retain_decisions(self, epoch: int | None, step: int) -> list[Decision]:
        names = self._retain_set()
        if names == self._retained:
            return []
        self._retained = names
        action = Retain(keep=names, policy=ENGINE, reason=self._retain_reason())
        return [Decision(action, {"cmd": "retain", "keep": list(names)}, None, epoch, step)]

    def _retain_reason(self) -> str:
        parts = []
        good = [c for c in self._checkpoints.values() if c.good]
        if good:
            parts.append(f"newest known-good {max(good, key=lambda c: c.step).name}")
            best, _ = self._best()
            if best is not None:
                parts.append(f"best {best.name}")
        else:
            start = [c for c in self._checkpoints.values() if c.start]
            if start:
                parts.append(f"start checkpoint {max(start, key=lambda c: c.step).name} (none known good yet)")
        if self._pending is not None:
            parts.append(f"rollback target {self._pending['checkpoint']}")
        for policy, kept in self._keeps.items():
            if kept:
                parts.append(f"kept by {policy}: {', '.join(kept)}")
        return "keep " + ("; ".join(parts) if parts else "no checkpoint beyond the last ones")

    # -- resolving actions ---------------------------------------------------------------

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
        rollback: tuple[Rollback, _Checkpoint, float | None] | None = None
        problems: dict[int, str] = {}
        for action in actions:
            if isinstance(action, Rollback) and rollback is None and pending is None and not probed(action):
                target, lr, problem = self._rollback_plan(action)
                if problem is not None:
                    problems[id(action)] = problem
                else:
                    rollback = (action, target, lr)  # type: ignore[assignment]
        stop = next((a for a in actions if isinstance(a, Stop)), None)
        lr_winner: Action | None = None
        lr_plans: dict[int, tuple[dict | None, float | None, float | None, str | None]] = {}
        if rollback is None and stop is None:
            for action in actions:
                if isinstance(action, _LR_CHANGES) and not probed(action):
                    plan = self._lr_plan(action)
                    lr_plans[id(action)] = plan
                    if plan[3] is None:
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
                    suppress(action, f"a rollback to {pending['checkpoint']} decided at step "
                                     f"{pending['decided_at']} is not applied yet")
                elif id(action) in problems:
                    suppress(action, problems[id(action)])
                else:
                    suppress(action, f"another rollback (policy {rollback[0].policy}) already "  # type: ignore[index]
                                     f"decided at step {step}")
            elif isinstance(action, Stop):
                if action is stop:
                    status = GIVE_UP_STATUS if action.give_up else None
                    if status is not None:
                        self._exit_status = status
                    decisions.append(Decision(action, {"cmd": "stop"}, None, epoch, step, None, status))
                else:
                    first_stop: Stop = stop  # type: ignore[assignment]
                    suppress(action, f"another stop (policy {first_stop.policy}) already decided at step {step}")
            elif isinstance(action, _LR_CHANGES):
                if rollback is not None:
                    suppress(action, f"rollback (policy {rollback[0].policy}) decided at step {step}")
                elif stop is not None:
                    suppress(action, f"stop (policy {stop.policy}) decided at step {step}")
                elif probed(action):
                    suppress(action, probe_why)
                elif action is lr_winner:
                    seen_lr_winner = True
                    decisions.append(self._apply_lr(action, lr_plans[id(action)], epoch, step))
                elif seen_lr_winner:
                    winner: Action = lr_winner  # type: ignore[assignment]
                    suppress(action, f"another LR change (policy {winner.policy}) already decided at step {step}")
                else:
                    suppress(action, lr_plans[id(action)][3])  # type: ignore[arg-type]
            elif isinstance(action, SetSchedule):
                if action is schedule_winner:
                    decisions.append(self._apply_schedule(action, epoch, step))
                elif rollback is not None:
                    suppress(action, f"rollback (policy {rollback[0].policy}) decided at step {step}")
                elif stop is not None:
                    suppress(action, f"stop (policy {stop.policy}) decided at step {step}")
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
                    suppress(action, f"another schedule change (policy {schedule_winner.policy}) "
                                     f"already decided at step {step}")
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
                    command = {"cmd": "set_hparam", "name": action.name, "value": float(action.value)}
                    decisions.append(Decision(action, command, None, epoch, step))
            elif isinstance(action, SaveCheckpoint):
                if action.name is not None and not is_checkpoint_name(action.name):
                    suppress(action, f"invalid: checkpoint name {action.name!r} (1 to 100 of A-Z a-z 0-9 _ . -)")
                elif action.name in checkpoints:
                    first = checkpoints[action.name]
                    suppress(action, f"another checkpoint request (policy {first.policy}) already decided "
                                     f"at step {step}")
                else:
                    checkpoints[action.name] = action
                    command = {"cmd": "checkpoint"}
                    if action.name is not None:
                        command["name"] = action.name
                    decisions.append(Decision(action, command, None, epoch, step))
            elif isinstance(action, Configure):
                decisions.append(self._apply_configure(action, configured, epoch, step))
            elif isinstance(action, Keep):
                decisions.append(self._apply_keep(action, epoch, step))
            else:
                why = f"unsupported action {type(action).__name__} (kind {action.kind!r})"
                if isinstance(action, Retain):
                    why += ": the engine decides retention; a policy asks with Keep"
                suppress(action, why)
        return decisions

    # Rollback.

    def _rollback_plan(self, action: Rollback) -> tuple[_Checkpoint | None, float | None, str | None]:
        """(target, LR after it or None, why it cannot be sent or None)."""
        if action.lr is not None and not (math.isfinite(action.lr) and action.lr >= 0):
            return None, None, f"invalid: lr must be finite and >= 0 (got {action.lr!r})"
        if action.lr_factor is not None and not (math.isfinite(action.lr_factor) and action.lr_factor > 0):
            return None, None, f"invalid: lr_factor must be finite and > 0 (got {action.lr_factor!r})"
        if not isinstance(action.skip_batches, int) or action.skip_batches < 0:
            return None, None, f"invalid: skip_batches must be an int >= 0 (got {action.skip_batches!r})"
        if action.checkpoint is not None:
            target = self._checkpoints.get(action.checkpoint)
            if target is None:
                known = ", ".join(c.name for c in self._checkpoint_infos()) or "none"
                return None, None, (f"no checkpoint to roll back to: no checkpoint named "
                                    f"{action.checkpoint!r} (known: {known})")
        elif action.best:
            target, why = self._best()
            if target is None:
                return None, None, f"no checkpoint to roll back to: {why}"
        else:
            info, why = pick_checkpoint(self._checkpoint_infos(), action.before_step)
            if info is None:
                return None, None, f"no checkpoint to roll back to: {why}"
            target = self._checkpoints[info.name]
        if action.lr is not None:
            lr = float(action.lr)
        elif action.lr_factor is not None and target.lr is not None:
            lr = target.lr * action.lr_factor
        else:
            lr = None
        return target, lr, None

    def _apply_rollback(
        self, action: Rollback, target: _Checkpoint, lr: float | None, epoch: int | None, step: int
    ) -> Decision:
        command: dict[str, Any] = {"cmd": "rollback", "checkpoint": target.name, "skip_batches": action.skip_batches}
        if lr is not None:
            command["lr"] = lr
        self._pending = {"checkpoint": target.name, "step": target.step, "decided_at": step}
        for name in [c.name for c in self._checkpoints.values() if c.step > target.step]:
            del self._checkpoints[name]  # the abandoned run's
        self._changed()
        new_lr = lr if lr is not None else target.lr
        if self._schedule is not None:
            self._multiplier = target.multiplier
            if lr is not None:
                self._multiplier = self._multiplier_for(lr, target.step)
        if new_lr is not None:
            self._lr = new_lr
        self._step = target.step
        return Decision(action, command, new_lr, epoch, step)

    # LR changes.

    def _lr_plan(self, action: SetLR | ScaleLR) -> tuple[dict | None, float | None, float | None, str | None]:
        """(command, new LR or None, new multiplier or None, why suppressed or None)."""
        current = self._lr
        if isinstance(action, SetLR):
            target = float(action.lr)
            if not (math.isfinite(target) and target >= 0):
                return None, None, None, f"invalid: lr must be finite and >= 0 (got {action.lr!r})"
            if current is not None and to_float32(target) == to_float32(current):
                return None, None, None, f"no change (LR already {current:.6g})"
            multiplier = self._multiplier_for(target, self._step) if self._schedule is not None else None
            return {"cmd": "set_lr", "lr": target}, target, multiplier, None
        factor, min_lr = float(action.factor), float(action.min_lr)
        if not (math.isfinite(factor) and factor > 0):
            return None, None, None, f"invalid: factor must be finite and > 0 (got {action.factor!r})"
        if not (math.isfinite(min_lr) and min_lr >= 0):
            return None, None, None, f"invalid: min_lr must be finite and >= 0 (got {action.min_lr!r})"
        if current is None:
            multiplier = None if self._multiplier is None else self._multiplier * factor
            return {"cmd": "scale_lr", "factor": factor}, None, multiplier, None
        target = max(current * factor, min_lr)
        if to_float32(target) == to_float32(current):
            return None, None, None, f"no change (LR already {current:.6g})"
        if self._schedule is None:
            return {"cmd": "set_lr", "lr": target}, target, None, None
        effective = target / current if current > 0 else factor
        if effective >= 1.0:
            return None, None, None, f"no change (LR {current:.6g} is not above min_lr {min_lr:.6g})"
        multiplier = None if self._multiplier is None else self._multiplier * effective
        return {"cmd": "scale_lr", "factor": effective}, target, multiplier, None

    def _apply_lr(self, action: Action, plan: tuple, epoch: int | None, step: int) -> Decision:
        command, target, multiplier, _ = plan
        if target is not None:
            self._lr = target
        if self._schedule is not None:
            self._multiplier = multiplier
        return Decision(action, command, target, epoch, step)

    def _multiplier_for(self, lr: float, step: int | None) -> float | None:
        """lrsup's multiplier that makes the schedule give ``lr`` at ``step`` (None if unknowable)."""
        if self._schedule is None or step is None:
            return None
        base = evaluate(self._schedule, step)
        return lr / base if base > 0 and math.isfinite(base) else None

    # Schedules, configuration, retention.

    def _apply_schedule(self, action: SetSchedule | ClearSchedule, epoch: int | None, step: int) -> Decision:
        self._schedule_before = (self._schedule, self._multiplier)
        if isinstance(action, ClearSchedule):
            self._schedule, self._multiplier = None, None
            return Decision(action, {"cmd": "clear_schedule"}, None, epoch, step)
        if self._schedule is None:
            self._multiplier = 1.0  # a first schedule starts lrsup's multiplier afresh; a later one keeps it
        self._schedule = dict(action.schedule)
        lr = None
        if self._multiplier is not None and self._step is not None:
            lr = evaluate(self._schedule, self._step) * self._multiplier
            self._lr = lr
        return Decision(action, {"cmd": "set_schedule", "schedule": dict(action.schedule)}, lr, epoch, step)

    def _apply_configure(self, action: Configure, configured: dict[str, Action], epoch: int | None,
                         step: int) -> Decision:
        asked = {k: getattr(action, k) for k in _CADENCE if getattr(action, k) is not None}
        for key, value in asked.items():
            low = 1 if key == "batch_every" else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                why = f"invalid: {key} must be an int >= {low} (got {value!r})"
                return Decision(action, None, None, epoch, step, why)
        taken = {k: configured[k] for k in asked if k in configured}
        changes = {k: v for k, v in asked.items() if k not in taken and self._cadence[k] != v}
        if not changes:
            if taken:
                key, first = next(iter(taken.items()))
                why = f"another configure (policy {first.policy}) already set {key} at step {step}"
            elif asked:
                why = "no change (" + ", ".join(f"{k} already {v}" for k, v in asked.items()) + ")"
            else:
                why = "no change (no setting given)"
            return Decision(action, None, None, epoch, step, why)
        for key, value in changes.items():
            configured[key] = action
            self._cadence[key] = value
        return Decision(action, {"cmd": "configure", **changes}, None, epoch, step)

    def _apply_keep(self, action: Keep, epoch: int | None, step: int) -> Decision:
        bad = [n for n in action.checkpoints if not is_checkpoint_name(n)]
        if bad:
            return Decision(action, None, None, epoch, step, f"invalid: checkpoint name(s) {bad!r}")
        self._keeps[action.policy] = tuple(action.checkpoints)
        names = self._retain_set()
        if names == self._retained:
            return Decision(action, None, None, epoch, step, f"no change (retained: {', '.join(names) or 'none'})")
        self._retained = names
        return Decision(action, {"cmd": "retain", "keep": list(names)}, None, epoch, step)

    # -- state -------------------------------------------------------------------------

    def _keys(self) -> list[str]:
        return [f"{index}:{policy.name}" for index, policy in enumerate(self.policies)]

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state: the engine's LR, run info and supervision (checkpoints, schedule...), and each policy's."""
        return {
            "lr": self._lr,
            "run": dict(self._run),
            "policies": {key: policy.state_dict() for key, policy in zip(self._keys(), self.policies)},
            "supervision": {
                "step": self._step,
                "start_step": self._start_step,
                "checkpoints": [dataclasses.asdict(c) for c in self._checkpoints.values()],
                "last_epoch": self._last_epoch,
                "pending": self._pending,
                "schedule": self._schedule,
                "multiplier": self._multiplier,
                "schedule_before": list(self._schedule_before),
                "cadence": dict(self._cadence),
                "keeps": {k: list(v) for k, v in self._keeps.items()},
                "retained": list(self._retained),
                "exit_status": self._exit_status,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`; the stack must be the same policies in the same order.

        A state without ``supervision`` (saved before checkpoints existed) starts that part afresh.

        Args:
            state: dict. What :meth:`state_dict` returned (possibly through JSON).

        Raises:
            ValueError: the state is for another stack, or is malformed.
        """
        required = {"lr", "run", "policies"}
        if not isinstance(state, dict) or not required <= set(state) or set(state) - required - {"supervision"}:
            got = sorted(state) if isinstance(state, dict) else state
            raise ValueError(f"engine state must have keys ['lr', 'policies', 'run'] (and 'supervision'); got {got!r}")
        saved = state["policies"]
        keys = self._keys()
        if not isinstance(saved, dict) or list(saved) != keys:
            got = list(saved) if isinstance(saved, dict) else saved
            raise ValueError(f"engine state was saved for policies {got!r}, but this engine has {keys!r}")
        run = state["run"]
        if not isinstance(run, dict) or set(run) != set(_RUN_FIELDS):
            raise ValueError(f"engine state: run must have keys {sorted(_RUN_FIELDS)}; got {run!r}")
        lr = state["lr"]
        if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool)):
            raise ValueError(f"engine state: lr must be a number or None; got {lr!r}")
        supervision = state.get("supervision")
        if supervision is not None and not isinstance(supervision, dict):
            raise ValueError(f"engine state: supervision must be an object; got {supervision!r}")
        for key, policy in zip(keys, self.policies):
            policy.load_state_dict(saved[key])
        self._lr = None if lr is None else float(lr)
        self._run = dict(run)
        self._reset_supervision()
        if supervision:
            self._load_supervision(supervision)

    def _load_supervision(self, s: dict[str, Any]) -> None:
        try:
            self._step = s["step"]
            self._start_step = int(s["start_step"])
            self._checkpoints = {c["name"]: _Checkpoint(**c) for c in s["checkpoints"]}
            self._last_epoch = s["last_epoch"]
            self._pending = s["pending"]
            self._schedule = s["schedule"]
            self._multiplier = s["multiplier"]
            before = s["schedule_before"]
            self._schedule_before = (before[0], before[1])
            cadence = dict(s["cadence"])
            if set(cadence) != set(_CADENCE):
                raise ValueError(f"cadence must have keys {sorted(_CADENCE)}; got {sorted(cadence)}")
            self._cadence = cadence
            self._keeps = {k: tuple(v) for k, v in s["keeps"].items()}
            self._retained = tuple(s["retained"])
            self._exit_status = s["exit_status"]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self._reset_supervision()
            raise ValueError(f"engine state: malformed supervision: {exc!r}") from None
        self._changed()
