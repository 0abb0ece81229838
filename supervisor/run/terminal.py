"""The terminal may go away; the run goes on.

A closed stdout (``lrsup run train.py | head -3``, a harness that died) or a hung-up
terminal (SIGHUP: the ssh session closed) never ends a run. :class:`Terminal` wraps the
display: the first write that fails (EPIPE, EIO, ...) or a SIGHUP switches it off for
good, points the supervisor's stdout (and stderr, when it is the same pipe or terminal)
at /dev/null so that no later write or the interpreter's last flush fails either, and
tells the runner once (``on_lost(event, detail)``: an ``output_closed`` or ``hangup``
event in the journal). From then on lrsup writes to the run directory only and finishes
as it would have.

Example::

    display = Terminal(make_display(), on_lost=lambda event, detail: journal(event, detail), silence=True)
    display.on_output_line("epoch 1/3 ...")  # a closed stdout: switched off, journaled once
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

LostCallback = Callable[[str, str], None]

ON_ITS_OWN = "lrsup goes on, writing to the run directory only"


def _same_file(a: int, b: int) -> bool:
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _to_devnull(fds: list[int]) -> None:
    """Point each of ``fds`` at /dev/null (the fd numbers stay valid, so every writer keeps working)."""
    if not fds:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            try:
                os.dup2(null, fd)
            except OSError:
                pass
    finally:
        os.close(null)


def silence_stdio(hangup: bool = False) -> None:
    """Send what lrsup would print to /dev/null: stdout, and stderr when it shares stdout's file.

    ``hangup``: the terminal is gone, so every standard stream that is a terminal goes too.
    """
    fds = [1]
    if _same_file(1, 2) or (hangup and _is_terminal(2)):
        fds.append(2)
    if hangup and not _is_terminal(1) and not _same_file(1, 2):
        fds.remove(1)  # stdout is a file or pipe of its own: it still works
    _to_devnull(fds)


def say(text: str) -> bool:
    """One line on stderr, never an exception: a closed stderr is pointed at /dev/null instead."""
    try:
        print(text, file=sys.stderr, flush=True)
        return True
    except (OSError, ValueError):
        _to_devnull([2])
        return False


class Terminal:
    """A display that survives its terminal: a write error or a hangup switches it off, once.

    Args:
        display: Display, the display to wrap (every other attribute is the wrapped one's).
        on_lost: callable(event, detail) | None, told once why the display was switched off.
        silence: bool, also point the process's stdout (and stderr) at /dev/null when that
            happens (the display writes to the real stdout; False for a test's fake display).
    """

    def __init__(self, display: Any, on_lost: LostCallback | None = None, silence: bool = False) -> None:
        self.inner, self.on_lost, self.silence = display, on_lost, silence
        self.lost: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def on_record(self, record: Any) -> None:
        self._call("on_record", record)

    def on_decision(self, decision: Any) -> None:
        self._call("on_decision", decision)

    def on_output_line(self, line: str) -> None:
        self._call("on_output_line", line)

    def on_state(self, event: str, detail: str) -> None:
        self._call("on_state", event, detail)

    def on_time_lost(self, seconds: float) -> None:
        self._call("on_time_lost", seconds)

    def on_note(self, text: str) -> None:
        self._call("on_note", text)

    def close(self) -> None:
        self._call("close")

    def hang_up(self) -> None:
        """SIGHUP: the terminal is gone. Switch the display off (once) and say so."""
        self._lose("hangup", "the terminal hung up (SIGHUP)", hangup=True)

    def _call(self, name: str, *args: Any) -> None:
        if self.lost is not None:
            return
        method = getattr(self.inner, name, None)
        if method is None:
            return
        try:
            method(*args)
        except OSError as exc:  # EPIPE: the reader is gone; EIO: the terminal is
            self._lose("output_closed", f"stdout closed ({type(exc).__name__}: {exc})")
        except SystemExit:  # rich's Console exits on a broken pipe; a display must never end the run
            self._lose("output_closed", "stdout closed (broken pipe)")

    def _lose(self, event: str, why: str, hangup: bool = False) -> None:
        if self.lost is not None:
            return
        self.lost = event
        if self.silence:
            silence_stdio(hangup=hangup)
            try:
                self.inner.close()  # a live display's refresh thread stops (its writes go to /dev/null now)
            except (Exception, SystemExit):
                pass
        if self.on_lost is not None:
            self.on_lost(event, f"{why}: {ON_ITS_OWN}")
