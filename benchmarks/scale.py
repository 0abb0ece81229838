"""The supervisor at scale: ingest rate, memory over a million records, replay, report, cold starts.

    python -m benchmarks.scale            # full run (1,000,000 records), updates docs/benchmarks.md
    python -m benchmarks.scale --smoke    # seconds (20,000 records), docs untouched

Ingest: a synthetic metrics.jsonl (a start record, then 50 batch records and one epoch record
per epoch, as a 500-step epoch gives at the default cadence) is appended in chunks of 10,000
lines, as a live trainer would, and after each chunk ``Follower.read()`` + ``Engine.feed`` of
the default stack (``DEFAULT_STACK``) ingest it; only read+feed is timed. Resident memory
(VmRSS) of this process, which imports only the supervisor side, is taken after 10k, 100k
and 1M records. Then: rebuilding the policy state by replaying the whole file
(``recovery.read_records`` + a fresh ``Engine``), ``report.write_report`` on the run, and
cold starts: ``lrsup --help`` and ``lrsup run`` up to the trainer script's first line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import default_stack_toml, machine_line, md_table, print_table, rss_mb, update_section
from lrsup.supervisor.protocol.wire import CONFIG_FILE, CONTROL_FILE, JOURNAL_FILE, METRICS_FILE

_NOTE = ""


def _default_config(run_dir: Path):
    """The default configuration (spelled out in run_dir/../lrsup.toml if the install lacks entry points)."""
    global _NOTE
    from lrsup.supervisor.config import load_config

    toml, _NOTE = default_stack_toml()
    if toml is None:
        return load_config(None, cwd=run_dir)  # no lrsup.toml there: the built-in defaults
    path = run_dir.parent / "lrsup.toml"
    path.write_text(toml)
    return load_config(path, cwd=run_dir)


STEPS_PER_EPOCH = 500
NOTE_SLOW = (
    'The ingest target (>= 100,000 records/s of CPU time) is **not met** in this run. The rows "of which" '
    "show where the time goes: parsing and validating the lines (`Follower.read`), and the policies one "
    "by one. A live trainer at the default cadence writes at most a few hundred records a second, so the "
    "live supervisor keeps up with room to spare; the rate matters for rebuilding state without a "
    "snapshot."
)
BATCH_EVERY = 10


def _lines(start: int, count: int, t0: float):
    """Lines number ``start`` .. ``start+count-1`` of the synthetic stream (line 0 is the start record)."""
    per_epoch = STEPS_PER_EPOCH // BATCH_EVERY + 1
    out = []
    for i in range(start, start + count):
        if i == 0:
            out.append(
                json.dumps(
                    {
                        "v": 1,
                        "type": "start",
                        "time": t0,
                        "pid": 1,
                        "optimizer": "SGD",
                        "optimizer_config": {"learning_rate": 0.1},
                        "lr": 0.1,
                        "lr_schedule": None,
                        "steps_per_epoch": STEPS_PER_EPOCH,
                        "epochs": 10**6,
                        "initial_epoch": 0,
                        "step": 0,
                        "keras_version": "3",
                        "backend": "tensorflow",
                        "agent": "bench",
                    }
                )
            )
            continue
        epoch, k = divmod(i - 1, per_epoch)
        t = t0 + i * 0.01
        if k < per_epoch - 1:
            step = epoch * STEPS_PER_EPOCH + (k + 1) * BATCH_EVERY
            loss = 1.0 / (1 + 0.001 * step)
            out.append(
                '{"v":1,"type":"batch","time":%.3f,"epoch":%d,"batch":%d,"step":%d,"lr":0.1,'
                '"logs":{"loss":%.6f,"accuracy":%.6f}}' % (t, epoch, (k + 1) * BATCH_EVERY - 1, step, loss, 1 - loss)
            )
        else:
            step = (epoch + 1) * STEPS_PER_EPOCH
            val = 1.0 / (1 + 0.0005 * min(step, 50000))  # improves, then plateaus: plateau cuts follow
            out.append(
                '{"v":1,"type":"epoch","time":%.3f,"epoch":%d,"step":%d,"lr":0.1,"logs":{"loss":%.6f,'
                '"accuracy":%.6f,"val_loss":%.6f,"val_accuracy":%.6f}}' % (t, epoch, step, val, 1 - val, val, 1 - val)
            )
    return "\n".join(out) + "\n"


def ingest(run_dir: Path, total: int, chunk: int = 10_000, snapshot_tail: int = 10_000) -> dict:
    """Append ``total`` synthetic records in chunks and ingest each chunk as ``lrsup run`` does.

    The benchmark plays the trainer's part too: every command decided on is acknowledged in the
    next chunk (so the range test ends and rollbacks complete, as in a live run), every start
    and epoch record gets its verdict line in control.jsonl, and a snapshot is written as the
    runner would, the last one about ``snapshot_tail`` records before the end.
    """
    from lrsup.supervisor.engine.core import Engine
    from lrsup.supervisor.protocol.commands import VerdictCommand, encode_command
    from lrsup.supervisor.protocol.wire import EpochRecord, StartRecord, dumps
    from lrsup.supervisor.run.follower import Follower
    from lrsup.supervisor.rundir.progress import RunProgress
    from lrsup.supervisor.rundir.snapshot import SnapshotWriter

    config = _default_config(run_dir)
    (run_dir / CONFIG_FILE).write_text(json.dumps(config.to_json()))
    (run_dir / JOURNAL_FILE).touch()
    engine = Engine.from_config(config)
    path = run_dir / METRICS_FILE
    follower = Follower(path, use_watchdog=False)
    snapshots = SnapshotWriter(run_dir, interval=1.0)
    progress = RunProgress()
    checkpoints = {10_000, 100_000, 1_000_000, total}
    rss = {"before": rss_mb()}
    busy, cpu, n, decisions, seq, acks = 0.0, 0.0, 0, 0, 0, []
    t0 = time.time()
    with open(path, "a") as f, open(run_dir / CONTROL_FILE, "a") as control:
        while n < total:
            count = min(chunk, total - n)
            f.write("".join(acks) + _lines(n, count, t0))  # the trainer's acks come in its next lines
            f.flush()
            n += count + len(acks)
            acks, sent = [], []
            s, c = time.perf_counter(), time.process_time()
            for record in follower.read():
                progress.on_record(record)
                for decision in engine.feed(record):
                    decisions += 1
                    if decision.command is not None:
                        seq += 1
                        sent.append(encode_command(decision.command, seq=seq, time=record.time))
                        acks.append(_ack(seq, decision.command.cmd, record))
                if type(record) is EpochRecord or type(record) is StartRecord:
                    seq += 1
                    verdict = VerdictCommand(getattr(record, "epoch", -1))
                    sent.append(encode_command(verdict, seq=seq, time=record.time))
            busy += time.perf_counter() - s
            cpu += time.process_time() - c
            control.write("".join(dumps(cmd) + "\n" for cmd in sent))
            control.flush()
            if 0 < total - n <= snapshot_tail:
                # The runner's last snapshot before the supervisor "dies" at the end of the file.
                snapshots.maybe_write(
                    float(n),
                    engine=engine,
                    progress=progress,
                    offset=follower.consumed,
                    max_seq=seq,
                    unacked=[],
                    wall_time=time.time(),
                )
            for mark in sorted(checkpoints):
                if n >= mark and mark not in rss:
                    rss[mark] = rss_mb()
    follower.stop()
    assert follower.stats.records == n and not follower.stats.garbage, follower.stats
    return {
        "records": n,
        "seconds": busy,
        "cpu": cpu,
        "rate": n / busy,
        "cpu_rate": n / cpu,
        "rss": rss,
        "decisions": decisions,
        "bytes": path.stat().st_size,
        "snapshot": snapshots.written > 0,
    }


def ingest_repeats(tmp: Path, records: int, repeats: int) -> list[float]:
    """CPU-time ingest rates of ``repeats`` fresh runs of ``records`` records each (the spread of one machine)."""
    rates = []
    for i in range(repeats):
        run_dir = tmp / f"repeat-{i}"
        run_dir.mkdir()
        rates.append(ingest(run_dir, records)["cpu_rate"])
        for name in (METRICS_FILE, CONTROL_FILE):
            (run_dir / name).unlink()
    return rates


def _ack(seq: int, cmd: str, record) -> str:
    """The line a trainer writes when it has applied command ``seq`` at the step of ``record``."""
    return (
        json.dumps(
            {
                "v": 1,
                "type": "ack",
                "time": record.time,
                "seq": seq,
                "cmd": cmd,
                "epoch": getattr(record, "epoch", None),
                "step": getattr(record, "step", 0),
            }
        )
        + "\n"
    )


def breakdown(run_dir: Path, limit: int = 100_000) -> list[tuple[str, float]]:
    """Records/s of parsing alone and of each default-stack policy alone, over the first ``limit`` records."""
    from lrsup.supervisor.engine.core import Engine
    from lrsup.supervisor.run.follower import Follower

    path = run_dir / METRICS_FILE
    cut = run_dir / "head.jsonl"
    with open(path, "rb") as src, open(cut, "wb") as dst:
        for i, line in enumerate(src):
            if i >= limit:
                break
            dst.write(line)
    follower = Follower(cut, use_watchdog=False)
    t = time.perf_counter()
    records = follower.read()
    out = [("parsing only (Follower.read)", len(records) / (time.perf_counter() - t))]
    follower.stop()
    config = _default_config(run_dir)
    for (name, _, _), policy in zip(config.policies, config.build_policies()):
        engine = Engine([policy])
        t = time.perf_counter()
        for r in records:
            engine.feed(r)
        out.append((f"Engine.feed, `{name}` alone", len(records) / (time.perf_counter() - t)))
    engine = Engine([])
    t = time.perf_counter()
    for r in records:
        engine.feed(r)
    out.append(("Engine.feed, no policies", len(records) / (time.perf_counter() - t)))
    cut.unlink()
    return out


def rebuild(run_dir: Path, use_snapshot: bool) -> dict:
    """What ``lrsup resume`` does before it reattaches: ``resume.rebuild``, then the silent replay of its records."""
    from lrsup.supervisor.config import run_config
    from lrsup.supervisor.run.launch import build_engine
    from lrsup.supervisor.run.resume import rebuild as resume_rebuild
    from lrsup.supervisor.rundir.layout import RunPaths
    from lrsup.supervisor.rundir.recovery import read_control
    from lrsup.supervisor.rundir.snapshot import SNAPSHOT_FILE

    snapshot, hidden = run_dir / SNAPSHOT_FILE, run_dir / "snapshot.hidden"
    if not use_snapshot and snapshot.exists():
        snapshot.rename(hidden)
    try:
        s = time.perf_counter()
        config = run_config(run_dir)
        history = read_control(run_dir / CONTROL_FILE)
        rebuilt = resume_rebuild(RunPaths(run_dir), config, history, build_engine)
        decisions = sum(len(rebuilt.engine.feed(r)) for r in rebuilt.records)
        seconds = time.perf_counter() - s
    finally:
        if hidden.exists():
            hidden.rename(snapshot)
    return {
        "seconds": seconds,
        "records": len(rebuilt.records),
        "decisions": decisions,
        "how": rebuilt.how,
        "covered": rebuilt.progress.records,
    }


def report(run_dir: Path) -> float | str:
    try:
        from lrsup.supervisor.report.write import write_report
    except ImportError as exc:
        return f"n/a ({exc})"
    s = time.perf_counter()
    try:
        write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - a benchmark reports, never hides, a failure
        return f"failed: {type(exc).__name__}: {exc}"
    return time.perf_counter() - s


def lrsup_exe() -> list[str]:
    exe = Path(sys.executable).with_name("lrsup")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "lrsup.supervisor.cli.main"]


def cold_help(n: int) -> list[float]:
    out = []
    for _ in range(n):
        s = time.perf_counter()
        subprocess.run(lrsup_exe() + ["--help"], stdout=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - s)
    return out


# "x": only the first start of the script counts (a trainer that exits at once may be restarted).
FIRST_LINE = (
    "import time, sys, os\nif not os.path.exists(sys.argv[1]): open(sys.argv[1], 'x').write(repr(time.time()))\n"
)


def cold_run(n: int, tmp: Path) -> tuple[list[float], list[float]]:
    """(lrsup run start -> script's first line, python script.py start -> first line), n each, interleaved."""
    script = tmp / "first_line.py"
    script.write_text(FIRST_LINE)
    # The script exits at once without a record; no restarts, so each `lrsup run` ends right away.
    toml, _ = default_stack_toml()
    (tmp / "lrsup.toml").write_text((toml or "") + "\n[run]\nmax_restarts = 0\n")
    sup, bare = [], []
    for i in range(n):
        for arm in ("lrsup", "python"):
            stamp = tmp / f"stamp-{arm}-{i}"
            if arm == "lrsup":
                cmd = lrsup_exe() + ["run", "--run-dir", str(tmp / f"run-{i}"), str(script), "--", str(stamp)]
            else:
                cmd = [sys.executable, str(script), str(stamp)]
            t = time.time()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
            try:
                (sup if arm == "lrsup" else bare).append(float(stamp.read_text()) - t)
            except (OSError, ValueError):
                pass
    return sup, bare


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--records", type=int, default=1_000_000)
    args = p.parse_args(argv)
    total = 20_000 if args.smoke else args.records
    n_cold = 2 if args.smoke else 10
    header = machine_line()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir = tmp / "run"
        run_dir.mkdir()
        ing = ingest(run_dir, total)
        repeats = ingest_repeats(tmp, 20_000 if args.smoke else 200_000, 2 if args.smoke else 5)
        parts = breakdown(run_dir, min(total, 100_000))
        snap = rebuild(run_dir, use_snapshot=True)
        full = rebuild(run_dir, use_snapshot=False)
        rpt = report(run_dir)
        helps = cold_help(n_cold)
        sup, bare = cold_run(n_cold if not args.smoke else 1, tmp)
    med = statistics.median
    rate = med(repeats + [ing["cpu_rate"]])
    rows = [
        [
            "ingest rate (Follower.read + Engine.feed, default stack), CPU time",
            f"{rate:,.0f} records/s",
            f"median of {len(repeats) + 1} runs: the {total:,}-record one and {len(repeats)} fresh ones of "
            f"{200_000 if not args.smoke else 20_000:,}; range {min(repeats + [ing['cpu_rate']]):,.0f} .. "
            f"{max(repeats + [ing['cpu_rate']]):,.0f}",
            ">= 100,000/s",
            "met" if rate >= 100_000 else "NOT met",
        ],
        [
            f"  the {total:,}-record run, CPU time",
            f"{ing['cpu_rate']:,.0f} records/s",
            f"{ing['records']:,} records ({ing['bytes'] / 1e6:.0f} MB) in {ing['cpu']:.2f} s of CPU; "
            f"{ing['decisions']} decisions",
            "",
            "",
        ],
        [
            "  the same, wall clock",
            f"{ing['rate']:,.0f} records/s",
            f"{ing['seconds']:.2f} s (other processes' load included)",
            "",
            "",
        ],
    ]
    for label, rate in parts:
        rows.append(
            [f"  of which: {label}", f"{rate:,.0f} records/s", f"first {min(total, 100_000):,} records", "", ""]
        )
    for k, v in ing["rss"].items():
        label = "at start (imports done)" if k == "before" else f"after {k:,} records"
        rows.append(
            [
                f"supervisor RSS {label}",
                f"{v:.1f} MB",
                "VmRSS of the ingesting process",
                "< 100 MB",
                "" if k == "before" else ("met" if v < 100 else "NOT met"),
            ]
        )
    rows.append(
        [
            "`lrsup resume`: rebuild policy state (snapshot + the records after it)",
            f"{snap['seconds']:.2f} s",
            f"{snap['how']}; then {snap['records']:,} records replayed",
            "< 5 s",
            "met" if snap["seconds"] < 5 and snap["covered"] else "NOT met",
        ]
    )
    rows.append(
        [
            "  the same without a snapshot (full replay)",
            f"{full['seconds']:.2f} s",
            f"{full['records']:,} records replayed, {full['decisions']} decisions",
            "",
            "",
        ]
    )
    rows.append(
        [
            "`write_report` (md + png + html)",
            f"{rpt:.2f} s" if isinstance(rpt, float) else rpt,
            f"{total:,} records",
            "",
            "",
        ]
    )
    rows.append(
        [
            "cold start `lrsup --help`",
            f"{med(helps) * 1e3:.0f} ms",
            f"median of {len(helps)}; min {min(helps) * 1e3:.0f} ms",
            "",
            "",
        ]
    )
    if sup and bare:
        rows.append(
            [
                "`lrsup run` start -> trainer script's first line",
                f"{med(sup) * 1e3:.0f} ms",
                f"median of {len(sup)}; `python script.py` alone: {med(bare) * 1e3:.0f} ms, so lrsup adds "
                f"{(med(sup) - med(bare)) * 1e3:.0f} ms",
                "",
                "",
            ]
        )
    else:
        rows.append(["`lrsup run` start -> trainer script's first line", "failed", "no stamp written", "", ""])
    hdr = ["measure", "value", "detail", "target", ""]
    print_table("The supervisor at scale", hdr, rows)
    if args.smoke:
        return 0
    body = "\n".join(
        [
            "## 3. The supervisor at scale",
            "",
            "Reproduce: `python -m benchmarks.scale` (about a minute; `--records N` for another size).",
            "",
            header,
            "",
            "A synthetic `metrics.jsonl` (a 500-step epoch at the default cadence: 50 batch records and one "
            "epoch record, val_loss improving and then flat so that the plateau policy cuts) is appended in "
            "chunks of 10,000 lines, as a live trainer would, and read + fed to the default stack after each "
            "chunk; only the reading and feeding is timed. The benchmark also plays the trainer: it acknowledges "
            "every command in its next chunk (so the start-of-run range test ends and its rollback completes, "
            "as in a live run) and writes a verdict line to control.jsonl for every start and epoch record. "
            "Memory is this process's VmRSS (it imports only the supervisor side, as `lrsup run` does).",
            "",
            "The ingest verdict is on CPU time (`time.process_time`): the supervisor's loop is one thread, so "
            "on an idle machine its wall time is its CPU time, while on this shared box the wall clock also "
            "counts the time other processes held the core; both are shown.",
            "",
            "`lrsup resume` rebuilds the policies' state from `snapshot.json`, which the runner writes every "
            "`[run] snapshot_interval` seconds (default 30), and replays the records written after it; the row "
            "times exactly that code (`resume.rebuild` plus the silent replay), with the last snapshot taken "
            "10,000 records before the end (more than 30 s of records at the default cadence of any real "
            "trainer). Without a snapshot (`snapshot_interval = 0`, or a snapshot that does not fit the run "
            "directory) it replays the whole file: the row below it.",
            "",
            md_table(hdr, rows),
            "",
            *([NOTE_SLOW, ""] if rate < 100_000 else []),
        ]
        + (["", _NOTE] if _NOTE else [])
    )
    update_section("scale", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
