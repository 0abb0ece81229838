"""The compatibility harness: run an ordinary Keras script plainly and under ``lrsup run``, compare.

Issue 13 ("first, do no harm"): every ordinary script must end at least as well under lrsup
as plainly, with its own callbacks and files behaving as they do plainly. Each script in
``tests/compat/scripts/`` reports what it saw through its own callback (``compat_probe``:
the epochs, each epoch's logs and LR, the optimizer's step count, its History) to
``$COMPAT_RESULT``. :func:`run` runs one script plainly or under ``lrsup run`` (the default
stack, or the plateau-only config) in a fresh working directory; :func:`check` compares an
lrsup run with the plain one and returns the problems, by group:

- ``completes``: same exit status as plainly, a result written, no restart of the trainer,
  no process left behind (each run's processes carry a tag in their environment that is
  looked for in /proc afterwards);
- ``callbacks``: the script's callbacks saw the epochs plain Keras shows them (History and
  the recorder agree, consecutive epochs, as many as plainly unless the script stops early),
  none of them trained inside lrsup's LR range test, the optimizer took the steps fit was
  asked for, EarlyStopping and ModelCheckpoint kept an epoch of the script's own training,
  CSVLogger wrote one row per epoch, the same files were written;
- ``lr``: every epoch's LR (the epoch record's, the script's recorder's) is the LR lrsup
  last decided and saw applied (its last acknowledged command), or the script's own where it
  owns the LR (then lrsup moved no LR; a ReduceLROnPlateau's steps are its own factor); a
  restarted trainer starts at lrsup's last LR; the agent refused no command;
- ``says``: a monitored metric that never appears (plateau's ``val_loss`` without
  validation data) is warned about.

``crash_callback.py`` fails plainly on purpose: for it ``completes`` asks for a prompt end
with the script's status (or lrsup's give-up status, 3) after at most one restart.

Command line (a table of every cell, without pytest)::

    python -m tests.compat.harness --backend jax --stack default own_callbacks regression
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
BACKENDS = ("tensorflow", "jax", "torch")
ALL = BACKENDS
TF_ONLY = ("tensorflow",)

# The plateau-only stack: the default stack's plateau alone.
PLATEAU_TOML = """
[[policy]]
use = "plateau"
monitor = "val_loss"
factor = 0.5
patience = 3
min_lr = 1e-6
"""
STACKS = {"default": None, "plateau": PLATEAU_TOML}
GROUPS = ("completes", "callbacks", "lr", "says")
# Policies that may move the LR of a script that owns its LR: the range test (an experiment
# it undoes) and the rescues (a rollback restores the checkpoint's LR).
RESCUE_POLICIES = frozenset({"lr_find", "divergence", "early_stop"})
LR_ACTIONS = frozenset({"set_lr", "scale_lr", "set_schedule"})
LR_ACKS = frozenset({"set_lr", "scale_lr", "rollback", "clear_schedule", "set_hparam"})


@dataclass(frozen=True)
class Script:
    """One script of the matrix.

    Attributes:
        file: the file's stem in tests/compat/scripts/.
        shape: what it shows (for the docs' table).
        backends: the Keras backends it is written for.
        fast: in the fast subset that the normal test suite runs (stacks listed).
        args: its command-line arguments.
        crashes: it fails plainly on purpose (the crash-handling checks apply).
        tuned: its LR is already well chosen (the no-harm benchmark runs only these).
    """

    file: str
    shape: str
    backends: tuple[str, ...] = ALL
    fast: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    crashes: bool = False
    tuned: bool = True
    key: str = ""

    @property
    def name(self) -> str:
        """The cell's name in the matrix (the file's stem unless ``key`` says otherwise)."""
        return self.key or self.file

    @property
    def path(self) -> Path:
        return SCRIPTS_DIR / f"{self.file}.py"


SCRIPTS: dict[str, Script] = {
    s.name: s
    for s in (
        Script("tfdata_pipeline", "tf.data pipeline, functional"),
        Script("pydataset_workers", "PyDataset with 2 worker threads, Sequential"),
        Script(
            "own_callbacks",
            "EarlyStopping(restore_best_weights), ModelCheckpoint(save_best_only), CSVLogger, custom callback",
            fast=("default",),
        ),
        Script("transfer_two_fits", "freeze, fit, unfreeze, recompile, fit"),
        Script(
            "subclassed_lazy", "subclassed Model, layers built on first call (model.build(shape))", fast=("default",)
        ),
        Script("functional_split", "functional CNN, SGD momentum, validation_split"),
        Script("sequential_noval", "Sequential, no validation data"),
        Script("multi_output", "two outputs, output-specific metric names"),
        Script("custom_train_step", "custom train_step/test_step (tf.GradientTape)", backends=TF_ONLY),
        Script("mixed_precision", "mixed_float16, LossScaleOptimizer(Adam)"),
        Script("lr_schedule", "Adam(CosineDecay): the script owns the LR"),
        Script("reduce_lr_plateau", "the script's own ReduceLROnPlateau owns the LR", fast=("plateau",)),
        Script("tf_keras", "`from tensorflow import keras`, tf.keras.*", backends=TF_ONLY),
        Script("argparse_exit", "argparse, main(), sys.exit(main())", args=("--epochs", "14")),
        Script("helper_module", "imports a helper module from its folder"),
        Script("save_model", "saves model.keras at the end, reloads it"),
        Script("regression", "regression (diabetes), MSE, MAE metric"),
        Script(
            "transfer_two_fits",
            "the same, fit 2 at a diverging LR (Adam 5): a rescue inside fit 2",
            args=("--fine-tune-lr", "5"),
            tuned=False,
            key="transfer_fit2_diverges",
        ),
        Script("crash_callback", "a callback bug raising at epoch 4 every time", crashes=True, tuned=False),
    )
}


@dataclass
class Run:
    """One run of a script: plainly (``stack == "plain"``) or under ``lrsup run``."""

    script: Script
    backend: str
    stack: str
    seed: int
    rc: int
    wall: float
    output: str
    result: dict[str, Any] | None
    files: dict[str, int]
    csv_rows: list[dict[str, str]] | None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)
    control: list[dict[str, Any]] = field(default_factory=list)
    leftover: list[str] = field(default_factory=list)
    timed_out: bool = False

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.metrics if r.get("type") == kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "script": self.script.name,
            "backend": self.backend,
            "stack": self.stack,
            "seed": self.seed,
            "rc": self.rc,
            "wall": round(self.wall, 1),
            "final": (self.result or {}).get("final"),
            "metric": (self.result or {}).get("metric"),
        }


def lrsup_command() -> list[str]:
    return [sys.executable, "-m", "lrsup.supervisor.cli.main", "run"]


def environment(backend: str, seed: int, result: Path, tag: str) -> dict[str, str]:
    """The scripts' environment: the backend, one CPU thread each, quiet TensorFlow, the probe's file."""
    env = dict(os.environ)
    for name in ("LRSUP_RUN_DIR", "LRSUP_RESTORE", "LRSUP_ATTEMPT"):
        env.pop(name, None)
    env.update(
        KERAS_BACKEND=backend,
        COMPAT_RESULT=str(result),
        COMPAT_SEED=str(seed),
        COMPAT_TAG=tag,
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        OMP_NUM_THREADS="1",
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        CUDA_VISIBLE_DEVICES="",
    )
    return env


def run(
    script: Script, backend: str, stack: str, seed: int = 0, workdir: Path | None = None, timeout: float = 420
) -> Run:
    """Run ``script`` plainly (``stack="plain"``) or under ``lrsup run`` with ``stack`` in a fresh directory."""
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix=f"compat-{script.name}-")) if own else workdir
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / "compat-result.json"
    tag = uuid.uuid4().hex
    env = environment(backend, seed, result_path, tag)
    run_dir = work / "run"
    if stack == "plain":
        cmd = [sys.executable, str(script.path), *script.args]
    else:
        cmd = lrsup_command()
        if STACKS[stack] is not None:
            (work / "lrsup.toml").write_text(STACKS[stack])
            cmd += ["--config", str(work / "lrsup.toml")]
        cmd += ["--run-dir", str(run_dir), str(script.path), "--", *script.args]
    t0 = time.monotonic()
    timed_out = False
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        output, _ = proc.communicate()
    wall = time.monotonic() - t0
    if (run_dir / "trainer.log").exists():
        output += "\n--- trainer.log ---\n" + (run_dir / "trainer.log").read_text(errors="replace")
    leftover = leftover_processes(tag)
    result = _load(result_path)
    files = {
        p.name: p.stat().st_size
        for p in work.iterdir()
        if p.name not in ("run", "lrsup.toml", result_path.name) and not p.name.startswith(".")
    }
    out = Run(
        script=script,
        backend=backend,
        stack=stack,
        seed=seed,
        rc=proc.returncode if not timed_out else -9,
        wall=wall,
        output=output,
        result=result,
        files=files,
        csv_rows=_csv(work / "training.csv"),
        metrics=_lines(run_dir / "metrics.jsonl"),
        journal=_lines(run_dir / "journal.jsonl"),
        control=_lines(run_dir / "control.jsonl"),
        leftover=leftover,
        timed_out=timed_out,
    )
    if own:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def leftover_processes(tag: str) -> list[str]:
    """Processes still alive whose environment carries ``tag`` (then killed: the harness started them)."""
    found = []
    needle = f"COMPAT_TAG={tag}".encode()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append(f"pid {entry}: {cmdline[:160]}")
        try:
            os.kill(int(entry), signal.SIGKILL)
        except OSError:
            pass
    return found


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _csv(path: Path) -> list[dict[str, str]] | None:
    if not path.exists():
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- what lrsup did, read from the run directory --------------------------------------------------


@dataclass
class Ramp:
    """The LR range test as the trainer acknowledged it: the fit it ran in and its epochs."""

    fit: int
    epochs: list[int]
    top_lr: float | None


def is_start(record: dict[str, Any], probe: bool | None = None) -> bool:
    """A start record (of a fit, or of the launcher's LR range test probe, or either: ``probe`` None)."""
    return record.get("type") == "start" and (probe is None or bool(record.get("probe")) == probe)


def stages_of(run: Run) -> list[tuple[int, list[dict[str, Any]]]]:
    """(fit index, or -1 for a range test probe; its records) of the last trainer attempt, split at start records."""
    records = run.metrics
    starts = [i for i, r in enumerate(records) if is_start(r)]
    if not starts:
        return []
    last_pid = records[starts[-1]].get("pid")
    mine = [i for i in starts if records[i].get("pid") == last_pid]
    bounds = mine + [len(records)]
    out, fit = [], 0
    for k in range(len(mine)):
        probe = bool(records[mine[k]].get("probe"))
        out.append((-1 if probe else fit, records[bounds[k] : bounds[k + 1]]))
        fit += 0 if probe else 1
    return out


def fits_of(run: Run) -> list[list[dict[str, Any]]]:
    """The records of each fit of the last trainer attempt (a probe's left out), split at its start records."""
    return [records for k, records in stages_of(run) if k >= 0]


def ramps(run: Run) -> list[Ramp]:
    """The range tests of the last attempt: from the set_schedule ack to the ack that ended it (``fit`` -1: a probe's)."""
    out = []
    for k, records in stages_of(run):
        begin = None
        top = None
        for r in records:
            if r.get("type") == "ack" and r.get("cmd") == "set_schedule" and begin is None:
                begin = r.get("epoch") or 0
            elif r.get("type") == "batch" and begin is not None and r.get("lr") is not None:
                top = max(top or 0.0, r["lr"])
            elif r.get("type") == "ack" and r.get("cmd") in ("rollback", "clear_schedule") and begin is not None:
                end = r.get("epoch") or begin
                if r.get("cmd") == "rollback" or end >= begin:
                    out.append(Ramp(k, list(range(begin, end + 1)), top))
                    begin = None
                    if r.get("cmd") == "clear_schedule":
                        continue
        if begin is not None:
            out.append(Ramp(k, [begin], top))
    # A clear_schedule followed by a rollback makes two entries for one test: keep the widest.
    merged: dict[tuple[int, int], Ramp] = {}
    for ramp in out:
        key = (ramp.fit, ramp.epochs[0])
        if key not in merged or len(ramp.epochs) > len(merged[key].epochs):
            merged[key] = ramp
    return list(merged.values())


def attempts(run: Run) -> int:
    return len({r.get("pid") for r in run.records("start")})


def decisions(run: Run) -> list[dict[str, Any]]:
    return [j for j in run.journal if j.get("type") == "decision" and not j.get("suppressed")]


# -- the checks --------------------------------------------------------------------------------------


def check(plain: Run, sup: Run) -> dict[str, list[str]]:
    """The problems of ``sup`` (under lrsup) against ``plain`` (the same script plainly), by group."""
    problems: dict[str, list[str]] = {g: [] for g in GROUPS}
    problems["completes"] = check_completes(plain, sup)
    if sup.script.crashes:
        problems["lr"] = check_restart_lr(sup)
        return problems
    if sup.result is None or plain.result is None:
        missing = "the lrsup run" if sup.result is None else "the plain run"
        for group in ("callbacks", "lr", "says"):
            problems[group] = [f"nothing to check: {missing} wrote no result (see completes)"]
        return problems
    problems["callbacks"] = check_callbacks(plain, sup)
    problems["lr"] = check_lr(sup)
    problems["says"] = check_says(sup)
    return problems


def check_completes(plain: Run, sup: Run) -> list[str]:
    out = []
    if sup.timed_out:
        out.append(f"did not end within the harness's timeout ({sup.wall:.0f} s)")
    if sup.leftover:
        out.append(f"{len(sup.leftover)} process(es) left behind: {'; '.join(sup.leftover)}")
    n = attempts(sup)
    if sup.script.crashes:
        if sup.rc not in (plain.rc, 3):
            out.append(f"exit status {sup.rc}, plainly {plain.rc} (lrsup's give-up status would be 3)")
        if n > 2:
            out.append(f"the same crash was restarted {n - 1} times over {sup.wall:.0f} s (plainly {plain.wall:.0f} s)")
        if "before its first epoch" in sup.output and _epochs_reached(sup) > 0:
            out.append(
                "diagnosed as failing 'before its first epoch', though the run had trained "
                f"{_epochs_reached(sup)} epochs and each attempt died at the end of the same epoch"
            )
        missing = [line for line in sup.output.splitlines() if "no checkpoint" in line]
        if missing:
            out.append(f"commands aimed at checkpoints that no longer exist: {missing[0].strip()[:200]}")
        if "bug in the script's callback" not in sup.output:
            out.append("the script's traceback is not shown")
        return out
    if sup.rc != plain.rc:
        out.append(f"exit status {sup.rc}, plainly {plain.rc}: {_last_error(sup.output)}")
    if sup.result is None:
        out.append(f"the script wrote no result (it did not finish): {_last_error(sup.output)}")
    if n > 1:
        out.append(f"the trainer was restarted {n - 1} time(s): {_last_error(sup.output)}")
    return out


def _epochs_reached(run: Run) -> int:
    return max((r.get("epoch", 0) + 1 for r in run.records("epoch")), default=0)


def _last_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if ("Error" in line or "error" in line) and not line.startswith("File "):
            return line[:300]
    return lines[-1][:300] if lines else "(no output)"


def check_callbacks(plain: Run, sup: Run) -> list[str]:
    out = []
    p, s = plain.result, sup.result
    early = "early_stopping" in s
    if len(s["fits"]) != len(p["fits"]):
        out.append(f"{len(s['fits'])} fits seen by the script's callbacks, plainly {len(p['fits'])}")
        return out
    ramp_epochs = {(r.fit, e): r for r in ramps(sup) for e in r.epochs}
    # A rescue's rollback puts the checkpoint's step count back: a fit that was rolled back ends
    # with fewer optimizer steps by design (the leak of a range test is the check above).
    rolled = {
        k for k, records in stages_of(sup) for r in records if r.get("type") == "ack" and r.get("cmd") == "rollback"
    }
    for k, (pf, sf) in enumerate(zip(p["fits"], s["fits"])):
        name = f"fit {k + 1}" if len(p["fits"]) > 1 else "fit"
        seen, hist = sf["epochs_seen"], s["history_epochs"][k]
        if seen != hist:
            out.append(f"{name}: the script's callback saw epochs {_span(seen)}, History holds {_span(hist)}")
        if seen and seen != list(range(seen[0], seen[0] + len(seen))):
            out.append(f"{name}: epochs seen are not consecutive: {seen}")
        if not early and len(seen) != len(pf["epochs_seen"]):
            out.append(f"{name}: {len(seen)} epochs seen by the script's callbacks, plainly {len(pf['epochs_seen'])}")
        leaked = [e for e in seen if (k, e) in ramp_epochs]
        if leaked:
            top = ramp_epochs[(k, leaked[0])].top_lr
            out.append(
                f"{name}: the script's callbacks saw {len(leaked)} epoch(s) ({_span(leaked)}) trained inside lrsup's "
                f"LR range test (LR up to {top:.3g})"
                if top
                else f"{name}: the script's callbacks saw epochs {_span(leaked)} trained inside lrsup's LR range test"
            )
        pi, si = pf.get("iterations_end"), sf.get("iterations_end")
        full = early is False or len(seen) == len(pf["epochs_seen"])
        if pi and si is not None and si != pi and full and k not in rolled:
            out.append(f"{name}: the optimizer took {si} steps, plainly {pi} ({100 * si / pi:.0f}%)")
        best = _best_epoch(sf)
        if s.get("early_stopping") and (k, s["early_stopping"]["best_epoch"]) in ramp_epochs:
            out.append(
                f"{name}: EarlyStopping(restore_best_weights) restored epoch {s['early_stopping']['best_epoch']}, "
                "trained inside the range test"
            )
        if "checkpoint_accuracy" in s and best is not None and (k, best) in ramp_epochs:
            out.append(f"{name}: ModelCheckpoint(save_best_only) holds epoch {best}, trained inside the range test")
    if "csv" in s:
        rows = sup.csv_rows or []
        epochs = [int(r["epoch"]) for r in rows if r.get("epoch", "").isdigit()]
        if epochs != s["history_epochs"][-1]:
            out.append(f"CSVLogger wrote epochs {_span(epochs)}, History holds {_span(s['history_epochs'][-1])}")
    missing = sorted(set(plain.files) - set(sup.files))
    extra = sorted(set(sup.files) - set(plain.files))
    if missing or extra:
        out.append(f"files written differ from the plain run's: missing {missing}, extra {extra}")
    if "reloaded_accuracy" in s and not math.isclose(s["reloaded_accuracy"], s["final"], abs_tol=1e-6):
        out.append(f"the saved model scores {s['reloaded_accuracy']:.4f}, the trained one {s['final']:.4f}")
    return out


def _best_epoch(fit: dict[str, Any]) -> int | None:
    losses = [(logs.get("val_loss"), e) for logs, e in zip(fit["logs"], fit["epochs_seen"])]
    losses = [(v, e) for v, e in losses if v is not None and math.isfinite(v)]
    return min(losses)[1] if losses else None


def _span(epochs: list[int]) -> str:
    if not epochs:
        return "none"
    if epochs == list(range(epochs[0], epochs[-1] + 1)) and len(epochs) > 2:
        return f"{epochs[0]}-{epochs[-1]}"
    return ",".join(str(e) for e in epochs)


def _close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-12)


