"""Reaction time: from the agent writing a record to the command decided on it taking effect in the trainer.

    python -m benchmarks.reaction            # full run, updates docs/benchmarks.md
    python -m benchmarks.reaction --smoke    # seconds, docs untouched

The real supervisor loop (``lrsup.supervisor.run.runner.run``: follower, engine, control writer,
journal, lifecycle) supervises ``benchmarks/_reaction_trainer.py``, a Keras-free trainer
driving the agent core with a fake optimizer and a busy-wait step of ``--step-ms``. The stack
is ``plateau`` (patience 0 on a constant val_loss: an LR cut decided on every epoch record)
and ``benchmarks._policies:BatchPoke`` (an LR change decided on every batch record).

Two spans per decision, all stamped with ``time.time()`` on one machine:

- answer: the deciding record's ``time`` (the agent, before it writes the line) to the
  command's ``time`` in control.jsonl (the supervisor, as it writes the line): the
  supervisor's wake-up, read, decision and write.
- applied: the deciding record's ``time`` to its ack record's ``time`` (the agent, once the
  command is applied); for batch decisions also in steps (ack step - record step). An
  epoch decision is late when its ack says ``late`` (the verdict did not arrive within
  ``verdict_timeout``).

Once per way the follower learns of new records (``Follower.mode``): ``inotify`` (the loop
blocks on an inotify descriptor, the default on Linux), ``watchdog`` (a watchdog Observer's
threads wake it: the fallback where the binding is unavailable) and ``polling``
(``poll_interval`` 0.05 s, the default; the fallback where neither starts).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import DOC, ROOT, fmt_ms, machine_line, md_table, print_table, quantile, update_section

MODES = ("inotify", "watchdog", "polling")


class NullDisplay:
    def on_record(self, record):
        pass

    def on_decision(self, decision):
        pass

    def on_output_line(self, line):
        pass

    def on_state(self, event, detail):
        pass

    def close(self):
        pass


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
every = 1

# A batch record at every 10th step: with 2 ms steps the default minimum of 0.05 s between batch
# records would keep one in three, and fewer decisions to time (the reaction does not depend on it).
[agent]
batch_min_interval = 0
"""


def _read(path: Path) -> list[dict]:
    from lrsup.supervisor.protocol.wire import loads

    out = []
    if path.exists():
        for line in path.read_bytes().splitlines():
            if line.strip():
                out.append(loads(line))
    return out


@contextlib.contextmanager
def follower_modes(use_inotify: bool):
    """While active, the runner's followers note their ``mode`` at start in the list yielded;
    ``use_inotify=False`` sends them straight to watchdog, as where the binding is unavailable."""
    from lrsup.supervisor.run import runner
    from lrsup.supervisor.run.follower import Follower

    modes: list[str] = []

    class Noted(Follower):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, use_inotify=use_inotify, **kwargs)

        def start(self) -> Follower:
            super().start()
            modes.append(self.mode)
            return self

    original = runner.Follower
    runner.Follower = Noted
    try:
        yield modes
    finally:
        runner.Follower = original


def one_run(mode: str, epochs: int, steps: int, step_ms: float, tmp: Path) -> dict:
    """Supervise one run of the reaction trainer with the follower in ``mode``; the spans measured."""
    from lrsup.supervisor import protocol
    from lrsup.supervisor.config import load_config
    from lrsup.supervisor.protocol.journal import DecisionEntry, read_entry
    from lrsup.supervisor.run import runner
    from lrsup.supervisor.rundir.layout import RunDir

    cfg_path = tmp / f"{mode}.toml"
    cfg_path.write_text(CONFIG)
    config = load_config(cfg_path, cwd=ROOT)
    run_dir = tmp / f"run-{mode}"
    t0 = time.perf_counter()
    with follower_modes(use_inotify=mode == "inotify") as modes:
        status = runner.run(
            config,
            script=ROOT / "benchmarks" / "_reaction_trainer.py",
            args=["--epochs", str(epochs), "--steps", str(steps), "--step-ms", str(step_ms)],
            run_dir=RunDir(run_dir),
            cwd=ROOT,
            display=NullDisplay(),
            handle_signals=False,
            report=False,
            use_watchdog=mode != "polling",
        )
    wall = time.perf_counter() - t0
    if modes != [mode]:
        raise RuntimeError(f"asked for the follower in mode {mode!r}, it started in {modes}")
    if status != 0:
        log = (run_dir / protocol.TRAINER_LOG).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{mode}: supervised run exited with {status}; trainer.log ends:\n{log}")
    metrics = _read(run_dir / protocol.METRICS_FILE)
    journal = [read_entry(obj) for obj in _read(run_dir / protocol.JOURNAL_FILE)]
    sent = {c["seq"]: c for c in _read(run_dir / protocol.CONTROL_FILE) if "seq" in c}
    epochs_rec = {r["epoch"]: r for r in metrics if r.get("type") == "epoch"}
    batches = {r["step"]: r for r in metrics if r.get("type") == "batch"}
    acks = {r["seq"]: r for r in metrics if r.get("type") == "ack"}
    out = {
        "epoch_answer": [],
        "batch_answer": [],
        "epoch_s": [],
        "batch_s": [],
        "batch_steps": [],
        "late": 0,
        "epoch_decisions": 0,
        "unapplied": 0,
        "wall": wall,
        "epoch_step_lag": [],
    }
    for d in journal:
        if not isinstance(d, DecisionEntry) or d.seq is None:
            continue
        kind = "epoch" if d.policy == "plateau" else "batch"
        src = epochs_rec[d.epoch] if kind == "epoch" else batches[d.step]
        out[f"{kind}_answer"].append(sent[d.seq]["time"] - src["time"])
        out["epoch_decisions"] += kind == "epoch"
        ack = acks.get(d.seq)
        if ack is None:
            out["unapplied"] += 1
            continue
        out[f"{kind}_s"].append(ack["time"] - src["time"])
        if kind == "epoch":
            out["epoch_step_lag"].append(ack["step"] - src["step"])
            out["late"] += bool(ack.get("late"))
        else:
            out["batch_steps"].append(ack["step"] - src["step"])
    return out


