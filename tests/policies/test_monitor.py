"""The shared improvement rule, on its own (Keras's MonitorCallback semantics)."""

from __future__ import annotations

import json
import math

import pytest

from lrsup.policies.base import RunView
from lrsup.policies.early_stop import EarlyStop
from lrsup.policies.monitor import Monitor, MonitorSettings, infer_direction, resolve_mode, to_float32
from lrsup.policies.plateau import Plateau
from lrsup.supervisor.protocol.wire import AckRecord, EpochRecord

NAN = math.nan
INF = math.inf


@pytest.mark.parametrize(
    "monitor, direction",
    [
        ("loss", "min"),
        ("val_loss", "min"),
        ("val_mae", "min"),
        ("mse", "min"),
        ("val_sparse_categorical_crossentropy", "min"),
        ("accuracy", "max"),
        ("val_accuracy", "max"),
        ("acc", "max"),
        ("val_acc", "max"),
        ("val_auc", "max"),
        ("auc_1", "max"),  # a second AUC instance
        ("AUC", "max"),  # compile(metrics=["AUC"]) names the metric "AUC"
        ("MeanSquaredError", "min"),
        ("val_top_k_categorical_accuracy", "max"),
        ("dense_accuracy", "max"),  # multi-output: <output>_<metric>
        ("val_out_loss", "min"),
        ("f1_score", "max"),
        ("r2_score", "max"),
    ],
)
def test_infer_direction_known_names(monitor, direction):
    assert infer_direction(monitor) == direction
    assert resolve_mode(monitor, "auto") == direction


@pytest.mark.parametrize("monitor", ["my_score", "val_true_positives", "learning_rate", "val_"])
def test_infer_direction_unknown_names(monitor):
    assert infer_direction(monitor) is None
    with pytest.raises(ValueError, match=f"monitor='{monitor}'.*set mode to 'min' or 'max'"):
        resolve_mode(monitor, "auto")


def test_explicit_mode_wins_over_the_name():
    assert resolve_mode("val_accuracy", "min") == "min"
    assert resolve_mode("my_score", "max") == "max"


def test_bad_mode_is_refused_with_its_value():
    with pytest.raises(ValueError, match="mode='up'"):
        resolve_mode("val_loss", "up")
    with pytest.raises(ValueError, match="mode='up'"):
        Monitor("val_loss", mode="up")


def test_to_float32():
    assert to_float32(0.1) == 0.10000000149011612
    assert to_float32(1.5) == 1.5
    assert to_float32(1e39) == INF
    assert to_float32(-1e39) == -INF
    assert to_float32(INF) == INF
    assert math.isnan(to_float32(NAN))
    assert to_float32(1e-50) == 0.0


def test_first_value_is_always_an_improvement_even_nan():
    m = Monitor("val_loss")
    assert m.is_improvement(1.0, None)
    assert m.is_improvement(NAN, None)
    assert m.is_improvement(INF, None)


def test_min_mode_with_min_delta():
    m = Monitor("val_loss", min_delta=0.1)
    assert m.is_improvement(0.85, best=1.0)
    assert not m.is_improvement(0.95, best=1.0)  # better, but by less than min_delta
    assert not m.is_improvement(1.0, best=1.0)
    assert not m.is_improvement(1.2, best=1.0)


def test_max_mode_with_min_delta():
    m = Monitor("val_accuracy", min_delta=0.01)
    assert m.direction == "max"
    assert m.is_improvement(0.92, best=0.9)
    assert not m.is_improvement(0.905, best=0.9)
    assert not m.is_improvement(0.8, best=0.9)


def test_negative_min_delta_is_taken_as_its_absolute_value():
    m = Monitor("val_loss", min_delta=-0.1)
    assert m.min_delta == 0.1
    assert not m.is_improvement(0.95, best=1.0)


def test_zero_min_delta_needs_a_strict_improvement():
    m = Monitor("val_loss", min_delta=0)
    assert m.is_improvement(0.999, best=1.0)
    assert not m.is_improvement(1.0, best=1.0)


