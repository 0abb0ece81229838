"""The decision engine: feeds records to a stack of policies and turns their actions into decisions.

Pure: no IO, no clock. The runner writes each decision's ``command`` to
control.jsonl (assigning ``seq``) and every decision, suppressed ones included, to
journal.jsonl.

Dispatch: for each record type the engine lists, once at construction, the policies
that override that type's hook (StartRecord -> ``on_start``, BatchRecord ->
``on_batch``, EpochRecord -> ``on_epoch``, EndRecord -> ``on_end``); other records
(heartbeat, ack, error) reach no policy. A record with no interested policy costs a
dict look-up and the LR update.

Effective LR: ``engine.lr`` is set by each start record's ``lr`` (None if it has
none), replaced by every later record's ``lr`` when present (batch, epoch, ack), and
updated right after each decision that changes it, before the trainer acknowledges it.

Composition rules, per record:

1. Every interested policy is called in stack order; all of them see the same
   :class:`RunView` (the run as it was when the record arrived). Actions with an
   empty ``policy`` are stamped with the policy's name.
2. Stop has priority: the first Stop is sent (``{"cmd": "stop"}``); any later Stop is
   suppressed ("another stop (policy X) already decided at step N"), and so is every
   LR change on the same record ("stop (policy X) decided at step N").
3. At most one LR change (SetLR or ScaleLR) per record: the first one in stack order
   that would change the LR wins; later ones are suppressed ("another LR change
   (policy X) already decided at step N").
4. ScaleLR is sent as the concrete ``{"cmd": "set_lr", "lr": max(lr * factor, min_lr)}``
   so that the journal shows the LR. When the engine does not know the LR (no ``lr`` in
   any record yet) it is sent as ``{"cmd": "scale_lr", "factor": f}`` and ``min_lr``
   cannot be enforced.
5. An LR change that would leave the LR as it is (equal in float32, the optimizer's
   precision) is suppressed as "no change (LR already x)" and does not count for rule 3.
   One with an invalid value (negative or non-finite LR, factor <= 0) is suppressed as
   "invalid: ...".
6. At most one SetHparam per hyperparameter name per record (first wins); SetHparam is
   not affected by Stop.
7. An action kind this engine has no command for is suppressed ("unsupported action").

Suppressed decisions have ``command=None`` and ``lr=None``. Decisions come back in
the order the actions were returned.

Example::

    engine = Engine([Plateau(monitor="val_loss", factor=0.5, patience=2)])
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

from lrsup.policies.actions import Action, ScaleLR, SetHparam, SetLR, Stop
from lrsup.policies.base import Policy, RunView
from lrsup.policies.monitor import to_float32
from lrsup.supervisor.protocol import BatchRecord, EndRecord, EpochRecord, Record, StartRecord

# Which hook each record type is dispatched to.
HOOKS: dict[type[Record], str] = {
    StartRecord: "on_start",
    BatchRecord: "on_batch",
    EpochRecord: "on_epoch",
    EndRecord: "on_end",
}

_RUN_FIELDS = ("optimizer", "optimizer_config", "steps_per_epoch", "epochs")


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
    """

    action: Action
    command: dict[str, Any] | None
    lr: float | None
    epoch: int | None
    step: int
    suppressed: str | None = None


