"""EarlyStop: unit tests with plain sequences, and a differential test against Keras's own callback."""

from __future__ import annotations

import math
import warnings

import pytest
from pydantic import ValidationError

from lrsup.policies.actions import Keep, Rollback, SaveCheckpoint, Stop
from lrsup.policies.early_stop import BEST_CHECKPOINT, EarlyStop, EarlyStopSettings
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.protocol.commands import StopCommand
from lrsup.supervisor.protocol.wire import AckRecord, CheckpointRecord, EpochRecord, StartRecord, dumps, loads

NAN, INF = math.nan, math.inf


class FakeTrainer:
    """Applies the engine's decisions as the agent would: checkpoints, rollbacks (to an epoch's weights), stop.

    ``weights`` is the epoch whose end the model's weights are from.
    """

    def __init__(self, policy, epochs=None, cadence=True):
        self.engine = Engine([policy])
        self.epochs, self.cadence = epochs, cadence
        self.saved = {}  # name -> epoch of its weights
        self.weights = None
        self.stopped_at = None
        self.seq = 0
        self.journal = []

    def feed(self, record):
        for d in self.engine.feed(record):
            self.journal.append(d)
            if d.command is None:
                continue
            self.seq += 1
            cmd = d.command.cmd
            if cmd == "checkpoint":
                self.save(d.command.name or f"manual-{self.seq}", record)
            elif cmd == "rollback":
                self.weights = self.saved[d.command.checkpoint]
                self.feed(AckRecord(seq=self.seq, cmd="rollback", epoch=record.epoch, step=record.step))
            elif cmd == "stop":
                self.stopped_at = record.epoch

    def save(self, name, record):
        self.saved[name] = self.weights
        self.feed(CheckpointRecord(name=name, epoch=record.epoch, step=record.step, file=f"c/{name}", sha256="0" * 64))

    def run(self, values, monitor="val_loss"):
        self.feed(StartRecord(pid=1, lr=0.1, epochs=self.epochs if self.epochs is not None else len(values)))
        for epoch, value in enumerate(values):
            self.weights = epoch
            record = EpochRecord(
                epoch=epoch, step=10 * (epoch + 1), lr=0.1, logs={} if value is None else {monitor: value}
            )
            if self.cadence:
                self.save(f"epoch-{epoch + 1}", record)
            self.feed(record)
            if self.stopped_at is not None:
                break
        return self


def drive(values, monitor="val_loss", cadence=True, epochs=None, **settings):
    policy = EarlyStop(monitor=monitor, **settings)
    return FakeTrainer(policy, epochs=epochs, cadence=cadence).run(values, monitor), policy


# -- settings ------------------------------------------------------------------------------------------


def test_defaults_are_keras_defaults():
    s = EarlyStopSettings()
    assert (s.monitor, s.min_delta, s.patience, s.mode, s.baseline, s.restore_best_weights, s.start_from_epoch) == (
        "val_loss",
        0.0,
        0,
        "auto",
        None,
        False,
        0,
    )


