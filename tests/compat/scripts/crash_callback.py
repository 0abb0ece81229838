"""A script whose own callback has a bug that raises at the end of epoch 4, every time."""

import compat_probe
import keras


class Buggy(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 3:
            raise RuntimeError("bug in the script's callback at epoch 4")


compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()
model = keras.Sequential(
    [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")]
)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
recorder = compat_probe.Recorder()
model.fit(x_train, y_train, validation_split=0.2, epochs=10, batch_size=32, callbacks=[recorder, Buggy()], verbose=2)
