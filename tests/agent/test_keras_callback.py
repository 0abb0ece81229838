"""LrsupCallback in real Keras fits, with a thread playing a minimal supervisor.

The model is one weight ``w`` (Dense(1), no bias, starting at 0) trained on x = 1 with the
loss mean(y_pred) = w, so every gradient is 1 and plain SGD moves ``w`` by exactly ``-lr``
per step: the per-step weight deltas show which learning rate each update really used.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from lrsup.supervisor.agent import (
    keras_callback,
    launcher,
)
from lrsup.supervisor.agent.keras_callback import KerasOptimizerHandle, LrsupCallback, ScaledSchedule
from lrsup.supervisor.protocol.doorbell import BELL_FILE, Bell, ControlWriter
from lrsup.supervisor.protocol.jsonl import Appender, LineSplitter, iter_objects
from lrsup.supervisor.protocol.wire import (
    CONTROL_FILE,
    ENV_RUN_DIR,
    METRICS_FILE,
    loads,
    make_command,
    parse_record,
)

pytestmark = [pytest.mark.keras, pytest.mark.timeout(180)]

STEPS = 8  # steps per epoch: 64 samples, batch size 8


class MiniSupervisor(threading.Thread):
    """Follows metrics.jsonl; after each epoch record writes the planned commands, then the verdict.

    Args:
        run_dir: Path.
        plan: dict, epoch -> list of (cmd, args) to send after that epoch's record.
    """

    def __init__(self, run_dir: Path, plan: dict[int, list[tuple[str, dict]]] | None = None) -> None:
        super().__init__(daemon=True)
        self.run_dir = run_dir
        self.plan = plan or {}
        self.seq = 0
        self.done = threading.Event()

    def run(self) -> None:
        splitter, offset = LineSplitter(), 0
        path = self.run_dir / METRICS_FILE
        with Appender(self.run_dir / CONTROL_FILE) as control:
            while not self.done.is_set():
                try:
                    data = path.read_bytes()[offset:]
                except FileNotFoundError:
                    data = b""
                offset += len(data)
                for line in splitter.feed(data):
                    record = loads(line)
                    if record["type"] == "start":  # the start barrier: nothing planned, just release it
                        control.write(self._command("verdict", epoch=record["initial_epoch"] - 1))
                    if record["type"] == "epoch":
                        epoch = record["epoch"]
                        for cmd, args in self.plan.get(epoch, []):
                            control.write(self._command(cmd, **args))
                        control.write(self._command("verdict", epoch=epoch))
                time.sleep(0.002)

    def _command(self, cmd: str, **args) -> dict:
        self.seq += 1
        return make_command(self.seq, cmd, time=time.time(), **args)

    def __enter__(self) -> "MiniSupervisor":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(timeout=10)


class WeightProbe(keras.callbacks.Callback):
    """Records the single weight after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[float] = []

    def on_train_begin(self, logs=None):
        self.weights.append(float(self.model.layers[0].kernel.numpy()[0, 0]))

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(float(self.model.layers[0].kernel.numpy()[0, 0]))

    def deltas(self) -> np.ndarray:
        return -np.diff(np.array(self.weights))  # = the learning rate of each step


def records(run_dir: Path, kind: str | None = None) -> list[dict]:
    out = []
    for obj in iter_objects(run_dir / METRICS_FILE):
        parse_record(obj)
        if kind is None or obj["type"] == kind:
            out.append(obj)
    return out


@pytest.fixture(autouse=True)
def _fresh_agents():
    yield
    keras_callback._close_agents()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"agent": {"verdict_timeout": 10.0, "heartbeat_interval": 60.0}}))
    return path


def make_model(learning_rate, momentum: float = 0.0):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum), loss=lambda y, p: keras.ops.mean(p))
    return model


def fit(model, *callbacks, epochs: int, initial_epoch: int = 0):
    x = np.ones((STEPS * 8, 1), "float32")
    return model.fit(
        x,
        np.zeros_like(x),
        batch_size=8,
        epochs=epochs,
        initial_epoch=initial_epoch,
        verbose=0,
        shuffle=False,
        callbacks=list(callbacks),
    )


