"""``lrsup resume RUN_DIR``: take over a run whose supervisor died.

1. Check the run directory (ours, not writable by others, no symlinked or foreign
   files: exit 2 otherwise) and that its supervisor is really gone (the pid and
   start time in supervisor.json no longer name a live process).
2. Drop the torn tail of control.jsonl and journal.jsonl, so that new lines do not
   glue onto garbage; metrics.jsonl is only read (every complete line kept).
3. Rebuild the engine: policy state (patience counters, best values) continues. It
   starts from snapshot.json when that fits the run directory (lrsup.supervisor.rundir.snapshot:
   the engine's state after the first ``offset`` bytes of metrics.jsonl, written every
   ``[run] snapshot_interval`` seconds) and replays the records after it; without one, it
   replays all of metrics.jsonl. The first ``V`` start and epoch records, ``V`` being the
   number of verdicts in control.jsonl, were decided on before the crash: they are
   replayed silently (no command, no journal line). Records after them are handled live.
   The seq counter continues from the highest seq in control.jsonl, and commands
   already there are never re-sent to the same trainer. The PBT donations a donor keeps
   come from journal.jsonl (its ``donated``/``donation_released`` events), which is never
   behind the snapshot (lrsup.supervisor.run.operator.restore_donations).
4. If the trainer is alive (pid exists and its start time matches) reattach: poll it
   with ``os.kill(pid, 0)`` + start time (it is not our child), follow metrics.jsonl
   from where the replay ended. Otherwise restart it (attempt + 1) from the newest
   known-good checkpoint, re-sending the commands it never acknowledged (a trainer whose
   last record says it completed or stopped is not restarted).

Exactly once (docs/protocol.md, "Delivery"): the hold in force and the operator requests
already acted on come from journal.jsonl's ``request`` lines (requests.jsonl is read on
from the last one, never from byte 0; a PBT request is acted on again until its event is
journaled); on the records after the last verdict, a command
already in control.jsonl is not sent again; the keep-list (the last ``retain``) is given
to every new attempt. Nothing is made up: the run's progress comes from the snapshot and
the records themselves.

Example::

    status = resume(Path("runs/20261126T190000Z-train"))
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lrsup.supervisor import protocol
from lrsup.supervisor.config import run_config
from lrsup.supervisor.protocol.wire import EXIT_USAGE, EpochRecord, Record, StartRecord
from lrsup.supervisor.run.lifecycle import EXIT_FATAL, State
from lrsup.supervisor.run.operator import PBT_EVENTS, restore_donations
from lrsup.supervisor.rundir.layout import RunDirError, RunPaths, check_existing_run_dir
from lrsup.supervisor.rundir.liveness import pid_alive
from lrsup.supervisor.rundir.progress import RunProgress
from lrsup.supervisor.rundir.recovery import (
    ControlHistory,
    JournalHistory,
    TakeOver,
    read_control,
    read_journal,
    read_records,
    truncate_torn_tail,
)
from lrsup.supervisor.rundir.snapshot import Snapshot, load_snapshot
from lrsup.supervisor.rundir.statefile import read_state, write_state

if TYPE_CHECKING:
    from lrsup.supervisor.config import ResolvedConfig
    from lrsup.supervisor.engine.core import Engine


def resume_run(
    run_dir: Path,
    *,
    display: Any = None,
    spawner: Any = None,
    clock: Any = None,
    handle_signals: bool = True,
    **options: Any,
) -> int:
    """Resume supervising ``run_dir``; the run's exit status, or 2 when refused (message on stderr)."""
    try:
        return _resume(run_dir, display=display, spawner=spawner, clock=clock, handle_signals=handle_signals, **options)
    except (RunDirError, ValueError) as exc:
        print(f"lrsup: cannot resume {str(run_dir)!r}: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE


def _resume(run_dir: Path, *, display: Any, spawner: Any, clock: Any, handle_signals: bool, **options: Any) -> int:
    from lrsup.supervisor.run.runner import Runner, build_engine, install_signal_handlers, trainer_env

    paths = check_existing_run_dir(run_dir)
    state = _dead_supervisors_state(paths)
    config = run_config(paths.root)
    argv, cwd = state.get("argv"), state.get("cwd")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise RunDirError(f"{protocol.STATE_FILE} has no valid argv (got {argv!r})")
    torn = {name: truncate_torn_tail(paths.root / name) for name in (protocol.CONTROL_FILE, protocol.JOURNAL_FILE)}
    journal = read_journal(paths.journal, events=PBT_EVENTS.values())
    if journal.finished is not None:  # died after the run's end was journaled: only supervisor.json is behind
        return _record_finish(paths, state, journal.finished)
    history = read_control(paths.control)
    rebuilt = rebuild(paths, config, history, build_engine, journal)
    plan = take_over_plan(state, history, journal, rebuilt, torn)
    options.setdefault("grace", config.run.grace_period)
    options.setdefault("poll_interval", config.run.poll_interval)
    runner = Runner(
        config,
        rebuilt.engine,
        paths,
        argv,
        trainer_env(paths.root),
        Path(cwd or paths.root),
        spawner=spawner,
        display=display,
        clock=clock,
        script=state.get("script"),
        offset=rebuilt.offset,
        **options,
    )
    restore = install_signal_handlers(runner) if handle_signals else (lambda: None)
    try:
        return runner.run(start=lambda: runner.take_over(plan))
    finally:
        restore()


def _dead_supervisors_state(paths: RunPaths) -> dict[str, Any]:
    """supervisor.json of a run whose supervisor is gone and that has not finished; RunDirError otherwise."""
    state = read_state(paths.state)
    pid = state.get("supervisor_pid")
    if pid_alive(pid, state.get("supervisor_start_time")) and pid != os.getpid():
        raise RunDirError(f"its supervisor (pid {pid}) is still running")
    if state.get("exit_status") is not None:
        raise RunDirError(f"the run already finished (exit status {state['exit_status']}: {state.get('reason')})")
    return state


def _record_finish(paths: RunPaths, state: dict[str, Any], finished: dict[str, Any]) -> int:
    """Write the end the journal already holds into supervisor.json; its exit status."""
    status = finished.get("status")
    status = status if isinstance(status, int) and not isinstance(status, bool) else 1
    detail = str(finished.get("detail") or "")
    reason = detail.rsplit(" (exit status", 1)[0]
    done = {0: State.EXITED, EXIT_FATAL: State.FATAL}.get(status, State.FAILED).value
    fields = {k: v for k, v in state.items() if k != "v"}
    write_state(paths.state, {**fields, "state": done, "exit_status": status, "reason": reason})
    print(f"lrsup: the run had already finished: {detail}", file=sys.stderr, flush=True)
    return status


@dataclass
class Rebuilt:
    """The engine as a resumed supervisor starts with it, and the records it has yet to see.

    Args:
        engine: Engine, restored from the snapshot (or fresh without one).
        records: list[Record], the records after the snapshot (all of them without one).
        offset: int, where metrics.jsonl's complete lines end (the follower goes on there).
        progress: RunProgress, what the records before ``records`` said (empty without a snapshot).
        snapshot: Snapshot or None.
        how: str, a phrase saying where the state came from (for the journal).
    """

    engine: Engine
    records: list[Record]
    offset: int
    progress: RunProgress
    snapshot: Snapshot | None
    how: str


def rebuild(
    paths: RunPaths,
    config: ResolvedConfig,
    history: ControlHistory,
    build_engine: Callable,
    journal: JournalHistory | None = None,
) -> Rebuilt:
    """The engine for resuming ``paths``: from its snapshot if that fits, else from a full replay to come.

    Either way, with the PBT donations the journal holds (``journal``: read here if not given).
    """
    engine = build_engine(config)
    snap, why = load_snapshot(paths.root, history)
    if snap is not None:
        try:
            engine.load_state_dict(snap.engine)
        except ValueError as exc:
            snap, why, engine = None, f"snapshot does not fit this stack ({exc})", build_engine(config)
    if journal is None:
        journal = read_journal(paths.journal, events=PBT_EVENTS.values())
    restore_donations(engine, journal.events)
    records, offset = read_records(paths.metrics, start=snap.offset if snap is not None else 0)
    if snap is None:
        return Rebuilt(engine, records, offset, RunProgress(), None, f"full replay ({why})")
    return Rebuilt(engine, records, offset, replace(snap.progress), snap, f"from its {why}")


def take_over_plan(
    state: dict[str, Any], history: ControlHistory, journal: JournalHistory, rebuilt: Rebuilt, torn: dict[str, int]
) -> TakeOver:
    """What the new Runner does (``Runner.take_over``): which records are replayed, which handled live."""
    unacked = dict(history.commands)
    if rebuilt.snapshot is not None:  # acknowledged before the snapshot: settled
        pending, max_seq = set(rebuilt.snapshot.unacked), rebuilt.snapshot.max_seq
        unacked = {seq: c for seq, c in unacked.items() if seq > max_seq or seq in pending}
    split = _decided(rebuilt.records, history.verdicts - rebuilt.progress.verdicts)
    pid, start_time = state.get("trainer_pid"), state.get("trainer_start_time")
    dropped = ", ".join(f"{n} torn bytes of {name}" for name, n in torn.items() if n) or "no torn lines"
    return TakeOver(
        seq=history.max_seq,
        unacked=unacked,
        progress=replace(rebuilt.progress),
        attempt=int(state.get("attempt") or 1),
        replay=rebuilt.records[:split],
        live=rebuilt.records[split:],
        presend=history.after_last_verdict(journal.request_seqs | journal.resent_seqs),
        journal=journal,
        retained=list(history.retained or ()),
        trainer=(pid, start_time),
        alive=pid_alive(pid, start_time),
        started=state.get("started"),
        how=rebuilt.how,
        torn=dropped,
        parked=state.get("state") == "parked",
        turns=int(state.get("turns") or 0),
    )


def _decided(records: list[Record], verdicts: int) -> int:
    """How many of ``records`` were decided on before the crash: up to the ``verdicts``-th start or epoch record.

    Each start and epoch record gets one verdict (the start record's is the start barrier's).
    """
    split = 0
    for index, record in enumerate(records):
        if verdicts <= 0:
            break
        if isinstance(record, (StartRecord, EpochRecord)):
            verdicts -= 1
        split = index + 1
    return split
