"""Transfer learning with two fits: the base is frozen and a new head fit, then the base is
unfrozen, the model recompiled with a lower LR and fit again (keras.io's fine-tuning recipe)."""

import argparse

import compat_probe
import keras

parser = argparse.ArgumentParser()
parser.add_argument("--fine-tune-lr", type=float, default=1e-4, help="the second fit's LR (Adam)")
args = parser.parse_args()

compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()

# The "pretrained" base (its seeded initial weights stand in for downloaded ones).
base = keras.Sequential(
    [keras.Input((64,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(64, activation="relu")],
    name="base",
)

base.trainable = False
inputs = keras.Input((64,))
outputs = keras.layers.Dense(10, activation="softmax")(base(inputs, training=False))
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
recorder = compat_probe.Recorder()
head = model.fit(x_train, y_train, validation_split=0.2, epochs=10, batch_size=32, callbacks=[recorder], verbose=2)

base.trainable = True
model.compile(
    optimizer=keras.optimizers.Adam(args.fine_tune_lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
)
tune = model.fit(x_train, y_train, validation_split=0.2, epochs=8, batch_size=32, callbacks=[recorder], verbose=2)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
compat_probe.report(recorder, [head, tune], accuracy, "accuracy")
