"""Sequential, no validation data at all: the script trains and evaluates once at the end."""

import compat_probe
import keras

compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()
model = keras.Sequential(
    [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")]
)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
recorder = compat_probe.Recorder()
history = model.fit(x_train, y_train, epochs=12, batch_size=32, callbacks=[recorder], verbose=2)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
compat_probe.report(recorder, [history], accuracy, "accuracy")
