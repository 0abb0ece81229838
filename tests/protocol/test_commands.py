"""Commands as types: encoded byte for byte as the wire format says, decoded back to the same type."""

from __future__ import annotations

import math

import pytest

from lrsup.supervisor.protocol.commands import (
    COMMAND_TYPES,
    CheckpointCommand,
    ClearScheduleCommand,
    CommandLine,
    ConfigureCommand,
    RetainCommand,
    RollbackCommand,
    ScaleLRCommand,
    SetHparamCommand,
    SetLRCommand,
    SetScheduleCommand,
    StopCommand,
    VerdictCommand,
    decode_command,
    encode_command,
    is_valid_lr,
)
from lrsup.supervisor.protocol.wire import COMMAND_SPECS, ProtocolError, dumps, make_command

SCHEDULE = {"kind": "cosine_decay", "initial_learning_rate": 0.1, "decay_steps": 100}

# Each command type, and the line the supervisor wrote for it before commands were typed.
CASES = [
    (SetLRCommand(0.005), '"lr":0.005'),
    (ScaleLRCommand(0.5), '"factor":0.5'),
    (SetHparamCommand("momentum", 0.9), '"name":"momentum","value":0.9'),
    (StopCommand(), ""),
    (VerdictCommand(-1), '"epoch":-1'),
    (CheckpointCommand(), ""),
    (CheckpointCommand("best"), '"name":"best"'),
    (RollbackCommand("e2", 0), '"checkpoint":"e2","skip_batches":0'),
    (RollbackCommand("e2", 3, 0.025), '"checkpoint":"e2","skip_batches":3,"lr":0.025'),
    (SetScheduleCommand(SCHEDULE), '"schedule":{"kind":"cosine_decay","initial_learning_rate":0.1,"decay_steps":100}'),
    (ClearScheduleCommand(), ""),
    (RetainCommand(("e1", "e2")), '"keep":["e1","e2"]'),
    (ConfigureCommand(batch_every=1, batch_min_interval=0.0), '"batch_every":1,"batch_min_interval":0.0'),
]


@pytest.mark.parametrize(("command", "fields"), CASES, ids=lambda c: repr(c)[:40])
def test_encoded_byte_for_byte_and_decoded_back(command, fields) -> None:
    line = dumps(encode_command(command, seq=7, time=1.5, reason="why"))
    body = f",{fields}" if fields else ""
    assert line == f'{{"v":1,"seq":7,"cmd":"{command.cmd}","time":1.5{body},"reason":"why"}}'
    assert line == dumps(make_command(7, command.cmd, time=1.5, reason="why", **command.args()))
    assert decode_command(encode_command(command, seq=7, time=1.5, reason="why")) == CommandLine(7, 1.5, command, "why")


def test_one_type_per_command_of_the_wire_format() -> None:
    assert set(COMMAND_TYPES) == set(COMMAND_SPECS)
    assert {type(c).cmd for c, _ in CASES} == set(COMMAND_SPECS)


def test_no_reason_no_field() -> None:
    assert "reason" not in encode_command(StopCommand(), seq=1, time=0.0)


@pytest.mark.parametrize(
    "command",
    [SetLRCommand(-1.0), SetLRCommand(math.nan), ScaleLRCommand(0.0), RollbackCommand("../x"), ConfigureCommand()],
    ids=repr,
)
def test_an_invalid_command_is_refused_on_encoding(command) -> None:
    with pytest.raises(ProtocolError):
        encode_command(command, seq=1, time=0.0)


def test_decoding_refuses_what_the_agent_would() -> None:
    with pytest.raises(ProtocolError, match="unknown command"):
        decode_command({"v": 1, "seq": 1, "cmd": "teleport", "time": 0.0})
    with pytest.raises(ProtocolError, match="unknown field"):
        decode_command({"v": 1, "seq": 1, "cmd": "stop", "time": 0.0, "extra": 1})


@pytest.mark.parametrize(("value", "valid"), [(0, True), (0.1, True), (-0.0, True), (-1e-9, False), (True, False)])
def test_one_lr_check(value, valid) -> None:
    assert is_valid_lr(value) is valid
    assert is_valid_lr(math.inf) is False and is_valid_lr("0.1") is False
