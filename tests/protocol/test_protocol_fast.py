"""The record fast path and the batched line decoder agree with the checked, line-by-line path.

``parse_fast`` and ``loads_many`` exist only for speed (the supervisor reads every record
through them): they must accept exactly what ``parse_record``'s checks accept, build the
same records, and never lose a good line next to a bad one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrsup.supervisor.protocol import wire as protocol
from lrsup.supervisor.protocol.wire import (
    RECORD_TYPES,
    BatchRecord,
    EpochRecord,
    ProtocolError,
    dumps,
    loads,
    loads_many,
    parse_fast,
    parse_record,
)
from lrsup.supervisor.protocol.wire import _parse_checked as parse_checked

BATCH = {
    "v": 1,
    "type": "batch",
    "time": 5.0,
    "epoch": 0,
    "batch": 9,
    "step": 10,
    "lr": 0.1,
    "logs": {"loss": 0.5, "accuracy": 0.75},
}

# Values of every JSON type and a few Python ones a caller might hand over.
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.just({}),
    st.just({"loss": 1.0}),
    st.just({"loss": "x"}),
    st.just({1: 1.0}),
    st.just({"loss": True}),
    st.just([1.0]),
)


def outcome(fn, obj):
    try:
        return fn(obj)
    except ProtocolError as exc:
        return ("refused", type(exc))


def same(a, b) -> bool:
    """Records equal field by field (NaN equal to NaN), or the same refusal."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        return a == b
    if type(a) is not type(b):
        return False
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if not (x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))):
            return False
    return True


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(sorted(RECORD_TYPES)),
    changes=st.dictionaries(
        st.sampled_from(
            [
                "v",
                "type",
                "time",
                "epoch",
                "batch",
                "step",
                "lr",
                "logs",
                "seq",
                "cmd",
                "late",
                "reason",
                "pid",
                "message",
                "name",
                "extra",
            ]
        ),
        values,
        max_size=4,
    ),
    drop=st.sets(st.sampled_from(["time", "epoch", "batch", "step", "lr", "logs"]), max_size=2),
)
def test_fast_path_accepts_only_what_the_checked_path_accepts(kind, changes, drop):
    obj = {**BATCH, "type": kind, **changes}
    for key in drop:
        obj.pop(key, None)
    fast = parse_fast(dict(obj))
    checked = outcome(parse_checked, dict(obj))
    if fast is not None:
        assert same(fast, checked), (obj, fast, checked)
    assert same(outcome(parse_record, dict(obj)), checked)


def test_fast_path_builds_the_same_frozen_record():
    record = parse_fast(dict(BATCH))
    assert record == BatchRecord(time=5.0, epoch=0, batch=9, step=10, lr=0.1, logs={"loss": 0.5, "accuracy": 0.75})
    assert parse_record(loads(dumps(record.to_json()))) == record
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.lr = 1.0  # type: ignore[misc]
    assert hash(parse_fast({**BATCH, "logs": {}}).time) == hash(5.0)


@pytest.mark.parametrize(
    "obj",
    [
        {**BATCH, "v": True},  # True == 1, but not the version
        {**BATCH, "v": 2},
        {**BATCH, "step": True},  # bool is not an int here
        {**BATCH, "lr": "0.1"},
        {**BATCH, "logs": {"loss": None}},
        {**BATCH, "extra": 1},
        {k: v for k, v in BATCH.items() if k != "lr"},  # a missing optional field: the checked path decides
    ],
)
def test_fast_path_leaves_anything_unusual_to_the_checked_path(obj):
    assert parse_fast(obj) is None


def test_a_missing_optional_field_still_parses_through_the_checked_path():
    obj = {k: v for k, v in BATCH.items() if k != "lr"}
    assert parse_record(obj).lr is None
    epoch = parse_record({"v": 1, "type": "epoch", "epoch": 3, "step": 40})
    assert epoch == EpochRecord(epoch=3, step=40) and epoch.logs == {}


@pytest.fixture(params=["orjson", "json"])
def decoder(request, monkeypatch):
    """``loads_many`` with orjson (skipped where it is not installed), then with the json module alone."""
    if request.param == "orjson":
        pytest.importorskip("orjson")
        assert protocol._orjson_loads() is not None
    else:
        monkeypatch.setattr(protocol, "_orjson_loads", lambda: None)
    return request.param


