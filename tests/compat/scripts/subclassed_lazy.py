"""A subclassed keras.Model whose layers build on first call: no build() method, so
model.build(shape) runs call() once (keras.io's "making new layers and models via subclassing")."""

import compat_probe
import keras


class MLP(keras.Model):
    def __init__(self, hidden=64, classes=10, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(hidden, activation="relu")
        self.dropout = keras.layers.Dropout(0.1)
        self.out = keras.layers.Dense(classes, activation="softmax")

    def call(self, inputs, training=False):
        return self.out(self.dropout(self.hidden(inputs), training=training))


compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()
model = MLP()
model.build((None, 64))
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
recorder = compat_probe.Recorder()
history = model.fit(x_train, y_train, validation_split=0.2, epochs=14, batch_size=32, callbacks=[recorder], verbose=2)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
compat_probe.report(recorder, [history], accuracy, "accuracy")
