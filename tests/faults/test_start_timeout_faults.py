"""A trainer that hangs before ``fit``, with real processes: ``[run] start_timeout``.

fault_trainer.py ``--start-delay`` sleeps before its start record in attempt 1 (data
loading that hangs); no heartbeat is written meanwhile. Bounded waits; pids killed in teardown.
"""

from __future__ import annotations

import time

from tests.faults.conftest import events, finish, read_jsonl, trainer_pids


def test_a_trainer_hanging_before_fit_is_killed_after_start_timeout_and_restarted(workdir, procs):
    (workdir / "lrsup.toml").write_text((workdir / "lrsup.toml").read_text() + "start_timeout = 2.0\n")
    began = time.time()
    proc = procs.lrsup_run(workdir, "r", "--epochs", "2", "--start-delay", "120")
    procs.add(proc.pid)
    out, err = finish(proc, 60)
    run_dir = workdir / "r"
    procs.add(*trainer_pids(run_dir))
    assert proc.returncode == 0, out + err
    assert len(trainer_pids(run_dir)) == 2  # attempt 1 killed, attempt 2 (no delay) trained
    evs = events(run_dir)
    (killing,) = [e for e in evs if e["event"] == "killing"]
    assert killing["detail"].startswith("trainer hung before training: no start record")
    assert 2.0 <= killing["time"] - began < 2.0 + 10.0
    assert any(e["event"] == "backoff" and "start_timeout" in e["detail"] for e in evs)
    assert any(e["event"] == "restarted" for e in evs) and evs[-1]["event"] == "finished"
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["type"] for r in records].count("start") == 1 and records[-1]["type"] == "end"


def test_a_slow_start_within_start_timeout_is_not_a_hang(workdir, procs):
    (workdir / "lrsup.toml").write_text(
        (workdir / "lrsup.toml").read_text() + "start_timeout = 6.0\nhang_timeout = 1.0\n"
    )
    proc = procs.lrsup_run(workdir, "r", "--epochs", "2", "--start-delay", "2.5")
    procs.add(proc.pid)
    out, err = finish(proc, 60)
    procs.add(*trainer_pids(workdir / "r"))
    assert proc.returncode == 0, out + err
    assert len(trainer_pids(workdir / "r")) == 1  # longer than hang_timeout before fit: not hung
    assert "killing" not in [e["event"] for e in events(workdir / "r")]
