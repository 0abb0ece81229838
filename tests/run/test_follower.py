"""Follower: incremental, torn-line-safe, garbage-tolerant reading in its three wake-up modes."""

from __future__ import annotations

import os
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrsup.supervisor import protocol
from lrsup.supervisor.protocol.wire import BatchRecord, EpochRecord, StartRecord
from lrsup.supervisor.run import inotify
from lrsup.supervisor.run.follower import Follower

MODES = [
    pytest.param(
        {}, id="inotify", marks=pytest.mark.skipif(not inotify.available(), reason="no inotify on this system")
    ),
    pytest.param({"use_inotify": False}, id="watchdog"),
    pytest.param({"use_watchdog": False}, id="polling"),
]


def mode_of(options: dict) -> str:
    if not options.get("use_watchdog", True):
        return "polling"
    return "inotify" if options.get("use_inotify", True) else "watchdog"


def line(record) -> bytes:
    return (protocol.dumps(record.to_json()) + "\n").encode()


def append(path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


EPOCH = EpochRecord(time=1.0, epoch=2, step=30, lr=0.01, logs={"loss": 0.5, "val_loss": float("nan")})
START = StartRecord(time=0.5, pid=42, optimizer="SGD", lr=0.1, epochs=3, steps_per_epoch=10)
BATCH = BatchRecord(time=2.0, epoch=3, batch=4, step=34, lr=0.01, logs={"loss": 0.4})


def test_reads_only_new_records(tmp_path):
    path = tmp_path / "metrics.jsonl"
    f = Follower(path, use_watchdog=False)
    append(path, line(START))
    assert f.read() == [START]
    assert f.read() == []
    append(path, line(BATCH))
    assert f.read() == [BATCH]
    assert f.stats.records == 2 and f.stats.garbage == 0


def test_nan_metrics_survive(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append(path, line(EPOCH))
    (record,) = Follower(path, use_watchdog=False).read()
    assert record.epoch == 2 and record.logs["loss"] == 0.5 and record.logs["val_loss"] != record.logs["val_loss"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_line_split_at_any_byte_is_read_once_whole(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("split") / "metrics.jsonl"
    payload = line(BATCH) + line(EPOCH.__class__(time=3.0, epoch=1, step=9, lr=None, logs={"µ": 1.0}))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(payload) - 1), max_size=4)))
    follower = Follower(path, use_watchdog=False)
    got = []
    start = 0
    for cut in [*cuts, len(payload)]:
        append(path, payload[start:cut])
        start = cut
        got.extend(follower.read())
    assert [r.type for r in got] == ["batch", "epoch"]
    assert got[0] == BATCH and got[1].logs == {"µ": 1.0}
    assert follower.stats.garbage == 0


def test_every_single_byte_split_point(tmp_path):
    path = tmp_path / "metrics.jsonl"
    payload = line(BATCH)
    for cut in range(1, len(payload)):
        path.write_bytes(b"")
        follower = Follower(path, use_watchdog=False)
        append(path, payload[:cut])
        assert follower.read() == []
        append(path, payload[cut:])
        assert follower.read() == [BATCH], cut