def test_set_lr_with_a_float_lr_takes_effect_after_the_epoch(run_dir):
    model, probe = make_model(0.1), WeightProbe()
    with MiniSupervisor(run_dir, {0: [("set_lr", {"lr": 0.01})]}):
        fit(model, probe, LrsupCallback(run_dir), epochs=2)
    np.testing.assert_allclose(probe.deltas(), [0.1] * STEPS + [0.01] * STEPS, rtol=1e-5)
    (ack,) = records(run_dir, "ack")
    assert (ack["epoch"], ack["step"], ack["late"]) == (0, STEPS, False)
    assert ack["lr"] == pytest.approx(0.01)
    start, end = records(run_dir, "start")[0], records(run_dir, "end")[0]
    assert (start["optimizer"], start["lr_schedule"], start["steps_per_epoch"]) == ("SGD", None, STEPS)
    assert start["epochs"] == 2
    assert start["lr"] == pytest.approx(0.1) and start["backend"] == "tensorflow"
    assert (end["reason"], end["epoch"], end["step"]) == ("completed", 1, 2 * STEPS)
    assert [b["step"] for b in records(run_dir, "batch")] == [10]
    assert [e["lr"] for e in records(run_dir, "epoch")] == pytest.approx([0.1, 0.01])  # written before the command


def test_set_lr_and_scale_lr_under_a_schedule_set_the_multiplier(run_dir):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=STEPS, decay_rate=0.5)
    model, probe = make_model(schedule), WeightProbe()
    plan = {0: [("set_lr", {"lr": 0.01})], 1: [("scale_lr", {"factor": 0.5})]}
    with MiniSupervisor(run_dir, plan):
        fit(model, probe, LrsupCallback(run_dir), epochs=3)
    scheduled = 0.1 * 0.5 ** (np.arange(3 * STEPS) / STEPS)  # schedule(iterations) for each step
    multiplier = np.repeat([1.0, 0.01 / 0.05, 0.01 / 0.05 * 0.5], STEPS)
    np.testing.assert_allclose(probe.deltas(), scheduled * multiplier, rtol=1e-4)
    acks = records(run_dir, "ack")
    assert [(a["cmd"], a["step"]) for a in acks] == [("set_lr", STEPS), ("scale_lr", 2 * STEPS)]
    assert acks[0]["lr"] == pytest.approx(0.01, rel=1e-5)
    assert acks[1]["lr"] == pytest.approx(0.1 * 0.25 * 0.2 * 0.5, rel=1e-5)
    assert records(run_dir, "start")[0]["lr_schedule"] == "ExponentialDecay"
    optimizer = model.optimizer
    assert isinstance(optimizer._learning_rate, ScaledSchedule)
    assert float(optimizer.learning_rate) == pytest.approx(0.1 * 0.125 * 0.1, rel=1e-5)


def test_a_schedule_is_wrapped_once_and_a_function_traced_before_is_rebuilt(run_dir, monkeypatch):
    monkeypatch.setattr(keras_callback, "_warned_standalone", True)
    monkeypatch.delenv(ENV_RUN_DIR, raising=False)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=STEPS, decay_rate=0.5)
    model, probe = make_model(schedule), WeightProbe()
    fit(model, LrsupCallback(), epochs=1)  # no run dir: traced with the bare schedule
    assert model.optimizer._learning_rate is schedule
    with MiniSupervisor(run_dir, {1: [("set_lr", {"lr": 0.01})]}):
        fit(model, probe, LrsupCallback(run_dir), epochs=3, initial_epoch=1)
        wrapper = model.optimizer._learning_rate
        fit(model, LrsupCallback(run_dir), epochs=4, initial_epoch=3)
    assert model.optimizer._learning_rate is wrapper and wrapper.inner is schedule
    scheduled = 0.1 * 0.5 ** (np.arange(STEPS, 3 * STEPS) / STEPS)
    multiplier = np.repeat([1.0, 0.01 / 0.025], STEPS)
    np.testing.assert_allclose(probe.deltas(), scheduled * multiplier, rtol=1e-4)
    assert [(s["initial_epoch"], s["step"]) for s in records(run_dir, "start")] == [(1, STEPS), (3, 3 * STEPS)]


