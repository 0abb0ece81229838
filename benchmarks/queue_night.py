"""The queue: 8 short digits runs with ``--slots 1`` vs ``--slots 2``, and the daemon's own cost.

    python -m benchmarks.queue_night            # ~10 min on 2 cores; updates docs/benchmarks.md
    python -m benchmarks.queue_night --smoke    # seconds: 4 fake-trainer runs, docs untouched

(Named ``queue_night``, not ``queue``: a ``queue.py`` in benchmarks/ would shadow the standard
library's ``queue`` for ``python benchmarks/run_all.py``.)

Throughput: the same 8 entries (``examples/digits/train.py -- --epochs 3``, the default stack)
are queued in a fresh runs directory and ``lrsup queue run --slots N --gpus none`` is timed from
start to exit, for N = 1 then 2. The daemon's overhead: its own CPU time (utime + stime of the
``queue run`` process, not its children) and resident memory (VmRSS), sampled every 0.5 s while
it runs the 8 runs (busy), and over 20 s of ``queue run --follow`` on an empty queue (idle).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import ROOT, machine_line, md_table, print_table, update_section

DIGITS = ROOT / "examples" / "digits" / "train.py"
FAKE = ROOT / "tests" / "fakes" / "fake_trainer.py"
TICK = os.sysconf("SC_CLK_TCK")


def _lrsup(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lrsup.supervisor.cli.main", *args], cwd=cwd, capture_output=True, text=True, check=True
    )


def _proc_sample(pid: int) -> tuple[float, float] | None:
    """(CPU seconds of the process itself, VmRSS in MB), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
        rss = next(
            int(line.split()[1]) / 1024
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        return cpu, rss
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def _night(cwd: Path, slots: int, entries: list[list[str]], follow_for: float | None = None) -> dict:
    """Queue ``entries`` (script + args) and run the queue; wall time, daemon CPU and peak RSS."""
    for i, argv in enumerate(entries):
        _lrsup(cwd, "queue", "add", "--name", f"r{i}", *argv)
    args = ["queue", "run", "--slots", str(slots), "--gpus", "none"] + (["--follow"] if follow_for else [])
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrsup.supervisor.cli.main", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    cpu = rss = 0.0
    settled: tuple[float, float] | None = None  # (time, cpu) once start-up is over (idle only)
    while proc.poll() is None:
        sample = _proc_sample(proc.pid)
        if sample is not None:
            cpu, rss = sample[0], max(rss, sample[1])
            if follow_for and settled is None and time.monotonic() - t0 > follow_for / 4:
                settled = (time.monotonic(), cpu)
        if follow_for and time.monotonic() - t0 > follow_for:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            break
        time.sleep(0.5)
    wall = time.monotonic() - t0
    if settled is not None:  # idle: the CPU after start-up, over the time after it
        wall, cpu = time.monotonic() - settled[0], cpu - settled[1]
    return {"wall": wall, "cpu": cpu, "rss": rss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds: fake-trainer runs, docs untouched")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    opts = parser.parse_args(argv)
    if opts.smoke:
        entry = [str(FAKE), "--", "--epochs", "3", "--steps", "3", "--sleep", "0.05"]
        runs, idle_for = 4, 3.0
    else:
        entry = [str(DIGITS), "--", "--epochs", str(opts.epochs)]
        runs, idle_for = opts.runs, 20.0
    results = {}
    for slots in (1, 2):
        with tempfile.TemporaryDirectory(prefix="lrsup-queue-bench-") as tmp:
            results[slots] = _night(Path(tmp), slots, [entry] * runs)
    with tempfile.TemporaryDirectory(prefix="lrsup-queue-bench-") as tmp:
        idle = _night(Path(tmp), 1, [], follow_for=idle_for)
    one, two = results[1], results[2]
    rows = [
        [f"{runs} runs, --slots 1", f"{one['wall']:.1f} s", f"{runs / one['wall'] * 3600:.0f} runs/h", ""],
        [
            f"{runs} runs, --slots 2",
            f"{two['wall']:.1f} s",
            f"{runs / two['wall'] * 3600:.0f} runs/h",
            f"x{one['wall'] / two['wall']:.2f} throughput",
        ],
        [
            "daemon busy (--slots 2): CPU",
            f"{two['cpu']:.2f} s",
            f"{two['cpu'] / two['wall'] * 100:.2f}% of one core",
            f"over {two['wall']:.0f} s",
        ],
        [
            "daemon busy (--slots 1): CPU",
            f"{one['cpu']:.2f} s",
            f"{one['cpu'] / one['wall'] * 100:.2f}% of one core",
            f"over {one['wall']:.0f} s",
        ],
        ["daemon busy: peak RSS", f"{max(one['rss'], two['rss']):.1f} MB", "", "VmRSS of queue run itself"],
        [
            "daemon idle (--follow, empty queue): CPU",
            f"{idle['cpu']:.2f} s",
            f"{idle['cpu'] / idle['wall'] * 100:.2f}% of one core",
            f"over {idle['wall']:.0f} s after start-up",
        ],
        ["daemon idle: RSS", f"{idle['rss']:.1f} MB", "", ""],
    ]
    header = ["measure", "value", "rate", "detail"]
    print_table("queue", header, rows)
    if opts.smoke:
        return 0
    body = "\n".join(
        [
            "## 5. The queue",
            "",
            "Reproduce: `python -m benchmarks.queue_night` (about 10 minutes on 2 cores). The machine is shared: "
            "other processes' load (the load average below) slows both arms.",
            "",
            machine_line(),
            "",
            f"{runs} entries of `examples/digits/train.py -- --epochs {opts.epochs}` (the default stack, so each run "
            "begins with its 100-step range test) are queued in a fresh runs directory and `lrsup queue run --slots N "
            "--gpus none` is timed from start to exit. Each run is a separate `lrsup run` (a supervisor) with its own "
            "TensorFlow trainer, so on 2 cores two slots overlap one run's start-up (imports, data) with the other's "
            "training rather than doubling the speed. The daemon's cost is its own process (utime + stime and VmRSS "
            "of `queue run`, sampled every 0.5 s; the supervisors and trainers are separate processes); idle is "
            f"`queue run --follow` on an empty queue for {idle_for:.0f} s, polling the queue every 0.5 s (its first "
            "quarter, the start-up, left out of the CPU figure).",
            "",
            md_table(header, rows),
        ]
    )
    print(update_section("queue", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
