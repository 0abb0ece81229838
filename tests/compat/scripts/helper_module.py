"""The model and data come from a helper module beside the script (`import digits_model`)."""

import compat_probe
import digits_model

compat_probe.seed()
x_train, x_test, y_train, y_test = digits_model.load()
model = digits_model.build_model()
recorder = compat_probe.Recorder()
history = model.fit(x_train, y_train, validation_split=0.2, epochs=14, batch_size=32, callbacks=[recorder], verbose=2)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
compat_probe.report(recorder, [history], accuracy, "accuracy")