class Engine:
    """Runs a stack of policies over the trainer's records.

    Example::

        engine = Engine([Plateau(patience=2)])
        decisions = engine.feed(EpochRecord(epoch=3, step=400, lr=0.01, logs={"val_loss": 0.4}))

    Args:
        policies: sequence of Policy. The stack, in priority order (first wins).
    """

    def __init__(self, policies: Sequence[Policy]) -> None:
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
        self._lr: float | None = None
        self._run: dict[str, Any] = dict.fromkeys(_RUN_FIELDS)

    @property
    def lr(self) -> float | None:
        """The effective learning rate as the engine knows it (None until a record gives it)."""
        return self._lr

    def feed(self, record: Record) -> list[Decision]:
        """Give one record to the interested policies; return their decisions.

        Args:
            record: Record. The next record from metrics.jsonl, in order.
        """
        lr = getattr(record, "lr", None)
        if lr is not None:
            self._lr = float(lr)
        if type(record) is StartRecord:  # a new fit: nothing carries over from the last one
            self._lr = None if lr is None else float(lr)
            self._run = {name: getattr(record, name) for name in _RUN_FIELDS}
        hooks = self._hooks.get(type(record))
        if not hooks:
            return []
        view = RunView(lr=self._lr, **self._run)
        actions: list[Action] = []
        for policy, hook in hooks:
            for action in hook(record, view) or ():
                if not isinstance(action, Action):
                    raise TypeError(
                        f"policy {policy.name!r} returned {action!r} from "
                        f"{HOOKS[type(record)]}; expected Action instances"
                    )
                if not action.policy:
                    action = dataclasses.replace(action, policy=policy.name)
                actions.append(action)
        if not actions:
            return []
        return self._resolve(actions, getattr(record, "epoch", None), getattr(record, "step", 0))

    def _resolve(self, actions: list[Action], epoch: int | None, step: int) -> list[Decision]:
        stop = next((a for a in actions if isinstance(a, Stop)), None)
        lr_winner: Action | None = None
        hparams: dict[str, Action] = {}
        decisions: list[Decision] = []

        def suppress(action: Action, why: str) -> None:
            decisions.append(Decision(action, None, None, epoch, step, why))

        for action in actions:
            if isinstance(action, Stop):
                if action is stop:
                    decisions.append(Decision(action, {"cmd": "stop"}, None, epoch, step))
                else:
                    suppress(action, f"another stop (policy {stop.policy}) already decided at step {step}")
            elif isinstance(action, (SetLR, ScaleLR)):
                if stop is not None:
                    suppress(action, f"stop (policy {stop.policy}) decided at step {step}")
                elif lr_winner is not None:
                    suppress(action, f"another LR change (policy {lr_winner.policy}) already decided at step {step}")
                else:
                    command, target, problem = self._lr_command(action)
                    if problem is not None:
                        suppress(action, problem)
                    else:
                        lr_winner = action
                        if target is not None:
                            self._lr = target
                        decisions.append(Decision(action, command, target, epoch, step))
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
            else:
                suppress(action, f"unsupported action {type(action).__name__} (kind {action.kind!r})")
        return decisions

    def _lr_command(self, action: SetLR | ScaleLR) -> tuple[dict | None, float | None, str | None]:
        """(command, new LR or None, why suppressed or None) for an LR change."""
        current = self._lr
        if isinstance(action, SetLR):
            target = float(action.lr)
            if not (math.isfinite(target) and target >= 0):
                return None, None, f"invalid: lr must be finite and >= 0 (got {action.lr!r})"
        else:
            factor, min_lr = float(action.factor), float(action.min_lr)
            if not (math.isfinite(factor) and factor > 0):
                return None, None, f"invalid: factor must be finite and > 0 (got {action.factor!r})"
            if not (math.isfinite(min_lr) and min_lr >= 0):
                return None, None, f"invalid: min_lr must be finite and >= 0 (got {action.min_lr!r})"
            if current is None:
                return {"cmd": "scale_lr", "factor": factor}, None, None
            target = max(current * factor, min_lr)
        if current is not None and to_float32(target) == to_float32(current):
            return None, None, f"no change (LR already {current:.6g})"
        return {"cmd": "set_lr", "lr": target}, target, None

    # -- state ----------------------------------------------------------------

    def _keys(self) -> list[str]:
        return [f"{index}:{policy.name}" for index, policy in enumerate(self.policies)]

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state: the engine's LR and run info, and each policy's state by position and name."""
        return {
            "lr": self._lr,
            "run": dict(self._run),
            "policies": {key: policy.state_dict() for key, policy in zip(self._keys(), self.policies)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`; the stack must be the same policies in the same order.

        Args:
            state: dict. What :meth:`state_dict` returned (possibly through JSON).

        Raises:
            ValueError: the state is for another stack, or is malformed.
        """
        if not isinstance(state, dict) or set(state) != {"lr", "run", "policies"}:
            got = sorted(state) if isinstance(state, dict) else state
            raise ValueError(f"engine state must have keys ['lr', 'policies', 'run']; got {got!r}")
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
        for key, policy in zip(keys, self.policies):
            policy.load_state_dict(saved[key])
        self._lr = None if lr is None else float(lr)
        self._run = dict(run)
