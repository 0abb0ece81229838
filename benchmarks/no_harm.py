"""No harm: well-tuned ordinary scripts, plainly and under ``lrsup run`` (default stack), over seeds.

    python -m benchmarks.no_harm --quick       # 4 scripts x 3 seeds x 2 arms (~15 min on 2 free cores)
    python -m benchmarks.no_harm               # every well-tuned script of tests/compat (~50 min)
    python -m benchmarks.no_harm --smoke       # one script, one seed; docs untouched

Issue 13's target: no script worse under lrsup than plainly beyond its seed spread, and the
mean difference over scripts >= 0. The scripts are the compatibility matrix's
(``tests/compat/scripts/``), each already well tuned: a supervisor that helps bad runs must
leave these alone. Each run is a fresh process (``tests.compat.harness.run``, one CPU thread,
seed from ``$COMPAT_SEED``); the final metric is the script's own (test accuracy, or MAE for
the regression, lower is better). Spread: the sample standard deviation over seeds. A script
is **worse** when its lrsup mean is beyond the plain mean by more than the larger of the two
spreads, in the metric's bad direction. A single collapsed seed widens the spread it is
judged against: the worst seed of each arm is shown beside the means.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

from benchmarks._common import ROOT, machine_line, md_table, print_table, update_section

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.compat import harness  # noqa: E402

QUICK = ("own_callbacks", "functional_split", "reduce_lr_plateau", "regression")
ARMS = ("plain", "default")


def well_tuned(backend: str) -> list[str]:
    """The matrix's scripts meant to train well (not the one that crashes on purpose)."""
    return [s.name for s in harness.SCRIPTS.values() if s.tuned and backend in s.backends]


def measure(names: list[str], seeds: list[int], backend: str, done: list[dict] | None = None) -> list[dict]:
    """Run every (script, seed, arm); ``done``: results of an earlier run to keep instead of running again."""
    out = []
    kept = {(r["script"], r["seed"], r["arm"]): r for r in done or []}
    for name in names:
        script = harness.SCRIPTS[name]
        for seed in seeds:
            for arm in ARMS:
                if (name, seed, arm) in kept:
                    out.append(kept[(name, seed, arm)])
                    continue
                run = harness.run(script, backend, arm, seed)
                final = (run.result or {}).get("final")
                lower = bool((run.result or {}).get("lower_is_better"))
                row = dict(script=name, seed=seed, arm=arm, rc=run.rc, wall=run.wall, final=final, lower=lower)
                out.append(row)
                shown = f"{final:.4f}" if final is not None else "none"
                print(f"  {name} seed {seed} {arm}: {shown} (rc {run.rc}, {run.wall:.0f} s)", flush=True)
    return out


