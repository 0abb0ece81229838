"""The scheduler as a state machine: fake supervisors, a real SQLite queue, no processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrsup.supervisor.queue.daemon import STARTUP_GRACE, Scheduler
from lrsup.supervisor.queue.store import NewEntry, QueueStore, Status
from tests.queue.fakes import FakeSpawner


class WallClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def store(tmp_path: Path, wall: WallClock):
    s = QueueStore.open(tmp_path / "runs", clock=wall)
    yield s
    s.close()


def scheduler(store: QueueStore, spawner: FakeSpawner, tmp_path: Path, **kw) -> Scheduler:
    events: list[tuple[str, int, str]] = []
    sched = Scheduler(store, spawner, tmp_path / "runs", emit=lambda e, entry, d: events.append((e, entry.id, d)), **kw)
    sched.events = events  # type: ignore[attr-defined]
    return sched


def statuses(store: QueueStore) -> list[str]:
    return [e.status.value for e in store.entries()]


def test_never_more_than_slots_and_priority_then_arrival(store: QueueStore, tmp_path: Path) -> None:
    ids = [store.add(NewEntry(f"s{i}.py", priority=1 if i == 4 else 0)) for i in range(6)]
    spawner = FakeSpawner()
    sched = scheduler(store, spawner, tmp_path, slots=2)
    order: list[int] = []
    for step in range(20):
        sched.tick(float(step))
        assert len(spawner.running()) <= 2
        order += [s.entry_id for s in spawner.running() if s.entry_id not in order]
        if spawner.running():
            spawner.finish(spawner.running()[0])
    assert sched.idle() and sched.peak == 2
    assert order == [ids[4], ids[0], ids[1], ids[2], ids[3], ids[5]]
    assert statuses(store) == ["done"] * 6
    assert all(e.run_dir and Path(e.run_dir).name == f"q{e.id}-s{e.id - 1}" for e in store.entries())


def test_gpus_one_run_each_never_shared(store: QueueStore, tmp_path: Path) -> None:
    for i in range(4):
        store.add(NewEntry(f"s{i}.py"))
    spawner = FakeSpawner()
    sched = scheduler(store, spawner, tmp_path, slots=4, gpus=["0", "1", "2"])
    sched.tick(0.0)
    visible = [s.env["CUDA_VISIBLE_DEVICES"] for s in spawner.running()]
    assert visible == ["0", "1", "2"]  # the fourth waits although a slot is free
    spawner.finish(spawner.running()[1])
    sched.tick(1.0)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in spawner.running()] == ["0", "2", "1"]
    assert store.get(4).assigned_gpus == "1"  # type: ignore[union-attr]


def test_gpus_shared_when_asked_and_multi_gpu_runs(store: QueueStore, tmp_path: Path) -> None:
    big = store.add(NewEntry("big.py", gpus=2))
    cpu = store.add(NewEntry("cpu.py", gpus=0))
    huge = store.add(NewEntry("huge.py", gpus=3))
    small = [store.add(NewEntry(f"s{i}.py")) for i in range(2)]
    spawner = FakeSpawner()
    sched = scheduler(store, spawner, tmp_path, slots=5, gpus=["0", "1"], per_gpu=2)
    sched.tick(0.0)
    env = {s.entry_id: s.env["CUDA_VISIBLE_DEVICES"] for s in spawner.running()}
    assert env == {big: "0,1", cpu: "", small[0]: "0", small[1]: "1"}
    failed = store.get(huge)
    assert failed.status is Status.FAILED and "needs 3 GPU(s); this machine has 2" in (failed.reason or "")  # type: ignore[union-attr]


def test_without_gpus_cuda_visible_devices_is_left_alone(store: QueueStore, tmp_path: Path) -> None:
    store.add(NewEntry("a.py"))
    gpu = store.add(NewEntry("b.py", gpus=1))
    spawner = FakeSpawner()
    scheduler(store, spawner, tmp_path, slots=2).tick(0.0)
    assert "CUDA_VISIBLE_DEVICES" not in spawner.running()[0].env
    assert store.get(gpu).status is Status.FAILED  # type: ignore[union-attr]


def test_a_failed_run_does_not_stop_the_night(store: QueueStore, tmp_path: Path) -> None:
    for i in range(3):
        store.add(NewEntry(f"s{i}.py"))
    spawner = FakeSpawner()
    sched = scheduler(store, spawner, tmp_path)
    sched.tick(0.0)
    spawner.finish(spawner.running()[0], 3, "gave up: diverged 5 times")
    for step in range(1, 5):
        sched.tick(float(step))
        for sup in spawner.running():
            spawner.finish(sup)
    first = store.get(1)
    assert statuses(store) == ["failed", "done", "done"]
    assert (first.exit_status, first.reason) == (3, "gave up: diverged 5 times")  # type: ignore[union-attr]


def test_a_dead_supervisor_is_resumed_then_given_up(store: QueueStore, tmp_path: Path) -> None:
    store.add(NewEntry("a.py"))
    spawner = FakeSpawner()
    sched = scheduler(store, spawner, tmp_path, max_starts=3)
    sched.tick(0.0)
    for step in range(1, 4):
        spawner.die(spawner.running()[0], lost="node-2" if step == 1 else None)
        sched.tick(float(step))
    assert [s.kind for s in spawner.launched] == ["start", "resume", "resume"]
    entry = store.get(1)
    assert entry.status is Status.FAILED and "gave up after 3 supervisors" in (entry.reason or "")  # type: ignore[union-attr]
    assert ("resuming", 1, "node node-2 was lost") in sched.events  # type: ignore[attr-defined]


def test_drain_stops_running_and_starts_nothing(store: QueueStore, tmp_path: Path) -> None:
    for i in range(3):
        store.add(NewEntry(f"s{i}.py"))
    spawner = FakeSpawner()
    sched = scheduler(store, spawner, tmp_path, slots=2)
    sched.tick(0.0)
    sched.drain()
    assert all(s.stopped for s in spawner.running())
    for sup in spawner.running():
        spawner.finish(sup, 130, "interrupted by the user (SIGTERM)")
    sched.tick(1.0)
    assert sched.idle() and statuses(store) == ["cancelled", "cancelled", "queued"]


def test_drain_with_finish_lets_them_end(store: QueueStore, tmp_path: Path) -> None:
    store.add(NewEntry("a.py"))
    store.add(NewEntry("b.py"))
    spawner = FakeSpawner()
    sched = scheduler(store, spawner, tmp_path)
    sched.tick(0.0)
    sched.drain(finish=True)
    assert not spawner.running()[0].stopped
    spawner.finish(spawner.running()[0])
    sched.tick(1.0)
    assert sched.idle() and statuses(store) == ["done", "queued"]


def test_recover_adopts_settles_resumes_and_starts(store: QueueStore, tmp_path: Path, wall: WallClock) -> None:
    """A daemon died with four runs in flight; the next one starts none of them twice."""
    for i in range(5):
        store.add(NewEntry(f"s{i}.py"))
    first = FakeSpawner()
    scheduler(store, first, tmp_path, slots=4).tick(0.0)
    alive, finished, dead, unborn = first.launched
    first.finish(finished)  # ended while no daemon watched
    del first.states[unborn.run_dir]  # claimed, but its supervisor never wrote supervisor.json
    second = FakeSpawner()
    second.states = dict(first.states)
    second.live[alive.run_dir] = alive
    sched = scheduler(store, second, tmp_path, slots=4)
    sched.recover(0.0)
    sched.tick(0.0)
    assert [(s.entry_id, s.kind) for s in second.launched] == [(dead.entry_id, "resume"), (5, "start")]
    assert store.get(finished.entry_id).status is Status.DONE  # type: ignore[union-attr]
    wall.now += STARTUP_GRACE + 1  # the unborn one gets its start only after the grace
    sched.tick(1.0)
    assert [(s.entry_id, s.kind) for s in second.launched][2:] == [(unborn.entry_id, "start")]
    for sup in [alive, *second.running()]:
        second.finish(sup)
    sched.tick(2.0)
    assert statuses(store) == ["done"] * 5 and sched.idle()
    assert [e.starts for e in store.entries()] == [1, 1, 2, 2, 1]


def test_cancelled_while_queued_is_never_started(store: QueueStore, tmp_path: Path) -> None:
    store.add(NewEntry("a.py"))
    b = store.add(NewEntry("b.py"))
    spawner = FakeSpawner()
    sched = scheduler(store, spawner, tmp_path)
    sched.tick(0.0)
    store.cancel(b)
    spawner.finish(spawner.running()[0])
    sched.tick(1.0)
    assert len(spawner.launched) == 1 and statuses(store) == ["done", "cancelled"] and sched.idle()


def test_slots_are_checked() -> None:
    with pytest.raises(ValueError, match="slots=0"):
        Scheduler(None, None, Path("."), slots=0)  # type: ignore[arg-type]


def test_on_ray_gpus_are_left_to_ray(store: QueueStore, tmp_path: Path) -> None:
    store.add(NewEntry("a.py", gpus=2))
    spawner = FakeSpawner()
    scheduler(store, spawner, tmp_path, place_gpus=False).tick(0.0)
    assert len(spawner.running()) == 1 and "CUDA_VISIBLE_DEVICES" not in spawner.running()[0].env


def test_a_parked_run_frees_its_slot_and_is_unparked_longest_parked_first_once_nothing_queued_fits(
    store: QueueStore, tmp_path: Path
) -> None:
    ids = [store.add(NewEntry(f"m{i}.py", group="g")) for i in range(4)]
    spawner = FakeSpawner()
    sched = scheduler(store, spawner, tmp_path, slots=2)
    sched.tick(0.0)
    first, second = spawner.running()
    assert [s.entry_id for s in (first, second)] == ids[:2]
    spawner.park(second)  # its population parked it at a boundary: no trainer, the slot is free
    sched.tick(1.0)
    assert [s.entry_id for s in spawner.running()] == [ids[0], ids[1], ids[2]] and sched.peak == 2
    spawner.park(first)
    sched.tick(2.0)  # the last queued one starts; nothing else may
    assert [s.entry_id for s in spawner.running()][-1] == ids[3] and not spawner.requests
    third, fourth = spawner.running()[2:]
    spawner.park(third)
    sched.tick(3.0)  # nothing queued: the run parked longest (the second, at 1.0) gets the slot
    assert spawner.requests == [(second.run_dir, "unpark")]
    sched.tick(4.0)  # sent, not taken yet: it holds the slot, nothing more is unparked
    assert spawner.requests == [(second.run_dir, "unpark")]
    spawner.park(second, parked=False)  # its supervisor started a new attempt
    spawner.finish(fourth)
    sched.tick(5.0)
    assert spawner.requests[1:] == [(first.run_dir, "unpark")]
    assert [e for e, i, _ in sched.events if i == ids[1]] == ["started", "parked", "unparking"]
    for sup in (first, second, third):
        spawner.park(sup, parked=False)
        spawner.finish(sup)
    sched.tick(6.0)
    assert sched.idle() and statuses(store) == ["done"] * 4 and sched.peak == 2


def test_a_parked_run_goes_back_only_to_its_own_gpus(store: QueueStore, tmp_path: Path) -> None:
    for i in range(3):
        store.add(NewEntry(f"m{i}.py", group="g"))
    spawner = FakeSpawner()
    sched = scheduler(store, spawner, tmp_path, slots=2, gpus=["0", "1"])
    sched.tick(0.0)
    on0, on1 = spawner.running()
    spawner.park(on0)
    sched.tick(1.0)  # GPU 0 is free while its run is parked: the third run takes it
    third = spawner.running()[2]
    assert third.env["CUDA_VISIBLE_DEVICES"] == "0"
    spawner.park(on1)
    sched.tick(2.0)  # a slot is free on GPU 1, but the run parked longest needs GPU 0: GPU 1's own run goes
    assert spawner.requests == [(on1.run_dir, "unpark")]


def test_draining_with_finish_still_gives_parked_runs_their_turn_and_stopping_unparks_none(
    store: QueueStore, tmp_path: Path
) -> None:
    for i in range(3):
        store.add(NewEntry(f"m{i}.py", group="g"))
    spawner = FakeSpawner()
    sched = scheduler(store, spawner, tmp_path, slots=2)
    sched.tick(0.0)
    first, second = spawner.running()
    spawner.park(first)
    sched.tick(1.0)  # the third starts in the parked run's slot
    sched.drain(finish=True)
    spawner.finish(second)
    sched.tick(2.0)  # nothing new starts, but the parked run is an old one: it gets the free slot
    assert spawner.requests == [(first.run_dir, "unpark")] and len(spawner.launched) == 3
    spawner.park(first, parked=False)
    for sup in spawner.running():
        spawner.finish(sup)
    sched.tick(3.0)
    assert sched.idle() and statuses(store) == ["done"] * 3
    # a drain that stops runs sends no unpark: the parked run is stopped with the rest
    store2 = QueueStore.open(tmp_path / "runs2")
    for i in range(3):
        store2.add(NewEntry(f"n{i}.py", group="h"))
    spawner2 = FakeSpawner()
    sched2 = scheduler(store2, spawner2, tmp_path / "two", slots=2)
    sched2.tick(0.0)
    spawner2.park(spawner2.running()[0])
    sched2.tick(1.0)
    sched2.drain()
    spawner2.finish(spawner2.running()[1])
    sched2.tick(2.0)
    assert spawner2.requests == [] and all(s.stopped for s in spawner2.running())
    store2.close()