def test_set_hparam_retraces_and_unknown_names_are_refused(run_dir):
    model, probe = make_model(0.1, momentum=0.9), WeightProbe()
    plan = {0: [("set_hparam", {"name": "bogus", "value": 1.0}), ("set_hparam", {"name": "momentum", "value": 0.0})]}
    with MiniSupervisor(run_dir, plan):
        fit(model, probe, LrsupCallback(run_dir), epochs=2)
    deltas = probe.deltas()
    assert deltas[STEPS - 1] > 0.5  # momentum 0.9 built up speed
    np.testing.assert_allclose(deltas[STEPS:], [0.1] * STEPS, rtol=1e-5)  # plain SGD afterwards
    (error,) = records(run_dir, "error")
    assert error["seq"] == 2 and "bogus" in error["message"]  # seq 1: the verdict on the start record
    assert [a["seq"] for a in records(run_dir, "ack")] == [3]
    assert model.optimizer.momentum == 0.0


def test_stop_finishes_the_epoch_and_ends_fit(run_dir):
    model, probe = make_model(0.1), WeightProbe()
    with MiniSupervisor(run_dir, {1: [("stop", {})]}):
        history = fit(model, probe, LrsupCallback(run_dir), epochs=5)
    assert len(history.epoch) == 2 and len(probe.deltas()) == 2 * STEPS
    (end,) = records(run_dir, "end")
    assert (end["reason"], end["epoch"], end["step"]) == ("stopped", 1, 2 * STEPS)


def test_handle_refuses_what_it_cannot_change():
    optimizer = keras.optimizers.SGD(0.1, momentum=0.0)
    handle = KerasOptimizerHandle(optimizer)
    for name, match in [
        ("momentum", "is 0"),
        ("nesterov", "not a number"),
        ("iterations", "cannot be set"),
        ("weight_decay", "None"),
        ("nothing", "no hyperparameter"),
    ]:
        with pytest.raises(ValueError, match=match):
            handle.set_hparam(name, 0.5)
    handle.set_lr(0.02)
    handle.scale_lr(0.5)
    assert handle.get_lr() == pytest.approx(0.01)


def test_wrapping_adds_no_optimizer_variable():
    # The multiplier stays out of optimizer.variables, so weights saved with and without
    # lrsup load into each other.
    optimizer = keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5))
    optimizer.build([keras.Variable(np.zeros(3, "float32"))])
    before = len(optimizer.variables)
    handle = KerasOptimizerHandle(optimizer)
    assert handle.wrapped and len(optimizer.variables) == before
    assert not KerasOptimizerHandle(optimizer).wrapped  # never wrapped twice


def test_json_safe_makes_optimizer_configs_serializable():
    value = {"a": np.float32(0.5), "b": (1, np.int64(2)), "c": keras.Variable(0.25), "d": object, "e": None}
    out = keras_callback.json_safe(value)
    assert out == {"a": 0.5, "b": [1, 2], "c": 0.25, "d": str(object), "e": None}
    json.dumps(out)


def test_schedule_serialization_round_trips():
    schedule = ScaledSchedule(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5), 0.25)
    config = keras.optimizers.schedules.serialize(schedule)
    again = keras.optimizers.schedules.deserialize(json.loads(json.dumps(config)))
    assert isinstance(again, ScaledSchedule)
    assert float(again(10)) == pytest.approx(0.1 * 0.5 * 0.25)


@pytest.fixture
def patched_fit():
    had_own = "fit" in keras.Model.__dict__
    before = keras.Model.fit
    launcher.patch_keras_fit(keras)
    yield
    if had_own:
        keras.Model.fit = before
    else:
        del keras.Model.fit


def test_the_launcher_patch_adds_exactly_one_agent_per_fit(run_dir, monkeypatch, patched_fit):
    (run_dir / "config.json").write_text(json.dumps({"agent": {"verdict_timeout": 0}}))
    monkeypatch.setenv(ENV_RUN_DIR, str(run_dir))
    model = make_model(0.1)
    explicit = LrsupCallback(run_dir)
    fit(model, explicit, epochs=1)  # the script's own callback: none added
    fit(model, epochs=1)  # callbacks=[]: one added
    model.fit(np.ones((8, 1)), np.zeros((8, 1)), verbose=0)  # callbacks=None
    callback_list = keras.callbacks.CallbackList([keras.callbacks.History()], model=model)
    model.fit(np.ones((8, 1)), np.zeros((8, 1)), verbose=0, callbacks=callback_list)
    assert sum(isinstance(c, LrsupCallback) for c in callback_list.callbacks) == 1
    assert [s["pid"] for s in records(run_dir, "start")] == [os.getpid()] * 4
    assert [e["reason"] for e in records(run_dir, "end")] == ["completed"] * 4


