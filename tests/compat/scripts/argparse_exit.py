"""argparse, a main() and `if __name__ == "__main__": sys.exit(main())`, exit status 0 on success."""

import argparse
import sys

import compat_probe
import keras


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    compat_probe.seed()
    x_train, x_test, y_train, y_test = compat_probe.digits()
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    recorder = compat_probe.Recorder()
    history = model.fit(
        x_train,
        y_train,
        validation_split=0.2,
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[recorder],
        verbose=2,
    )
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    compat_probe.report(recorder, [history], accuracy, "accuracy")
    return 0 if accuracy > 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
