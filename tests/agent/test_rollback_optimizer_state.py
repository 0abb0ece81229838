"""A rollback to the start checkpoint brings back the optimizer's initial state too.

Regression: the step-0 checkpoint was taken before Keras had built the optimizer's slots,
so it held no momentum; a rollback to it kept the momentum built since (after an LR range
test that ramped to LR 10, enough to wreck the restored weights).
"""

from __future__ import annotations

import pytest

from lrsup.supervisor.agent.keras_callback import LrsupCallback
from tests.agent.test_keras_callback import (  # noqa: E402  (imports keras, or skips)
    STEPS,
    MiniSupervisor,
    WeightProbe,
    fit,
    keras,
    make_model,
    run_dir,  # noqa: F401  (fixture)
)

pytestmark = [pytest.mark.keras, pytest.mark.timeout(180)]


def momentum_slots(model) -> list[float]:
    return [float(abs(v.numpy()).sum()) for v in model.optimizer.variables if "momentum" in v.path]


def test_the_start_checkpoint_holds_the_optimizer_slots_and_a_rollback_resets_them(run_dir):  # noqa: F811
    from lrsup.supervisor.agent.checkpoints import CheckpointStore

    model, probe = make_model(0.1, momentum=0.9), WeightProbe()
    plan = {1: [("rollback", {"checkpoint": "step-0000000", "lr": 0.01, "skip_batches": 0})]}
    with MiniSupervisor(run_dir, plan):
        fit(model, probe, LrsupCallback(run_dir), epochs=3)

    other = make_model(0.5, momentum=0.9)
    other.optimizer.build(other.trainable_variables)
    start = CheckpointStore(run_dir).verify("step-0000000")
    import h5py

    with h5py.File(CheckpointStore(run_dir).path_of(start)) as f:
        saved = len(f["optimizer/vars"])
    assert saved == len(other.optimizer.variables)  # iterations, learning rate and the momentum slot

    # After the rollback at the end of epoch 1 (step 2*STEPS) the momentum restarted from
    # zero: with a constant gradient of 1 and LR 0.01, epoch 2 moves w by exactly what a
    # fresh SGD(momentum=0.9) run at LR 0.01 moves it in STEPS steps.
    fresh = make_model(0.01, momentum=0.9)
    fit(fresh, epochs=1)
    assert probe.weights[-1] == pytest.approx(float(fresh.layers[0].kernel.numpy()[0, 0]), rel=1e-5)
    assert all(value > 0 for value in momentum_slots(model))
    assert keras is not None and STEPS > 0