@pytest.mark.parametrize(
    "kwargs, field, text",
    [
        ({"patience": -1}, "patience", "greater than or equal to 0"),
        ({"start_from_epoch": -2}, "start_from_epoch", "greater than or equal to 0"),
        ({"monitor": "my_score"}, "mode", "monitor='my_score'"),
        ({"mode": "up"}, "mode", "'auto', 'min' or 'max'"),
        ({"restore_best_weights": "yes"}, "restore_best_weights", "valid boolean"),
        ({"patiense": 3}, "patiense", "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_are_refused_by_name(kwargs, field, text):
    with pytest.raises(ValidationError) as info:
        EarlyStop(**kwargs)
    [error] = info.value.errors()
    assert error["loc"] == (field,) and text in error["msg"]


# -- the algorithm -----------------------------------------------------------------------------------------


def test_stops_after_patience_epochs_without_improvement():
    trainer, policy = drive([1.0, 0.9, 0.95, 0.96, 0.97], patience=2)
    assert trainer.stopped_at == 3
    [stop] = [d for d in trainer.journal if d.command == StopCommand()]
    assert stop.action == Stop(
        policy="early_stop",
        reason=("val_loss 0.96 has not improved on best 0.9 (epoch 2) for 2 epochs: early stopping at epoch 4"),
    )
    assert stop.exit_status is None


def test_patience_zero_stops_at_the_first_epoch_without_improvement_but_never_on_epoch_zero():
    trainer, _ = drive([1.0, 1.0], patience=0)
    assert trainer.stopped_at == 1


def test_baseline_must_be_beaten_to_reset_the_wait():
    # every epoch improves on the best, none beats the baseline 0.5: stops after patience
    trainer, policy = drive([0.9, 0.8, 0.7, 0.6], patience=2, baseline=0.5)
    assert trainer.stopped_at is None  # improvements return before the patience check, as in Keras
    assert policy.wait == 4 and policy.best == 0.6
    trainer, _ = drive([0.9, 0.8, 0.8, 0.8], patience=2, baseline=0.5)
    assert trainer.stopped_at == 2


def test_start_from_epoch_and_missing_values_are_ignored():
    trainer, policy = drive([5.0, 5.0, 1.0, None, 1.0, 1.0], patience=1, start_from_epoch=2)
    assert trainer.stopped_at == 4 and policy.best_epoch == 2


def test_restore_best_weights_rolls_back_to_the_best_epochs_checkpoint_then_stops():
    trainer, policy = drive([1.0, 0.5, 0.7, 0.8], patience=2, restore_best_weights=True)
    cmds = [d.command.cmd for d in trainer.journal if d.command and d.action.policy == "early_stop"]
    assert cmds == ["retain", "retain", "rollback", "stop"]
    rollback = next(d for d in trainer.journal if d.command and d.command.cmd == "rollback")
    assert rollback.command.checkpoint == "epoch-2" and trainer.weights == 1
    assert rollback.action.reason.endswith("restoring the weights of the best epoch, 2")


def test_without_cadence_checkpoints_the_best_weights_are_saved_on_each_improvement():
    trainer, policy = drive([1.0, 0.5, 0.7, 0.8], patience=2, restore_best_weights=True, cadence=False)
    kinds = [type(d.action) for d in trainer.journal if d.action.policy == "early_stop"]
    assert kinds == [SaveCheckpoint, Keep, SaveCheckpoint, Rollback, Stop]  # one name: one Keep
    assert trainer.saved[BEST_CHECKPOINT] == 1 and trainer.weights == 1


def test_restores_the_best_weights_after_the_last_epoch_as_keras_does():
    trainer, policy = drive([1.0, 0.5, 0.7], patience=5, restore_best_weights=True)
    assert trainer.stopped_at is None and trainer.weights == 1
    [rollback] = [d for d in trainer.journal if d.command and d.command.cmd == "rollback"]
    assert rollback.epoch == 2 and rollback.action.reason.startswith("the last epoch, 3, has ended")
    # the budget unknown: nothing to do at the end
    trainer = FakeTrainer(EarlyStop(patience=5, restore_best_weights=True), epochs=None)
    trainer.feed(StartRecord(pid=1, lr=0.1))
    for e, v in enumerate([1.0, 0.5, 0.7]):
        trainer.feed(EpochRecord(epoch=e, step=e + 1, logs={"val_loss": v}))
    assert not [d for d in trainer.journal if d.command and d.command.cmd == "rollback"]


def test_nan_is_never_an_improvement_except_first():
    trainer, policy = drive([NAN, 0.1, 0.01], patience=1)
    assert trainer.stopped_at == 1 and math.isnan(policy.best)


def test_state_round_trip():
    policy = EarlyStop(patience=3, restore_best_weights=True)
    FakeTrainer(policy).run([1.0, 0.5, INF])
    state = loads(dumps(policy.state_dict()))
    fresh = EarlyStop(patience=3, restore_best_weights=True)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == policy.state_dict()
    with pytest.raises(ValueError, match="wait must be an int >= 0; got -1"):
        fresh.load_state_dict({**state, "wait": -1})


# -- differential test against keras.callbacks.EarlyStopping --------------------------------------------------
#
# Keras's callback runs against a real compiled model (mode="auto" looks at its metrics, and
# restore_best_weights copies its weights). The policy runs in the Engine with a fake trainer
# that checkpoints every epoch and applies rollbacks. Equal: the epoch training stops at,
# and with restore_best_weights the epoch whose weights the model ends with.

_MONITORS = ["val_loss", "loss", "val_accuracy", "accuracy", "val_mae"]


@pytest.fixture(scope="module")
def keras_model():
    keras = pytest.importorskip("keras")
    import numpy as np

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy", "mae"])
    model.evaluate(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0)
    return model


@pytest.mark.keras
def test_settings_defaults_match_keras_signature():
    keras = pytest.importorskip("keras")
    import inspect

    params = inspect.signature(keras.callbacks.EarlyStopping.__init__).parameters
    for name, field in EarlyStopSettings.model_fields.items():
        assert params[name].default == field.default, name


@pytest.mark.keras
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_same_stop_epoch_and_restored_epoch_as_keras_early_stopping(keras_model):
    keras = pytest.importorskip("keras")
    import numpy as np
    from hypothesis import given, settings
    from hypothesis import strategies as st

    near = st.sampled_from([0.5, 0.5 + 1e-4, 0.5 - 1e-4, 0.49995, 1.0, 0.0, 0.25])
    value = st.one_of(near, near, st.floats(width=32), st.floats(-10.0, 10.0), st.just(NAN), st.none())

    @settings(max_examples=200, deadline=None)
    @given(
        monitor=st.sampled_from(_MONITORS),
        mode=st.sampled_from(["auto", "auto", "min", "max"]),
        patience=st.integers(0, 4),
        min_delta=st.one_of(st.sampled_from([0.0, 1e-4, 0.05, -0.01]), st.floats(-0.1, 0.5)),
        baseline=st.one_of(st.none(), st.sampled_from([0.5, 0.25, 1.0]), st.floats(-1.0, 2.0)),
        restore=st.booleans(),
        start_from_epoch=st.integers(0, 3),
        values=st.lists(value, min_size=1, max_size=25),
        budget_known=st.booleans(),
    )
    def check(monitor, mode, patience, min_delta, baseline, restore, start_from_epoch, values, budget_known):
        callback = keras.callbacks.EarlyStopping(
            monitor=monitor,
            min_delta=min_delta,
            patience=patience,
            mode=mode,
            baseline=baseline,
            restore_best_weights=restore,
            start_from_epoch=start_from_epoch,
        )
        keras_model.stop_training = False
        callback.set_model(keras_model)
        callback.on_train_begin()
        keras_stop, keras_end_weights = None, None
        for epoch, v in enumerate(values):
            # the model's "weights" are the epoch number, so a restore shows which epoch it came from
            keras_model.set_weights([np.full((2, 1), float(epoch), "float32"), np.zeros(1, "float32")])
            logs = {} if v is None else {monitor: v}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                callback.on_epoch_end(epoch, logs)
            if keras_model.stop_training:
                keras_stop = epoch
                break
        callback.on_train_end()
        keras_end_weights = int(keras_model.get_weights()[0][0, 0])

        policy = EarlyStop(
            monitor=monitor,
            min_delta=min_delta,
            patience=patience,
            mode=mode,
            baseline=baseline,
            restore_best_weights=restore,
            start_from_epoch=start_from_epoch,
        )
        trainer = FakeTrainer(policy, epochs=len(values) if budget_known else 10_000).run(values, monitor)
        assert trainer.stopped_at == keras_stop, values
        if restore and (keras_stop is not None or budget_known):
            assert trainer.weights == keras_end_weights, values
        assert policy.best_epoch == callback.best_epoch

    check()
