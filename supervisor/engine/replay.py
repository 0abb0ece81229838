"""Replay a recorded run through a policy stack: what would these policies have decided?

``lrsup replay RUN_DIR [--config FILE] [--all]`` feeds the run's metrics.jsonl, record by
record, to a fresh :class:`~lrsup.supervisor.engine.core.Engine` built from a configuration
(by default the run's own config.json), and lists the decisions. Lines that are not
valid records (garbage, a torn last line, another protocol version) are skipped, as
the live supervisor skips them.

Replay is a **what-if**: the recorded metrics are taken as they are, but the learning rate
is the replayed stack's own. The LR a record carries when it reaches the policies is the LR
the run would have had under the replayed stack (:class:`WhatIfLR`):

- each fit starts at its start record's LR (the script's); a restarted attempt of the same
  fit (a start record with the same ``fit``) goes on at the what-if LR, as a restarted
  trainer resumes at the LR lrsup last decided;
- every later record (batch, epoch, ack) carries the LR of the replayed stack's
  last LR decision (``set_lr``, ``scale_lr``), as the trainer's float32 learning-rate
  variable would hold it; so a plateau stack that cuts 0.02 -> 0.006 cuts 0.006 -> 0.0018
  next, as Keras's ReduceLROnPlateau does on the same sequence;
- under a schedule the replayed stack set, a record at step ``S`` carries
  ``evaluate(schedule, S - 1) * multiplier`` (the LR of the update that led to it, as the
  agent sets it before each batch; never a step before the schedule was set);
- a checkpoint record carries the LR (and multiplier) of the record before it: it was taken
  before the decisions on that record reached the trainer (so a start checkpoint holds the
  script's LR even when the stack sets a schedule at the start, as an LR range test does);
- the recorded run's own LR changes are not carried over: its commands (their acks) and
  the script's own LR logic (a callback, a ``LearningRateSchedule``) do not move the what-if
  LR. A recorded rollback still takes the records back to its step, as it took the run.

Where the what-if ends: the records after a replayed **rollback** or **stop** describe a
run that would not have happened (the recorded run did not go back, or went on training),
so the replay follows the stack up to and including the first rollback or stop it sends,
then ends with one more item, ``{"policy": "replay", "action": "end", ...}``, whose reason
says why. One exception: when the recorded run itself rolled back to the same step right
after (its rollback ack comes before its next epoch, start or end record), as a replay of
the run's own stack does at the end of an LR range test, the records after that ack are
the restored run's, and the what-if follows on from them. Decisions on checkpoint bookkeeping (``retain``, ``keep``, ``checkpoint``,
``configure``: ``protocol.HOUSEKEEPING_ACTIONS``) are left out unless ``housekeeping=True``
(``lrsup replay --all``).

Example::

    for decision in replay(Path("runs/2025-01-01T00-00-00-train")):
        print(decision["epoch"], decision["policy"], decision["action"], decision["lr"], decision["reason"])
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from lrsup.policies.monitor import to_float32
from lrsup.supervisor.config import ResolvedConfig, run_config
from lrsup.supervisor.engine.core import Decision, Engine
from lrsup.supervisor.protocol.jsonl import ReadStats, iter_objects
from lrsup.supervisor.protocol.schedules import evaluate
from lrsup.supervisor.protocol.wire import (
    HOUSEKEEPING_ACTIONS,
    METRICS_FILE,
    AckRecord,
    BatchRecord,
    CheckpointRecord,
    EndRecord,
    EpochRecord,
    ProtocolError,
    Record,
    StartRecord,
    parse_record,
)

# The ``policy`` and ``action`` of the item that ends a what-if.
REPLAY = "replay"
END = "end"

# Decisions after which the recorded metrics no longer describe the what-if run.
_ENDS_WHAT_IF = ("rollback", "stop")

# Records whose ``lr`` the what-if replaces with its own (checkpoint records: the LR they were taken at).
_CARRIES_LR = (BatchRecord, EpochRecord, AckRecord)


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


class WhatIfLR:
    """The LR each recorded record would have carried under the replayed stack (see the module).

    Example::

        what_if = WhatIfLR(engine)
        for record in records:
            decisions = engine.feed(what_if.rewrite(record))
            what_if.after(decisions)

    Args:
        engine: Engine. The replaying engine: its LR, schedule and multiplier are the what-if's.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.fit: int | None = None  # the fit of the latest start record
        self.schedule_since: int = 0  # the step the schedule in force was set at
        self.held: tuple[float | None, float | None] = (None, None)  # LR, multiplier of the last record fed

    def rewrite(self, record: Record) -> Record:
        """``record`` with the what-if LR in place of the recorded one (unchanged when it is unknown)."""
        if isinstance(record, StartRecord):
            same_fit, self.fit = record.fit == self.fit, record.fit
            lr = self.engine.lr
            if same_fit and lr is not None:
                record = dataclasses.replace(record, lr=to_float32(lr))
            self.held = (record.lr, None)  # a new fit starts at the script's LR
            return record
        if isinstance(record, CheckpointRecord):
            # Taken before the decisions on the records around it reach the trainer: at the
            # LR the last record carried (a start checkpoint: before a schedule set at the start).
            lr, multiplier = self.held
            return record if lr is None else dataclasses.replace(record, lr=lr, multiplier=multiplier)
        if not isinstance(record, _CARRIES_LR):
            return record
        lr = self.lr_at(record.step)
        if lr is None:
            return record
        self.held = (lr, self.engine.state.multiplier)
        return dataclasses.replace(record, lr=lr)

    def lr_at(self, step: int) -> float | None:
        """The what-if LR the optimizer holds after update ``step`` (float32, as Keras's variable)."""
        engine = self.engine
        schedule, multiplier = engine.schedule, engine.state.multiplier
        if schedule is not None and multiplier is not None:
            return to_float32(evaluate(schedule, max(step - 1, self.schedule_since)) * multiplier)
        return None if engine.lr is None else to_float32(engine.lr)

    def after(self, decisions: list[Decision]) -> None:
        """Note where a schedule the replayed stack set takes effect."""
        for decision in decisions:
            if decision.command is not None and decision.action.kind == "set_schedule":
                self.schedule_since = decision.step