def check_lr(sup: Run) -> list[str]:
    """Every epoch's LR is lrsup's last applied one, or the script's own where it owns the LR."""
    out = [
        f"the agent refused a command: {e.get('cmd')}: {e.get('message', '')[:200]}"
        for e in sup.records("error")
        if e.get("seq") is not None  # an agent's notice (no command) is no refusal
    ]
    s = sup.result
    owner = s.get("lr_owner")
    if owner:
        for d in decisions(sup):
            if d.get("action") in LR_ACTIONS and d.get("policy") not in RESCUE_POLICIES:
                out.append(
                    f"two owners of the LR: the script's {owner['kind']} and lrsup's {d.get('policy')} "
                    f"({d.get('action')} at step {d.get('step')}: {str(d.get('reason'))[:120]})"
                )
                break
        if owner["kind"] == "ReduceLROnPlateau":
            out += _own_plateau_steps(sup, owner)
        return out
    out += _epoch_lrs(sup)
    out += _inner_presets(sup)
    out += _cross_fit_rollbacks(sup)
    return out


def _stage_at(run: Run, when: float) -> tuple[Any, int] | None:
    """(trainer pid, fit index within it) of the fit running at time ``when``."""
    stage, pid = None, None
    for r in run.metrics:
        if r.get("time", 0) > when:
            break
        if is_start(r, probe=False):
            stage = (r.get("pid"), 0 if r.get("pid") != pid else stage[1] + 1)
            pid = r.get("pid")
    return stage


