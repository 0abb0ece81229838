"""The ``lrsup`` command line: thin typed commands around private functions.

Usage::

    lrsup run train.py -- --epochs 30         # everything after the script goes to it
    lrsup run --config lrsup.toml train.py
    lrsup run --run-dir runs/night-1 train.py
    lrsup run --detach train.py -- --epochs 30 # in the background; prints the run directory
    lrsup lr-find train.py --steps 100         # LR range test: the suggested LR and lr_find.png
    lrsup ls                                  # the runs under runs/, newest first
    lrsup status 20261126T1                   # RUN: a run directory or a unique prefix of its name
    lrsup logs -f RUN / lrsup watch RUN       # follow a run another process supervises
    lrsup set-lr RUN 0.01 --why "too slow"    # operator requests: set-lr, hold, release, stop
    lrsup resume RUN / lrsup replay RUN / lrsup report RUN [RUN...] / lrsup export RUN --csv
    lrsup policies
    lrsup --version

Importing this module is cheap: rich, pydantic (the configuration), watchdog and
the runner are imported inside the commands, and keras or tensorflow never (the
trainer imports them, in its own process). Start-up errors (a missing script, an
invalid configuration, an unusable run directory) are one message on stderr and
exit status 2, with no traceback and no run directory left behind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, List, NoReturn, Optional

import typer

from lrsup.supervisor import __version__

EXIT_USAGE = 2

app = typer.Typer(
    name="lrsup",
    help="Supervise a Keras training script: learning-rate policies from outside the training process.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> NoReturn:
    print(f"lrsup: {message}", file=sys.stderr, flush=True)
    raise typer.Exit(EXIT_USAGE)


def _version(value: bool) -> None:
    if value:
        print(f"lrsup {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """lrsup: an automated training supervisor for Keras 3."""


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "allow_interspersed_args": False})
def run(
    ctx: typer.Context,
    script: Path = typer.Argument(..., metavar="SCRIPT", help="The training script (an ordinary Keras script)."),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        help="lrsup.toml or a pyproject.toml with \\[tool.lrsup] (default: found in the current directory).",
    ),
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", help="Where the run's files go (default: runs/<UTC time>-<script>); must be new or empty."
    ),
    detach: bool = typer.Option(
        False, "--detach", "-d",
        help="Supervise in the background (its own session, survives logout); print the run directory and return.",
    ),
) -> None:
    """Run SCRIPT under supervision. Arguments after the script (or after --) are passed to it."""
    args = list(ctx.args)
    if args[:1] == ["--"]:
        args = args[1:]
    if detach:
        raise typer.Exit(_run_detached(script, args, config, run_dir))
    raise typer.Exit(_run(script, args, config, run_dir))


@app.command("lr-find", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                          "allow_interspersed_args": False})
def lr_find(
    ctx: typer.Context,
    script: Path = typer.Argument(..., metavar="SCRIPT", help="The training script (an ordinary Keras script)."),
    steps: int = typer.Option(100, "--steps", help="Steps of the LR ramp (>= 20); the script must train at least that many."),
    min_lr: Optional[float] = typer.Option(None, "--min-lr", help="The ramp's start (default: by optimizer, SGD 1e-5, Adam 1e-7)."),
    max_lr: Optional[float] = typer.Option(None, "--max-lr", help="The ramp's end (default: by optimizer, SGD 10, Adam 1)."),
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", help="Where the run's files go (default: runs/<UTC time>-<script>); must be new or empty."
    ),
) -> None:
    """LR range test: ramp the LR over --steps steps, stop, print the suggested LR and write lr_find.png."""
    args = list(ctx.args)
    if args[:1] == ["--"]:
        args = args[1:]
    raise typer.Exit(_lr_find(script, args, steps, min_lr, max_lr, run_dir))


def _lr_find(script: Path, args: list[str], steps: int, min_lr: float | None, max_lr: float | None,
             run_dir: Path | None) -> int:
    """Check the options and the script, then run the range test (lrsup.supervisor.lr_find_cmd)."""
    from lrsup.supervisor.lr_find_cmd import range_test_config, run_range_test
    from lrsup.supervisor.rundir import RunDir, RunDirError

    cwd = Path.cwd()
    try:
        config = range_test_config(steps, min_lr, max_lr)
    except ValueError as err:
        _fail(str(err))
    script_path = Path(cwd, script)
    if not script_path.is_file():
        _fail(f"script {str(script)!r} " + ("is a directory, not a script" if script_path.is_dir() else "not found"))
    try:
        prepared = RunDir.prepare(run_dir, script=script, cwd=cwd)
        return run_range_test(script, args, prepared, config, cwd)
    except RunDirError as err:
        _fail(str(err))


@app.command()
def policies() -> None:
    """List the installed policies with their settings and defaults."""
    raise typer.Exit(_policies())


def _validate_run(script: Path, config_path: Path | None, run_dir: Path | None, cwd: Path) -> tuple[Any, Any]:
    """The checks before any run starts: script, configuration, run directory. (config, RunDir)."""
    script_path = Path(cwd, script)
    if not script_path.is_file():
        why = "is a directory, not a script" if script_path.is_dir() else "not found"
        _fail(f"script {str(script)!r} {why}")

    from lrsup.supervisor.rundir import RunDir, RunDirError

    config = _load_config(config_path, cwd)
    try:
        prepared = RunDir.prepare(run_dir, script=script, cwd=cwd)
    except RunDirError as err:
        _fail(str(err))
    return config, prepared


def _load_config(config_path: Path | None, cwd: Path) -> Any:
    from lrsup.supervisor.config import ConfigError, load_config

    try:
        return load_config(config_path, cwd)
    except ConfigError as err:
        bullets = "".join(f"\n  - {problem}" for problem in err.problems)
        _fail(f"{err.source}: invalid configuration{bullets}")


def _run(script: Path, args: list[str], config_path: Path | None, run_dir: Path | None) -> int:
    """Validate everything, then supervise; the exit status of the run (2 for bad input)."""
    cwd = Path.cwd()
    config, prepared = _validate_run(script, config_path, run_dir, cwd)
    from lrsup.supervisor.rundir import RunDirError
    from lrsup.supervisor.runner import run as supervise

    try:
        return supervise(config, script=script, args=args, run_dir=prepared, cwd=cwd)
    except RunDirError as err:  # the directory changed between the check and its creation
        _fail(str(err))


def _policies() -> int:
    """Print a table of the registered policies; 1 if the registry itself is broken."""
    from rich.console import Console
    from rich.table import Table

    from lrsup.supervisor.registry import PolicyLoadError, available, load_policy_class

    console = Console()
    try:
        found = available()
    except PolicyLoadError as err:
        print(f"lrsup: {err}", file=sys.stderr)
        return 1
    table = Table(title="installed lrsup policies", show_lines=True)
    for column in ("name", "source", "settings (default)", "description"):
        table.add_column(column, overflow="fold")
    for name, spec in found.items():
        try:
            cls = load_policy_class(name)
        except PolicyLoadError as err:
            table.add_row(name, spec, "", f"[red]cannot load: {err}[/]")
            continue
        table.add_row(name, spec, _describe_settings(cls.Settings), _first_line(cls.__doc__))
    if not found:
        console.print("no policies installed (entry-point group 'lrsup.policies' is empty)")
        return 0
    console.print(table)
    return 0


def _describe_settings(model: type) -> str:
    """One ``name: type = default`` line per field of a pydantic Settings model."""
    lines = []
    for field_name, field in model.model_fields.items():
        annotation = field.annotation
        type_name = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
        type_name = type_name or str(annotation).replace("typing.", "")
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        lines.append(f"{field_name}: {type_name} = {default}")
    return "\n".join(lines) or "(no settings)"


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n", 1)[0]


# ---------------------------------------------------------------------------
# Detached runs

DETACH_WAIT = 15.0  # seconds the parent waits for the background supervisor to create the run directory


def _run_detached(script: Path, args: list[str], config_path: Path | None, run_dir: Path | None) -> int:
    """Validate here (errors exit 2 in the foreground), then start ``lrsup run`` in its own session."""
    import subprocess
    import tempfile
    import time

    cwd = Path.cwd()
    _, prepared = _validate_run(script, config_path, run_dir, cwd)
    argv = [sys.executable, "-m", "lrsup.supervisor.cli", "run"]
    if config_path is not None:
        argv += ["--config", str(Path(cwd, config_path))]
    argv += ["--run-dir", str(prepared.path), str(script), "--", *args]
    # stderr goes to an unlinked file: read here if the supervisor fails at once, harmless after.
    with tempfile.TemporaryFile() as err, open(os.devnull, "rb") as null_in, open(os.devnull, "wb") as null_out:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=null_in, stdout=null_out, stderr=err,
                                start_new_session=True, close_fds=True)
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
    print(f"lrsup: supervising in the background (pid {proc.pid}); follow it with: lrsup watch {name}  |  "
          f"lrsup logs -f {name}  |  lrsup stop {name}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------
# Looking at runs

RunsDirOption = typer.Option(Path("runs"), "--runs-dir", help="Where runs are looked up by name (default: ./runs).")
RunArgument = typer.Argument(..., metavar="RUN", help="A run directory, or an unambiguous prefix of a run name in --runs-dir.")


def _resolve(ref: str, runs_dir: Path) -> Path:
    from lrsup.supervisor.runs import RunRefError, resolve_run

    try:
        return resolve_run(ref, runs_dir)
    except RunRefError as err:
        _fail(str(err))


@app.command("ls")
def ls(runs_dir: Path = RunsDirOption) -> None:
    """List the runs under --runs-dir, newest first: state, epoch, best metric, LR, start, duration."""
    raise typer.Exit(_ls(runs_dir))


@app.command()
def status(run: str = RunArgument, runs_dir: Path = RunsDirOption) -> None:
    """Show one run in detail: state, attempts, epoch, step, LR, metrics, best, last decisions, hold."""
    raise typer.Exit(_status(_resolve(run, runs_dir)))


@app.command()
def logs(
    run: str = RunArgument,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output until the run ends or Ctrl-C."),
    runs_dir: Path = RunsDirOption,
) -> None:
    """Print the trainer's output (trainer.log)."""
    raise typer.Exit(_logs(_resolve(run, runs_dir), follow))


