"""The script saves its model at the end (model.keras) and checks that it loads and scores the same."""

import compat_probe
import keras

compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()
model = keras.Sequential(
    [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")]
)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
recorder = compat_probe.Recorder()
history = model.fit(x_train, y_train, validation_split=0.2, epochs=14, batch_size=32, callbacks=[recorder], verbose=2)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
model.save("model.keras")
reloaded = keras.models.load_model("model.keras")
_, reloaded_accuracy = reloaded.evaluate(x_test, y_test, verbose=0)
compat_probe.report(
    recorder,
    [history],
    accuracy,
    "accuracy",
    reloaded_accuracy=float(reloaded_accuracy),
    reloaded_optimizer=type(reloaded.optimizer).__name__,
)
