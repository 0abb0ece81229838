"""tf.data input pipeline (shuffle, batch, prefetch) for training and validation; functional MLP."""

import compat_probe
import keras
import tensorflow as tf

compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()
x_fit, x_val, y_fit, y_val = x_train[:1100], x_train[1100:], y_train[:1100], y_train[1100:]

train_ds = tf.data.Dataset.from_tensor_slices((x_fit, y_fit)).shuffle(1100, seed=0).batch(32).prefetch(tf.data.AUTOTUNE)
val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(64).prefetch(tf.data.AUTOTUNE)

inputs = keras.Input((64,))
x = keras.layers.Dense(64, activation="relu")(inputs)
outputs = keras.layers.Dense(10, activation="softmax")(x)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

recorder = compat_probe.Recorder()
history = model.fit(train_ds, validation_data=val_ds, epochs=14, callbacks=[recorder], verbose=2)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
compat_probe.report(recorder, [history], accuracy, "accuracy")
