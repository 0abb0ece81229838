"""Torn lines, a full disk and unsafe files: the run directory after things went wrong."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrsup.supervisor import protocol
from lrsup.supervisor.protocol.commands import SetLRCommand, VerdictCommand
from lrsup.supervisor.protocol.journal import DecisionEntry, EventEntry
from lrsup.supervisor.protocol.jsonl import Appender, iter_objects
from lrsup.supervisor.protocol.wire import EpochRecord, StartRecord
from lrsup.supervisor.run.commands import CommandChannel
from lrsup.supervisor.rundir.layout import RunDirError, check_existing_run_dir, check_run_file
from lrsup.supervisor.rundir.recovery import read_control, read_records, truncate_torn_tail
from tests.fakes import FakeClock

LINES = [
    StartRecord(time=1.0, pid=7, lr=0.1, epochs=3).to_json(),
    EpochRecord(time=2.0, epoch=0, step=10, lr=0.1, logs={"val_loss": float("nan")}).to_json(),
    EpochRecord(time=3.0, epoch=1, step=20, lr=0.05, logs={"val_loss": 0.5}).to_json(),
]


def write_lines(path: Path, objs, tail: bytes = b"") -> bytes:
    data = b"".join((protocol.dumps(o) + "\n").encode() for o in objs) + tail
    path.write_bytes(data)
    return data


def test_torn_last_line_of_metrics_and_journal_is_dropped_rest_kept(tmp_path):
    metrics = tmp_path / protocol.METRICS_FILE
    write_lines(metrics, LINES, b'{"v":1,"type":"epoch","epoch":2,"st')
    records, offset = read_records(metrics)
    assert [type(r).__name__ for r in records] == ["StartRecord", "EpochRecord", "EpochRecord"]
    assert offset == len(metrics.read_bytes()) - len(b'{"v":1,"type":"epoch","epoch":2,"st')
    journal = tmp_path / protocol.JOURNAL_FILE
    complete = write_lines(journal, [{"v": 1, "type": "event", "time": 1.0, "event": "spawned", "detail": "x"}])
    with open(journal, "ab") as f:
        f.write(b'{"v":1,"type":"decis')
    assert truncate_torn_tail(journal) == len(b'{"v":1,"type":"decis')
    assert journal.read_bytes() == complete
    with Appender(journal) as out:  # the next line starts clean
        out.write({"v": 1, "type": "event", "time": 2.0, "event": "resumed", "detail": "y"})
    assert [o["event"] for o in iter_objects(journal)] == ["spawned", "resumed"]
    assert truncate_torn_tail(tmp_path / "missing.jsonl") == 0


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from("abcxyz"),
            # integers within the protocol's bound (64 bits): a longer one is a bad line (test_hostile_lines.py)
            st.one_of(st.integers(-(2**63) + 1, 2**63 - 1), st.text(max_size=8), st.floats(allow_nan=True)),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_cutting_a_jsonl_file_anywhere_keeps_exactly_the_complete_lines(tmp_path_factory, objs):
    base = tmp_path_factory.mktemp("cut")
    data = b"".join((protocol.dumps({"v": 1, **o}) + "\n").encode() for o in objs)
    ends = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    path = base / "f.jsonl"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        whole = sum(1 for e in ends if e <= cut)
        assert len(list(iter_objects(path))) == whole
        kept = max([e for e in ends if e <= cut], default=0)
        assert truncate_torn_tail(path) == cut - kept
        assert path.read_bytes() == data[:kept]


def test_control_history_gives_the_highest_seq_and_unacked_candidates(tmp_path):
    path = tmp_path / protocol.CONTROL_FILE
    cmds = [
        protocol.make_command(1, "verdict", time=1.0, epoch=0),
        protocol.make_command(2, "set_lr", time=1.0, lr=0.05),
        protocol.make_command(3, "verdict", time=1.0, epoch=1),
    ]
    write_lines(path, cmds, b"garbage\n" + b'{"v":1,"seq":4,"cmd":"se')
    history = read_control(path)
    assert (history.max_seq, history.verdicts, list(history.commands)) == (3, 2, [2])
    assert history.stats.garbage == 1


class FullDisk:
    """A writer whose ``write`` raises ENOSPC ``failures`` times, then appends to ``path``."""

    def __init__(self, path: Path, failures: int) -> None:
        self.inner, self.failures, self.attempts = Appender(path), failures, 0

    def write(self, obj) -> None:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.inner.write(obj)

    def close(self) -> None:
        self.inner.close()


def test_enospc_on_the_journal_degrades_then_recovers(tmp_path):
    journal = FullDisk(tmp_path / "journal.jsonl", failures=3)
    channel = CommandChannel(Appender(tmp_path / "control.jsonl"), journal, FakeClock())
    channel.journal(DecisionEntry(None, "p", "scale_lr", None, "", None, None, None))
    assert channel.degraded and "disk full" in channel.degraded
    assert channel.send(SetLRCommand(0.01)) is None  # no command while the journal cannot be written
    assert channel.send(VerdictCommand(0)) == 1  # the trainer is still released
    assert channel.flush() is False  # still full (attempt 2)
    channel.journal(EventEntry("x", "y"))  # queued behind the first
    assert channel.flush() is True and channel.degraded is None
    lines = list(iter_objects(tmp_path / "journal.jsonl"))
    assert [line["type"] for line in lines] == ["decision", "event"]
    assert all(line["late"].startswith("journaled late: disk full") for line in lines)
    assert channel.send(SetLRCommand(0.01)) == 2


def test_other_write_errors_are_not_swallowed(tmp_path):
    class Broken(FullDisk):
        def write(self, obj):
            raise OSError(errno.EIO, "I/O error")

    channel = CommandChannel(Appender(tmp_path / "c"), Broken(tmp_path / "j", 0), FakeClock())
    with pytest.raises(OSError, match="I/O error"):
        channel.journal(EventEntry("x", "y"))


def test_unsafe_run_files_are_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    (tmp_path / "real").write_text("")
    (run / "control.jsonl").symlink_to(tmp_path / "real")
    with pytest.raises(RunDirError, match="control.jsonl' is a symbolic link"):
        check_existing_run_dir(run)
    with pytest.raises(RunDirError, match="symbolic link"):
        check_run_file(run / "control.jsonl")
    (run / "control.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    with pytest.raises(RunDirError, match="not a regular file"):
        check_existing_run_dir(run)
    os.rmdir(run / "metrics.jsonl")
    os.chmod(run, 0o777)
    with pytest.raises(RunDirError, match=r"writable by others \(mode 0777\)"):
        check_existing_run_dir(run)
    os.chmod(run, 0o700)
    assert check_existing_run_dir(run).root == run


def test_appender_never_writes_through_a_symlink(tmp_path):
    (tmp_path / "real").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError) as info:
        Appender(tmp_path / "link")
    assert info.value.errno == errno.ELOOP
    assert json.loads("{}") == {}
