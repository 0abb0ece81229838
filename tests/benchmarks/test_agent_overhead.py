"""The overhead benchmark's own machinery: the median's confidence interval, the verdicts, and
(with Keras) the interleaved fit that alternates the arms every block of steps.

These check the measuring instrument, not any timing.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import agent_overhead as ao  # noqa: E402
from benchmarks._common import median_ci  # noqa: E402


def test_median_ci_is_the_textbook_order_statistics() -> None:
    # n = 10: [x_(2), x_(9)] covers 1 - 2 * 11 / 1024 = 97.9%; [x_(3), x_(8)] would be 89%
    assert median_ci(list(range(1, 11))) == (2, 9)
    assert median_ci(list(range(100))) == (39, 60)
    lo, hi = median_ci([float("nan")] * 0 + [1, 2, 3, 4, 5])  # n = 5 cannot reach 95%
    assert lo != lo and hi != hi


def test_median_ci_covers_the_median_about_95_percent_of_the_time() -> None:
    rng = random.Random(0)
    hits = 0
    for _ in range(1000):
        lo, hi = median_ci([rng.expovariate(1.0) for _ in range(41)])
        hits += lo <= 0.6931471805599453 <= hi  # the median of Exp(1) is ln 2
    assert 0.93 <= hits / 1000 <= 0.99


def _result(median: float, ci: tuple[float, float]) -> dict:
    stats = {"median": median, "iqr": (ci[0] - 0.01, ci[1] + 0.01), "ci": ci, "n": 100}
    return {
        "cpu": stats,
        "wall": stats,
        "rounds": 100,
        "hook_mean": 50e-6,
        "per_step": {"without": {"wall": 5e-3, "cpu": 5e-3}},
    }


@pytest.mark.parametrize(
    "ci, word",
    [
        ((0.001, 0.004), "**met**"),
        ((0.012, 0.02), "**not met**"),
        ((0.004, 0.015), "**not resolved**"),
        ((float("nan"), float("nan")), "**not resolved**"),
    ],
)
def test_verdict_follows_the_cpu_confidence_interval(ci, word) -> None:
    (line,) = ao._verdicts({"medium": _result(0.008, ci)})  # medium: target 1%
    assert word in line
    if word == "**met**":
        assert "not met" not in line


def test_each_model_runs_the_verdict_arms_and_the_small_ones_all_four() -> None:
    assert set(ao.MODEL_ARMS) == set(ao.MODELS) == set(ao.TARGETS)
    for name, arms in ao.MODEL_ARMS.items():
        assert set(ao.VERDICT_ARMS) <= set(arms) <= set(ao.ARMS) and len(set(arms)) == len(arms)
    assert ao.MODEL_ARMS["small-64"] == ao.MODEL_ARMS["small-128x64"] == ao.ARMS
    assert ao.MODEL_ARMS["medium"] == ("without", "with")


@pytest.mark.parametrize("arms", sorted(set(ao.MODEL_ARMS.values())))
def test_every_arm_opens_equally_many_epochs(arms) -> None:
    # the fit starts after one warm-up epoch of the same length: at a round's first step
    steps, orders = ao.epoch_steps(arms), ao.orders_of(arms)
    assert steps % (len(arms) * ao.BLOCK) == 0
    cycle = len(orders)  # epochs after which the opening orders repeat (5 is coprime to it)
    openers = [ao.arm_of((steps * (1 + e)) // ao.BLOCK, arms, orders) for e in range(cycle)]
    assert {arm: openers.count(arm) for arm in arms} == dict.fromkeys(arms, cycle // len(arms))
    opening_orders = {((steps * (1 + e)) // ao.BLOCK // len(arms)) % cycle for e in range(cycle)}
    assert len(opening_orders) == cycle  # every order opens one epoch per cycle


def test_data_fills_the_epoch_with_repeated_digits() -> None:
    pytest.importorskip("sklearn")
    x, y = ao._data(ao.epoch_steps(ao.ARMS))
    assert x.shape == (200 * ao.BATCH, 64) and y.shape == (200 * ao.BATCH,)
    assert (x[:1797] == x[1797 : 2 * 1797]).all() and 0 <= x.min() and x.max() <= 1
    assert ao._data(56)[0].shape == (1792, 64) and (ao._data(56)[0] == x[:1792]).all()


def test_parts_row_says_which_comparisons_a_two_arm_model_did_not_run() -> None:
    stats = {"median": 0.004, "iqr": (-0.05, 0.06), "ci": (0.001, 0.008), "n": 900}
    result = {
        **_result(0.004, (0.001, 0.008)),
        "steps": 56,
        "solo_steps_per_record": 20.0,
        "steps_per_record": 20.0,
        "noop_cpu": None,
        "beyond_cpu": None,
        "every10_cpu": None,
        "hook_median": 9e-6,
        "hook_p90": 20e-6,
        "epoch_end_wall": 0.07,
        "epoch_end_cpu": 0.06,
        "per_step": {arm: {"wall": 5e-3, "cpu": 5e-3} for arm in ("without", "with")},
    }
    (row,) = ao._parts_rows({"medium": result})
    assert row[2:5] == ["not run (two arms only)"] * 3
    (row,) = ao._parts_rows({"small-64": {**result, "noop_cpu": stats, "beyond_cpu": stats, "every10_cpu": stats}})
    assert row[2:5] == ["+0.40% (+0.10% .. +0.80%)"] * 3


def _tiny_fit_setup(tmp_path: Path):
    """Keras, the benchmark's callback classes, 10 steps an epoch of data, the two run
    directories and a tiny compiled model, for an interleaved fit."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("sklearn")
    keras = ao._setup_tf()
    x, y = ao._data(10)  # 320 samples: 10 steps an epoch
    run, dense_run = tmp_path / "run", tmp_path / "run-every10"
    run.mkdir()
    dense_run.mkdir()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    return ao._callbacks(keras), x, y, run, dense_run, model


