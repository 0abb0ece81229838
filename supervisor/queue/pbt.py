"""Population-based training's decisions over a group's live runs: a pure coordinator.

Asynchronous PBT as Ray Tune's ``PopulationBasedTraining`` does it: a member is looked at when
it reaches a boundary (``interval`` epochs since its last one, after ``burn_in``), against the
latest scores of the others. Live members with a score are ranked; the bottom and top
``ceil(n * quantile)`` of them (at most ``n // 2``) are the quantiles. A member at a boundary in
the bottom quantile **exploits** a top member chosen at random (its latest known-good
checkpoint) and **explores** from the donor's hyperparameters (:func:`explore`, Ray's rules).

What Ray leaves open, decided here:

- **NaN scores are worst** (a NaN member is always in the bottom quantile, never a donor).
- **Ties**: the ranking is by score, then by member order, so it is deterministic; a member
  whose score equals its donor's is left alone (nothing to gain from copying an equal).
- **Dead members** (``alive=False``) are left out of the ranking and of donors until they
  report alive again; their boundary bookkeeping is kept, so a member that rejoins goes on.
- A donor without a checkpoint is not chosen; with no top member that has one, no exploit.
- **Turns** (:meth:`Coordinator.step`): with more members than slots, a member at a boundary
  is **parked** while other members wait (queued, never started, or parked), as Ray's PBT pauses
  a trial at its perturbation when others are pending or paused; at most as many as wait, those
  that keep their own weights first (an exploiting member's supervisor parks it only once the
  exploit's commands have been acknowledged).
  A parked member is still ranked with its last score and may donate: it is alive, its
  supervisor is running. Which parked member goes next is the queue's choice (the one parked
  longest: lrsup.supervisor.queue.daemon).

No IO, no clock: views in, :class:`Exploit` decisions out. Randomness comes from ``seed`` and
the (member, epoch) of the decision, so a coordinator rebuilt from :meth:`state_dict` after its
own death decides exactly as before.

Example::

    coordinator = Coordinator(settings)          # a PopulationSettings ([population])
    for exploit in coordinator.decide(views):    # MemberView per member, from their records
        send the member an ``exploit`` request (lrsup.supervisor.queue.population)
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

STATE_VERSION = 1


@dataclass(frozen=True)
class MemberView:
    """What the coordinator knows of one member now.

    Args:
        name: str, the member's name (unique in the group).
        epochs: int, completed epochs (the last epoch record's index + 1); 0 before the first.
        score: float or None, the metric at that epoch (None: no score yet; NaN allowed).
        checkpoint: str or None, its latest known-good checkpoint (what a donor gives).
        hparams: dict, its current hyperparameters (``lr`` and the mutated ones it has).
        alive: bool, its run is running (False: left out until it rejoins).
        parked: bool, its supervisor waits for its turn with no trainer (still alive and ranked).
        ending: bool, it has run its fit's last epoch: about to end, so neither parked nor made to
            exploit (nothing would be trained from the copy); it is still ranked and may donate.
    """

    name: str
    epochs: int
    score: float | None
    checkpoint: str | None = None
    hparams: Mapping[str, float] = field(default_factory=dict)
    alive: bool = True
    parked: bool = False
    ending: bool = False


@dataclass(frozen=True)
class Round:
    """What one look at the population decided: exploits, and the members to park (turns)."""

    exploits: list["Exploit"]
    parks: list[str]


@dataclass(frozen=True)
class Exploit:
    """``member`` loads ``donor``'s ``checkpoint`` in place, then gets hyperparameters ``new``."""

    member: str
    donor: str
    epoch: int
    checkpoint: str
    score: float | None
    donor_score: float
    old: dict[str, float]
    new: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _key(score: float | None, sign: float) -> float:
    """Higher is better; NaN (and None) are worst."""
    if score is None or math.isnan(score):
        return -math.inf
    return score * sign


def quantiles(views: Sequence[MemberView], quantile: float, mode: str) -> tuple[list[str], list[str]]:
    """(bottom, top) names among the live members with a score, worst first and best first.

    Ray's rule: ``ceil(n * quantile)`` members each, at most ``n // 2``; ties by member order.
    """
    sign = 1.0 if mode == "max" else -1.0
    ranked = [v for v in views if v.alive and v.score is not None]
    order = {v.name: i for i, v in enumerate(views)}
    ranked.sort(key=lambda v: (_key(v.score, sign), -order[v.name]))  # worst first; earlier wins a tie
    n = len(ranked)
    k = min(math.ceil(n * quantile), n // 2)
    return [v.name for v in ranked[:k]], [v.name for v in reversed(ranked[n - k :])] if k else []


def explore(
    hparams: Mapping[str, float],
    mutations: Mapping[str, Any],
    resample_probability: float,
    factors: Sequence[float],
    rng: random.Random,
) -> dict[str, float]:
    """Ray's explore: new hyperparameters from the donor's ``hparams``.

    A list (``values``): resample with ``resample_probability`` (or when the current value is
    not in it), else move to the next lower or higher value. A range (``log_uniform``/``uniform``):
    resample with ``resample_probability`` (or when there is no current value), else multiply
    by one of ``factors``. Keys not in ``mutations`` are kept.
    """
    new = dict(hparams)
    for name, mutation in mutations.items():
        current = hparams.get(name)
        values = getattr(mutation, "values", None)
        if values is not None:
            if current not in values or rng.random() < resample_probability:
                new[name] = float(rng.choice(values))
            else:
                i = values.index(current)
                i = max(0, i - 1) if rng.random() > 0.5 else min(len(values) - 1, i + 1)
                new[name] = float(values[i])
            continue
        if current is None or rng.random() < resample_probability:
            new[name] = _sample(mutation, rng)
        else:
            new[name] = float(current) * rng.choice(list(factors))
    return new


def _sample(mutation: Any, rng: random.Random) -> float:
    if mutation.log_uniform is not None:
        low, high = mutation.log_uniform
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    low, high = mutation.uniform
    return rng.uniform(low, high)


class Coordinator:
    """The population's exploit/explore decisions (see the module docstring).

    Args:
        settings: PopulationSettings (lrsup.supervisor.config): interval, quantile, metric,
            mode, mutations, resample_probability, factors, burn_in, seed.
    """

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.mode = settings.direction
        self._last: dict[str, int] = {}  # the epoch of each member's last boundary
        self.history: list[dict[str, Any]] = []  # every exploit decided, in order

    def due(self, view: MemberView) -> bool:
        """True when ``view`` is at a boundary: alive, running, scored, ``interval`` epochs past its last one."""
        if not view.alive or view.parked or view.score is None or view.epochs < max(self.settings.burn_in, 1):
            return False
        return view.epochs - self._last.get(view.name, 0) >= self.settings.interval

    def decide(self, views: Sequence[MemberView]) -> list[Exploit]:
        """The exploits of the members at a boundary now (each boundary is decided once)."""
        return self.step(views).exploits

    def step(self, views: Sequence[MemberView], queued: int = 0) -> Round:
        """The exploits of the members at a boundary now, and which of them to park.

        ``queued``: the group's members waiting for a slot that never started (no view yet).
        Each boundary is decided once.
        """
        due = [v for v in views if self.due(v)]
        exploits = self._exploits(views, due)
        waiting = queued + sum(1 for v in views if v.alive and v.parked)
        exploited = {e.member for e in exploits}
        # those that keep their weights give way first; an exploiting member's supervisor parks it
        # once its rollback has landed (lrsup.supervisor.run.runner)
        due = [v for v in due if not v.ending]
        order = [v.name for v in due if v.name not in exploited] + [v.name for v in due if v.name in exploited]
        return Round(exploits, order[:waiting])

    def _exploits(self, views: Sequence[MemberView], due: Sequence[MemberView]) -> list[Exploit]:
        by_name = {v.name: v for v in views}
        out: list[Exploit] = []
        for view in due:
            self._last[view.name] = view.epochs
            bottom, top = quantiles(views, self.settings.quantile, self.mode)
            if view.name not in bottom or view.ending:  # at its fit's last epoch a copy would train no more
                continue
            sign = 1.0 if self.mode == "max" else -1.0
            donors = [
                n
                for n in top
                if by_name[n].checkpoint is not None and _key(by_name[n].score, sign) > _key(view.score, sign)
            ]
            if not donors:
                continue
            rng = random.Random(f"{self.settings.seed}:{view.name}:{view.epochs}")
            donor = by_name[rng.choice(donors)]
            s = self.settings
            new = explore(donor.hparams, s.mutations, s.resample_probability, s.factors, rng)
            exploit = Exploit(
                member=view.name,
                donor=donor.name,
                epoch=view.epochs,
                checkpoint=donor.checkpoint,  # type: ignore[arg-type]
                score=view.score,
                donor_score=donor.score,  # type: ignore[arg-type]
                old=dict(view.hparams),
                new=new,
            )
            self.history.append(exploit.to_json())
            out.append(exploit)
        return out

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state: each member's last boundary and the exploits decided."""
        return {"v": STATE_VERSION, "last": dict(self._last), "history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Go on from :meth:`state_dict` (ValueError for another version)."""
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"population state version {state.get('v')!r}, expected {STATE_VERSION}")
        self._last = {str(k): int(v) for k, v in state.get("last", {}).items()}
        self.history = list(state.get("history", []))