def strictly_equal(a, b) -> bool:
    """Equal values of the same types (1 is not 1.0), keys in the same order, floats bit for bit (NaN too)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(strictly_equal(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(map(strictly_equal, a, b))
    if type(a) is float:
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    return a == b


lines = st.one_of(
    st.just(dumps(BATCH).encode()),
    st.just(b'{"v":1,"type":"heartbeat","step":3}'),
    st.just(b"{not json"),
    st.just(b"[1, 2]"),
    st.just(b"7"),
    st.just(b'{"a":1},{"b":2}'),
    st.just(b'{"a":NaN}'),
    st.just(b"\xff\xfe"),
    st.just(b'{"a":"\xc3\xa9"}'),
    st.just(b'  {"a": 1}  '),
    # what orjson refuses or reads otherwise: the json module's answer stands
    st.just(b'{"a":Infinity,"b":-Infinity}'),
    st.just(b'{"a":1e400}'),
    st.just(b'{"a":18446744073709551616}'),
    st.just(b'{"a":-9223372036854775809}'),
    st.just(b'{"a":9223372036854775807}'),
    st.just(b'{"a":"\\ud800"}'),
    st.just(b'{"a":"\xed\xa0\x80"}'),
    st.just(b'\xef\xbb\xbf{"a":1}'),
    st.just(b'{"a":0.00012345678901234567}'),
    st.just(b'{"a":"12345678901234567890"}'),
    st.just(b'{"a":1,"a":2}'),
    st.just(b'{"a":-0}'),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(lines, min_size=1, max_size=8))
def test_loads_many_is_loads_line_by_line(decoder, batch):
    expected = [outcome(loads, line) for line in batch]
    got = [("refused", type(x)) if isinstance(x, ProtocolError) else x for x in loads_many(batch)]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g == e if isinstance(e, tuple) else strictly_equal(g, e), (batch, g, e)


# Number literals as a trainer may write them, and some it never would: long integers,
# long fractions, exponents past the float range.
numbers = st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][-+]?[0-9]{1,3})?", fullmatch=True)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            numbers,
            st.integers().map(str),
            st.floats().map(repr).map(lambda r: {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(r, r)),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_loads_many_reads_numbers_as_the_json_module_does(decoder, texts):
    batch = [b'{"v":1,"x":%s,"logs":{"loss":%s}}' % (t.encode(), t.encode()) for t in texts]
    for got, line in zip(loads_many(batch), batch):
        expected = json.loads(line)
        if any(type(v) is int and abs(v) >= protocol.MAX_INT for v in (expected["x"], expected["logs"]["loss"])):
            assert isinstance(got, ProtocolError) and "64 bits" in str(got), (line, got)  # a bounded reader
            continue
        assert strictly_equal(got, expected), (line, got)


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_non_finite_losses_parse_as_line_by_line(decoder, loss):
    bad = {**BATCH, "step": 20, "logs": {"loss": loss, "accuracy": 0.5}}
    epoch = {
        "v": 1,
        "type": "epoch",
        "time": 6.0,
        "epoch": 0,
        "step": 20,
        "lr": 0.1,
        "logs": {"loss": loss, "val_loss": loss},
    }
    batch = [dumps(BATCH).encode(), dumps(bad).encode(), dumps(epoch).encode()]
    got = [parse_record(obj) for obj in loads_many(batch)]
    assert all(same(g, parse_record(loads(line))) for g, line in zip(got, batch))
    assert got[0] == parse_record(dict(BATCH))
    assert strictly_equal(got[1].logs["loss"], loss) and strictly_equal(got[2].logs["val_loss"], loss)


def test_orjson_decodes_unless_a_long_integer_is_there(monkeypatch):
    orjson = pytest.importorskip("orjson")
    calls = []

    def counting(data):
        calls.append(data)
        return orjson.loads(data)

    monkeypatch.setattr(protocol, "_orjson_loads", lambda: counting)
    good = dumps(BATCH).encode()
    assert loads_many([good, good]) == [BATCH, BATCH] and len(calls) == 1
    big = b'{"a":123456789012345678901}'
    assert isinstance(loads_many([good, big])[1], ProtocolError) and len(calls) == 1  # beyond MAX_INT; not asked
    long = b'{"a":1234567890123456789}'  # 19 digits, within 64 bits: read exactly, line by line
    assert loads_many([good, long])[1] == {"a": 1234567890123456789} and len(calls) == 1
    assert loads_many([b'{"a":0.00012345678901234567}'])[0] == {"a": 0.00012345678901234567} and len(calls) == 2


def test_loads_many_of_nothing_and_overlong_lines():
    assert loads_many([]) == []
    huge = b'{"a":"' + b"x" * (1 << 20) + b'"}'
    out = loads_many([b'{"a":1}', huge])
    assert out[0] == {"a": 1} and isinstance(out[1], ProtocolError) and "longer" in str(out[1])
