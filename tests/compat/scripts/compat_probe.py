"""What a compatibility script saw, written for tests/compat/harness.py (the scripts' shared helper).

Every script in this folder is an ordinary Keras 3 script; this module is the one thing they
share: a callback of the script's own that records what it sees (the epochs, each epoch's logs
and learning rate, the optimizer's step count), and ``report`` that writes it, with the
script's History and final metric, to ``$COMPAT_RESULT`` (nothing when unset: the scripts
run the same by hand). ``$COMPAT_SEED`` seeds the run (default 0).
"""

from __future__ import annotations

import json
import os
from typing import Any

import keras
import numpy as np


def seed() -> int:
    """Seed Python, NumPy and the backend from ``$COMPAT_SEED``; return the seed."""
    value = int(os.environ.get("COMPAT_SEED", "0"))
    keras.utils.set_random_seed(value)
    return value


def digits(test_size: float = 0.25, flat: bool = True) -> tuple[np.ndarray, ...]:
    """scikit-learn's digits in [0, 1]: x_train, x_test, y_train, y_test (stratified, seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype("float32")
    x = x.reshape(len(x), -1) if flat else x[..., None]
    return train_test_split(x, data.target.astype("int32"), test_size=test_size, random_state=0, stratify=data.target)


def _float(value: Any) -> float:
    return float(np.asarray(keras.ops.convert_to_numpy(value)))


class Recorder(keras.callbacks.Callback):
    """The script's own callback: what each fit showed it (epochs, logs, LR, optimizer steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.fits: list[dict[str, Any]] = []
        self._first_batch = False

    def _lr(self) -> float:
        return _float(self.model.optimizer.learning_rate)

    def _iterations(self) -> int:
        return int(_float(self.model.optimizer.iterations))

    def on_train_begin(self, logs=None):
        self.fits.append(
            {"epochs_begun": [], "epochs_seen": [], "lr_begin": [], "lr_end": [], "logs": [], "iterations_end": None}
        )

    def on_epoch_begin(self, epoch, logs=None):
        self.fits[-1]["epochs_begun"].append(int(epoch))
        self._first_batch = True

    def on_train_batch_begin(self, batch, logs=None):
        if self._first_batch:
            self._first_batch = False
            self.fits[-1]["lr_begin"].append(self._lr())

    def on_epoch_end(self, epoch, logs=None):
        fit = self.fits[-1]
        fit["epochs_seen"].append(int(epoch))
        fit["lr_end"].append(self._lr())
        fit["logs"].append({k: _float(v) for k, v in (logs or {}).items()})

    def on_train_end(self, logs=None):
        self.fits[-1]["iterations_end"] = self._iterations()


def report(recorder: Recorder, histories: list[Any], final: float, metric: str, **extra: Any) -> None:
    """Write what the run saw to ``$COMPAT_RESULT`` (JSON), if set; print the final metric.

    Args:
        recorder: the script's Recorder.
        histories: the History object of each fit, in order.
        final: the script's final metric on its held-out data.
        metric: its name ("accuracy", "mae", ...); ``extra``: more facts (EarlyStopping's
            best epoch, who owns the LR, ...).
    """
    print(f"final {metric}: {final:.4f}", flush=True)
    path = os.environ.get("COMPAT_RESULT")
    if not path:
        return
    out = {
        "final": float(final),
        "metric": metric,
        "backend": keras.backend.backend(),
        "history_lengths": [len(next(iter(h.history.values()), [])) for h in histories],
        "history_epochs": [list(h.epoch) for h in histories],
        "fits": recorder.fits,
        **extra,
    }
    with open(path, "w") as f:
        json.dump(out, f)
