"""Run every benchmark, each in its own process, in order; pass ``--smoke`` to run them tiny.

    python -m benchmarks all            # or: python benchmarks/run_all.py
    python -m benchmarks all --smoke
    python -m benchmarks scale          # one of: agent_overhead, reaction, scale, outcomes, no_harm

Extra arguments go to every benchmark (e.g. ``--smoke``); ``outcomes`` runs its small grid
unless ``--grid full`` is given to it directly; ``no_harm`` runs every well-tuned script unless
``--quick`` is given to it (``all`` gives it ``--quick``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("agent_overhead", "reaction", "scale", "outcomes", "no_harm")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in NAMES:
        return subprocess.call([sys.executable, "-m", f"benchmarks.{args[0]}", *args[1:]], cwd=ROOT)
    if args and args[0] == "all":
        args = args[1:]
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    status = 0
    for name in NAMES:
        print(f"\n=== {name} ===", flush=True)
        extra = ["--quick"] if name == "no_harm" and "--smoke" not in args else []  # as outcomes' small grid
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *args, *extra], cwd=ROOT)
        if rc:
            print(f"benchmarks.{name} exited with {rc}", file=sys.stderr)
            status = status or rc
    return status


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
