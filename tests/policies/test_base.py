"""The Policy base class: hook overrides, settings, state contract."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lrsup.policies.actions import ScaleLR
from lrsup.policies.base import Policy, PolicySettings, RunView
from lrsup.supervisor.protocol.wire import EpochRecord


class EverySettings(PolicySettings):
    every: int = 10
    factor: float = 0.5


class Every(Policy):
    """Scales the LR every ``every`` epochs; overrides only on_epoch."""

    name = "every"
    Settings = EverySettings

    def on_epoch(self, record, run):
        if record.epoch % self.settings.every == self.settings.every - 1:
            return [ScaleLR(factor=self.settings.factor, reason=f"epoch {record.epoch + 1}")]
        return []


class Bare(Policy):
    name = "bare"


def test_overrides_reports_only_the_hooks_a_class_defines():
    assert Every.overrides("on_epoch")
    assert not Every.overrides("on_batch")
    assert not Every.overrides("on_start")
    assert not Every.overrides("on_end")
    assert not Bare.overrides("on_epoch")


def test_overrides_sees_inherited_overrides():
    class Child(Every):
        name = "child"

    assert Child.overrides("on_epoch")
    assert not Child.overrides("on_batch")


def test_settings_from_keywords():
    policy = Every(every=3)
    assert policy.settings == EverySettings(every=3, factor=0.5)


def test_settings_from_an_object():
    settings = EverySettings(every=4, factor=0.1)
    assert Every(settings).settings is settings


def test_settings_object_and_keywords_together_are_refused():
    with pytest.raises(TypeError, match="not both"):
        Every(EverySettings(), every=3)


def test_unknown_setting_is_refused_by_name():
    with pytest.raises(ValidationError) as info:
        Every(evrey=3)
    [error] = info.value.errors()
    assert error["loc"] == ("evrey",) and error["type"] == "extra_forbidden"


def test_settings_are_frozen():
    policy = Every(every=3)
    with pytest.raises(ValidationError):
        policy.settings.every = 5


def test_hooks_return_actions():
    [action] = Every(every=2).on_epoch(EpochRecord(epoch=1), RunView(lr=0.1))
    assert action == ScaleLR(factor=0.5, reason="epoch 2")
    assert Every(every=2).on_epoch(EpochRecord(epoch=0), RunView(lr=0.1)) == []


def test_default_hooks_decide_nothing():
    policy = Bare()
    assert list(policy.on_epoch(EpochRecord(epoch=0), RunView())) == []


def test_stateless_policy_state_contract():
    policy = Bare()
    assert policy.state_dict() == {}
    policy.load_state_dict({})
    with pytest.raises(ValueError, match="'bare' keeps no state but was given \\['x'\\]"):
        policy.load_state_dict({"x": 1})
