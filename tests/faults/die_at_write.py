"""Supervise a run and SIGKILL the supervisor right after its Nth write to the run directory (a test hook).

    python tests/faults/die_at_write.py N run RUN_DIR train.py [ARGS...]   # in the directory of lrsup.toml
    python tests/faults/die_at_write.py 0 resume RUN_DIR

Counted writes: every line appended to control.jsonl or journal.jsonl (``Appender.write_line``)
and every replacement of supervisor.json or snapshot.json (``write_state``). The Nth write
is done whole, then the process is killed with SIGKILL: no cleanup, no finally, as when the
machine's OOM killer picks it. ``N = 0`` counts only. On a normal exit the count is printed
on stderr as ``die_at_write: W writes``, so a test can try every N from 1 to W.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def install(limit: int) -> list[int]:
    """Patch the writers; returns the one-element counter."""
    from lrsup.supervisor.protocol import jsonl
    from lrsup.supervisor.run import runner
    from lrsup.supervisor.rundir import snapshot, statefile

    count = [0]

    def counted(write):
        def wrapper(*args, **kwargs):
            result = write(*args, **kwargs)
            count[0] += 1
            if count[0] == limit:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return wrapper

    jsonl.Appender.write_line = counted(jsonl.Appender.write_line)
    write_state = counted(statefile.write_state)
    for module in (statefile, runner, snapshot):
        module.write_state = write_state
    return count


def main() -> int:
    limit, command, run_dir, *rest = sys.argv[1:]
    count = install(limit=int(limit))
    from lrsup.supervisor.run import runner

    if command == "resume":
        status = runner.resume(run_dir, report=False)
    else:
        from lrsup.supervisor.config import load_config
        from lrsup.supervisor.rundir.layout import RunDir

        script, args = Path(rest[0]), rest[1:]
        directory = RunDir.prepare(Path(run_dir), script=script, cwd=Path.cwd())
        status = runner.run(load_config(None, Path.cwd()), script=script, args=args, run_dir=directory, report=False)
    print(f"die_at_write: {count[0]} writes", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
