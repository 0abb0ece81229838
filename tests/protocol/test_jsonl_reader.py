"""The one incremental JSONL reader and the protocol's line bounds: no line raises, each bad one is counted.

A property test throws hostile lines (deep nesting, huge integers, invalid UTF-8, lone
surrogates, over-long lines, random bytes) between valid ones at every reader built on
``JsonlReader``: the supervisor's follower, the operator's request reader, the agent's
command reader, and the offline readers; nothing raises and every hostile line is counted.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrsup.supervisor.agent import Agent
from lrsup.supervisor.history.reader import iter_records
from lrsup.supervisor.history.runs import TailReader
from lrsup.supervisor.protocol.jsonl import JsonlReader, ReadStats, iter_objects
from lrsup.supervisor.protocol.wire import (
    CONTROL_FILE,
    MAX_DEPTH,
    MAX_LINE_BYTES,
    METRICS_FILE,
    HeartbeatRecord,
    ProtocolError,
    dumps,
    loads,
    loads_many,
    make_command,
    parse_record,
)
from lrsup.supervisor.run.follower import Follower
from lrsup.supervisor.run.operator import RequestReader


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


# Lines no reader may accept: each is invalid as a record, a request and a command.
hostile = st.one_of(
    st.integers(MAX_DEPTH + 1, 4000).map(lambda d: b'{"v":1,"type":"heartbeat","step":1,"x":' + nested(d) + b"}"),
    st.integers(MAX_DEPTH + 1, 4000).map(lambda d: b'{"a":' * d + b"1" + b"}" * d),
    st.integers(MAX_DEPTH + 1, 4000).map(lambda d: b"[" * d),
    st.integers(19, 4500).map(lambda n: b'{"v":1,"type":"heartbeat","time":1,"step":9' + b"9" * n + b"}"),
    st.integers(19, 4500).map(lambda n: b'{"v":1,"op":"set_lr","lr":1' + b"0" * n + b',"who":"e@x","time":1}'),
    st.integers(19, 4500).map(lambda n: b'{"v":1,"seq":1,"cmd":"set_lr","time":1,"lr":1' + b"0" * n + b"}"),
    st.binary(min_size=1, max_size=300).map(lambda b: b"\xff" + b.replace(b"\n", b"")),  # never UTF-8
    st.text(min_size=1, max_size=100).map(lambda t: ('{"x":"' + t + '"').encode("utf-8", "surrogatepass")),
    st.just(b'{"v":1,"type":"heartbeat","time":1,"step":1,"x":"\\ud800"}'),
    st.just(b'{"v":1,"type":"heartbeat","time":1,"step":' + b"1" * (MAX_LINE_BYTES + 1) + b"}"),
    st.just(b'{"type":"heartbeat","time":NaN,"step":1,"v":1,"extra":Infinity}'),
)
hostile = hostile.map(lambda line: line.replace(b"\n", b" "))


def good_heartbeat(step: int) -> bytes:
    return dumps(HeartbeatRecord(time=1.0, epoch=0, step=step).to_json()).encode()


def interleave(bad: list[bytes]) -> bytes:
    out = []
    for i, line in enumerate(bad):
        out += [good_heartbeat(i), line]
    return b"\n".join([*out, good_heartbeat(len(bad))]) + b"\n"


HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@HYPOTHESIS
@given(st.lists(hostile, min_size=1, max_size=6))
def test_no_hostile_line_raises_from_any_supervisor_reader(tmp_path_factory, bad):
    path = tmp_path_factory.mktemp("r") / METRICS_FILE
    path.write_bytes(interleave(bad))
    follower = Follower(path, use_watchdog=False)
    assert [r.step for r in follower.read()] == list(range(len(bad) + 1))
    assert follower.stats.garbage == len(bad)
    stats = ReadStats()
    assert [r.step for r in iter_records(path, stats)] == list(range(len(bad) + 1))  # report, resume
    assert stats.garbage == len(bad)
    for line in bad:
        with pytest.raises(ProtocolError):
            parse_record(loads(line))
    assert all(isinstance(o, ProtocolError) or not _is_record(o) for o in loads_many(bad))


def _is_record(obj) -> bool:
    try:
        parse_record(obj)
    except ProtocolError:
        return False
    return True


@HYPOTHESIS
@given(st.lists(hostile, min_size=1, max_size=6))
def test_no_hostile_line_raises_from_the_request_reader(tmp_path_factory, bad):
    path = tmp_path_factory.mktemp("r") / "requests.jsonl"
    path.write_bytes(b"\n".join(bad) + b'\n{"v":1,"op":"hold","who":"ana@x","time":1}\n')
    reader = RequestReader(path)
    assert [r.op for r in reader.read()] == ["hold"]
    assert reader.stats.garbage == len(bad) and len(reader.errors) == min(len(bad), 5) + (len(bad) > 5)


@HYPOTHESIS
@given(st.lists(hostile, min_size=1, max_size=4))
def test_no_hostile_line_raises_from_the_agent(tmp_path_factory, bad):
    run = tmp_path_factory.mktemp("r")
    (run / CONTROL_FILE).touch()
    handle = Handle()
    with redirect_stderr(io.StringIO()), Agent(run, heartbeat_interval=3600) as agent:
        with open(run / CONTROL_FILE, "ab") as f:
            f.write(b"\n".join(bad) + b"\n" + dumps(make_command(1, "set_lr", time=1.0, lr=0.5)).encode() + b"\n")
        agent.commands.poll(handle)
    assert handle.lr == 0.5
    errors = [o for o in iter_objects(run / METRICS_FILE) if o["type"] == "error"]
    assert len(errors) == len(bad) and all(e["seq"] is None for e in errors)


class Handle:
    lr = 0.1

    def get_lr(self):
        return self.lr

    def set_lr(self, lr):
        self.lr = lr

    def scale_lr(self, factor):
        self.lr *= factor

    def set_hparam(self, name, value):
        raise ValueError(name)

    def request_stop(self):
        pass


def test_loads_bounds_depth_integers_and_length():
    assert loads(b'{"a":' + nested(MAX_DEPTH - 1) + b"}")["a"]  # at the limit: read
    with pytest.raises(ProtocolError, match="nested deeper than"):
        loads(b'{"a":' + nested(MAX_DEPTH) + b"}")
    assert loads('{"a":"' + "[" * 5000 + '"}')["a"] == "[" * 5000  # brackets in a string do not nest
    assert loads(b'{"a":9223372036854775807}')["a"] == 2**63 - 1
    with pytest.raises(ProtocolError, match="64 bits"):
        loads(b'{"a":9223372036854775808}')
    with pytest.raises(ProtocolError, match="longer than"):
        loads(b'{"a":"' + b"x" * MAX_LINE_BYTES + b'"}')


def test_error_messages_quote_hostile_values_briefly():
    with pytest.raises(ProtocolError) as info:
        parse_record({"v": 1, "type": "heartbeat", "time": 1.0, "step": "x" * 100_000})
    assert len(str(info.value)) < 400


def test_reader_follows_appends_restarts_on_replacement_and_counts_overlong(tmp_path):
    path = tmp_path / "f.jsonl"
    reader = JsonlReader(path)
    assert reader.read_lines() == []  # not there yet
    path.write_bytes(b"a\nb")
    assert reader.read_lines() == [b"a"] and reader.consumed == 2 and reader.pending == 1
    with open(path, "ab") as f:
        f.write(b"\n" + b"x" * (MAX_LINE_BYTES + 1) + b"\nc\n")
    assert reader.read_lines() == [b"b", b"c"]
    assert reader.stats.overlong == 1 and reader.stats.garbage == 1 and "longer than" in reader.stats.errors[0]
    (tmp_path / "new").write_bytes(b"z\n")
    (tmp_path / "new").replace(path)
    assert reader.read_lines() == [b"z"] and reader.stats.restarts == 1


def test_reader_from_the_end_skips_a_partial_line(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"old\npart")
    reader = JsonlReader(path, None)
    with open(path, "ab") as f:
        f.write(b"ial\nnew\n")
    assert reader.read_lines() == [b"new"]


def test_reader_never_follows_a_symlink(tmp_path):
    (tmp_path / "target").write_bytes(b"secret\n")
    (tmp_path / "f.jsonl").symlink_to(tmp_path / "target")
    assert JsonlReader(tmp_path / "f.jsonl").read_lines() == []


def test_tail_reader_counts_garbage(tmp_path):
    path = Path(tmp_path / METRICS_FILE)
    path.write_bytes(good_heartbeat(1) + b"\n" + nested(5000) + b"\n")
    reader = TailReader(path)
    assert [o["step"] for o in reader.read()] == [1] and reader.stats.garbage == 1
