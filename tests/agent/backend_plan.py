"""The plan of tests/agent/backend_trainer.py (run per backend) that test_backends.py replays:
which command the fake supervisor sends when. Keras-free, so the test process imports it
without importing a backend."""

STEPS = 8  # steps per epoch: 64 samples, batch size 8
MOMENTUM = 0.5
DECAY = {"kind": "exponential_decay", "initial_learning_rate": 0.2, "decay_steps": 4, "decay_rate": 0.5}
STEP_DECAY = {"kind": "step_decay", "initial_learning_rate": 0.08, "factor": 0.5, "every_steps": 8}

# (epoch, batch or None for the epoch's end) -> commands. Shared with the test, which replays them.
PLANS: dict[str, dict] = {
    # A float learning rate: every command kind, mid-epoch and at epoch ends, and a rollback
    # mid-epoch to an epoch-end checkpoint (weights, momentum, step and LR come back).
    "float": {
        "lr": 0.1,
        "epochs": 4,
        "commands": [
            (0, None, "set_lr", {"lr": 0.05}),
            (1, 2, "scale_lr", {"factor": 0.5}),
            (1, None, "set_schedule", {"schedule": DECAY}),
            (2, 4, "rollback", {"checkpoint": "epoch-0002"}),
            (2, None, "set_schedule", {"schedule": STEP_DECAY}),
            (3, 1, "checkpoint", {"name": "mid-3"}),
            (3, 3, "clear_schedule", {}),
            (3, 5, "set_hparam", {"name": "momentum", "value": 0.25}),
        ],
    },
    # The script's own LearningRateSchedule: lrsup scales it through the multiplier, drives its
    # own schedule over it and gives it back exactly when that is cleared.
    "native": {
        "lr": {"kind": "native_exponential_decay", "initial_learning_rate": 0.1, "decay_steps": 8, "decay_rate": 0.5},
        "epochs": 3,
        "commands": [
            (0, None, "scale_lr", {"factor": 0.5}),
            (1, None, "set_schedule", {"schedule": DECAY}),
            (2, 3, "clear_schedule", {}),
            (2, 5, "set_lr", {"lr": 0.01}),
        ],
    },
}
