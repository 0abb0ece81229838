"""Replay a recorded run through a policy stack: what would these policies have decided?

``lrsup replay RUN_DIR [--config FILE]`` feeds the run's metrics.jsonl, record by
record, to a fresh :class:`~lrsup.supervisor.engine.core.Engine` built from a configuration
(by default the run's own config.json), and lists the decisions. Lines that are not
valid records (garbage, a torn last line, another protocol version) are skipped, as
the live supervisor skips them.

Replay is **open-loop**: the recorded run never received these decisions. Until the
first decision that changes the run (an LR change, a schedule, a rollback, a stop) the
replay says exactly what the stack would have decided live; after it, the records
still show the run as it went without that decision, so later decisions answer a run
that would not have happened (a stop is followed by more epochs, a cut LR by records
at the old LR, which the engine takes as the LR again). Use it to compare stacks on a
run's opening, or to see when a policy would first have acted.

Example::

    for decision in replay(Path("runs/2025-01-01T00-00-00-train")):
        print(decision["epoch"], decision["policy"], decision["action"], decision["reason"])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from lrsup.supervisor.config import ResolvedConfig, run_config
from lrsup.supervisor.engine.core import Decision, Engine
from lrsup.supervisor.protocol.jsonl import ReadStats, iter_objects
from lrsup.supervisor.protocol.wire import METRICS_FILE, ProtocolError, parse_record


def decision_dict(decision: Decision) -> dict[str, Any]:
    """One decision as replay yields it: ``{epoch, step, policy, action, lr, reason, suppressed}``."""
    return {
        "epoch": decision.epoch,
        "step": decision.step,
        "policy": decision.action.policy,
        "action": decision.action.kind,
        "lr": decision.lr,
        "reason": decision.action.reason,
        "suppressed": decision.suppressed,
    }


def replay(
    run_dir: str | os.PathLike[str], config: ResolvedConfig | None = None, stats: ReadStats | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the decisions a fresh engine makes on a recorded run's records (open-loop: see the module).

    Example::

        decisions = list(replay(run_dir, load_config(Path("night.toml"), cwd=Path.cwd())))

    Args:
        run_dir: str or PathLike. The run directory (its metrics.jsonl is read).
        config: ResolvedConfig or None. The stack and agent settings to replay with;
            None: the run's own config.json.
        stats: ReadStats or None. Filled with the lines read and skipped.

    Raises:
        ConfigError: ``config`` is None and the run's config.json cannot be used.
    """
    if config is None:
        config = run_config(run_dir)
    stats = stats if stats is not None else ReadStats()
    engine = Engine.from_config(config)
    for obj in iter_objects(Path(run_dir, METRICS_FILE), stats):
        try:
            record = parse_record(obj)
        except ProtocolError as exc:
            stats.bad(str(exc))
            continue
        for decision in engine.feed(record):
            yield decision_dict(decision)


__all__ = ["decision_dict", "replay", "run_config"]