def rank_quantile(xs, q: float):
    """The nearest-rank quantile: a value of ``xs`` that at least a share ``q`` of them do not exceed."""
    s = sorted(xs)
    return s[max(math.ceil(q * len(s)), 1) - 1]


def _pcts(xs, fmt=fmt_ms, q=quantile):
    if not xs:
        return ["-"] * 5
    return [str(len(xs))] + [fmt(q(xs, p)) for p in (0.5, 0.95, 0.99)] + [fmt(max(xs))]


HEADER = ["mode", "span", "n", "p50", "p95", "p99", "max"]
ROWS = [  # (label, key, format, quantile): steps are whole, so their quantiles are values that occurred
    ("answer: epoch record (plateau) -> command written", "epoch_answer", fmt_ms, quantile),
    ("answer: batch record -> command written", "batch_answer", fmt_ms, quantile),
    ("applied: epoch record (plateau) -> ack", "epoch_s", fmt_ms, quantile),
    ("applied: batch record -> ack", "batch_s", fmt_ms, quantile),
    ("applied: batch record -> ack, in steps", "batch_steps", str, rank_quantile),
]
EXTRA_HEADER = [
    "mode",
    "epoch decisions",
    "late (target 0)",
    "max step lag of epoch decisions",
    "decisions never applied",
    "run wall time",
]


def measure(modes, epochs: int, steps: int, step_ms: float) -> tuple[list[list], list[list]]:
    """One supervised run per mode; the span rows and the epoch-decision rows."""
    rows, extra = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            r = one_run(mode, epochs, steps, step_ms, Path(tmp))
            rows += [[mode, label, *_pcts(r[key], fmt, q)] for label, key, fmt, q in ROWS]
            extra.append(
                [
                    mode,
                    r["epoch_decisions"],
                    r["late"],
                    max(r["epoch_step_lag"], default="-"),
                    r["unapplied"],
                    f"{r['wall']:.1f} s",
                ]
            )
    return rows, extra


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a few seconds; docs untouched")
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--step-ms", type=float, default=2.0)
    p.add_argument("--mode", choices=MODES, action="append", help="only this mode (repeatable)")
    p.add_argument("--doc", type=Path, default=DOC, help="the file whose reaction section is rewritten")
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.steps, args.step_ms = 4, 20, 0.2
    header = machine_line()
    rows, extra = measure(args.mode or MODES, args.epochs, args.steps, args.step_ms)
    print_table("Reaction time (record written -> command written -> command applied)", HEADER, rows)
    print_table("Epoch decisions", EXTRA_HEADER, extra)
    if args.smoke:
        return 0
    body = "\n".join(
        [
            "## 2. Reaction time",
            "",
            "Reproduce: `python -m benchmarks.reaction` (about a minute; `--mode M` runs one mode only).",
            "",
            header,
            "",
            f"The real supervisor loop (`runner.run`) supervising a Keras-free trainer "
            f"(`benchmarks/_reaction_trainer.py`: the agent core, a fake optimizer, a {args.step_ms:g} ms busy-wait "
            f"step, {args.steps} steps x {args.epochs} epochs, a batch record every 10 steps: the default "
            "`batch_every`, with `batch_min_interval = 0`, as the default 0.1 s would keep one in five of them "
            "and give fewer decisions to time, not different ones). Stack: `plateau` with patience 0 on a constant val_loss (a decision on every epoch record) "
            "and a benchmark policy deciding on every batch record. Two spans per decision, both from the "
            "deciding record's `time` (stamped by the agent as it writes the record): *answer* ends at the "
            "command's `time` in control.jsonl (stamped by the supervisor as it writes the command: its "
            "wake-up, read, decision and write), *applied* at the ack's `time` (stamped by the agent once the "
            "command is applied). All are `time.time()` on one machine. In steps: ack step - record step, "
            "with quantiles by nearest rank (values that occurred). The agent looks for commands at the end of "
            "every batch, just after writing any record: 0 steps when the answer came before that look (the "
            "supervisor, woken by the write, ran before the trainer went on), 1 when it came within the next "
            "step (the target: within 1 step at p99).",
            "",
            "Modes: how the supervisor learns of new records. `inotify` (the default on Linux): its loop "
            "blocks in poll(2) on an inotify descriptor for the run directory, no thread in between. "
            "`watchdog` (the fallback where the binding is unavailable): a watchdog Observer's emitter and "
            "dispatcher threads set an event the loop waits on, two hand-offs of the GIL. `polling` (where "
            "neither starts): a look at metrics.jsonl every `poll_interval` (50 ms by default).",
            "",
            md_table(HEADER, rows),
            "",
            md_table(EXTRA_HEADER, extra),
            "",
            "An epoch decision is applied inside the epoch barrier: at the same step as its record "
            "(step lag 0), before the next batch, as Keras's `ReduceLROnPlateau` would. Polling adds up to "
            "one `poll_interval` to every answer, and the trainer waits that long at each epoch end.",
        ]
    )
    update_section("reaction", body, args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