@app.command()
def watch(run: str = RunArgument, runs_dir: Path = RunsDirOption) -> None:
    """The live view of a run supervised elsewhere (lrsup run --detach); Ctrl-C leaves the run alone."""
    raise typer.Exit(_watch(_resolve(run, runs_dir)))


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    import datetime as _dt

    return _dt.datetime.fromtimestamp(t).strftime("%m-%d %H:%M")


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


_STATE_STYLE = {"running": "cyan", "completed": "green", "stopped": "yellow", "failed": "red", "fatal": "red",
                "stale": "magenta", "unknown": "dim"}


def _state_text(summary: Any) -> str:
    if summary.state == "stale":
        return f"stale (supervisor gone: lrsup resume {summary.name})"
    return summary.state


def _epoch_text(summary: Any) -> str:
    if summary.epoch is None:
        return "-" if summary.epochs is None else f"0/{summary.epochs}"
    return f"{summary.epoch}/{summary.epochs}" if summary.epochs else str(summary.epoch)


def _best_text(summary: Any) -> str:
    if summary.best is None:
        return "-"
    where = f" @{summary.best_epoch}" if summary.best_epoch else ""
    return f"{summary.monitor}={summary.best:.4g}{where}"


def _ls(runs_dir: Path) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from lrsup.supervisor.runs import list_runs, summarize

    root = Path.cwd() / runs_dir
    if not root.is_dir():
        print(f"no runs: {runs_dir} is not a directory", file=sys.stderr)
        return 0
    found = list_runs(root)
    if not found:
        print(f"no runs in {runs_dir}", file=sys.stderr)
        return 0
    table = Table(title=f"lrsup runs in {runs_dir}", title_justify="left")
    for column, justify in (("name", "left"), ("state", "left"), ("epoch", "right"), ("best", "left"),
                            ("lr", "right"), ("started", "left"), ("duration", "right")):
        table.add_column(column, justify=justify, overflow="fold", no_wrap=column in ("epoch", "lr", "started", "duration"))
    for path in found:
        s = summarize(path)
        style = _STATE_STYLE.get(s.state, "")
        table.add_row(escape(s.name), f"[{style}]{escape(_state_text(s))}[/]" if style else escape(_state_text(s)),
                      _epoch_text(s), escape(_best_text(s)), _fmt(s.lr), _fmt_time(s.started),
                      _fmt_duration(s.duration()))
    Console().print(table)
    return 0


