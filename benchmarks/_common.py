"""Shared helpers: machine facts, robust statistics, tables, and docs/benchmarks.md sections."""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"

DOC_HEADER = """# Benchmarks

What lrsup costs and what it buys, measured by the scripts in `benchmarks/`. Each section below is
written by its script; the text between a section's `BEGIN`/`END` markers is replaced on every
run, so the numbers are the last run's, with the machine, load and versions they came from. Text
outside the markers (this introduction) is kept.

| benchmark | one command | time on 2 shared cores |
| --- | --- | --- |
| 1. cost inside the trainer | `python -m benchmarks.agent_overhead` | ~4 min |
| 2. reaction time | `python -m benchmarks.reaction` | ~1 min |
| 3. the supervisor at scale | `python -m benchmarks.scale` | ~2 min |
| 4. outcomes (small grid) | `python -m benchmarks.outcomes --grid small --jobs 1` | ~5 min |
| 4. outcomes (full grid) | `python -m benchmarks.outcomes --grid full --jobs 1` | ~30 min |
| all of 1-4 (small grid) | `python -m benchmarks all` (or `python benchmarks/run_all.py`) | ~12 min |

`--smoke` runs any of them in seconds and never writes this file; `tests/benchmarks/test_smoke.py`
runs 1-3 that way (no TensorFlow) so that CI notices when a benchmark stops running.

Numbers from a shared 2-core box are noisy: arms are interleaved in one process and ratios are
reported with their spread (median and interquartile range over rounds), never as single
timings. Where a target is not met, the section says so.

"""

SECTIONS = ("agent_overhead", "reaction", "scale", "outcomes", "no_harm")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions(tf: bool = False) -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("lrsup", "keras", "tensorflow-cpu", "tensorflow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "tensorflow-cpu" in out:
        out["tensorflow"] = out.pop("tensorflow-cpu")
    return out


def machine_line() -> str:
    v = versions()
    parts = [f"{k} {v[k]}" for k in ("python", "lrsup", "keras", "tensorflow") if k in v]
    load = ""
    try:
        load = f", load average {os.getloadavg()[0]:.2f} at start"
    except OSError:
        pass
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"*{date}; {os.cpu_count()} CPUs ({cpu_model()}){load}; {', '.join(parts)}.*"


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (q in [0, 1])."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def iqr(xs: Sequence[float]) -> tuple[float, float]:
    return quantile(xs, 0.25), quantile(xs, 0.75)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def update_section(name: str, body: str, doc: Path = DOC) -> Path:
    """Replace the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` (create as needed)."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = doc.read_text(encoding="utf-8") if doc.exists() else DOC_HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        # keep sections in the canonical order
        order = list(SECTIONS)
        later = [s for s in order[order.index(name) + 1 :]] if name in order else []
        pos = min((text.find(f"<!-- BEGIN {s} -->") for s in later if f"<!-- BEGIN {s} -->" in text), default=-1)
        if pos >= 0:
            text = text[:pos] + block + "\n\n" + text[pos:]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
    return doc


def fmt_pct(x: float) -> str:
    return f"{x * 100:+.2f}%"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def rss_mb() -> float:
    """This process's resident set size now, in MB (VmRSS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def default_stack_toml() -> tuple[str | None, str]:
    """(lrsup.toml text spelling out the default stack, note) when the defaults do not load as installed.

    While a new built-in policy exists in ``policies/`` but its entry point is not yet
    installed (an editable install made before the entry point was added), the default
    configuration cannot be resolved by name. Then each unknown name is mapped to the
    ``module:Class`` of the Policy subclass of that ``name`` in ``lrsup.policies.<name>``,
    the same policy with the same settings. Returns (None, "") when the defaults load.
    """
    import importlib
    import inspect
    import json

    from lrsup.policies.base import Policy
    from lrsup.supervisor.config import DEFAULT_STACK, ConfigError, load_config

    try:
        load_config(None, cwd=Path(os.devnull).parent / "nonexistent-lrsup-bench")
        return None, ""
    except ConfigError:
        pass
    lines, mapped = [], []
    for entry in DEFAULT_STACK:
        use = entry["use"]
        spec = use
        try:
            from lrsup.supervisor.registry import load_policy_class

            load_policy_class(use)
        except Exception:  # noqa: BLE001 - not registered: find it by module
            module = importlib.import_module(f"lrsup.policies.{use}")
            cls = next(
                c
                for _, c in inspect.getmembers(module, inspect.isclass)
                if issubclass(c, Policy) and c is not Policy and getattr(c, "name", "") == use
            )
            spec = f"{module.__name__}:{cls.__name__}"
            mapped.append(f"`{use}` as `{spec}`")
        lines.append("[[policy]]")
        lines.append(f"use = {json.dumps(spec)}")
        for key, value in entry.items():
            if key != "use":
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    note = (
        "The default stack's names did not all resolve in this install (entry points not yet "
        "installed), so it was spelled out in an lrsup.toml: " + ", ".join(mapped) + "."
    )
    return "\n".join(lines), note


def median_ci(xs: Sequence[float], conf: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: a pair of order statistics.

    The interval [x_(l), x_(n+1-l)] (1-based, sorted) with the largest l whose coverage,
    1 - 2 P(B <= l - 1) for B ~ Binomial(n, 1/2), is still at least ``conf``. Assumes only
    independent samples from one distribution. (nan, nan) when n is too small for ``conf``.
    """
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan")
    s = sorted(xs)
    alpha = 1.0 - conf
    total = 2**n
    cdf, best = 0, 0  # cdf = sum_{i < k} C(n, i)
    for k in range(1, n // 2 + 1):
        cdf += math.comb(n, k - 1)
        if 2 * cdf / total > alpha:
            break
        best = k
    if best == 0:
        return float("nan"), float("nan")
    return s[best - 1], s[n - best]
