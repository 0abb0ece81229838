"""The engine's state: one dataclass, its JSON form as the engine's snapshot has always had it."""

from __future__ import annotations

import json

import pytest

from lrsup.policies.monitor import Monitor
from lrsup.supervisor.engine.checkpoint_book import CheckpointBook
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.engine.state import RUN_FIELDS, EngineState, PendingRollback
from lrsup.supervisor.protocol.wire import CheckpointRecord, EpochRecord, StartRecord

CADENCE = {"batch_every": 10, "batch_min_interval": 0.1, "checkpoint_every_epochs": 1, "checkpoint_every_steps": 0}
SHA = "0" * 64


def fresh() -> EngineState:
    return EngineState(CheckpointBook(Monitor("val_loss", "auto")), dict(CADENCE))


def test_a_fresh_state_knows_nothing_but_the_cadence() -> None:
    state = fresh()
    assert (state.lr, state.step, state.pending, state.schedule, state.exit_status) == (None, None, None, None, None)
    assert state.run == dict.fromkeys(RUN_FIELDS)
    assert state.cadence == CADENCE and state.cadence is not state.initial_cadence
    assert state.retain_set() == ()


def test_state_dict_round_trips_through_json() -> None:
    state = fresh()
    state.lr, state.step, state.start_step = 0.01, 400, 0
    state.book.add(
        CheckpointRecord(name="e1", epoch=1, step=200, file="checkpoints/e1.keras", sha256=SHA),
        lr=0.01,
        multiplier=None,
        start=False,
    )
    state.pending = PendingRollback("e1", 200, 400)
    state.schedule, state.multiplier = {"kind": "piecewise_constant"}, 0.5
    state.keeps = {"early_stop": ("e1",)}
    state.retained = ("e1",)
    state.cadence["batch_every"] = 1
    saved = json.loads(json.dumps(state.state_dict()))
    assert saved["supervision"]["pending"] == {"checkpoint": "e1", "step": 200, "decided_at": 400}
    clone = fresh()
    clone.load_state_dict(saved)
    assert clone.state_dict() == saved
    assert clone.pending == PendingRollback("e1", 200, 400) and clone.keeps == {"early_stop": ("e1",)}


def test_a_malformed_supervision_is_refused_and_forgotten() -> None:
    state = fresh()
    saved = state.state_dict()
    saved["supervision"]["pending"] = {"checkpoint": "e1"}  # no step
    with pytest.raises(ValueError, match="malformed supervision"):
        state.load_state_dict(saved)
    assert state.pending is None and state.cadence == CADENCE


def test_the_engine_snapshot_is_its_state_plus_the_policies_and_the_metric_check() -> None:
    engine = Engine([])
    engine.feed(StartRecord(pid=1, lr=0.1, optimizer="SGD", epochs=3, steps_per_epoch=10))
    engine.feed(EpochRecord(epoch=0, step=10, lr=0.1, logs={"loss": 1.0}))
    saved = engine.state_dict()
    assert list(saved) == ["lr", "run", "policies", "supervision"]
    own = json.loads(json.dumps(saved))
    assert own["supervision"].pop("metric_check") == {"fit": 1, "checked": []}  # no policy monitors a metric
    assert {k: v for k, v in own.items() if k != "policies"} == engine.state.state_dict()
    clone = Engine([])
    clone.load_state_dict(json.loads(json.dumps(saved)))
    assert clone.state_dict() == saved and clone.lr == 0.1
