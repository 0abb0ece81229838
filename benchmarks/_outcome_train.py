"""The training script of the outcomes benchmark: an ordinary Keras 3 script, no lrsup in it.

    python benchmarks/_outcome_train.py --dataset digits --optimizer sgd --lr 0.1 --arm constant --result r.json
    lrsup run benchmarks/_outcome_train.py -- --dataset digits --optimizer sgd --lr 0.1 --arm constant --result r.json

Arms inside the script: ``constant`` (no callbacks) and ``keras`` (``ReduceLROnPlateau`` with
the settings of lrsup's default plateau, plus ``TerminateOnNaN``). The third arm of the
benchmark is ``constant`` run under ``lrsup run``. ``--poison-epoch N`` sets the first layer's
kernel to NaN before epoch N's first batch (a NaN update), for the recovery comparison.
Writes a JSON summary to ``--result``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

T0 = time.time()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402


def load(name: str, seed: int):
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    data = {"digits": load_digits, "cancer": load_breast_cancer, "wine": load_wine}[name]()
    x, y = data.data.astype("float32"), data.target.astype("int32")
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    return (
        scaler.transform(x_tr).astype("float32"),
        scaler.transform(x_va).astype("float32"),
        y_tr,
        y_va,
        int(y.max()) + 1,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="digits", choices=("digits", "cancer", "wine"))
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arm", default="constant", choices=("constant", "keras"))
    p.add_argument("--poison-epoch", type=int, default=None)
    p.add_argument("--result", required=True)
    args = p.parse_args()
    keras.utils.set_random_seed(args.seed)
    x_tr, x_va, y_tr, y_va, classes = load(args.dataset, args.seed)
    model = keras.Sequential(
        [
            keras.Input((x_tr.shape[1],)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )
    opt = keras.optimizers.Adam(args.lr) if args.optimizer == "adam" else keras.optimizers.SGD(args.lr, momentum=0.9)
    model.compile(opt, "sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = []
    if args.arm == "keras":
        callbacks += [
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3, min_lr=1e-6),
            keras.callbacks.TerminateOnNaN(),
        ]
    if args.poison_epoch is not None:

        class Poison(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == args.poison_epoch:
                    kernel = self.model.layers[0].kernel
                    kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))

        callbacks.append(Poison())
    t_fit = time.time()
    hist = model.fit(
        x_tr,
        y_tr,
        validation_data=(x_va, y_va),
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=2,
        callbacks=callbacks,
    )
    fit_s = time.time() - t_fit
    _, acc = model.evaluate(x_va, y_va, verbose=0)
    val = [float(v) for v in hist.history.get("val_accuracy", [])]
    lr_now = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    out = {
        "final": float(acc) if math.isfinite(acc) else 0.0,
        "best": max(val) if val else 0.0,
        "val_accuracy": val,
        "epochs_run": len(val),
        "nan": any(not math.isfinite(v) for v in hist.history.get("loss", [])),
        "max_loss": max((float(v) for v in hist.history.get("loss", [])), default=float("nan")),
        "final_lr": lr_now,
        "fit_s": fit_s,
        "wall_s": time.time() - T0,
    }
    with open(args.result, "w") as f:
        json.dump(out, f)
    print(f"final val accuracy: {acc:.4f}")


if __name__ == "__main__":
    main()
