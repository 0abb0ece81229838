"""Policy discovery: real (fake) distributions with entry points, pluggy-style, no mocks."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import types

import pytest

from lrsup.policies.base import Policy
from lrsup.policies.plateau import Plateau
from lrsup.supervisor.registry import (
    DuplicatePolicyError,
    PolicyLoadError,
    UnknownPolicyError,
    available,
    load_policy_class,
)


class FakeDistribution(importlib.metadata.Distribution):
    """An installed distribution that exists only in memory: METADATA and entry_points.txt."""

    def __init__(self, name: str, version: str, entry_points: dict[str, str]) -> None:
        self._files = {
            "METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            "entry_points.txt": "[lrsup.policies]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()),
        }

    def read_text(self, filename):
        return self._files.get(filename)

    def locate_file(self, path):  # pragma: no cover - not needed for entry points
        raise FileNotFoundError(path)


class Warmup(Policy):
    name = "warmup"


class NotAPolicy:
    name = "nope"


class Nameless(Policy):
    pass


class Outer:
    class Inner(Policy):
        name = "inner"


@pytest.fixture
def plugin_module(monkeypatch):
    """A real importable module ``lrsup_fake_plugin`` holding the classes above."""
    module = types.ModuleType("lrsup_fake_plugin")
    module.Warmup = Warmup
    module.NotAPolicy = NotAPolicy
    module.Nameless = Nameless
    module.Outer = Outer
    module.not_a_class = 42
    monkeypatch.setitem(sys.modules, "lrsup_fake_plugin", module)
    return module


@pytest.fixture
def installed(monkeypatch, plugin_module):
    """Replace the installed distributions with the given fakes (plus nothing else)."""

    def install(*dists):
        monkeypatch.setattr(importlib.metadata, "distributions", lambda **kw: iter(dists))

    return install


LRSUP = ("lrsup", "0.1.0", {"plateau": "lrsup.policies.plateau:Plateau"})


def test_importing_discovers_nothing():
    # In a fresh interpreter, so that no module is reloaded under the other tests' feet.
    code = (
        "import importlib.metadata as m\n"
        "real = m.entry_points\n"
        "def spy(**params):\n"
        "    if params.get('group') == 'lrsup.policies': raise SystemExit('policies discovered at import')\n"
        "    return real(**params)\n"
        "m.entry_points = spy\n"
        "import lrsup.policies, lrsup.supervisor.registry, lrsup.supervisor.config, lrsup.supervisor.engine.core\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_real_installation_registers_plateau():
    assert available()["plateau"] == "lrsup.policies.plateau:Plateau"
    assert load_policy_class("plateau") is Plateau


def test_available_lists_every_distribution_sorted(installed):
    installed(FakeDistribution(*LRSUP), FakeDistribution("lrsup-extra", "1.2", {"warmup": "lrsup_fake_plugin:Warmup"}))
    assert available() == {"plateau": "lrsup.policies.plateau:Plateau", "warmup": "lrsup_fake_plugin:Warmup"}
    assert list(available()) == ["plateau", "warmup"]


def test_discovery_is_read_afresh_on_each_call(installed):
    installed(FakeDistribution(*LRSUP))
    assert list(available()) == ["plateau"]
    installed(FakeDistribution(*LRSUP), FakeDistribution("extra", "1", {"warmup": "lrsup_fake_plugin:Warmup"}))
    assert list(available()) == ["plateau", "warmup"]


def test_load_by_registered_name(installed):
    installed(FakeDistribution(*LRSUP), FakeDistribution("extra", "1", {"warmup": "lrsup_fake_plugin:Warmup"}))
    assert load_policy_class("warmup") is Warmup
    assert load_policy_class("plateau") is Plateau


def test_load_by_module_and_class(plugin_module):
    assert load_policy_class("lrsup_fake_plugin:Warmup") is Warmup
    assert load_policy_class("lrsup_fake_plugin:Outer.Inner") is Outer.Inner
    assert load_policy_class("lrsup.policies.plateau:Plateau") is Plateau


def test_unknown_name_lists_the_available_ones(installed):
    installed(FakeDistribution(*LRSUP), FakeDistribution("extra", "1", {"warmup": "lrsup_fake_plugin:Warmup"}))
    with pytest.raises(UnknownPolicyError) as info:
        load_policy_class("platau")
    assert str(info.value) == "unknown policy 'platau'; available: plateau, warmup (or give a 'module:Class' spec)"
    assert isinstance(info.value, ValueError)


def test_unknown_name_with_nothing_installed(installed):
    installed()
    with pytest.raises(UnknownPolicyError, match=r"available: \(none installed\)"):
        load_policy_class("plateau")


def test_duplicate_name_across_distributions_names_both(installed):
    installed(FakeDistribution(*LRSUP), FakeDistribution("rival", "2.0", {"plateau": "lrsup_fake_plugin:Warmup"}))
    with pytest.raises(DuplicatePolicyError) as info:
        available()
    message = str(info.value)
    assert "'plateau' is registered twice" in message
    assert "'lrsup.policies.plateau:Plateau' (distribution lrsup 0.1.0)" in message
    assert "'lrsup_fake_plugin:Warmup' (distribution rival 2.0)" in message
    with pytest.raises(DuplicatePolicyError):
        load_policy_class("warmup")


def test_the_same_entry_point_seen_twice_is_not_a_duplicate(installed):
    installed(FakeDistribution(*LRSUP), FakeDistribution("lrsup-copy", "0.1.0", LRSUP[2]))
    assert available() == {"plateau": "lrsup.policies.plateau:Plateau"}


@pytest.mark.parametrize(
    "spec, text",
    [
        ("lrsup_fake_plugin:NotAPolicy", "policy spec 'lrsup_fake_plugin:NotAPolicy' is <class "),
        ("lrsup_fake_plugin:not_a_class", "is 42, not a subclass of lrsup.policies.Policy"),
        ("lrsup_fake_plugin:Nameless", "class Nameless does not set a policy `name`"),
        ("lrsup.policies.base:Policy", "class Policy does not set a policy `name`"),
        ("lrsup_fake_plugin:Missing", "module 'lrsup_fake_plugin' has no attribute 'Missing'"),
        ("lrsup_no_such_module:X", "cannot import module 'lrsup_no_such_module'"),
        ("lrsup_fake_plugin:", "expected 'module:Class'"),
        ("", "must be a non-empty string; got ''"),
    ],
)
def test_bad_specs_are_refused_clearly(plugin_module, spec, text):
    with pytest.raises(PolicyLoadError) as info:
        load_policy_class(spec)
    assert text in str(info.value)


def test_a_registered_name_pointing_at_a_non_policy_is_refused(installed):
    installed(FakeDistribution("bad", "0.3", {"nope": "lrsup_fake_plugin:NotAPolicy"}))
    with pytest.raises(PolicyLoadError) as info:
        load_policy_class("nope")
    message = str(info.value)
    assert "policy 'nope' ('lrsup_fake_plugin:NotAPolicy', distribution bad 0.3)" in message
    assert "not a subclass of lrsup.policies.Policy" in message
