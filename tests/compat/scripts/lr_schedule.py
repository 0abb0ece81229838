"""An optimizer built on a LearningRateSchedule (CosineDecay over the whole run): the script owns its LR."""

import compat_probe
import keras

compat_probe.seed()
x_train, x_test, y_train, y_test = compat_probe.digits()
epochs, batch_size = 14, 32
steps = epochs * -(-int(len(x_train) * 0.8) // batch_size)
schedule = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=steps, alpha=0.05)
model = keras.Sequential(
    [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")]
)
model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
recorder = compat_probe.Recorder()
history = model.fit(
    x_train, y_train, validation_split=0.2, epochs=epochs, batch_size=batch_size, callbacks=[recorder], verbose=2
)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
compat_probe.report(
    recorder, [history], accuracy, "accuracy", lr_owner={"kind": "LearningRateSchedule", "schedule": "CosineDecay"}
)