@pytest.mark.keras
def test_interleaved_fit_gives_each_arm_its_blocks_and_the_agents_their_records(tmp_path: Path) -> None:
    (timed, noop_cls, interleaver, hook_timed), x, y, run, dense_run, model = _tiny_fit_setup(tmp_path)
    steps = len(x) // ao.BATCH
    with ao.answering(run), ao.answering(dense_run):
        model.fit(x[:64], y[:64], batch_size=ao.BATCH, epochs=1, verbose=0)  # 2 steps: blocks start mid-bucket
        agent = timed(run, verdict_timeout=10.0)
        dense = timed(dense_run, verdict_timeout=10.0, batch_min_interval=0.0)
        epochs = 9
        cbl = interleaver(
            model,
            ao.ARMS,
            {"with": agent, "every10": dense},
            noop_cls(),
            epochs=epochs,
            steps=steps,
            start_step=int(model.optimizer.iterations),
        )
        agent.clock = lambda: cbl.arm_clock("with")
        model.fit(x, y, batch_size=ao.BATCH, epochs=epochs, verbose=0, callbacks=cbl)

    blocks = cbl.blocks
    assert sum(b["steps"] for b in blocks) == epochs * steps
    # block b holds the batches ending at steps 10b .. 10b + 9 (the agent's bucket b), the arms of
    # round r in the order of the r-th of all 24 permutations
    assert len(cbl.orders) == 24 and len(set(cbl.orders)) == 24
    for b in blocks:
        r, pos = divmod(b["block"], len(ao.ARMS))
        assert b["arm"] == cbl.orders[r % len(cbl.orders)][pos] == ao.arm_of(b["block"], ao.ARMS, cbl.orders)
        assert b["cpu"] > 0 and b["wall"] > 0
    assert all(b["steps"] == ao.BLOCK for b in blocks[1:-1])
    assert not hasattr(agent, "hook")  # the interleaved fit's agent runs LrsupCallback's own batch hook
    assert len(agent.epoch_end) == len(dense.epoch_end) == epochs

    def read(path):
        return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]

    # every10: one batch record in each of its blocks, none elsewhere, at the steps the optimizer counts
    dense_steps = [rec["step"] for rec in read(dense_run) if rec.get("type") == "batch"]
    assert sorted(s // ao.BLOCK for s in dense_steps) == [b["block"] for b in blocks if b["arm"] == "every10"]
    # the default arm: records in its own blocks only, the first one always, timed by its own arm's clock
    with_blocks = [b["block"] for b in blocks if b["arm"] == "with"]
    batch_steps = [rec["step"] for rec in read(run) if rec.get("type") == "batch"]
    assert batch_steps and set(s // ao.BLOCK for s in batch_steps) <= set(with_blocks)
    assert batch_steps[0] // ao.BLOCK == with_blocks[0]
    assert agent.agent.clock() == pytest.approx(sum(b["wall"] for b in blocks if b["arm"] == "with"))
    epoch_steps = [rec["step"] for rec in read(run) if rec.get("type") == "epoch"]
    assert epoch_steps == [2 + steps * (e + 1) for e in range(epochs)]
    rounds = cbl.rounds(skip_epoch=0)
    assert rounds and all(set(r) == set(ao.ARMS) for r in rounds)
    with ao.answering(run):  # a second stand-in in the same run directory
        timing = hook_timed(run, verdict_timeout=10.0)
        t0 = time.monotonic()
        model.fit(x, y, batch_size=ao.BATCH, epochs=2, verbose=0, callbacks=[timing])
    assert len(timing.hook) == 2 * steps and all(t > 0 for t in timing.hook)
    assert time.monotonic() - t0 < 10.0  # answered: no epoch end waited out verdict_timeout
    assert timing.agent.clock is time.monotonic  # the agent alone: real time again


@pytest.mark.keras
def test_a_two_arm_fit_alternates_without_and_with_and_leaves_the_other_callbacks_out(tmp_path: Path) -> None:
    (timed, noop_cls, interleaver, _), x, y, run, dense_run, model = _tiny_fit_setup(tmp_path)
    steps = len(x) // ao.BATCH
    with ao.answering(run):
        agent = timed(run, verdict_timeout=10.0)
        dense = timed(dense_run, verdict_timeout=10.0, batch_min_interval=0.0)
        epochs = 8  # 10 steps an epoch: a block each
        cbl = interleaver(
            model,
            ao.VERDICT_ARMS,
            {"with": agent, "every10": dense},
            noop_cls(),
            epochs=epochs,
            steps=steps,
            start_step=0,
        )
        model.fit(x, y, batch_size=ao.BATCH, epochs=epochs, verbose=0, callbacks=cbl)
    assert cbl.orders == (("without", "with"), ("with", "without"))
    # from step 0 the first block holds 9 steps (the agent's bucket 0) and the last one 1
    assert [b["arm"] for b in cbl.blocks] == (["without", "with", "with", "without"] * epochs)[: epochs + 1]
    assert len(agent.epoch_end) == epochs
    assert dense.epoch_end == [] and not (dense_run / "metrics.jsonl").exists()  # not in this fit
    rounds = cbl.rounds(skip_epoch=0)
    assert len(rounds) == epochs // 2 - 1 and all(set(r) == {"without", "with"} for r in rounds)
