"""Commands in: reading control.jsonl and applying each command once, in order.

Owns ``ControlReader`` (the complete lines appended since the last read) and
``CommandHandler``, the part of ``Agent`` that polls, waits for verdicts and applies
commands (``set_lr``, ``rollback``, ``configure``...), answering each with an ``ack`` or
an ``error`` record. A command whose ``seq`` is not above the highest handled is
ignored, so re-reading a replaced file is harmless. Standard library only.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any, Mapping

from lrsup.supervisor.agent.checkpoints import CheckpointStore
from lrsup.supervisor.agent.handle import OptimizerHandle
from lrsup.supervisor.agent.records import describe_command, warn
from lrsup.supervisor.agent.settings import check_setting
from lrsup.supervisor.protocol.doorbell import BellWatch
from lrsup.supervisor.protocol.jsonl import LineSplitter
from lrsup.supervisor.protocol.wire import (
    CADENCE_FIELDS,
    CONTROL_FILE,
    HOUSEKEEPING_COMMANDS,
    AckRecord,
    ProtocolError,
    loads,
    validate_command,
)

# The verdict wait polls control.jsonl, sleeping FIRST_DELAY at first and growing to MAX_DELAY.
FIRST_DELAY = 0.0005
MAX_DELAY = 0.005


class ControlReader:
    """The complete lines appended to control.jsonl since the last read, and the doorbell.

    ``bell`` is the mapped ``control.bell`` (a ``BellWatch``, or None without one): its
    ``changed()`` says whether the supervisor rang since the last look (a compare of 8 mapped
    bytes, see lrsup.supervisor.protocol.doorbell). ``read_lines`` is cheap when nothing changed: one ``os.fstat`` of the open file and a
    comparison. The paths themselves are looked at again (``os.stat``) at most every
    ``path_check`` seconds, or at once while control.jsonl is not open: a control file
    replaced (another inode) is then read again from its start, as is one that shrank (the
    caller's seq check keeps that idempotent), and a bell that appeared or was replaced is
    mapped afresh.

    Args:
        path: str, control.jsonl.
        bell_path: str or None, control.bell (mapped at once if it is there, before any line
            is read: a command appended after this rings, one before it is in the first read).
        path_check: float, seconds between looks at the paths.
        clock: callable returning monotonic seconds (tests pass a fake).
    """

    def __init__(
        self, path: str, bell_path: str | None = None, path_check: float = 0.5, clock: Any = time.monotonic
    ) -> None:
        self.path = path
        self.bell_path = bell_path
        self.bell = BellWatch.open(bell_path) if bell_path is not None else None
        self.path_check = path_check
        self._clock = clock
        self._next_path_check = 0.0
        self._fd = -1
        self._ino: int | None = None
        self._offset = 0
        self._splitter = LineSplitter()

    def read_lines(self) -> list[bytes]:
        st = None
        if self._fd >= 0:
            now = self._clock()
            if now < self._next_path_check:
                st = os.fstat(self._fd)  # the same file, unless replaced: checked below in time
            else:
                self._next_path_check = now + self.path_check
                self._check_bell()
        if st is None:
            try:
                st = os.stat(self.path)
            except OSError:
                return []
        if st.st_ino != self._ino or st.st_size < self._offset:
            if not self._reopen():
                return []
            st = os.fstat(self._fd)
        if st.st_size == self._offset:
            return []
        data = os.pread(self._fd, st.st_size - self._offset, self._offset)
        self._offset += len(data)
        return self._splitter.feed(data)

    def _check_bell(self) -> None:
        """Map the bell afresh if it appeared, went or was replaced since it was mapped."""
        if self.bell_path is None:
            return
        try:
            ino = os.stat(self.bell_path).st_ino
        except OSError:
            ino = None
        if self.bell is not None and self.bell.ino == ino:
            return
        if self.bell is not None:
            self.bell.close()
        self.bell = BellWatch.open(self.bell_path) if ino is not None else None

    def _reopen(self) -> bool:
        self._close_file()
        self._offset = 0
        self._splitter = LineSplitter()
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return False
        self._ino = os.fstat(self._fd).st_ino
        return True

    def _close_file(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._ino = None

    def close(self) -> None:
        self._close_file()
        if self.bell is not None:
            self.bell.close()
            self.bell = None


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class CommandHandler:
    """Command application for ``Agent`` (which provides the state and ``_write``, ``_error``,
    ``_lr``, ``checkpoint``, ``_reset_buckets`` and the LR methods of ``LrControl``)."""

    _control: ControlReader
    _max_seq: int
    _verdict_epoch: int
    _late_epoch: int | None
    _position: tuple[int | None, int]
    settings: Any

    def _skip_history(self) -> None:
        """Count the commands already in control.jsonl as handled (see the module docstring)."""
        for line in self._control.read_lines():
            try:
                seq = int_or_none(loads(line).get("seq"))
            except ProtocolError:
                continue
            if seq is not None:
                self._max_seq = max(self._max_seq, seq)

    def _poll(self, handle: OptimizerHandle) -> None:
        for line in self._control.read_lines():
            if line.strip():
                self._handle_line(handle, line)

    def _wait_for_verdict(self, handle: OptimizerHandle, epoch: int) -> bool:
        deadline = time.monotonic() + self.settings.verdict_timeout
        delay = FIRST_DELAY
        while True:
            self._poll(handle)
            if self._verdict_epoch >= epoch:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, MAX_DELAY)

    def _handle_line(self: Any, handle: OptimizerHandle, line: bytes) -> None:
        try:
            obj = loads(line)
        except ProtocolError as exc:
            self._error(None, None, f"{CONTROL_FILE}: {exc}")
            return
        try:
            validate_command(obj)
        except ProtocolError as exc:
            cmd = obj.get("cmd")
            self._error(int_or_none(obj.get("seq")), cmd if isinstance(cmd, str) else None, str(exc))
            return
        seq, cmd = obj["seq"], obj["cmd"]
        if seq <= self._max_seq:
            return  # already handled: commands are idempotent by seq
        self._max_seq = seq
        if cmd == "verdict":
            self._verdict_epoch = max(self._verdict_epoch, obj["epoch"])
            if self._late_epoch is not None and obj["epoch"] >= self._late_epoch:
                self._late_epoch = None
            return
        late = self._late_epoch is not None
        epoch, step = self._position
        try:
            if cmd == "set_lr":
                self._set_lr(handle, float(obj["lr"]))
            elif cmd == "scale_lr":
                self._scale_lr(handle, float(obj["factor"]))
            elif cmd == "set_hparam":
                handle.set_hparam(obj["name"], float(obj["value"]))
            elif cmd == "checkpoint":
                if self.checkpoint(handle, obj.get("name"), epoch=epoch, step=step, seq=seq) is None:
                    return  # the error record is written
            elif cmd == "rollback":
                self._rollback(handle, obj)
            elif cmd == "set_schedule":
                self._set_schedule(handle, obj["schedule"])
            elif cmd == "clear_schedule":
                self._schedule = None
                self._multiplier = 1.0
            elif cmd == "retain":
                self._retain = frozenset(obj["keep"])
                self._prune()
            elif cmd == "configure":
                self._configure(obj)
        except Exception as exc:  # a refused command never stops training
            self._error(seq, cmd, f"{cmd} failed: {type(exc).__name__}: {exc}")
            return
        epoch, step = self._position  # a rollback moved it
        lr = self._lr(handle)
        self._write(AckRecord(time=time.time(), seq=seq, cmd=cmd, epoch=epoch, step=step, lr=lr, late=late))
        if cmd not in HOUSEKEEPING_COMMANDS:  # checkpoints and cadence: the ack record is enough
            warn(describe_command(obj, epoch, step, lr, late))
        if cmd == "stop":
            handle.request_stop()

    def _rollback(self: Any, handle: OptimizerHandle, obj: Mapping[str, Any]) -> None:
        """Load checkpoint ``obj["checkpoint"]`` in the running process (see ``Agent`` docs)."""
        name = obj["checkpoint"]
        store = CheckpointStore(obj["from_run"]) if obj.get("from_run") else self.checkpoints  # PBT: a donor's
        entry = store.verify(name)  # CheckpointError: refused, nothing loaded
        epoch, now = self._position
        handle.load_state(store.path_of(entry), entry.meta)
        step = entry.step
        handle.set_step(step)  # the global step goes back to the checkpoint's
        self._position = (epoch, step)
        self._reset_buckets(step)
        self._restore_schedule(entry)
        if self._schedule is not None:
            self._apply_schedule(handle, step)
        if obj.get("lr") is not None:
            self._set_lr(handle, float(obj["lr"]))
        skip = obj.get("skip_batches") or 0
        since = now - entry.step
        if skip > since:
            warn(
                f"rollback to {name!r}: skip_batches={skip}, but the data is not rewound: the {since} "
                f"batch(es) trained since the checkpoint are the ones skipped"
            )

    def _configure(self: Any, obj: Mapping[str, Any]) -> None:
        changes = {k: obj[k] for k in CADENCE_FIELDS if obj.get(k) is not None}
        for name, value in changes.items():
            check_setting(name, value, "configure")
        self.settings = replace(self.settings, **changes)
        self._reset_buckets(self._position[1])
