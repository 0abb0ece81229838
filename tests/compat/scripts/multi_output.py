"""Two outputs with their own losses and metrics (logs: digit_accuracy, val_parity_accuracy, ...)."""

import compat_probe
import keras

compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()
inputs = keras.Input((64,), name="pixels")
features = keras.layers.Dense(64, activation="relu")(inputs)
digit = keras.layers.Dense(10, activation="softmax", name="digit")(features)
parity = keras.layers.Dense(1, activation="sigmoid", name="parity")(features)
model = keras.Model(inputs, {"digit": digit, "parity": parity})
model.compile(
    optimizer=keras.optimizers.Adam(1e-3),
    loss={"digit": "sparse_categorical_crossentropy", "parity": "binary_crossentropy"},
    loss_weights={"digit": 1.0, "parity": 0.5},
    metrics={"digit": ["accuracy"], "parity": ["accuracy"]},
)
targets = {"digit": y_train, "parity": (y_train % 2).astype("float32")}
recorder = compat_probe.Recorder()
history = model.fit(x_train, targets, validation_split=0.2, epochs=12, batch_size=32, callbacks=[recorder], verbose=2)
scores = model.evaluate(
    x_test, {"digit": y_test, "parity": (y_test % 2).astype("float32")}, verbose=0, return_dict=True
)
compat_probe.report(recorder, [history], scores["digit_accuracy"], "digit_accuracy")
