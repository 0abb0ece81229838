"""A policy for the reaction benchmark: an LR change on every Nth batch record (the LR alternates up and down)."""

from __future__ import annotations

from lrsup.policies.actions import ScaleLR
from lrsup.policies.base import Policy, PolicySettings


class BatchPokeSettings(PolicySettings):
    every: int = 2


class BatchPoke(Policy):
    """Decides on batch records, so the benchmark can time batch-level reactions."""

    name = "batch_poke"
    Settings = BatchPokeSettings

    def reset(self) -> None:
        self.count = 0

    def on_batch(self, record, run):
        self.count += 1
        if self.count % self.settings.every:
            return []
        factor = 1.25 if (self.count // self.settings.every) % 2 else 0.8
        return [ScaleLR(factor=factor, reason=f"benchmark poke at step {record.step}")]

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = int(state["count"])