def _status(run_dir: Path) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from lrsup.supervisor.runs import summarize

    s = summarize(run_dir, full_journal=True)
    console = Console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    style = _STATE_STYLE.get(s.state, "")
    state = escape(_state_text(s)) + (f" ({escape(s.detail)})" if s.detail and s.state != "stale" else "")
    rows = [
        ("run", escape(str(s.path))),
        ("state", f"[{style}]{state}[/]" if style else state),
        ("supervisor", "-" if s.pid is None else f"pid {s.pid} ({'alive' if s.alive else 'gone'})"),
        ("attempt", _fmt(s.attempt)),
        ("restarts", _fmt(s.restarts)),
        ("epoch", _epoch_text(s)),
        ("step", _fmt(s.step)),
        ("lr", _fmt(s.lr, 6)),
        ("last metrics", escape(" ".join(f"{k}={_fmt(v)}" for k, v in s.last_logs.items())) or "-"),
        ("best", escape(_best_text(s))),
        ("held", _flag_text(s.held, s.supervisor)),
        ("degraded", _flag_text(s.degraded, s.supervisor)),
        ("started", _fmt_time(s.started)),
        ("duration", _fmt_duration(s.duration())),
    ]
    if s.exit_status is not None:
        rows.append(("exit status", str(s.exit_status)))
    for label, value in rows:
        grid.add_row(label, value)
    console.print(grid)
    if s.decisions:
        table = Table(title="last decisions", title_justify="left")
        for column in ("epoch", "step", "policy", "action", "lr", "reason"):
            table.add_column(column, overflow="fold")
        for d in s.decisions[-5:]:
            reason = d.reason + (f" [suppressed: {d.suppressed}]" if d.suppressed else "")
            table.add_row(_fmt(None if d.epoch is None else d.epoch + 1), _fmt(d.step), escape(d.policy),
                          escape(d.action), _fmt(d.lr), escape(reason))
        console.print(table)
    else:
        console.print("no decisions yet")
    return 0


