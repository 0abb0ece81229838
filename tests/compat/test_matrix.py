"""The compatibility matrix of issue 13: ordinary Keras scripts, plainly and under ``lrsup run``.

Each cell (script x stack) runs the script once plainly and once under lrsup (cached for the
session) and checks one group of :func:`tests.compat.harness.check` per test, so that a fix
flips exactly the groups it fixes. Today's known failures are ``xfail(strict=True)`` with
what happens (``tests/compat/known.py``): a cell that starts passing fails the suite until
its entry is removed.

The normal suite runs the fast subset (marked keras: three cells, about two minutes); the
whole matrix is ``python -m tests.compat`` (or ``make compat``), for the backend in
``$KERAS_BACKEND`` (default tensorflow).
"""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("keras")
pytest.importorskip("sklearn")

from tests.compat import harness  # noqa: E402
from tests.compat.known import known_failure  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.timeout(1200)]

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
FULL = os.environ.get("COMPAT_FULL") == "1"

if BACKEND not in harness.BACKENDS:
    pytest.skip(f"KERAS_BACKEND={BACKEND!r} is not one the matrix knows", allow_module_level=True)
if BACKEND != "tensorflow":
    pytest.importorskip(BACKEND)


class Runs:
    """Each (script, stack) run once per session, in its own directory."""

    def __init__(self, base) -> None:
        self.base = base
        self.cache: dict[tuple[str, str], harness.Run] = {}

    def get(self, script: harness.Script, stack: str) -> harness.Run:
        key = (script.name, stack)
        if key not in self.cache:
            self.cache[key] = harness.run(script, BACKEND, stack, workdir=self.base / f"{script.name}-{stack}")
        return self.cache[key]


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("compat"))


def _params():
    out = []
    for script, stack in harness.cells(BACKEND, FULL):
        for group in harness.GROUPS:
            reason = known_failure(script.name, BACKEND, stack, group)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(script.name, stack, group, marks=marks, id=f"{script.name}-{stack}-{group}"))
    return out


def _record(plain: harness.Run, sup: harness.Run, group: str, problems: list[str]) -> None:
    path = os.environ.get("COMPAT_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(dict(sup.to_json(), plain=plain.to_json(), group=group, problems=problems)) + "\n")


@pytest.mark.parametrize("name", list(dict.fromkeys(s.name for s, _ in harness.cells(BACKEND, FULL))))
def test_script_runs_plainly(runs, name):
    script = harness.SCRIPTS[name]
    plain = runs.get(script, "plain")
    if script.crashes:
        assert plain.rc == 1 and "bug in the script's callback" in plain.output, plain.output[-2000:]
        return
    assert plain.rc == 0 and plain.result is not None, plain.output[-3000:]
    assert not plain.leftover


@pytest.mark.parametrize("name, stack, group", _params())
def test_cell(runs, name, stack, group):
    script = harness.SCRIPTS[name]
    plain = runs.get(script, "plain")
    if not script.crashes and (plain.rc != 0 or plain.result is None):
        pytest.fail(f"the script fails plainly: {plain.output[-2000:]}")
    sup = runs.get(script, stack)
    problems = harness.check(plain, sup)[group]
    _record(plain, sup, group, problems)
    assert not problems, "\n".join(problems)
