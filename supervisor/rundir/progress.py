"""Where the run is: one :class:`RunProgress`, fed once by the runner's record handler.

The lifecycle (did training start, did this attempt get through an epoch, how did its
fit end), the watchdog (where to re-arm on a reattach), the snapshot (what the records
before its offset said) and ``lrsup resume`` (what to restore instead of replaying) all
read the same object; only the runner feeds it records (``on_record``) and only the
lifecycle marks a new attempt (``new_attempt``).

Example::

    progress = RunProgress()
    for record in records:
        progress.on_record(record)
    progress.started, progress.epoch, progress.lr
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from lrsup.supervisor.protocol.wire import EndRecord, EpochRecord, Record, StartRecord

_COUNTS = ("records", "verdicts", "max_step")


@dataclass
class RunProgress:
    """What the records handled so far told the supervisor, besides the engine's state.

    Args:
        records: int, records handled.
        verdicts: int, start and epoch records (each is answered with one verdict).
        started: bool, a start record came: training began (in any attempt).
        progressed: bool, an epoch record came (in any attempt).
        attempt_progressed: bool, an epoch record came in the current attempt (not a fast failure).
        max_step: int, the highest step seen.
        epoch: int | None, the last epoch record's epoch (0-based, as on the wire).
        end_reason: str | None, the current attempt's last end record's reason.
        lr: float | None, the learning rate as last applied (a record's ``lr``).
        fit: int, the current fit (stage): the last start record's ``fit`` (1 before any).
    """

    records: int = 0
    verdicts: int = 0
    started: bool = False
    progressed: bool = False
    attempt_progressed: bool = False
    max_step: int = 0
    epoch: int | None = None
    end_reason: str | None = None
    lr: float | None = None
    fit: int = 1

    def on_record(self, record: Record) -> None:
        """One record, as the runner handles it (replayed or live)."""
        self.records += 1
        kind = type(record)
        if kind is StartRecord or kind is EpochRecord:
            self.verdicts += 1
            self.started = True
            if kind is StartRecord:
                self.fit = record.fit  # type: ignore[attr-defined]
            if kind is EpochRecord:
                self.progressed = self.attempt_progressed = True
                self.epoch = record.epoch  # type: ignore[attr-defined]
        elif kind is EndRecord:
            self.end_reason = record.reason  # type: ignore[attr-defined]
        lr = getattr(record, "lr", None)
        if isinstance(lr, (int, float)):
            self.lr = float(lr)
        step = getattr(record, "step", 0)
        if isinstance(step, int) and step > self.max_step:
            self.max_step = step

    def new_attempt(self) -> None:
        """A new trainer attempt was spawned: what the last one did no longer counts for it."""
        self.attempt_progressed, self.end_reason = False, None

    def load(self, other: "RunProgress") -> None:
        """Take ``other``'s values (resume: the snapshot's), keeping this object (others hold it)."""
        for field in fields(self):
            setattr(self, field.name, getattr(other, field.name))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> "RunProgress":
        """The progress a snapshot wrote; ValueError naming the bad field."""
        known = {field.name for field in fields(cls)}
        if not isinstance(obj, dict) or not set(obj) <= known or not set(_COUNTS) <= set(obj):
            raise ValueError(f"progress must have keys among {sorted(known)}; got {obj!r}")
        progress = cls(**obj)
        for name in _COUNTS:
            value = getattr(progress, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"progress.{name} must be an integer >= 0; got {value!r}")
        for name in ("started", "progressed", "attempt_progressed"):
            if not isinstance(getattr(progress, name), bool):
                raise ValueError(f"progress.{name} must be true or false")
        if progress.end_reason is not None and not isinstance(progress.end_reason, str):
            raise ValueError(f"progress.end_reason must be a string or null; got {progress.end_reason!r}")
        if progress.epoch is not None and (not isinstance(progress.epoch, int) or isinstance(progress.epoch, bool)):
            raise ValueError(f"progress.epoch must be an integer or null; got {progress.epoch!r}")
        if not isinstance(progress.fit, int) or isinstance(progress.fit, bool) or progress.fit < 1:
            raise ValueError(f"progress.fit must be an integer >= 1; got {progress.fit!r}")
        if progress.lr is not None and (not isinstance(progress.lr, (int, float)) or isinstance(progress.lr, bool)):
            raise ValueError(f"progress.lr must be a number or null; got {progress.lr!r}")
        return progress


__all__ = ["RunProgress"]
