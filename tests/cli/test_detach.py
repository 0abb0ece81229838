"""``lrsup run --detach``: a real background supervisor of the fake trainer, bounded in time, nothing left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_trainer.py"
LRSUP = [sys.executable, "-m", "lrsup.supervisor.cli.main"]
CONFIG = '[[policy]]\nuse = "plateau"\nfactor = 0.5\npatience = 1\n[run]\ngrace_period = 1.0\n'


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def lrsup(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LRSUP, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def finished(run_dir: Path) -> dict | None:
    try:
        lines = (run_dir / "journal.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return None
    events = [json.loads(x) for x in lines if x.strip()]
    return next((e for e in events if e.get("event") == "finished"), None)


def trainer_pids(run_dir: Path) -> list[int]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(x)["pid"] for x in lines if '"type":"start"' in x]


def test_detached_run_returns_at_once_and_completes_in_the_background(tmp_path):
    (tmp_path / "lrsup.toml").write_text(CONFIG)
    pids: list[int] = []
    run_dir = None
    try:
        t = time.monotonic()
        result = lrsup(
            "run",
            "--detach",
            str(FAKE),
            "--",
            "--epochs",
            "15",
            "--steps",
            "4",
            "--sleep",
            "0.02",
            "--val-loss",
            "0.9,0.8,0.8",
            cwd=tmp_path,
        )
        took = time.monotonic() - t
        assert result.returncode == 0, result.stderr
        assert took < 15, took
        run_dir = Path(result.stdout.strip())
        assert run_dir.parent == tmp_path / "runs" and run_dir.name.endswith("-fake_trainer")
        pids.append(int(re.search(r"pid (\d+)", result.stderr).group(1)))
        assert f"lrsup watch {run_dir.name}" in result.stderr
        deadline = time.monotonic() + 90
        while finished(run_dir) is None and time.monotonic() < deadline:
            pids.extend(p for p in trainer_pids(run_dir) if p not in pids)
            time.sleep(0.2)
        event = finished(run_dir)
        assert event is not None and event["status"] == 0, (run_dir / "trainer.log").read_text()
        assert "fake: done (completed)" in (run_dir / "trainer.log").read_text()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids), "something of the detached run is still running"
        ls = lrsup("ls", cwd=tmp_path, timeout=30)
        assert ls.returncode == 0 and "completed" in ls.stdout
    finally:
        for pid in pids + (trainer_pids(run_dir) if run_dir else []):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_detached_run_is_in_its_own_session_and_watchable(tmp_path):
    (tmp_path / "lrsup.toml").write_text(CONFIG)
    pids: list[int] = []
    run_dir = None
    try:
        result = lrsup("run", "-d", str(FAKE), "--", "--epochs", "20", "--steps", "4", "--sleep", "0.03", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        run_dir = Path(result.stdout.strip())
        pid = int(re.search(r"pid (\d+)", result.stderr).group(1))
        pids.append(pid)
        assert os.getsid(pid) == pid  # a session leader: no controlling terminal, survives logout
        watch = lrsup("watch", run_dir.name, cwd=tmp_path, timeout=90)
        assert watch.returncode == 0, watch.stderr
        assert "epoch 20/20" in watch.stdout and "training completed (exit status 0)" in watch.stdout
        pids.extend(trainer_pids(run_dir))
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids)
    finally:
        for p in pids + (trainer_pids(run_dir) if run_dir else []):
            if alive(p):
                os.kill(p, signal.SIGKILL)


def test_detach_validates_in_the_foreground(tmp_path):
    (tmp_path / "lrsup.toml").write_text('[[policy]]\nuse = "plateau"\nfactor = 1.5\n')
    result = lrsup("run", "--detach", str(FAKE), cwd=tmp_path)
    assert result.returncode == 2 and "invalid configuration" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()
    result = lrsup("run", "--detach", "missing.py", cwd=tmp_path)
    assert result.returncode == 2 and "not found" in result.stderr


def test_ctrl_c_on_watch_and_logs_leaves_the_run_alone(tmp_path):
    (tmp_path / "lrsup.toml").write_text(CONFIG)
    pids: list[int] = []
    run_dir = None
    try:
        result = lrsup(
            "run", "--detach", str(FAKE), "--", "--epochs", "1000", "--steps", "4", "--sleep", "0.02", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        run_dir = Path(result.stdout.strip())
        supervisor = int(re.search(r"pid (\d+)", result.stderr).group(1))
        pids.append(supervisor)
        for command in (["watch"], ["logs", "-f"]):
            viewer = subprocess.Popen(
                [*LRSUP, *command, run_dir.name],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            time.sleep(2.0)
            viewer.send_signal(signal.SIGINT)
            out, err = viewer.communicate(timeout=20)
            assert viewer.returncode == 0, (command, err)
            assert "Traceback" not in err
            assert alive(supervisor), f"{command} took the run down"
        pids.extend(trainer_pids(run_dir))
        assert pids[1:] and all(alive(p) for p in pids)
    finally:
        for p in pids + (trainer_pids(run_dir) if run_dir else []):
            if alive(p):
                os.kill(p, signal.SIGKILL)


def test_ctrl_c_while_following_only_sets_a_flag_the_loop_checks():
    # No KeyboardInterrupt at an arbitrary point (it could land inside the display holding its lock).
    from lrsup.supervisor.cli.watch import _stop_requested

    before = signal.getsignal(signal.SIGINT)
    with _stop_requested() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(5.0)
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is before