def _cross_fit_rollbacks(run: Run) -> list[str]:
    """A rollback aims at a checkpoint of the fit it is sent in (not an earlier fit's)."""
    taken = {}
    for r in run.metrics:
        if r.get("type") == "checkpoint":
            taken.setdefault(r.get("name"), r.get("time", 0))
    out = []
    for c in run.control:
        if c.get("cmd") != "rollback" or c.get("checkpoint") not in taken:
            continue
        now, then = _stage_at(run, c.get("time", 0)), _stage_at(run, taken[c["checkpoint"]])
        if now and then and now[0] == then[0] and now[1] != then[1]:
            out.append(
                f"a rollback in fit {now[1] + 1} aimed at fit {then[1] + 1}'s checkpoint {c['checkpoint']} "
                f"(lr {c.get('lr')}): {str(c.get('reason'))[:150]}"
            )
    return out


# The range test's top LR by optimizer family (lrsup.policies.presets): an Adam inside a
# LossScaleOptimizer is an Adam.
_FAMILY_MAX_LR = {"Adam": 1.0, "SGD": 10.0}


def _inner_presets(sup: Run) -> list[str]:
    """A wrapped optimizer (LossScaleOptimizer) gets its inner optimizer's presets: the range test's range."""
    inner = sup.result.get("inner_optimizer")
    if inner not in _FAMILY_MAX_LR:
        return []
    top = max((r.top_lr or 0.0 for r in ramps(sup)), default=0.0)
    if top > _FAMILY_MAX_LR[inner] * 1.01:
        names = sorted({str(r.get("optimizer")) for r in sup.records("start")})
        return [
            f"the range test ramped to LR {top:.3g}, past the {inner} family's {_FAMILY_MAX_LR[inner]:g}: "
            f"the optimizer is reported as {', '.join(names)} and gets the unknown optimizer's presets"
        ]
    return []


