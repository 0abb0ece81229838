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

This module is the entry point (``lrsup.supervisor.cli.main:main``, ``python -m
lrsup.supervisor.cli.main``). The app is ``cli_app.app``; the commands are registered on it by
importing their modules, in the order ``--help`` lists them: ``cli_run`` (run, lr-find),
``cli_policies``, ``cli_runs`` (ls, status), ``cli_watch`` (logs, watch), ``cli_operator``
(set-lr, hold, release, stop, resume) and ``cli_reports`` (replay, report, export).
"""

from __future__ import annotations

from lrsup.supervisor.cli import operator as cli_operator  # noqa: F401
from lrsup.supervisor.cli import policies as cli_policies  # noqa: F401
from lrsup.supervisor.cli import queue as cli_queue  # noqa: F401
from lrsup.supervisor.cli import reports as cli_reports  # noqa: F401

# Registration order is the order of the commands in --help.
from lrsup.supervisor.cli import run as cli_run  # noqa: F401, I001
from lrsup.supervisor.cli import runs as cli_runs  # noqa: F401
from lrsup.supervisor.cli import watch as cli_watch  # noqa: F401
from lrsup.supervisor.cli.app import EXIT_USAGE, app

__all__ = ["EXIT_USAGE", "app", "main"]


def main() -> None:
    """Console-script entry point."""
    app(prog_name="lrsup")


if __name__ == "__main__":
    main()
