"""A PBT donor's supervisor killed right after it journaled a donation (``donated``) or its release
(``donation_released``), before a snapshot saw it: ``lrsup resume`` rebuilds the donor's keep from
journal.jsonl, with no snapshot and with a snapshot older than the event, so the donated checkpoint
stays retained until it is released, and a released one is not kept (docs/scale.md, PBT). Killed
before the event (after the request's journal line, its retain or the retain's decision line), the
request is acted on again: its event journaled once, its retain sent once.

The fault trainer plays the population coordinator (``--request E:donate:MEMBER:CHECKPOINT``); it
takes no checkpoints, so what the donor retains is exactly its donation keeps.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lrsup.supervisor.config import run_config
from lrsup.supervisor.run.launch import build_engine
from lrsup.supervisor.run.operator import DONATION
from lrsup.supervisor.run.resume import rebuild
from lrsup.supervisor.rundir.layout import RunPaths
from lrsup.supervisor.rundir.recovery import read_control
from tests.faults.conftest import BASE_TOML, FAULT, events, finish, read_jsonl, trainer_pids

HOOK = Path(__file__).with_name("die_at_line.py")
TOML = BASE_TOML.replace("verdict_timeout = 1.0", "verdict_timeout = 60.0")  # the trainer waits for resume
NEVER, EVERY_PASS = "0", "0.001"  # [run] snapshot_interval: no snapshot; one after every pass that read records


def hook(cwd: Path, spec: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HOOK), spec, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def killed_at(tmp_path: Path, procs, snapshots: str, spec: str, *requests: str) -> Path:
    """Run the fault trainer with ``requests`` under a supervisor SIGKILLed right after its first line with ``spec``."""
    (tmp_path / "lrsup.toml").write_text(TOML + f"snapshot_interval = {snapshots}\n")
    args = ["--epochs", "5", "--steps", "2", *(x for r in requests for x in ("--request", r))]
    proc = hook(tmp_path, spec, "run", "r", str(FAULT), *args)
    procs.popens.append(proc)
    run_dir = tmp_path / "r"
    out, err = finish(proc, 60)
    procs.add(*trainer_pids(run_dir))
    assert proc.returncode == -signal.SIGKILL, out + err
    return run_dir


def resumed_engine(run_dir: Path):
    """What ``lrsup resume`` rebuilds (before its replay, which keeps touch no record of): the engine and its source."""
    paths = RunPaths(run_dir)
    return rebuild(paths, run_config(run_dir), read_control(paths.control), build_engine)


def resume(tmp_path: Path, run_dir: Path, procs) -> None:
    proc = hook(tmp_path, "-", "resume", str(run_dir))
    procs.popens.append(proc)
    out, err = finish(proc, 60)
    procs.add(*trainer_pids(run_dir))
    assert proc.returncode == 0, out + err


def retains(run_dir: Path) -> list[list[str]]:
    return [c["keep"] for c in read_jsonl(run_dir / "control.jsonl") if c["cmd"] == "retain"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("snapshots", [NEVER, EVERY_PASS])
def test_a_donation_survives_the_donors_supervisor_dying_before_a_snapshot_saw_it(snapshots, tmp_path, procs):
    run_dir = killed_at(tmp_path, procs, snapshots, "event=donated", "1:donate:m1:epoch-0001", "2:donate:m2:epoch-0002")
    assert retains(run_dir) == [["epoch-0001"]]  # the agent was told to keep it before the death
    rebuilt = resumed_engine(run_dir)
    if snapshots == NEVER:
        assert rebuilt.snapshot is None
    else:  # a snapshot from before the donation: it has no keep
        assert rebuilt.snapshot is not None and rebuilt.snapshot.engine["supervision"]["keeps"] == {}
    assert rebuilt.engine.state.keeps == {DONATION + "m1": ("epoch-0001",)}
    assert rebuilt.engine.state.retain_set() == ("epoch-0001",)
    resume(tmp_path, run_dir, procs)
    # m2's donation after the resume keeps m1's too: the resumed engine did not forget it
    assert retains(run_dir) == [["epoch-0001"], ["epoch-0001", "epoch-0002"]]
    assert [e["event"] for e in events(run_dir) if e["event"].startswith("donat")] == ["donated", "donated"]


@pytest.mark.timeout(120)
def test_a_released_donation_stays_released_when_the_snapshot_still_had_the_keep(tmp_path, procs):
    requests = ("1:donate:m1:epoch-0001", "2:donation_done:m1:epoch-0001", "3:donate:m2:epoch-0003")
    run_dir = killed_at(tmp_path, procs, EVERY_PASS, "event=donation_released", *requests)
    assert retains(run_dir) == [["epoch-0001"], []]
    rebuilt = resumed_engine(run_dir)
    assert rebuilt.snapshot is not None  # written after the donation, before its release
    assert rebuilt.snapshot.engine["supervision"]["keeps"] == {DONATION + "m1": ["epoch-0001"]}
    assert rebuilt.engine.state.keeps == {} and rebuilt.engine.state.retain_set() == ()
    resume(tmp_path, run_dir, procs)
    assert retains(run_dir) == [["epoch-0001"], [], ["epoch-0003"]]  # no stale keep of m1's


@pytest.mark.timeout(120)
@pytest.mark.parametrize("die_after", ["cmd=retain", "policy=engine"])
def test_a_donation_whose_event_was_not_journaled_is_finished_by_resume(die_after, tmp_path, procs):
    # killed after the donation's retain (or its decision line), before its ``donated`` event
    run_dir = killed_at(tmp_path, procs, NEVER, die_after, "1:donate:m1:epoch-0001", "2:donate:m2:epoch-0002")
    assert retains(run_dir) == [["epoch-0001"]] and "donated" not in [e["event"] for e in events(run_dir)]
    resume(tmp_path, run_dir, procs)
    assert retains(run_dir) == [["epoch-0001"], ["epoch-0001", "epoch-0002"]]  # none sent twice, none lost
    assert [e["event"] for e in events(run_dir) if e["event"].startswith("donat")] == ["donated", "donated"]
    retain_seqs = [c["seq"] for c in read_jsonl(run_dir / "control.jsonl") if c["cmd"] == "retain"]
    decisions = [j["seq"] for j in read_jsonl(run_dir / "journal.jsonl") if j.get("action") == "retain"]
    assert decisions == retain_seqs  # each retain's decision line once


@pytest.mark.timeout(120)
def test_a_donation_that_needed_no_retain_is_kept_when_its_event_was_not_journaled(tmp_path, procs):
    # m2 is given epoch-0001, already kept for m1: no retain, its request line has no seq. Killed after
    # that line, the resumed supervisor must still keep it for m2 when m1 is done with it.
    requests = ("1:donate:m1:epoch-0001", "2:donate:m2:epoch-0001", "3:donation_done:m1:epoch-0001")
    run_dir = killed_at(tmp_path, procs, NEVER, "why=epoch 2", *requests)
    (request,) = [j for j in read_jsonl(run_dir / "journal.jsonl") if j.get("why") == "epoch 2"]
    assert request["type"] == "request" and request["seq"] is None
    resume(tmp_path, run_dir, procs)
    assert retains(run_dir) == [["epoch-0001"]]  # never released: m2 still has it
    names = [e["event"] for e in events(run_dir) if e["event"].startswith("donat")]
    assert names == ["donated", "donated", "donation_released"]
