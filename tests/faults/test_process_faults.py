"""Faults of the trainer process, with real processes: killed, stopped, slow, broken, never acking.

Each test runs ``lrsup run`` on tests/fakes/fault_trainer.py with short timeouts from
lrsup.toml, bounds every wait, and kills whatever it started in teardown.
"""

from __future__ import annotations

import os
import signal
import time

from tests.faults.conftest import events, finish, read_jsonl, trainer_pids, wait_for


def epoch_records(run_dir) -> int:
    path = run_dir / "metrics.jsonl"
    return sum(1 for r in read_jsonl(path) if r.get("type") == "epoch") if path.exists() else 0


def test_sigkilled_trainer_is_restarted_and_completes(workdir, procs):
    proc = procs.lrsup_run(workdir, "r", "--epochs", "6", "--sleep", "0.05")
    procs.add(proc.pid)
    run_dir = workdir / "r"
    first = wait_for(lambda: trainer_pids(run_dir), 30, "the trainer to start")[0]
    procs.add(first)
    wait_for(lambda: epoch_records(run_dir) >= 1, 30, "an epoch record")
    os.kill(first, signal.SIGKILL)  # mid-epoch
    out, err = finish(proc, 60)
    assert proc.returncode == 0, out + err
    procs.add(*trainer_pids(run_dir))
    assert len(trainer_pids(run_dir)) == 2
    names = [e["event"] for e in events(run_dir)]
    assert "backoff" in names and "restarted" in names and names[-1] == "finished"
    backoff = next(e for e in events(run_dir) if e["event"] == "backoff")
    assert "SIGKILL" in backoff["detail"] and "restart 1 of at most 5" in backoff["detail"]
    state = read_jsonl_state(run_dir)
    assert (state["state"], state["attempt"], state["restarts"], state["exit_status"]) == ("exited", 2, 1, 0)


def read_jsonl_state(run_dir):
    import json

    return json.loads((run_dir / "supervisor.json").read_text())