def test_nan_never_improves_and_a_nan_best_is_never_beaten():
    for mode in ("min", "max"):
        m = Monitor("x", mode=mode, min_delta=0)
        assert not m.is_improvement(NAN, best=1.0)
        assert not m.is_improvement(0.0, best=NAN)
        assert not m.is_improvement(-INF if mode == "min" else INF, best=NAN)


def test_infinities():
    m = Monitor("val_loss", min_delta=1e-4)
    assert m.is_improvement(1e30, best=INF)
    assert not m.is_improvement(INF, best=INF)
    assert m.is_improvement(-INF, best=0.0)


def test_comparison_is_in_float32_like_keras():
    # 1.0 + 1e-9 and 1.0 are the same float32: not an improvement in max mode, as in Keras
    # (ops.greater on float32 tensors), although the doubles differ.
    m = Monitor("val_accuracy", min_delta=0)
    assert not m.is_improvement(1.0 + 1e-9, best=1.0)
    # min_delta is applied in double precision first, then the sum is rounded.
    m = Monitor("val_loss", min_delta=1e-9)
    assert not m.is_improvement(0.5, best=0.5 + 1e-8)  # both sides round to 0.5f


def test_value_reads_logs():
    m = Monitor("val_loss")
    assert m.value({"val_loss": 1}) == 1.0
    assert isinstance(m.value({"val_loss": 1}), float)
    assert m.value({"loss": 1.0}) is None


@pytest.mark.keras
def test_direction_table_agrees_with_keras_metrics():
    """Every built-in Keras metric that declares a direction gets the same one here."""
    keras = pytest.importorskip("keras")
    import inspect

    checked = 0
    for attr in dir(keras.metrics):
        cls = getattr(keras.metrics, attr)
        if not (inspect.isclass(cls) and issubclass(cls, keras.metrics.Metric)):
            continue
        for kwargs in (
            {},
            {"num_classes": 2, "target_class_ids": [0]},
            {"num_classes": 2},
            {"recall": 0.5},
            {"precision": 0.5},
            {"specificity": 0.5},
            {"sensitivity": 0.5},
        ):
            try:
                metric = cls(**kwargs)
                break
            except (TypeError, ValueError):
                continue
        else:
            continue
        direction = getattr(metric, "_direction", None)
        if direction is None:
            continue
        expected = "max" if direction == "up" else "min"
        assert infer_direction(metric.name) == expected, metric.name
        assert infer_direction("val_" + metric.name) == expected, metric.name
        assert infer_direction(cls.__name__) == expected, cls.__name__
        checked += 1
    assert checked >= 30


def test_float32_subnormals_compare_as_zero_like_tensorflow():
    # TensorFlow's CPU kernels flush float32 subnormals to zero; Keras's ReduceLROnPlateau
    # therefore sees no improvement from 0.0 to -1.17e-38 (found by the differential test).
    assert to_float32(-1.1709838513253188e-38) == 0.0
    assert to_float32(1.2e-38) == 1.2e-38 or to_float32(1.2e-38) > 0.0
    assert not Monitor("val_loss", "min", 0.0).is_improvement(-1.1709838513253188e-38, 0.0)


@pytest.mark.parametrize("cls", [Plateau, EarlyStop])
def test_every_monitor_policy_checks_mode_against_its_monitor_the_same_way(cls):
    # The rule lives once, in MonitorSettings; each policy's error names the monitor.
    with pytest.raises(ValueError, match=r"mode='auto' cannot tell whether monitor='f1_weird'"):
        cls(monitor="f1_weird")
    policy = cls(monitor="f1_weird", mode="max", min_delta=0.5)
    assert isinstance(policy.settings, MonitorSettings)
    assert policy._monitor == Monitor("f1_weird", "max", 0.5)
    assert policy._monitor.is_improvement(2.0, 1.0) and not policy._monitor.is_improvement(1.2, 1.0)


def epoch(n: int, step: int, value: float) -> EpochRecord:
    return EpochRecord(epoch=n, step=step, lr=0.1, logs={"val_loss": value})


