"""The script's own callbacks: EarlyStopping(restore_best_weights), ModelCheckpoint(save_best_only),
CSVLogger and a custom one; Sequential, validation_data as arrays."""

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
early = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=1e-3, patience=2, restore_best_weights=True)
callbacks = [
    early,
    keras.callbacks.ModelCheckpoint("best.keras", monitor="val_loss", save_best_only=True),
    keras.callbacks.CSVLogger("training.csv"),
    recorder,
]
history = model.fit(
    x_fit, y_fit, validation_data=(x_val, y_val), epochs=25, batch_size=32, callbacks=callbacks, verbose=2
)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
_, saved_accuracy = keras.models.load_model("best.keras").evaluate(x_test, y_test, verbose=0)
compat_probe.report(
    recorder,
    [history],
    accuracy,
    "accuracy",
    early_stopping={"best_epoch": int(early.best_epoch), "stopped_epoch": int(early.stopped_epoch)},
    checkpoint_accuracy=float(saved_accuracy),
    csv="training.csv",
)
