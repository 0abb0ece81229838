"""The system-call seam: every fork, exec and kill of the supervisor goes through here.

The lifecycle state machine only ever talks to a spawner and the handle it
returns, so its tests swap in a fake that records signals (supervisord's
``ProcessSpawner`` / dummy-options idea). Only the process started here and its
own process group are ever signalled, by pid / pgid.

``reap_group`` is how every exit path of the supervisor ends: whatever is left in the
trainer's group gets SIGTERM, then SIGKILL after the grace period, and the supervisor
waits until the group is gone (zombies do not count), so no trainer outlives it.

The group is not the whole tree: a child the script starts in a session of its own
(``start_new_session=True``, ``setsid``, a daemon) leaves it. :class:`Descendants` follows
the trainer's process tree through /proc while it runs (every ``poll``, at most every
``TRACK_INTERVAL`` seconds, and before every signal): each descendant is remembered by
pid and start time, and the group's signals also go to each remembered descendant still
alive (to its own group when it leads one). What it cannot see: a process started and
orphaned (its parent exited) between two looks, e.g. a quick double fork.

Example::

    spawner = ProcessSpawner(log_path=paths.trainer_log, sink=print)
    handle = spawner.spawn([sys.executable, "train.py"], env=os.environ.copy(), cwd=Path.cwd())
    while handle.poll() is None:
        time.sleep(0.1)
    reap_group(handle, SystemClock(), grace=10.0)
    handle.close()
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time as _time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Protocol, Sequence

OutputSink = Callable[[str], None]
MAX_LINE = 1 << 16
CHUNK = 1 << 16


TRACK_INTERVAL = 0.5  # seconds between two walks of the trainer's process tree through /proc
KILL_WAIT = 5.0  # seconds to wait for the group to be gone after SIGKILL (a process in D state may take a while)


class Handle(Protocol):
    """What the lifecycle needs from a started process.

    ``group_alive`` is optional (``reap_group`` falls back to ``signal_group(0)``).
    """

    pid: int

    def poll(self) -> int | None: ...
    def send_signal(self, sig: int) -> None: ...
    def signal_group(self, sig: int) -> bool: ...
    def close(self, timeout: float = 5.0) -> None: ...


class Spawner(Protocol):
    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> Handle: ...


class LogTail:
    """Follows the trainer log from ``offset`` on a thread and hands each line, decoded, to ``sink``.

    The trainer writes its output straight into the log file (not through a pipe to
    the supervisor), so it keeps running, and logging, if the supervisor dies.
    ``close`` reads what is left and stops the thread.
    """

    def __init__(self, path: Path, offset: int, sink: OutputSink | None, interval: float = 0.05) -> None:
        self.path, self.offset, self._sink, self._interval = path, offset, sink, interval
        self._stop = threading.Event()
        self._tail = b""
        self._thread = threading.Thread(target=self._run, name="lrsup-output", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return
        try:
            while True:
                stopping = self._stop.wait(self._interval)
                while data := os.pread(fd, CHUNK, self.offset):
                    self.offset += len(data)
                    self._emit(data)
                if stopping:
                    if self._tail:
                        self._emit(b"\n")
                    return
        except OSError:
            return
        finally:
            os.close(fd)

    def _emit(self, data: bytes) -> None:
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()
        if len(self._tail) > MAX_LINE:  # a line longer than MAX_LINE comes in pieces
            lines.append(self._tail)
            self._tail = b""
        for raw in lines:
            if self._sink is not None:
                try:
                    self._sink(raw.decode("utf-8", "replace").rstrip("\r"))
                except Exception:  # a broken display must not stop the tail
                    pass

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


def _stat(pid: int) -> tuple[bytes, int, int, int] | None:
    """(state, ppid, pgid, start time) of ``pid`` from /proc/<pid>/stat; None when gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0], int(fields[1]), int(fields[2]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    """The children of ``pid``: /proc/<pid>/task/<tid>/children of each of its threads (cheap),
    else a scan of every process's parent (kernels without CONFIG_PROC_CHILDREN)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            if os.path.exists(f"/proc/{pid}/task/{tid}"):
                return _children_by_scan(pid)  # the thread is there, its children file is not
        except (OSError, ValueError):
            continue
    return out


def _children_by_scan(parent: int) -> list[int]:
    try:
        names = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []
    return [pid for pid in names if (st := _stat(pid)) is not None and st[1] == parent]


class Descendants:
    """The trainer's process tree, remembered while it runs: (pid, start time) of every descendant seen.

    Args:
        root: int, the trainer's pid.
        interval: float, shortest time between two walks of /proc (``update(force=True)`` ignores it).
    """

    def __init__(self, root: int, interval: float = TRACK_INTERVAL) -> None:
        self.root, self.interval = root, interval
        self.known: dict[int, int] = {}  # pid -> start time
        self.root_alive = True  # set False once the trainer is reaped (its pid may be reused then)
        self._last = float("-inf")

    def update(self, force: bool = False) -> None:
        """Remember the live descendants of the trainer and of every descendant already known."""
        now = _time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        parents = [self.root] if self.root_alive else []
        parents += self.live()
        while parents:
            for pid in _children(parents.pop()):
                st = _stat(pid)
                if st is not None and st[0] != b"Z" and pid != self.root and self.known.get(pid) != st[3]:
                    self.known[pid] = st[3]
                    parents.append(pid)

    def live(self) -> list[int]:
        """The remembered descendants still running (same start time, not a zombie)."""
        out = []
        for pid, start in list(self.known.items()):
            st = _stat(pid)
            if st is None or st[3] != start or st[0] == b"Z":
                del self.known[pid]  # gone (a reused pid is someone else's)
            else:
                out.append(pid)
        return out

    def outside(self, pgid: int) -> list[int]:
        """The live remembered descendants that are not in group ``pgid`` (the group's signals miss them)."""
        return [pid for pid in self.live() if (st := _stat(pid)) is not None and st[2] != pgid]

    def signal(self, pgid: int, sig: int) -> bool:
        """Send ``sig`` to each live descendant outside group ``pgid`` (to its group when it leads one)."""
        self.update(force=True)
        sent = False
        for pid in self.outside(pgid):
            st = _stat(pid)
            try:
                if st is not None and st[2] == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
                sent = True
            except OSError:
                pass
        return sent


class ProcessHandle:
    """A child started in its own session (so its own process group, pgid == pid).

    Its stdout and stderr (merged) go straight to the trainer log; a :class:`LogTail`
    hands each new line of the log to the sink.
    """

    def __init__(self, popen: subprocess.Popen, log_path: Path | None, offset: int, sink: OutputSink | None) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session=True: the child leads its own group
        self._tail = LogTail(log_path, offset, sink) if log_path is not None else None
        self.tree = Descendants(self.pid)

    def poll(self) -> int | None:
        """The return code once the child has exited (negative: killed by that signal)."""
        status = self._popen.poll()
        if status is None:
            self.tree.update()  # while the trainer runs, its children are its children
        else:
            self.tree.root_alive = False
        return status

    def send_signal(self, sig: int) -> None:
        """Signal the child itself; a no-op once it has been reaped."""
        self._popen.send_signal(sig)

    def signal_group(self, sig: int) -> bool:
        """Signal the child's whole process group and its descendants outside it; False when none is left."""
        if sig == 0:
            return _signal_group(self.pgid, 0) or bool(self.tree.outside(self.pgid))
        escaped = self.tree.signal(self.pgid, sig)
        return _signal_group(self.pgid, sig) or escaped

    def group_alive(self) -> bool:
        """True while a process of the child's group, or a descendant outside it, is running (not zombies)."""
        self.tree.update()
        return group_alive(self.pgid) or bool(self.tree.outside(self.pgid))

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Pass on the rest of the log's output and stop following it."""
        if self._tail is not None:
            self._tail.close(timeout)


def group_members(pgid: int) -> list[int] | None:
    """The pids of the live (not zombie) processes in group ``pgid``; None where /proc cannot tell.

    ``killpg(pgid, 0)`` also succeeds while a member is a zombie nobody reaps (an orphan
    of the trainer under a container's init that does not reap), so a wait for "the group
    is gone" would never end; /proc tells a zombie from a live process.
    """
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    members = []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # After the command's closing parenthesis: state, ppid, pgrp, ...
        if len(fields) > 2 and fields[0] != b"Z" and fields[2] == str(pgid).encode():
            members.append(int(name))
    return members


def group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process of group ``pgid`` is left."""
    if not _signal_group(pgid, 0):
        return False
    members = group_members(pgid)
    return True if members is None else bool(members)


def reap_group(
    handle: Any,
    clock: Any,
    grace: float,
    report: Callable[[str, str], None] | None = None,
    hurry: Callable[[], bool] | None = None,
    kill_wait: float = KILL_WAIT,
) -> str:
    """Make sure nothing of ``handle``'s process group is left: SIGTERM, ``grace``, SIGKILL, wait.

    Every exit path of the supervisor ends here. The signals go out before anything is
    reported, and a failing ``report`` (a display writing to a closed pipe) is ignored,
    so reporting can never leave the group running.

    Args:
        handle: Handle, the trainer (``group_alive()`` if it has one, else ``signal_group(0)``).
        clock: object with ``monotonic()`` and ``sleep()``.
        grace: float, seconds the group gets after SIGTERM before SIGKILL.
        report: callable(event, detail) | None, told what was done (``leftovers``,
            ``leftovers_killed``, ``leftovers_gone`` or ``leftovers_survived``).
        hurry: callable() -> bool | None, True to SIGKILL at once (a second signal to the supervisor).
        kill_wait: float, seconds to wait for the group to be gone after SIGKILL.

    Returns:
        str: ``"none"`` (nothing was left), ``"terminated"`` (gone after SIGTERM),
        ``"killed"`` (gone after SIGKILL) or ``"survived"`` (still there after ``kill_wait``).
    """
    alive = getattr(handle, "group_alive", None) or (lambda: handle.signal_group(0))
    pgid = getattr(handle, "pgid", handle.pid)

    def tell(event: str, detail: str) -> None:
        if report is not None:
            try:
                report(event, detail)
            except Exception:  # a broken display must not leave an orphan behind
                pass

    def wait(seconds: float, check_hurry: bool) -> bool:
        """Wait up to ``seconds`` for the group to be gone; True when it is."""
        deadline = clock.monotonic() + seconds
        while alive():
            if clock.monotonic() >= deadline or (check_hurry and hurry is not None and hurry()):
                return False
            clock.sleep(0.05)
        return True

    if not alive():
        return "none"
    handle.signal_group(signal.SIGTERM)
    tell("leftovers", f"processes left in the trainer's group (pgid {pgid}): SIGTERM, SIGKILL after {grace:g} s")
    started = clock.monotonic()
    if wait(grace, True):
        tell(
            "leftovers_gone",
            f"the trainer's group (pgid {pgid}) is gone after SIGTERM ({clock.monotonic() - started:.1f} s)",
        )
        return "terminated"
    handle.signal_group(signal.SIGKILL)
    why = "asked again to stop" if hurry is not None and hurry() else f"still there after {grace:g} s"
    tell("leftovers_killed", f"the trainer's group (pgid {pgid}) {why}: SIGKILL")
    if wait(kill_wait, False):
        tell("leftovers_gone", f"the trainer's group (pgid {pgid}) is gone after SIGKILL")
        return "killed"
    tell(
        "leftovers_survived",
        f"processes of the trainer's group (pgid {pgid}) still there {kill_wait:g} s "
        "after SIGKILL (uninterruptible sleep?)",
    )
    return "survived"


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pgid no longer names a group of ours
        return False
    return True


class AttachedHandle:
    """A trainer this supervisor did not start (``lrsup resume``): polled by pid and start time.

    It cannot be waited for, so its exit status is unknown (``exit_unknown``): the
    lifecycle decides from the trainer's end record. Signals go to its process group
    while the (pid, start time) pair still names it, and after it exited only while
    processes it left in its group are still there (``_leftovers``).
    """

    exit_unknown = True

    def __init__(
        self, pid: int, start_time: int | None, log_path: Path | None = None, sink: OutputSink | None = None
    ) -> None:
        self.pid = self.pgid = pid
        self.start_time = start_time
        offset = os.path.getsize(log_path) if log_path is not None and os.path.exists(log_path) else 0
        self._tail = LogTail(log_path, offset, sink) if log_path is not None else None
        self._gone = False
        self.tree = Descendants(pid)  # from the takeover on

    def _alive(self) -> bool:
        from lrsup.supervisor.rundir.liveness import pid_alive

        self._gone = self._gone or not pid_alive(self.pid, self.start_time)
        self.tree.root_alive = not self._gone
        return not self._gone

    def poll(self) -> int | None:
        if self._alive():
            self.tree.update()
            return None
        return 0

    def send_signal(self, sig: int) -> None:
        if self._alive():
            os.kill(self.pid, sig)

    def signal_group(self, sig: int) -> bool:
        escaped = self.tree.signal(self.pgid, sig) if sig else bool(self.tree.outside(self.pgid))
        if not self._alive() and not self._leftovers():
            return escaped
        return _signal_group(self.pgid, sig) or escaped

    def group_alive(self) -> bool:
        self.tree.update()
        return (group_alive(self.pgid) if self._alive() else self._leftovers()) or bool(self.tree.outside(self.pgid))

    def _leftovers(self) -> bool:
        """Once the trainer is gone: are live processes of its group left?

        Linux does not reuse a pid while a process group of that id exists, so members of
        group ``pgid`` whose own pid is not ``pgid`` are the trainer's leftovers; a process
        now holding the pid itself is someone else's (the pid was reused: not ours).
        """
        members = group_members(self.pgid)
        if not members:  # None (cannot tell) or none left
            return False
        return self.pid not in members

    def close(self, timeout: float = 5.0) -> None:
        if self._tail is not None:
            self._tail.close(timeout)


def _pump_pipe(stream: BinaryIO, sink: OutputSink | None) -> None:
    """Hand each output line of a piped child (no log file) to ``sink``."""
    try:
        for raw in iter(lambda: stream.readline(MAX_LINE), b""):
            if sink is not None:
                try:
                    sink(raw.decode("utf-8", "replace").rstrip("\r\n"))
                except Exception:
                    pass
    except (OSError, ValueError):
        pass
    finally:
        stream.close()


def _open_log(path: Path) -> BinaryIO:
    """Append-only, private (0600 whatever the umask), never through a symlink."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(path, flags, 0o600), "ab")


class ProcessSpawner:
    """Starts processes in their own session, stdout and stderr merged into the log file.

    The output goes straight to the file, so a trainer outlives a dead supervisor
    without a broken pipe; without ``log_path`` it is piped to ``sink`` instead.

    Args:
        log_path: Path | None, file that receives every output line (appended).
        sink: callable(str) | None, called with each decoded line (from the reader thread).
    """

    def __init__(self, log_path: Path | None = None, sink: OutputSink | None = None) -> None:
        self.log_path = log_path
        self.sink = sink

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> ProcessHandle:
        """Start ``argv``; raises OSError (e.g. FileNotFoundError) when it cannot be started."""
        log = _open_log(self.log_path) if self.log_path is not None else None  # before the child exists
        try:
            offset = os.fstat(log.fileno()).st_size if log is not None else 0
            popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=os.fspath(cwd),
                stdin=subprocess.DEVNULL,
                stdout=log if log is not None else subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            if log is not None:
                log.close()  # the child has its own copy
        handle = ProcessHandle(popen, self.log_path, offset, self.sink)
        if log is None and popen.stdout is not None:  # no log file: read the pipe instead
            threading.Thread(target=_pump_pipe, args=(popen.stdout, self.sink), daemon=True).start()
        return handle


class SystemClock:
    """The real clocks; tests pass an object with the same three methods."""

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)
    sleep = staticmethod(_time.sleep)


def write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 from the start (never through a symlink) and write ``text``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    with os.fdopen(os.open(path, flags, 0o600), "w", encoding="utf-8") as f:
        f.write(text)


def install_signal_handlers(runner: Any) -> Callable[[], None]:
    """Record SIGINT/SIGTERM (and SIGHUP unless ignored, as under nohup) for the loop.

    SIGINT and SIGTERM go to ``runner.signals`` (stop the run); SIGHUP, a hung-up
    terminal, to ``runner.hangups`` where the runner has one (the run goes on without
    the terminal), else to ``runner.signals``. Returns a function restoring the previous
    handlers.
    """
    previous: dict[int, Any] = {}
    hup = getattr(signal, "SIGHUP", None)

    def handler(signum: int, frame: object) -> None:
        # only record it: the loop acts
        (getattr(runner, "hangups", runner.signals) if signum == hup else runner.signals).append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is None or (sig != signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN):
            continue
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (embedded use): no handlers
            break

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
