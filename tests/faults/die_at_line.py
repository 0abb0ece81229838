"""Supervise a run and SIGKILL the supervisor right after it wrote a given kind of line (a test hook).

    python tests/faults/die_at_line.py KEY=VALUE run RUN_DIR train.py [ARGS...]   # in the directory of lrsup.toml
    python tests/faults/die_at_line.py - resume RUN_DIR

The first line appended to control.jsonl or journal.jsonl (``Appender.write_line``) whose
JSON object has ``KEY`` equal to ``VALUE`` (``cmd=rollback``, ``op=exploit``) is written whole,
then the process is killed with SIGKILL, as in die_at_write.py. ``-``: never.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def install(key: str, value: str) -> None:
    from lrsup.supervisor.protocol import jsonl

    write = jsonl.Appender.write_line

    def wrapper(self, data: bytes) -> None:
        write(self, data)
        try:
            obj = json.loads(data)
        except ValueError:
            return
        if isinstance(obj, dict) and obj.get(key) == value:
            os.kill(os.getpid(), signal.SIGKILL)

    jsonl.Appender.write_line = wrapper


def main() -> int:
    spec, command, run_dir, *rest = sys.argv[1:]
    if spec != "-":
        key, value = spec.split("=", 1)
        install(key, value)
    from lrsup.supervisor.run import runner

    if command == "resume":
        return runner.resume(run_dir, report=False)
    from lrsup.supervisor.config import load_config
    from lrsup.supervisor.rundir.layout import RunDir

    script, args = Path(rest[0]), rest[1:]
    directory = RunDir.prepare(Path(run_dir), script=script, cwd=Path.cwd())
    return runner.run(load_config(None, Path.cwd()), script=script, args=args, run_dir=directory, report=False)


if __name__ == "__main__":
    sys.exit(main())
