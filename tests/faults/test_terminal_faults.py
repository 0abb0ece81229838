"""A closed stdout or a hung-up terminal never ends a run (issue 17, item 10).

``lrsup run ... | head -3`` closes lrsup's stdout after three lines; an ssh session that
closes sends SIGHUP. Either way the run goes on, writing to the run directory only, says
so in the journal, and finishes as it would have: exit 0, a ``finished`` event,
supervisor.json ``exited``.
"""

from __future__ import annotations

import json
import signal

from tests.faults.conftest import events, finish, trainer_pids, wait_for


def finished_normally(proc, run_dir, out: str, err: str) -> list[dict]:
    assert proc.returncode == 0, out + err
    procs_events = events(run_dir)
    assert procs_events[-1]["event"] == "finished" and procs_events[-1]["status"] == 0
    state = json.loads((run_dir / "supervisor.json").read_text())
    assert state["state"] == "exited" and state["exit_status"] == 0
    assert "fault: done (completed)" in (run_dir / "trainer.log").read_text()
    return procs_events


def test_a_closed_stdout_does_not_end_the_run(workdir, procs):
    proc = procs.lrsup_run(workdir, "r", "--epochs", "6", "--sleep", "0.05")
    procs.add(proc.pid)
    for _ in range(3):  # like `| head -3`
        proc.stdout.readline()
    proc.stdout.close()
    procs.add(*trainer_pids(workdir / "r"))
    proc.wait(timeout=60)
    err = proc.stderr.read()
    found = finished_normally(proc, workdir / "r", "", err)
    lost = [e for e in found if e["event"] == "output_closed"]
    assert len(lost) == 1 and "writing to the run directory only" in lost[0]["detail"]
    assert "Traceback" not in err


def test_sighup_does_not_end_the_run(workdir, procs):
    proc = procs.lrsup_run(workdir, "r", "--epochs", "6", "--sleep", "0.05")
    procs.add(proc.pid)
    run_dir = workdir / "r"
    journal = run_dir / "journal.jsonl"
    wait_for(lambda: journal.exists() and any(e["event"] == "started" for e in events(run_dir)), 30, "the start")
    procs.add(*trainer_pids(run_dir))
    proc.send_signal(signal.SIGHUP)
    out, err = finish(proc, 60)
    found = finished_normally(proc, run_dir, out, err)
    assert [e["event"] for e in found].count("hangup") == 1
    assert not any(e["event"] == "stop_requested" for e in found)
