"""Plateau: unit tests with plain sequences, and a differential test against Keras's own callback."""

from __future__ import annotations

import math
import warnings

import pytest
from pydantic import ValidationError

from lrsup.policies.actions import ScaleLR
from lrsup.policies.base import RunView
from lrsup.policies.monitor import to_float32
from lrsup.policies.plateau import Plateau, PlateauSettings
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.protocol.commands import SetLRCommand
from lrsup.supervisor.protocol.wire import EpochRecord, StartRecord, dumps, loads

NAN = math.nan
INF = math.inf


class FakeRunner:
    """Applies the engine's decisions to a float32 LR, as the agent's optimizer would."""

    def __init__(self, lr: float) -> None:
        self.lr = to_float32(lr)
        self.journal: list = []

    def apply(self, decisions) -> None:
        for decision in decisions:
            self.journal.append(decision)
            command = decision.command
            if command is None:
                continue
            if command.cmd == "set_lr":
                self.lr = to_float32(command.lr)
            elif command.cmd == "scale_lr":
                self.lr = to_float32(self.lr * command.factor)
            else:
                raise AssertionError(f"plateau sent {command}")


def drive(values, lr=0.1, monitor="val_loss", **settings):
    """Feed one epoch record per value (None: the key is missing); return the LR after each epoch."""
    policy = Plateau(monitor=monitor, **settings)
    engine = Engine([policy])
    runner = FakeRunner(lr)
    runner.apply(engine.feed(StartRecord(pid=1, lr=runner.lr)))
    lrs = []
    for epoch, value in enumerate(values):
        logs = {"loss": 1.0} if value is None else {monitor: value}
        runner.apply(engine.feed(EpochRecord(epoch=epoch, step=10 * (epoch + 1), lr=runner.lr, logs=logs)))
        lrs.append(runner.lr)
    return lrs, runner, policy


# -- settings ------------------------------------------------------------------


def test_defaults_are_keras_defaults():
    s = PlateauSettings()
    assert (s.monitor, s.factor, s.patience, s.mode, s.min_delta, s.cooldown, s.min_lr) == (
        "val_loss",
        0.1,
        10,
        "auto",
        1e-4,
        0,
        0.0,
    )