GARBAGE = {
    "bad json": b'{"v":1,"type":"batch",\n',
    "not an object": b"[1,2,3]\n",
    "wrong type": b'{"v":1,"type":"batch","epoch":"one","step":3}\n',
    "bool for int": b'{"v":1,"type":"batch","epoch":true,"step":3}\n',
    "unknown type": b'{"v":1,"type":"mystery"}\n',
    "unknown field": b'{"v":1,"type":"heartbeat","step":1,"extra":2}\n',
    "wrong version": b'{"v":99,"type":"heartbeat","step":1}\n',
    "not utf-8": b'{"v":1,"type":"\xff\xfe"}\n',
    "missing field": b'{"v":1,"type":"epoch","epoch":1}\n',
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_is_skipped_and_counted(tmp_path, kind):
    path = tmp_path / "metrics.jsonl"
    append(path, line(BATCH) + GARBAGE[kind] + b"\n   \n" + line(BATCH))
    follower = Follower(path, use_watchdog=False)
    assert follower.read() == [BATCH, BATCH]
    assert follower.stats.garbage == 1
    assert len(follower.stats.last_errors) == 1


def test_last_errors_keeps_the_newest_five(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append(path, b"".join(f'{{"v":1,"type":"t{i}"}}\n'.encode() for i in range(8)))
    follower = Follower(path, use_watchdog=False)
    assert follower.read() == []
    assert follower.stats.garbage == 8
    assert list(follower.stats.last_errors)[-1].endswith("'t7'")
    assert len(follower.stats.last_errors) == 5


def test_overlong_line_skipped_in_pieces(tmp_path):
    path = tmp_path / "metrics.jsonl"
    follower = Follower(path, use_watchdog=False)
    big = b'{"v":1,"type":"heartbeat","step":1,"x":"' + b"a" * (protocol.MAX_LINE_BYTES + 10)
    append(path, line(BATCH) + big[: len(big) // 2])
    assert follower.read() == [BATCH]
    append(path, big[len(big) // 2 :] + b'"}\n' + line(BATCH))
    assert follower.read() == [BATCH]
    assert follower.stats.overlong == 1 and follower.stats.garbage == 1


def test_missing_file_then_appears(tmp_path):
    path = tmp_path / "metrics.jsonl"
    follower = Follower(path, use_watchdog=False)
    assert follower.read() == []
    assert follower.wait(0.05) is False
    append(path, line(BATCH))
    assert follower.wait(1.0) is True
    assert follower.read() == [BATCH]


def test_truncated_or_replaced_file_is_read_from_start(tmp_path):
    path = tmp_path / "metrics.jsonl"
    follower = Follower(path, use_watchdog=False)
    append(path, line(BATCH) + line(BATCH))
    assert len(follower.read()) == 2
    tmp = tmp_path / "new"
    tmp.write_bytes(line(EPOCH.__class__(epoch=0, step=1)))
    os.replace(tmp, path)
    assert [r.type for r in follower.read()] == ["epoch"]
    assert follower.stats.restarts == 1


def test_bad_poll_interval_refused():
    with pytest.raises(ValueError, match="poll_interval must be > 0, got 0"):
        Follower("x", poll_interval=0)


@pytest.mark.parametrize("options", MODES)
def test_wait_wakes_on_append_from_another_thread(tmp_path, options):
    path = tmp_path / "metrics.jsonl"
    with Follower(path, poll_interval=0.02, **options) as follower:
        assert follower.mode == mode_of(options)
        writer = threading.Timer(0.2, append, args=(path, line(StartRecord(pid=1))))
        writer.start()
        t0 = time.monotonic()
        got = []
        while not got and time.monotonic() - t0 < 5:
            follower.wait(5.0)
            got = follower.read()
        writer.join()
        assert [r.type for r in got] == ["start"]
        assert time.monotonic() - t0 < 4, "wait() did not wake on the append"


@pytest.mark.parametrize("options", MODES)
def test_wait_times_out_when_nothing_changes(tmp_path, options):
    path = tmp_path / "metrics.jsonl"
    append(path, line(BATCH))
    with Follower(path, poll_interval=0.02, **options) as follower:
        follower.read()
        follower.wait(0.05)  # may report a stale event from the append above
        t0 = time.monotonic()
        assert follower.wait(0.2) is False
        assert time.monotonic() - t0 >= 0.15


@pytest.mark.parametrize("options", MODES)
def test_wake_releases_wait(tmp_path, options):
    with Follower(tmp_path / "m.jsonl", **options) as follower:
        assert follower.mode == mode_of(options)
        threading.Timer(0.1, follower.wake).start()
        t0 = time.monotonic()
        assert follower.wait(5.0) is True
        assert time.monotonic() - t0 < 3


def test_falls_back_to_polling_when_watchdog_cannot_start(tmp_path, monkeypatch):
    import watchdog.observers

    class Broken:
        def schedule(self, *a, **k):
            raise OSError(24, "inotify instance limit reached")

        def stop(self):
            pass

        def is_alive(self):
            return False

    monkeypatch.setattr(watchdog.observers, "Observer", Broken)
    monkeypatch.setattr(inotify, "available", lambda: False)
    path = tmp_path / "metrics.jsonl"
    with Follower(path, use_watchdog=True, poll_interval=0.02) as follower:
        assert follower.mode == "polling"
        append(path, line(BATCH))
        assert follower.wait(1.0) is True
        assert follower.read() == [BATCH]


def test_missing_directory_falls_back_to_polling(tmp_path):
    with Follower(tmp_path / "nope" / "metrics.jsonl", use_watchdog=True) as follower:
        assert follower.mode == "polling"
        assert follower.read() == []


def test_stop_ends_the_observer_thread(tmp_path):
    before = set(threading.enumerate())
    follower = Follower(tmp_path / "metrics.jsonl", use_watchdog=True, use_inotify=False).start()
    assert follower.mode == "watchdog"
    follower.stop()
    follower.stop()
    time.sleep(0.05)
    assert {t for t in threading.enumerate() if t.is_alive()} - before == set()


def test_a_dead_observer_degrades_to_polling(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with Follower(path, use_inotify=False, poll_interval=0.02) as follower:
        assert follower.mode == "watchdog"
        observer = follower._observer
        observer.stop()
        observer.join(5)
        append(path, line(BATCH))
        assert follower.wait(2.0) is True
        assert follower.mode == "polling"
        assert follower.read() == [BATCH]


# -- inotify mode ----------------------------------------------------------------------

needs_inotify = pytest.mark.skipif(not inotify.available(), reason="no inotify on this system")


def read_some(follower, timeout: float = 10.0) -> list:
    """Wait and read until a record comes: a wake may come between a writer's open and its write."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        follower.wait(deadline - time.monotonic())
        if got := follower.read():
            return got
    return []


@needs_inotify
def test_inotify_mode_reads_every_record_a_writer_thread_appends(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [BatchRecord(time=float(i), epoch=0, batch=i, step=i + 1, lr=0.1, logs={"loss": 1.0}) for i in range(200)]

    def writer():
        for record in records:
            append(path, line(record))

    with Follower(path, poll_interval=10.0) as follower:  # polling would take 10 s a look
        assert follower.mode == "inotify"
        thread = threading.Thread(target=writer)
        thread.start()
        got = []
        t0 = time.monotonic()
        while len(got) < len(records) and time.monotonic() - t0 < 30:
            follower.wait(5.0)
            got.extend(follower.read())
        thread.join()
    assert got == records


@needs_inotify
def test_inotify_mode_sees_the_file_replaced(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append(path, line(BATCH))
    with Follower(path, poll_interval=10.0) as follower:
        assert follower.read() == [BATCH]
        follower.wait(0.05)  # the append above, maybe
        tmp = tmp_path / "new"
        tmp.write_bytes(line(START))
        os.replace(tmp, path)
        assert follower.wait(10.0) is True
        assert follower.read() == [START]
        assert follower.stats.restarts == 1


@needs_inotify
def test_inotify_mode_waits_through_writes_to_other_files(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with Follower(path, poll_interval=10.0) as follower:
        writes = threading.Timer(0.05, append, args=(tmp_path / "control.jsonl", b"{}\n"))
        writes.start()
        assert follower.wait(0.5) is False  # control.jsonl's events are read and dropped
        writes.join()
        assert follower.mode == "inotify"


@needs_inotify
def test_inotify_wake_before_start_and_many_wakes(tmp_path):
    follower = Follower(tmp_path / "metrics.jsonl", poll_interval=10.0)
    follower.wake()
    with follower:
        assert follower.mode == "inotify"
        assert follower.wait(5.0) is True  # the wake from before start
        for _ in range(70_000):  # more than a pipe holds: a full pipe is a pending wake, never an error
            follower.wake()
        assert follower.wait(5.0) is True
        assert follower.wait(0.05) is False  # every pending wake was read with the first


@needs_inotify
def test_inotify_mode_degrades_to_polling_when_the_directory_goes(tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()
    path = directory / "metrics.jsonl"
    with Follower(path, poll_interval=0.02) as follower:
        assert follower.mode == "inotify"
        os.rename(directory, tmp_path / "gone")
        assert follower.wait(10.0) is True
        assert follower.mode == "polling"
        directory.mkdir()
        append(path, line(BATCH))
        assert read_some(follower) == [BATCH]


def test_falls_back_to_watchdog_when_inotify_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(inotify, "available", lambda: False)
    path = tmp_path / "metrics.jsonl"
    with Follower(path, poll_interval=10.0) as follower:
        assert follower.mode == "watchdog"
        threading.Timer(0.1, append, args=(path, line(BATCH))).start()
        assert read_some(follower) == [BATCH]


@needs_inotify
def test_falls_back_to_watchdog_when_the_watch_cannot_be_added(tmp_path, monkeypatch):
    def refuse(path):
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(inotify, "FileWatch", refuse)
    with Follower(tmp_path / "metrics.jsonl") as follower:
        assert follower.mode == "watchdog"


@needs_inotify
def test_inotify_mode_closes_its_descriptors(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append(path, line(BATCH))
    before = set(os.listdir("/proc/self/fd"))
    threads = set(threading.enumerate())
    for _ in range(150):  # more than the default 128 inotify instances
        follower = Follower(path).start()
        assert follower.mode == "inotify"
        follower.wake()
        assert follower.wait(5.0) is True
        assert follower.read() == [BATCH]
        follower.stop()
        follower.stop()
        follower.wake()  # after stop: no write to a closed (or reused) descriptor
        assert follower.mode == "polling"
    assert set(os.listdir("/proc/self/fd")) == before
    assert set(threading.enumerate()) == threads  # no thread in this mode
