"""Every reader of a run agrees on "is higher better?" (one rule: lrsup.policies.monitor.metric_direction).

The report, ``lrsup ls``/``status``, the live display and the policies once decided it four ways,
and for val_precision, val_recall, val_f1_score and val_mean_iou the report said "min".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrsup.policies.monitor import metric_direction, resolve_mode
from lrsup.supervisor.history.rows import monitor_direction
from lrsup.supervisor.history.runinfo import load_run
from lrsup.supervisor.history.runs import summarize
from lrsup.supervisor.protocol.jsonl import Appender
from lrsup.supervisor.protocol.wire import EndRecord, EpochRecord, StartRecord
from lrsup.supervisor.view.display import LiveDisplay

T0 = 1_790_000_000.0
VALUES = [0.5, 0.9, 0.2, 0.6]  # max at epoch 2, min at epoch 3 (1-based)
NAMES = {
    "val_precision": "max",
    "val_recall": "max",
    "val_f1_score": "max",
    "val_mean_iou": "max",
    "val_accuracy": "max",
    "val_auc": "max",
    "val_loss": "min",
    "val_mae": "min",
    "val_my_loss": "min",
}


def _run(root: Path, monitor: str, mode: str | None = None) -> Path:
    run = root / "run"
    run.mkdir()
    policy = {"use": "plateau", "monitor": monitor, **({"mode": mode} if mode else {})}
    (run / "config.json").write_text(json.dumps({"policies": [policy]}))
    with Appender(run / "metrics.jsonl") as m, Appender(run / "journal.jsonl") as j:
        j.write({"v": 1, "type": "event", "time": T0, "event": "spawned", "detail": ""})
        m.write(StartRecord(time=T0, pid=1, optimizer="SGD", lr=0.1, epochs=len(VALUES)).to_json())
        for e, value in enumerate(VALUES):
            m.write(EpochRecord(time=T0 + e + 1, epoch=e, step=e + 1, lr=0.1, logs={monitor: value}).to_json())
        m.write(EndRecord(time=T0 + 9, reason="completed", epoch=3, step=4).to_json())
    return run


def _display_best(monitor: str) -> int | None:
    live = LiveDisplay(start=False)
    live.on_record(StartRecord(time=T0, pid=1, optimizer="SGD", lr=0.1, epochs=len(VALUES)))
    for e, value in enumerate(VALUES):
        live.on_record(EpochRecord(time=T0 + e + 1, epoch=e, step=e + 1, lr=0.1, logs={monitor: value}))
    found = live.best.get(monitor)
    return None if found is None else found[1]


@pytest.mark.parametrize("name, direction", sorted(NAMES.items()))
def test_every_reader_agrees_on_the_direction(tmp_path, name, direction):
    best_epoch = 2 if direction == "max" else 3  # 1-based
    assert metric_direction(name) == direction
    assert resolve_mode(name, "auto") == direction  # what the policies decide with
    assert monitor_direction(name) == direction
    run = _run(tmp_path, name)
    info = load_run(run, monitor=name, pid_alive=lambda pid, start: False)
    assert info.mode == direction and info.best is not None and info.best.epoch + 1 == best_epoch  # the report
    s = summarize(run, pid_alive=lambda pid, start: False)
    assert (s.monitor, s.best_epoch) == (name, best_epoch)  # ls and status
    assert _display_best(name) == best_epoch  # the live display


def test_a_configured_mode_wins_and_an_unknown_name_has_no_best(tmp_path):
    run = _run(tmp_path, "my_score", mode="max")
    assert monitor_direction("my_score", json.loads((run / "config.json").read_text())) == "max"
    assert load_run(run, monitor="my_score").best.epoch + 1 == 2
    assert summarize(run).best_epoch == 2
    assert metric_direction("my_score") is None and _display_best("my_score") is None


def test_an_unknown_direction_picks_no_best(tmp_path):
    run = _run(tmp_path, "my_score")
    info = load_run(run, monitor="my_score")
    assert info.mode is None and info.best is None
    assert summarize(run).best is None
