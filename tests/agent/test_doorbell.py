"""The control doorbell (lrsup.supervisor.protocol.doorbell) and the agent's use of it.

With a bell in the run directory the agent reads control.jsonl when the supervisor rings,
not at every batch end; without one it polls as before. A command written without a ring
(an older supervisor, a hand edit) is still applied within ``BELL_FALLBACK`` seconds, and a
bell replaced under a running agent is found again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lrsup.supervisor.agent.core import BELL_FALLBACK, Agent
from lrsup.supervisor.protocol.doorbell import BELL_FILE, SIZE, Bell, BellWatch, ControlWriter
from lrsup.supervisor.protocol.wire import CONTROL_FILE, make_command
from lrsup.supervisor.rundir.layout import CONTROLLED_FILES, RunDirError, check_existing_run_dir
from tests.agent.test_core import Control, FakeHandle, records

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


def test_a_ring_is_seen_once_and_a_new_bell_starts_at_zero(run_dir):
    bell = Bell(run_dir / BELL_FILE)
    assert (run_dir / BELL_FILE).read_bytes() == bytes(SIZE)
    watch = BellWatch.open(run_dir / BELL_FILE)
    assert watch is not None and not watch.changed()
    bell.ring()
    assert watch.changed() and not watch.changed()
    bell.ring()
    bell.ring()
    assert watch.changed() and not watch.changed()
    assert oct(os.stat(run_dir / BELL_FILE).st_mode & 0o777) == "0o600"
    watch.close()
    bell.close()
    bell.close()  # twice is fine


def test_reopening_a_bell_counts_on_from_its_value(run_dir):
    with_two = Bell(run_dir / BELL_FILE)
    with_two.ring()
    with_two.ring()
    with_two.close()
    watch = BellWatch.open(run_dir / BELL_FILE)
    again = Bell(run_dir / BELL_FILE)  # lrsup resume opens the same file
    assert again.count == 2
    again.ring()
    assert watch.changed()  # 3 differs from the 2 the watch saw at open
    watch.close()
    again.close()


def test_no_watch_on_a_missing_or_short_bell(run_dir):
    assert BellWatch.open(run_dir / BELL_FILE) is None
    (run_dir / BELL_FILE).write_bytes(b"\0\0\0")
    assert BellWatch.open(run_dir / BELL_FILE) is None


def test_a_short_bell_file_is_completed_by_the_supervisor(run_dir):
    (run_dir / BELL_FILE).write_bytes(b"\1\2")
    bell = Bell(run_dir / BELL_FILE)
    assert bell.count == 0 and (run_dir / BELL_FILE).read_bytes() == bytes(SIZE)
    bell.close()


def test_control_writer_appends_then_rings(run_dir):
    watch = None
    with ControlWriter(run_dir / CONTROL_FILE, run_dir / BELL_FILE) as writer:
        watch = BellWatch.open(run_dir / BELL_FILE)
        writer.write(make_command(1, "set_lr", time=1.0, lr=0.5))
        assert watch.changed()
        assert (run_dir / CONTROL_FILE).read_bytes().count(b"\n") == 1
    watch.close()


def test_the_bell_is_a_controlled_run_file(run_dir):
    assert BELL_FILE in CONTROLLED_FILES
    os.chmod(run_dir, 0o700)
    (run_dir / "elsewhere").write_bytes(bytes(SIZE))
    os.symlink(run_dir / "elsewhere", run_dir / BELL_FILE)
    with pytest.raises(RunDirError, match="symbolic link"):
        check_existing_run_dir(run_dir)


# -- the agent -------------------------------------------------------------------------


class Supervisor:
    """Writes commands the way lrsup's supervisor does: append to control.jsonl, then ring."""

    def __init__(self, run_dir: Path) -> None:
        self.writer = ControlWriter(run_dir / CONTROL_FILE, run_dir / BELL_FILE)
        self.seq = 0

    def send(self, cmd: str, **args) -> int:
        self.seq += 1
        self.writer.write(make_command(self.seq, cmd, time=time.time(), **args))
        return self.seq


@pytest.fixture
def supervised(run_dir):
    """A supervisor writer (bell created first, as `lrsup run` does) and an agent on the run dir."""
    sup = Supervisor(run_dir)
    agent = Agent(run_dir, verdict_timeout=0.0, heartbeat_interval=60.0)
    yield sup, agent
    agent.close()
    sup.writer.close()


