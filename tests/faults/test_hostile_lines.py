"""No line can kill a reader (issue 17, items 5, 6, 7 and 8), on both sides of the protocol.

Each test plants what the probe planted: a deeply nested line (item 6), an integer of 400
digits where a float goes (item 7), control lines with a seq out of turn and records the
supervisor must not believe (item 8), a full disk under the agent's metrics writer (item 5,
the agent's side). Most run in process against the real readers and the real agent; one runs
``lrsup run`` with all of them appended mid-run and then reads the run back with ``report``
and ``replay``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from lrsup.supervisor.agent import Agent
from lrsup.supervisor.engine.replay import replay
from lrsup.supervisor.history.reader import iter_records
from lrsup.supervisor.protocol import jsonl
from lrsup.supervisor.protocol.jsonl import Appender, ReadStats, iter_objects
from lrsup.supervisor.protocol.wire import (
    CONTROL_FILE,
    METRICS_FILE,
    AckRecord,
    EpochRecord,
    StartRecord,
    dumps,
    make_command,
)
from lrsup.supervisor.run.credence import Credence
from lrsup.supervisor.run.follower import Follower
from lrsup.supervisor.run.operator import RequestReader
from lrsup.supervisor.rundir.recovery import read_records
from tests.faults.conftest import LRSUP, events, finish, read_jsonl, trainer_pids, wait_for

pytestmark = pytest.mark.timeout(120)

DEPTH = 1500
DEEP_RECORD = b'{"v":1,"type":"heartbeat","time":1.0,"step":1,"x":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
DEEP_REQUEST = (
    b'{"v":1,"op":"hold","who":"' + b"[" * DEPTH + b'","time":1.0,"why":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
)
DEEP_COMMAND = b'{"v":1,"seq":1,"cmd":"set_schedule","time":1.0,"schedule":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
HUGE_LR_REQUEST = b'{"v":1,"op":"set_lr","lr":1' + b"0" * 400 + b',"who":"eve@x","time":1.0}'
TEN_MB_REQUEST = b'{"v":1,"op":"hold","who":"eve@x","time":1.0,"why":"' + b"x" * (10 << 20) + b'"}'


def line(obj) -> bytes:
    return (dumps(obj) + "\n").encode()


def good_records() -> list[bytes]:
    start = StartRecord(time=1.0, pid=1, lr=0.1, epochs=2).to_json()
    epoch = EpochRecord(time=2.0, epoch=0, step=10, lr=0.1, logs={"loss": 1.0}).to_json()
    return [line(start), line(epoch)]


class FakeHandle:
    """A float LR; no checkpoints."""

    def __init__(self, lr: float = 0.1) -> None:
        self.lr = lr
        self.stopped = False

    def get_lr(self) -> float:
        return self.lr

    def set_lr(self, lr: float) -> None:
        self.lr = lr

    def scale_lr(self, factor: float) -> None:
        self.lr *= factor

    def set_hparam(self, name: str, value: float) -> None:
        raise ValueError(name)

    def request_stop(self) -> None:
        self.stopped = True


def agent_records(run: Path, kind: str) -> list[dict]:
    return [r for r in iter_objects(run / METRICS_FILE) if r.get("type") == kind]


def append(path: Path, *lines: bytes) -> None:
    with open(path, "ab") as f:
        for data in lines:
            f.write(data if data.endswith(b"\n") else data + b"\n")


# -- item 6: a deeply nested line ------------------------------------------------------------


def test_a_deep_line_in_metrics_is_one_garbage_line_for_the_follower_and_every_offline_reader(tmp_path):
    metrics = tmp_path / METRICS_FILE
    start, epoch = good_records()
    metrics.write_bytes(start + DEEP_RECORD + b"\n" + epoch)
    follower = Follower(metrics, use_watchdog=False)
    assert [r.type for r in follower.read()] == ["start", "epoch"]  # the supervisor's live reader
    assert follower.stats.garbage == 1 and "nested deeper" in follower.stats.last_errors[-1]
    stats = ReadStats()
    records, _ = read_records(metrics, stats)  # resume's reader
    assert [r.type for r in records] == ["start", "epoch"] and stats.garbage == 1
    stats = ReadStats()
    assert [r.type for r in iter_records(metrics, stats)] == ["start", "epoch"] and stats.garbage == 1  # report
    stats = ReadStats()
    assert [o["type"] for o in iter_objects(metrics, stats)] == ["start", "epoch"] and stats.garbage == 1  # replay


def test_a_deep_line_in_requests_is_a_bad_request(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(DEEP_REQUEST + b"\n" + line({"v": 1, "op": "hold", "who": "ana@x", "time": 1.0}))
    reader = RequestReader(path)
    assert [r.op for r in reader.read()] == ["hold"]
    assert len(reader.errors) == 1 and "nested deeper" in reader.errors[0]


def test_a_deep_line_in_control_is_an_error_record_and_training_goes_on(tmp_path):
    run = tmp_path
    (run / CONTROL_FILE).touch()
    handle = FakeHandle()
    with Agent(run, heartbeat_interval=3600, verdict_timeout=0, checkpoint_every_epochs=0) as agent:
        agent.start(handle, step=0, barrier=False, checkpoint=False)
        append(run / CONTROL_FILE, DEEP_COMMAND, line(make_command(1, "set_lr", time=1.0, lr=0.5)))
        agent.commands.poll(handle)
        assert handle.lr == 0.5  # the next command still applies
    errors = agent_records(run, "error")
    assert len(errors) == 1 and "nested deeper" in errors[0]["message"]


def test_an_agent_restarted_after_a_deep_control_line_starts(tmp_path):
    run = tmp_path
    append(run / CONTROL_FILE, DEEP_COMMAND, line(make_command(1, "set_lr", time=1.0, lr=0.5)))
    handle = FakeHandle()
    with Agent(run, heartbeat_interval=3600) as agent:  # skipping history read the deep line
        assert agent.commands.next_seq == 2
        agent.commands.poll(handle)
    assert handle.lr == 0.1  # history is never replayed


# -- item 7: an integer of 400 digits --------------------------------------------------------


def test_a_400_digit_lr_request_is_a_bad_request_not_an_overflow(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(HUGE_LR_REQUEST + b"\n")
    reader = RequestReader(path)
    assert reader.read() == []
    assert len(reader.errors) == 1 and "64 bits" in reader.errors[0]


def test_a_10_mb_request_is_a_counted_bad_request(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(TEN_MB_REQUEST + b"\n" + line({"v": 1, "op": "release", "who": "ana@x", "time": 1.0}))
    reader = RequestReader(path)
    assert [r.op for r in reader.read()] == ["release"]
    assert len(reader.errors) == 1 and "longer than" in reader.errors[0]


def test_a_400_digit_lr_command_is_an_error_record(tmp_path):
    run = tmp_path
    append(run / CONTROL_FILE)
    handle = FakeHandle()
    with Agent(run, heartbeat_interval=3600) as agent:
        append(run / CONTROL_FILE, b'{"v":1,"seq":1,"cmd":"set_lr","time":1.0,"lr":1' + b"0" * 400 + b"}")
        agent.commands.poll(handle)
        append(run / CONTROL_FILE, line(make_command(1, "set_lr", time=1.0, lr=0.5)))
        agent.commands.poll(handle)
    assert handle.lr == 0.5
    assert ["64 bits" in e["message"] for e in agent_records(run, "error")] == [True]


# -- item 8: seqs out of turn, records not to believe -----------------------------------------


def test_a_huge_seq_is_refused_and_later_commands_still_apply(tmp_path):
    run = tmp_path
    (run / CONTROL_FILE).touch()
    handle = FakeHandle()
    with Agent(run, heartbeat_interval=3600) as agent:
        append(run / CONTROL_FILE, line(make_command(10**12, "set_lr", time=1.0, lr=9.0)))
        append(run / CONTROL_FILE, line(make_command(1, "set_lr", time=1.0, lr=0.5)))
        append(run / CONTROL_FILE, line(make_command(2, "scale_lr", time=1.0, factor=0.5)))
        agent.commands.poll(handle)
    assert handle.lr == 0.25
    (error,) = agent_records(run, "error")
    assert error["seq"] == 10**12 and "is not the next" in error["message"]
    assert [a["seq"] for a in agent_records(run, "ack")] == [1, 2]


def test_a_reused_seq_is_reported_not_silently_dropped(tmp_path):
    run = tmp_path
    (run / CONTROL_FILE).touch()
    handle = FakeHandle()
    with Agent(run, heartbeat_interval=3600) as agent:
        append(run / CONTROL_FILE, line(make_command(1, "set_lr", time=1.0, lr=0.5)))
        append(run / CONTROL_FILE, line(make_command(1, "set_lr", time=1.0, lr=0.7)))  # a forged or stale copy
        agent.commands.poll(handle)
    assert handle.lr == 0.5
    (error,) = agent_records(run, "error")
    assert error["seq"] == 1 and "handled already" in error["message"]


def test_a_huge_seq_in_history_does_not_freeze_a_restarted_agent(tmp_path):
    run = tmp_path
    append(run / CONTROL_FILE, line(make_command(1, "set_lr", time=1.0, lr=0.5)))
    append(run / CONTROL_FILE, line(make_command(10**12, "set_lr", time=1.0, lr=9.0)))
    handle = FakeHandle()
    with Agent(run, heartbeat_interval=3600) as agent:
        append(run / CONTROL_FILE, line(make_command(2, "set_lr", time=1.0, lr=0.3)))
        agent.commands.poll(handle)
    assert handle.lr == 0.3


def test_a_verdict_for_an_epoch_ahead_of_training_is_refused(tmp_path):
    run = tmp_path
    (run / CONTROL_FILE).touch()
    handle = FakeHandle()
    with Agent(run, heartbeat_interval=3600, verdict_timeout=0.05, checkpoint_every_epochs=0) as agent:
        agent.start(handle, step=0, barrier=False, checkpoint=False)
        append(run / CONTROL_FILE, line(make_command(1, "verdict", time=1.0, epoch=99999)))
        agent.commands.poll(handle)
        assert agent.commands.verdict_epoch < 0  # the barriers of this fit still hold
        with redirect_stderr(io.StringIO()) as err:
            agent.epoch_end(handle, epoch=0, step=10, logs={"loss": 1.0})
        assert "no verdict" in err.getvalue()
    (error,) = agent_records(run, "error")
    assert error["seq"] == 1 and "training is at epoch 0" in error["message"]


def test_the_supervisor_does_not_believe_an_epoch_far_ahead_or_an_ack_never_sent():
    credence = Credence()
    assert credence.doubt(StartRecord(pid=1, initial_epoch=0), sent=0) is None
    assert credence.doubt(EpochRecord(epoch=0, step=10), sent=1) is None
    assert "epoch 100000" in credence.doubt(EpochRecord(epoch=99999, step=20), sent=1)
    assert credence.doubt(EpochRecord(epoch=1, step=20), sent=1) is None  # the real next one
    assert "never sent" in credence.doubt(AckRecord(seq=10**6, cmd="set_lr", step=20), sent=3)
    assert credence.doubt(AckRecord(seq=3, cmd="set_lr", step=20), sent=3) is None
    assert credence.doubt(StartRecord(pid=2, initial_epoch=1), sent=3) is None  # a restart: back to epoch 2
    assert credence.doubt(EpochRecord(epoch=1, step=20), sent=3) is None


# -- item 5 (the agent's side): a full disk ----------------------------------------------------


class FullDiskOs:
    """``os`` for jsonl's writers, with a disk that fills: writes to ``path`` fail with ENOSPC
    (the first one after taking ``partial`` bytes) until ``free()`` is called."""

    def __init__(self, path: Path, partial: int = 7) -> None:
        self._path = str(path)
        self._partial = partial
        self.full = False

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd: int, data) -> int:
        if self.full and os.readlink(f"/proc/self/fd/{fd}") == self._path:
            if self._partial:
                n, self._partial = os.write(fd, bytes(data[: self._partial])), 0
                return n
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


def test_a_full_disk_drops_records_keeps_training_and_says_so_once(tmp_path, monkeypatch):
    run = tmp_path
    (run / CONTROL_FILE).touch()
    disk = FullDiskOs(run / METRICS_FILE)
    monkeypatch.setattr(jsonl, "os", disk)
    handle = FakeHandle()
    err = io.StringIO()
    with redirect_stderr(err), Agent(run, heartbeat_interval=3600, batch_every=1, batch_min_interval=0) as agent:
        agent.start(handle, step=0, barrier=False, checkpoint=False)
        agent.batch_end(handle, epoch=0, batch=0, step=1, logs={"loss": 1.0})
        disk.full = True
        for step in range(2, 12):  # the first write is cut after 7 bytes: a torn line
            agent.batch_end(handle, epoch=0, batch=step - 1, step=step, logs={"loss": 1.0})
        disk.full = False
        agent.batch_end(handle, epoch=0, batch=11, step=12, logs={"loss": 1.0})
        agent.end(reason="completed", epoch=0, step=12)
    assert err.getvalue().count("records are dropped until space returns") == 1
    assert err.getvalue().count("disk space is back: 10 record(s)") == 1
    stats = ReadStats()
    objs = list(iter_objects(run / METRICS_FILE, stats))
    assert stats.garbage == 1  # the torn line alone: the next line started on a fresh one
    assert [o["type"] for o in objs] == ["start", "batch", "error", "batch", "end"]
    assert objs[2]["message"].startswith("disk full: 10 record(s) dropped")
    assert [o["step"] for o in objs if o["type"] == "batch"] == [1, 12]


def test_the_next_writer_after_a_torn_line_starts_a_fresh_line(tmp_path):
    path = tmp_path / METRICS_FILE
    start, epoch = good_records()
    path.write_bytes(start + b'{"v":1,"type":"ep')  # a writer died mid-line
    with Appender(path) as out:
        assert out.torn
        out.write_line(epoch)
    stats = ReadStats()
    assert [o["type"] for o in iter_objects(path, stats)] == ["start", "epoch"] and stats.garbage == 1


# -- all of it at once, in a real run ----------------------------------------------------------


def test_a_run_survives_hostile_lines_in_every_file_and_reads_back(workdir, procs):
    proc = procs.lrsup_run(workdir, "r", "--epochs", "6", "--sleep", "0.03", "--val-loss", "1.0")
    procs.add(proc.pid)
    run = workdir / "r"
    metrics = run / METRICS_FILE
    wait_for(lambda: metrics.exists() and any(r.get("type") == "epoch" for r in read_jsonl(metrics)), 30, "an epoch")
    procs.add(*trainer_pids(run))
    forged_epoch = line(EpochRecord(time=1.0, epoch=99999, step=1, lr=9.0, logs={"loss": 0.0}).to_json())
    forged_ack = line(AckRecord(time=1.0, seq=10**6, cmd="set_lr", step=1, lr=9.0).to_json())
    append(run / METRICS_FILE, DEEP_RECORD, b'{"v":1,"type":"heartbeat","time":1.0,"step":1' + b"0" * 400 + b"}")
    append(run / METRICS_FILE, forged_epoch, forged_ack)
    append(run / "requests.jsonl", DEEP_REQUEST, HUGE_LR_REQUEST)
    append(run / CONTROL_FILE, DEEP_COMMAND, line(make_command(10**9, "set_lr", time=1.0, lr=9.0)))
    out, err = finish(proc, 90)
    assert proc.returncode == 0, out + err
    names = [e["event"] for e in events(run)]
    assert names[-1] == "finished"
    assert names.count("garbage") >= 2 and names.count("bad_request") >= 2 and names.count("unbelievable") == 2
    journal = read_jsonl(run / "journal.jsonl")
    applied = [j for j in journal if j.get("type") == "applied"]
    assert applied and all(j["seq"] < 10**6 for j in applied)
    cuts = [j for j in journal if j.get("type") == "decision" and j.get("seq")]
    assert {c["seq"] for c in cuts} <= {a["seq"] for a in applied}  # every cut sent was applied: nothing froze
    errors = [r for r in iter_objects(run / METRICS_FILE) if r.get("type") == "error"]
    assert any("nested deeper" in e["message"] for e in errors) and any(e.get("seq") == 10**9 for e in errors)
    for command in (["report", "r"], ["replay", "r"]):
        done = subprocess.run([*LRSUP, *command], cwd=workdir, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    assert replay(run) is not None
    assert json.loads((run / "supervisor.json").read_text())["state"] != "running"