def rollback_ack(step: int) -> AckRecord:
    return AckRecord(seq=9, cmd="rollback", step=step)


def test_plateau_forgets_the_epochs_a_rollback_abandons():
    # An LR range test (or a diverging stretch) ran epochs 0-2, then the run went back to step 0:
    # their best value and patience must not carry over, or the next epoch would cut at once.
    policy, view = Plateau(factor=0.5, patience=3), RunView(lr=0.1)
    for n, value in enumerate([0.2, 0.9, 0.95]):
        policy.on_epoch(epoch(n, 10 * (n + 1), value), view)
    assert (policy.best, policy.wait) == (0.2, 2)
    assert policy.on_ack(rollback_ack(0), view) == ()
    assert (policy.best, policy.wait, policy.state_dict()["history"]) == (None, 0, [])
    assert policy.on_epoch(epoch(0, 10, 0.5), view) == ()  # a fresh best, not "no improvement for 3"


def test_plateau_goes_back_to_its_state_at_the_rollbacks_step():
    policy, view = Plateau(factor=0.5, patience=3), RunView(lr=0.1)
    for n, value in enumerate([0.5, 0.4, 0.45, 0.46]):
        policy.on_epoch(epoch(n, 10 * (n + 1), value), view)
    assert policy.wait == 2
    policy.on_ack(rollback_ack(25), view)  # back to a checkpoint between epochs 2 and 3 (steps 20 and 30)
    assert (policy.best, policy.best_epoch, policy.wait) == (0.4, 1, 0)
    policy.on_ack(AckRecord(seq=10, cmd="set_lr", step=25), view)  # other acks change nothing
    assert policy.wait == 0 and len(policy.state_dict()["history"]) == 2


def test_early_stop_keeps_its_state_through_a_rollback():
    # Its best weights live under one checkpoint name each new best overwrites: not rewound.
    policy, view = EarlyStop(patience=5, restore_best_weights=True), RunView(lr=0.1)
    policy.on_epoch(epoch(0, 10, 0.5), view)
    policy.on_epoch(epoch(1, 20, 0.3), view)
    policy.on_ack(rollback_ack(10), view)
    assert (policy.best, policy.best_epoch) == (0.3, 1) and policy.state_dict()["history"] == []


def test_the_history_goes_through_a_snapshot_and_old_states_still_load():
    policy, view = Plateau(factor=0.5, patience=3), RunView(lr=0.1)
    for n, value in enumerate([0.5, 0.4, 0.45]):
        policy.on_epoch(epoch(n, 10 * (n + 1), value), view)
    resumed = Plateau(factor=0.5, patience=3)
    resumed.load_state_dict(json.loads(json.dumps(policy.state_dict())))
    resumed.on_ack(rollback_ack(20), view)
    assert (resumed.best, resumed.wait) == (0.4, 0)
    old = {k: v for k, v in policy.state_dict().items() if k != "history"}
    older = Plateau(factor=0.5, patience=3)
    older.load_state_dict(old)  # saved before the history existed
    assert older.wait == 1 and older.state_dict()["history"] == []
    with pytest.raises(ValueError, match="history must be a list"):
        older.load_state_dict({**old, "history": [[1]]})


def test_the_history_is_bounded_and_a_rollback_past_it_starts_afresh(monkeypatch):
    monkeypatch.setattr(Plateau, "history_limit", 3)
    policy, view = Plateau(factor=0.5, patience=100), RunView(lr=0.1)
    for n in range(10):
        policy.on_epoch(epoch(n, 10 * (n + 1), 1.0 - n / 100), view)
    assert [step for step, _ in policy.state_dict()["history"]] == [80, 90, 100]
    policy.on_ack(rollback_ack(85), view)
    assert policy.best == pytest.approx(0.93)  # epoch 7's state (step 80)
    policy.on_ack(rollback_ack(20), view)  # further back than remembered
    assert (policy.best, policy.wait) == (None, 0)
