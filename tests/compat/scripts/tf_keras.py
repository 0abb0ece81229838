"""`from tensorflow import keras` and `tf.keras.*` (TensorFlow >= 2.16: Keras 3); TensorFlow backend only."""

import compat_probe
import tensorflow as tf
from tensorflow import keras

compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()
model = tf.keras.Sequential(
    [tf.keras.Input((64,)), keras.layers.Dense(64, activation="relu"), tf.keras.layers.Dense(10, activation="softmax")]
)
model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
recorder = compat_probe.Recorder()
history = model.fit(x_train, y_train, validation_split=0.2, epochs=14, batch_size=32, callbacks=[recorder], verbose=2)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
compat_probe.report(recorder, [history], accuracy, "accuracy")