@pytest.mark.parametrize(
    "kwargs, field, text",
    [
        ({"factor": 1.0}, "factor", "factor >= 1.0; got factor=1.0"),
        ({"factor": 1.5}, "factor", "factor >= 1.0; got factor=1.5"),
        ({"factor": 0.0}, "factor", "factor must be > 0; got factor=0.0"),
        ({"factor": -0.5}, "factor", "factor must be > 0; got factor=-0.5"),
        ({"factor": NAN}, "factor", "got factor=nan"),
        ({"patience": -1}, "patience", "greater than or equal to 0"),
        ({"patience": True}, "patience", "valid integer"),
        ({"patience": 2.5}, "patience", "valid integer"),
        ({"cooldown": -2}, "cooldown", "greater than or equal to 0"),
        ({"min_lr": -1e-6}, "min_lr", "greater than or equal to 0"),
        ({"min_lr": INF}, "min_lr", "finite"),
        ({"min_delta": NAN}, "min_delta", "finite"),
        ({"mode": "up"}, "mode", "'auto', 'min' or 'max'"),
        ({"monitor": "my_score"}, "mode", "monitor='my_score'"),
        ({"monitor": ""}, "monitor", "at least 1 character"),
        ({"patiense": 3}, "patiense", "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_are_refused_by_name(kwargs, field, text):
    with pytest.raises(ValidationError) as info:
        Plateau(**kwargs)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [(field,)]
    assert text in errors[0]["msg"]


def test_unknown_metric_is_accepted_with_an_explicit_mode():
    assert Plateau(monitor="my_score", mode="max").settings.mode == "max"


# -- the algorithm on plain sequences ------------------------------------------------


def test_cuts_after_patience_epochs_without_improvement():
    lrs, runner, _ = drive([1.0, 0.9, 0.95, 0.96, 0.97, 0.98], lr=0.01, factor=0.5, patience=2)
    a = to_float32(0.01)
    assert lrs == [a, a, a, a / 2, a / 2, a / 4]
    [first, second] = [d for d in runner.journal if d.command]
    assert first.epoch == 3 and first.step == 40
    assert first.action == ScaleLR(
        factor=0.5,
        min_lr=0.0,
        policy="plateau",
        reason="val_loss 0.96 has not improved on best 0.9 (epoch 2) for 2 epochs; LR 0.01 -> 0.005",
    )
    assert first.command == SetLRCommand(lr=a * 0.5)
    assert second.epoch == 5


def test_improvement_resets_the_wait():
    lrs, _, policy = drive([1.0, 1.1, 0.5, 0.6, 0.4, 0.45], factor=0.5, patience=2)
    assert lrs == [to_float32(0.1)] * 6
    assert policy.best == 0.4 and policy.best_epoch == 4 and policy.wait == 1


def test_min_delta_makes_small_gains_count_as_none():
    lrs, _, _ = drive([1.0, 0.99, 0.98], factor=0.5, patience=2, min_delta=0.05)
    assert lrs[-1] == to_float32(to_float32(0.1) * 0.5)
    lrs, _, _ = drive([1.0, 0.99, 0.98], factor=0.5, patience=2, min_delta=0.0)
    assert lrs[-1] == to_float32(0.1)


def test_max_mode_from_the_metric_name():
    lrs, _, _ = drive([0.5, 0.6, 0.6, 0.55], monitor="val_accuracy", factor=0.5, patience=2)
    assert lrs == [to_float32(0.1)] * 3 + [to_float32(to_float32(0.1) * 0.5)]


def test_patience_zero_cuts_on_every_epoch_without_improvement():
    lrs, _, _ = drive([1.0, 2.0, 2.0], lr=1.0, factor=0.5, patience=0)
    assert lrs == [1.0, 0.5, 0.25]


def test_cooldown_skips_epochs_after_a_cut():
    # patience 1, cooldown 2: cut at epoch 1. The counter is decremented before the
    # check, as in Keras, so only epoch 2 is quiet: epoch 3 counts again and cuts.
    lrs, _, policy = drive([1.0, 2.0, 2.0, 2.0, 2.0, 2.0], lr=1.0, factor=0.5, patience=1, cooldown=2)
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    assert policy.cooldown_counter == 2


def test_min_lr_floor_and_wait_keeps_counting():
    lrs, runner, policy = drive([1.0] * 6, lr=0.1, factor=0.1, patience=1, min_lr=0.005)
    f = to_float32
    assert lrs == [f(0.1), f(f(0.1) * 0.1)] + [f(0.005)] * 4  # the second cut stops at min_lr
    assert sum(1 for d in runner.journal if d.command) == 2
    assert policy.wait == 3  # at the floor no cut is made, and Keras never resets the wait


def test_missing_metric_is_ignored_without_touching_the_state():
    lrs, runner, policy = drive([1.0, None, None, 1.0, 1.0], lr=1.0, factor=0.5, patience=2)
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5]
    assert policy.best == 1.0 and policy.best_epoch == 0


def test_nan_first_value_becomes_best_and_is_never_beaten():
    lrs, _, policy = drive([NAN, 0.1, 0.01, 0.001], lr=1.0, factor=0.5, patience=3)
    assert lrs == [1.0, 1.0, 1.0, 0.5]
    assert math.isnan(policy.best)


def test_nan_later_counts_as_no_improvement():
    lrs, runner, _ = drive([1.0, NAN, NAN], lr=1.0, factor=0.5, patience=2)
    assert lrs == [1.0, 1.0, 0.5]
    [decision] = [d for d in runner.journal if d.command]
    assert decision.action.reason.startswith("val_loss nan has not improved on best 1 (epoch 1) for 2 epochs")


def test_a_new_fit_starts_afresh():
    policy = Plateau(factor=0.5, patience=2)
    view = RunView(lr=1.0)
    for epoch, value in enumerate([1.0, 2.0]):
        policy.on_epoch(EpochRecord(epoch=epoch, lr=1.0, logs={"val_loss": value}), view)
    assert policy.wait == 1
    policy.on_start(StartRecord(pid=1, lr=1.0), view)
    assert policy.state_dict() == {"best": None, "best_epoch": None, "wait": 0, "cooldown_counter": 0, "history": []}


def test_unknown_lr_still_decides_and_says_so():
    policy = Plateau(factor=0.5, patience=1)
    policy.on_epoch(EpochRecord(epoch=0, logs={"val_loss": 1.0}), RunView())
    [action] = policy.on_epoch(EpochRecord(epoch=1, logs={"val_loss": 1.5}), RunView())
    assert (
        action.reason == "val_loss 1.5 has not improved on best 1 (epoch 1) for 1 epoch; LR x0.5 (current LR unknown)"
    )


def test_state_round_trips_through_protocol_json_and_continues_identically():
    values = [INF, 2.0, 3.0, NAN, 1.0, 1.5, 1.5, 1.5]
    full, _, _ = drive(values, lr=1.0, factor=0.5, patience=1, cooldown=1)

    policy = Plateau(factor=0.5, patience=1, cooldown=1)
    engine = Engine([policy])
    runner = FakeRunner(1.0)
    engine.feed(StartRecord(pid=1, lr=1.0))
    lrs = []
    for epoch, value in enumerate(values):
        if epoch == 4:
            state = loads(dumps(engine.state_dict()))
            engine = Engine([Plateau(factor=0.5, patience=1, cooldown=1)])
            engine.load_state_dict(state)
        runner.apply(engine.feed(EpochRecord(epoch=epoch, lr=runner.lr, logs={"val_loss": value})))
        lrs.append(runner.lr)
    assert lrs == full


def test_state_dict_with_infinite_best_is_protocol_json():
    policy = Plateau()
    policy.on_epoch(EpochRecord(epoch=0, logs={"val_loss": INF}), RunView(lr=1.0))
    line = dumps(policy.state_dict())
    assert '"best":Infinity' in line
    restored = Plateau()
    restored.load_state_dict(loads(line))
    assert restored.best == INF


@pytest.mark.parametrize(
    "state, text",
    [
        ({"best": 1.0}, "must have keys"),
        ({"best": "x", "best_epoch": 0, "wait": 0, "cooldown_counter": 0}, "best must be a number"),
        ({"best": 1.0, "best_epoch": 0, "wait": -1, "cooldown_counter": 0}, "wait must be an int >= 0; got -1"),
        ({"best": 1.0, "best_epoch": "0", "wait": 0, "cooldown_counter": 0}, "best_epoch must be an int"),
        ({"best": 1.0, "best_epoch": 0, "wait": 0, "cooldown_counter": 1.5}, "cooldown_counter must be"),
    ],
)
def test_load_state_dict_refuses_bad_state(state, text):
    with pytest.raises(ValueError, match=text):
        Plateau().load_state_dict(state)


# -- differential test against keras.callbacks.ReduceLROnPlateau ------------------------------
#
# Keras's own callback runs on a real compiled model (its optimizer's learning_rate is a
# float32 variable, and mode="auto" looks up the compiled metrics' direction). lrsup's
# Plateau runs inside the Engine, and a fake runner applies its commands to a float32 LR,
# as the agent's optimizer would. Equality is exact: lrsup rounds both sides of the
# improvement comparison to float32 exactly as keras.ops.less/greater do, and computes
# the new LR with the same double arithmetic before the float32 store.

# The logs keys of the model below: loss and the compiled metrics accuracy and mae.
_MONITORS = ["val_loss", "loss", "val_accuracy", "accuracy", "val_mae", "mae"]


@pytest.fixture(scope="module")
def keras_model():
    keras = pytest.importorskip("keras")
    import numpy as np

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="binary_crossentropy", metrics=["accuracy", "mae"]
    )
    model.evaluate(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0)  # builds the compiled metrics
    return model


@pytest.mark.keras
def test_settings_defaults_match_keras_signature():
    keras = pytest.importorskip("keras")
    import inspect

    params = inspect.signature(keras.callbacks.ReduceLROnPlateau.__init__).parameters
    for name, field in PlateauSettings.model_fields.items():
        assert params[name].default == field.default, name


def _differential_strategies():
    from hypothesis import strategies as st

    f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
    near = st.sampled_from([0.5, 0.5 + 1e-4, 0.5 - 1e-4, 0.49995, 0.4999, 1.0, 0.0, 0.25, 1e-3])
    doubles = st.floats(min_value=-10.0, max_value=10.0)  # not float32: exercises the rounding
    value = st.one_of(near, near, f32, doubles, st.just(NAN), st.none())
    return dict(
        monitor=st.sampled_from(_MONITORS),
        mode=st.sampled_from(["auto", "auto", "min", "max"]),
        factor=st.one_of(st.sampled_from([0.1, 0.2, 0.5, 0.9, 0.99]), st.floats(0.01, 0.99)),
        patience=st.integers(0, 4),
        cooldown=st.integers(0, 3),
        min_delta=st.one_of(st.sampled_from([0.0, 1e-4, 1e-3, 0.05, 0.5, -0.01]), st.floats(-0.1, 0.5)),
        min_lr=st.one_of(st.sampled_from([0.0, 1e-6, 1e-3, 0.01, 0.05]), st.floats(0.0, 0.1)),
        lr=st.one_of(st.sampled_from([1.0, 0.1, 0.01, 1e-3]), st.floats(1e-6, 1.0)),
        values=st.lists(value, min_size=1, max_size=30),
    )


@pytest.mark.keras
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside Keras, numpy 2
def test_same_lr_as_keras_reduce_lr_on_plateau_after_every_epoch(keras_model):
    keras = pytest.importorskip("keras")
    from hypothesis import given, settings

    @settings(max_examples=200, deadline=None)
    @given(**_differential_strategies())
    def check(monitor, mode, factor, patience, cooldown, min_delta, min_lr, lr, values):
        optimizer = keras_model.optimizer
        optimizer.learning_rate = lr
        callback = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor,
            factor=factor,
            patience=patience,
            mode=mode,
            min_delta=min_delta,
            cooldown=cooldown,
            min_lr=min_lr,
        )
        callback.set_model(keras_model)
        callback.on_train_begin()

        policy = Plateau(
            monitor=monitor,
            factor=factor,
            patience=patience,
            mode=mode,
            min_delta=min_delta,
            cooldown=cooldown,
            min_lr=min_lr,
        )
        engine = Engine([policy])
        runner = FakeRunner(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
        assert runner.lr == to_float32(lr)
        runner.apply(engine.feed(StartRecord(pid=1, lr=runner.lr)))

        for epoch, value in enumerate(values):
            logs = {"loss": 0.3} if monitor != "loss" else {}
            if value is not None:
                logs[monitor] = value
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Keras warns when the metric is missing
                callback.on_epoch_end(epoch, dict(logs))
            runner.apply(engine.feed(EpochRecord(epoch=epoch, step=epoch + 1, lr=runner.lr, logs=logs)))

            keras_lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            assert runner.lr == keras_lr, (epoch, values[: epoch + 1])
            assert (policy.wait, policy.cooldown_counter) == (callback.wait, callback.cooldown_counter)
            if callback.best is None or math.isnan(callback.best):
                assert policy.best is callback.best or math.isnan(policy.best)
            else:
                assert policy.best == callback.best

    check()
