"""Operator requests to a running supervisor (set-lr, hold, release, stop), and resume.

Owns sending one request over the operator channel (``operator.send_request``, signed
``user@host``) after checking that the run's supervisor is alive, waiting for a stopped
run to finish, and ``lrsup resume`` for a run whose supervisor is gone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from lrsup.supervisor.cli.app import RunArgument, RunsDirOption, app, fail, resolve
from lrsup.supervisor.cli.format import epoch_text, fmt_lr, state_text

WhyOption = typer.Option(None, "--why", help="Why (recorded in the journal with who asked).")


@app.command("set-lr")
def set_lr(
    run: str = RunArgument,
    value: float = typer.Argument(..., metavar="VALUE", help="The new effective learning rate (finite, >= 0)."),
    why: Optional[str] = WhyOption,
    runs_dir: Path = RunsDirOption,
) -> None:
    """Ask a running supervisor to set the learning rate (applied at the next epoch end)."""
    import math

    if not math.isfinite(value) or value < 0:
        fail(f"VALUE must be a finite learning rate >= 0, got {value!r}")
    raise typer.Exit(_request(resolve(run, runs_dir), "set_lr", why, lr=value))


@app.command()
def hold(run: str = RunArgument, why: Optional[str] = WhyOption, runs_dir: Path = RunsDirOption) -> None:
    """Ask a running supervisor to hold: its policies decide nothing until `lrsup release`."""
    raise typer.Exit(_request(resolve(run, runs_dir), "hold", why))


@app.command()
def release(run: str = RunArgument, why: Optional[str] = WhyOption, runs_dir: Path = RunsDirOption) -> None:
    """Release a hold: the policies decide again."""
    raise typer.Exit(_request(resolve(run, runs_dir), "release", why))


@app.command()
def stop(
    run: str = RunArgument,
    timeout: float = typer.Option(
        120.0, "--timeout", min=0, help="Seconds to wait for the run to finish (0: do not wait)."
    ),
    why: Optional[str] = WhyOption,
    runs_dir: Path = RunsDirOption,
) -> None:
    """Ask a running supervisor to stop the run cleanly, and wait for it to finish."""
    run_dir = resolve(run, runs_dir)
    status = _request(run_dir, "stop", why)
    if status == 0 and timeout > 0:
        status = _wait_finished(run_dir, timeout)
    raise typer.Exit(status)


def _who() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no user name (containers): the uid
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return f"{user}@{socket.gethostname()}"


def _request(run_dir: Path, op: str, why: str | None, **fields: Any) -> int:
    """Send one operator request to the run's live supervisor; 2 when it is not running."""
    from lrsup.supervisor.history.runs import summarize

    summary = summarize(run_dir, scan_best=False)
    if summary.state != "running" or not summary.alive:
        if summary.state == "stale":
            fail(f"{summary.name} is not running: its supervisor is gone; use `lrsup resume {summary.name}`")
        if summary.state == "running":  # fresh files but no supervisor pid recorded
            fail(f"{summary.name}: no live supervisor is recorded in supervisor.json; cannot send {op}")
        fail(f"{summary.name} is not running ({summary.state}); use `lrsup resume {summary.name}` to go on with it")
    from lrsup.supervisor.run.operator import send_request

    try:
        answer = send_request(run_dir, op, who=_who(), why=why, **fields)
    except (ValueError, OSError) as err:
        fail(f"cannot send {op} to {summary.name}: {err}")
    what = f"{op} lr={fmt_lr(fields['lr'])}" if "lr" in fields else op
    ref = f" (request {answer})" if isinstance(answer, (int, str)) and not isinstance(answer, bool) else ""
    print(f"lrsup: sent {what} to {summary.name}{ref}")
    return 0


def _wait_finished(run_dir: Path, timeout: float, poll: float = 0.5) -> int:
    import time

    from lrsup.supervisor.history.runs import summarize

    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 5.0
    while True:
        s = summarize(run_dir, scan_best=False)
        if s.state != "running":
            print(
                f"lrsup: {s.name} {state_text(s)}"
                + (f" (exit status {s.exit_status})" if s.exit_status is not None else "")
            )
            return 0 if s.finished else 1
        now = time.monotonic()
        if now >= deadline:
            print(
                f"lrsup: {s.name} still running after {timeout:g} s; the supervisor escalates the stop by itself "
                f"(check with `lrsup status {s.name}`)",
                file=sys.stderr,
            )
            return 1
        if now >= next_note:
            next_note = now + 5.0
            print(f"lrsup: waiting for {s.name} to stop (epoch {epoch_text(s)}, {int(deadline - now)} s left)")
        time.sleep(poll)


@app.command()
def resume(
    run: str = typer.Argument(..., metavar="RUN_DIR", help="The run to go on with (a directory or a name prefix)."),
    runs_dir: Path = RunsDirOption,
) -> None:
    """Go on with a run whose supervisor is gone (from its last checkpoint); exits with the run's status."""
    raise typer.Exit(_resume(resolve(run, runs_dir)))


def _resume(run_dir: Path) -> int:
    from lrsup.supervisor.history.runs import summarize

    summary = summarize(run_dir, scan_best=False)
    if summary.state == "running" and summary.alive:
        fail(f"{summary.name} is running (supervisor pid {summary.pid}); nothing to resume")
    from lrsup.supervisor.run.runner import resume as resume_run
    from lrsup.supervisor.rundir.layout import RunDirError

    try:
        return int(resume_run(run_dir))
    except (RunDirError, FileNotFoundError) as err:
        fail(str(err))
