"""A monitored metric missing from a fit's first epoch is said once per fit (issue 13, item 7)."""

from __future__ import annotations

import json

from lrsup.policies.divergence import Divergence
from lrsup.policies.early_stop import EarlyStop
from lrsup.policies.plateau import Plateau
from lrsup.policies.warm_restart import WarmRestart
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.engine.metric_check import MISSING_METRIC, MetricCheck
from lrsup.supervisor.protocol.wire import EpochRecord, StartRecord

NOVAL = {"loss": 0.5, "accuracy": 0.8}


def missing(decisions):
    return [d for d in decisions if d.action.kind == MISSING_METRIC]


def feed_fit(engine, fit, n=3, logs=NOVAL, step=0):
    out = missing(engine.feed(StartRecord(pid=1, lr=0.1, fit=fit, step=step)))
    for epoch in range(n):
        out += missing(engine.feed(EpochRecord(epoch=epoch, step=step + 10 * (epoch + 1), lr=0.1, logs=dict(logs))))
    return out


def test_said_once_at_the_first_epoch_naming_the_metric_and_the_ones_there():
    engine = Engine([Plateau(monitor="val_loss"), Divergence()])
    (d,) = feed_fit(engine, 1)
    assert (d.epoch, d.step, d.command, d.lr, d.suppressed) == (0, 10, None, None, None)
    assert (d.action.policy, d.action.metric, d.action.available, d.action.fit) == (
        "plateau",
        "val_loss",
        ("loss", "accuracy"),
        1,
    )
    assert d.action.reason.startswith(
        "plateau monitors val_loss, which is missing from the epoch logs of fit 1 (the metrics are: loss, accuracy)"
    )
    assert "validation_data" in d.action.reason


def test_nothing_is_said_when_the_metric_is_there():
    engine = Engine([Plateau(monitor="val_loss"), EarlyStop(monitor="accuracy")])
    assert feed_fit(engine, 1, logs={**NOVAL, "val_loss": 0.6}) == []


def test_each_fit_is_checked_once_and_a_restarted_attempt_is_not_checked_again():
    engine = Engine([EarlyStop(monitor="val_accuracy")])
    assert len(feed_fit(engine, 1)) == 1
    assert feed_fit(engine, 1, step=30) == []  # a restart of fit 1
    (second,) = feed_fit(engine, 2, step=30)
    assert second.action.fit == 2 and second.action.policy == "early_stop"


def test_a_resumed_engine_does_not_say_it_again():
    engine = Engine([Plateau()])
    feed_fit(engine, 1, n=1)
    clone = Engine([Plateau()])
    clone.load_state_dict(json.loads(json.dumps(engine.state_dict())))
    assert missing(clone.feed(EpochRecord(epoch=1, step=20, lr=0.1, logs=NOVAL))) == []
    old = engine.state_dict()
    del old["supervision"]["metric_check"]  # a snapshot from before the check: starts afresh
    clone = Engine([Plateau()])
    clone.load_state_dict(old)
    assert len(missing(clone.feed(EpochRecord(epoch=1, step=20, lr=0.1, logs=NOVAL)))) == 1


def test_what_each_policy_monitors():
    assert Plateau(monitor="val_auc").monitors == ("val_auc",)
    assert EarlyStop().monitors == ("val_loss",)
    assert Divergence().monitors == ()  # it reads val_loss when there is one
    assert WarmRestart(first_period_steps=10).monitors == ()
    assert WarmRestart(first_period_steps=10, on_plateau=True, monitor="val_mae").monitors == ("val_mae",)


def test_a_metric_that_is_not_a_validation_one_gets_another_hint():
    (warning,) = MetricCheck([Plateau(monitor="mae", mode="min")]).on_epoch(EpochRecord(logs={"loss": 1.0}))
    assert warning.reason.endswith("(set plateau's monitor to one of these)")
