"""The operator channel: requests validated, appended, and read by offset."""

from __future__ import annotations

import pytest

from lrsup.supervisor.run.operator import REQUESTS_FILE, RequestError, RequestReader, send_request, validate_request
from lrsup.supervisor.rundir.layout import RunDirError


@pytest.fixture
def run_dir(tmp_path):
    root = tmp_path / "run"
    root.mkdir(mode=0o700)
    (root / "config.json").write_text("{}")
    return root


def test_sent_requests_are_read_once_in_order(run_dir):
    reader = RequestReader(run_dir / REQUESTS_FILE)
    assert reader.read() == []
    send_request(run_dir, "set_lr", lr=1e-3, why="exploding", who="ana@gpu3", time=5.0)
    send_request(run_dir, "hold")
    first, second = reader.read()
    assert (first.op, first.lr, first.who, first.why, first.time) == ("set_lr", 1e-3, "ana@gpu3", "exploding", 5.0)
    assert second.op == "hold" and "@" in second.who
    assert reader.read() == []
    with open(run_dir / REQUESTS_FILE, "ab") as f:
        f.write(b'garbage\n{"v":1,"op":"stop","who":"x","time":1')  # a torn tail waits for its newline
    assert reader.read() == [] and reader.errors == [
        "bad request skipped: not JSON: Expecting value: line 1 column 1 (char 0)"
    ]
    with open(run_dir / REQUESTS_FILE, "ab") as f:
        f.write(b".0}\n")
    assert [r.op for r in reader.read()] == ["stop"]


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"v": 1, "op": "explode", "who": "a", "time": 1.0}, "unknown op 'explode'"),
        ({"v": 1, "op": "set_lr", "who": "a", "time": 1.0}, "set_lr needs lr, a finite number >= 0, got None"),
        ({"v": 1, "op": "set_lr", "lr": float("nan"), "who": "a", "time": 1.0}, "got nan"),
        ({"v": 1, "op": "hold", "lr": 0.1, "who": "a", "time": 1.0}, "hold takes no lr (got 0.1)"),
        ({"v": 1, "op": "hold", "who": "", "time": 1.0}, "who must be a non-empty string"),
        ({"v": 1, "op": "hold", "who": "a", "time": 1.0, "eval": "x"}, "unknown request field(s) ['eval']"),
        ({"v": 2, "op": "hold", "who": "a", "time": 1.0}, "unsupported request version 2"),
    ],
)
def test_invalid_requests_are_refused_naming_the_value(obj, message):
    with pytest.raises(RequestError) as info:
        validate_request(obj)
    assert message in str(info.value)


def test_send_refuses_a_non_run_dir_and_a_symlinked_requests_file(tmp_path, run_dir):
    with pytest.raises(RunDirError, match="is not an lrsup run directory"):
        send_request(tmp_path, "hold")
    with pytest.raises(RequestError):
        send_request(run_dir, "set_lr", lr=-1.0)
    assert not (run_dir / REQUESTS_FILE).exists()  # nothing written for an invalid request
    (tmp_path / "elsewhere").write_text("")
    (run_dir / REQUESTS_FILE).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunDirError, match="symbolic link"):
        send_request(run_dir, "hold")
