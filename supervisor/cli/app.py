"""The ``lrsup`` typer app and what its commands share.

Owns ``app`` (the typer application, its ``--version`` callback), ``fail`` (one message
on stderr, exit status 2), the RUN argument and ``--runs-dir`` option with ``resolve``,
``load_config`` (a configuration error as one bullet per problem), and the script checks
of ``run``/``lr-find`` (``script_args``, ``check_script``). The commands themselves are
in the ``cli_*`` modules, registered on ``app`` when ``lrsup.supervisor.cli.main`` imports them.

Cheap to import: typer and the protocol's constants only; everything else is imported inside the functions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import typer

from lrsup import __version__
from lrsup.supervisor.protocol.wire import EXIT_USAGE

app = typer.Typer(
    name="lrsup",
    help="Supervise a Keras training script: learning-rate policies from outside the training process.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: flags read "-d, --detach", without the "<bool>" typer's rich panels put after them.
    rich_markup_mode=None,
)


def fail(message: str) -> NoReturn:
    """Print ``lrsup: message`` on stderr and exit with status 2 (bad input; no traceback)."""
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


def script_args(ctx: typer.Context) -> list[str]:
    """The arguments after SCRIPT, for the script (a leading ``--`` dropped)."""
    args = list(ctx.args)
    if args[:1] == ["--"]:
        args = args[1:]
    return args


def check_script(script: Path, cwd: Path) -> None:
    """Exit 2 unless ``script`` (relative to ``cwd``) is a file."""
    script_path = Path(cwd, script)
    if not script_path.is_file():
        why = "is a directory, not a script" if script_path.is_dir() else "not found"
        fail(f"script {str(script)!r} {why}")


def load_config(config_path: Path | None, cwd: Path) -> Any:
    """The validated configuration (``config.load_config``); exit 2 listing its problems."""
    from lrsup.supervisor.config import ConfigError
    from lrsup.supervisor.config import load_config as load

    try:
        return load(config_path, cwd)
    except ConfigError as err:
        bullets = "".join(f"\n  - {problem}" for problem in err.problems)
        fail(f"{err.source}: invalid configuration{bullets}")


RunsDirOption = typer.Option(Path("runs"), "--runs-dir", help="Where runs are looked up by name (default: ./runs).")
RunArgument = typer.Argument(
    ..., metavar="RUN", help="A run directory, or an unambiguous prefix of a run name in --runs-dir."
)


def resolve(ref: str, runs_dir: Path) -> Path:
    """A RUN argument as a run directory; exit 2 when it names none or several."""
    from lrsup.supervisor.history.runs import RunRefError, resolve_run

    try:
        return resolve_run(ref, runs_dir)
    except RunRefError as err:
        fail(str(err))
