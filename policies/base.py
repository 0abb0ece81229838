"""The policy interface: records in, typed actions out.

A policy is pure: no IO, no clock, no keras. It sees the trainer's records in
order through no-op hooks (override the ones you need; the engine never calls a
hook a policy did not override) and returns actions, each with its reason. Its
settings are a pydantic model with unknown keys forbidden; its state is a JSON-safe
dict so that a supervisor can be resumed.

Example::

    class HalveEveryTen(Policy):
        name = "halve_every_ten"

        def on_epoch(self, record, run):
            if record.epoch % 10 == 9:
                return [ScaleLR(factor=0.5, reason=f"epoch {record.epoch + 1} is a multiple of 10")]
            return []
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict

from lrsup.policies.actions import Action
from lrsup.supervisor.protocol import BatchRecord, EndRecord, EpochRecord, StartRecord


class PolicySettings(BaseModel):
    """Base of every policy's settings: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class RunView:
    """What the engine tells a policy about the run besides the record itself.

    Args:
        lr: the effective learning rate now, after every change decided so far.
        optimizer: the optimizer's class name from the start record (e.g. ``"SGD"``).
        optimizer_config: the optimizer's ``get_config()`` from the start record.
        steps_per_epoch: batches per epoch when Keras knows it.
        epochs: the epoch budget ``fit`` was called with.
    """

    lr: float | None = None
    optimizer: str | None = None
    optimizer_config: dict | None = None
    steps_per_epoch: int | None = None
    epochs: int | None = None


class Policy:
    """Base class of all policies. Subclasses set ``name`` and ``Settings``."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type[PolicySettings]] = PolicySettings

    def __init__(self, settings: PolicySettings | None = None, **kwargs: Any) -> None:
        if settings is not None and kwargs:
            raise TypeError("pass either a settings object or keyword settings, not both")
        self.settings = settings if settings is not None else self.Settings(**kwargs)
        self.reset()

    def reset(self) -> None:
        """Set every piece of per-run state to its initial value."""

    # Hooks: each returns the actions decided on that record (possibly none).
    def on_start(self, record: StartRecord, run: RunView) -> Sequence[Action]:
        return ()

    def on_batch(self, record: BatchRecord, run: RunView) -> Sequence[Action]:
        return ()

    def on_epoch(self, record: EpochRecord, run: RunView) -> Sequence[Action]:
        return ()

    def on_end(self, record: EndRecord, run: RunView) -> Sequence[Action]:
        return ()

    # State contract: JSON-safe, enough to continue exactly where it stopped.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"policy {self.name!r} keeps no state but was given {sorted(state)}")

    @classmethod
    def overrides(cls, hook: str) -> bool:
        """True when ``cls`` overrides ``hook``: the engine skips the hooks it does not."""
        return getattr(cls, hook) is not getattr(Policy, hook)
