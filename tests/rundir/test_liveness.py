"""rundir/liveness.py: the one "is this pid alive?" rule, and every reader that asks it agrees."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from lrsup.supervisor.history import outcome, runinfo, runs
from lrsup.supervisor.rundir import liveness, statefile
from lrsup.supervisor.rundir.liveness import pid_alive, process_start_time


def test_this_process_is_alive_and_a_reused_pid_is_not():
    mine = process_start_time(os.getpid())
    assert isinstance(mine, int) and mine > 0
    assert pid_alive(os.getpid()) and pid_alive(os.getpid(), mine)
    assert not pid_alive(os.getpid(), mine + 1)  # another process got this pid


def test_no_pid_and_an_exited_process_are_not_alive():
    assert not pid_alive(None) and not pid_alive(0) and not pid_alive(-3)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid) and process_start_time(child.pid) is None


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
        assert not pid_alive(child.pid)
    finally:
        child.wait()


def test_another_users_process_is_alive(monkeypatch):
    """kill(pid, 0) answers EPERM for a process of another user: it exists, so it is alive."""

    def kill(pid, sig):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(liveness.os, "kill", kill)
    assert pid_alive(os.getpid())
    assert pid_alive(os.getpid(), process_start_time(os.getpid()))


def test_every_reader_uses_the_one_rule():
    from lrsup.supervisor.run import resume

    assert resume.pid_alive is pid_alive  # resume (the process seam imports it when it looks)
    assert not hasattr(statefile, "same_process")
    assert runinfo._default_pid_alive is pid_alive  # the report's outcome
    assert runs._pid_alive is pid_alive  # ls and status
    assert not hasattr(outcome, "pid_alive")


@pytest.mark.parametrize("reader", ["liveness", "runs"])
def test_readers_agree_on_permission_error(monkeypatch, reader):
    def kill(pid, sig):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(liveness.os, "kill", kill)
    state = {"supervisor_pid": os.getpid(), "supervisor_start_time": process_start_time(os.getpid())}
    if reader == "liveness":
        assert pid_alive(state["supervisor_pid"], state["supervisor_start_time"])
    else:
        assert runs.supervisor_alive(state) is True
