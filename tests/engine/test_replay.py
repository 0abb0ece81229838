"""replay: a recorded run through a fresh engine at the replayed stack's own LR (a what-if), and Keras agrees."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lrsup.policies.actions import Rollback, ScaleLR, SetLR, SetSchedule, Stop
from lrsup.policies.base import Policy
from lrsup.policies.monitor import to_float32
from lrsup.policies.plateau import Plateau
from lrsup.supervisor.config import ConfigError, load_config
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.engine.replay import follow, replay, run_config
from lrsup.supervisor.protocol.jsonl import ReadStats
from lrsup.supervisor.protocol.schedules import evaluate
from lrsup.supervisor.protocol.wire import (
    CONFIG_FILE,
    METRICS_FILE,
    AckRecord,
    BatchRecord,
    CheckpointRecord,
    EpochRecord,
    StartRecord,
    dumps,
)

PLATEAU = '[[policy]]\nuse = "lrsup.policies.plateau:Plateau"\nfactor = 0.5\npatience = 1\n[agent]\nbatch_every = 5\n'


def make_run(tmp_path: Path, val_losses, config_toml=PLATEAU, garbage=True) -> Path:
    (tmp_path / "lrsup.toml").write_text(config_toml)
    config = load_config(None, tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text(json.dumps(config.to_json()))
    lines = [dumps(StartRecord(time=1.0, pid=7, lr=0.1, optimizer="SGD", epochs=len(val_losses)).to_json())]
    for epoch, value in enumerate(val_losses):
        lines.append(
            dumps(
                EpochRecord(
                    time=2.0, epoch=epoch, step=10 * (epoch + 1), lr=0.1, logs={"loss": 1.0, "val_loss": value}
                ).to_json()
            )
        )
        if garbage and epoch == 1:
            lines += ["not json", '{"v": 1, "type": "teleport"}', '{"v": 2, "type": "epoch"}']
    text = "\n".join(lines) + "\n" + ('{"v": 1, "type": "epo' if garbage else "")  # a torn last line
    (run / METRICS_FILE).write_text(text)
    return run


def test_replays_with_the_runs_own_config_skipping_garbage(tmp_path):
    run = make_run(tmp_path, [1.0, 0.9, 0.95, 0.97])
    stats = ReadStats()
    decisions = list(replay(run, stats=stats))
    # a what-if: the second cut starts from the first one's LR, not from the recorded 0.1
    assert decisions == [
        {
            "epoch": 2,
            "step": 30,
            "policy": "plateau",
            "action": "scale_lr",
            "lr": pytest.approx(0.05),  # from 0.1 as a float32 variable holds it
            "reason": "val_loss 0.95 has not improved on best 0.9 (epoch 2) for 1 epoch; LR 0.1 -> 0.05",
            "suppressed": None,
        },
        {
            "epoch": 3,
            "step": 40,
            "policy": "plateau",
            "action": "scale_lr",
            "lr": pytest.approx(0.025),
            "reason": "val_loss 0.97 has not improved on best 0.9 (epoch 2) for 1 epoch; LR 0.05 -> 0.025",
            "suppressed": None,
        },
    ]
    assert stats.garbage == 3 and stats.torn_tail == 1


def test_replays_with_another_config(tmp_path):
    run = make_run(tmp_path, [1.0, 0.9, 0.95, 0.97], garbage=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "lrsup.toml").write_text('[[policy]]\nuse = "lrsup.policies.early_stop:EarlyStop"\npatience = 1\n')
    decisions = list(replay(run, load_config(None, other)))
    # the what-if ends at the stop: the recorded epoch 4 would not have happened
    assert [(d["epoch"], d["policy"], d["action"]) for d in decisions] == [
        (2, "early_stop", "stop"),
        (2, "replay", "end"),
    ]
    assert decisions[-1]["reason"].startswith("the what-if ends at this stop (early_stop): the run would have stopped")


def test_run_config_is_the_resolved_config_again(tmp_path):
    run = make_run(tmp_path, [1.0])
    config = run_config(run)
    assert config.agent.batch_every == 5 and config.source == str(run / CONFIG_FILE)
    assert [(name, settings.factor) for name, _, settings in config.policies] == [
        ("lrsup.policies.plateau:Plateau", 0.5)
    ]


def test_a_run_without_a_usable_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found: give a configuration to replay with"):
        list(replay(tmp_path))
    (tmp_path / CONFIG_FILE).write_text('{"policies": [{"use": "lrsup.policies.plateau:Plateau", "factor": 2.0}]}')
    with pytest.raises(ConfigError, match="policy\\[0\\].factor: Plateau does not support a factor >= 1.0"):
        run_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("[1, 2")
    with pytest.raises(ConfigError, match="not JSON"):
        run_config(tmp_path)


# -- the what-if LR --------------------------------------------------------------------------


class Spy(Policy):
    """Remembers the LR each epoch record carries when it reaches the policies."""

    name = "spy"

    def reset(self) -> None:
        self.seen: list[tuple[int, float | None, float | None]] = []

    def on_epoch(self, record, run):
        self.seen.append((record.epoch, record.lr, run.lr))
        return ()


class At(Policy):
    """Returns the given actions at the given epochs (and at the start, epoch None)."""

    name = "at"

    def __init__(self, plan) -> None:
        super().__init__()
        self.plan = plan

    def on_start(self, record, run):
        return self.plan.get(None, ())

    def on_epoch(self, record, run):
        return self.plan.pop(record.epoch, ())  # once: a rolled-back epoch seen again decides nothing


def epochs(n, lr=0.1, first=0, steps=10, **logs):
    return [
        EpochRecord(epoch=e, step=steps * (e + 1), lr=lr, logs={"loss": 1.0, **logs}) for e in range(first, first + n)
    ]


def test_an_lr_decision_is_carried_to_every_later_record():
    spy = Spy()
    engine = Engine([At({1: [ScaleLR(factor=0.5, reason="cut")]}), spy])
    items = list(follow(engine, [StartRecord(pid=1, lr=0.1), *epochs(4)]))
    assert [(i["epoch"], i["action"]) for i in items] == [(1, "scale_lr")]
    # epoch 1 saw the recorded 0.1 (the cut comes after it); 2 and 3 the cut LR, as float32
    assert [(e, lr) for e, lr, _ in spy.seen] == [
        (0, to_float32(0.1)),
        (1, to_float32(0.1)),
        (2, to_float32(to_float32(0.1) * 0.5)),
        (3, to_float32(to_float32(0.1) * 0.5)),
    ]
    assert all(lr == view_lr for _, lr, view_lr in spy.seen)


def test_the_recorded_runs_own_lr_changes_do_not_move_the_what_if_lr():
    spy = Spy()
    engine = Engine([At({0: [SetLR(lr=0.02, reason="set")]}), spy])
    records = [
        StartRecord(pid=1, lr=0.1),
        *epochs(1),
        AckRecord(seq=1, cmd="set_lr", epoch=0, step=10, lr=0.5),  # the recorded run's own command
        *epochs(1, first=1, lr=0.5),
    ]
    list(follow(engine, records))
    assert spy.seen[-1][1] == to_float32(0.02)


def test_a_restarted_attempt_goes_on_at_the_what_if_lr_and_a_new_fit_starts_at_its_own():
    spy = Spy()
    engine = Engine([At({0: [SetLR(lr=0.02, reason="set")]}), spy])
    records = [
        StartRecord(pid=1, lr=0.1, fit=1),
        *epochs(2),
        StartRecord(pid=2, lr=0.7, fit=1, initial_epoch=2, step=20),  # a restart: the recorded LR is another's
        *epochs(1, first=2, lr=0.7),
        StartRecord(pid=2, lr=0.3, fit=2, step=30),  # the script's second fit
        EpochRecord(epoch=0, step=40, lr=0.3, logs={"loss": 1.0}),
    ]
    list(follow(engine, records))
    assert [lr for _, lr, _ in spy.seen] == [to_float32(0.1), to_float32(0.02), to_float32(0.02), to_float32(0.3)]


def test_under_a_replayed_schedule_each_record_carries_the_schedules_lr():
    spec = {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 10}
    spy = Spy()
    engine = Engine([At({None: [SetSchedule(schedule=spec, reason="decay")]}), spy])
    items = list(follow(engine, [StartRecord(pid=1, lr=0.1), *epochs(3)]))
    assert [i["action"] for i in items] == ["set_schedule"]
    # the record after step S carries the LR of update S (set before it from step S - 1)
    assert [lr for _, lr, _ in spy.seen] == [to_float32(evaluate(spec, s - 1)) for s in (10, 20, 30)]


def test_a_cut_under_a_replayed_schedule_scales_it():
    spec = {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 10}
    spy = Spy()
    plan = {None: [SetSchedule(schedule=spec, reason="decay")], 0: [ScaleLR(factor=0.1, reason="cut")]}
    list(follow(Engine([At(plan), spy]), [StartRecord(pid=1, lr=0.1), *epochs(3)]))
    assert spy.seen[2][1] == pytest.approx(evaluate(spec, 29) * 0.1, rel=1e-6)


def test_the_what_if_ends_at_its_first_rollback():
    engine = Engine([At({2: [Rollback(checkpoint="ck", reason="back")], 3: [Stop(reason="never seen")]})])
    records = [
        StartRecord(pid=1, lr=0.1),
        *epochs(1),
        CheckpointRecord(name="ck", epoch=0, step=10, lr=0.1, file="checkpoints/ck.keras", sha256="0" * 64),
        *epochs(3, first=1),
    ]
    items = list(follow(engine, records))
    assert [(i["epoch"], i["policy"], i["action"]) for i in items] == [(2, "at", "rollback"), (2, "replay", "end")]
    assert "the what-if ends at this rollback (at): the run would have rolled back to ck" in items[-1]["reason"]


def test_the_what_if_follows_on_when_the_recorded_run_rolled_back_to_the_same_step():
    # as a replay of the run's own stack does at the end of an LR range test
    spy = Spy()
    plan = {2: [Rollback(checkpoint="ck", lr=0.01, reason="back")], 3: [ScaleLR(factor=0.5, reason="cut")]}
    ck = CheckpointRecord(name="ck", epoch=0, step=10, lr=0.1, file="checkpoints/ck.keras", sha256="0" * 64)
    records = [
        StartRecord(pid=1, lr=0.1),
        *epochs(1),
        ck,
        *epochs(2, first=1),
        BatchRecord(epoch=3, batch=0, step=31, lr=0.1, logs={"loss": 9.0}),  # before the recorded rollback
        AckRecord(seq=4, cmd="rollback", epoch=0, step=10, lr=0.003),  # the recorded run's own, to the same step
        *epochs(3, first=1, lr=0.003),
    ]
    items = list(follow(Engine([At(plan), spy]), records))
    assert [(i["epoch"], i["action"]) for i in items] == [(2, "rollback"), (3, "scale_lr")]
    assert [(e, lr) for e, lr, _ in spy.seen[3:]] == [
        (1, to_float32(0.01)),  # the rollback's LR, not the recorded 0.003
        (2, to_float32(0.01)),
        (3, to_float32(0.01)),
    ]
    # a recorded rollback elsewhere, or none before the next epoch: the what-if ends
    for other in (AckRecord(seq=4, cmd="rollback", epoch=0, step=0, lr=0.003), *epochs(1, first=3)):
        plan = {2: [Rollback(checkpoint="ck", reason="back")]}
        items = list(follow(Engine([At(plan)]), [*records[:5], other, *epochs(2, first=4)]))
        assert [i["action"] for i in items] == ["rollback", "end"]


def test_a_checkpoint_holds_the_lr_of_the_record_before_it():
    # the start checkpoint is taken before a schedule set at the start reaches the trainer (an
    # LR range test): a rollback to it goes back to the script's LR, as it did live
    spec = {"kind": "step_decay", "initial_learning_rate": 1.0, "factor": 0.5, "every_steps": 10}
    plan = {None: [SetSchedule(schedule=spec, reason="ramp")], 1: [Rollback(checkpoint="start", reason="back")]}
    start = CheckpointRecord(name="start", epoch=None, step=0, lr=0.1, file="checkpoints/s.keras", sha256="0" * 64)
    records = [StartRecord(pid=1, lr=0.1), start, *epochs(2, lr=0.7)]
    rollback = [i for i in follow(Engine([At(plan)]), records) if i["action"] == "rollback"]
    assert [i["lr"] for i in rollback] == [0.1]


def test_checkpoint_bookkeeping_is_left_out_unless_asked():
    records = [
        StartRecord(pid=1, lr=0.1),
        *epochs(1),
        CheckpointRecord(name="ck", epoch=0, step=10, lr=0.1, file="checkpoints/ck.keras", sha256="0" * 64),
        *epochs(1, first=1),
    ]
    assert list(follow(Engine([Spy()]), records)) == []
    assert [i["action"] for i in follow(Engine([Spy()]), records, housekeeping=True)] == ["retain"]


def test_a_suppressed_rollback_does_not_end_the_what_if():
    back = [Rollback(checkpoint="nowhere", reason="back")]
    engine = Engine([At({0: back, 1: back})])
    items = list(follow(engine, [StartRecord(pid=1, lr=0.1), *epochs(2)]))
    assert [i["action"] for i in items] == ["rollback", "rollback"] and all(i["suppressed"] for i in items)


# -- differential: a replayed plateau stack decides what keras.callbacks.ReduceLROnPlateau decides ----
#
# The recorded run kept its LR (an open-loop recording: nobody cut it); the replay must carry
# its own cuts forward exactly as the Keras callback does when it sets a real optimizer's LR.


def replayed_cuts(values, lr, **settings):
    """(epoch, LR after the cut as float32) for each cut the replayed plateau stack decides."""
    records = [StartRecord(pid=1, lr=lr, optimizer="SGD", epochs=len(values))]
    records += [
        EpochRecord(epoch=e, step=e + 1, lr=lr, logs={"loss": 1.0, "val_loss": v}) for e, v in enumerate(values)
    ]
    items = follow(Engine([Plateau(monitor="val_loss", **settings)]), records)
    return [(i["epoch"], to_float32(i["lr"])) for i in items if not i["suppressed"]]


def test_the_issues_example_cuts_from_its_own_last_cut():
    values = [1.0, 0.9, 0.95, 0.97, 0.99]
    assert replayed_cuts(values, 0.02, factor=0.3, patience=1) == [
        (2, to_float32(to_float32(0.02) * 0.3)),  # 0.02 -> 0.006
        (3, to_float32(to_float32(to_float32(0.02) * 0.3) * 0.3)),  # 0.006 -> 0.0018
        (4, to_float32(to_float32(to_float32(to_float32(0.02) * 0.3) * 0.3) * 0.3)),
    ]


@pytest.fixture(scope="module")
def keras_optimizer_model():
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    return model


def keras_cuts(model, values, lr, **settings):
    """(epoch, LR after the cut) for each cut Keras's ReduceLROnPlateau makes, logs fed by hand."""
    import keras

    model.optimizer.learning_rate = lr
    callback = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", **settings)
    callback.set_model(model)
    callback.on_train_begin()
    cuts = []
    for epoch, value in enumerate(values):
        before = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        callback.on_epoch_end(epoch, {"loss": 1.0, "val_loss": value})
        after = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        if after != before:
            cuts.append((epoch, after))
    return cuts


