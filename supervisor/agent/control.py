"""Commands in: reading control.jsonl and applying each command once, in order.

Owns ``ControlReader`` (the complete lines appended since the last read, and the doorbell)
and ``CommandHandler``, the agent's collaborator that polls, waits for verdicts and applies
commands (``set_lr``, ``rollback``, ``configure``...), answering each with an ``ack`` or an
``error`` record. Standard library only.

The agent accepts only the next ``seq`` (one more than the last it handled; the supervisor
numbers from 1 without gaps). A line with any other seq is answered with an ``error``
record and changes nothing: a forged or stale line with a huge seq cannot make the agent
ignore every later command, and a second line with a seq already handled is reported
instead of silently dropped. A line it cannot read (not JSON, beyond the protocol's bounds,
over-long, not a valid command) is one ``error`` record too, never an exception; the first
of them is also said on stderr.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping

from lrsup.supervisor.agent.checkpointing import Checkpointer
from lrsup.supervisor.agent.checkpoints import CheckpointStore
from lrsup.supervisor.agent.handle import OptimizerHandle
from lrsup.supervisor.agent.lr_control import LrControl
from lrsup.supervisor.agent.records import RecordWriter, describe_command, lr_of, warn
from lrsup.supervisor.agent.settings import check_setting
from lrsup.supervisor.protocol.doorbell import BellWatch
from lrsup.supervisor.protocol.jsonl import JsonlReader, ReadStats
from lrsup.supervisor.protocol.wire import (
    CADENCE_FIELDS,
    CONTROL_FILE,
    HOUSEKEEPING_COMMANDS,
    AckRecord,
    ProtocolError,
    loads,
    short,
    validate_command,
)

# The verdict wait polls control.jsonl, sleeping FIRST_DELAY at first and growing to MAX_DELAY.
FIRST_DELAY = 0.0005
MAX_DELAY = 0.005


class ControlReader:
    """The complete lines appended to control.jsonl since the last read, and the doorbell.

    ``bell`` is the mapped ``control.bell`` (a ``BellWatch``, or None without one): its
    ``changed()`` says whether the supervisor rang since the last look (a compare of 8 mapped
    bytes, see lrsup.supervisor.protocol.doorbell). The reading is ``JsonlReader``'s, with
    ``stat_every=path_check``: ``read_lines`` is cheap when nothing changed (one ``os.fstat``
    of the open file and a comparison); the paths themselves are looked at again at most every
    ``path_check`` seconds, or at once while control.jsonl is not open: a control file
    replaced (another inode) or shrunk is then read again from its start (the caller's seq
    check keeps that harmless), and a bell that appeared or was replaced is mapped afresh.
    Over-long lines are counted in ``stats`` (and skipped).

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
        self._reader = JsonlReader(path, 0, stat_every=path_check, clock=clock)
        self.stats: ReadStats = self._reader.stats  # over-long lines skipped (``overlong``)

    def read_lines(self) -> list[bytes]:
        reader = self._reader
        looked = reader.next_stat
        lines = reader.read_lines()
        if reader.next_stat != looked:  # the path was looked at: the bell too
            self._check_bell()
        return lines

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

    def close(self) -> None:
        self._reader.close()
        if self.bell is not None:
            self.bell.close()
            self.bell = None


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class CommandHandler:
    """Reads control.jsonl and applies each command once, in seq order (see the module docstring).

    Args:
        reader: ControlReader.
        records: RecordWriter, for acks and error records.
        lr: LrControl.
        checkpointer: Checkpointer.
        position: callable returning the training position (epoch or None, step).
        rewind: callable(step), called after a rollback set the global step back to ``step``.
        reconfigure: callable(changes), called with a ``configure`` command's checked settings.
        verdict_timeout: callable returning the seconds a verdict wait may take.
    """

    def __init__(
        self,
        reader: ControlReader,
        records: RecordWriter,
        lr: LrControl,
        checkpointer: Checkpointer,
        *,
        position: Callable[[], tuple[int | None, int]],
        rewind: Callable[[int], None],
        reconfigure: Callable[[Mapping[str, Any]], None],
        verdict_timeout: Callable[[], float],
        probing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.reader = reader
        self.next_seq = 1  # the only seq accepted next
        self.verdict_epoch = -1  # the highest epoch a verdict has been read for in this fit
        self.late_epoch: int | None = None  # waiting timed out for this epoch: acks are late until its verdict
        self._records = records
        self._lr = lr
        self._checkpointer = checkpointer
        self._position = position
        self._rewind = rewind
        self._reconfigure = reconfigure
        self._verdict_timeout = verdict_timeout
        self._probing = probing  # inside the range test's probe: its steps are not the run's
        self._warned_garbage = False
        self._overlong_seen = 0

    @property
    def max_seq(self) -> int:
        """The last seq handled (0: none)."""
        return self.next_seq - 1

    def skip_history(self) -> None:
        """Count the commands already in control.jsonl as handled: they were meant for an earlier
        trainer process. Only an unbroken run of seqs from the next one counts (a stray huge seq
        in the history moves nothing)."""
        for line in self.reader.read_lines():
            try:
                seq = int_or_none(loads(line).get("seq"))
            except ProtocolError:
                continue
            if seq == self.next_seq:
                self.next_seq += 1

    def begin_fit(self, initial_epoch: int) -> None:
        """A new fit: verdicts read so far belong to an earlier one (below the start barrier's
        epoch, ``initial_epoch - 1``, so that only a verdict read from now on counts)."""
        self.verdict_epoch = initial_epoch - 2
        self.late_epoch = None

    def poll(self, handle: OptimizerHandle) -> None:
        """Apply every command appended since the last poll."""
        for line in self.reader.read_lines():
            if line.strip():
                self._handle_line(handle, line)
        overlong = self.reader.stats.overlong
        if overlong != self._overlong_seen:
            for _ in range(overlong - self._overlong_seen):
                self._garbage(f"{CONTROL_FILE}: a line longer than the protocol's limit was skipped")
            self._overlong_seen = overlong

    def wait_for_verdict(self, handle: OptimizerHandle, epoch: int) -> bool:
        """Apply commands until the verdict for ``epoch`` arrives; False on timeout."""
        deadline = time.monotonic() + self._verdict_timeout()
        delay = FIRST_DELAY
        while True:
            self.poll(handle)
            if self.verdict_epoch >= epoch:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, MAX_DELAY)

    def _garbage(self, message: str) -> None:
        """An unreadable line: an error record always, a stderr line the first time."""
        self._records.error(None, None, message, quiet=self._warned_garbage)
        if not self._warned_garbage:
            self._warned_garbage = True
            warn(f"further unreadable lines in {CONTROL_FILE} are reported in error records only")

    def _handle_line(self, handle: OptimizerHandle, line: bytes) -> None:
        try:
            obj = loads(line)
        except ProtocolError as exc:
            self._garbage(f"{CONTROL_FILE}: {exc}")
            return
        try:
            validate_command(obj)
        except ProtocolError as exc:
            cmd = obj.get("cmd")
            seq = int_or_none(obj.get("seq"))
            if seq == self.next_seq:
                self.next_seq += 1  # refused, answered: the supervisor goes on with the next
            self._records.error(seq, short(cmd) if isinstance(cmd, str) else None, str(exc))
            return
        seq, cmd = obj["seq"], obj["cmd"]
        if seq != self.next_seq:
            what = "was handled already" if seq < self.next_seq else "is not the next"
            self._records.error(
                seq, cmd, f"{cmd} command ignored: seq {seq} {what} (expected seq {self.next_seq})", quiet=True
            )
            return
        self.next_seq += 1
        if cmd == "verdict":
            self._verdict(seq, obj["epoch"])
            return
        self._apply(handle, seq, cmd, obj)

    def _verdict(self, seq: int, epoch: int) -> None:
        position = self._position()[0]
        if position is not None and epoch > position:
            self._records.error(seq, "verdict", f"verdict for epoch {epoch} refused: training is at epoch {position}")
            return
        self.verdict_epoch = max(self.verdict_epoch, epoch)
        if self.late_epoch is not None and epoch >= self.late_epoch:
            self.late_epoch = None

    def _apply(self, handle: OptimizerHandle, seq: int, cmd: str, obj: Mapping[str, Any]) -> None:
        late = self.late_epoch is not None
        epoch, step = self._position()
        try:
            if cmd == "set_lr":
                self._lr.set_lr(handle, float(obj["lr"]), step)
            elif cmd == "scale_lr":
                self._lr.scale_lr(handle, float(obj["factor"]), step)
            elif cmd == "set_hparam":
                handle.set_hparam(obj["name"], float(obj["value"]))
            elif cmd == "checkpoint":
                if self._checkpointer.save(handle, obj.get("name"), epoch=epoch, step=step, seq=seq) is None:
                    return  # the error record is written
            elif cmd == "rollback":
                self._rollback(handle, obj)
            elif cmd == "set_schedule":
                self._lr.set_schedule(handle, obj["schedule"], step)
            elif cmd == "clear_schedule":
                self._lr.clear(handle)
            elif cmd == "retain":
                self._checkpointer.retain(obj["keep"])
            elif cmd == "configure":
                self._configure(obj)
        except Exception as exc:  # a refused command never stops training
            self._records.error(seq, cmd, f"{cmd} failed: {type(exc).__name__}: {short(str(exc))}")
            return
        epoch, step = self._position()  # a rollback moved it
        lr = lr_of(handle)
        self._lr.leave(lr)  # what lrsup left: an epoch's LR other than this was moved by something else
        self._records.write(AckRecord(time=time.time(), seq=seq, cmd=cmd, epoch=epoch, step=step, lr=lr, late=late))
        if cmd not in HOUSEKEEPING_COMMANDS:  # checkpoints and cadence: the ack record is enough
            warn(describe_command(obj, None if self._probing() else epoch, step, lr, late, probe=self._probing()))
        if cmd == "stop":
            handle.request_stop()

    def _rollback(self, handle: OptimizerHandle, obj: Mapping[str, Any]) -> None:
        """Load checkpoint ``obj["checkpoint"]`` in the running process (see ``Agent`` docs)."""
        name = obj["checkpoint"]
        store = CheckpointStore(obj["from_run"]) if obj.get("from_run") else self._checkpointer.store  # PBT: a donor's
        entry = store.verify(name)  # CheckpointError: refused, nothing loaded
        now = self._position()[1]
        handle.load_state(store.path_of(entry), entry.meta)
        step = entry.step
        handle.set_step(step)  # the global step goes back to the checkpoint's
        self._rewind(step)
        self._lr.restore(entry)
        if self._lr.schedule is not None:
            self._lr.apply(handle, step)
        if obj.get("lr") is not None:
            self._lr.set_lr(handle, float(obj["lr"]), step)
        skip = obj.get("skip_batches") or 0
        since = now - entry.step
        if skip > since:
            warn(
                f"rollback to {name!r}: skip_batches={skip}, but the data is not rewound: the {since} "
                f"batch(es) trained since the checkpoint are the ones skipped"
            )

    def _configure(self, obj: Mapping[str, Any]) -> None:
        changes = {k: obj[k] for k in CADENCE_FIELDS if obj.get(k) is not None}
        for name, value in changes.items():
            changes[name] = check_setting(name, value, "configure")
        self._reconfigure(changes)
