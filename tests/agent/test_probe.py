"""The LR range test's probe in real Keras fits: it ramps, stops, and puts everything back exactly.

A thread plays the supervisor's lr_find: on the probe's start record a ramp and the
verdict, and once the probe has run a few steps a ``clear_schedule`` that ends it.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from lrsup.supervisor.agent import keras_callback  # noqa: E402
from lrsup.supervisor.agent.keras_callback import LrsupCallback  # noqa: E402
from lrsup.supervisor.agent.probe import NEVER, probe_arguments, run_probe  # noqa: E402
from lrsup.supervisor.protocol.jsonl import Appender, LineSplitter, iter_objects  # noqa: E402
from lrsup.supervisor.protocol.wire import CONTROL_FILE, METRICS_FILE, loads, make_command, parse_record  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.timeout(180)]

RAMP = {
    "kind": "exponential_decay",
    "initial_learning_rate": 1e-4,
    "decay_steps": 20,
    "decay_rate": 1e4,
    "start_step": 0,
    "end_step": 20,
}


class RampSupervisor(threading.Thread):
    """Answers the probe's start record with a ramp and the verdict; clears the ramp after ``stop_at`` steps."""

    def __init__(self, run_dir: Path, stop_at: int = 12) -> None:
        super().__init__(daemon=True)
        self.run_dir, self.stop_at = run_dir, stop_at
        self.seq = 0
        self.done = threading.Event()

    def run(self) -> None:
        splitter, offset, cleared = LineSplitter(), 0, False
        path = self.run_dir / METRICS_FILE
        with Appender(self.run_dir / CONTROL_FILE) as control:
            while not self.done.is_set():
                data = path.read_bytes()[offset:] if path.exists() else b""
                offset += len(data)
                for line in splitter.feed(data):
                    record = loads(line)
                    if record["type"] == "start":
                        if record.get("probe"):
                            control.write(self._command("configure", batch_every=1, batch_min_interval=0.0))
                            control.write(self._command("set_schedule", schedule=RAMP))
                        control.write(self._command("verdict", epoch=record["initial_epoch"] - 1))
                    elif record["type"] == "batch" and record["step"] >= self.stop_at and not cleared:
                        cleared = True
                        control.write(self._command("clear_schedule"))
                    elif record["type"] == "epoch":
                        control.write(self._command("verdict", epoch=record["epoch"]))
                time.sleep(0.002)

    def _command(self, cmd: str, **args) -> dict:
        self.seq += 1
        return make_command(self.seq, cmd, time=time.time(), **args)

    def __enter__(self) -> "RampSupervisor":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(timeout=10)


def records(run_dir: Path) -> list[dict]:
    out = []
    for obj in iter_objects(run_dir / METRICS_FILE):
        parse_record(obj)
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


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int32")
    return x, y


def model_with_dropout(build: bool):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(2),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if build:
        model.optimizer.build(model.trainable_variables)
    return model


def state(model):
    """Every variable of the model and its optimizer, by path, as numpy arrays."""
    out = {}
    for v in [*model.variables, *model.optimizer.variables]:
        out[v.path] = np.array(keras.ops.convert_to_numpy(v), copy=True)
    return out


def same_bits(a: dict, b: dict) -> bool:
    """The same values, to the bit, in the same order (two models differ in their paths' names)."""
    x, y = list(a.values()), list(b.values())
    return len(x) == len(y) and all(p.dtype == q.dtype and p.tobytes() == q.tobytes() for p, q in zip(x, y))


def test_a_probe_ramps_stops_and_puts_weights_slots_iterations_and_random_states_back(run_dir, monkeypatch):
    x, y = data()
    model = model_with_dropout(build=True)
    before = state(model)
    assert int(model.optimizer.iterations.numpy()) == 0
    random.seed(7)
    np.random.seed(7)
    py_before, np_before = random.getstate(), np.random.get_state()
    trained = []

    class Spy(keras.callbacks.Callback):  # only to see that the probe did train: not passed to the probe
        pass

    callback = LrsupCallback(str(run_dir))
    original = keras.Model.fit

    def fit(m, **kwargs):
        assert [type(c) for c in kwargs["callbacks"]] == [LrsupCallback] and kwargs["callbacks"][0].probe
        assert kwargs["verbose"] == 0 and "validation_data" not in kwargs
        history = original(m, **kwargs)
        trained.append((int(m.optimizer.iterations.numpy()), same_bits(state(m), before)))
        return history

    with RampSupervisor(run_dir, stop_at=12):
        assert run_probe(fit, model, {"x": x, "y": y, "batch_size": 16, "epochs": 5, "callbacks": [Spy()]}, callback)
    [(steps, unchanged)] = trained
    assert 12 <= steps < 5 * 16 and not unchanged  # the probe trained, and stopped once the ramp was cleared
    assert same_bits(state(model), before)  # weights, BN statistics, seed state, Adam slots, iterations, LR
    assert random.getstate() == py_before
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:], np_before[1:]))
    recs = records(run_dir)
    [start] = [r for r in recs if r["type"] == "start"]
    assert start["probe"] is True and start["fit"] == 1 and start["step"] == 0
    assert not [r for r in recs if r["type"] in ("epoch", "end", "checkpoint")]  # no epoch of the run's
    lrs = [r["lr"] for r in recs if r["type"] == "batch"]
    assert lrs[0] < lrs[-1] and lrs[-1] > 1e-2  # the ramp was in force
    agent = callback_agent(run_dir)
    assert agent.fits == 0 and not agent.probing and agent.lr_control.schedule is None