def summarize(results: list[dict], names: list[str]) -> tuple[list[list], float | None, int]:
    """Rows (script, metric, plain, lrsup, difference, verdict), the mean signed gain, and the count worse."""
    rows, gains, worse = [], [], 0
    for name in names:
        mine = [r for r in results if r["script"] == name]
        lower = any(r["lower"] for r in mine)
        arms = {arm: [r["final"] for r in mine if r["arm"] == arm and r["final"] is not None] for arm in ARMS}
        failed = {arm: sum(1 for r in mine if r["arm"] == arm and r["final"] is None) for arm in ARMS}
        if not arms["plain"] or not arms["default"]:
            rows.append([name, "-", _fmt(arms["plain"]), _fmt(arms["default"]), "-", "-", f"no result ({failed})"])
            worse += 1
            continue
        mp, ml = statistics.mean(arms["plain"]), statistics.mean(arms["default"])
        spread = max(_sd(arms["plain"]), _sd(arms["default"]))
        gain = (mp - ml) if lower else (ml - mp)  # > 0: lrsup better
        gains.append(gain)
        verdict = "worse" if gain < -spread else ("better" if gain > spread else "within spread")
        worse += verdict == "worse"
        if any(failed.values()):
            verdict += f" ({failed['default']} lrsup run(s) gave no result)"
        metric = "MAE (lower is better)" if lower else "test accuracy"
        worst = max if lower else min
        worst_seeds = f"{worst(arms['plain']):.4f} / {worst(arms['default']):.4f}"
        rows.append([name, metric, _fmt(arms["plain"]), _fmt(arms["default"]), worst_seeds, f"{gain:+.4f}", verdict])
    return rows, (statistics.mean(gains) if gains else None), worse


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _fmt(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{statistics.mean(xs):.4f} ± {_sd(xs):.4f} (n={len(xs)})"


HEADER = [
    "script",
    "final metric",
    "plain: mean ± sd",
    "lrsup default stack: mean ± sd",
    "worst seed: plain / lrsup",
    "gain (+: lrsup better)",
    "verdict",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    p.add_argument("--smoke", action="store_true", help="one script, one seed; docs/benchmarks.md untouched")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--backend", default="tensorflow", choices=harness.BACKENDS)
    p.add_argument("--label", default="Before the fixes of issue 13", help="what the docs' section calls this run")
    p.add_argument("--json", type=Path, help="also write every run's result here")
    p.add_argument("--reuse", type=Path, help="keep the runs found in this --json file of an earlier run")
    p.add_argument("scripts", nargs="*", help="script names (default: by mode)")
    args = p.parse_args(argv)
    if args.scripts:
        names = args.scripts
    elif args.smoke:
        names = ["sequential_noval"]
    elif args.quick:
        names = list(QUICK)
    else:
        names = well_tuned(args.backend)
    seeds = [0] if args.smoke else list(range(args.seeds))
    header = machine_line()
    t0 = time.perf_counter()
    print(f"{len(names)} scripts x {len(seeds)} seeds x {len(ARMS)} arms on {args.backend}", flush=True)
    done = json.loads(args.reuse.read_text()) if args.reuse else []
    results = measure(names, seeds, args.backend, done)
    reused = sum(1 for r in results if any(r is d for d in done))
    total = time.perf_counter() - t0
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    rows, mean_gain, worse = summarize(results, names)
    print_table("No harm: final metric, plain vs lrsup's default stack", HEADER, rows)
    mean_text = f"{mean_gain:+.4f}" if mean_gain is not None and math.isfinite(mean_gain) else "-"
    print(f"mean gain over scripts {mean_text}; {worse} of {len(names)} worse beyond their spread; {total:.0f} s")
    if args.smoke:
        return 0 if all(r["final"] is not None for r in results) else 1
    mode = "--quick" if args.quick and not args.scripts else ""
    body = "\n".join(
        [
            "## 4b. No harm: well-tuned scripts, plain vs the default stack",
            "",
            f"**{args.label}.** Last run: `{' '.join(['python -m benchmarks.no_harm', mode]).strip()}` "
            f"({len(results)} runs, {sum(r['wall'] for r in results) / 60:.0f} min of runs"
            + (f", {reused} of them recorded by an earlier invocation and kept with `--reuse`" if reused else "")
            + f", backend {args.backend}). "
            "The whole set: `python -m benchmarks.no_harm` (every well-tuned script of tests/compat).",
            "",
            header,
            "",
            "Each script is one of the compatibility matrix's (`tests/compat/scripts/`, docs/compat.md), already "
            "well tuned, run unmodified in a fresh process per seed, plainly and under `lrsup run` with no config "
            "(the default stack). Final metric: the script's own on its held-out data (test accuracy; MAE for the "
            "regression). Spread: sample standard deviation over the seeds; **worse** = the gain is below minus the "
            "larger spread (a collapsed seed widens its own spread: see the worst seed). Issue 13's target: no script worse, mean gain >= 0. The outcomes grid above (section 4) "
            "is the other half of the promise: bad starting LRs rescued; both must hold.",
            "",
            md_table(HEADER, rows),
            "",
            f"Mean gain over the {len(rows)} scripts: **{mean_text}**; worse beyond the spread: **{worse}**.",
        ]
    )
    update_section("no_harm", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
