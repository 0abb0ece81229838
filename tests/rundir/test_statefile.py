"""supervisor.json: atomic rewrite, and process identity by (pid, start time)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lrsup.supervisor.rundir.liveness import pid_alive as same_process
from lrsup.supervisor.rundir.liveness import process_start_time
from lrsup.supervisor.rundir.statefile import read_state, write_state


def test_process_start_time_is_field_22_and_identifies_a_process():
    mine = process_start_time(os.getpid())
    with open(f"/proc/{os.getpid()}/stat") as f:
        assert mine == int(f.read().rsplit(")", 1)[1].split()[19])
    assert same_process(os.getpid(), mine)
    assert not same_process(os.getpid(), mine + 1)  # the pid was reused by another process
    assert not same_process(None, mine) and not same_process(0, None)


def test_a_finished_process_is_not_the_same_process():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_start_time(child.pid)
    child.wait()
    assert not same_process(child.pid, started)
    assert process_start_time(child.pid) is None


def test_write_is_atomic_private_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "supervisor.json"
    write_state(path, {"state": "running", "attempt": 1, "loss": float("nan")})
    write_state(path, {"state": "backoff", "attempt": 2})
    assert read_state(path) == {"v": 1, "state": "backoff", "attempt": 2}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["supervisor.json"]


def test_read_refuses_garbage_and_symlinks(tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="does not hold a JSON object"):
        read_state(tmp_path / "bad.json")
    (tmp_path / "link.json").symlink_to(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="cannot read"):
        read_state(tmp_path / "link.json")
