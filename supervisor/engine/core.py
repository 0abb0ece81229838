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

Checkpoints and retention are tracked by a
:class:`~lrsup.supervisor.engine.checkpoint_book.CheckpointBook` (its module docstring has
the rules: known good, start checkpoints, best, what is retained).

A probe (a start record marked ``probe``: the launcher's hidden LR range test fit, whose
state the trainer puts back afterwards) is a stage of its own: it sets the LR, step and
schedule like any start record, and the next start record forgets every checkpoint taken
inside it (never a rollback target, a restart's restore point or "known good" for the
fit that follows).

Stages: each fit is a stage (the start record's ``fit``, 1 for a record without it). A
start record of another fit than the current one begins a new stage of the book: the
checkpoints policies see, the rollback targets, known good and best are that fit's only,
so a rollback never aims across fits; in a fit with no known-good checkpoint yet it goes
to the fit's start checkpoint, at that checkpoint's LR (the fit's LR) times the cut.

Rollbacks in flight: from a rollback decision until the trainer's ``ack`` (or
``error``) for it, batch and epoch records describe the run being abandoned: the
engine passes them to no policy and takes no LR from them, and checkpoint records
taken after the target are ignored. After the ack the trainer's step is the
checkpoint's step again.

One owner per learning rate (issue 13): the start record names the script's own LR
callbacks (``lr_callbacks``) and its optimizer's LearningRateSchedule (``lr_schedule``);
an epoch record whose ``lr_moved_from`` is set shows an LR change lrsup did not command.
With ``lr_owner="script"`` (the default) any of these makes the script the owner of the LR
for that fit (``RunView.script_lr``): the policies whose ``lr_role`` is ``"tunes"`` (plateau,
schedules, warm restarts, the LR range test) are not consulted until the next start record
(one that is probing finishes its probe first; an lrsup schedule still in force is cleared,
once, by the engine's own ClearSchedule), the rescues (``"rescues"``: divergence) stay
on and cut the script's LR now, and the journal says so once per fit
(:class:`~lrsup.supervisor.protocol.journal.LrOwnerEntry`, from :meth:`Engine.take_notes`).
With ``lr_owner="lrsup"`` the agent leaves the script's LR callbacks out of the fit, the
policies go on, and the journal says what was taken over.

Composition rules: how the actions of one record become decisions (safety first:
Rollback > Stop > LR changes > schedules; probing; checkpoints, configuration and
retention) are in :mod:`lrsup.supervisor.engine.composition`'s docstring, with
:func:`~lrsup.supervisor.engine.composition.compose`, which the engine calls with its
:class:`~lrsup.supervisor.engine.state.EngineState` (all it knows, in one object). Suppressed
decisions have ``command=None`` and ``lr=None``. Decisions come back in the order the
actions were returned, then the engine's missing-metric decisions (no command: a monitored
metric a fit's first epoch lacks, see :mod:`~lrsup.supervisor.engine.metric_check`), then
its retain decision.

Example::

    engine = Engine.from_config(config)
    for record in records:
        for decision in engine.feed(record):
            if decision.command is not None:
                channel.send(decision.command, reason=decision.action.reason)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from lrsup.policies.actions import Action, ClearSchedule, Retain
from lrsup.policies.base import CheckpointInfo, Policy, RunView
from lrsup.policies.monitor import Monitor
from lrsup.supervisor.engine.checkpoint_book import EXPLOIT_BASE, CheckpointBook, retained_names, retention_reason
from lrsup.supervisor.engine.composition import compose
from lrsup.supervisor.engine.decision import GIVE_UP_STATUS, Decision
from lrsup.supervisor.engine.metric_check import MetricCheck
from lrsup.supervisor.engine.state import RUN_FIELDS, EngineState
from lrsup.supervisor.protocol.commands import (
    ClearScheduleCommand,
    RetainCommand,
    RollbackCommand,
    SetScheduleCommand,
)
from lrsup.supervisor.protocol.journal import LrOwnerEntry
from lrsup.supervisor.protocol.wire import (
    DEFAULT_BATCH_MIN_INTERVAL,
    AckRecord,
    BatchRecord,
    CheckpointRecord,
    EndRecord,
    EpochRecord,
    ErrorRecord,
    Record,
    StartRecord,
)

__all__ = ["ENGINE", "GIVE_UP_STATUS", "HOOKS", "Decision", "Engine"]

# Which hook each record type is dispatched to.
HOOKS: dict[type[Record], str] = {
    StartRecord: "on_start",
    BatchRecord: "on_batch",
    EpochRecord: "on_epoch",
    EndRecord: "on_end",
    AckRecord: "on_ack",
}

# The ``policy`` of the engine's own decisions (retain).
ENGINE = "engine"

# ``[run] lr_owner``: who owns the LR in a fit whose script moves it itself.
LR_OWNERS = ("script", "lrsup")


def _lr(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"


class Engine:
    """Runs a stack of policies over the trainer's records.

    Example::

        engine = Engine([Divergence(), Plateau(patience=2)], batch_every=10)
        decisions = engine.feed(EpochRecord(epoch=3, step=400, lr=0.01, logs={"val_loss": 0.4}))

    Args:
        policies: sequence of Policy. The stack, in priority order (first wins).
        batch_every: int. The agent's batch-record cadence at start (its config.json).
        batch_min_interval: float. The agent's minimum seconds between batch records at start.
        checkpoint_every_epochs: int. The agent's epoch checkpoint cadence (0: off).
        checkpoint_every_steps: int. The agent's step checkpoint cadence (0: off).
        monitor: str. The metric that makes a checkpoint "best" (retained, and the
            target of ``Rollback(best=True)``); ``loss`` when no checkpoint has it.
        mode: str. ``"auto"``, ``"min"`` or ``"max"`` for ``monitor``.
        lr_owner: str. ``"script"`` (default) or ``"lrsup"``: who owns the LR in a fit whose
            script moves it itself (``[run] lr_owner``; see "One owner per learning rate").
    """

    def __init__(
        self,
        policies: Sequence[Policy],
        *,
        batch_every: int = 10,
        batch_min_interval: float = DEFAULT_BATCH_MIN_INTERVAL,
        checkpoint_every_epochs: int = 1,
        checkpoint_every_steps: int = 0,
        monitor: str = "val_loss",
        mode: str = "auto",
        lr_owner: str = "script",
    ) -> None:
        if lr_owner not in LR_OWNERS:
            raise ValueError(f"lr_owner must be one of {LR_OWNERS}; got {lr_owner!r}")
        self.lr_owner = lr_owner
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
        # One owner per LR: the hooks and probers consulted now (the LR tuners left out while the
        # script owns the LR), whether a tuner still probing is to stand down when it is done,
        # and the journal entries the runner has not taken yet.
        self._tuners = tuple(p for p in self.policies if p.lr_role == "tunes")
        self._rescuers = frozenset(p.name for p in self.policies if p.lr_role == "rescues")
        self._active_hooks = self._hooks
        self._active_probers = self._probers
        self._recheck = False
        self._notes: list[LrOwnerEntry] = []
        initial_cadence = {
            "batch_every": batch_every,
            "batch_min_interval": float(batch_min_interval),
            "checkpoint_every_epochs": checkpoint_every_epochs,
            "checkpoint_every_steps": checkpoint_every_steps,
        }
        self.state = EngineState(CheckpointBook(Monitor(monitor, mode)), initial_cadence)
        self._view_fields: dict[str, Any] | None = None  # see _view
        self._metric_check = MetricCheck(self.policies)  # monitored metrics a fit lacks (metric_check)

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
            batch_min_interval=agent.batch_min_interval,
            checkpoint_every_epochs=agent.checkpoint_every_epochs,
            checkpoint_every_steps=agent.checkpoint_every_steps,
            lr_owner=config.run.lr_owner,
        )

    # -- what the runner and tests read ------------------------------------------------

    @property
    def lr(self) -> float | None:
        """The effective learning rate as the engine knows it (None until a record gives it)."""
        return self.state.lr

    @property
    def exit_status(self) -> int | None:
        """3 once a give-up stop was sent (the exit status ``lrsup run`` should end with), else None."""
        return self.state.exit_status

    @property
    def checkpoints(self) -> tuple[CheckpointInfo, ...]:
        """The checkpoints a rollback may go to, oldest first."""
        return self.state.book.infos()

    @property
    def fit(self) -> int:
        """The current fit (stage): the last start record's ``fit`` (1 before any)."""
        return self.state.book.fit

    @property
    def known_good_checkpoint(self) -> str | None:
        """A restart's restore point: the current fit's newest known-good checkpoint, or None.

        In a later fit (2, 3, ...) with none known good yet: its start checkpoint, which holds
        what the earlier fits trained (a restart resumes that fit instead of training them again).
        Likewise after a PBT exploit, before an epoch has vouched for it: the new origin
        (``exploit-...``), the donor's state that the donor's score vouched for; the member's
        older checkpoints hold the weights the exploit abandoned, and its first checkpoint-less
        start would throw away what the population learned.
        """
        book = self.state.book
        newest = book.newest_good()
        if newest is None:
            start = book.newest_start()
            if start is not None and (book.fit > 1 or start.name.startswith(EXPLOIT_BASE)):
                newest = start
        return None if newest is None else newest.name

    @property
    def rollback_pending(self) -> str | None:
        """The checkpoint of a rollback decided and not yet acknowledged, or None."""
        return None if self.state.pending is None else self.state.pending.checkpoint

    @property
    def schedule(self) -> dict | None:
        """The lrsup schedule in force as the engine knows it, or None."""
        return self.state.schedule

    @property
    def script_lr(self) -> tuple[str, ...]:
        """What of the script owns the LR in this fit (empty: lrsup does): ``RunView.script_lr``."""
        return self.state.lr_movers

    def take_notes(self) -> list[LrOwnerEntry]:
        """The journal entries about the LR's owner decided since the last call (the runner journals them)."""
        notes, self._notes = self._notes, []
        return notes

    @property
    def wants_probe(self) -> bool:
        """True when a policy wants the run's first fit preceded by a probe (lr_find's range test, not yet run).

        The runner tells the trainer so at launch (``$LRSUP_PROBE``).
        """
        return any(getattr(policy, "wants_probe", False) for policy in self.policies)

    # -- feeding -----------------------------------------------------------------------

    def feed(self, record: Record) -> list[Decision]:
        """Give one record to the interested policies; return their decisions.

        Args:
            record: Record. The next record from metrics.jsonl, in order.
        """
        kind = type(record)
        state = self.state
        if kind is BatchRecord and state.pending is None:
            return self._feed_batch(record)  # type: ignore[arg-type]
        self._view_fields = None  # any record but a batch record may change what the view shows
        if kind is CheckpointRecord:
            return self._on_checkpoint(record)  # type: ignore[arg-type]
        if kind is ErrorRecord:
            self._on_error(record)  # type: ignore[arg-type]
            return self._retain_decisions(None, state.step or 0)
        if kind is AckRecord and record.cmd == RollbackCommand.cmd and state.pending is not None:  # type: ignore[attr-defined]
            state.pending = None
        elif state.pending is not None and kind in (BatchRecord, EpochRecord):
            return []  # the abandoned run: see "Rollbacks in flight"
        lr = getattr(record, "lr", None)
        if lr is not None:
            state.lr = float(lr)
        if kind is StartRecord:  # a new fit: nothing carries over from the last one
            state.book.begin_fit(record.fit)  # type: ignore[attr-defined]
            state.lr = None if lr is None else float(lr)
            state.run = {name: getattr(record, name) for name in RUN_FIELDS}
            state.start_step = record.step  # type: ignore[attr-defined]
            state.schedule, state.multiplier, state.pending = None, None, None
            self._metric_check.on_start(record)  # type: ignore[arg-type]
            state.probe_stage(record.probe)  # type: ignore[attr-defined]
        if kind in (StartRecord, BatchRecord, EpochRecord, AckRecord):
            state.step = record.step  # type: ignore[attr-defined]
        epoch, step = getattr(record, "epoch", None), getattr(record, "step", 0)
        if kind is StartRecord:
            self._on_fit_start(record)  # type: ignore[arg-type]
        elif kind is EpochRecord:
            state.book.vouch(record)  # type: ignore[arg-type]
            if record.lr_moved_from is not None:  # type: ignore[attr-defined]
                self._on_lr_moved(record)  # type: ignore[arg-type]
        if self._recheck:
            self._stand_down()
        hooks = self._active_hooks.get(kind)
        decisions: list[Decision] = []
        release = self._release_schedule()
        if hooks or release:
            view = self._view()
            actions = self._ask(hooks, kind, record, view) + release if hooks else release
            if actions:
                lr_before = state.lr
                decisions = compose(state, actions, epoch, step, view.probing or self._probing())
                self._view_fields = None
                self._note_rescues(decisions, lr_before)
        if kind is EpochRecord:
            decisions.extend(Decision(w, None, None, epoch, step) for w in self._metric_check.on_epoch(record))  # type: ignore[arg-type]
        if decisions or kind is not BatchRecord:  # a batch record changes retention only by a decision
            decisions.extend(self._retain_decisions(epoch, step))
        return decisions

    def _feed_batch(self, record: BatchRecord) -> list[Decision]:
        """``feed`` for a batch record outside a rollback: the same steps, minus the tests that cannot apply."""
        state = self.state
        if record.lr is not None:
            state.lr = float(record.lr)
        state.step = record.step
        if self._recheck:
            self._stand_down()
        hooks = self._active_hooks.get(BatchRecord)
        if not hooks:
            return []
        view = self._view()
        actions = self._ask(hooks, BatchRecord, record, view)
        if not actions:
            return []
        lr_before = state.lr
        decisions = compose(state, actions, record.epoch, record.step, view.probing or self._probing())
        self._view_fields = None
        self._note_rescues(decisions, lr_before)
        if decisions:
            decisions.extend(self._retain_decisions(record.epoch, record.step))
        return decisions

    @staticmethod
    def _ask(hooks: Sequence[tuple[Policy, Any]], kind: type, record: Record, view: RunView) -> list[Action]:
        """Every interested policy's actions on ``record``, stamped with the policy's name."""
        actions: list[Action] = []
        for policy, hook in hooks:
            for action in hook(record, view) or ():
                if not isinstance(action, Action):
                    raise TypeError(
                        f"policy {policy.name!r} returned {action!r} from {HOOKS[kind]}; expected Action instances"
                    )
                if not action.policy:
                    action = dataclasses.replace(action, policy=policy.name)
                actions.append(action)
        return actions

    def _view(self) -> RunView:
        # Built once per record on the hot path: filled in directly instead of through the
        # frozen dataclass's __init__ (which sets each field the slow way); still immutable.
        # The fields that change only with a decision or a record other than a batch record
        # (run, checkpoints, schedule, multiplier, cadence, start step) are kept from one view
        # to the next in _view_fields, which ``feed`` clears on such a record and after every
        # decision, and ``_reset_supervision`` on a new or loaded state; lr, step and probing
        # are read afresh.
        state = self.state
        fields = self._view_fields
        if fields is None:
            fields = self._view_fields = {
                **state.run,
                "checkpoints": state.book.infos(),
                "schedule": state.schedule,
                "multiplier": state.multiplier,
                "batch_every": state.cadence["batch_every"],
                "batch_min_interval": state.cadence["batch_min_interval"],
                "start_step": state.start_step,
                "script_lr": state.lr_movers,
            }
        view = object.__new__(RunView)
        values = view.__dict__
        values.update(fields)
        values["lr"] = state.lr
        values["step"] = state.step
        values["probing"] = self._probing()
        return view

    def _probing(self) -> str | None:
        for policy in self._active_probers:
            if policy.probing:
                return policy.name
        return None

    # -- one owner per learning rate ----------------------------------------------------

    def _on_fit_start(self, record: StartRecord) -> None:
        """A new fit: who owns its LR, from what the start record says of the script's LR logic."""
        state = self.state
        if record.fit != state.fit:  # (a probe and the fit it precedes, or a restart of it: one fit)
            state.lr_noted = ()
        state.fit, state.lr_movers = record.fit, ()
        callbacks = tuple(record.lr_callbacks)
        schedule = (f"{record.lr_schedule} (the optimizer's LearningRateSchedule)",) if record.lr_schedule else ()
        if self.lr_owner == "script":
            kept = () if record.lr_callbacks_left_out else callbacks
            self._script_owns(kept + schedule, record, f"at the start of fit {record.fit}")
            return
        self._stand_down()
        if not (callbacks or schedule):
            return
        parts = []
        if callbacks:
            which = ", ".join(callbacks)
            parts.append(
                f"the script's {which} left out of this fit"
                if record.lr_callbacks_left_out
                else f"the script's {which} could not be left out (a CallbackList): two owners of one LR"
            )
        if record.lr_schedule:
            parts.append(f"its {record.lr_schedule} driven through lrsup's multiplier")
        detail = f'fit {record.fit}: lrsup owns the LR ([run] lr_owner = "lrsup"): ' + "; ".join(parts)
        self._note("take_over", "lrsup", callbacks + schedule, (), None, None, record.step, detail)

    def _on_lr_moved(self, record: EpochRecord) -> None:
        """The LR moved during the epoch and lrsup did not move it: something of the script did."""
        state = self.state
        was, now = record.lr_moved_from, record.lr
        moved = f"an LR change lrsup did not command (epoch {record.epoch + 1}: {_lr(was)} -> {_lr(now)})"
        if self.lr_owner == "script":
            if not state.lr_movers:
                self._script_owns((moved,), record, f"from epoch {record.epoch + 1} of fit {state.fit}")
            return
        detail = (
            f'fit {state.fit}: {moved}, though lrsup owns the LR ([run] lr_owner = "lrsup"): a callback of the '
            "script that lrsup cannot leave out assigns the LR; lrsup's policies go on from the LR it set"
        )
        self._note("moved", "lrsup", (moved,), (), now, record.epoch, record.step, detail)

    def _script_owns(self, movers: tuple[str, ...], record: StartRecord | EpochRecord, when: str) -> None:
        """The script's own LR logic keeps the LR from now to the end of the fit: the tuners stand down."""
        self.state.lr_movers = movers
        self._view_fields = None
        self._stand_down()
        if not movers or not self._tuners:
            return
        tuners = tuple(p.name for p in self._tuners)
        rescues = ", ".join(sorted(self._rescuers))
        detail = (
            f"{when}: the script's own LR logic keeps the LR ({', '.join(movers)}): lrsup's "
            f"{', '.join(tuners)} stand{'s' if len(tuners) == 1 else ''} down for this fit"
            + (f"; {rescues} stay{'s' if len(self._rescuers) == 1 else ''} on as a rescue" if rescues else "")
            + ' ([run] lr_owner = "lrsup" lets lrsup take the LR over)'
        )
        self._note("stand_down", "script", movers, tuners, None, getattr(record, "epoch", None), record.step, detail)

    def _release_schedule(self) -> list[Action]:
        """An lrsup schedule still in force when the script took the LR over mid-fit: clear it (the LR stays)."""
        state = self.state
        if not state.lr_movers or state.schedule is None or self._probing() is not None:
            return []
        if "release" in state.lr_noted:
            return []
        state.lr_noted = (*state.lr_noted, "release")
        why = f"the script's own LR logic keeps the LR ({', '.join(state.lr_movers)}): lrsup's schedule stops here"
        return [ClearSchedule(policy=ENGINE, reason=why)]

    def _stand_down(self) -> None:
        """Consult no LR tuner while the script owns the LR; one probing stands down when its probe ends."""
        down: set[int] = set()
        self._recheck = False
        if self.state.lr_movers:
            for policy in self._tuners:
                if policy.probing:
                    self._recheck = True
                else:
                    down.add(id(policy))
        if not down:
            self._active_hooks, self._active_probers = self._hooks, self._probers
            return
        self._active_hooks = {
            kind: tuple(h for h in hooks if id(h[0]) not in down) for kind, hooks in self._hooks.items()
        }
        self._active_probers = tuple(p for p in self._probers if id(p) not in down)

    def _note_rescues(self, decisions: list[Decision], lr_before: float | None) -> None:
        """While the script owns the LR: say what LR a rescue restores (the script's, cut)."""
        movers = self.state.lr_movers
        if not movers:
            return
        for d in decisions:
            if d.command is None or d.lr is None or d.action.policy not in self._rescuers:
                continue
            factor = getattr(d.action, "lr_factor", None)
            if factor:
                self.state.lr_rescue = (d.lr / factor, d.lr)
            cut = f" cut x{d.lr / lr_before:.3g}" if lr_before else ""
            detail = (
                f"fit {self.state.fit}: {d.action.policy}'s {d.action.kind} restores LR {_lr(d.lr)}: the script's "
                f"LR {_lr(lr_before)}{cut}; the script's {', '.join(movers)} goes on from there"
            )
            self._note("rescue", "script", movers, (d.action.policy,), d.lr, d.epoch, d.step, detail)

    def _note(
        self,
        event: str,
        owner: str,
        movers: tuple[str, ...],
        policies: tuple[str, ...],
        lr: float | None,
        epoch: int | None,
        step: int | None,
        detail: str,
    ) -> None:
        """One lr_owner journal entry; ``stand_down``, ``take_over`` and ``moved`` once per fit."""
        state = self.state
        if event != "rescue":
            if event in state.lr_noted:
                return
            state.lr_noted = (*state.lr_noted, event)
        self._notes.append(LrOwnerEntry(event, owner, state.fit, movers, policies, lr, epoch, step, detail))

    # -- checkpoints -------------------------------------------------------------------

    def keep(self, owner: str, names: Sequence[str]) -> list[Decision]:
        """Retain ``names`` for ``owner``, not a policy (a PBT donation), until replaced; ``()`` releases them.

        Returns the retain decision when what is retained changed (the caller sends it).
        """
        if names:
            self.state.keeps[owner] = tuple(names)
        else:
            self.state.keeps.pop(owner, None)
        return self._retain_decisions(None, self.state.step or 0)

    def _on_checkpoint(self, record: CheckpointRecord) -> list[Decision]:
        state = self.state
        if state.pending is not None and record.step > state.pending.step:
            return []  # taken in the run being abandoned
        state.book.add(record, lr=state.lr, multiplier=state.multiplier, start=record.step == state.start_step)
        if state.probe_checkpoints is not None:
            state.probe_checkpoints.append(record.name)
        return self._retain_decisions(record.epoch, record.step)

    def _on_error(self, record: ErrorRecord) -> None:
        state = self.state
        if record.cmd == RollbackCommand.cmd and state.pending is not None:
            # The trainer could not restore it: never try that checkpoint again.
            state.book.drop(state.pending.checkpoint)
            state.pending = None
        elif record.cmd in (SetScheduleCommand.cmd, ClearScheduleCommand.cmd):
            state.schedule, state.multiplier = state.schedule_before

    def _retain_decisions(self, epoch: int | None, step: int) -> list[Decision]:
        parts = self.state.retention()
        names = retained_names(parts)
        if names == self.state.retained:
            return []
        self.state.retained = names
        action = Retain(keep=names, policy=ENGINE, reason=retention_reason(parts))
        return [Decision(action, RetainCommand(names), None, epoch, step)]

    # -- state -------------------------------------------------------------------------

    def _keys(self) -> list[str]:
        return [f"{index}:{policy.name}" for index, policy in enumerate(self.policies)]

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state: the engine's LR, run info and supervision (checkpoints, schedule...), and each policy's."""
        own = self.state.state_dict()
        policies = {key: policy.state_dict() for key, policy in zip(self._keys(), self.policies)}
        supervision = {**own["supervision"], "metric_check": self._metric_check.state()}
        return {"lr": own["lr"], "run": own["run"], "policies": policies, "supervision": supervision}

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
        if not isinstance(run, dict) or set(run) != set(RUN_FIELDS):
            raise ValueError(f"engine state: run must have keys {sorted(RUN_FIELDS)}; got {run!r}")
        lr = state["lr"]
        if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool)):
            raise ValueError(f"engine state: lr must be a number or None; got {lr!r}")
        supervision = state.get("supervision")
        if supervision is not None and not isinstance(supervision, dict):
            raise ValueError(f"engine state: supervision must be an object; got {supervision!r}")
        for key, policy in zip(keys, self.policies):
            policy.load_state_dict(saved[key])
        self._view_fields = None
        self.state.load_state_dict(state)
        self._metric_check.load((supervision or {}).get("metric_check"))
        self._stand_down()
