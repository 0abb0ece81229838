"""The scheduler's system calls on this machine: ``lrsup run``/``lrsup resume`` child processes.

Each supervisor is started in its own session (so a Ctrl-C or SIGKILL of ``queue run`` does not
reach it: it goes on, and the next ``queue run`` adopts it), with its output appended to
``runs/.queue/logs/q<id>.log``. GPUs are detected with ``nvidia-smi`` (or taken from
``CUDA_VISIBLE_DEVICES``) when ``--gpus`` is not given.

Example::

    spawner = LocalSpawner(queue_dir(Path("runs")) / "logs")
    handle = spawner.start(entry, Path("runs/q1-train"), {"CUDA_VISIBLE_DEVICES": "0"})
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from lrsup.supervisor import protocol
from lrsup.supervisor.queue.daemon import Ended, RunState
from lrsup.supervisor.queue.store import Entry
from lrsup.supervisor.run.operator import send_request
from lrsup.supervisor.rundir.liveness import pid_alive, process_start_time
from lrsup.supervisor.rundir.statefile import read_state

QUEUE_WHO = "lrsup-queue"  # who the queue's operator requests (unpark) are from


def lrsup_argv(*args: str) -> list[str]:
    """The command line of ``lrsup ARGS`` with this interpreter."""
    return [sys.executable, "-m", "lrsup.supervisor.cli.main", *args]


def run_argv(entry: Entry, run_dir: Path) -> list[str]:
    """``lrsup run --run-dir D [--config C] SCRIPT -- ARGS`` for ``entry``."""
    argv = ["run", "--run-dir", str(run_dir)]
    if entry.config:
        argv += ["--config", entry.config]
    return lrsup_argv(*argv, entry.script, "--", *entry.args)


def resume_argv(run_dir: Path) -> list[str]:
    return lrsup_argv("resume", str(run_dir))


def _state(run_dir: Path) -> dict | None:
    """supervisor.json, or None when there is none (or it cannot be read)."""
    try:
        return read_state(Path(run_dir) / protocol.STATE_FILE)
    except ValueError:
        return None


def inspect_run_dir(run_dir: Path) -> RunState:
    """supervisor.json's exit status and reason (``exists`` False without one)."""
    state = _state(run_dir)
    if state is None:
        return RunState(False)
    status = state.get("exit_status")
    parked = state.get("state") == "parked" and status is None
    return RunState(True, status if isinstance(status, int) else None, state.get("reason"), parked)


def live_supervisor(run_dir: Path) -> tuple[int, int | None] | None:
    """(pid, start time) of the run's supervisor when it is alive, else None (start time None: unknown here)."""
    state = _state(run_dir) or {}
    pid, start = state.get("supervisor_pid"), state.get("supervisor_start_time")
    if not isinstance(pid, int):
        return None  # no supervisor has written its pid yet
    start_time = int(start) if isinstance(start, (int, float)) else None
    if state.get("exit_status") is None and pid_alive(pid, start_time):
        return pid, start_time
    return None


class ChildHandle:
    """A supervisor this process started."""

    worker = "local"

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self.pid = popen.pid

    def poll(self) -> Ended | None:
        code = self.popen.poll()
        return None if code is None else Ended(code)

    def stop(self) -> None:
        """SIGTERM to the supervisor: it stops its trainer cleanly and records why."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)


class AdoptedHandle:
    """A supervisor an earlier ``queue run`` started (not our child: watched by pid and start time)."""

    worker = "local"

    def __init__(self, pid: int, start_time: int | None) -> None:
        self.pid, self.start_time = pid, start_time

    def poll(self) -> Ended | None:
        return None if pid_alive(self.pid, self.start_time) else Ended(None)

    def stop(self) -> None:
        if pid_alive(self.pid, self.start_time):
            os.kill(self.pid, signal.SIGTERM)


class LocalSpawner:
    """Starts supervisors as child processes of this one.

    Args:
        log_dir: Path, where each entry's output goes (``q<id>.log``, appended to).
        env: dict or None, the environment they start from (default ``os.environ``).
    """

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.env = dict(os.environ if env is None else env)
        self.children: list[subprocess.Popen] = []

    def start(self, entry: Entry, run_dir: Path, env: dict[str, str]) -> ChildHandle:
        return self._spawn(entry, run_argv(entry, run_dir), env)

    def resume(self, entry: Entry, run_dir: Path, env: dict[str, str]) -> ChildHandle:
        return self._spawn(entry, resume_argv(run_dir), env)

    def adopt(self, entry: Entry, run_dir: Path) -> AdoptedHandle | None:
        live = live_supervisor(run_dir)
        return None if live is None else AdoptedHandle(*live)

    def inspect(self, run_dir: Path) -> RunState:
        return inspect_run_dir(run_dir)

    def request(self, run_dir: Path, op: str, why: str) -> None:
        send_request(run_dir, op, who=QUEUE_WHO, why=why)

    def _spawn(self, entry: Entry, argv: list[str], env: dict[str, str]) -> ChildHandle:
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.log_dir / f"q{entry.id}.log", "ab") as log, open(os.devnull, "rb") as null:
            popen = subprocess.Popen(
                argv,
                cwd=entry.cwd,
                env={**self.env, **env},
                stdin=null,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.children.append(popen)
        return ChildHandle(popen)


def detect_gpus(env: dict[str, str] | None = None) -> list[str]:
    """The GPUs of this machine: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi``'s indices, else none."""
    env = dict(os.environ if env is None else env)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []


__all__ = ["LocalSpawner", "detect_gpus", "inspect_run_dir", "live_supervisor", "process_start_time"]
