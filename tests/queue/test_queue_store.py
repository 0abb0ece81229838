"""The SQLite queue: guarded changes of state, order, groups, several writers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lrsup.supervisor.queue.store import NewEntry, QueueStore, Status


@pytest.fixture
def store(tmp_path: Path):
    s = QueueStore.open(tmp_path)
    yield s
    s.close()


def test_priority_then_arrival(store: QueueStore) -> None:
    low = store.add(NewEntry("a.py"))
    high = store.add(NewEntry("b.py", priority=5))
    low2 = store.add(NewEntry("c.py"))
    assert [e.id for e in store.next_queued()] == [high, low, low2]


def test_claim_only_once_and_finish_only_running(store: QueueStore) -> None:
    i = store.add(NewEntry("a.py", args=["--lr", "0.1"], group="g", params={"lr": 0.1}))
    assert store.claim(i, run_dir="runs/q1", gpus="0")
    assert not store.claim(i, run_dir="runs/q1", gpus="0")  # a second daemon, or a race: refused
    entry = store.get(i)
    assert entry is not None
    assert (entry.status, entry.run_dir, entry.assigned_gpus, entry.starts) == (Status.RUNNING, "runs/q1", "0", 1)
    assert entry.args == ["--lr", "0.1"] and entry.params == {"lr": 0.1}
    assert store.finish(i, Status.FAILED, exit_status=1, reason="crashed")
    assert not store.finish(i, Status.DONE, exit_status=0, reason="again")
    assert store.get(i).to_json()["status"] == "failed"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="status must be"):
        store.finish(i, Status.QUEUED, exit_status=None, reason="x")


def test_cancel_by_id_and_group_leaves_running(store: QueueStore) -> None:
    a = store.add(NewEntry("a.py", group="g"))
    b = store.add(NewEntry("b.py", group="g"))
    c = store.add(NewEntry("c.py", group="h"))
    store.claim(a, run_dir="runs/q1", gpus=None)
    assert store.cancel(group="g") == [b]
    assert store.get(a).status is Status.RUNNING  # type: ignore[union-attr]
    assert store.cancel(c) == [c]
    assert not store.claim(c, run_dir="runs/q3", gpus=None)
    assert store.groups() == ["g", "h"]
    assert [e.id for e in store.entries(group="g")] == [a, b]


ADDER = """
import sys
from pathlib import Path
from lrsup.supervisor.queue.store import NewEntry, QueueStore
s = QueueStore.open(Path(sys.argv[1]))
for i in range(25):
    s.add(NewEntry("x.py", name=f"{sys.argv[2]}-{i}"))
"""


def test_several_processes_add_at_once(tmp_path: Path, store: QueueStore) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", ADDER, str(tmp_path), str(n)]) for n in range(4)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    names = sorted(e.name or "" for e in store.entries())
    assert len(names) == 100 and len(set(names)) == 100
