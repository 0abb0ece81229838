"""``queue run``'s loop in-process: fake supervisors, the journal, the end notification, the lock."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lrsup.supervisor.config import NotifySettings
from lrsup.supervisor.queue.daemon import Ended, RunState
from lrsup.supervisor.queue.night import DaemonLock, QueueBusyError, QueueOptions, run_queue
from lrsup.supervisor.queue.store import NewEntry, QueueStore, queue_dir
from tests.queue.fakes import FakeSpawner, FakeSupervisor


class QuickSpawner(FakeSpawner):
    """Supervisors that end at their first poll: exit 1 for scripts named fail*.py, else 0."""

    def _launch(self, entry, run_dir, env, kind) -> FakeSupervisor:
        sup = super()._launch(entry, run_dir, env, kind)
        code = 1 if entry.script.startswith("fail") else 0
        self.states[Path(run_dir)] = RunState(True, code, "crashed" if code else "training completed")
        sup.result = Ended(code)
        return sup


def test_the_loop_runs_the_queue_and_notifies_the_end(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    store = QueueStore.open(runs)
    for script in ("a.py", "fail.py", "b.py"):
        store.add(NewEntry(script, group="g"))
    store.close()
    out = tmp_path / "notified.json"
    command = f"{sys.executable} -c \"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())\""
    options = QueueOptions(runs, slots=2, notify=NotifySettings(command=command), poll_interval=0.0)
    assert run_queue(options, QuickSpawner(), out=None) == 0
    body = json.loads(out.read_text())
    assert body["event"] == "end" and body["queue"] is True
    assert body["counts"] == {"queued": 0, "running": 0, "done": 2, "failed": 1, "cancelled": 0}
    events = [json.loads(line)["event"] for line in (queue_dir(runs) / "daemon.jsonl").read_text().splitlines()]
    assert events[0] == "daemon_started" and events[-1] == "daemon_ended"
    assert events.count("started") == 3 and events.count("failed") == 1


def test_one_daemon_per_queue(tmp_path: Path) -> None:
    first = DaemonLock(tmp_path / "daemon.lock")
    first.acquire()
    try:
        with pytest.raises(QueueBusyError, match="another lrsup queue run"):
            DaemonLock(tmp_path / "daemon.lock").acquire()
    finally:
        first.release()
    again = DaemonLock(tmp_path / "daemon.lock")
    again.acquire()  # released: free again
    again.release()
