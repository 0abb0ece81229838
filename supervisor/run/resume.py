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
   already there are never re-sent to the same trainer.
4. If the trainer is alive (pid exists and its start time matches) reattach: poll it
   with ``os.kill(pid, 0)`` + start time (it is not our child), follow metrics.jsonl
   from where the replay ended. Otherwise restart it (attempt + 1) from the newest
   known-good checkpoint, re-sending the commands it never acknowledged.

Example::

    status = resume(Path("runs/20261126T190000Z-train"))
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from lrsup.supervisor import protocol
from lrsup.supervisor.protocol.wire import EpochRecord, Record, StartRecord
from lrsup.supervisor.run.lifecycle import State
from lrsup.supervisor.run.process import AttachedHandle
from lrsup.supervisor.rundir.layout import RunDirError, check_existing_run_dir
from lrsup.supervisor.rundir.recovery import read_control, read_records, truncate_torn_tail
from lrsup.supervisor.rundir.snapshot import Progress, Snapshot, load_snapshot
from lrsup.supervisor.rundir.statefile import read_state, same_process

EXIT_USAGE = 2


def load_resolved_config(path: Path) -> Any:
    """Rebuild the ResolvedConfig from config.json (validated again, like the original)."""
    from lrsup.supervisor.config import config_from_json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"cannot read {str(path)!r}: {exc}") from None
    return config_from_json(data, str(path))


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
    state = read_state(paths.state)
    if (
        same_process(state.get("supervisor_pid"), state.get("supervisor_start_time"))
        and state.get("supervisor_pid") != os.getpid()
    ):
        raise RunDirError(f"its supervisor (pid {state['supervisor_pid']}) is still running")
    if state.get("exit_status") is not None:
        raise RunDirError(f"the run already finished (exit status {state['exit_status']}: {state.get('reason')})")
    config = load_resolved_config(paths.config)
    argv, cwd = state.get("argv"), state.get("cwd")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise RunDirError(f"{protocol.STATE_FILE} has no valid argv (got {argv!r})")
    torn = {name: truncate_torn_tail(paths.root / name) for name in (protocol.CONTROL_FILE, protocol.JOURNAL_FILE)}
    history = read_control(paths.control)
    rebuilt = rebuild(paths, config, history, build_engine)
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
        return runner.run(start=lambda: _take_over(runner, state, history, rebuilt, torn))
    finally:
        restore()


@dataclass
class Rebuilt:
    """The engine as a resumed supervisor starts with it, and the records it has yet to see.

    Args:
        engine: Engine, restored from the snapshot (or fresh without one).
        records: list[Record], the records after the snapshot (all of them without one).
        offset: int, where metrics.jsonl's complete lines end (the follower goes on there).
        progress: Progress, what the records before ``records`` said (empty without a snapshot).
        snapshot: Snapshot or None.
        how: str, a phrase saying where the state came from (for the journal).
    """

    engine: Any
    records: list[Record]
    offset: int
    progress: Progress
    snapshot: Snapshot | None
    how: str


def rebuild(paths: Any, config: Any, history: Any, build_engine: Callable[[Any], Any]) -> Rebuilt:
    """The engine for resuming ``paths``: from its snapshot if that fits, else from a full replay to come."""
    engine = build_engine(config)
    snap, why = load_snapshot(paths.root, history)
    if snap is not None:
        try:
            engine.load_state_dict(snap.engine)
        except ValueError as exc:
            snap, why, engine = None, f"snapshot does not fit this stack ({exc})", build_engine(config)
    records, offset = read_records(paths.metrics, start=snap.offset if snap is not None else 0)
    if snap is None:
        return Rebuilt(engine, records, offset, Progress(), None, f"full replay ({why})")
    return Rebuilt(engine, records, offset, replace(snap.progress), snap, f"from its {why}")


def _take_over(runner: Any, state: dict, history: Any, rebuilt: Rebuilt, torn: dict) -> None:
    """Replay, then reattach to the live trainer or restart it (called inside ``Runner.run``)."""
    runner.open(seq=history.max_seq)
    life, channel = runner.lifecycle, runner.channel
    records, snap = rebuilt.records, rebuilt.snapshot
    channel.unacked = dict(history.commands)
    if snap is not None:  # acknowledged before the snapshot: settled
        pending = set(snap.unacked)
        channel.unacked = {seq: c for seq, c in channel.unacked.items() if seq > snap.max_seq or seq in pending}
    runner.progress = replace(rebuilt.progress)
    for record in rebuilt.progress.summary_records():  # the lifecycle learns what the covered records said
        life.on_record(record)
    life.attempt = int(state.get("attempt") or 1)
    # Replay: the records decided on before the crash (up to the V-th start or epoch record: each
    # gets one verdict, the start record's being the start barrier's) silently.
    epochs_left, split = history.verdicts - rebuilt.progress.verdicts, 0
    for index, record in enumerate(records):
        if epochs_left <= 0:
            break
        if isinstance(record, (StartRecord, EpochRecord)):
            epochs_left -= 1
        split = index + 1
    for record in records[:split]:
        runner._on_record(record, live=False)
    life.pop_events()
    pid, start_time = state.get("trainer_pid"), state.get("trainer_start_time")
    alive = same_process(pid, start_time)
    dropped = ", ".join(f"{n} torn bytes of {name}" for name, n in torn.items() if n) or "no torn lines"
    runner._event(
        "resumed",
        f"supervisor resumed after a crash: state {rebuilt.how}, replayed {split} record(s) "
        f"({dropped}); "
        + (f"reattaching to trainer pid {pid}" if alive else f"trainer pid {pid} is gone: restarting it"),
        replayed=split,
        seq=channel.seq,
        snapshot_records=rebuilt.progress.records,
    )
    runner.follower.start()
    runner.started = state.get("started") or runner.started
    now = runner.clock.monotonic()
    if alive:
        handle = AttachedHandle(pid, start_time, runner.paths.trainer_log, runner._on_output)
        seen = replace(rebuilt.progress)  # everything before the live records, the unreplayed ones too
        for record in records:
            seen.on_record(record)
        life.attach(handle, now, started=seen.started)
        runner.watchdog.arm(now, seen.max_step, progressed=seen.progressed)
        runner._attempt_seen = life.attempt
    for record in records[split:]:  # after the last verdict: not decided on yet, handle live
        runner._on_record(record)
    if not alive:
        life.set_command(runner.argv, runner.env, runner.cwd)
        runner._attempt_seen = life.attempt  # tick() announces the new attempt and re-sends on its start
        if life.state is not State.STARTING:
            life.change_state(State.STARTING, "restarting the trainer after the supervisor's crash", event="restarting")
        life._spawn(now)
