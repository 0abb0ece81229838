"""The record fast path and the batched line decoder agree with the checked, line-by-line path.

``parse_fast`` and ``loads_many`` exist only for speed (the supervisor reads every record
through them): they must accept exactly what ``parse_record``'s checks accept, build the
same records, and never lose a good line next to a bad one.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrsup.supervisor.protocol import (
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
from lrsup.supervisor.protocol import _parse_checked as parse_checked

BATCH = {"v": 1, "type": "batch", "time": 5.0, "epoch": 0, "batch": 9, "step": 10, "lr": 0.1,
         "logs": {"loss": 0.5, "accuracy": 0.75}}

# Values of every JSON type and a few Python ones a caller might hand over.
values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3), st.just({}), st.just({"loss": 1.0}), st.just({"loss": "x"}), st.just({1: 1.0}),
    st.just({"loss": True}), st.just([1.0]),
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
@given(kind=st.sampled_from(sorted(RECORD_TYPES)), changes=st.dictionaries(
    st.sampled_from(["v", "type", "time", "epoch", "batch", "step", "lr", "logs", "seq", "cmd", "late", "reason",
                     "pid", "message", "name", "extra"]), values, max_size=4),
    drop=st.sets(st.sampled_from(["time", "epoch", "batch", "step", "lr", "logs"]), max_size=2))
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


@pytest.mark.parametrize("obj", [
    {**BATCH, "v": True},          # True == 1, but not the version
    {**BATCH, "v": 2},
    {**BATCH, "step": True},       # bool is not an int here
    {**BATCH, "lr": "0.1"},
    {**BATCH, "logs": {"loss": None}},
    {**BATCH, "extra": 1},
    {k: v for k, v in BATCH.items() if k != "lr"},  # a missing optional field: the checked path decides
])
def test_fast_path_leaves_anything_unusual_to_the_checked_path(obj):
    assert parse_fast(obj) is None


def test_a_missing_optional_field_still_parses_through_the_checked_path():
    obj = {k: v for k, v in BATCH.items() if k != "lr"}
    assert parse_record(obj).lr is None
    epoch = parse_record({"v": 1, "type": "epoch", "epoch": 3, "step": 40})
    assert epoch == EpochRecord(epoch=3, step=40) and epoch.logs == {}


lines = st.one_of(
    st.just(dumps(BATCH).encode()), st.just(b'{"v":1,"type":"heartbeat","step":3}'), st.just(b"{not json"),
    st.just(b"[1, 2]"), st.just(b"7"), st.just(b'{"a":1},{"b":2}'), st.just(b'{"a":NaN}'), st.just(b"\xff\xfe"),
    st.just(b'{"a":"\xc3\xa9"}'), st.just(b"  {\"a\": 1}  "),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, min_size=1, max_size=8))
def test_loads_many_is_loads_line_by_line(batch):
    expected = [outcome(loads, line) for line in batch]
    got = [("refused", type(x)) if isinstance(x, ProtocolError) else x for x in loads_many(batch)]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert (g == e) or (isinstance(g, dict) and math.isnan(g.get("a", 0.0)) and math.isnan(e.get("a", 0.0)))


def test_loads_many_of_nothing_and_overlong_lines():
    assert loads_many([]) == []
    huge = b'{"a":"' + b"x" * (1 << 20) + b'"}'
    out = loads_many([b'{"a":1}', huge])
    assert out[0] == {"a": 1} and isinstance(out[1], ProtocolError) and "longer" in str(out[1])
