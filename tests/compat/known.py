"""Today's known failures of the compatibility matrix (issue 13), by cell and check group.

Each entry quotes what happens; the test is ``xfail(strict=True)``, so a fix that makes a
cell pass fails the suite until its entry here is removed. Keys: (script, backend, stack,
group); ``"*"`` as the backend matches every backend.
"""

from __future__ import annotations

KNOWN: dict[tuple[str, str, str, str], str] = {}


def known_failure(script: str, backend: str, stack: str, group: str) -> str | None:
    """The reason a cell's group is known to fail today, or None."""
    return KNOWN.get((script, backend, stack, group)) or KNOWN.get((script, "*", stack, group))