def test_sigstopped_trainer_is_detected_killed_and_restarted(workdir, procs):
    (workdir / "lrsup.toml").write_text((workdir / "lrsup.toml").read_text() + "hang_timeout = 1.5\n")
    proc = procs.lrsup_run(workdir, "r", "--epochs", "5", "--sleep", "0.05")
    procs.add(proc.pid)
    run_dir = workdir / "r"
    first = wait_for(lambda: trainer_pids(run_dir), 30, "the trainer to start")[0]
    procs.add(first)
    wait_for(lambda: epoch_records(run_dir) >= 1, 30, "an epoch record")
    stopped_at = time.time()
    os.kill(first, signal.SIGSTOP)
    out, err = finish(proc, 60)
    assert proc.returncode == 0, out + err
    procs.add(*trainer_pids(run_dir))
    (killing,) = [e for e in events(run_dir) if e["event"] == "killing"]
    assert killing["detail"].startswith("trainer hung: no record or heartbeat for")
    # hang_timeout counts from the last record the stopped trainer wrote (up to one 0.05 s step
    # before stopped_at), not from the stop itself
    last = max(r["time"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["time"] < killing["time"])
    assert last <= stopped_at
    assert 1.5 <= killing["time"] - last and killing["time"] - stopped_at < 1.5 + 3.0  # within hang_timeout + margin
    signals = [e["detail"] for e in events(run_dir) if e["event"] == "signal"]
    assert any(s.startswith("SIGTERM to the trainer's process group") for s in signals)
    assert any(s.startswith("SIGKILL") for s in signals)  # a stopped process ignores SIGTERM
    assert len(trainer_pids(run_dir)) == 2


def test_slow_trainer_with_heartbeats_is_never_killed(workdir, procs):
    toml = (workdir / "lrsup.toml").read_text().replace("batch_every = 1", "batch_every = 1000")
    (workdir / "lrsup.toml").write_text(toml + "hang_timeout = 1.0\nstall_timeout = 1.0\n")
    # Each step takes 0.6 s, no batch records: only heartbeats show progress (step), under both timeouts.
    proc = procs.lrsup_run(workdir, "r", "--epochs", "2", "--steps", "4", "--sleep", "0.6")
    procs.add(proc.pid)
    out, err = finish(proc, 60)
    procs.add(*trainer_pids(workdir / "r"))
    assert proc.returncode == 0, out + err
    names = [e["event"] for e in events(workdir / "r")]
    assert "killing" not in names and "backoff" not in names
    assert len(trainer_pids(workdir / "r")) == 1


def test_broken_script_is_given_up_after_two_fast_failures(workdir, procs):
    proc = procs.lrsup_run(workdir, "r", "--import-error")
    procs.add(proc.pid)
    out, err = finish(proc, 60)
    procs.add(*trainer_pids(workdir / "r"))
    assert proc.returncode == 3, out + err
    assert len(trainer_pids(workdir / "r")) == 2  # one restart, then given up: not all night
    assert "FATAL" in err and "failed before its first epoch 2 times in a row" in err
    assert "Traceback (most recent call last)" in err and "ModuleNotFoundError" in err
    state = read_jsonl_state(workdir / "r")
    assert (state["state"], state["exit_status"], state["restarts"]) == ("fatal", 3, 1)


def test_command_never_acked_is_resent_after_the_restart_and_applied_once(workdir, procs):
    proc = procs.lrsup_run(workdir, "r", "--epochs", "4", "--die-at-epoch", "2")
    procs.add(proc.pid)
    out, err = finish(proc, 60)
    procs.add(*trainer_pids(workdir / "r"))
    assert proc.returncode == 0, out + err
    run_dir = workdir / "r"
    (resent,) = [e for e in events(run_dir) if e["event"] == "resent"]
    old, new = resent["original_seq"], resent["seq"]
    control = {c["seq"]: c for c in read_jsonl(run_dir / "control.jsonl")}
    assert len(control) == len(read_jsonl(run_dir / "control.jsonl"))  # seqs unique
    assert new > old and control[new]["cmd"] == control[old]["cmd"] == "set_lr"
    assert control[new]["lr"] == control[old]["lr"]
    acks = [r["seq"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("type") == "ack"]
    assert old not in acks and acks.count(new) == 1


def test_garbage_in_metrics_and_control_is_skipped_and_reported(workdir, procs):
    proc = procs.lrsup_run(workdir, "r", "--epochs", "6", "--sleep", "0.05")
    procs.add(proc.pid)
    run_dir = workdir / "r"
    wait_for(lambda: epoch_records(run_dir) >= 2, 30, "two epoch records")
    procs.add(*trainer_pids(run_dir))
    for name in ("metrics.jsonl", "control.jsonl"):
        with open(run_dir / name, "ab") as f:
            f.write(b'this is not json\n{"v":1,"seq":"one","cmd":"set_lr"}\n')
    out, err = finish(proc, 60)
    assert proc.returncode == 0, out + err
    garbage = [e["detail"] for e in events(run_dir) if e["event"] == "garbage"]
    assert len(garbage) == 2 and "not JSON" in garbage[0]
    verdicts = [c["epoch"] for c in read_jsonl(run_dir / "control.jsonl") if c.get("cmd") == "verdict"]
    assert verdicts == [-1, *range(6)]  # the run went on to the end (-1: the verdict on the start record)


def test_operator_requests_from_another_process(workdir, procs):
    import subprocess
    import sys

    proc = procs.lrsup_run(workdir, "r", "--epochs", "200", "--sleep", "0.02", "--val-loss", "0.9,0.8,0.7,0.6")
    procs.add(proc.pid)
    run_dir = workdir / "r"
    wait_for(lambda: epoch_records(run_dir) >= 2, 30, "two epoch records")
    procs.add(*trainer_pids(run_dir))
    code = (
        "import sys; from lrsup.supervisor.run.operator import send_request; "
        "send_request(sys.argv[1], 'set_lr', lr=0.0125, why='by hand'); "
        "send_request(sys.argv[1], 'stop', why='morning')"
    )
    subprocess.run([sys.executable, "-c", code, str(run_dir)], check=True, timeout=30)
    out, err = finish(proc, 60)
    assert proc.returncode == 0, out + err
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert records[-1]["type"] == "end" and records[-1]["reason"] == "stopped"
    assert sum(1 for r in records if r["type"] == "epoch") < 200
    (override,) = [x for x in read_jsonl(run_dir / "journal.jsonl") if x["type"] == "override"]
    assert override["lr"] == 0.0125 and override["why"] == "by hand" and "@" in override["who"]
    assert any(r["type"] == "ack" and r["seq"] == override["seq"] and r["lr"] == 0.0125 for r in records)
    assert events(run_dir)[-1]["detail"].endswith("(morning) (exit status 0)")


def test_park_ends_the_trainer_keeps_the_supervisor_and_unpark_starts_a_new_attempt(workdir, procs):
    # A PBT population's turns (lrsup.supervisor.queue.population): park leaves a live supervisor
    # with no trainer (its slot is free); unpark starts a new attempt; neither is a restart.
    from lrsup.supervisor.run.operator import send_request
    from lrsup.supervisor.rundir.liveness import pid_alive

    proc = procs.lrsup_run(workdir, "r", "--epochs", "4", "--sleep", "0.3")
    procs.add(proc.pid)
    run_dir = workdir / "r"
    first = wait_for(lambda: trainer_pids(run_dir), 30, "the trainer to start")[0]
    procs.add(first)
    wait_for(lambda: epoch_records(run_dir) >= 1, 30, "an epoch record")
    send_request(run_dir, "park", who="lrsup-pbt", why="population g: 1 member(s) wait for a slot")
    wait_for(lambda: read_jsonl_state(run_dir)["state"] == "parked", 30, "the supervisor to park")
    wait_for(lambda: not pid_alive(first), 10, "the trainer to end")
    assert proc.poll() is None  # the supervisor waits, with no trainer
    time.sleep(1.0)
    assert read_jsonl_state(run_dir)["state"] == "parked" and trainer_pids(run_dir) == [first]
    send_request(run_dir, "unpark", who="lrsup-queue", why="a slot is free: its turn")
    out, err = finish(proc, 60)
    assert proc.returncode == 0, out + err
    procs.add(*trainer_pids(run_dir))
    assert len(trainer_pids(run_dir)) == 2
    names = [e["event"] for e in events(run_dir)]
    assert names.index("parking") < names.index("parked") < names.index("unparked") and names[-1] == "finished"
    assert "backoff" not in names
    state = read_jsonl_state(run_dir)
    assert (state["state"], state["attempt"], state["restarts"], state["exit_status"]) == ("exited", 2, 0, 0)


def test_a_supervisor_killed_while_parked_is_resumed_parked_and_goes_on_at_unpark(workdir, procs):
    from lrsup.supervisor.run.operator import send_request

    proc = procs.lrsup_run(workdir, "r", "--epochs", "4", "--sleep", "0.3")
    procs.add(proc.pid)
    run_dir = workdir / "r"
    first = wait_for(lambda: trainer_pids(run_dir), 30, "the trainer to start")[0]
    procs.add(first)
    wait_for(lambda: epoch_records(run_dir) >= 1, 30, "an epoch record")
    send_request(run_dir, "park", who="lrsup-pbt", why="population g: 1 member(s) wait for a slot")
    wait_for(lambda: read_jsonl_state(run_dir)["state"] == "parked", 30, "the supervisor to park")
    os.kill(proc.pid, signal.SIGKILL)  # the supervisor dies while its run waits for its turn
    proc.wait(10)
    again = procs.resume(workdir, run_dir)
    procs.add(again.pid)
    wait_for(lambda: read_jsonl_state(run_dir).get("supervisor_pid") == again.pid, 30, "the resumed supervisor")
    time.sleep(1.5)
    state = read_jsonl_state(run_dir)
    assert state["state"] == "parked" and trainer_pids(run_dir) == [first]  # no trainer before its turn
    send_request(run_dir, "unpark", who="lrsup-queue", why="a slot is free: its turn")
    out, err = finish(again, 60)
    assert again.returncode == 0, out + err
    procs.add(*trainer_pids(run_dir))
    assert len(trainer_pids(run_dir)) == 2
    state = read_jsonl_state(run_dir)
    assert (state["state"], state["restarts"], state["turns"], state["exit_status"]) == ("exited", 0, 1, 0)