def _epoch_lrs(sup: Run) -> list[str]:
    out: list[str] = []
    records = sup.metrics
    expected: float | None = None
    scheduled = False
    native = False
    pid = None
    seen_recorder = _recorder_lrs(sup)
    fit = -1
    for r in records:
        kind = r.get("type")
        if is_start(r, probe=True):  # the probe's records: until the fit's start record
            expected, scheduled = None, True
            continue
        if kind == "start":
            native = r.get("lr_schedule") is not None
            if r.get("pid") != pid:
                pid, fit = r.get("pid"), 0
            else:
                fit += 1
            expected, scheduled = r.get("lr"), False
        elif kind == "ack":
            cmd = r.get("cmd")
            if cmd == "set_schedule":
                scheduled = True
            elif cmd in LR_ACKS and r.get("lr") is not None:
                expected = r["lr"]
                if cmd in ("clear_schedule", "rollback"):
                    scheduled = False
        elif kind == "epoch" and not scheduled and not native:
            if expected is not None and not _close(r.get("lr"), expected):
                out.append(
                    f"epoch {r.get('epoch')}: the trainer reports LR {r.get('lr'):.4g}, lrsup's last applied LR "
                    f"is {expected:.4g}"
                )
            recorded = seen_recorder.get((fit, r.get("epoch")))
            if recorded is not None and r.get("lr") is not None and not _close(recorded, r["lr"]):
                out.append(
                    f"epoch {r.get('epoch')}: the script's callback saw LR {recorded:.4g}, the epoch record says "
                    f"{r['lr']:.4g}"
                )
    return out[:6] + ([f"... and {len(out) - 6} more epochs"] if len(out) > 6 else [])


