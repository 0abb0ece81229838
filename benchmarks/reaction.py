"""Reaction time: from the agent writing a record to the command decided on it taking effect in the trainer.

    python -m benchmarks.reaction            # full run, updates docs/benchmarks.md
    python -m benchmarks.reaction --smoke    # seconds, docs untouched

The real supervisor loop (``lrsup.supervisor.runner.run``: follower, engine, control writer,
journal, lifecycle) supervises ``benchmarks/_reaction_trainer.py``, a Keras-free trainer
driving the agent core with a fake optimizer and a busy-wait step of ``--step-ms``. The stack
is ``plateau`` (patience 0 on a constant val_loss: an LR cut decided on every epoch record)
and ``benchmarks._policies:BatchPoke`` (an LR change decided on every 2nd batch record).
Reaction = the ack record's ``time`` minus the deciding record's ``time`` (both written by
the trainer's agent, same clock); for batch decisions also in steps (ack step - record step).
An epoch decision is late when its ack says ``late`` (the verdict did not arrive within
``verdict_timeout``). Once with the follower on watchdog (inotify), once polling
(``poll_interval`` 0.05 s, the default).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import ROOT, fmt_ms, machine_line, md_table, print_table, quantile, update_section


class NullDisplay:
    def on_record(self, record): pass
    def on_decision(self, decision): pass
    def on_output_line(self, line): pass
    def on_state(self, event, detail): pass
    def close(self): pass


CONFIG = """
[[policy]]
use = "plateau"
monitor = "val_loss"
factor = 0.9
patience = 0
min_delta = 0.0
min_lr = 0.0

[[policy]]
use = "benchmarks._policies:BatchPoke"
every = 2
"""


def _read(path: Path) -> list[dict]:
    from lrsup.supervisor.protocol import loads

    out = []
    if path.exists():
        for line in path.read_bytes().splitlines():
            if line.strip():
                out.append(loads(line))
    return out


def one_run(mode: str, epochs: int, steps: int, step_ms: float, tmp: Path) -> dict:
    from lrsup.supervisor import runner
    from lrsup.supervisor.config import load_config
    from lrsup.supervisor.rundir import RunDir

    cfg_path = tmp / f"{mode}.toml"
    cfg_path.write_text(CONFIG)
    config = load_config(cfg_path, cwd=ROOT)
    run_dir = tmp / f"run-{mode}"
    t0 = time.perf_counter()
    status = runner.run(config, script=ROOT / "benchmarks" / "_reaction_trainer.py",
                        args=["--epochs", str(epochs), "--steps", str(steps), "--step-ms", str(step_ms)],
                        run_dir=RunDir(run_dir), cwd=ROOT, display=NullDisplay(), handle_signals=False,
                        use_watchdog=(mode == "watchdog"))
    wall = time.perf_counter() - t0
    if status != 0:
        log = (run_dir / "trainer.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{mode}: supervised run exited with {status}; trainer.log ends:\n{log}")
    metrics = _read(run_dir / "metrics.jsonl")
    journal = _read(run_dir / "journal.jsonl")
    epochs_rec = {r["epoch"]: r for r in metrics if r.get("type") == "epoch"}
    batches = {r["step"]: r for r in metrics if r.get("type") == "batch"}
    acks = {r["seq"]: r for r in metrics if r.get("type") == "ack"}
    out = {"epoch_s": [], "batch_s": [], "batch_steps": [], "late": 0, "epoch_decisions": 0, "unapplied": 0,
           "wall": wall, "epoch_step_lag": []}
    for d in journal:
        if d.get("type") != "decision" or d.get("seq") is None:
            continue
        ack = acks.get(d["seq"])
        if ack is None:
            out["unapplied"] += 1
            continue
        if d["policy"] == "plateau":
            src = epochs_rec[d["epoch"]]
            out["epoch_decisions"] += 1
            out["epoch_s"].append(ack["time"] - src["time"])
            out["epoch_step_lag"].append(ack["step"] - src["step"])
            out["late"] += bool(ack.get("late"))
        else:
            src = batches[d["step"]]
            out["batch_s"].append(ack["time"] - src["time"])
            out["batch_steps"].append(ack["step"] - src["step"])
    return out


def _pcts(xs, fmt=fmt_ms):
    if not xs:
        return ["-"] * 5
    return [str(len(xs))] + [fmt(quantile(xs, q)) for q in (0.5, 0.95, 0.99)] + [fmt(max(xs))]


HEADER = ["mode", "decided on", "n", "p50", "p95", "p99", "max"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--step-ms", type=float, default=2.0)
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.steps, args.step_ms = 4, 20, 0.2
    header = machine_line()
    rows, extra = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("watchdog", "polling"):
            r = one_run(mode, args.epochs, args.steps, args.step_ms, Path(tmp))
            rows.append([mode, "epoch record (plateau)", *_pcts(r["epoch_s"])])
            rows.append([mode, "batch record (every 2nd)", *_pcts(r["batch_s"])])
            rows.append([mode, "batch record, in steps", *_pcts(r["batch_steps"], fmt=lambda v: f"{v:.0f}")])
            extra.append([mode, r["epoch_decisions"], r["late"], max(r["epoch_step_lag"], default="-"),
                          r["unapplied"], f"{r['wall']:.1f} s"])
    extra_header = ["mode", "epoch decisions", "late (target 0)", "max step lag of epoch decisions",
                    "decisions never applied", "run wall time"]
    print_table("Reaction time (record written -> command applied)", HEADER, rows)
    print_table("Epoch decisions", extra_header, extra)
    if args.smoke:
        return 0
    body = "\n".join([
        "## 2. Reaction time", "",
        f"Reproduce: `python -m benchmarks.reaction` (about a minute).", "", header, "",
        f"The real supervisor loop (`runner.run`) supervising a Keras-free trainer "
        f"(`benchmarks/_reaction_trainer.py`: the agent core, a fake optimizer, a {args.step_ms:g} ms busy-wait "
        f"step, {args.steps} steps x {args.epochs} epochs, default agent cadence). Stack: `plateau` with "
        "patience 0 on a constant val_loss (a decision on every epoch record) and a benchmark policy "
        "deciding on every 2nd batch record. Reaction = ack time - deciding record's time, both stamped by "
        "the agent.", "",
        md_table(HEADER, rows), "",
        md_table(extra_header, extra), "",
        "An epoch decision is applied inside the epoch barrier: at the same step as its record "
        "(step lag 0), before the next batch, as Keras's `ReduceLROnPlateau` would. Polling mode adds up to "
        "one `poll_interval` (50 ms by default) to every reaction, and the trainer waits that long at each "
        "epoch end; watchdog (inotify) mode reacts in about a millisecond.",
    ])
    update_section("reaction", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
