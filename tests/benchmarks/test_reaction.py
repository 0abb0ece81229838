"""The reaction benchmark's own machinery: the nearest-rank quantile, the follower-mode switch, and
one short supervised run per mode (every decision answered and applied, in the mode asked for).

These check the measuring instrument, not any timing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import reaction
from lrsup.supervisor.run import (
    inotify,
    runner,
)
from lrsup.supervisor.run.follower import Follower


def test_rank_quantile_is_a_value_that_occurred() -> None:
    xs = [1] * 98 + [2, 3]
    assert reaction.rank_quantile(xs, 0.5) == 1
    assert reaction.rank_quantile(xs, 0.98) == 1
    assert reaction.rank_quantile(xs, 0.99) == 2
    assert reaction.rank_quantile(xs, 1.0) == 3
    assert reaction.rank_quantile([7], 0.99) == 7
    assert reaction.rank_quantile([0, 1], 0.0) == 0


def test_follower_modes_switches_the_runner_follower_and_restores_it(tmp_path) -> None:
    with reaction.follower_modes(use_inotify=False) as modes:
        follower = runner.Follower(tmp_path / "metrics.jsonl").start()
        follower.stop()
    assert modes == ["watchdog"]
    assert runner.Follower is Follower


MODES = [
    pytest.param("inotify", marks=pytest.mark.skipif(not inotify.available(), reason="no inotify")),
    "watchdog",
    "polling",
]


@pytest.mark.parametrize("mode", MODES)
def test_one_run_answers_and_applies_every_decision(tmp_path, mode) -> None:
    r = reaction.one_run(mode, epochs=3, steps=20, step_ms=0.2, tmp=tmp_path)  # raises if the mode differs
    assert r["unapplied"] == 0 and r["late"] == 0
    assert r["epoch_decisions"] == len(r["epoch_answer"]) == len(r["epoch_s"]) == 2  # no plateau at epoch 0
    assert len(r["batch_answer"]) == len(r["batch_s"]) == len(r["batch_steps"]) == 6  # every 10th step
    assert all(answer >= 0 for answer in r["batch_answer"] + r["epoch_answer"])
    assert all(answer <= applied for answer, applied in zip(r["batch_answer"], r["batch_s"]))
