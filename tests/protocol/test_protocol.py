"""The protocol's checkpoint record and its checkpoint, rollback, schedule, retain and configure commands."""

from __future__ import annotations

import math

import pytest

from lrsup.supervisor.protocol.wire import (
    RECORD_TYPES,
    CheckpointRecord,
    ProtocolError,
    dumps,
    is_checkpoint_name,
    loads,
    make_command,
    parse_record,
    validate_command,
)

SHA = "ab" * 32


def checkpoint_line(**fields):
    obj = {
        "v": 1,
        "type": "checkpoint",
        "time": 1.0,
        "name": "epoch-0003",
        "epoch": 2,
        "step": 300,
        "lr": 0.01,
        "multiplier": None,
        "file": "checkpoints/epoch-0003.keras",
        "sha256": SHA,
        **fields,
    }
    return dumps({k: v for k, v in obj.items() if v is not ...})


def test_checkpoint_record_round_trips():
    record = parse_record(loads(checkpoint_line()))
    assert record == CheckpointRecord(
        time=1.0,
        name="epoch-0003",
        epoch=2,
        step=300,
        lr=0.01,
        multiplier=None,
        file="checkpoints/epoch-0003.keras",
        sha256=SHA,
    )
    assert RECORD_TYPES["checkpoint"] is CheckpointRecord
    assert parse_record(loads(dumps(record.to_json()))) == record
    minimal = parse_record(loads(checkpoint_line(epoch=..., lr=..., multiplier=..., time=...)))
    assert (minimal.epoch, minimal.lr, minimal.multiplier) == (None, None, None)


@pytest.mark.parametrize(
    "fields, text",
    [
        ({"name": "../x"}, "invalid name '../x'"),
        ({"name": ".hidden"}, "invalid name '.hidden'"),
        ({"name": "a" * 101}, "invalid name"),
        ({"file": "/etc/passwd"}, "file must be a path inside the run directory, got '/etc/passwd'"),
        ({"file": "checkpoints/../../x"}, "file must be a path inside the run directory"),
        ({"file": ""}, "file must be a path inside the run directory"),
        ({"sha256": "XYZ"}, "sha256 must be 64 lower-case hex digits, got 'XYZ'"),
        ({"step": -1}, "step must be >= 0, got -1"),
        ({"step": 1.5}, "field 'step' has invalid value 1.5"),
        ({"sha256": ...}, "missing field 'sha256'"),
        ({"extra": 1}, "unknown field(s) ['extra']"),
    ],
)
def test_bad_checkpoint_records_are_refused(fields, text):
    with pytest.raises(
        ProtocolError,
        match=text.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]").replace(".", r"\."),
    ):
        parse_record(loads(checkpoint_line(**fields)))


def test_checkpoint_names():
    assert is_checkpoint_name("start-0") and is_checkpoint_name("lr_find-120") and is_checkpoint_name("A.b_c-9")
    assert not any(is_checkpoint_name(n) for n in ("", "-x", ".x", "a/b", "a b", "é", None, 3))


@pytest.mark.parametrize(
    "cmd, args",
    [
        ("checkpoint", {}),
        ("checkpoint", {"name": "manual-1"}),
        ("rollback", {"checkpoint": "epoch-0003"}),
        ("rollback", {"checkpoint": "epoch-0003", "lr": 0.005, "skip_batches": 200}),
        ("set_schedule", {"schedule": {"kind": "cosine_decay", "initial_learning_rate": 0.1, "decay_steps": 100}}),
        ("clear_schedule", {}),
        ("retain", {"keep": []}),
        ("retain", {"keep": ["epoch-0003", "start-0"]}),
        ("configure", {"batch_every": 1}),
        ("configure", {"checkpoint_every_epochs": 0, "checkpoint_every_steps": 500}),
        ("configure", {"batch_every": 1, "batch_min_interval": 0.0}),
        ("configure", {"batch_min_interval": 0.25}),
    ],
)
def test_new_commands_are_valid(cmd, args):
    obj = make_command(3, cmd, time=2.0, reason="why", **args)
    assert obj == {"v": 1, "seq": 3, "cmd": cmd, "time": 2.0, "reason": "why", **args}
    validate_command(loads(dumps(obj)))


@pytest.mark.parametrize(
    "cmd, args, text",
    [
        ("checkpoint", {"name": "a/b"}, "checkpoint command: invalid name 'a/b'"),
        ("rollback", {}, "rollback command: missing field 'checkpoint'"),
        ("rollback", {"checkpoint": "x", "lr": math.nan}, "rollback command: lr must be finite and >= 0, got nan"),
        ("rollback", {"checkpoint": "x", "lr": -1.0}, "rollback command: lr must be finite and >= 0, got -1.0"),
        ("rollback", {"checkpoint": "x", "skip_batches": -3}, "skip_batches must be >= 0, got -3"),
        ("rollback", {"checkpoint": "x", "skip_batches": 1.0}, "field 'skip_batches' has invalid value 1.0"),
        ("rollback", {"checkpoint": ".."}, "invalid checkpoint name '..'"),
        (
            "set_schedule",
            {"schedule": {"kind": "linear"}},
            "set_schedule command: invalid schedule: unknown schedule kind 'linear'",
        ),
        ("set_schedule", {"schedule": None}, "field 'schedule' has invalid value None"),
        ("clear_schedule", {"schedule": {}}, "unknown field(s) ['schedule']"),
        ("retain", {"keep": "epoch-1"}, "field 'keep' has invalid value 'epoch-1'"),
        ("retain", {"keep": [1]}, "field 'keep' has invalid value [1]"),
        ("retain", {"keep": ["ok", "../no"]}, "retain command: invalid checkpoint name(s) ['../no']"),
        ("configure", {}, "configure command: give at least one of batch_every"),
        ("configure", {"batch_every": 0}, "batch_every must be an integer >= 1, got 0"),
        (
            "configure",
            {"checkpoint_every_steps": -1},
            "checkpoint_every_steps must be an integer >= 0 (0: off), got -1",
        ),
        ("configure", {"keep_last": 2}, "unknown field(s) ['keep_last']"),
        (
            "configure",
            {"batch_min_interval": -0.1},
            "batch_min_interval must be a number of seconds >= 0 and <= 9.223e+09 (0: no minimum), got -0.1",
        ),
        (
            "configure",
            {"batch_min_interval": math.inf},
            "batch_min_interval must be a number of seconds >= 0 and <= 9.223e+09 (0: no minimum), got inf",
        ),
        ("configure", {"batch_min_interval": "1s"}, "field 'batch_min_interval' has invalid value '1s'"),
    ],
)
def test_bad_new_commands_are_refused(cmd, args, text):
    obj = {"v": 1, "seq": 1, "cmd": cmd, "time": 0.0, **args}
    with pytest.raises(ProtocolError) as info:
        validate_command(obj)
    assert text in str(info.value)