def test_a_fit_that_raises_ends_with_reason_exception(run_dir, monkeypatch, patched_fit):
    (run_dir / "config.json").write_text(json.dumps({"agent": {"verdict_timeout": 0}}))
    monkeypatch.setenv(ENV_RUN_DIR, str(run_dir))

    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fit(make_model(0.1), Boom(), epochs=3)
    (end,) = records(run_dir, "end")
    assert (end["reason"], end["epoch"], end["step"]) == ("exception", 0, STEPS)


def test_without_a_run_dir_the_callback_warns_once_and_fit_runs(monkeypatch):
    monkeypatch.delenv(ENV_RUN_DIR, raising=False)
    monkeypatch.setattr(keras_callback, "_warned_standalone", False)
    with pytest.warns(RuntimeWarning, match=ENV_RUN_DIR) as caught:
        first, second = LrsupCallback(), LrsupCallback()
        history = fit(make_model(0.1), first, second, epochs=2)
    assert len([w for w in caught if "LrsupCallback" in str(w.message)]) == 1
    assert len(history.epoch) == 2 and first.agent is None


# -- checkpoints, rollback, restore, lrsup schedules ----------------------------------------


def kernel(model) -> float:
    return float(model.layers[0].kernel.numpy()[0, 0])


def test_checkpoints_at_train_begin_and_epoch_end_hold_weights_and_optimizer_state(run_dir):
    model, probe = make_model(0.1, momentum=0.9), WeightProbe()
    with MiniSupervisor(run_dir):
        fit(model, probe, LrsupCallback(run_dir), epochs=2)
    from lrsup.supervisor.agent.checkpoints import CheckpointStore

    store = CheckpointStore(run_dir)
    assert [e.name for e in store.entries()] == ["step-0000000", "epoch-0001", "epoch-0002"]
    kinds = [r["type"] for r in records(run_dir) if r["type"] in ("checkpoint", "epoch")]
    assert kinds == ["checkpoint", "checkpoint", "epoch", "checkpoint", "epoch"]
    entry = store.verify("epoch-0001")
    assert (entry.epoch, entry.step, entry.file) == (0, STEPS, "checkpoints/epoch-0001.weights.h5")
    other = make_model(0.5, momentum=0.9)
    other.optimizer.build(other.trainable_variables)
    other.load_weights(str(store.path_of(entry)))
    assert kernel(other) == pytest.approx(probe.weights[STEPS])
    assert int(other.optimizer.iterations.numpy()) == STEPS
    assert float(other.optimizer.learning_rate) == pytest.approx(0.1)
    momentum = [v for v in other.optimizer.variables if "momentum" in v.path]
    assert momentum and float(momentum[0].numpy()[0, 0]) != 0.0  # the optimizer's slots came back


def test_rollback_restores_exact_weights_and_sets_the_lr(run_dir):
    model, probe = make_model(0.1), WeightProbe()
    plan = {1: [("rollback", {"checkpoint": "epoch-0001", "lr": 0.01, "skip_batches": 0})]}
    with MiniSupervisor(run_dir, plan):
        fit(model, probe, LrsupCallback(run_dir), epochs=3)
    w = probe.weights
    assert kernel(model) == pytest.approx(w[STEPS] - 0.01 * STEPS, abs=1e-6)  # from epoch 0's weights
    np.testing.assert_allclose(probe.deltas()[: 2 * STEPS], [0.1] * 2 * STEPS, rtol=1e-5)
    (ack,) = records(run_dir, "ack")
    assert (ack["cmd"], ack["epoch"], ack["step"]) == ("rollback", 1, STEPS) and ack["lr"] == pytest.approx(0.01)
    assert int(model.optimizer.iterations.numpy()) == 2 * STEPS  # the step went back to the checkpoint's
    assert [e["lr"] for e in records(run_dir, "epoch")] == pytest.approx([0.1, 0.1, 0.01])
    assert [e["step"] for e in records(run_dir, "epoch")] == [STEPS, 2 * STEPS, 2 * STEPS]


