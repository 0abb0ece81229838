"""A Keras-free trainer for the reaction benchmark: the agent core, a fake optimizer, a fixed step time.

    python -m lrsup.supervisor.agent.launcher benchmarks/_reaction_trainer.py --epochs 40 --steps 50 --step-ms 2

The step is a busy wait of ``--step-ms`` (a trainer holds its CPU while it computes); the
validation loss is constant, so a plateau policy with patience 0 cuts the LR at every epoch.
"""

from __future__ import annotations

import argparse
import sys
import time

from lrsup.supervisor.agent.core import Agent


class Opt:
    def __init__(self, lr: float) -> None:
        self.lr, self.stop_requested = lr, False

    def get_lr(self):
        return self.lr

    def set_lr(self, lr):
        self.lr = float(lr)

    def scale_lr(self, factor):
        self.lr *= factor

    def set_hparam(self, name, value):
        raise ValueError(name)

    def request_stop(self):
        self.stop_requested = True


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--step-ms", type=float, default=2.0)
    args = p.parse_args()
    agent = Agent.from_env()
    if agent is None:
        print("run me under lrsup", file=sys.stderr)
        return 2
    opt = Opt(0.1)
    agent.start(opt, optimizer="Fake", steps_per_epoch=args.steps, epochs=args.epochs)
    step = 0
    for epoch in range(args.epochs):
        for batch in range(args.steps):
            end = time.perf_counter() + args.step_ms / 1000
            while time.perf_counter() < end:
                pass
            step += 1
            agent.batch_end(opt, epoch=epoch, batch=batch, step=step, logs={"loss": 1.0})
        agent.epoch_end(opt, epoch=epoch, step=step, logs={"loss": 1.0, "val_loss": 1.0})
    agent.end(reason="completed", epoch=args.epochs - 1, step=step)
    agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
