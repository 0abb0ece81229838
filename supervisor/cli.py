"""The ``lrsup`` command line: thin typed commands around private functions.

Usage::

    lrsup run train.py -- --epochs 30         # everything after the script goes to it
    lrsup run --config lrsup.toml train.py
    lrsup run --run-dir runs/night-1 train.py
    lrsup policies
    lrsup --version

Importing this module is cheap: rich, pydantic (the configuration), watchdog and
the runner are imported inside the commands, and keras or tensorflow never (the
trainer imports them, in its own process). Start-up errors (a missing script, an
invalid configuration, an unusable run directory) are one message on stderr and
exit status 2, with no traceback and no run directory left behind.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn, Optional

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
) -> None:
    """Run SCRIPT under supervision. Arguments after the script (or after --) are passed to it."""
    args = list(ctx.args)
    if args[:1] == ["--"]:
        args = args[1:]
    raise typer.Exit(_run(script, args, config, run_dir))


@app.command()
def policies() -> None:
    """List the installed policies with their settings and defaults."""
    raise typer.Exit(_policies())


def _run(script: Path, args: list[str], config_path: Path | None, run_dir: Path | None) -> int:
    """Validate everything, then supervise; the exit status of the run (2 for bad input)."""
    cwd = Path.cwd()
    script_path = Path(cwd, script)
    if not script_path.is_file():
        why = "is a directory, not a script" if script_path.is_dir() else "not found"
        _fail(f"script {str(script)!r} {why}")

    from lrsup.supervisor.config import ConfigError, load_config
    from lrsup.supervisor.rundir import RunDir, RunDirError

    try:
        config = load_config(config_path, cwd)
    except ConfigError as err:
        bullets = "".join(f"\n  - {problem}" for problem in err.problems)
        _fail(f"{err.source}: invalid configuration{bullets}")
    try:
        prepared = RunDir.prepare(run_dir, script=script, cwd=cwd)
    except RunDirError as err:
        _fail(str(err))

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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="lrsup")


if __name__ == "__main__":
    main()
