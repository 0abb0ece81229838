"""A trainer that speaks the lrsup protocol without TensorFlow, for integration tests.

It drives ``lrsup.supervisor.agent.core.Agent`` (from ``$LRSUP_RUN_DIR``) with a fake
optimizer holding one float learning rate, so a ``set_lr`` / ``scale_lr`` applied at
an epoch end shows in the next epoch's records. The validation loss of each epoch
comes from ``--val-loss`` (the last value repeats).

Checkpoints (``--checkpoints``): the fake optimizer holds one fake weight ``w`` (each step
does ``w -= lr``; the batch and epoch logs carry it) and saves ``{weights, lr, iterations}``
as JSON through ``save_state``, so checkpoint, rollback and ``$LRSUP_RESTORE`` (restart from
a checkpoint, resuming at its epoch) work as with Keras, without TensorFlow. Without the flag
the handle has no ``save_state`` and the agent takes no checkpoints.

Example::

    lrsup run tests/fakes/fake_trainer.py -- --epochs 6 --val-loss 0.9,0.8,0.8,0.8,0.8

Options:
    --epochs N, --steps N (batches per epoch), --lr X, --val-loss "a,b,c",
    --sleep S (seconds per step), --exit-code N (exit with it after training),
    --checkpoints (checkpointable fake state), --crash-at-epoch N (raise in epoch N, 0-based;
    --crash-once-at-epoch N: in attempt 1 only), --ignore-sigint (keep training on
    Ctrl-C, to test escalation), --spawn-child (start a sleeping child in the same
    process group and print its pid, to test that no orphan survives).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from lrsup.supervisor.agent.core import ENV_RESTORE, Agent


class FakeOptimizer:
    """The OptimizerHandle of a plain float learning rate."""

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.hparams: dict[str, float] = {"momentum": 0.0}
        self.stop_requested = False
        self.weights: dict[str, float] = {"w": 0.0}
        self.iterations = 0

    def get_lr(self) -> float:
        return self.lr

    def set_lr(self, lr: float) -> None:
        self.lr = float(lr)

    def scale_lr(self, factor: float) -> None:
        self.lr *= float(factor)

    def set_hparam(self, name: str, value: float) -> None:
        if name not in self.hparams:
            raise ValueError(f"FakeOptimizer has no hyperparameter {name!r}")
        self.hparams[name] = float(value)

    def request_stop(self) -> None:
        self.stop_requested = True

    def train_step(self) -> None:
        """One fake update: ``w -= lr``, ``iterations += 1``."""
        self.weights["w"] -= self.lr
        self.iterations += 1


class CheckpointingFakeOptimizer(FakeOptimizer):
    """A FakeOptimizer whose state can be checkpointed (``--checkpoints``).

    The fake "weights" (one float moved by -lr per step), the LR, the step and the
    hyperparameters go to a small JSON file, so supervisor-side tests can save, roll back and
    restore without TensorFlow.
    """

    state_suffix = ".json"
    native_schedule = None

    def save_state(self, path: str) -> dict:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(
                {"weights": self.weights, "lr": self.lr, "iterations": self.iterations, "hparams": self.hparams}, f
            )
        return {}

    def load_state(self, path: str, meta: dict) -> None:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        self.weights = dict(state["weights"])
        self.lr = float(state["lr"])
        self.iterations = int(state["iterations"])
        self.hparams = dict(state["hparams"])

    def set_step(self, step: int) -> None:
        self.iterations = int(step)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="fake lrsup trainer")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--val-loss", default="1.0", help="comma-separated, one per epoch; the last repeats")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--exit-code", type=int, default=0)
    p.add_argument("--crash-at-epoch", type=int, default=None)
    p.add_argument("--crash-once-at-epoch", type=int, default=None, help="like --crash-at-epoch, in attempt 1 only")
    p.add_argument("--ignore-sigint", action="store_true")
    p.add_argument("--spawn-child", action="store_true")
    p.add_argument(
        "--checkpoints",
        action="store_true",
        help="let the agent checkpoint the fake state (start, epoch ends, commands; restore on restart)",
    )
    return p.parse_args(argv)


def first_attempt() -> bool:
    return os.environ.get("LRSUP_ATTEMPT", "1") == "1"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print(f"fake: child pid {child.pid}", flush=True)
    val_losses = [float(x) for x in args.val_loss.split(",")]
    opt = (CheckpointingFakeOptimizer if args.checkpoints else FakeOptimizer)(args.lr)
    agent = Agent.from_env()
    print(f"fake: pid {os.getpid()} training {args.epochs} epochs x {args.steps} steps", flush=True)
    first_epoch, restored = 0, None
    restore = os.environ.get(ENV_RESTORE)
    if agent is not None and restore:
        restored = agent.restore(opt, restore)  # None (and an error record) when unverified
        if restored is not None:
            first_epoch = restored.resume_epoch() or 0
            print(f"fake: restored {restore} at step {opt.iterations}, epoch {first_epoch}", flush=True)
    if agent is not None:
        agent.start(
            opt,
            optimizer="FakeSGD",
            optimizer_config={"learning_rate": args.lr},
            steps_per_epoch=args.steps,
            epochs=args.epochs,
            initial_epoch=first_epoch,
            step=opt.iterations,
            checkpoint=restored is None,
        )

    def weight_logs() -> dict:
        return {"w": opt.weights["w"]} if args.checkpoints else {}

    step, epoch, reason = opt.iterations, None, "completed"
    try:
        for epoch in range(first_epoch, args.epochs):
            if args.crash_at_epoch == epoch or (args.crash_once_at_epoch == epoch and first_attempt()):
                raise RuntimeError(f"fake crash at epoch {epoch}")
            val_loss = val_losses[min(epoch, len(val_losses) - 1)]
            for batch in range(args.steps):
                time.sleep(args.sleep)
                if agent is not None and agent.schedule_active:
                    agent.batch_begin(opt, step)
                opt.train_step()
                step = opt.iterations  # a rollback sets it back to the checkpoint's step
                if agent is not None:
                    agent.batch_end(
                        opt,
                        epoch=epoch,
                        batch=batch,
                        step=step,
                        logs=lambda: {"loss": val_loss + 0.1, "lr_seen": opt.lr, **weight_logs()},
                    )
            print(f"fake: epoch {epoch} val_loss={val_loss} lr={opt.lr:g}", flush=True)
            if agent is not None:
                agent.epoch_end(
                    opt, epoch=epoch, step=step, logs={"loss": val_loss + 0.1, "val_loss": val_loss, **weight_logs()}
                )
                step = opt.iterations
            if opt.stop_requested:
                reason = "stopped"
                break
    except BaseException:
        if agent is not None:
            agent.end(reason="exception", epoch=epoch, step=step)
            agent.close()
        raise
    if agent is not None:
        agent.end(reason=reason, epoch=epoch, step=step)
        agent.close()
    print(f"fake: done ({reason}) final lr={opt.lr:g}", flush=True)
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
