"""The wheel holds every package: a subpackage that works in the editable install but is missing
from the wheel (a folder without ``__init__.py``, a hand-kept list) fails here.

Builds the wheel from this checkout (no network: ``--no-build-isolation`` uses the installed
setuptools) and compares its contents with the folders.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"lrsup": ROOT / "lrsup", "lrsup/supervisor": ROOT / "supervisor", "lrsup/policies": ROOT / "policies"}


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True,
        cwd=build,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = out.glob("lrsup-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def source_modules() -> dict[str, Path]:
    """Every .py file under the package folders, by the path it must have inside the wheel."""
    found = {}
    for installed, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            if "__pycache__" not in path.parts:
                found[f"{installed}/{path.relative_to(folder).as_posix()}"] = path
    return found


def test_every_module_of_every_folder_is_in_the_wheel(wheel_names):
    missing = sorted(name for name in source_modules() if name not in wheel_names)
    assert not missing, f"in the folders but not in the wheel: {missing}"


def test_every_folder_with_modules_is_a_package():
    """A folder of modules without ``__init__.py`` is not found by setup.py's package search."""
    for folder in FOLDERS.values():
        for path in folder.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            assert (path.parent / "__init__.py").exists(), f"{path.parent} has modules but no __init__.py"


def test_the_wheel_is_typed_and_versioned(wheel_names):
    assert "lrsup/py.typed" in wheel_names
    assert "lrsup/__init__.py" in wheel_names


def test_entry_points_name_modules_in_the_wheel(wheel_names):
    """The console script and every built-in policy's entry point resolve to a module inside the wheel."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    targets = list(pyproject["project"]["scripts"].values())
    targets += list(pyproject["project"]["entry-points"]["lrsup.policies"].values())
    for target in targets:
        module = target.split(":")[0].replace(".", "/")
        assert f"{module}.py" in wheel_names or f"{module}/__init__.py" in wheel_names, target
