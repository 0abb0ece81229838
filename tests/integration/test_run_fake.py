"""End to end without TensorFlow: the real ``lrsup run`` supervising tests/fakes/fake_trainer.py.

Each test starts ``python -m lrsup.supervisor.cli.main run ...`` as a subprocess (bounded by a
timeout) in a temporary directory and reads the run directory it leaves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_trainer.py"
LRSUP = [sys.executable, "-m", "lrsup.supervisor.cli.main"]

PLATEAU = """
[[policy]]
use = "plateau"
factor = 0.5
patience = 2

[agent]
batch_every = 1
batch_min_interval = 0

[run]
grace_period = 1.0
"""


def lrsup(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LRSUP, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def only_run_dir(cwd: Path) -> Path:
    (run_dir,) = (cwd / "runs").iterdir()
    return run_dir


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "lrsup.toml").write_text(PLATEAU)
    return tmp_path


def test_plateau_cut_lands_at_the_decided_step(workdir):
    result = lrsup(
        "run", str(FAKE), "--", "--epochs", "6", "--steps", "4", "--val-loss", "0.9,0.8,0.8,0.8,0.7,0.6", cwd=workdir
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = only_run_dir(workdir)
    journal = read_jsonl(run_dir / "journal.jsonl")
    (decision,) = [x for x in journal if x["type"] == "decision"]
    # best 0.8 at epoch 1; epochs 2 and 3 do not improve: patience 2 cuts at the end of epoch 3.
    where = (decision["policy"], decision["action"], decision["epoch"], decision["step"])
    assert where == ("plateau", "scale_lr", 3, 16)
    assert decision["lr"] == pytest.approx(0.05) and decision["suppressed"] is None
    (applied,) = [x for x in journal if x["type"] == "applied"]
    assert (applied["seq"], applied["epoch"], applied["step"], applied["late"]) == (decision["seq"], 3, 16, False)
    records = read_jsonl(run_dir / "metrics.jsonl")
    stepped = [r for r in records if r["type"] in ("batch", "epoch")]
    assert {r["lr"] for r in stepped if r["step"] <= 16} == {0.1}
    after = [r["lr"] for r in stepped if r["step"] > 16]
    assert len(after) == 8 + 2 and after == pytest.approx([0.05] * len(after))  # 2 epochs x 4 batches + 2 epochs
    assert [r["lr"] for r in records if r["type"] == "epoch"] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05])
    control = read_jsonl(run_dir / "control.jsonl")
    assert [c["epoch"] for c in control if c["cmd"] == "verdict"] == [-1, 0, 1, 2, 3, 4, 5]  # -1: the start
    events = [x["event"] for x in journal if x["type"] == "event"]
    assert events[:2] == ["spawned", "started"] and events[-1] == "finished"
    assert "fake: done (completed) final lr=0.05" in (run_dir / "trainer.log").read_text()


WARMUP = """
[[policy]]
use = "warmup"
steps = 4
start_lr = 0.01
target = 0.05

