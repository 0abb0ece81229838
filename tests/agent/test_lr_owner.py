"""What else moves the LR, as the agent sees it (issue 13: one owner per learning rate).

An LR change lrsup did not command shows in the epoch record (``lr_moved_from``); the
script's LR callbacks are found by class and base-class name, without keras; with
``[run] lr_owner = "lrsup"`` the launcher leaves them out of the fit, never out of the
script's own list.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from lrsup.supervisor.agent import Agent
from lrsup.supervisor.agent.launcher import arrange_lr_callbacks
from lrsup.supervisor.agent.lr_control import is_lr_callback, leave_out_lr_callbacks, lr_callback_names
from lrsup.supervisor.agent.settings import load_lr_owner
from lrsup.supervisor.protocol.wire import CONFIG_FILE, ENV_RUN_DIR
from tests.agent.test_core import Control, FakeHandle, records

pytestmark = pytest.mark.timeout(60)


def f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


class Float32Handle(FakeHandle):
    """An LR held in a float32 variable, as Keras holds it."""

    def set_lr(self, lr: float) -> None:
        super().set_lr(f32(lr))


class ScheduleHandle(FakeHandle):
    """The optimizer's own LearningRateSchedule: the LR moves at every step by itself."""

    native_schedule = "CosineDecay"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


@pytest.fixture
def agent(run_dir: Path):
    agent = Agent(run_dir, verdict_timeout=0.0, heartbeat_interval=60.0)
    agent.poll_interval = 0.0
    yield agent
    agent.close()


def epochs(run_dir: Path) -> list[tuple[float, float | None]]:
    return [(e["lr"], e["lr_moved_from"]) for e in records(run_dir, "epoch")]


def test_an_lr_assigned_by_someone_else_shows_once_in_the_epoch_record(run_dir, agent):
    handle = FakeHandle(0.001)
    agent.start(handle)
    agent.epoch_end(handle, epoch=0, step=10, logs={"loss": 1.0})
    handle.lr = 0.0002  # the script's ReduceLROnPlateau, at the end of epoch 2
    agent.epoch_end(handle, epoch=1, step=20, logs={"loss": 1.0})
    agent.epoch_end(handle, epoch=2, step=30, logs={"loss": 1.0})
    assert epochs(run_dir) == [(0.001, None), (0.0002, 0.001), (0.0002, None)]


def test_a_commanded_lr_is_not_reported(run_dir, agent):
    handle = Float32Handle(0.001)
    agent.start(handle)
    Control(run_dir).send("set_lr", lr=0.0003, reason="plateau")
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    agent.epoch_end(handle, epoch=0, step=10, logs={"loss": 1.0})
    Control(run_dir).send("scale_lr", factor=0.1, reason="plateau")
    agent.batch_end(handle, epoch=1, batch=0, step=11)
    agent.epoch_end(handle, epoch=1, step=20, logs={"loss": 1.0})
    assert [moved for _, moved in epochs(run_dir)] == [None, None]


def test_lrsups_own_schedule_moves_the_lr_at_every_batch_without_a_report(run_dir, agent):
    handle = FakeHandle(0.1)
    agent.start(handle)
    Control(run_dir).send(
        "set_schedule",
        schedule={"kind": "exponential_decay", "initial_learning_rate": 0.1, "decay_rate": 0.5, "decay_steps": 5},
    )
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    for step in range(1, 11):
        agent.batch_begin(handle, step)
        agent.batch_end(handle, epoch=0, batch=step, step=step + 1)
    agent.epoch_end(handle, epoch=0, step=11, logs={"loss": 1.0})
    (record,) = records(run_dir, "epoch")
    assert record["lr"] < 0.05 and record["lr_moved_from"] is None


def test_under_the_optimizers_own_schedule_nothing_is_reported(run_dir, agent):
    handle = ScheduleHandle(0.1)
    agent.start(handle)
    handle.lr = 0.05  # CosineDecay moved it
    agent.epoch_end(handle, epoch=0, step=10, logs={"loss": 1.0})
    assert epochs(run_dir) == [(0.05, None)]


def test_each_fit_starts_from_its_own_lr(run_dir, agent):
    handle = FakeHandle(0.001)
    agent.start(handle, barrier=False)
    agent.end(reason="completed", epoch=0, step=10)
    handle.lr = 0.0001  # the script recompiled at a lower LR between its fits
    agent.start(handle, barrier=False, lr_callbacks=["ReduceLROnPlateau"], lr_callbacks_left_out=True)
    agent.epoch_end(handle, epoch=0, step=20, logs={"loss": 1.0})
    assert epochs(run_dir) == [(0.0001, None)]
    starts = records(run_dir, "start")
    assert [(s["lr_callbacks"], s["lr_callbacks_left_out"]) for s in starts] == [
        ([], False),
        (["ReduceLROnPlateau"], True),
    ]


# -- the script's LR callbacks, by name ---------------------------------------------


class ReduceLROnPlateau:
    pass


class LearningRateScheduler:
    pass


class MyPlateau(ReduceLROnPlateau):  # a script's subclass: known by its base's name
    pass


class EarlyStopping:
    pass


class CallbackList:
    """Keras's CallbackList: a ``callbacks`` list that fit uses as is."""

    def __init__(self, callbacks):
        self.callbacks = callbacks


