"""The inotify binding: what wakes a FileWatch, what does not, and how it fails.

Timeouts are generous and the assertions are on events, never on speed: a loaded
2-core machine may take long to deliver, but an event either comes or it does not.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import struct
import threading

import pytest

from lrsup.supervisor.run import inotify

pytestmark = pytest.mark.skipif(not inotify.available(), reason="no inotify on this system")

LONG = 10.0  # an event that must come: waited for up to this long, returned as soon as it comes
SHORT = 0.2  # an event that must not come


def append(path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_sees_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"")
    with inotify.FileWatch(path) as watch:
        assert watch.wait(SHORT) is False
        append(path, b"one\n")
        assert watch.wait(LONG) is True
        assert watch.drain() is False  # read once: nothing left
        append(path, b"two\n")
        assert watch.wait(LONG) is True


def test_sees_the_file_created_after_the_watch_started(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with inotify.FileWatch(path) as watch:
        path.write_bytes(b"x\n")
        assert watch.wait(LONG) is True


def test_sees_a_replacement_by_rename_and_appends_to_the_new_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"old\n")
    with inotify.FileWatch(path) as watch:
        new = tmp_path / "metrics.jsonl.tmp"
        new.write_bytes(b"new\n")
        assert watch.wait(SHORT) is False  # the temporary file's own events are not about the file
        os.replace(new, path)
        assert watch.wait(LONG) is True
        watch.drain()
        append(path, b"more\n")  # the watch is on the directory: the new inode is watched too
        assert watch.wait(LONG) is True


def test_sees_a_deletion(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"x\n")
    with inotify.FileWatch(path) as watch:
        path.unlink()
        assert watch.wait(LONG) is True
        assert not watch.dead


def test_ignores_other_files_in_the_directory(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with inotify.FileWatch(path) as watch:
        for name in ("control.jsonl", "metrics.jsonl.bak", "metrics.json"):
            append(tmp_path / name, b"x\n")
        assert watch.wait(SHORT) is False
        assert watch.drain() is False


def test_wakes_a_thread_blocked_in_wait(tmp_path):
    path = tmp_path / "metrics.jsonl"
    got = []
    with inotify.FileWatch(path) as watch:
        waiter = threading.Thread(target=lambda: got.append(watch.wait(LONG)))
        waiter.start()
        threading.Timer(0.1, append, args=(path, b"x\n")).start()
        waiter.join(LONG + 5)
    assert got == [True]


def test_a_removed_directory_kills_the_watch(tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()
    with inotify.FileWatch(directory / "metrics.jsonl") as watch:
        shutil.rmtree(directory)
        assert watch.wait(LONG) is True
        assert watch.dead
        assert watch.wait(SHORT) is True  # dead: every wait says "look again"


def test_missing_directory_or_not_a_directory_raises(tmp_path):
    with pytest.raises(OSError) as missing:
        inotify.FileWatch(tmp_path / "nope" / "metrics.jsonl")
    assert missing.value.errno == errno.ENOENT
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OSError) as not_dir:
        inotify.FileWatch(tmp_path / "file" / "metrics.jsonl")
    assert not_dir.value.errno == errno.ENOTDIR


def test_close_is_idempotent_and_frees_the_descriptor(tmp_path):
    watch = inotify.FileWatch(tmp_path / "metrics.jsonl")
    fd = watch.fileno()
    watch.close()
    watch.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(ValueError, match="closed"):
        watch.fileno()


def test_no_descriptor_leak_over_many_watches(tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(150):  # more than the default 128 instances: each one must be freed
        with inotify.FileWatch(tmp_path / "metrics.jsonl"):
            pass
    assert len(os.listdir("/proc/self/fd")) == before


def event(mask: int, name: bytes = b"", wd: int = 1) -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""  # NUL-terminated, 16-byte aligned
    return struct.pack("iIII", wd, mask, 0, len(padded)) + padded


def test_parse_overflow_counts_as_a_change(tmp_path):
    with inotify.FileWatch(tmp_path / "metrics.jsonl") as watch:
        assert watch._parse(event(inotify.IN_MODIFY, b"other")) is False
        assert watch._parse(event(inotify.IN_Q_OVERFLOW, wd=-1)) is True
        assert watch.overflows == 1
        both = event(inotify.IN_MODIFY, b"other") + event(inotify.IN_CLOSE_WRITE, b"metrics.jsonl")
        assert watch._parse(both) is True
        assert not watch.dead


# -- unavailable ---------------------------------------------------------------------


def test_unavailable_off_linux(monkeypatch):
    monkeypatch.setattr(inotify, "_libc", inotify._UNSET)
    monkeypatch.setattr(inotify.sys, "platform", "darwin")
    assert inotify.available() is False
    with pytest.raises(OSError) as exc:
        inotify.FileWatch("metrics.jsonl")
    assert exc.value.errno == errno.ENOSYS


class FullLibc:
    """A libc whose inotify_init1 fails as it does at fs.inotify.max_user_instances."""

    def inotify_init1(self, flags):
        ctypes.set_errno(errno.EMFILE)
        return -1

    def inotify_add_watch(self, fd, path, mask):  # pragma: no cover - never reached
        raise AssertionError("called after a failed init")

    def inotify_rm_watch(self, fd, wd):  # pragma: no cover
        return 0


def test_instance_limit_reached(monkeypatch, tmp_path):
    monkeypatch.setattr(inotify, "_libc", FullLibc())
    assert inotify.available() is False
    with pytest.raises(OSError) as exc:
        inotify.FileWatch(tmp_path / "metrics.jsonl")
    assert exc.value.errno == errno.EMFILE
