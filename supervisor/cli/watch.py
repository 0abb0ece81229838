"""``lrsup logs`` and ``lrsup watch``: follow a run that another process supervises.

Owns reading trainer.log (once, or following it until the run ends), and the live view
of a detached run: the recent past from metrics.jsonl and journal.jsonl, then their new
lines fed to the same display ``lrsup run`` uses. Ctrl-C stops following, never the run.

Ctrl-C (SIGINT) and SIGTERM only set a flag that the follow loop checks between reads, as
the supervisor's own loop does: a KeyboardInterrupt raised at an arbitrary point could land
inside the display while it holds its console lock, and closing the display would then wait
on that lock for ever.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import typer

from lrsup.supervisor.cli.app import RunArgument, RunsDirOption, app, fail, resolve
from lrsup.supervisor.cli.format import state_text


@app.command()
def logs(
    run: str = RunArgument,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output until the run ends or Ctrl-C."),
    runs_dir: Path = RunsDirOption,
) -> None:
    """Print the trainer's output (trainer.log)."""
    raise typer.Exit(_logs(resolve(run, runs_dir), follow))


@app.command()
def watch(run: str = RunArgument, runs_dir: Path = RunsDirOption) -> None:
    """The live view of a run supervised elsewhere (lrsup run --detach); Ctrl-C leaves the run alone."""
    raise typer.Exit(_watch(resolve(run, runs_dir)))


@contextlib.contextmanager
def _stop_requested() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (handlers restored after it)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread (tests call in threads)
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_is_live(run_dir: Path) -> bool:
    """True while something may still write to the run: its supervisor is alive (or, without a pid, fresh files)."""
    from lrsup.supervisor.history.runs import summarize

    return summarize(run_dir, scan_best=False).state == "running"


def _logs(run_dir: Path, follow: bool, poll: float = 0.2) -> int:
    import time

    from lrsup.supervisor.history.runs import TailReader
    from lrsup.supervisor.protocol.wire import TRAINER_LOG

    path = run_dir / TRAINER_LOG
    if not path.exists() and not follow:
        fail(f"{run_dir.name} has no {TRAINER_LOG} (yet)")
    reader = TailReader(path, 0, parse=False)

    def pump() -> None:
        data = reader.read_bytes()
        if data:
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()

    pump()
    if not follow:
        return 0
    last_check = time.monotonic()
    with _stop_requested() as stop:
        live = _run_is_live(run_dir)
        try:
            while live and not stop.wait(poll):
                pump()
                if time.monotonic() - last_check >= 1.0:
                    last_check = time.monotonic()
                    live = _run_is_live(run_dir)
            pump()
        except KeyboardInterrupt:  # before the handlers were in place
            pass
    return 0


def _decision_view(entry: Any) -> Any:
    """A journal decision (a DecisionEntry) as the display's ``on_decision`` expects it (``action``, ``lr``, ``suppressed``)."""
    from types import SimpleNamespace

    name = entry.extra.get("name")
    action = SimpleNamespace(
        kind=entry.action or "?",
        policy=entry.policy,
        reason=entry.reason,
        lr=None,
        name=str(name or "?"),
        value=float("nan"),
    )
    return SimpleNamespace(action=action, lr=entry.lr, suppressed=entry.suppressed)


def _feed(display: Any, obj: dict) -> None:
    from lrsup.supervisor.protocol.wire import ProtocolError, parse_record

    try:
        display.on_record(parse_record(obj))
    except ProtocolError:
        pass


def _feed_journal(display: Any, obj: dict) -> None:
    from types import SimpleNamespace

    from lrsup.supervisor.protocol.journal import (
        DecisionEntry,
        EventEntry,
        LrOwnerEntry,
        MissingMetricEntry,
        read_entry,
    )

    entry = read_entry(obj)
    if isinstance(entry, DecisionEntry):
        display.on_decision(_decision_view(entry))
    elif isinstance(entry, MissingMetricEntry):  # shown as the live run showed it
        action = SimpleNamespace(kind=entry.kind, policy=entry.policy, reason=entry.message)
        display.on_decision(SimpleNamespace(action=action, lr=None, suppressed=None, epoch=entry.epoch))
    elif isinstance(entry, EventEntry):
        display.on_state(entry.event or "event", str(entry.detail or entry.event))
    elif isinstance(entry, LrOwnerEntry) and hasattr(display, "on_note"):
        display.on_note(entry.detail)  # who owns the LR


def _watch(run_dir: Path, poll: float = 0.25, display: Any = None) -> int:
    with _stop_requested() as stop:
        return _watch_until(run_dir, poll, display, stop)


def _watch_until(run_dir: Path, poll: float, display: Any, stop: threading.Event) -> int:
    import time

    from lrsup.supervisor import protocol
    from lrsup.supervisor.history.runs import TailReader, head_objects, summarize, tail_objects
    from lrsup.supervisor.protocol.journal import DecisionEntry, LrOwnerEntry, read_entry
    from lrsup.supervisor.view.display import make_display

    metrics, journal = run_dir / protocol.METRICS_FILE, run_dir / protocol.JOURNAL_FILE
    # Open the followers first, then show the recent past: nothing falls between the two.
    followers = (
        TailReader(metrics, None),
        TailReader(journal, None),
        TailReader(run_dir / protocol.TRAINER_LOG, None, parse=False),
    )
    summary = summarize(run_dir, scan_best=False)
    display = display or make_display()
    try:
        head, tail = head_objects(metrics), tail_objects(metrics)
        start = next((r for r in reversed(tail) if r.get("type") == "start"), None) or next(
            (r for r in reversed(head) if r.get("type") == "start"), None
        )
        if start is not None:
            _feed(display, start)
        last_epoch = next((r for r in reversed(tail) if r.get("type") == "epoch"), None)
        if last_epoch is not None and (start is None or (last_epoch.get("time") or 0) >= (start.get("time") or 0)):
            _feed(display, last_epoch)
        entries = list(map(read_entry, tail_objects(journal)))
        owner = [e for e in entries if isinstance(e, LrOwnerEntry)]
        if owner and hasattr(display, "on_note"):
            display.on_note(owner[-1].detail)  # who owns the LR, as last said
        decided = [e for e in entries if isinstance(e, DecisionEntry)]
        for entry in decided[-5:]:
            display.on_decision(_decision_view(entry))
        if summary.state != "running":
            display.on_state(summary.state, f"{summary.name} is not running: {state_text(summary)}")
            return 0
        display.on_state("watching", f"watching {summary.name} (Ctrl-C stops watching; the run goes on)")
        last_check = time.monotonic()
        live = True
        while True:
            for obj in followers[0].read():
                _feed(display, obj)
            for entry_obj in followers[1].read():
                _feed_journal(display, entry_obj)
            for line in followers[2].read_lines():
                display.on_output_line(line.decode("utf-8", "replace"))
            if not live or stop.wait(poll):
                break
            if time.monotonic() - last_check >= 1.0:
                last_check = time.monotonic()
                live = _run_is_live(run_dir)  # one more pass after it ends drains the files
        if not stop.is_set():  # Ctrl-C: stop following quietly, the run goes on
            final = summarize(run_dir, scan_best=False)
            display.on_state(final.state, f"{final.name}: {state_text(final)}")
    except KeyboardInterrupt:  # before the handlers were in place
        pass
    finally:
        display.close()
    return 0
