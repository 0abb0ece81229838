"""Custom train_step / test_step with tf.GradientTape and own metric trackers (keras.io's
"Customizing what happens in fit() with TensorFlow"); TensorFlow backend only."""

import compat_probe
import keras
import tensorflow as tf


class CustomModel(keras.Model):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy()
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy]

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.loss_fn(y, y_pred)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        self.accuracy.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data
        y_pred = self(x, training=False)
        self.loss_tracker.update_state(self.loss_fn(y, y_pred))
        self.accuracy.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()
inputs = keras.Input((64,))
outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Dense(64, activation="relu")(inputs))
model = CustomModel(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
recorder = compat_probe.Recorder()
history = model.fit(x_train, y_train, validation_split=0.2, epochs=14, batch_size=32, callbacks=[recorder], verbose=2)
accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
compat_probe.report(recorder, [history], accuracy, "accuracy")
