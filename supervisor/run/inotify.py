"""A minimal Linux inotify binding (ctypes, standard library only): wake when one file changes.

Example::

    if inotify.available():
        with inotify.FileWatch("run/metrics.jsonl") as watch:
            if watch.wait(0.5):      # blocks in poll(2): the GIL is released
                ...                  # the file was created, written, replaced or removed

The watch is on the file's directory, so it sees the file created after the watch
started and a file replaced by a rename, and it keeps watching across both; events for
other names in the directory are read and dropped. A queue overflow counts as a change
(something may have been missed). When the directory itself goes (deleted, moved, its
file system unmounted) the watch is ``dead``: no further events will come, and the
caller should fall back to polling.

Importing this module never fails, and every failure is an ``OSError`` with its errno:
off Linux, or with a libc without inotify, ``available()`` is False and ``FileWatch``
raises (``ENOSYS``); out of inotify instances or watches (``fs.inotify.max_user_instances``
/ ``max_user_watches``), a missing directory or no permission, ``FileWatch`` raises too.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import sys
import time

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000  # O_NONBLOCK
IN_CLOEXEC = 0o2000000  # O_CLOEXEC

# What happens to a file in the watched directory that can change what a reader sees.
FILE_EVENTS = IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB
# The directory itself went away: the kernel drops the watch (IN_IGNORED follows).
DEAD_EVENTS = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name
_READ_SIZE = 64 * 1024
_UNSET = object()
_libc: object = _UNSET


def _load():
    """libc's three inotify functions, or None (not Linux, or a libc without them). Cached."""
    global _libc
    if _libc is _UNSET:
        _libc = None
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(None, use_errno=True)  # the running process: Python links libc
                init, add, rm = lib.inotify_init1, lib.inotify_add_watch, lib.inotify_rm_watch
            except (OSError, AttributeError):
                pass
            else:
                init.argtypes, init.restype = [ctypes.c_int], ctypes.c_int
                add.argtypes, add.restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int
                rm.argtypes, rm.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                _libc = lib
    return _libc


def _check(result: int, what: str, path: str | None = None) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}", path)
    return result


def available() -> bool:
    """True if this process can watch a file with inotify now.

    False off Linux, with a libc without inotify, or when no inotify instance can be
    created (``fs.inotify.max_user_instances`` reached, out of file descriptors). A
    ``FileWatch`` may still fail afterwards (the watch limit, a missing directory): it
    raises ``OSError`` then.
    """
    lib = _load()
    if lib is None:
        return False
    fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        return False
    os.close(fd)
    return True


class FileWatch:
    """An inotify instance watching one file name in its directory.

    Args:
        path: str or PathLike, the file (it need not exist yet; its directory must).

    Raises:
        OSError: inotify unavailable (``errno.ENOSYS``), a limit reached (``EMFILE``,
            ``ENOSPC``), the directory missing (``ENOENT``) or not a directory, no permission.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.fd = -1
        lib = _load()
        if lib is None:
            raise OSError(errno.ENOSYS, "inotify is not available on this system")
        target = os.path.abspath(os.fspath(path))
        directory, name = os.path.split(target)
        self.path = target
        self.name = os.fsencode(name)
        self.dead = False  # the directory's watch is gone: no more events will come
        self.overflows = 0
        self.wd = -1
        self._rm = lib.inotify_rm_watch
        self.fd = _check(lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
        try:
            self.wd = _check(
                lib.inotify_add_watch(self.fd, os.fsencode(directory), FILE_EVENTS | DEAD_EVENTS | IN_ONLYDIR),
                "inotify_add_watch",
                directory,
            )
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        """The inotify file descriptor: readable when events are pending (for select/poll)."""
        if self.fd < 0:
            raise ValueError("the watch is closed")
        return self.fd

    def wait(self, timeout: float | None) -> bool:
        """Block up to ``timeout`` seconds (None: forever) for a change to the file; True if one came.

        Events for other names in the directory are read and dropped, and the wait goes on
        for the time left. A dead watch returns True at once.
        """
        poller = select.poll()
        poller.register(self.fileno(), select.POLLIN)
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            if self.drain() or self.dead:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if not poller.poll(None if left is None else left * 1000.0):
                return False

    def drain(self) -> bool:
        """Read every pending event without blocking; True if any was about the file, an overflow, or the end."""
        changed = False
        while True:
            try:
                data = os.read(self.fileno(), _READ_SIZE)
            except BlockingIOError:
                return changed
            if not data:
                return changed
            changed |= self._parse(data)

    def _parse(self, data: bytes) -> bool:
        changed = False
        offset, size = 0, _HEADER.size
        while offset + size <= len(data):
            _wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            name = data[offset + size : offset + size + length].rstrip(b"\0")
            offset += size + length
            if mask & IN_Q_OVERFLOW:
                self.overflows += 1
                changed = True
            elif mask & DEAD_EVENTS:
                self.dead = True
                changed = True
            elif name == self.name:
                changed = True
        return changed

    def close(self) -> None:
        """Remove the watch and close the descriptor. Safe to call twice."""
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        if not self.dead and self.wd >= 0:
            self._rm(fd, self.wd)  # an error (the watch already gone) changes nothing: the close frees it
        os.close(fd)

    def __enter__(self) -> "FileWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