def _flag_text(value: Any, state: dict) -> str:
    """supervisor.json's held/degraded: null or false is "no" (unknown "-" without a state file); else why."""
    from rich.markup import escape

    if value is None or value is False:
        return "no" if state else "-"
    if value is True:
        return "yes"
    if isinstance(value, dict):
        return "yes: " + escape(", ".join(f"{k}={v}" for k, v in value.items() if v is not None))
    return f"yes: {escape(str(value))}"


def _run_is_live(run_dir: Path) -> bool:
    """True while something may still write to the run: its supervisor is alive (or, without a pid, fresh files)."""
    from lrsup.supervisor.runs import summarize

    return summarize(run_dir, scan_best=False).state == "running"


def _logs(run_dir: Path, follow: bool, poll: float = 0.2) -> int:
    import time

    from lrsup.supervisor.protocol import TRAINER_LOG
    from lrsup.supervisor.runs import TailReader

    path = run_dir / TRAINER_LOG
    if not path.exists() and not follow:
        _fail(f"{run_dir.name} has no {TRAINER_LOG} (yet)")
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
    live = _run_is_live(run_dir)
    try:
        while live:
            time.sleep(poll)
            pump()
            if time.monotonic() - last_check >= 1.0:
                last_check = time.monotonic()
                live = _run_is_live(run_dir)
        pump()
    except KeyboardInterrupt:
        pass
    return 0