def test_rollback_mid_epoch_rewinds_step_and_resets_running_metrics(run_dir):
    (run_dir / "config.json").write_text(
        json.dumps(
            {"agent": {"verdict_timeout": 0, "heartbeat_interval": 60.0, "batch_every": 1, "batch_min_interval": 0}}
        )
    )

    class Sender(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2 and self.epoch == 1:  # written and rung as the supervisor does: seen at this batch end
                with ControlWriter(run_dir / CONTROL_FILE, run_dir / BELL_FILE) as control:
                    control.write(make_command(1, "rollback", time=time.time(), checkpoint="epoch-0001"))  # next seq

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    Bell(run_dir / BELL_FILE).close()  # lrsup run creates the bell before the trainer starts
    model = make_model(0.1)
    fit(model, Sender(), LrsupCallback(run_dir), epochs=2)
    batches = [(b["epoch"], b["batch"], b["step"]) for b in records(run_dir, "batch") if b["epoch"] == 1]
    assert batches == [(1, 0, 9), (1, 1, 10), (1, 2, 11), (1, 3, 9), (1, 4, 10), (1, 5, 11), (1, 6, 12), (1, 7, 13)]
    (ack,) = records(run_dir, "ack")
    assert (ack["epoch"], ack["step"]) == (1, STEPS)
    loss = [b["logs"]["loss"] for b in records(run_dir, "batch") if b["epoch"] == 1]
    # loss = w; after the reset the running mean starts again at the restored weights
    assert loss[2] == pytest.approx(-0.9, abs=1e-5)  # mean of -0.8, -0.9, -1.0
    assert loss[3] == pytest.approx(-0.8, abs=1e-5)  # the restored w alone, not a mean with the abandoned batches
    assert int(model.optimizer.iterations.numpy()) == 13


def test_set_schedule_drives_the_lr_at_every_step(run_dir):
    from lrsup.supervisor.protocol.schedules import Schedule

    spec = {"kind": "exponential_decay", "initial_learning_rate": 0.2, "decay_steps": 4, "decay_rate": 0.5}
    model, probe = make_model(0.1), WeightProbe()
    plan = {0: [("set_schedule", {"schedule": spec})], 1: [("scale_lr", {"factor": 0.5})], 2: [("clear_schedule", {})]}
    with MiniSupervisor(run_dir, plan):
        fit(model, probe, LrsupCallback(run_dir), epochs=4)
    s = Schedule(spec)
    expected = (
        [0.1] * STEPS
        + [s(k) for k in range(STEPS, 2 * STEPS)]
        + [0.5 * s(k) for k in range(2 * STEPS, 3 * STEPS)]
        + [0.5 * s(3 * STEPS - 1)] * STEPS
    )
    np.testing.assert_allclose(probe.deltas(), expected, rtol=1e-4)
    assert [a["cmd"] for a in records(run_dir, "ack")] == ["set_schedule", "scale_lr", "clear_schedule"]


def test_restore_at_start_continues_weights_step_and_epochs(run_dir, monkeypatch, patched_fit):
    monkeypatch.setenv(ENV_RUN_DIR, str(run_dir))
    (run_dir / "config.json").write_text(json.dumps({"agent": {"verdict_timeout": 0}}))
    first = make_model(0.1, momentum=0.9)
    fit(first, epochs=2)
    saved = kernel(first)
    keras_callback._close_agents()
    monkeypatch.setenv("LRSUP_RESTORE", "epoch-0002")
    monkeypatch.setattr(keras_callback, "_plan", None)
    second, probe = make_model(0.7, momentum=0.9), WeightProbe()
    history = fit(second, probe, epochs=4)
    assert history.epoch == [2, 3]
    assert kernel(second) != pytest.approx(saved)
    starts = records(run_dir, "start")
    assert (starts[-1]["initial_epoch"], starts[-1]["step"]) == (2, 2 * STEPS)
    assert starts[-1]["lr"] == pytest.approx(0.1)
    assert int(second.optimizer.iterations.numpy()) == 4 * STEPS
    # the same run continued without a restart: weights match exactly (momentum slots restored)
    third = make_model(0.1, momentum=0.9)
    monkeypatch.delenv("LRSUP_RESTORE")
    monkeypatch.setattr(keras_callback, "_plan", None)
    fit(third, epochs=4)
    assert kernel(second) == pytest.approx(kernel(third), rel=1e-5)


def test_a_restart_resumes_the_fit_its_checkpoint_belongs_to_and_skips_the_fits_before(
    run_dir, monkeypatch, patched_fit
):
    from lrsup.supervisor.agent.checkpoints import CheckpointStore

    monkeypatch.setenv(ENV_RUN_DIR, str(run_dir))
    (run_dir / "config.json").write_text(json.dumps({"agent": {"verdict_timeout": 0}}))

    def script():  # freeze-and-fine-tune's shape: fit, recompile at another LR, fit again
        model = make_model(0.1)
        head = fit(model, epochs=2)
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=lambda y, p: keras.ops.mean(p))
        tune = fit(model, epochs=3)
        return model, head, tune

    plain, head, tune = script()
    entries = CheckpointStore(run_dir).entries()
    assert {e.fit for e in entries if e.epoch is not None and e.epoch_end and e.lr == pytest.approx(0.05)} == {2}
    target = next(e for e in entries if e.fit == 2 and e.epoch == 0 and e.epoch_end)
    keras_callback._close_agents()
    monkeypatch.setenv("LRSUP_RESTORE", target.name)  # the trainer died in fit 2's second epoch
    monkeypatch.setattr(keras_callback, "_plan", None)
    again, head2, tune2 = script()
    # fit 1 completed in the first attempt: it runs no epoch, and its History is the recorded one
    assert head2.epoch == [0, 1]
    assert head2.history["loss"] == pytest.approx(head.history["loss"])
    # fit 2 restores its own checkpoint and resumes after it
    assert tune2.epoch == [1, 2]
    assert kernel(again) == pytest.approx(kernel(plain), rel=1e-5)
    first, second = records(run_dir, "start")[-2:]
    assert (first["fit"], first["initial_epoch"], second["fit"], second["initial_epoch"]) == (1, 2, 2, 1)
    assert second["step"] == STEPS and second["lr"] == pytest.approx(0.05)
    assert len([e for e in CheckpointStore(run_dir).entries() if e.fit == 1 and e.epoch is None]) <= 1  # no new start