TABLE = [
    (dict(factor=0.3, patience=1), 0.02, [1.0, 0.9, 0.95, 0.97, 0.99, 0.98]),
    (dict(factor=0.5, patience=2, cooldown=2), 0.1, [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 0.5, 0.6, 0.7, 0.8]),
    (dict(factor=0.1, patience=0, min_lr=1e-4), 0.1, [1.0] * 6),
    (dict(factor=0.5, patience=1, min_delta=0.05), 0.01, [1.0, 0.97, 0.9, 0.89, 0.88, 0.7, 0.69]),
    (dict(factor=0.2, patience=1, mode="max", cooldown=1, min_lr=1e-3), 0.05, [0.1, 0.2, 0.1, 0.1, 0.1, 0.3, 0.3, 0.3]),
]


@pytest.mark.keras
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside Keras, numpy 2
@pytest.mark.parametrize("settings, lr, values", TABLE)
def test_replay_decides_what_reduce_lr_on_plateau_decides(keras_optimizer_model, settings, lr, values):
    expected = keras_cuts(keras_optimizer_model, values, lr, **settings)
    assert expected, "each row cuts at least once"
    assert replayed_cuts(values, lr, **settings) == expected


@pytest.mark.keras
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_replay_decides_what_reduce_lr_on_plateau_decides_on_any_sequence(keras_optimizer_model):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    near = st.sampled_from([1.0, 0.9, 0.95, 0.9999, 0.5, 0.49995])
    value = st.one_of(near, near, st.floats(0.0, 2.0), st.just(math.nan))

    @hypothesis.settings(max_examples=150, deadline=None)
    @hypothesis.given(
        factor=st.sampled_from([0.1, 0.3, 0.5, 0.9]),
        patience=st.integers(0, 3),
        cooldown=st.integers(0, 3),
        min_lr=st.sampled_from([0.0, 1e-4, 1e-3, 0.005]),
        min_delta=st.sampled_from([0.0, 1e-4, 0.01, 0.1]),
        mode=st.sampled_from(["auto", "min", "max"]),
        lr=st.sampled_from([0.1, 0.02, 1e-3]),
        values=st.lists(value, min_size=1, max_size=25),
    )
    def check(lr, values, **settings):
        assert replayed_cuts(values, lr, **settings) == keras_cuts(keras_optimizer_model, values, lr, **settings)

    check()


