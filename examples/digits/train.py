"""Train a small CNN on scikit-learn's 8x8 digits: an ordinary Keras 3 script, no lrsup in it.

Run it alone, or supervised::

    python examples/digits/train.py --epochs 15
    lrsup run examples/digits/train.py -- --epochs 15 --optimizer adam --schedule

The digits ship with scikit-learn (no download). About 20-40 s for 15 epochs on a laptop CPU.
"""

from __future__ import annotations

import os

# 3, not 2: also hides "failed call to cuInit" on a machine without a GPU. TensorFlow 2.21 still
# prints a few INFO lines (oneDNN, cudart) from C++ before its logging is set up; no setting
# silences those short of turning oneDNN off (TF_ENABLE_ONEDNN_OPTS=0), which changes the numbers.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import argparse  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.01, help="initial learning rate")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="sgd uses momentum 0.9")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--poison-epoch",
        type=int,
        default=None,
        help="fault injection: after batch 3 of this epoch (0-based), set the first layer's kernel to NaN "
        "once, as one poisoned batch would",
    )
    parser.add_argument(
        "--schedule", action="store_true", help="decay the LR with ExponentialDecay (0.9 per epoch) instead of a float"
    )
    return parser.parse_args(argv)


def load_data(seed: int) -> tuple[np.ndarray, ...]:
    """The 1797 digits as 8x8x1 images in [0, 1], split 80/20 (stratified, seeded)."""
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def build_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def build_optimizer(args: argparse.Namespace, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    learning_rate = args.lr
    if args.schedule:
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            args.lr, decay_steps=steps_per_epoch, decay_rate=0.9
        )
    if args.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    return keras.optimizers.SGD(learning_rate, momentum=0.9)


class PoisonOnce(keras.callbacks.Callback):
    """Fault injection for tests of lrsup's rollback: NaN weights after batch 3 of one epoch, once."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.target, self.epoch, self.done = epoch, -1, False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not self.done and self.epoch == self.target and batch == 3:
            self.done = True
            kernel = self.model.layers[0].kernel
            kernel.assign(keras.ops.full(kernel.shape, float("nan")))
            print(f"poisoned the weights at epoch {self.epoch} batch {batch}", flush=True)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    x_train, x_val, y_train, y_val = load_data(args.seed)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    model = build_model()
    model.compile(
        optimizer=build_optimizer(args, steps_per_epoch),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=2,
        callbacks=[PoisonOnce(args.poison_epoch)] if args.poison_epoch is not None else [],
    )
    _, accuracy = model.evaluate(x_val, y_val, verbose=0)
    print(f"final val accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