def test_with_a_bell_the_agent_applies_a_command_at_the_next_batch_end(supervised, run_dir):
    sup, agent = supervised
    handle = FakeHandle()
    agent.start(handle)
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    sup.send("set_lr", lr=0.05)
    agent.batch_end(handle, epoch=0, batch=1, step=2)
    assert handle.lr == 0.05
    assert [a["step"] for a in records(run_dir, "ack")] == [2]


def test_with_a_bell_the_agent_does_not_read_control_between_rings(supervised, run_dir, monkeypatch):
    sup, agent = supervised
    handle = FakeHandle()
    agent.start(handle)
    reads = []
    real = agent._control.read_lines
    monkeypatch.setattr(agent._control, "read_lines", lambda: reads.append(1) or real())
    t0 = time.monotonic()
    steps = 0
    while time.monotonic() - t0 < BELL_FALLBACK / 2:  # well inside one fallback period
        steps += 1
        agent.batch_end(handle, epoch=0, batch=steps, step=steps)
    assert steps > 100
    assert len(reads) <= 1  # at most the fallback poll due at the first batch end
    sup.send("set_lr", lr=0.02)
    agent.batch_end(handle, epoch=0, batch=steps + 1, step=steps + 1)
    assert handle.lr == 0.02


def batch_ends_until(agent, handle, done, step: int) -> int:
    """Batch ends (1 ms apart) from ``step + 1`` until ``done()`` or 20 fallback periods; the last step."""
    deadline = time.monotonic() + BELL_FALLBACK * 20
    while not done() and time.monotonic() < deadline:
        step += 1
        agent.batch_end(handle, epoch=0, batch=step, step=step)
        time.sleep(0.001)
    return step


def test_a_command_written_without_a_ring_is_applied_within_the_fallback(supervised, run_dir):
    _, agent = supervised
    handle = FakeHandle()
    agent.start(handle)
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    Control(run_dir).send("set_lr", lr=0.03)  # appended by hand: no ring
    batch_ends_until(agent, handle, lambda: handle.lr == 0.03, step=1)
    assert handle.lr == 0.03


def test_a_replaced_bell_is_found_again(supervised, run_dir):
    sup, agent = supervised
    handle = FakeHandle()
    agent.start(handle)
    sup.writer.close()
    os.unlink(run_dir / BELL_FILE)
    sup.writer = ControlWriter(run_dir / CONTROL_FILE, run_dir / BELL_FILE)  # a new inode
    old_watch = agent._control.bell
    step = batch_ends_until(agent, handle, lambda: agent._control.bell is not old_watch, step=0)
    assert agent._control.bell is not old_watch and agent._control.bell is not None
    sup.send("set_lr", lr=0.04)
    agent.batch_end(handle, epoch=0, batch=step + 1, step=step + 1)
    assert handle.lr == 0.04


def test_without_a_bell_the_agent_polls_and_finds_a_bell_created_later(run_dir):
    agent = Agent(run_dir, verdict_timeout=0.0, heartbeat_interval=60.0)
    try:
        handle = FakeHandle()
        agent.start(handle)
        assert agent._control.bell is None
        agent.poll_interval = 0.0
        Control(run_dir).send("set_lr", lr=0.06)
        agent.batch_end(handle, epoch=0, batch=0, step=1)
        assert handle.lr == 0.06  # polled at this batch end
        Bell(run_dir / BELL_FILE).close()
        batch_ends_until(agent, handle, lambda: agent._control.bell is not None, step=1)
        assert agent._control.bell is not None
    finally:
        agent.close()
    assert agent._control.bell is None  # closed with the agent


def test_a_command_sent_before_the_agent_existed_is_history_not_a_ring(run_dir):
    sup = Supervisor(run_dir)
    sup.send("set_lr", lr=0.5)  # meant for an earlier trainer process
    agent = Agent(run_dir, verdict_timeout=0.0, heartbeat_interval=60.0)
    try:
        handle = FakeHandle()
        agent.start(handle)
        for step in range(1, 20):
            agent.batch_end(handle, epoch=0, batch=step, step=step)
        assert handle.lr == 0.1
        sup.send("set_lr", lr=0.25)
        agent.batch_end(handle, epoch=0, batch=20, step=20)
        assert handle.lr == 0.25
    finally:
        agent.close()
        sup.writer.close()