def _decision_view(entry: dict) -> Any:
    """A journal decision as the display's ``on_decision`` expects it (``action``, ``lr``, ``suppressed``)."""
    from types import SimpleNamespace

    action = SimpleNamespace(kind=str(entry.get("action") or "?"), policy=entry.get("policy"),
                             reason=str(entry.get("reason") or ""), lr=None,
                             name=str(entry.get("name") or "?"), value=float("nan"))
    lr = entry.get("lr") if isinstance(entry.get("lr"), (int, float)) else None
    suppressed = entry.get("suppressed") if isinstance(entry.get("suppressed"), str) else None
    return SimpleNamespace(action=action, lr=lr, suppressed=suppressed)


def _feed(display: Any, obj: dict) -> None:
    from lrsup.supervisor.protocol import ProtocolError, parse_record

    try:
        display.on_record(parse_record(obj))
    except ProtocolError:
        pass


def _feed_journal(display: Any, entry: dict) -> None:
    kind = entry.get("type")
    if kind == "decision":
        display.on_decision(_decision_view(entry))
    elif kind == "event":
        display.on_state(str(entry.get("event") or "event"), str(entry.get("detail") or entry.get("event")))


def _watch(run_dir: Path, poll: float = 0.25, display: Any = None) -> int:
    import time

    from lrsup.supervisor import protocol
    from lrsup.supervisor.display import make_display
    from lrsup.supervisor.runs import TailReader, head_objects, summarize, tail_objects

    metrics, journal = run_dir / protocol.METRICS_FILE, run_dir / protocol.JOURNAL_FILE
    # Open the followers first, then show the recent past: nothing falls between the two.
    followers = (TailReader(metrics, None), TailReader(journal, None), TailReader(run_dir / protocol.TRAINER_LOG, None, parse=False))
    summary = summarize(run_dir, scan_best=False)
    display = display or make_display()
    try:
        head, tail = head_objects(metrics), tail_objects(metrics)
        start = next((r for r in reversed(tail) if r.get("type") == "start"), None) or next(
            (r for r in reversed(head) if r.get("type") == "start"), None)
        if start is not None:
            _feed(display, start)
        last_epoch = next((r for r in reversed(tail) if r.get("type") == "epoch"), None)
        if last_epoch is not None and (start is None or (last_epoch.get("time") or 0) >= (start.get("time") or 0)):
            _feed(display, last_epoch)
        for entry in [e for e in tail_objects(journal) if e.get("type") == "decision"][-5:]:
            display.on_decision(_decision_view(entry))
        if summary.state != "running":
            display.on_state(summary.state, f"{summary.name} is not running: {_state_text(summary)}")
            return 0
        display.on_state("watching", f"watching {summary.name} (Ctrl-C stops watching; the run goes on)")
        last_check = time.monotonic()
        live = True
        while True:
            for obj in followers[0].read():
                _feed(display, obj)
            for entry in followers[1].read():
                _feed_journal(display, entry)
            for line in followers[2].read_lines():
                display.on_output_line(line.decode("utf-8", "replace"))
            if not live:
                break
            time.sleep(poll)
            if time.monotonic() - last_check >= 1.0:
                last_check = time.monotonic()
                live = _run_is_live(run_dir)  # one more pass after it ends drains the files
        final = summarize(run_dir, scan_best=False)
        display.on_state(final.state, f"{final.name}: {_state_text(final)}")
    except KeyboardInterrupt:
        pass
    finally:
        display.close()
    return 0


