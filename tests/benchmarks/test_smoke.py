"""The benchmarks still run: each TensorFlow-free benchmark in ``--smoke`` mode (a few seconds in all).

They are benchmarks, not tests: nothing here checks a number, only that each one runs to the
end, prints its table, imports no TensorFlow, and leaves docs/benchmarks.md alone in smoke mode.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"

RUNNER = """
import runpy, sys
sys.argv = [{name!r}, "--smoke"]
try:
    runpy.run_module({module!r}, run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
assert "tensorflow" not in sys.modules, "a smoke benchmark imported TensorFlow"
print("SMOKE-OK")
"""


def _doc_state():
    return DOC.read_bytes() if DOC.exists() else None


@pytest.mark.parametrize(
    "name, expect",
    [
        ("agent_overhead", "control poll, nothing new"),
        ("reaction", "epoch record (plateau)"),
        ("scale", "ingest rate"),
    ],
)
def test_benchmark_runs_in_smoke_mode(name: str, expect: str) -> None:
    before = _doc_state()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER.format(name=name, module=f"benchmarks.{name}")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SMOKE-OK" in proc.stdout
    assert expect in proc.stdout
    assert _doc_state() == before, "a --smoke run must not touch docs/benchmarks.md"


def test_update_section_replaces_only_its_block(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks._common import update_section
    finally:
        sys.path.remove(str(ROOT))
    doc = tmp_path / "b.md"
    update_section("scale", "## scale\nold", doc)
    update_section("agent_overhead", "## overhead", doc)
    update_section("scale", "## scale\nnew", doc)
    text = doc.read_text()
    assert "old" not in text and "new" in text
    assert text.index("## overhead") < text.index("## scale")
    assert text.count("<!-- BEGIN scale -->") == 1
