"""``lrsup sweep --pbt`` then ``queue run``: a population of 4 fake trainers (real supervisors)
in which the worst member copies the best one's checkpoint in place, with no process restart;
the member takes its new origin, the donor keeps the donated checkpoint (``keep_last = 1``
would prune it) until the member has loaded it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.queue.night_helpers import PBT_CONFIG, entries, kill_runs, lines, lrsup, pbt_sweep

pytestmark = pytest.mark.timeout(180)

PBT = PBT_CONFIG + "[agent]\nkeep_last = 1\n"


def test_a_population_exploits_in_place(tmp_path: Path) -> None:
    # Epochs of 0.6 s, 8 of them: the donor is still running when the coordinator's donate
    # request reaches it at the epoch-2 boundary, even on a loaded machine (with 0.2 s epochs
    # the donor could finish first and never journal the donation).
    group = pbt_sweep(
        tmp_path, PBT,
        "--epochs", "8", "--steps", "4", "--sleep", "0.15", "--checkpoints", "--lr", "0.02",
    )  # fmt: skip
    assert (tmp_path / "runs" / ".queue" / "pbt" / f"{group}.json").is_file()
    try:
        run = lrsup(tmp_path, "queue", "run", "--slots", "4", timeout=150)
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        kill_runs(tmp_path / "runs")
    found = {Path(e["run_dir"]).name: Path(e["run_dir"]) for e in entries(tmp_path)}
    assert all(e["status"] == "done" for e in entries(tmp_path))
    worst = next(d for n, d in found.items() if "val-loss2.0" in n)
    journal = lines(worst / "journal.jsonl")
    exploits = [j for j in journal if j.get("event") == "exploit"]
    assert exploits, run.stdout
    donor = Path(exploits[0]["peer"])
    assert "val-loss0.5" in donor.name and exploits[0]["checkpoint"].startswith("epoch-")
    assert exploits[0]["new"]["lr"] in (0.01, 0.02, 0.04)
    assert any(
        j.get("event") == "donated" and j["peer"] == str(worst.resolve()) for j in lines(donor / "journal.jsonl")
    )
    metrics = lines(worst / "metrics.jsonl")
    acks = [r for r in metrics if r.get("type") == "ack" and r.get("cmd") == "rollback"]
    assert acks and not [r for r in metrics if r.get("type") == "error"]
    assert acks[0]["lr"] == exploits[0]["new"]["lr"]
    assert len([r for r in metrics if r.get("type") == "start"]) == 1  # one process: no restart
    # the member's new origin: a checkpoint right after the rollback's ack, the only one it kept then
    at = metrics.index(acks[0])
    base = metrics[at + 1]
    assert base["type"] == "checkpoint" and base["name"] == exploits[0]["base"], metrics[at : at + 3]
    before = {r["name"] for r in metrics[:at] if r.get("type") == "checkpoint"}
    retains = [c["keep"] for c in lines(worst / "control.jsonl") if c["cmd"] == "retain" and base["name"] in c["keep"]]
    assert retains and not before & set(retains[0]), (before, retains)
    # the donor kept the donated checkpoint from the donate request on
    donor_control = lines(donor / "control.jsonl")
    # (with 8 epochs there are several rounds: the donation of this exploit is one of them). When the
    # donated checkpoint is already retained for another reason (the donor's newest, or an earlier
    # donation of it), the keep changes nothing and no retain is sent for it: any retain keeps it.
    kept = [c for c in donor_control if c["cmd"] == "retain"]
    assert any(exploits[0]["checkpoint"] in c["keep"] for c in kept), donor_control
    daemon = lines(tmp_path / "runs" / ".queue" / "daemon.jsonl")
    assert any(d["event"] == "pbt_exploit" for d in daemon) and not any(d["event"] == "pbt_error" for d in daemon)
    assert not any(d["event"] in ("pbt_note", "pbt_park") for d in daemon)  # slots for all: no turns
    report = lrsup(tmp_path, "report", "--group", group, timeout=120)
    assert report.returncode == 0, report.stderr
    assert f"{worst.name} copied {donor.name}" in report.stdout and "population best val_loss: 0.5" in report.stdout
    folder = tmp_path / "runs" / f"{group}-report"
    assert "## Lineage" in (folder / "population.md").read_text()
    assert (folder / "population.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "(population.png)" in (folder / "compare.md").read_text()


def test_members_that_crash_are_restarted_and_rejoin_the_population(tmp_path: Path) -> None:
    # Every member's trainer crashes once in epoch 3 (0-based): its supervisor restarts it from its
    # newest checkpoint, and the coordinator compares it again once it reports: rounds go on after.
    pbt_sweep(
        tmp_path, PBT,
        "--epochs", "10", "--steps", "4", "--sleep", "0.15", "--checkpoints", "--lr", "0.02",
        "--crash-once-at-epoch", "3",
    )  # fmt: skip
    try:
        run = lrsup(tmp_path, "queue", "run", "--slots", "4", timeout=170)
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        kill_runs(tmp_path / "runs")
    found = [Path(e["run_dir"]) for e in entries(tmp_path)]
    assert all(e["status"] == "done" for e in entries(tmp_path)), run.stdout
    for run_dir in found:  # each crashed once and was restarted by its own supervisor
        assert len([r for r in lines(run_dir / "metrics.jsonl") if r.get("type") == "start"]) == 2
    exploits = [j for d in found for j in lines(d / "journal.jsonl") if j.get("event") == "exploit"]
    assert any(j["at_epoch"] >= 4 for j in exploits), [(j["peer"], j["at_epoch"]) for j in exploits]
    daemon = lines(tmp_path / "runs" / ".queue" / "daemon.jsonl")
    assert not any(d["event"] == "pbt_error" for d in daemon), daemon


def test_a_population_larger_than_the_slots_takes_turns(tmp_path: Path) -> None:
    # 4 members, 2 slots (the issue's `--population 8 ... --slots 4`, halved): at each boundary a
    # running member gives way while others wait (parked: its supervisor stays, its trainer ends),
    # and the queue gives the free slot to the member parked longest, which goes on from its
    # checkpoint. Every member finishes all its epochs; turns are not restarts.
    group = pbt_sweep(
        tmp_path, PBT,
        "--epochs", "6", "--steps", "4", "--sleep", "0.1", "--checkpoints", "--lr", "0.02",
    )  # fmt: skip
    try:
        run = lrsup(tmp_path, "queue", "run", "--slots", "2", timeout=170)
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        kill_runs(tmp_path / "runs")
    assert all(e["status"] == "done" for e in entries(tmp_path)), run.stdout
    daemon = lines(tmp_path / "runs" / ".queue" / "daemon.jsonl")
    events = [d["event"] for d in daemon]
    assert "pbt_park" in events and "parked" in events and "unparking" in events, run.stdout
    assert "pbt_error" not in events, run.stdout
    (note,) = [d["detail"] for d in daemon if d["event"] == "pbt_note"]  # said once, at the start
    assert "4 members, 2 slot(s): members take turns" in note and "--slots 4" in note
    started = [d for d in daemon if d["event"] == "started"]
    assert len(started) == 4
    turns = 0
    for e in entries(tmp_path):
        run_dir = Path(e["run_dir"])
        metrics = lines(run_dir / "metrics.jsonl")
        order = [r["epoch"] for r in metrics if r.get("type") == "epoch"]
        assert set(order) == set(range(6)), (run_dir.name, order)  # every epoch, parked or not
        # a turn goes on from the member's checkpoint (after an exploit: its new origin), never from scratch
        assert order.count(0) == 1, (run_dir.name, order)
        journal = lines(run_dir / "journal.jsonl")
        turns += sum(1 for j in journal if j.get("event") == "unparked")
        state = json.loads((run_dir / "supervisor.json").read_text())
        assert state["restarts"] == 0, (run_dir.name, state)  # a turn is not a restart
    assert turns >= 1
    report = lrsup(tmp_path, "report", "--group", group, timeout=120)
    assert report.returncode == 0, report.stderr
    parked = sum(1 for d in daemon if d["event"] == "parked")
    assert f"{parked} turn(s)" in report.stdout, report.stdout
    assert "## Turns" in (tmp_path / "runs" / f"{group}-report" / "population.md").read_text()