[agent]
batch_every = 1
batch_min_interval = 0
"""


def test_a_schedule_decided_on_the_start_record_drives_the_first_batch(tmp_path):
    (tmp_path / "lrsup.toml").write_text(WARMUP)
    result = lrsup("run", str(FAKE), "--", "--epochs", "2", "--steps", "4", "--lr", "0.1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = only_run_dir(tmp_path)
    control = read_jsonl(run_dir / "control.jsonl")
    assert [c["cmd"] for c in control][:2] == ["set_schedule", "verdict"]  # the decision, then the start's verdict
    assert control[1]["epoch"] == -1
    records = read_jsonl(run_dir / "metrics.jsonl")
    (ack,) = [r for r in records if r["type"] == "ack"]
    assert (ack["cmd"], ack["step"], ack["late"]) == ("set_schedule", 0, False)
    batches = [r for r in records if r["type"] == "batch"]
    # Step 1 trained at the warmup's first LR (start_lr), not the script's 0.1; then the ramp.
    assert batches[0]["step"] == 1 and batches[0]["logs"]["lr_seen"] == pytest.approx(0.01)
    assert [b["logs"]["lr_seen"] for b in batches[:5]] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    assert "no verdict" not in (run_dir / "trainer.log").read_text()


def test_plain_output_when_not_a_tty(workdir):
    result = lrsup("run", str(FAKE), "--", "--epochs", "4", "--val-loss", "0.9,0.8,0.8,0.8", cwd=workdir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b[" not in out  # no terminal control sequences
    assert "epoch 1/4 loss=1 val_loss=0.9 lr=0.1" in out
    assert "decision plateau scale_lr 0.05: " in out
    assert "fake: epoch 0 val_loss=0.9 lr=0.1" in out  # the trainer's own output passes through
    assert out.rstrip().endswith("lrsup: training completed (exit status 0)")


@pytest.mark.parametrize(
    "args, status, reason",
    [
        (["--exit-code", "3"], 3, "trainer exited with status 3"),
        (["--crash-at-epoch", "1"], 1, "trainer exited with status 1 (training raised an exception)"),
    ],
)
def test_trainer_status_passes_through(workdir, args, status, reason):
    # Restarts off: a crash is final and its status passes through (tests/faults cover restarts).
    (workdir / "lrsup.toml").write_text(PLATEAU + "max_restarts = 0\n")
    result = lrsup("run", str(FAKE), "--", "--epochs", "3", *args, cwd=workdir)
    assert result.returncode == status, result.stdout + result.stderr
    finished = read_jsonl(only_run_dir(workdir) / "journal.jsonl")[-1]
    assert finished["event"] == "finished" and finished["status"] == status
    assert finished["detail"] == f"{reason} (exit status {status})"
    if "--crash-at-epoch" in args:
        assert "RuntimeError: fake crash at epoch 1" in (only_run_dir(workdir) / "trainer.log").read_text()


def test_config_error_exits_2_and_leaves_nothing(tmp_path):
    (tmp_path / "lrsup.toml").write_text('[[policy]]\nuse = "plateau"\nfactor = 1.5\n')
    result = lrsup("run", str(FAKE), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"lrsup: {tmp_path / 'lrsup.toml'}: invalid configuration\n  - policy[0].factor:")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_config_from_option_and_from_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.lrsup]\n[[tool.lrsup.policy]]\nuse = "plateau"\npatience = 1\nfactor = 0.2\n'
    )
    (tmp_path / "night.toml").write_text("policy = []\n")
    losses = ["--epochs", "3", "--val-loss", "0.9,0.9,0.9"]
    result = lrsup("run", "--run-dir", "a", str(FAKE), "--", *losses, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["source"] == str(tmp_path / "pyproject.toml") and config["policies"][0]["factor"] == 0.2
    cuts = [x for x in read_jsonl(tmp_path / "a" / "journal.jsonl") if x["type"] == "decision"]
    assert [c["lr"] for c in cuts] == pytest.approx([0.02, 0.004])
    result = lrsup("run", "--config", "night.toml", "--run-dir", "b", str(FAKE), "--", *losses, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "b" / "config.json").read_text())["policies"] == []
    assert [x for x in read_jsonl(tmp_path / "b" / "journal.jsonl") if x["type"] == "decision"] == []
    assert oct((tmp_path / "b").stat().st_mode & 0o777) == "0o700"


def start_long_run(workdir: Path, *extra: str) -> tuple[subprocess.Popen, int, int]:
    """lrsup on a long fake run; returns (lrsup process, trainer pid, trainer's child pid)."""
    proc = subprocess.Popen(
        [
            *LRSUP,
            "run",
            str(FAKE),
            "--",
            "--epochs",
            "1000",
            "--steps",
            "5",
            "--sleep",
            "0.02",
            "--spawn-child",
            *extra,
        ],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    trainer = child = None
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while (trainer is None or child is None) and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("fake: child pid "):
            child = int(line.split()[-1])
        elif line.startswith("fake: pid "):
            trainer = int(line.split()[2])
    if trainer is None or child is None:
        proc.kill()
        proc.communicate(timeout=10)
        pytest.fail("the fake trainer did not start")
    time.sleep(0.3)  # a few epochs in
    return proc, trainer, child


def finish(proc: subprocess.Popen, timeout: float = 30) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    return out


def test_ctrl_c_stops_everything_with_no_orphan(workdir):
    proc, trainer, child = start_long_run(workdir)
    try:
        proc.send_signal(signal.SIGINT)
        out = finish(proc)
        assert proc.returncode == 130, out
        assert wait_gone(trainer), f"trainer {trainer} survived"
        assert wait_gone(child), f"trainer's child {child} survived"
        journal = read_jsonl(only_run_dir(workdir) / "journal.jsonl")
        events = [x["event"] for x in journal if x["type"] == "event"]
        assert "stop_requested" in events and events[-1] == "finished"
        assert journal[-1]["detail"].startswith("interrupted by the user (SIGINT)")
    finally:
        for pid in (trainer, child):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_trainer_ignoring_sigint_is_terminated_after_grace(workdir):
    proc, trainer, child = start_long_run(workdir, "--ignore-sigint")
    try:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out = finish(proc)
        assert proc.returncode == 130, out
        assert 0.9 <= time.monotonic() - t0 < 20  # one grace period of 1 s, then SIGTERM to the group
        assert wait_gone(trainer) and wait_gone(child)
        journal = read_jsonl(only_run_dir(workdir) / "journal.jsonl")
        signals = [x["detail"] for x in journal if x.get("event") == "signal"]
        assert signals[0].startswith("SIGINT to the trainer") and signals[1].startswith("SIGTERM to the trainer's")
    finally:
        for pid in (trainer, child):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
