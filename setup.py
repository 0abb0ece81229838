"""Packaging: the package list is derived from the folders, so that a new subpackage
can never work in an editable install and be missing from the wheel.

``supervisor/`` installs as ``lrsup.supervisor``, ``policies/`` as ``lrsup.policies``,
``lrsup/`` (the version) as ``lrsup``; everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

PACKAGE_DIRS = {"lrsup": "lrsup", "lrsup.supervisor": "supervisor", "lrsup.policies": "policies"}


def packages() -> list[str]:
    """Every package under the mapped folders, with its installed name."""
    found = []
    for name, folder in PACKAGE_DIRS.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(folder)]
    return found


setup(package_dir=PACKAGE_DIRS, packages=packages(), package_data={"lrsup": ["py.typed"]})
