"""The matrix's results as a markdown table (docs/compat.md), from ``python -m tests.compat --results F``.

    python -m tests.compat.table results-tf.jsonl results-jax.jsonl > table.md

(Lines from ``python -m tests.compat.harness --json F`` are read too.)

One row per (script, backend, stack): the exit status, the final metric against the plain
run's, and each failing check group with its problems.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.compat.harness import GROUPS


def rows(paths: list[Path]) -> list[list[str]]:
    cells: dict[tuple[str, str, str], dict] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            key = (entry["script"], entry["backend"], entry["stack"])
            cell = cells.setdefault(key, dict(entry, groups={}))
            if "group" in entry:  # from the pytest matrix: one line per check group
                cell["groups"][entry["group"]] = entry["problems"]
            else:  # from python -m tests.compat.harness --json: every group in one line
                cell["groups"].update(entry["problems"])
    out = []
    for (script, backend, stack), cell in sorted(cells.items()):
        plain = cell["plain"]
        final = _num(cell.get("final"))
        problems = [f"**{g}**: " + "; ".join(cell["groups"][g]) for g in GROUPS if cell["groups"].get(g)]
        result = "pass" if not problems else "FAIL"
        out.append(
            [
                f"`{script}`",
                backend,
                stack,
                f"{result} (rc {cell['rc']}, plain {plain['rc']})",
                f"{final} / {_num(plain.get('final'))}",
                "<br>".join(problems) if problems else "",
            ]
        )
    return out


def _num(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    header = ["script", "backend", "stack", "result", "final: lrsup / plain", "what fails"]
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in rows(paths):
        print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
