"""The agent package's public surface: what a custom training loop imports, and nothing else."""

from __future__ import annotations

import inspect

import lrsup.supervisor.agent as agent_package


def test_all_equals_the_public_names():
    public = {
        name
        for name, value in vars(agent_package).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert set(agent_package.__all__) == public
    assert sorted(agent_package.__all__, key=lambda n: (not n.isupper(), n)) == agent_package.__all__


def test_a_custom_loop_needs_nothing_from_a_submodule():
    for name in ("Agent", "OptimizerHandle", "AgentError", "Settings", "CheckpointEntry", "metrics_of"):
        assert name in agent_package.__all__