def test_replay_says_a_missing_metric_too():
    records = [StartRecord(pid=1, lr=0.1), *epochs(2)]
    (item,) = follow(Engine([Plateau(monitor="val_loss")]), records)
    assert (item["epoch"], item["policy"], item["action"], item["lr"]) == (0, "plateau", "missing_metric", None)
    assert item["reason"].startswith("plateau monitors val_loss, which is missing")


def test_a_run_replayed_with_its_own_stack_gives_back_its_journaled_decisions(tmp_path):
    from lrsup.supervisor.protocol.jsonl import iter_objects
    from tests.run.test_runner import PLATEAU, ScriptedTrainer, make_runner

    losses = [1.0, 0.9, 0.95, 0.97, 0.99, 0.8, 0.85, 0.86]
    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, losses), toml=PLATEAU)
    assert runner.run() == 0
    journaled = [
        (d["epoch"], d["policy"], d["action"], pytest.approx(d["lr"], rel=1e-6))
        for d in iter_objects(runner.paths.journal)
        if d["type"] == "decision" and d["action"] not in ("retain", "keep", "checkpoint", "configure")
    ]
    assert len(journaled) >= 3  # cut after cut: each from the last
    replayed = [(d["epoch"], d["policy"], d["action"], d["lr"]) for d in replay(runner.paths.root)]
    assert replayed == journaled