def test_lr_callbacks_are_found_by_class_and_base_class_name():
    assert is_lr_callback(MyPlateau()) and is_lr_callback(LearningRateScheduler())
    assert not is_lr_callback(EarlyStopping())
    assert lr_callback_names(None) == []
    assert lr_callback_names(MyPlateau()) == ["MyPlateau"]
    nested = [EarlyStopping(), [LearningRateScheduler(), (MyPlateau(),)]]
    assert lr_callback_names(nested) == ["LearningRateScheduler", "MyPlateau"]
    assert lr_callback_names(CallbackList([ReduceLROnPlateau()])) == ["ReduceLROnPlateau"]


def test_leaving_them_out_builds_new_lists_and_never_touches_the_scripts():
    stop, plateau, scheduler = EarlyStopping(), ReduceLROnPlateau(), LearningRateScheduler()
    inner = [scheduler, stop]
    script = [plateau, inner]
    kept, dropped = leave_out_lr_callbacks(script)
    assert dropped and kept == [[stop]]
    assert script == [plateau, inner] and inner == [scheduler, stop]
    assert leave_out_lr_callbacks([stop]) == ([stop], False)
    assert leave_out_lr_callbacks(plateau) == ([], True)
    holder = CallbackList([plateau])
    assert leave_out_lr_callbacks(holder) == (holder, False)  # cannot be filtered without changing it
    assert holder.callbacks == [plateau]


def write_config(run_dir: Path, owner) -> None:
    (run_dir / CONFIG_FILE).write_text(json.dumps({"run": {"lr_owner": owner}}))


def test_lr_owner_comes_from_config_json_and_defaults_to_the_script(run_dir):
    assert load_lr_owner(run_dir) == "script"  # no config.json
    write_config(run_dir, "lrsup")
    assert load_lr_owner(run_dir) == "lrsup"
    write_config(run_dir, "someone")
    assert load_lr_owner(run_dir) == "script"
    (run_dir / CONFIG_FILE).write_text("{not json")
    assert load_lr_owner(run_dir) == "script"
    assert load_lr_owner(None) == "script"


class FakeLrsupCallback:
    def __init__(self, run_dir) -> None:
        self.run_dir = str(run_dir)
        self.lr_callbacks = ([], False)


@pytest.mark.parametrize("owner, left_out", [("script", False), ("lrsup", True)])
def test_the_launcher_leaves_them_out_only_when_lrsup_owns_the_lr(run_dir, owner, left_out):
    write_config(run_dir, owner)
    stop, plateau = EarlyStopping(), ReduceLROnPlateau()
    callback = FakeLrsupCallback(run_dir)
    script = [plateau, stop]
    given = [*script, callback]  # what with_lrsup_callback hands on
    arranged = arrange_lr_callbacks(given, callback)
    assert callback.lr_callbacks == (["ReduceLROnPlateau"], left_out)
    assert arranged == ([stop, callback] if left_out else given)
    assert script == [plateau, stop]


@pytest.mark.keras
@pytest.mark.timeout(240)
def test_real_keras_take_over_leaves_reduce_lr_on_plateau_out_of_the_fit_not_out_of_the_scripts_list(tmp_path):
    from tests.agent.test_launcher import launch, write

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = run_dir / CONFIG_FILE
    config.write_text(json.dumps({"agent": {"verdict_timeout": 0}, "run": {"lr_owner": "lrsup"}}))
    write(
        tmp_path / "train.py",
        f"""
        import json, os
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import numpy as np
        import keras

        class Spy(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.lrs = []
            def on_epoch_end(self, epoch, logs=None):
                self.lrs.append(float(self.model.optimizer.learning_rate))

        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        x, y = np.ones((16, 2), "float32"), np.zeros((16, 1), "float32")
        # Cuts x0.5 at the end of epochs 2 and 3 (min_delta: no epoch after the first improves).
        reduce = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e9)
        spy = Spy()
        callbacks = [reduce, spy]
        model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=callbacks)
        took_over = spy.lrs
        intact = len(callbacks) == 2 and callbacks[0] is reduce and callbacks[1] is spy
        # The same script under the default: the script's callback keeps its LR (lrsup's config, rewritten).
        with open({str(config)!r}, "w") as f:
            json.dump({{"agent": {{"verdict_timeout": 0}}, "run": {{"lr_owner": "script"}}}}, f)
        model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=callbacks)
        print(json.dumps({{"took_over": took_over, "intact": intact, "script": spy.lrs}}))
        """,
    )
    result = launch(tmp_path, "train.py", env={ENV_RUN_DIR: str(run_dir)}, timeout=200)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["intact"] is True
    assert out["took_over"] == pytest.approx([0.01, 0.01, 0.01])  # ReduceLROnPlateau was not in the fit
    assert out["script"] == pytest.approx([0.01, 0.005, 0.0025])  # it was in the second one
    starts = records(run_dir, "start")
    assert [(s["fit"], s["lr_callbacks"], s["lr_callbacks_left_out"]) for s in starts] == [
        (1, ["ReduceLROnPlateau"], True),
        (2, ["ReduceLROnPlateau"], False),
    ]
    moved = [(e["lr"], e["lr_moved_from"]) for e in records(run_dir, "epoch")][3:]
    assert moved == [
        (pytest.approx(0.01), None),
        (pytest.approx(0.005), pytest.approx(0.01)),
        (pytest.approx(0.0025), pytest.approx(0.005)),
    ]
