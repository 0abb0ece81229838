"""The supervisor is dead longer than the agent's ``verdict_timeout``: the trainer goes on alone through
several epochs, and ``lrsup resume`` decides each of them exactly once, never the same cut again on
every epoch the trainer passed alone (issue 17: resume tests elsewhere use verdict_timeout = 30 to
keep this case out; here it is 1 s, the faults' default)."""

from __future__ import annotations

import json

import pytest

from tests.faults.conftest import events, finish, read_jsonl, trainer_pids, wait_for


def test_resume_after_the_trainer_went_on_alone_decides_each_epoch_once(workdir, procs):
    proc = procs.lrsup_run(workdir, "r", "--epochs", "16", "--sleep", "0.03")
    procs.add(proc.pid)
    run_dir = workdir / "r"

    def count(name: str, key: str, value: str) -> int:
        path = run_dir / name
        return sum(1 for x in read_jsonl(path) if x.get(key) == value) if path.exists() else 0

    def verdicts() -> int:
        return count("control.jsonl", "cmd", "verdict")

    def epochs() -> int:
        return count("metrics.jsonl", "type", "epoch")

    wait_for(lambda: verdicts() >= 3, 30, "three verdicts")
    proc.kill()  # SIGKILL: the trainer waits 1 s for each verdict, then goes on alone
    proc.communicate(timeout=10)
    (trainer,) = trainer_pids(run_dir)
    procs.add(trainer)
    decided = verdicts()
    wait_for(lambda: epochs() >= decided + 3, 30, "three epochs trained with no supervisor")
    resumed = procs.resume(workdir, run_dir)
    procs.add(resumed.pid)
    out, err = finish(resumed, 90)
    assert resumed.returncode == 0, out + err
    assert trainer_pids(run_dir) == [trainer]
    control = read_jsonl(run_dir / "control.jsonl")
    assert [c["seq"] for c in control] == list(range(1, len(control) + 1))
    contents = [json.dumps({k: v for k, v in c.items() if k not in ("seq", "time")}, sort_keys=True) for c in control]
    assert len(contents) == len(set(contents)), "a command was sent twice"
    # Each epoch decided once (one verdict each), and every cut halves the one before: none repeated,
    # none lost, on the epochs the trainer went through alone too.
    assert [c["epoch"] for c in control if c["cmd"] == "verdict"] == [-1, *range(16)]
    lrs = [c["lr"] for c in control if c["cmd"] == "set_lr"]
    assert len(lrs) == 15 and all(b == pytest.approx(a * 0.5) for a, b in zip([0.1] + lrs, lrs))
    decisions = [d for d in read_jsonl(run_dir / "journal.jsonl") if d["type"] == "decision"]
    assert len({d["epoch"] for d in decisions}) == len(decisions)
    # The trainer ends at the LR of the last cut: what the journal says lrsup decided is what it trains at.
    last_epoch = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("type") == "ack"][-1]
    assert last_epoch["lr"] == pytest.approx(lrs[-1])
    assert "resumed" in [e["event"] for e in events(run_dir)]
