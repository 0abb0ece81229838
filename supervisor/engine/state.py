"""The decision engine's state: one dataclass that the engine feeds and the composition rules change.

:class:`EngineState` holds what the engine knows of the run (the effective LR, the step,
the run's optimizer fields) and of its supervision (checkpoints, a rollback in flight,
lrsup's schedule and multiplier, the agent's cadence, what is retained, the exit
status). :meth:`EngineState.state_dict` and :meth:`EngineState.load_state_dict` give its
JSON form: the ``lr``, ``run`` and ``supervision`` keys of the engine's snapshot
(:meth:`~lrsup.supervisor.engine.core.Engine.state_dict` adds each policy's).

Example::

    state = EngineState(CheckpointBook(Monitor("val_loss")), initial_cadence)
    state.lr = 0.01
    saved = state.state_dict()
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from lrsup.supervisor.engine.checkpoint_book import CheckpointBook, RetentionPart, retained_names
from lrsup.supervisor.protocol.wire import CADENCE_FIELDS

# The start record's fields the engine keeps for the policies' view.
RUN_FIELDS = ("optimizer", "optimizer_config", "steps_per_epoch", "epochs")


@dataclass(frozen=True)
class PendingRollback:
    """A rollback decided and not yet acknowledged: its target checkpoint and step, and where it was decided."""

    checkpoint: str
    step: int
    decided_at: int

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "step": self.step, "decided_at": self.decided_at}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "PendingRollback":
        return cls(obj["checkpoint"], obj["step"], obj["decided_at"])


@dataclass
class EngineState:
    """What the engine knows; changed by :meth:`~lrsup.supervisor.engine.core.Engine.feed` and the composition rules.

    Args:
        book: CheckpointBook. The checkpoints (known good, best, retention); reset with the supervision.
        initial_cadence: dict. The agent's cadence at start (its config.json): what ``cadence``
            starts from, and what a snapshot without ``batch_min_interval`` takes it from.
    """

    book: CheckpointBook
    initial_cadence: dict[str, Any]
    lr: float | None = None  # the effective LR
    run: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(RUN_FIELDS))
    # The supervision: reset by reset_supervision().
    step: int | None = None
    start_step: int = 0
    pending: PendingRollback | None = None
    schedule: dict | None = None  # lrsup's schedule in force
    multiplier: float | None = None  # lrsup's multiplier while a schedule is in force
    schedule_before: tuple[dict | None, float | None] = (None, None)  # restored if the trainer refuses a change
    cadence: dict[str, Any] = field(default_factory=dict)
    keeps: dict[str, tuple[str, ...]] = field(default_factory=dict)  # each policy's Keep
    retained: tuple[str, ...] = ()  # what the last retain command kept
    exit_status: int | None = None
    # One owner per learning rate (issue 13), per fit: the start record's ``fit``, what of the
    # script moves the LR while the script owns it (RunView.script_lr; empty: lrsup alone), and
    # the journal's lr_owner events already written for this fit (each once). The checkpoint
    # book keeps the same fit as its stage (``book.fit``, 1 before any start record).
    fit: int | None = None
    lr_movers: tuple[str, ...] = ()
    lr_noted: tuple[str, ...] = ()
    lr_rescue: tuple[float, float] | None = None  # the last rescue's (base LR, LR sent) while the script owns the LR
    probe_checkpoints: list[str] | None = None  # inside a probe: the checkpoints taken in it, else None

    def __post_init__(self) -> None:
        self.cadence = dict(self.initial_cadence)

    def reset_supervision(self) -> None:
        """Forget the supervision (a new engine, or a state about to be loaded); ``lr`` and ``run`` stay."""
        self.step = None
        self.start_step = 0
        self.book.reset()
        self.pending = None
        self.schedule = None
        self.multiplier = None
        self.schedule_before = (None, None)
        self.cadence = dict(self.initial_cadence)
        self.keeps = {}
        self.retained = ()
        self.exit_status = None
        self.fit = None
        self.lr_movers = ()
        self.lr_noted = ()
        self.lr_rescue = None
        self.probe_checkpoints = None

    def script_lr_base(self) -> float | None:
        """While the script owns the LR: the LR a rescue's ``lr_factor`` cuts (None: the checkpoint's).

        The script's LR now; but where it is still the LR the last rescue set, that rescue's
        base, so that a repeated rescue compounds its cut from the same LR as divergence's
        rule does, and not twice.
        """
        if not self.lr_movers or self.lr is None:
            return None
        rescue = self.lr_rescue
        if rescue is not None and math.isclose(self.lr, rescue[1], rel_tol=1e-5):
            return rescue[0]
        return self.lr

    def probe_stage(self, probe: bool) -> None:
        """A start record: a probe begins (``probe``), or a fit, which forgets the checkpoints of a probe before it."""
        for name in self.probe_checkpoints or ():
            self.book.drop(name)
        self.probe_checkpoints = [] if probe else None

    # -- retention ---------------------------------------------------------------------

    def retention(self) -> list[RetentionPart]:
        """Why each checkpoint is to be kept (see :mod:`~lrsup.supervisor.engine.checkpoint_book`)."""
        return self.book.retention(None if self.pending is None else self.pending.checkpoint, self.keeps)

    def retain_set(self) -> tuple[str, ...]:
        """The names of the checkpoints to keep."""
        return retained_names(self.retention())

    # -- JSON form ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe: ``lr``, ``run`` and ``supervision`` (the engine's snapshot, less the policies)."""
        return {
            "lr": self.lr,
            "run": dict(self.run),
            "supervision": {
                "step": self.step,
                "start_step": self.start_step,
                "checkpoints": self.book.state(),
                "last_epoch": self.book.last_epoch,
                "pending": None if self.pending is None else self.pending.to_json(),
                "schedule": self.schedule,
                "multiplier": self.multiplier,
                "schedule_before": list(self.schedule_before),
                "cadence": dict(self.cadence),
                "keeps": {k: list(v) for k, v in self.keeps.items()},
                "retained": list(self.retained),
                "exit_status": self.exit_status,
                "fit": self.fit,
                "lr_movers": list(self.lr_movers),
                "lr_noted": list(self.lr_noted),
                "lr_rescue": None if self.lr_rescue is None else list(self.lr_rescue),
                "probe_checkpoints": self.probe_checkpoints,
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` (checked by the engine); no ``supervision`` starts that part afresh.

        Raises:
            ValueError: the supervision is malformed (the supervision is then reset).
        """
        lr = state["lr"]
        self.lr = None if lr is None else float(lr)
        self.run = dict(state["run"])
        self.reset_supervision()
        supervision = state.get("supervision")
        if supervision:
            try:
                self._load_supervision(supervision)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                self.reset_supervision()
                raise ValueError(f"engine state: malformed supervision: {exc!r}") from None

    def _load_supervision(self, s: Mapping[str, Any]) -> None:
        self.step = s["step"]
        self.start_step = int(s["start_step"])
        # The book's stage is the current fit (None before any start record; a state from before stages: 1).
        self.book.load(s["checkpoints"], s["last_epoch"], s.get("fit") or 1)
        self.pending = None if s["pending"] is None else PendingRollback.from_json(s["pending"])
        self.schedule = s["schedule"]
        self.multiplier = s["multiplier"]
        before = s["schedule_before"]
        self.schedule_before = (before[0], before[1])
        cadence = dict(s["cadence"])
        # a snapshot from before batch_min_interval: the run's configured value
        cadence.setdefault("batch_min_interval", self.initial_cadence["batch_min_interval"])
        if set(cadence) != set(CADENCE_FIELDS):
            raise ValueError(f"cadence must have keys {sorted(CADENCE_FIELDS)}; got {sorted(cadence)}")
        self.cadence = cadence
        self.keeps = {k: tuple(v) for k, v in s["keeps"].items()}
        self.retained = tuple(s["retained"])
        self.exit_status = s["exit_status"]
        # (a snapshot from before the one-owner rule has none of these: none known yet)
        self.fit = s.get("fit")
        self.lr_movers = tuple(s.get("lr_movers") or ())
        self.lr_noted = tuple(s.get("lr_noted") or ())
        rescue = s.get("lr_rescue")
        self.lr_rescue = None if rescue is None else (float(rescue[0]), float(rescue[1]))
        probe = s.get("probe_checkpoints")  # absent before probes
        self.probe_checkpoints = None if probe is None else [str(name) for name in probe]
