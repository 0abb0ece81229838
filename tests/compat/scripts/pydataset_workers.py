"""A keras.utils.PyDataset with worker threads feeding fit, and another for validation."""

import math

import compat_probe
import keras
import numpy as np


class Batches(keras.utils.PyDataset):
    """Batches of (x, y), shuffled at each epoch end."""

    def __init__(self, x, y, batch_size, shuffle, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.order = np.arange(len(x))

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.x[rows], self.y[rows]

    def on_epoch_end(self):
        if self.shuffle:
            np.random.shuffle(self.order)


compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()
train = Batches(x_train[:1100], y_train[:1100], 32, True, workers=2, use_multiprocessing=False)
val = Batches(x_train[1100:], y_train[1100:], 64, False, workers=2)

model = keras.Sequential(
    [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")]
)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
recorder = compat_probe.Recorder()
history = model.fit(train, validation_data=val, epochs=14, callbacks=[recorder], verbose=2)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
compat_probe.report(recorder, [history], accuracy, "accuracy")
