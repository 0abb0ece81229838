"""The supervisor's writing side: commands to control.jsonl, lines to journal.jsonl.

:class:`CommandChannel` numbers commands (``seq`` from the history on, so a resumed
supervisor continues the sequence), remembers which were not yet acknowledged, and
re-sends those after a restart (:meth:`resend_unacked`), each once, except the moot
ones (an LR change followed by a later ``set_lr``; a ``set_hparam`` followed by
another of the same name).

Disk full: a write failing with ENOSPC puts the channel in a *degraded* condition
(``degraded`` holds why). Journal lines are then kept in memory and written, with a
``"late": "<why>"`` note, once space returns (:meth:`flush`, called every tick); no
command other than a ``verdict`` is sent while degraded (decisions are journaled as
suppressed), and training is never killed for it. Other OSErrors propagate.

Example::

    channel = CommandChannel(ControlWriter(paths.control, paths.bell), Appender(paths.journal), clock)
    seq = channel.send(SetLRCommand(0.01), reason="plateau")
    channel.journal(EventEntry("started", "..."))
"""

from __future__ import annotations

import errno
from typing import Any, Callable

from lrsup.supervisor.protocol.commands import (
    Command,
    ScaleLRCommand,
    SetHparamCommand,
    SetLRCommand,
    VerdictCommand,
    decode_command,
    encode_command,
)
from lrsup.supervisor.protocol.journal import JournalEntry, journal_line

NOT_RESENT = (VerdictCommand.cmd,)


class CommandChannel:
    """Writes commands and journal lines; tolerant of a full disk.

    Args:
        control: writer with ``write(obj)`` / ``close()`` (an Appender on control.jsonl).
        journal: writer with ``write(obj)`` / ``close()`` (an Appender on journal.jsonl).
        clock: object with ``time()``.
        seq: int, the highest seq already in control.jsonl.
    """

    def __init__(self, control: Any, journal: Any, clock: Any, *, seq: int = 0) -> None:
        self.control, self._journal, self.clock = control, journal, clock
        self.seq = seq
        self.unacked: dict[int, dict[str, Any]] = {}
        self.pending: list[dict[str, Any]] = []  # journal lines waiting for disk space
        self.degraded: str | None = None
        self.recoveries = 0  # how many times the degraded condition cleared

    # -- journal --------------------------------------------------------------
    def journal(self, entry: JournalEntry) -> None:
        """Append one journal line (queued while the disk is full)."""
        obj = journal_line(entry, self.clock.time())
        if self.pending:
            self.pending.append(obj)
            self.flush()
            return
        try:
            self._journal.write(obj)
        except OSError as exc:
            self._full(exc, "journal")
            self.pending.append(obj)

    def flush(self) -> bool:
        """Retry the queued journal lines; True when the condition just cleared."""
        if not self.pending:
            return False
        why = self.degraded or "disk full"
        while self.pending:
            obj = self.pending[0]
            try:
                self._journal.write({**obj, "late": f"journaled late: {why}"})
            except OSError as exc:
                self._full(exc, "journal")
                return False
            self.pending.pop(0)
        was, self.degraded = self.degraded, None
        self.recoveries += was is not None
        return was is not None

    def _full(self, exc: OSError, what: str) -> None:
        if exc.errno != errno.ENOSPC:
            raise exc
        self.degraded = f"disk full: the {what} cannot be written ({exc.strerror or exc})"

    # -- commands -------------------------------------------------------------
    def send(self, command: Command, *, reason: str | None = None) -> int | None:
        """Write one command; its seq, or None when not sent (degraded). ProtocolError if invalid."""
        obj = encode_command(command, seq=self.seq + 1, time=self.clock.time(), reason=reason)
        cmd = command.cmd
        if self.degraded is not None and cmd != VerdictCommand.cmd:
            return None
        try:
            self.control.write(obj)
        except OSError as exc:
            self._full(exc, "control file")
            return None
        self.seq += 1
        if cmd not in NOT_RESENT:
            self.unacked[self.seq] = obj
        return self.seq

    def settled(self, seq: int | None) -> None:
        """The trainer acknowledged (or refused) command ``seq``."""
        if seq is not None:
            self.unacked.pop(seq, None)

    def sent_command(self, seq: int | None) -> Command | None:
        """The command sent as ``seq`` while it is not yet acknowledged (None once settled, or for a verdict)."""
        obj = self.unacked.get(seq) if seq is not None else None
        return decode_command(obj).command if obj is not None else None

    def resend_unacked(self, moot: Callable[[Command], str | None] | None = None) -> list[tuple[int, int | None, str]]:
        """Re-send the unacknowledged commands (same content, new seq), each once; moot ones dropped.

        ``moot``: why a command is no longer meaningful (None: it is), asked of each.
        Returns (old seq, new seq or None, what happened) for the journal.
        """
        old = [decode_command(self.unacked[s]) for s in sorted(self.unacked)]
        self.unacked.clear()
        out: list[tuple[int, int | None, str]] = []
        for i, line in enumerate(old):
            command = line.command
            why = moot(command) if moot is not None else None
            if why is not None:
                out.append((line.seq, None, why))
                continue
            later_commands = [o.command for o in old[i + 1 :]]
            if isinstance(command, (SetLRCommand, ScaleLRCommand)) and any(
                isinstance(o, SetLRCommand) for o in later_commands
            ):
                out.append((line.seq, None, "moot: a later set_lr replaces it"))
                continue
            if isinstance(command, SetHparamCommand) and any(
                isinstance(o, SetHparamCommand) and o.name == command.name for o in later_commands
            ):
                out.append((line.seq, None, f"moot: a later set_hparam {command.name} replaces it"))
                continue
            new = self.send(command, reason=line.reason)
            out.append((line.seq, new, "re-sent after the restart" if new else f"not sent: {self.degraded}"))
        return out

    def close(self) -> None:
        self.control.close()
        self._journal.close()
