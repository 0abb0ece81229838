"""``python -m tests.compat``: the whole compatibility matrix (issue 13) under pytest.

    python -m tests.compat                         # KERAS_BACKEND or tensorflow, every script x stack
    python -m tests.compat --backend jax
    python -m tests.compat --backend torch -k own_callbacks
    python -m tests.compat --results out.jsonl     # also one JSON line per checked cell

Runs ``pytest tests/compat`` with ``COMPAT_FULL=1`` (every cell, not the fast subset);
arguments it does not know go to pytest. Known failures are xfail(strict=True): the exit
status is 0 when every cell behaves as tests/compat/known.py says.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from tests.compat.harness import BACKENDS

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"), choices=BACKENDS)
    parser.add_argument("--results", type=Path, help="append each checked cell's problems to this JSON-lines file")
    args, rest = parser.parse_known_args(argv)
    env = dict(os.environ, KERAS_BACKEND=args.backend, COMPAT_FULL="1")
    if args.results:
        env["COMPAT_RESULTS"] = str(args.results.resolve())
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rxXf", "tests/compat", *rest]
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
