"""Commands (supervisor -> trainer, ``control.jsonl``) as types: one frozen dataclass per ``cmd``.

The supervisor builds commands as these types (the engine's decisions, the runner's
verdicts, an operator's override) and writes them through :func:`encode_command`, which
adds the common fields (``v``, ``seq``, ``cmd``, ``time``, ``reason``) and validates the
line; :func:`decode_command` reads one back. The line format is
:data:`~lrsup.supervisor.protocol.wire.COMMAND_SPECS` (docs/protocol.md, Commands):
the encoding keeps it byte for byte (fields in the order below, an optional field that
is None left out).

Example::

    obj = encode_command(SetLRCommand(0.005), seq=4, time=1790000000.0, reason="plateau")
    # {"v": 1, "seq": 4, "cmd": "set_lr", "time": 1790000000.0, "lr": 0.005, "reason": "plateau"}
    line = decode_command(obj)  # CommandLine(seq=4, time=..., command=SetLRCommand(lr=0.005), reason="plateau")
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping, Union

from lrsup.supervisor.protocol.wire import PROTOCOL_VERSION, is_valid_lr, validate_command

__all__ = [
    "COMMAND_TYPES",
    "CheckpointCommand",
    "ClearScheduleCommand",
    "Command",
    "CommandLine",
    "ConfigureCommand",
    "RetainCommand",
    "RollbackCommand",
    "ScaleLRCommand",
    "SetHparamCommand",
    "SetLRCommand",
    "SetScheduleCommand",
    "StopCommand",
    "VerdictCommand",
    "decode_command",
    "encode_command",
    "is_valid_lr",
]


@dataclass(frozen=True)
class _Command:
    """Base of the command types: ``cmd`` is the wire name; the fields are the command's own."""

    cmd: ClassVar[str] = ""
    # Fields left out of the line when None.
    _optional: ClassVar[frozenset[str]] = frozenset()

    def args(self) -> dict[str, Any]:
        """The command's own fields as on the line (an optional one that is None left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in self._optional:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class SetLRCommand(_Command):
    """Set the effective LR (under a schedule, lrsup's multiplier becomes ``lr / schedule(step)``)."""

    cmd: ClassVar[str] = "set_lr"
    lr: float


@dataclass(frozen=True)
class ScaleLRCommand(_Command):
    """Multiply the effective LR (under a schedule: the multiplier) by ``factor``."""

    cmd: ClassVar[str] = "scale_lr"
    factor: float


@dataclass(frozen=True)
class SetHparamCommand(_Command):
    """Set another optimizer hyperparameter (``momentum``, ``weight_decay``, ``beta_1``, ...)."""

    cmd: ClassVar[str] = "set_hparam"
    name: str
    value: float


@dataclass(frozen=True)
class StopCommand(_Command):
    """Finish the current epoch, then end ``fit`` cleanly."""

    cmd: ClassVar[str] = "stop"


@dataclass(frozen=True)
class VerdictCommand(_Command):
    """The supervisor has decided all it will on epoch ``epoch``'s record: the trainer may go on."""

    cmd: ClassVar[str] = "verdict"
    epoch: int


@dataclass(frozen=True)
class CheckpointCommand(_Command):
    """Save a checkpoint now (``name``: the agent picks one when None)."""

    cmd: ClassVar[str] = "checkpoint"
    _optional: ClassVar[frozenset[str]] = frozenset({"name"})
    name: str | None = None


@dataclass(frozen=True)
class RollbackCommand(_Command):
    """Restore weights and optimizer state from ``checkpoint``, skip ``skip_batches``, then set ``lr`` if given."""

    cmd: ClassVar[str] = "rollback"
    _optional: ClassVar[frozenset[str]] = frozenset({"lr", "from_run"})
    checkpoint: str
    skip_batches: int = 0
    lr: float | None = None
    from_run: str | None = None  # PBT: an absolute run directory of the population whose manifest holds it


@dataclass(frozen=True)
class SetScheduleCommand(_Command):
    """Drive the LR by a schedule spec (:mod:`lrsup.supervisor.protocol.schedules`) times lrsup's multiplier."""

    cmd: ClassVar[str] = "set_schedule"
    schedule: Mapping[str, Any]


@dataclass(frozen=True)
class ClearScheduleCommand(_Command):
    """Drop lrsup's schedule; the effective LR stays where it is."""

    cmd: ClassVar[str] = "clear_schedule"


@dataclass(frozen=True)
class RetainCommand(_Command):
    """The checkpoints the agent must not delete (replaces the previous list)."""

    cmd: ClassVar[str] = "retain"
    keep: tuple[str, ...]


@dataclass(frozen=True)
class ConfigureCommand(_Command):
    """Change the agent's cadence; only the settings given (not None) change (0: off)."""

    cmd: ClassVar[str] = "configure"
    _optional: ClassVar[frozenset[str]] = frozenset(
        {"batch_every", "batch_min_interval", "checkpoint_every_epochs", "checkpoint_every_steps"}
    )
    batch_every: int | None = None
    batch_min_interval: float | None = None
    checkpoint_every_epochs: int | None = None
    checkpoint_every_steps: int | None = None


Command = Union[
    SetLRCommand,
    ScaleLRCommand,
    SetHparamCommand,
    StopCommand,
    VerdictCommand,
    CheckpointCommand,
    RollbackCommand,
    SetScheduleCommand,
    ClearScheduleCommand,
    RetainCommand,
    ConfigureCommand,
]

COMMAND_TYPES: dict[str, type] = {
    cls.cmd: cls
    for cls in (
        SetLRCommand,
        ScaleLRCommand,
        SetHparamCommand,
        StopCommand,
        VerdictCommand,
        CheckpointCommand,
        RollbackCommand,
        SetScheduleCommand,
        ClearScheduleCommand,
        RetainCommand,
        ConfigureCommand,
    )
}


@dataclass(frozen=True)
class CommandLine:
    """One line of control.jsonl: the command and its common fields."""

    seq: int
    time: float
    command: Command
    reason: str | None = None


def encode_command(command: Command, *, seq: int, time: float, reason: str | None = None) -> dict[str, Any]:
    """The object of one control.jsonl line, validated (ProtocolError if it is not a valid command)."""
    obj = {"v": PROTOCOL_VERSION, "seq": seq, "cmd": command.cmd, "time": time, **command.args()}
    if reason is not None:
        obj["reason"] = reason
    validate_command(obj)
    return obj


def decode_command(obj: Mapping[str, Any]) -> CommandLine:
    """The command of one decoded control.jsonl line (ProtocolError if it is not a valid command)."""
    validate_command(obj)
    cls = COMMAND_TYPES[obj["cmd"]]
    own = {f.name for f in fields(cls)}
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in obj.items() if k in own}
    return CommandLine(obj["seq"], obj.get("time", 0.0), cls(**args), obj.get("reason"))
