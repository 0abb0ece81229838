"""replay: a recorded run through a fresh engine, with the run's own config or another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrsup.supervisor.config import ConfigError, load_config
from lrsup.supervisor.engine.replay import replay, run_config
from lrsup.supervisor.protocol.jsonl import ReadStats
from lrsup.supervisor.protocol.wire import CONFIG_FILE, METRICS_FILE, EpochRecord, StartRecord, dumps

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
    # open-loop: the recorded LR stays 0.1, so each cut is computed from it again
    assert decisions == [
        {
            "epoch": 2,
            "step": 30,
            "policy": "plateau",
            "action": "scale_lr",
            "lr": 0.05,
            "reason": "val_loss 0.95 has not improved on best 0.9 (epoch 2) for 1 epoch; LR 0.1 -> 0.05",
            "suppressed": None,
        },
        {
            "epoch": 3,
            "step": 40,
            "policy": "plateau",
            "action": "scale_lr",
            "lr": 0.05,
            "reason": "val_loss 0.97 has not improved on best 0.9 (epoch 2) for 1 epoch; LR 0.1 -> 0.05",
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
    assert [(d["epoch"], d["policy"], d["action"]) for d in decisions] == [
        (2, "early_stop", "stop"),
        (3, "early_stop", "stop"),
    ]


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
