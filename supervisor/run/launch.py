"""How a trainer attempt is launched: command line, environment, and the checkpoint it restores.

The restart contract with the agent: attempt ``n`` (1, 2, ...) gets ``LRSUP_ATTEMPT=n``;
a restarted attempt also gets ``LRSUP_RESTORE=<name>``, a checkpoint name from
``checkpoints/manifest.json``, when the engine knows a good one (else it starts from
scratch, without the variable). Both are removed from the inherited environment, so a
supervisor started from inside a trainer does not pass its own on.

Example::

    argv = trainer_argv(Path("train.py"), ["--epochs", "30"])
    env = trainer_env(run_dir)              # + LRSUP_ATTEMPT / LRSUP_RESTORE per attempt
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

from lrsup.supervisor import protocol

LAUNCHER = "lrsup.supervisor.agent.launcher"
ENV_RESTORE = protocol.ENV_RESTORE
ENV_ATTEMPT = protocol.ENV_ATTEMPT


def trainer_argv(script: Path | str, args: Sequence[str]) -> list[str]:
    """The trainer's command line: the user's script under the agent's launcher."""
    return [sys.executable, "-m", LAUNCHER, os.fspath(script), *args]


def trainer_env(run_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env[protocol.ENV_RUN_DIR] = os.path.abspath(run_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop(ENV_RESTORE, None)
    env.pop(ENV_ATTEMPT, None)
    env.pop(protocol.ENV_RETAIN, None)
    env.pop(protocol.ENV_PROBE, None)
    return env


def build_engine(config: Any) -> Any:
    """The decision engine for ``config``: its policy stack and the agent's checkpoint cadence."""
    from lrsup.supervisor.engine.core import Engine

    return Engine.from_config(config)


def engine_restore_point(engine: Any) -> str | None:
    """The engine's newest known-good checkpoint name (a name from checkpoints/manifest.json), or None.

    Uses the engine's ``known_good_checkpoint`` (method or attribute) when it has one,
    else the newest ``good`` entry of ``engine.checkpoints``; None (restart from
    scratch) for an engine that tracks no checkpoints.
    """
    found = getattr(engine, "known_good_checkpoint", None)
    if found is not None:
        found = found() if callable(found) else found
        return found if isinstance(found, str) and found else None
    good = [c for c in getattr(engine, "checkpoints", ()) or () if getattr(c, "good", False)]
    return max(good, key=lambda c: c.step).name if good else None
