"""Population-based training: lrsup (in place) vs Ray Tune's PopulationBasedTraining vs the plain grid.

    pip install "ray[tune]"                       # benchmark-only dependency
    python -m benchmarks.pbt --epochs 20                  # 3 seeds x 3 methods, population 4 (about 12 min)
    python -m benchmarks.pbt --epochs 20 --population 8   # the grid's 4 values twice each
    python -m benchmarks.pbt --seeds 1 --epochs 6         # a reduced run (say so when quoting it)

Each updates its own section of docs/benchmarks.md (``pbt-4``, ``pbt-8``).

The same model and budget for all three: ``examples/digits/train.py`` (the small Keras CNN on
scikit-learn's digits, SGD with momentum 0.9, batch 32), a population of 4 started at
lr = 0.0003, 0.001, 0.3, 1.0 (two too slow, two too fast; ``--population 8``: each twice), ``--epochs``
epochs each, on 2 CPUs: both run the whole population together (Ray: 2/N CPU a trial; lrsup:
``--slots N``), as a population
has to be alive at once to be compared. PBT settings shared by lrsup and Ray: metric ``val_loss`` (min),
interval 2 epochs, quantile 0.25, ``lr`` log-uniform in [1e-4, 1] (resample probability 0.25,
else x1.2 / x0.8). lrsup runs with no policy stack (``policy = []``), so only PBT changes the LR.

- **lrsup**: ``lrsup sweep --pbt --population N`` then ``lrsup queue run --slots N``.
- **Ray Tune**: a function trainable (the same model and data) that reports every epoch with a
  checkpoint (``model.keras``: weights and optimizer state); PBT pauses a losing trial and
  restarts it from the donor's checkpoint with the new config (each restart counted).
- **grid**: the same 4 runs with no PBT (``lrsup sweep`` without ``--pbt``); its best run.

Reported: the population's best final ``val_loss`` and the best member's ``val_accuracy``
(mean and spread over seeds), wall time, exploits, and trainer process restarts.
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

from benchmarks._common import ROOT, machine_line, md_table, print_table, update_section

DIGITS = ROOT / "examples" / "digits" / "train.py"
LRS = (0.0003, 0.001, 0.3, 1.0)
CONFIG = """policy = []
[run]
snapshot_interval = 0
[population]
interval = 2
quantile = 0.25
metric = "val_loss"
resample_probability = 0.25
factors = [1.2, 0.8]
seed = {seed}
mutations = {{ lr = {{ log_uniform = [1e-4, 1.0] }} }}
"""


def _lrsup(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "lrsup.supervisor.cli.main", *args], cwd=cwd, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"lrsup {' '.join(args)}: {out.stderr[-2000:]}")
    return out.stdout


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def run_lrsup(seed: int, epochs: int, pbt: bool, population: int = 4, slots: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="lrsup-pbt-") as tmp:
        cwd = Path(tmp)
        (cwd / "pbt.toml").write_text(CONFIG.format(seed=seed))
        grid = "lr=" + ",".join(str(x) for x in LRS)
        # the grid without PBT: the same members (the grid's values in turn), each trained alone
        pbt_args = ["--pbt", "--population", str(population)] if pbt else []
        if not pbt and population != len(LRS):
            grid = "lr=" + ",".join(str(LRS[i % len(LRS)]) for i in range(population))
        group = _lrsup(cwd, "sweep", *pbt_args, "--config", "pbt.toml", "--grid", grid, str(DIGITS), "--",
                       "--epochs", str(epochs), "--seed", str(seed)).split()[0]  # fmt: skip
        t0 = time.monotonic()
        # a population runs together, or takes turns on fewer slots
        _lrsup(cwd, "queue", "run", "--slots", str(slots or population), "--gpus", "none")
        wall = time.monotonic() - t0
        finals, exploits, restarts, turns = [], 0, 0, 0
        for run_dir in sorted((cwd / "runs").glob("q*")):
            metrics = _lines(run_dir / "metrics.jsonl")
            epochs_seen = [r for r in metrics if r.get("type") == "epoch"]
            if epochs_seen:
                logs = epochs_seen[-1]["logs"]
                finals.append(
                    (float(logs.get("val_loss", float("nan"))), float(logs.get("val_accuracy", float("nan"))))
                )
            restarts += max(0, len([r for r in metrics if r.get("type") == "start"]) - 1)
            journal = _lines(run_dir / "journal.jsonl")
            exploits += sum(1 for j in journal if j.get("event") == "exploit")
            turns += sum(1 for j in journal if j.get("event") == "unparked")
        finite = [f for f in finals if f[0] == f[0]]
        best = min(finite) if finite else (float("nan"), float("nan"))
        # restarts: trainers started again (turns included: each unpark is a new trainer)
        return {"group": group, "val_loss": best[0], "val_accuracy": best[1], "wall": wall,
                "exploits": exploits, "restarts": restarts, "turns": turns, "members": finals}  # fmt: skip


def _ray_trainable(config: dict) -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, str(DIGITS.parent))
    import keras
    from ray import tune
    from train import build_model, load_data

    keras.utils.set_random_seed(config["seed"])
    x_train, x_val, y_train, y_val = load_data(config["seed"])
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a restart: an exploit (the donor's checkpoint) or a paused trial resumed
        with checkpoint.as_directory() as d:
            model = keras.models.load_model(Path(d, "model.keras"))
            state = json.loads(Path(d, "state.json").read_text())
        start = state["epoch"]
        model.optimizer.learning_rate.assign(config["lr"])
        with open(config["count_file"], "a") as f:  # counted here: a checkpoint's own count is the donor's
            f.write("1\n")
    else:
        model = build_model()
        model.compile(
            optimizer=keras.optimizers.SGD(config["lr"], momentum=0.9),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    for epoch in range(start, config["epochs"]):
        h = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=1, batch_size=32, verbose=0)
        with tempfile.TemporaryDirectory() as d:
            model.save(Path(d, "model.keras"))
            Path(d, "state.json").write_text(json.dumps({"epoch": epoch + 1}))
            logs = {k: float(v[-1]) for k, v in h.history.items()}
            tune.report({**logs, "lr": config["lr"]}, checkpoint=tune.Checkpoint.from_directory(d))


def run_ray(seed: int, epochs: int, population: int = 4, slots: int | None = None) -> dict:
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        pbt = PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=2,
            quantile_fraction=0.25,
            resample_probability=0.25,
            perturbation_factors=(1.2, 0.8),
            hyperparam_mutations={"lr": tune.loguniform(1e-4, 1.0)},
            synch=False,
        )
        with tempfile.TemporaryDirectory(prefix="ray-pbt-") as storage:
            count_file = str(Path(storage, "restarts.txt"))
            tuner = tune.Tuner(
                # all trials together on 2 CPUs, as lrsup; the grid's values in turn (num_samples repeats it)
                tune.with_resources(_ray_trainable, {"cpu": 2 / (slots or population)}),
                param_space={
                    "lr": tune.grid_search(list(LRS)),
                    "seed": seed,
                    "epochs": epochs,
                    "count_file": count_file,
                },  # fmt: skip
                tune_config=tune.TuneConfig(
                    scheduler=pbt, metric="val_loss", mode="min", num_samples=max(1, population // len(LRS))
                ),
                run_config=tune.RunConfig(storage_path=storage, verbose=0),
            )
            t0 = time.monotonic()
            results = tuner.fit()
            wall = time.monotonic() - t0
            finals = [(r.metrics.get("val_loss"), r.metrics.get("val_accuracy")) for r in results]
            path = Path(count_file)
            restarts = len(path.read_text().splitlines()) if path.exists() else 0
    finally:
        ray.shutdown()
    finite = [f for f in finals if f[0] is not None and f[0] == f[0]]
    best = min(finite) if finite else (float("nan"), float("nan"))
    return {"val_loss": best[0], "val_accuracy": best[1], "wall": wall, "exploits": None, "restarts": restarts,
            "members": finals}  # fmt: skip


NOTE = (
    "The digits CNN (SGD, momentum 0.9), members started at lr 0.0003, 0.001, 0.3, 1.0; metric val_loss, "
    "interval 2 epochs, quantile 0.25, lr log-uniform [1e-4, 1] (resample 0.25, else x1.2/x0.8). "
    "Best final val_loss: the best member's last epoch (mean ± sd over seeds). Both run the whole population "
    "together on 2 CPUs (Ray: 2/N CPU a trial). lrsup exploits in place (process restarts: trainers started "
    "again); Ray restarts a trial from a checkpoint for every exploit (restarts: the trainable's starts "
    "from a checkpoint, counted in a shared file). Same seeds give the same members until the first exploit, in both."
)


def _cell(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--methods", default="lrsup,ray,grid")
    parser.add_argument("--population", type=int, default=4, help="a multiple of 4 (the grid's 4 values in turn)")
    parser.add_argument(
        "--slots", type=int, default=None, help="members at once (default: the population); fewer: they take turns"
    )
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    runners = {
        "lrsup PBT (in place)": lambda s: run_lrsup(s, args.epochs, True, args.population, args.slots),
        "Ray Tune PBT": lambda s: run_ray(s, args.epochs, args.population, args.slots),
        "grid, no PBT (best run)": lambda s: run_lrsup(s, args.epochs, False, args.population, args.slots),
    }
    keys = {"lrsup": "lrsup PBT (in place)", "ray": "Ray Tune PBT", "grid": "grid, no PBT (best run)"}
    rows = []
    for short in args.methods.split(","):
        name = keys[short]
        found = [runners[name](seed) for seed in range(args.seeds)]
        print(name, json.dumps(found), flush=True)
        rows.append(
            [
                name,
                _cell([f["val_loss"] for f in found], ".4f"),
                _cell([f["val_accuracy"] for f in found], ".4f"),
                _cell([f["wall"] for f in found], ".0f") + " s",
                "n/a" if found[0]["exploits"] is None else _cell([float(f["exploits"]) for f in found], ".1f"),
                _cell([float(f["restarts"]) for f in found], ".1f"),
            ]
        )
    header = ["method", "best final val_loss", "its val_accuracy", "wall time", "exploits", "process restarts"]
    at_once = f", {args.slots} at a time (turns)" if args.slots and args.slots < args.population else ""
    title = f"PBT, population {args.population}{at_once}, {args.epochs} epochs, {args.seeds} seed(s), 2 CPUs"
    print_table(title, header, rows)
    slots_arg = f" --slots {args.slots}" if args.slots else ""
    if not args.no_doc:
        body = (
            f"### Population {args.population}{at_once}\n\n`python -m benchmarks.pbt --seeds {args.seeds} --epochs "
            f"{args.epochs} --population {args.population}{slots_arg}`. {title}. {NOTE}\n\n{machine_line()}\n\n"
            f"{md_table(header, rows)}\n"
        )
        update_section(f"pbt-{args.population}" + (f"-slots-{args.slots}" if at_once else ""), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