# ---------------------------------------------------------------------------
# Operator requests: the supervisor applies them (operator channel)

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
        _fail(f"VALUE must be a finite learning rate >= 0, got {value!r}")
    raise typer.Exit(_request(_resolve(run, runs_dir), "set_lr", why, lr=value))


@app.command()
def hold(run: str = RunArgument, why: Optional[str] = WhyOption, runs_dir: Path = RunsDirOption) -> None:
    """Ask a running supervisor to hold: its policies decide nothing until `lrsup release`."""
    raise typer.Exit(_request(_resolve(run, runs_dir), "hold", why))


@app.command()
def release(run: str = RunArgument, why: Optional[str] = WhyOption, runs_dir: Path = RunsDirOption) -> None:
    """Release a hold: the policies decide again."""
    raise typer.Exit(_request(_resolve(run, runs_dir), "release", why))


@app.command()
def stop(
    run: str = RunArgument,
    timeout: float = typer.Option(120.0, "--timeout", min=0, help="Seconds to wait for the run to finish (0: do not wait)."),
    why: Optional[str] = WhyOption,
    runs_dir: Path = RunsDirOption,
) -> None:
    """Ask a running supervisor to stop the run cleanly, and wait for it to finish."""
    run_dir = _resolve(run, runs_dir)
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
    from lrsup.supervisor.runs import summarize

    summary = summarize(run_dir, scan_best=False)
    if summary.state != "running" or not summary.alive:
        if summary.state == "stale":
            _fail(f"{summary.name} is not running: its supervisor is gone; use `lrsup resume {summary.name}`")
        if summary.state == "running":  # fresh files but no supervisor pid recorded
            _fail(f"{summary.name}: no live supervisor is recorded in supervisor.json; cannot send {op}")
        _fail(f"{summary.name} is not running ({summary.state}); use `lrsup resume {summary.name}` to go on with it")
    try:
        from lrsup.supervisor.operator import send_request
    except ImportError:
        print("lrsup: this lrsup has no operator channel (lrsup.supervisor.operator is missing)", file=sys.stderr)
        return 1
    try:
        answer = send_request(run_dir, op, who=_who(), why=why, **fields)
    except (ValueError, OSError) as err:
        _fail(f"cannot send {op} to {summary.name}: {err}")
    what = f"{op} lr={fields['lr']:.6g}" if "lr" in fields else op
    ref = f" (request {answer})" if isinstance(answer, (int, str)) and not isinstance(answer, bool) else ""
    print(f"lrsup: sent {what} to {summary.name}{ref}")
    return 0


def _wait_finished(run_dir: Path, timeout: float, poll: float = 0.5) -> int:
    import time

    from lrsup.supervisor.runs import summarize

    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 5.0
    while True:
        s = summarize(run_dir, scan_best=False)
        if s.state != "running":
            print(f"lrsup: {s.name} {_state_text(s)}" + (f" (exit status {s.exit_status})" if s.exit_status is not None else ""))
            return 0 if s.finished else 1
        now = time.monotonic()
        if now >= deadline:
            print(f"lrsup: {s.name} still running after {timeout:g} s; the supervisor escalates the stop by itself "
                  f"(check with `lrsup status {s.name}`)", file=sys.stderr)
            return 1
        if now >= next_note:
            next_note = now + 5.0
            print(f"lrsup: waiting for {s.name} to stop (epoch {_epoch_text(s)}, {int(deadline - now)} s left)")
        time.sleep(poll)


# ---------------------------------------------------------------------------
# Resume, replay, report, export


@app.command()
def resume(run: str = typer.Argument(..., metavar="RUN_DIR", help="The run to go on with (a directory or a name prefix)."),
           runs_dir: Path = RunsDirOption) -> None:
    """Go on with a run whose supervisor is gone (from its last checkpoint); exits with the run's status."""
    raise typer.Exit(_resume(_resolve(run, runs_dir)))


