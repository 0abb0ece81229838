"""``lrsup run`` and ``lrsup lr-find``: start a supervised run, in the foreground or detached.

Owns the checks before a run starts (script, configuration, run directory: errors exit 2
with nothing left behind), the foreground run (``runner.run``), the detached run (``lrsup
run`` again in its own session, waited for until its run directory exists) and the LR
range test (``lr_find_cmd``). The runner, pydantic and rich are imported inside.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from lrsup.supervisor.cli.app import app, check_script, fail, load_config, script_args


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False}
)
def run(
    ctx: typer.Context,
    script: Path = typer.Argument(..., metavar="SCRIPT", help="The training script (an ordinary Keras script)."),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        help="lrsup.toml or a pyproject.toml with [tool.lrsup] (default: found in the current directory).",
    ),
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", help="Where the run's files go (default: runs/<UTC time>-<script>); must be new or empty."
    ),
    detach: bool = typer.Option(
        False,
        "--detach",
        "-d",
        help="Supervise in the background (its own session, survives logout); print the run directory and return.",
    ),
) -> None:
    """Run SCRIPT under supervision. Arguments after the script (or after --) are passed to it."""
    args = script_args(ctx)
    if detach:
        raise typer.Exit(_run_detached(script, args, config, run_dir))
    raise typer.Exit(_run(script, args, config, run_dir))


@app.command(
    "lr-find",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False},
)
def lr_find(
    ctx: typer.Context,
    script: Path = typer.Argument(..., metavar="SCRIPT", help="The training script (an ordinary Keras script)."),
    steps: int = typer.Option(
        100, "--steps", help="Steps of the LR ramp (>= 20); the script must train at least that many."
    ),
    min_lr: Optional[float] = typer.Option(
        None, "--min-lr", help="The ramp's start (default: by optimizer, SGD 1e-5, Adam 1e-7)."
    ),
    max_lr: Optional[float] = typer.Option(
        None, "--max-lr", help="The ramp's end (default: by optimizer, SGD 10, Adam 1)."
    ),
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", help="Where the run's files go (default: runs/<UTC time>-<script>); must be new or empty."
    ),
) -> None:
    """LR range test: ramp the LR over --steps steps, stop, print the suggested LR and write lr_find.png."""
    args = script_args(ctx)
    raise typer.Exit(_lr_find(script, args, steps, min_lr, max_lr, run_dir))


def _lr_find(
    script: Path, args: list[str], steps: int, min_lr: float | None, max_lr: float | None, run_dir: Path | None
) -> int:
    """Check the options and the script, then run the range test (lrsup.supervisor.run.range_test)."""
    from lrsup.supervisor.run.range_test import range_test_config, run_range_test
    from lrsup.supervisor.rundir.layout import RunDir, RunDirError

    cwd = Path.cwd()
    try:
        config = range_test_config(steps, min_lr, max_lr)
    except ValueError as err:
        fail(str(err))
    check_script(script, cwd)
    try:
        prepared = RunDir.prepare(run_dir, script=script, cwd=cwd)
        return run_range_test(script, args, prepared, config, cwd)
    except RunDirError as err:
        fail(str(err))


def _validate_run(script: Path, config_path: Path | None, run_dir: Path | None, cwd: Path) -> tuple[Any, Any]:
    """The checks before any run starts: script, configuration, run directory. (config, RunDir)."""
    check_script(script, cwd)

    from lrsup.supervisor.rundir.layout import RunDir, RunDirError

    config = load_config(config_path, cwd)
    try:
        prepared = RunDir.prepare(run_dir, script=script, cwd=cwd)
    except RunDirError as err:
        fail(str(err))
    return config, prepared


def _run(script: Path, args: list[str], config_path: Path | None, run_dir: Path | None) -> int:
    """Validate everything, then supervise; the exit status of the run (2 for bad input)."""
    cwd = Path.cwd()
    config, prepared = _validate_run(script, config_path, run_dir, cwd)
    from lrsup.supervisor.run.runner import run as supervise
    from lrsup.supervisor.rundir.layout import RunDirError

    try:
        return supervise(config, script=script, args=args, run_dir=prepared, cwd=cwd)
    except RunDirError as err:  # the directory changed between the check and its creation
        fail(str(err))


DETACH_WAIT = 15.0  # seconds the parent waits for the background supervisor to create the run directory


def _run_detached(script: Path, args: list[str], config_path: Path | None, run_dir: Path | None) -> int:
    """Validate here (errors exit 2 in the foreground), then start ``lrsup run`` in its own session."""
    import subprocess
    import tempfile
    import time

    cwd = Path.cwd()
    _, prepared = _validate_run(script, config_path, run_dir, cwd)
    argv = [sys.executable, "-m", "lrsup.supervisor.cli.main", "run"]
    if config_path is not None:
        argv += ["--config", str(Path(cwd, config_path))]
    argv += ["--run-dir", str(prepared.path), str(script), "--", *args]
    # stderr goes to an unlinked file: read here if the supervisor fails at once, harmless after.
    with tempfile.TemporaryFile() as err, open(os.devnull, "rb") as null_in, open(os.devnull, "wb") as null_out:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdin=null_in, stdout=null_out, stderr=err, start_new_session=True, close_fds=True
        )
        deadline = time.monotonic() + DETACH_WAIT
        while proc.poll() is None and not prepared.path.is_dir() and time.monotonic() < deadline:
            time.sleep(0.05)
        status = proc.poll()
        if status not in (None, 0) and not prepared.path.is_dir():
            err.seek(0)
            message = err.read().decode("utf-8", "replace").strip()
            print(message or f"lrsup: the background supervisor exited with status {status}", file=sys.stderr)
            return status
    print(prepared.path)
    name = prepared.path.name
    print(
        f"lrsup: supervising in the background (pid {proc.pid}); follow it with: lrsup watch {name}  |  "
        f"lrsup logs -f {name}  |  lrsup stop {name}",
        file=sys.stderr,
    )
    return 0