def _recorder_lrs(sup: Run) -> dict[tuple[int, int], float]:
    return {
        (k, e): lr
        for k, fit in enumerate((sup.result or {}).get("fits", []))
        for e, lr in zip(fit["epochs_seen"], fit["lr_end"])
    }


def _own_plateau_steps(sup: Run, owner: dict[str, Any]) -> list[str]:
    """Outside the range test, each change of the LR the script saw is its ReduceLROnPlateau's factor."""
    out = []
    ramp_epochs = {e for r in ramps(sup) if r.fit == 0 for e in r.epochs}
    fit = sup.result["fits"][0]
    pairs = list(zip(fit["epochs_seen"], fit["lr_end"]))
    for (e0, a), (e1, b) in zip(pairs, pairs[1:]):
        if e0 in ramp_epochs or e1 in ramp_epochs or _close(a, b):
            continue
        floor = owner.get("min_lr") or 0.0
        if not (_close(b, a * owner["factor"]) or _close(b, floor)):
            out.append(
                f"the LR went {a:.3g} -> {b:.3g} after epoch {e0}: not the script's ReduceLROnPlateau step "
                f"(x{owner['factor']:g})"
            )
    return out


def check_restart_lr(sup: Run) -> list[str]:
    """A restarted trainer starts at the LR lrsup last decided, not at an experiment's."""
    out = []
    expected = None
    scheduled = False
    pid = None
    probe = False
    for r in sup.metrics:
        kind = r.get("type")
        if kind == "start":
            probe = bool(r.get("probe"))  # a probe's start and acks: the range test's, put back after it
            if probe:
                continue
        elif probe:
            continue
        if kind == "start":
            if pid is not None and r.get("pid") != pid and expected is not None and not _close(r.get("lr"), expected):
                out.append(
                    f"a restarted trainer started at LR {r.get('lr'):.4g}; lrsup's last decided LR was {expected:.4g}"
                )
            if r.get("pid") != pid and expected is None:
                expected = r.get("lr")
            pid = r.get("pid")
            scheduled = False
        elif kind == "ack":
            if r.get("cmd") == "set_schedule":
                scheduled = True
            elif r.get("cmd") in LR_ACKS and r.get("lr") is not None:
                expected = r["lr"]
                if r.get("cmd") in ("clear_schedule", "rollback"):
                    scheduled = False
    del scheduled
    return out