# -- the learning rate in batch records (KerasOptimizerHandle.recent_lr) -------------------


def test_recent_lr_reuses_what_the_handle_read_or_set_until_it_is_too_old(monkeypatch):
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build([keras.Variable(0.0)])
    handle = KerasOptimizerHandle(optimizer)
    assert handle.recent_lr() == pytest.approx(0.1)  # nothing seen yet: read
    handle.set_lr(0.3)
    assert handle.recent_lr() == handle.get_lr() == float(np.float32(0.3))  # as the float32 variable holds it
    optimizer.learning_rate = 0.7  # another callback of the script sets it behind the handle's back
    assert handle.recent_lr() == float(np.float32(0.3))  # within LR_MAX_AGE: the value seen
    monkeypatch.setattr(keras_callback, "LR_MAX_AGE", 0.0)
    assert handle.recent_lr() == float(np.float32(0.7))  # too old: read again
    monkeypatch.setattr(keras_callback, "LR_MAX_AGE", 3600.0)
    handle.set_step(5)  # a rollback: read again
    optimizer.learning_rate = 0.2
    handle.set_step(5)
    assert handle.recent_lr() == float(np.float32(0.2))


def test_recent_lr_under_a_keras_schedule_reads_at_every_call():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    optimizer = keras.optimizers.SGD(schedule)
    optimizer.build([keras.Variable(0.0)])
    handle = KerasOptimizerHandle(optimizer)
    assert handle.recent_lr() == pytest.approx(0.1)
    optimizer.iterations.assign(2)
    assert handle.recent_lr() == pytest.approx(0.025)


