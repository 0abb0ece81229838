"""Exactly once, across every death: the supervisor is killed at each of its writes in turn, then resumed.

A short run (5 epochs, a plateau policy cutting the LR on every epoch after the first, an
operator who holds the policies at epoch 1, sets the LR at epoch 2 and releases at epoch 3)
writes W lines and files (control.jsonl, journal.jsonl, supervisor.json, snapshot.json).
For every N in 1..W the supervisor is SIGKILLed right after its Nth write
(tests/faults/die_at_write.py), ``lrsup resume`` takes over, and the finished run must show
every epoch decided once, every command sent once (none re-sent after the resume), every
operator request acted on once, the hold in force throughout, every ack journaled once,
and one end.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.faults.conftest import BASE_TOML, FAULT, events, finish, read_jsonl, trainer_pids

HOOK = Path(__file__).with_name("die_at_write.py")
EPOCHS = 5
ARGS = ["--epochs", str(EPOCHS), "--steps", "2", "--request", "1:hold", "--request", "2:set_lr:0.3"]
ARGS += ["--request", "3:release"]
# The trainer waits for its verdicts (no supervisor: no progress), snapshots come often (more writes to die at).
TOML = BASE_TOML.replace("verdict_timeout = 1.0", "verdict_timeout = 60.0") + "snapshot_interval = 0.05\n"
MAX_WRITES = 60  # a clean run writes about 37 times; the tests beyond its count are skipped


def hook(cwd: Path, limit: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HOOK), str(limit), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def start(tmp: Path, procs, limit: int) -> tuple[subprocess.Popen, Path]:
    (tmp / "lrsup.toml").write_text(TOML)
    proc = hook(tmp, limit, "run", "r", str(FAULT), *ARGS)
    procs.popens.append(proc)
    procs.add(proc.pid)
    return proc, tmp / "r"


def command_content(command: dict) -> str:
    return json.dumps({k: v for k, v in command.items() if k not in ("seq", "time")}, sort_keys=True)


def check_exactly_once(run_dir: Path) -> None:
    control = read_jsonl(run_dir / "control.jsonl")
    journal = read_jsonl(run_dir / "journal.jsonl")
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [c["seq"] for c in control] == list(range(1, len(control) + 1))
    # Every start and epoch record decided exactly once (the start barrier's verdict is epoch -1).
    assert [c["epoch"] for c in control if c["cmd"] == "verdict"] == list(range(-1, EPOCHS))
    sent = [c for c in control if c["cmd"] != "verdict"]
    contents = [command_content(c) for c in sent]
    assert len(contents) == len(set(contents)), f"a command was sent twice: {contents}"
    # Every operator request acted on once: one journal line each, the set_lr sent once.
    assert [j["op"] for j in journal if j["type"] == "request"] == ["hold", "set_lr", "release"]
    overrides = [c["lr"] for c in sent if c.get("reason", "").startswith("operator override")]
    assert overrides == [0.3]
    # Every command sent has a journal line saying why, and no command two.
    why = Counter(j["seq"] for j in journal if j["type"] in ("decision", "override") and j.get("seq") is not None)
    assert all(n == 1 for n in why.values()), why
    requested = {j["seq"] for j in journal if j["type"] == "request" and j.get("seq") is not None}
    assert {c["seq"] for c in sent} <= set(why) | requested
    # Every ack applied by the trainer once and journaled once.
    acks = [r["seq"] for r in records if r.get("type") == "ack"]
    assert len(acks) == len(set(acks))
    applied = Counter(j["seq"] for j in journal if j["type"] == "applied")
    assert all(n == 1 for n in applied.values()) and set(applied) == set(acks)
    assert [e["event"] for e in events(run_dir)].count("finished") == 1
    # The hold was in force from its request line to the release's, across the crash: no policy
    # command was written meanwhile (the operator's own set_lr is one).
    held = [j["time"] for j in journal if j["type"] == "request" and j["op"] in ("hold", "release")]
    written = [c for c in sent if held[0] < c["time"] < held[1]]
    assert all(c.get("reason", "").startswith("operator override") for c in written), written


@pytest.fixture(scope="module")
def writes(tmp_path_factory) -> int:
    """How many times a clean run writes (and that a clean run passes the checks)."""
    from tests.faults.conftest import Procs

    procs = Procs()
    try:
        proc, run_dir = start(tmp_path_factory.mktemp("clean"), procs, 0)
        out, err = finish(proc, 60)
        procs.add(*trainer_pids(run_dir))
        assert proc.returncode == 0, out + err
        check_exactly_once(run_dir)
        return int(re.search(r"die_at_write: (\d+) writes", err).group(1))
    finally:
        procs.cleanup()


@pytest.mark.parametrize("n", range(1, MAX_WRITES + 1))
def test_killed_at_each_write_then_resumed_everything_happens_once(n, writes, tmp_path, procs):
    if n > writes:
        pytest.skip(f"a clean run writes {writes} times")
    proc, run_dir = start(tmp_path, procs, n)
    out, err = finish(proc, 60)
    procs.add(*trainer_pids(run_dir))
    if proc.returncode == 0:  # this run wrote fewer times than the clean one (fewer snapshots): not killed
        assert n > writes - 3, out + err
        check_exactly_once(run_dir)
        return
    assert proc.returncode == -signal.SIGKILL, out + err
    finished = json.loads((run_dir / "supervisor.json").read_text())["exit_status"] is not None
    resumed = hook(tmp_path, 0, "resume", str(run_dir))
    procs.popens.append(resumed)
    out, err = finish(resumed, 90)
    procs.add(*trainer_pids(run_dir))
    if finished:  # killed after its last write: nothing left to resume
        assert resumed.returncode == 2 and "the run already finished" in err, out + err
    else:
        assert resumed.returncode == 0, out + err
    check_exactly_once(run_dir)
