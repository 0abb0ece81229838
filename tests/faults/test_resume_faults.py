"""The supervisor dies: ``resume`` reattaches to a live trainer or restarts a dead one; unsafe files refused."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.faults.conftest import events, finish, read_jsonl, trainer_pids, wait_for


def epochs_decided(run_dir) -> int:
    path = run_dir / "control.jsonl"
    return sum(1 for c in read_jsonl(path) if c.get("cmd") == "verdict") if path.exists() else 0


def kill_supervisor_mid_run(workdir, procs, *args, ready=None):
    # The trainer waits for its verdicts while no supervisor runs (a resume on a loaded machine can
    # take over a second to start): these tests check that resume continues where the dead one
    # stopped, not how the policies catch up on epochs the trainer went through alone.
    toml = workdir / "lrsup.toml"
    toml.write_text(toml.read_text().replace("verdict_timeout = 1.0", "verdict_timeout = 30.0"))
    proc = procs.lrsup_run(workdir, "r", *args)
    procs.add(proc.pid)
    run_dir = workdir / "r"
    wait_for(lambda: epochs_decided(run_dir) >= 3, 30, "three epochs decided")
    if ready is not None:
        wait_for(lambda: ready(run_dir), 30, "the test's condition before the kill")
    proc.kill()  # SIGKILL: no cleanup, supervisor.json still says "running"
    proc.communicate(timeout=10)
    (trainer,) = trainer_pids(run_dir)
    procs.add(trainer)
    return run_dir, trainer


def check_commands_unique(run_dir) -> list[dict]:
    control = read_jsonl(run_dir / "control.jsonl")
    assert [c["seq"] for c in control] == list(range(1, len(control) + 1))
    contents = [json.dumps({k: v for k, v in c.items() if k not in ("seq", "time")}, sort_keys=True) for c in control]
    assert len(contents) == len(set(contents)), "a command was sent twice"
    return control


def test_resume_reattaches_to_a_live_trainer_without_duplicate_commands(workdir, procs):
    run_dir, trainer = kill_supervisor_mid_run(workdir, procs, "--epochs", "14", "--sleep", "0.03")
    assert json.loads((run_dir / "supervisor.json").read_text())["state"] == "running"
    resumed = procs.resume(workdir, run_dir)
    procs.add(resumed.pid)
    out, err = finish(resumed, 90)
    assert resumed.returncode == 0, out + err
    assert trainer_pids(run_dir) == [trainer]  # reattached, not restarted
    (event,) = [e for e in events(run_dir) if e["event"] == "resumed"]
    assert f"reattaching to trainer pid {trainer}" in event["detail"]
    control = check_commands_unique(run_dir)
    assert [c["epoch"] for c in control if c["cmd"] == "verdict"] == [-1, *range(14)]  # -1: the start's
    # The plateau policy continued across the crash: every cut halves the one before, none repeated.
    lrs = [c["lr"] for c in control if c["cmd"] == "set_lr"]
    assert lrs and all(b == pytest.approx(a * 0.5) for a, b in zip([0.1] + lrs, lrs))
    state = json.loads((run_dir / "supervisor.json").read_text())
    assert (state["exit_status"], state["trainer_pid"], state["supervisor_pid"]) == (0, trainer, resumed.pid)


def test_resume_restarts_a_dead_trainer(workdir, procs):
    run_dir, trainer = kill_supervisor_mid_run(workdir, procs, "--epochs", "30", "--sleep", "0.03")
    os.kill(trainer, signal.SIGKILL)
    resumed = procs.resume(workdir, run_dir)
    procs.add(resumed.pid)
    out, err = finish(resumed, 90)
    procs.add(*trainer_pids(run_dir))
    assert resumed.returncode == 0, out + err
    assert len(trainer_pids(run_dir)) == 2
    names = [e["event"] for e in events(run_dir)]
    assert "resumed" in names and "restarted" in names and names[-1] == "finished"
    (event,) = [e for e in events(run_dir) if e["event"] == "resumed"]
    assert f"trainer pid {trainer} is gone: restarting it" in event["detail"]
    control = read_jsonl(run_dir / "control.jsonl")
    assert [c["seq"] for c in control] == list(range(1, len(control) + 1))
    # The seq counter continued where the dead supervisor left it: nothing old was rewritten.
    before = [c for c in control if c["time"] < event["time"]]
    assert before and [c["seq"] for c in before] == list(range(1, event["seq"] + 1))
    # The new attempt (a fresh fit from scratch) acknowledged only commands sent after the resume.
    acks = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("type") == "ack"]
    starts = [i for i, r in enumerate(read_jsonl(run_dir / "metrics.jsonl")) if r.get("type") == "start"]
    assert len(starts) == 2 and all(a["seq"] > event["seq"] for a in acks[-3:])
    env_attempt = json.loads((run_dir / "supervisor.json").read_text())["attempt"]
    assert env_attempt == 2


def test_resume_refuses_a_symlinked_control_file(workdir, procs):
    run_dir, trainer = kill_supervisor_mid_run(workdir, procs, "--epochs", "30", "--sleep", "0.03")
    os.kill(trainer, signal.SIGKILL)
    target = workdir / "elsewhere.jsonl"
    (run_dir / "control.jsonl").rename(target)
    (run_dir / "control.jsonl").symlink_to(target)
    resumed = procs.resume(workdir, run_dir)
    out, err = finish(resumed, 30)
    assert resumed.returncode == 2
    assert "control.jsonl' is a symbolic link; refusing to follow it" in err
    assert "Traceback" not in err
    assert len(trainer_pids(run_dir)) == 1  # nothing was started


def test_resume_refuses_while_the_supervisor_lives(workdir, procs):
    proc = procs.lrsup_run(workdir, "r", "--epochs", "40", "--sleep", "0.03")
    procs.add(proc.pid)
    run_dir = workdir / "r"
    wait_for(lambda: (run_dir / "supervisor.json").exists() and epochs_decided(run_dir) >= 1, 30, "a running run")
    procs.add(*trainer_pids(run_dir))
    resumed = procs.resume(workdir, run_dir)
    out, err = finish(resumed, 30)
    assert resumed.returncode == 2 and f"its supervisor (pid {proc.pid}) is still running" in err