def test_batch_records_carry_the_lr_that_lrsup_schedule_set_at_each_step(run_dir):
    from lrsup.supervisor.protocol.schedules import Schedule

    spec = {"kind": "exponential_decay", "initial_learning_rate": 0.2, "decay_steps": 4, "decay_rate": 0.5}
    (run_dir / "config.json").write_text(
        json.dumps(
            {"agent": {"verdict_timeout": 10.0, "heartbeat_interval": 60.0, "batch_every": 1, "batch_min_interval": 0}}
        )
    )
    model = make_model(0.1)
    with MiniSupervisor(run_dir, {0: [("set_schedule", {"schedule": spec})]}):
        fit(model, LrsupCallback(run_dir), epochs=2)
    s = Schedule(spec)
    second = [b for b in records(run_dir, "batch") if b["epoch"] == 1]
    assert [b["step"] for b in second] == list(range(STEPS + 1, 2 * STEPS + 1))
    # the LR of the update that ended at step k was set at its batch begin: schedule(k - 1), as float32 holds it
    assert [b["lr"] for b in second] == [float(np.float32(s(b["step"] - 1))) for b in second]


def test_batch_records_show_a_script_callback_changing_the_lr_within_lr_max_age(run_dir, monkeypatch):
    monkeypatch.setattr(keras_callback, "LR_MAX_AGE", 0.0)  # every batch record reads the variable

    class Warmup(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.model.optimizer.learning_rate = 0.01 * (batch + 1)

    (run_dir / "config.json").write_text(
        json.dumps(
            {"agent": {"verdict_timeout": 10.0, "heartbeat_interval": 60.0, "batch_every": 1, "batch_min_interval": 0}}
        )
    )
    with MiniSupervisor(run_dir):
        fit(make_model(0.1), Warmup(), LrsupCallback(run_dir), epochs=1)
    assert [b["lr"] for b in records(run_dir, "batch")] == pytest.approx([0.01 * (k + 1) for k in range(STEPS)])


def test_batch_min_interval_from_config_json_or_the_callback_thins_batch_records(tmp_path):
    for name, kwargs, expected in [
        ("config", {}, [1]),  # the fit's first block, then none within the hour
        ("argument", {"batch_min_interval": 0}, list(range(1, 2 * STEPS + 1))),
    ]:
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(
            json.dumps(
                {
                    "agent": {
                        "verdict_timeout": 0,
                        "heartbeat_interval": 60.0,
                        "batch_every": 1,
                        "batch_min_interval": 3600,
                    }
                }
            )
        )
        fit(make_model(0.1), LrsupCallback(run, **kwargs), epochs=2)
        assert [b["step"] for b in records(run, "batch")] == expected, name


def test_a_subclassed_model_built_lazily_trains_and_rolls_back_to_its_start(run_dir):
    # No build() of its own: model.build(shape) records the shape and builds no layer below the
    # model; TensorFlow would build them at the first traced step. An optimizer built before
    # then from no variables refuses them ("Unknown variable"); the start checkpoint would hold
    # no weights.
    class Lazy(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")

        def call(self, x):
            return self.dense(x)

    model = Lazy()
    with pytest.warns(UserWarning, match="does not have a `build\\(\\)` method"):
        model.build((None, 1))
    assert not model.dense.built
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5), loss=lambda y, p: keras.ops.mean(p))
    with MiniSupervisor(run_dir, {1: [("rollback", {"checkpoint": "step-0000000"})]}):
        fit(model, LrsupCallback(run_dir), epochs=3)
    assert records(run_dir, "error") == []
    w = v = 0.0
    for _ in range(STEPS):  # epoch 2 trains from the start's weights and momentum, as epoch 0 did
        v = 0.5 * v - 0.1
        w += v
    assert float(model.dense.kernel.numpy()[0, 0]) == pytest.approx(w, rel=1e-5)
    assert int(model.optimizer.iterations.numpy()) == STEPS


def test_a_subclassed_model_never_built_before_fit_trains_without_a_start_checkpoint(run_dir):
    # No shape to build its layers from: the start checkpoint is refused (an error record says
    # why) and Keras builds the optimizer at the first step, from the complete variables.
    class Lazy(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")

        def call(self, x):
            return self.dense(x)

    model = Lazy()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=lambda y, p: keras.ops.mean(p))
    with MiniSupervisor(run_dir):
        fit(model, LrsupCallback(run_dir), epochs=2)
    (error,) = records(run_dir, "error")
    assert "no checkpoint before the first step" in error["message"]
    assert int(model.optimizer.iterations.numpy()) == 2 * STEPS
    assert float(model.dense.kernel.numpy()[0, 0]) == pytest.approx(-0.1 * 2 * STEPS, rel=1e-5)
    assert [c["name"] for c in records(run_dir, "checkpoint")] == ["epoch-0001", "epoch-0002"]