def check_says(sup: Run) -> list[str]:
    """A monitored metric the script never reports is warned about (plateau monitors val_loss)."""
    logs = [key for fit in sup.result.get("fits", []) for epoch in fit["logs"] for key in epoch]
    if not logs or "val_loss" in logs:
        return []
    text = sup.output + "\n" + "\n".join(json.dumps(j) for j in sup.journal)
    words = ("never", "missing", "not found", "not reported", "no such", "does not appear", "absent", "not in")
    for line in text.splitlines():
        if "val_loss" in line and any(w in line for w in words):
            return []
    return [
        "plateau monitors val_loss, which this script never reports (no validation data): nothing said it "
        f"(the metrics are {sorted(set(logs))})"
    ]


# -- the command line: a table of cells ----------------------------------------------------------------


def cells(backend: str, full: bool) -> list[tuple[Script, str]]:
    """The (script, stack) cells for ``backend``: all, or the fast subset."""
    out = []
    for script in SCRIPTS.values():
        if backend not in script.backends:
            continue
        for stack in STACKS:
            if full or stack in script.fast:
                out.append((script, stack))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run compatibility cells and print what each check found.")
    parser.add_argument("scripts", nargs="*", help="script names (default: all for the backend)")
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"), choices=BACKENDS)
    parser.add_argument("--stack", action="append", choices=tuple(STACKS), help="default: every stack")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="append one JSON line per cell to this file")
    args = parser.parse_args(argv)
    stacks = args.stack or list(STACKS)
    names = args.scripts or [n for n, s in SCRIPTS.items() if args.backend in s.backends]
    bad = 0
    for name in names:
        script = SCRIPTS[name]
        plain = run(script, args.backend, "plain", args.seed)
        print(f"{name} plain: rc {plain.rc}, {plain.wall:.0f} s, final {(plain.result or {}).get('final')}", flush=True)
        for stack in stacks:
            sup = run(script, args.backend, stack, args.seed)
            found = check(plain, sup)
            bad += any(found.values())
            print(f"  {stack}: rc {sup.rc}, {sup.wall:.0f} s, final {(sup.result or {}).get('final')}", flush=True)
            for group, problems in found.items():
                for problem in problems:
                    print(f"    [{group}] {problem}", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(dict(sup.to_json(), plain=plain.to_json(), problems=found)) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
