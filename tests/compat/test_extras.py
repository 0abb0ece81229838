"""Installing lrsup for JAX or PyTorch does not pull TensorFlow (issue 13, item 6): the extras say so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[2]


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


@pytest.mark.parametrize("extra, framework", [("jax", "jax"), ("torch", "torch")])
def test_a_backend_extra_brings_keras_and_its_framework_without_tensorflow(extra, framework):
    names = _names(_extras()[extra])
    assert {"keras", framework} <= names
    assert not names & {"tensorflow", "tensorflow-cpu", "tf-keras", "tensorboard"}


def test_the_supervisor_alone_needs_no_framework():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not _names(deps) & {"keras", "tensorflow", "jax", "torch"}


def test_make_install_brings_tensorflow_and_jax_so_make_test_runs_both_backends():
    # tests/agent/test_backends.py runs per backend; CI's make test must have both (torch is by hand).
    install = re.search(r"pip install -q -e '\.\[([a-z,]+)\]'", (ROOT / "Makefile").read_text())
    assert install is not None
    assert {"tensorflow", "jax"} <= set(install.group(1).split(","))
