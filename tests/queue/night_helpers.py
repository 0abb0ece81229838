"""Real ``lrsup queue`` processes over the fake trainer: start, wait, read back, clean up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lrsup.supervisor.rundir.liveness import pid_alive
from lrsup.supervisor.rundir.statefile import read_state

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_trainer.py"
NO_POLICIES = "policy = []\n[run]\nsnapshot_interval = 0\n"


def lrsup(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lrsup.supervisor.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def add(cwd: Path, *trainer_args: str, name: str | None = None, priority: int = 0) -> int:
    extra = ["--name", name] if name else []
    out = lrsup(
        cwd,
        "queue",
        "add",
        "--config",
        "lrsup.toml",
        "--priority",
        str(priority),
        *extra,
        str(FAKE),
        "--",
        *trainer_args,
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def start_daemon(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lrsup.supervisor.cli.main", "queue", "run", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def entries(cwd: Path) -> list[dict]:
    out = lrsup(cwd, "queue", "ls", "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def supervisors_up(cwd: Path, n: int) -> bool:
    """At least ``n`` runs have a live supervisor and a trainer."""
    up = 0
    for e in entries(cwd):
        path = Path(e["run_dir"] or "/nonexistent") / "supervisor.json"
        state = read_state(path) if path.is_file() else {}
        if pid_alive(state.get("supervisor_pid"), state.get("supervisor_start_time")) and state.get("trainer_pid"):
            up += 1
    return up >= n


def kill_runs(runs: Path, sig: int = signal.SIGKILL) -> None:
    """Signal every live supervisor and trainer recorded under ``runs`` (by pid and start time)."""
    for state_file in runs.glob("*/supervisor.json"):
        state = read_state(state_file)
        for who in ("supervisor", "trainer"):
            pid, start = state.get(f"{who}_pid"), state.get(f"{who}_start_time")
            if pid_alive(pid, start):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass


def journal_events(run_dir: str, event: str) -> int:
    lines = Path(run_dir, "journal.jsonl").read_text().splitlines()
    return sum(1 for line in lines if json.loads(line).get("event") == event)


def overlap(found: list[dict]) -> int:
    """The most entries running at one time, from their started/ended times."""
    marks = sorted([(e["started"], 1) for e in found if e["started"]] + [(e["ended"], -1) for e in found if e["ended"]])
    most = now = 0
    for _, d in marks:
        now += d
        most = max(most, now)
    return most


PBT_CONFIG = (
    NO_POLICIES
    + "[population]\ninterval = 2\nquantile = 0.25\nseed = 1\nmutations = { lr = { values = [0.01, 0.02, 0.04] } }\n"
)


def lines(path: Path) -> list[dict]:
    """The JSON lines of ``path`` (none when it does not exist)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def pbt_sweep(cwd: Path, config: str, *trainer_args: str) -> str:
    """``lrsup sweep --pbt`` of 4 fake-trainer members (val-loss 0.5, 0.6, 0.7, 2.0); the group's name."""
    (cwd / "lrsup.toml").write_text(config)
    out = lrsup(
        cwd, "sweep", "--pbt", "--population", "4", "--config", "lrsup.toml",
        "--grid", "val-loss=0.5,0.6,0.7,2.0", str(FAKE), "--", *trainer_args,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]
