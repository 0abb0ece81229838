"""A regression: scikit-learn's diabetes data, standardized, an MLP with MSE loss and MAE metric."""

import compat_probe
import keras
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

compat_probe.seed()
x, y = load_diabetes(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype("float32")
y = ((y - y.mean()) / y.std()).astype("float32")
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
model = keras.Sequential(
    [
        keras.Input((10,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1),
    ]
)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
recorder = compat_probe.Recorder()
history = model.fit(x_train, y_train, validation_split=0.2, epochs=40, batch_size=16, callbacks=[recorder], verbose=2)
_, mae = model.evaluate(x_test, y_test, verbose=0)
compat_probe.report(recorder, [history], mae, "mae", lower_is_better=True, target_std=float(np.std(y_test)))
