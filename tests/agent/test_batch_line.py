"""``batch_line`` (the agent's hand-made batch record line) against the protocol's own encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrsup.supervisor.agent.records import _TEMPLATES, batch_line
from lrsup.supervisor.protocol.wire import BatchRecord, dumps, loads, parse_record

floats = st.floats(allow_nan=True, allow_infinity=True)
names = st.text(min_size=0, max_size=12)  # quotes, backslashes, %, control and non-ASCII characters included
ints = st.integers(min_value=0, max_value=2**62)


def reference(time, epoch, batch, step, lr, logs) -> bytes:
    record = BatchRecord(time=time, epoch=epoch, batch=batch, step=step, lr=lr, logs=logs)
    return (dumps(record.to_json()) + "\n").encode()


@settings(max_examples=400, deadline=None)
@given(floats, ints, ints, ints, st.one_of(st.none(), floats), st.dictionaries(names, floats, max_size=6))
def test_batch_line_is_byte_for_byte_the_protocol_encoding(time, epoch, batch, step, lr, logs):
    assert batch_line(time, epoch, batch, step, lr, logs) == reference(time, epoch, batch, step, lr, logs)


@pytest.mark.parametrize("logs", [{"loss": float("nan")}, {"loss": float("inf"), "acc": 0.5}, {"%r%s%%": 1.0}])
def test_non_finite_values_and_percent_signs_round_trip(logs):
    line = batch_line(1.0, 0, 1, 2, float("-inf"), logs)
    record = parse_record(loads(line))
    assert record.step == 2 and record.lr == float("-inf")
    assert list(record.logs) == list(logs)
    assert [repr(v) for v in record.logs.values()] == [repr(v) for v in logs.values()]


def test_templates_are_cached_for_a_bounded_number_of_name_sets():
    for i in range(200):
        batch_line(1.0, 0, 0, 0, 0.1, {f"metric_{i}": 1.0})
    assert len(_TEMPLATES) <= 64
    assert batch_line(1.0, 0, 0, 0, 0.1, {"metric_199": 2.0}) == reference(1.0, 0, 0, 0, 0.1, {"metric_199": 2.0})
