"""The script's own ReduceLROnPlateau (factor 0.2, patience 1) owns the LR; validation_data arrays."""

import compat_probe
import keras

compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()
x_fit, x_val, y_fit, y_val = x_train[:1100], x_train[1100:], y_train[:1100], y_train[1100:]
model = keras.Sequential(
    [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")]
)
model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
recorder = compat_probe.Recorder()
reduce = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=1, min_lr=1e-6)
history = model.fit(
    x_fit, y_fit, validation_data=(x_val, y_val), epochs=16, batch_size=32, callbacks=[reduce, recorder], verbose=2
)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
compat_probe.report(
    recorder, [history], accuracy, "accuracy", lr_owner={"kind": "ReduceLROnPlateau", "factor": 0.2, "min_lr": 1e-6}
)
