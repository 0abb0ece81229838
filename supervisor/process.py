"""The system-call seam: every fork, exec and kill of the supervisor goes through here.

The lifecycle state machine only ever talks to a spawner and the handle it
returns, so its tests swap in a fake that records signals (supervisord's
``ProcessSpawner`` / dummy-options idea). Only the process started here and its
own process group are ever signalled, by pid / pgid.

Example::

    spawner = ProcessSpawner(log_path=paths.trainer_log, sink=print)
    handle = spawner.spawn([sys.executable, "train.py"], env=os.environ.copy(), cwd=Path.cwd())
    while handle.poll() is None:
        time.sleep(0.1)
    handle.close()
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, Protocol, Sequence

OutputSink = Callable[[str], None]
MAX_LINE = 1 << 16


class Handle(Protocol):
    """What the lifecycle needs from a started process."""

    pid: int

    def poll(self) -> int | None: ...
    def send_signal(self, sig: int) -> None: ...
    def signal_group(self, sig: int) -> bool: ...
    def close(self, timeout: float = 5.0) -> None: ...


class Spawner(Protocol):
    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> Handle: ...


class ProcessHandle:
    """A child started in its own session (so its own process group, pgid == pid).

    Its stdout and stderr (merged) are read by a thread that appends each line to
    the trainer log and hands it, decoded, to the sink.
    """

    def __init__(self, popen: subprocess.Popen, log: BinaryIO | None, sink: OutputSink | None) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session=True: the child leads its own group
        self._sink = sink
        self._log = log
        self._reader = threading.Thread(target=self._pump, name=f"lrsup-output-{self.pid}", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        stream = self._popen.stdout
        assert stream is not None
        try:
            # A line longer than MAX_LINE comes in pieces rather than growing without bound.
            for raw in iter(lambda: stream.readline(MAX_LINE), b""):
                if self._log is not None:
                    self._log.write(raw)
                    self._log.flush()
                if self._sink is not None:
                    try:
                        self._sink(raw.decode("utf-8", "replace").rstrip("\r\n"))
                    except Exception:  # a broken display must not stop the log
                        pass
        except (OSError, ValueError):
            pass  # pipe closed under us during close()
        finally:
            stream.close()

    def poll(self) -> int | None:
        """The return code once the child has exited (negative: killed by that signal)."""
        return self._popen.poll()

    def send_signal(self, sig: int) -> None:
        """Signal the child itself; a no-op once it has been reaped."""
        self._popen.send_signal(sig)

    def signal_group(self, sig: int) -> bool:
        """Signal the child's whole process group; False when no member is left."""
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:  # the pgid no longer names a group of ours
            return False
        return True

    def group_alive(self) -> bool:
        """True while some process of the child's group is still there."""
        return self.signal_group(0)

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Wait for the output thread to finish (pipe closed), then close the log."""
        self._reader.join(timeout)
        if self._log is not None and not self._reader.is_alive():
            self._log.close()
            self._log = None


def _open_log(path: Path) -> BinaryIO:
    """Append-only, private (0600 whatever the umask), never through a symlink."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(path, flags, 0o600), "ab")


class ProcessSpawner:
    """Starts processes in their own session with merged, piped output.

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
            popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=os.fspath(cwd),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            if log is not None:
                log.close()
            raise
        return ProcessHandle(popen, log, self.sink)
