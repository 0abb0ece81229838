"""Mixed precision: the mixed_float16 policy, a float32 output layer and an explicit LossScaleOptimizer."""

import compat_probe
import keras

keras.mixed_precision.set_global_policy("mixed_float16")
compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()
model = keras.Sequential(
    [
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
        keras.layers.Activation("softmax", dtype="float32"),
    ]
)
optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3))
model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
recorder = compat_probe.Recorder()
history = model.fit(x_train, y_train, validation_split=0.2, epochs=14, batch_size=32, callbacks=[recorder], verbose=2)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
compat_probe.report(recorder, [history], accuracy, "accuracy", inner_optimizer="Adam")
