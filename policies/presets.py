"""Optimizer-aware defaults: how hard to cut the LR after a divergence, where to search for one.

Policies that leave such a setting unset (None) take it from the optimizer's *family*,
read from the start record's optimizer class name (``RunView.optimizer``):

============  =======================================  ========  ===============  =========
family        Keras optimizers                         cut       range test       high LR
============  =======================================  ========  ===============  =========
``sgd``       SGD (with or without momentum, Nesterov)  x0.1      1e-5 .. 10       0.1
``adaptive``  Adam, AdamW, Adamax, Nadam, RMSprop,      x0.5      1e-7 .. 1        0.01
              Adagrad, Adadelta, Adafactor, Lamb,
              Lion, Ftrl
``unknown``   anything else (a custom class, Muon)       x0.5      1e-7 .. 10       0.01
============  =======================================  ========  ===============  =========

A wrapper (``LossScaleOptimizer``, mixed precision) has its inner optimizer's family: the
start record's ``optimizer_config`` names it (``inner_optimizer.class_name``), and the LR
lrsup drives is the inner optimizer's.

- **cut**: the factor a rollback after a divergence applies to the checkpoint's LR.
  Plain SGD's step is the LR times the gradient: a run that diverged has an LR above
  the stability limit (about ``2 / sharpness``), and one decade down is the classic step
  (the /10 drops of step schedules, Goyal et al. 2017; Smith 2017 reads the usable
  range in decades). Adaptive methods normalise the step per parameter, so the LR is
  closer to a step size already and divergences come from loss spikes more than from an
  LR an order of magnitude off: large-model practice is to restart from an earlier
  checkpoint with a moderately lower LR. OPT-175B's logbook (Zhang et al. 2022) records
  many restarts from an earlier checkpoint with the LR lowered; BigScience's training
  logbooks record halving it; PaLM (Chowdhery et al. 2022, sec. 5.1) restarted about 100
  steps before each spike and skipped 200 to 500 batches, LR unchanged. A halving is
  the middle of that practice.
- **range test**: the LR range test's span (Smith 2017, "Cyclical Learning Rates"; Smith
  2018, "A disciplined approach to neural network hyper-parameters": the useful LRs of
  SGD lie between about 1e-4 and a few units, those of Adam between about 1e-6 and 1e-1;
  fastai tests 1e-7 .. 10 for every optimizer). Wilson et al. 2017 ("The Marginal Value
  of Adaptive Gradient Methods") show adaptive methods' results are sensitive to the
  LR and best well below SGD's, hence the lower upper end.
- **high LR**: about ten times the Keras default LR of the family (SGD 0.01, Adam 1e-3).
  A loss stuck at its untrained level at or above this LR is blamed on the LR (the
  divergence policy's "stuck" check); below it, the LR is not the suspect.

Example::

    preset("AdamW").cut          # 0.5
    preset("SGD").range          # (1e-05, 10.0)
    family_of(None)              # "unknown"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

Family = Literal["sgd", "adaptive", "unknown"]

# Keras 3 optimizer class names by family (lower-cased for the look-up).
_FAMILIES: dict[str, Family] = {
    "sgd": "sgd",
    **{
        name: "adaptive"
        for name in (
            "adam",
            "adamw",
            "adamax",
            "nadam",
            "rmsprop",
            "adagrad",
            "adadelta",
            "adafactor",
            "lamb",
            "lion",
            "ftrl",
        )
    },
}


@dataclass(frozen=True)
class Preset:
    """The defaults of one optimizer family.

    Args:
        family: str. ``"sgd"``, ``"adaptive"`` or ``"unknown"``.
        cut: float. Factor applied to the checkpoint's LR by a divergence rollback.
        range: (float, float). The LR range test's (min_lr, max_lr).
        high_lr: float. An LR at or above this is "high" for the stuck-loss check.
    """

    family: Family
    cut: float
    range: tuple[float, float]
    high_lr: float


PRESETS: dict[Family, Preset] = {
    "sgd": Preset("sgd", cut=0.1, range=(1e-5, 10.0), high_lr=0.1),
    "adaptive": Preset("adaptive", cut=0.5, range=(1e-7, 1.0), high_lr=0.01),
    "unknown": Preset("unknown", cut=0.5, range=(1e-7, 10.0), high_lr=0.01),
}


# Optimizers that wrap another and drive its learning rate; their config names the inner one.
_WRAPPERS = frozenset({"lossscaleoptimizer"})


def family_of(optimizer: str | None, config: Mapping[str, Any] | None = None) -> Family:
    """The family of an optimizer class name (``"SGD"``, ``"AdamW"``...); ``"unknown"`` when not known.

    A wrapper (``LossScaleOptimizer``) has the family of the inner optimizer its config names.

    Example::

        family_of("SGD")      # "sgd"
        family_of("Nadam")    # "adaptive"
        family_of("LossScaleOptimizer", {"inner_optimizer": {"class_name": "Adam"}})   # "adaptive"

    Args:
        optimizer: str or None. The start record's ``optimizer``.
        config: dict or None. The start record's ``optimizer_config``.
    """
    if not optimizer:
        return "unknown"
    name = optimizer.strip().lower()
    if name in _WRAPPERS and isinstance(config, Mapping):
        inner = config.get("inner_optimizer")
        if isinstance(inner, Mapping) and isinstance(inner.get("class_name"), str):
            return family_of(inner["class_name"], inner.get("config"))
    return _FAMILIES.get(name, "unknown")


def preset(optimizer: str | None, config: Mapping[str, Any] | None = None) -> Preset:
    """The :class:`Preset` of an optimizer class name (and config, for a wrapper's inner optimizer).

    Example::

        preset("RMSprop").range   # (1e-07, 1.0)

    Args:
        optimizer: str or None. The start record's ``optimizer``.
        config: dict or None. The start record's ``optimizer_config``.
    """
    return PRESETS[family_of(optimizer, config)]


__all__ = ["PRESETS", "Family", "Preset", "family_of", "preset"]
