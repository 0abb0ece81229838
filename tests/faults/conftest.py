"""Helpers for the fault tests: real ``lrsup`` and trainer processes, bounded and cleaned up.

Every test gets a ``procs`` fixture; each pid a test learns about (supervisor, trainers)
goes into it and is SIGCONTed and SIGKILLed in teardown if still alive.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FAULT = Path(__file__).resolve().parents[1] / "fakes" / "fault_trainer.py"
LRSUP = [sys.executable, "-m", "lrsup.supervisor.cli.main"]

BASE_TOML = """
[[policy]]
use = "plateau"
factor = 0.5
patience = 1

[agent]
batch_every = 1
batch_min_interval = 0
heartbeat_interval = 0.2
verdict_timeout = 1.0

[run]
grace_period = 0.5
backoff_base = 0.2
backoff_cap = 1.0
"""


def read_jsonl(path: Path) -> list[dict]:
    """The complete JSON lines of ``path`` (tests write no garbage they then parse)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def events(run_dir: Path) -> list[dict]:
    return [x for x in read_jsonl(run_dir / "journal.jsonl") if x["type"] == "event"]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def trainer_pids(run_dir: Path) -> list[int]:
    """Trainer pids in the order they started (from the ``fault: pid P attempt A`` lines)."""
    try:
        text = (run_dir / "trainer.log").read_text()
    except FileNotFoundError:
        return []
    return [int(m) for m in re.findall(r"^fault: pid (\d+) attempt", text, re.M)]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Procs:
    """Remembers pids to clean up; starts lrsup processes."""

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.popens: list[subprocess.Popen] = []

    def add(self, *pids: int) -> None:
        self.pids.update(pids)

    def lrsup_run(self, cwd: Path, run_dir: str, *trainer_args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [*LRSUP, "run", "--run-dir", run_dir, str(FAULT), "--", *trainer_args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.popens.append(proc)
        return proc

    def resume(self, cwd: Path, run_dir: Path) -> subprocess.Popen:
        code = (
            "import sys; from lrsup.supervisor.run.runner import resume; "
            f"sys.exit(resume({str(run_dir)!r}, handle_signals=True))"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.popens.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.popens:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass
        for pid in self.pids:
            if alive(pid):
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass


def finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"process did not finish within {timeout} s\n{out}\n{err}")


@pytest.fixture
def procs():
    tracker = Procs()
    try:
        yield tracker
    finally:
        tracker.cleanup()


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "lrsup.toml").write_text(BASE_TOML)
    return tmp_path