def end_item(decision: Decision) -> dict[str, Any] | None:
    """The item that ends the what-if after ``decision`` (a sent rollback or stop), else None."""
    kind = decision.action.kind
    if decision.command is None or kind not in _ENDS_WHAT_IF:
        return None
    if kind == "rollback":
        target = getattr(decision.command, "checkpoint", None)
        why = (
            f"the run would have rolled back to {target}" if target else "the run would have rolled back"
        ) + ", and the recorded metrics after this point are of a run that did not"
    else:
        why = "the run would have stopped here, and the recorded metrics after this point are of a run that went on"
    return {
        "epoch": decision.epoch,
        "step": decision.step,
        "policy": REPLAY,
        "action": END,
        "lr": decision.lr,
        "reason": f"the what-if ends at this {kind} ({decision.action.policy}): {why}",
        "suppressed": None,
    }


def replay(
    run_dir: str | os.PathLike[str],
    config: ResolvedConfig | None = None,
    stats: ReadStats | None = None,
    *,
    housekeeping: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield the decisions the stack makes on a recorded run's metrics, at its own LR (a what-if: see the module).

    Example::

        decisions = list(replay(run_dir, load_config(Path("night.toml"), cwd=Path.cwd())))

    Args:
        run_dir: str or PathLike. The run directory (its metrics.jsonl is read).
        config: ResolvedConfig or None. The stack and agent settings to replay with;
            None: the run's own config.json.
        stats: ReadStats or None. Filled with the lines read and skipped.
        housekeeping: bool. Also yield checkpoint bookkeeping (retain, keep, checkpoint, configure).

    Raises:
        ConfigError: ``config`` is None and the run's config.json cannot be used.
    """
    if config is None:
        config = run_config(run_dir)
    stats = stats if stats is not None else ReadStats()
    yield from follow(Engine.from_config(config), _records(Path(run_dir, METRICS_FILE), stats), housekeeping)


def _records(path: Path, stats: ReadStats) -> Iterator[Record]:
    for obj in iter_objects(path, stats):
        try:
            yield parse_record(obj)
        except ProtocolError as exc:
            stats.bad(str(exc))


def follow(engine: Engine, records: Iterable[Record], housekeeping: bool = False) -> Iterator[dict[str, Any]]:
    """Feed ``records`` to ``engine`` at the what-if LR; yield its decisions, then the end item if any.

    Example::

        items = list(follow(Engine([Plateau(patience=1)]), records))

    Args:
        engine: Engine. A fresh engine with the stack to replay.
        records: iterable of Record. A run's records, in order.
        housekeeping: bool. Also yield checkpoint bookkeeping (see :func:`replay`).
    """
    what_if = WhatIfLR(engine)
    waiting: tuple[int, dict[str, Any]] | None = None  # a replayed rollback's (target step, end item)
    for record in records:
        if waiting is not None:
            if _rollback_ack(record) and record.step == waiting[0]:  # type: ignore[attr-defined]
                waiting = None  # the recorded run went back to the same step: its records are the what-if's again
            elif _rollback_ack(record) or isinstance(record, (EpochRecord, StartRecord, EndRecord)):
                yield waiting[1]  # the recorded run went on, or went elsewhere
                return
            else:
                continue  # the recorded run's records before its own rollback (the engine ignores them)
        decisions = engine.feed(what_if.rewrite(record))
        what_if.after(decisions)
        ending: Decision | None = None
        for decision in decisions:
            if housekeeping or decision.action.kind not in HOUSEKEEPING_ACTIONS:
                yield decision_dict(decision)
            if ending is None and end_item(decision) is not None:
                ending = decision
        if ending is None:
            continue
        end = end_item(ending)
        assert end is not None
        pending = engine.state.pending
        if ending.action.kind == "rollback" and pending is not None:
            waiting = (pending.step, end)
            continue
        yield end
        return
    if waiting is not None:
        yield waiting[1]


def _rollback_ack(record: Record) -> bool:
    return isinstance(record, AckRecord) and record.cmd == "rollback"


__all__ = ["END", "REPLAY", "WhatIfLR", "decision_dict", "end_item", "follow", "replay", "run_config"]
