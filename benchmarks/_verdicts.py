"""A minimal supervisor stand-in for the overhead benchmark: answers every epoch and start record with a verdict.

Runs as its own process (as the real supervisor does), follows metrics.jsonl with watchdog
(inotify) and writes ``verdict`` commands to control.jsonl, so starts and epoch ends never wait out
``verdict_timeout``. Stops when ``<run_dir>/stop-answerer`` exists.

    python -m benchmarks._verdicts RUN_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(run_dir: str) -> int:
    from lrsup.supervisor import protocol
    from lrsup.supervisor.protocol.doorbell import BELL_FILE, ControlWriter
    from lrsup.supervisor.protocol.jsonl import iter_objects
    from lrsup.supervisor.protocol.wire import EpochRecord, StartRecord
    from lrsup.supervisor.run.follower import Follower

    root = Path(run_dir)
    stop = root / "stop-answerer"
    control = ControlWriter(root / protocol.CONTROL_FILE, root / BELL_FILE)  # rings the bell, as the runner's
    # as a resumed supervisor does: go on from the commands already written, and answer only new records
    seq = max((obj.get("seq", 0) for obj in iter_objects(root / protocol.CONTROL_FILE)), default=0)
    metrics = root / protocol.METRICS_FILE
    offset = metrics.stat().st_size if metrics.exists() else 0
    (root / "answerer-ready").write_text("1")
    with Follower(metrics, use_watchdog=True, poll_interval=0.01, offset=offset) as follower:
        while not stop.exists():
            follower.wait(0.2)
            for record in follower.read():
                # as the runner does: a verdict for each epoch record, and one for each start record
                # (the start barrier, epoch = initial_epoch - 1) where the agent waits for it
                epoch = (
                    record.epoch
                    if isinstance(record, EpochRecord)
                    else (record.initial_epoch - 1 if isinstance(record, StartRecord) else None)
                )
                if epoch is not None:
                    seq += 1
                    control.write(protocol.make_command(seq, "verdict", time=time.time(), epoch=epoch))
    control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