def callback_agent(run_dir: Path):
    return keras_callback._agents[os.path.realpath(run_dir)]


def test_an_unbuilt_optimizer_ends_as_a_fresh_one_and_the_fit_after_the_probe_is_fit_1(run_dir):
    x, y = data()
    model = model_with_dropout(build=False)
    fresh = model_with_dropout(build=True)  # the same seed: the same initial weights
    callback = LrsupCallback(str(run_dir))
    with RampSupervisor(run_dir, stop_at=8):
        run_probe(keras.Model.fit, model, {"x": x, "y": y, "batch_size": 16, "epochs": 2}, callback)
        assert same_bits(state(model), state(fresh))
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[callback])
    starts = [r for r in records(run_dir) if r["type"] == "start"]
    assert [(s["probe"], s["fit"]) for s in starts] == [(True, 1), (False, 1)]
    assert int(model.optimizer.iterations.numpy()) == 16  # the fit's own steps only


def test_one_pass_data_gets_no_probe_and_says_why(run_dir):
    def batches():
        yield from ()

    kwargs, why = probe_arguments({"x": batches(), "epochs": 3})
    assert kwargs is None and "Python generator" in why
    kwargs, _ = probe_arguments(
        {"x": 1, "y": 2, "epochs": 5, "initial_epoch": 2, "validation_split": 0.2, "verbose": 1}
    )
    assert kwargs == {
        "x": 1,
        "y": 2,
        "validation_split": 0.2,
        "validation_freq": NEVER,
        "epochs": 3,
        "verbose": 0,
        "initial_epoch": 0,
    }
    model = model_with_dropout(build=True)
    assert not run_probe(keras.Model.fit, model, {"x": batches(), "epochs": 2}, LrsupCallback(str(run_dir)))
    [error] = [r for r in records(run_dir) if r["type"] == "error"]
    assert "no probe before fit 1" in error["message"] and "generator" in error["message"]


class Shuffled(keras.utils.PyDataset):
    """Batches of (x, y) in an order it reshuffles at each epoch end, as many scripts' datasets do."""

    def __init__(self, x, y, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x, y
        self.order = np.arange(len(x))
        self.epoch_ends = 0

    def __len__(self):
        return len(self.x) // 16

    def __getitem__(self, index):
        rows = self.order[index * 16 : (index + 1) * 16]
        return self.x[rows], self.y[rows]

    def on_epoch_end(self):
        self.epoch_ends += 1
        np.random.shuffle(self.order)


def test_a_pydataset_is_served_to_the_probe_without_its_epoch_hooks(run_dir):
    x, y = data()
    dataset = Shuffled(x, y, workers=2)
    model = model_with_dropout(build=True)
    with RampSupervisor(run_dir, stop_at=40):  # past the 16 batches of an epoch
        assert run_probe(keras.Model.fit, model, {"x": dataset, "epochs": 4}, LrsupCallback(str(run_dir)))
    assert dataset.epoch_ends == 0 and np.array_equal(dataset.order, np.arange(len(x)))
    assert max(r["step"] for r in records(run_dir) if r["type"] == "batch") > 16


class LazyMLP(keras.Model):
    """A subclassed model never called before fit: on TensorFlow its weights are made at the first step."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(2)

    def call(self, inputs, training=False):
        return self.out(self.hidden(inputs))


def test_a_model_whose_weights_the_first_step_makes_gets_no_probe_and_is_left_untouched(run_dir):
    x, y = data()
    model = LazyMLP()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with RampSupervisor(run_dir):
        assert not run_probe(keras.Model.fit, model, {"x": x, "y": y, "epochs": 2}, LrsupCallback(str(run_dir)))
    assert not model.hidden.built and not model.optimizer.built  # nothing made, nothing trained
    errors = [r["message"] for r in records(run_dir) if r["type"] == "error"]
    assert len(errors) == 1 and "no probe before fit 1" in errors[0] and "first training step" in errors[0]
    assert not [r for r in records(run_dir) if r["type"] in ("start", "batch")]
