"""Each curated package's ``__all__`` is exactly its public names, as httpx tests its own.

A public name is one without a leading underscore that is not a submodule. Add a package
here when its ``__init__`` is curated.
"""

from __future__ import annotations

import importlib
import types

import pytest

CURATED = [
    "lrsup.policies",
    "lrsup.supervisor.history",
    "lrsup.supervisor.report",
    "lrsup.supervisor.view",
    # "lrsup.supervisor.agent": the custom training loop's surface (curated with the agent)
]


def public_names(module: types.ModuleType) -> list[str]:
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    )


@pytest.mark.parametrize("package", CURATED)
def test_all_is_the_public_names(package):
    module = importlib.import_module(package)
    assert sorted(module.__all__) == public_names(module)
    assert list(module.__all__) == sorted(module.__all__)  # one place to look a name up


def test_a_plugin_needs_nothing_from_the_supervisor():
    """What docs/policies.md shows a plug-in author comes from lrsup.policies alone."""
    import lrsup.policies as policies

    for name in ("Policy", "PolicySettings", "MonitorPolicy", "MonitorSettings", "Monitor", "RunView"):
        assert name in policies.__all__
    for record in ("StartRecord", "BatchRecord", "EpochRecord", "EndRecord", "AckRecord"):
        assert getattr(policies, record).__module__ == "lrsup.supervisor.protocol.wire"