def _resume(run_dir: Path) -> int:
    from lrsup.supervisor.runs import summarize

    summary = summarize(run_dir, scan_best=False)
    if summary.state == "running" and summary.alive:
        _fail(f"{summary.name} is running (supervisor pid {summary.pid}); nothing to resume")
    try:
        from lrsup.supervisor.runner import resume as resume_run
    except ImportError:
        print("lrsup: this lrsup cannot resume runs yet (lrsup.supervisor.runner.resume is missing)", file=sys.stderr)
        return 1
    from lrsup.supervisor.rundir import RunDirError

    try:
        return int(resume_run(run_dir))
    except (RunDirError, FileNotFoundError) as err:
        _fail(str(err))


BIG_RUN_BYTES = 50 * 1024 * 1024  # show a progress bar on stderr above this much to read


def _run_bytes(run_dirs: list[Path]) -> int:
    from lrsup.supervisor import protocol

    total = 0
    for d in run_dirs:
        for name in (protocol.METRICS_FILE, protocol.JOURNAL_FILE):
            try:
                total += (d / name).stat().st_size
            except OSError:
                pass
    return total


class _ByteProgress:
    """A rich progress bar on stderr fed by ``callback(done, total)``; a no-op for small runs."""

    def __init__(self, total: int, label: str) -> None:
        self.progress = None
        self.callback: Any = None
        if total > BIG_RUN_BYTES:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=True)
            self.task = self.progress.add_task(label, total=total)
            self.callback = lambda done, total: self.progress.update(self.task, completed=done, total=total)

    def __enter__(self) -> "_ByteProgress":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


