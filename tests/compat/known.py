"""Today's known failures of the compatibility matrix (issue 13), by cell and check group.

Each entry quotes what happens; the test is ``xfail(strict=True)``, so a fix that makes a
cell pass fails the suite until its entry here is removed. Keys: (script, backend, stack,
group); ``"*"`` as the backend matches every backend.

First recorded 2026-12-03 before the fixes of issue 13 (docs/compat.md keeps that table and
its causes); each fix removed the entries it flipped. Re-measured after the fixes, the same
day: the whole matrix on TensorFlow, JAX and PyTorch (every script, both stacks). What is
left below is what those runs still show: nothing.
"""

from __future__ import annotations

# fmt: off
KNOWN: dict[tuple[str, str, str, str], str] = {
}
# fmt: on


def known_failure(script: str, backend: str, stack: str, group: str) -> str | None:
    """The reason a cell's group is known to fail today, or None."""
    return KNOWN.get((script, backend, stack, group)) or KNOWN.get((script, "*", stack, group))
