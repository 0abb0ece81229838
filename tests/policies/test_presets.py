"""Optimizer families and their presets."""

from __future__ import annotations

import pytest

from lrsup.policies.presets import PRESETS, family_of, preset


@pytest.mark.parametrize(
    "name, family",
    [
        ("SGD", "sgd"),
        ("sgd", "sgd"),
        ("Adam", "adaptive"),
        ("AdamW", "adaptive"),
        ("Nadam", "adaptive"),
        ("RMSprop", "adaptive"),
        ("Adagrad", "adaptive"),
        ("Lion", "adaptive"),
        ("LossScaleOptimizer", "unknown"),
        ("MyOptimizer", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_family_of_class_names(name, family):
    assert family_of(name) == family


def test_sgd_cuts_harder_and_searches_higher_than_adaptive_methods():
    sgd, adam = preset("SGD"), preset("Adam")
    assert (sgd.cut, adam.cut) == (0.1, 0.5)
    assert sgd.range == (1e-5, 10.0) and adam.range == (1e-7, 1.0)
    assert sgd.high_lr > adam.high_lr


def test_every_preset_is_sane():
    for family, p in PRESETS.items():
        assert p.family == family
        assert 0 < p.cut < 1
        low, high = p.range
        assert 0 < low < high
        assert low < p.high_lr < high


def test_a_loss_scale_optimizer_has_its_inner_optimizers_family():
    # The start record's optimizer_config of keras.optimizers.LossScaleOptimizer(Adam()) (mixed precision).
    config = {"name": "loss_scale_optimizer", "inner_optimizer": {"module": "keras.optimizers", "class_name": "Adam"}}
    assert family_of("LossScaleOptimizer", config) == "adaptive"
    assert preset("LossScaleOptimizer", config).range == (1e-7, 1.0)
    sgd = {"inner_optimizer": {"class_name": "SGD", "config": {"momentum": 0.9}}}
    assert preset("LossScaleOptimizer", sgd).cut == 0.1
    assert family_of("LossScaleOptimizer", {}) == "unknown"  # no inner optimizer named
    assert family_of("MyOptimizer", config) == "unknown"  # only a wrapper's config is looked into