@app.command()
def replay(
    run: str = typer.Argument(..., metavar="RUN_DIR", help="The run whose records are replayed (a directory or a name prefix)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Replay under this configuration instead of the run's own."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per decision per line, instead of a table."),
    runs_dir: Path = RunsDirOption,
) -> None:
    """Feed a finished run's records to the policies again and print what they decide (what-if)."""
    raise typer.Exit(_replay(_resolve(run, runs_dir), config, as_json))


def _replay(run_dir: Path, config_path: Path | None, as_json: bool) -> int:
    import inspect
    import json

    resolved = _load_config(config_path, Path.cwd()) if config_path is not None else None
    try:
        from lrsup.supervisor.replay import replay as replay_run
    except ImportError:
        print("lrsup: this lrsup cannot replay runs yet (lrsup.supervisor.replay is missing)", file=sys.stderr)
        return 1
    from lrsup.supervisor import protocol

    size = _run_bytes([run_dir])
    rows: list[dict] = []
    with _ByteProgress(size, "replaying") as bar:
        kwargs: dict[str, Any] = {}
        if bar.callback is not None and "progress" in inspect.signature(replay_run).parameters:
            kwargs["progress"] = bar.callback
        elif bar.progress is not None:
            bar.progress.update(bar.task, total=None)  # no byte counts from replay: a pulsing bar
        try:
            for item in replay_run(run_dir, resolved, **kwargs):
                if as_json:
                    print(protocol.dumps(item) if isinstance(item, dict) else json.dumps(str(item)), flush=False)
                else:
                    rows.append(item)
        except (ValueError, FileNotFoundError) as err:
            _fail(f"cannot replay {run_dir.name}: {err}")
    if as_json:
        sys.stdout.flush()
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if not rows:
        print(f"no decisions when replaying {run_dir.name}")
        return 0
    table = Table(title=f"replay of {run_dir.name}", title_justify="left")
    for column in ("epoch", "step", "policy", "action", "lr", "reason", "suppressed"):
        table.add_column(column, overflow="fold")
    for r in rows:
        epoch = r.get("epoch")
        table.add_row(_fmt(epoch + 1 if isinstance(epoch, int) else epoch), _fmt(r.get("step")),
                      escape(str(r.get("policy") or "")), escape(str(r.get("action") or "")), _fmt(r.get("lr")),
                      escape(str(r.get("reason") or "")), escape(str(r.get("suppressed") or "")))
    Console().print(table)
    return 0


@app.command()
def report(
    runs: List[str] = typer.Argument(..., metavar="RUN [RUN ...]", help="One run (a report) or several (a comparison)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where a comparison of several runs goes (default: .)."),
    runs_dir: Path = RunsDirOption,
) -> None:
    """Write report.md, report.png and report.html into a run directory, or compare several runs."""
    raise typer.Exit(_report([_resolve(r, runs_dir) for r in runs], out))


def _report(run_dirs: list[Path], out: Path | None) -> int:
    from rich.console import Console

    from lrsup.supervisor.report import compare_runs, render_compare_terminal, render_terminal, write_report
    from lrsup.supervisor.runinfo import RunInfoError, load_run

    console = Console()
    try:
        with _ByteProgress(_run_bytes(run_dirs), "reading") as bar:
            if len(run_dirs) == 1:
                if out is not None:
                    _fail("--out is for comparisons of several runs; a report is written into its run directory")
                info = load_run(run_dirs[0], progress=bar.callback)
            else:
                out_dir = Path.cwd() / (out or Path("."))
                out_dir.mkdir(parents=True, exist_ok=True)
                paths = compare_runs(run_dirs, out_dir, progress=bar.callback)
        if len(run_dirs) == 1:
            render_terminal(info, console)
            paths = write_report(run_dirs[0], info=info)
            written = [paths.md, paths.png, paths.html]
        else:
            render_compare_terminal(paths.infos, console)
            written = [paths.md, paths.png]
    except RunInfoError as err:
        _fail(str(err))
    for note in paths.notes:
        print(f"lrsup: note: {note}", file=sys.stderr)
    for path in written:
        if path is not None:
            print(path)
    return 0


@app.command()
def export(
    run: str = RunArgument,
    csv: bool = typer.Option(False, "--csv", help="Write the epochs as CSV (to --out, default <run dir>/epochs.csv)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", metavar="PATH", help="The CSV file to write ('-': stdout)."),
    tensorboard: Optional[Path] = typer.Option(
        None, "--tensorboard", metavar="DIR", help="Write TensorBoard event files under DIR (needs lrsup\\[tensorboard]).",
    ),
    runs_dir: Path = RunsDirOption,
) -> None:
    """Export a run's numbers as CSV and/or TensorBoard event files."""
    if not csv and tensorboard is None:
        _fail("export needs --csv [--out PATH] or --tensorboard DIR")
    if out is not None and not csv:
        _fail("--out is the CSV file: give --csv with it")
    run_dir = _resolve(run, runs_dir)
    raise typer.Exit(_export(run_dir, (out or str(run_dir / "epochs.csv")) if csv else None, tensorboard))


def _export(run_dir: Path, csv: str | None, tensorboard: Path | None) -> int:
    from lrsup.supervisor.export import export_csv, export_tensorboard, write_csv
    from lrsup.supervisor.runinfo import MissingExtraError, RunInfoError, load_run

    try:
        with _ByteProgress(_run_bytes([run_dir]) * (1 + (tensorboard is not None)), "exporting") as bar:
            if csv == "-":
                write_csv(load_run(run_dir, progress=bar.callback), sys.stdout)
            elif csv is not None:
                target = Path(csv)
                if not target.parent.is_dir():
                    _fail(f"cannot write {str(target)!r}: {str(target.parent)!r} is not a directory")
                print(export_csv(run_dir, target, progress=bar.callback))
            if tensorboard is not None:
                files = export_tensorboard(run_dir, tensorboard, progress=bar.callback)
                print(f"{tensorboard} ({len(files)} event files; view with: tensorboard --logdir {tensorboard})")
    except MissingExtraError as err:
        print(f"lrsup: {err}", file=sys.stderr)
        return 1
    except RunInfoError as err:
        _fail(str(err))
    except OSError as err:
        _fail(f"cannot export {run_dir.name}: {err}")
    return 0


def main() -> None:
    """Console-script entry point."""
    app(prog_name="lrsup")


if __name__ == "__main__":
    main()
