"""The operator channel: requests from other terminals to a running supervisor.

``lrsup set-lr/hold/release/stop RUN_DIR`` (the CLI) append one JSON line each to
``requests.jsonl`` in the run directory; the runner reads new lines every tick
(:class:`RequestReader`, following by offset) and applies each once
(``Runner.apply_request``: a ``request`` journal line with the request's place in the
file first, then its effect, so that ``lrsup resume`` goes on after it):

- ``set_lr`` (``lr``): a ``set_lr`` command, journaled as ``{"type": "override", "who", "why", "lr"}``;
  policies carry on from the new LR (the records show it).
- ``hold``: policies still see every record, but their decisions are journaled as
  suppressed ``held by <who>`` and send no command. ``release`` ends it.
- ``stop``: a graceful stop (a ``stop`` command: finish the epoch, end cleanly), forced
  after ``[run] stop_timeout`` seconds.
- ``exploit`` (``peer``, ``checkpoint``, ``epoch``, ``hparams``, ``old``): population-based
  training (lrsup.supervisor.queue.population). A ``rollback`` command to the checkpoint of the
  donor run ``peer`` (the agent verifies it by the donor's manifest), with ``hparams["lr"]`` as
  its LR, then one ``set_hparam`` per other hyperparameter; journaled as an ``exploit`` event.
  A ``checkpoint`` command named ``exploit-EEEE-<checkpoint>`` follows: the member's new origin
  (its engine forgets every older checkpoint of its own on that record:
  lrsup.supervisor.engine.checkpoint_book, ``EXPLOIT_BASE``).
- ``donate`` (same fields, ``peer`` the member that copied this run): a ``donated`` event, so
  that both runs' journals hold the exploit, and the donated checkpoint retained (an engine
  keep, ``pbt donation to <member>``) so that ``keep_last`` cannot prune it before the member
  has loaded it.
- ``donation_done`` (same fields): the member has loaded it, refused it or gone, or the
  donation timed out (the population coordinator says which): the keep is released.
- ``park`` / ``unpark``: a population with more members than the queue's slots takes turns
  (as Ray's PBT pauses trials): ``park`` ends the trainer now and leaves the supervisor waiting
  with no trainer (state ``parked``: its slot is free), ``unpark`` starts a new attempt from the
  newest known-good checkpoint. The population parks a member at a boundary; the queue's
  scheduler unparks it when a slot is free (lrsup.supervisor.run.lifecycle, ``PARKED``).

Each of these requests' commands is planned before its ``request`` journal line, whose ``seq``
is the seq its last command is to get, and its event is journaled last: ``lrsup resume`` acts
again on a request whose command or event is missing (exactly once: docs/protocol.md, Delivery;
``pbt_done``). A donor's resumed supervisor rebuilds its donation keeps from the journal's
events (``restore_donations``), whatever its snapshot saw.

A request line::

    {"v": 1, "op": "set_lr", "lr": 0.001, "who": "ana@gpu3", "why": "loss exploding", "time": 1790000000.0}

Example::

    send_request(Path("runs/night-1"), "set_lr", lr=1e-3, why="manual cut")
"""

from __future__ import annotations

import getpass
import math
import os
import socket
import time as _time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from lrsup.supervisor import protocol
from lrsup.supervisor.engine.checkpoint_book import EXPLOIT_BASE
from lrsup.supervisor.protocol.commands import (
    CheckpointCommand,
    Command,
    RetainCommand,
    RollbackCommand,
    SetHparamCommand,
    is_valid_lr,
)
from lrsup.supervisor.protocol.journal import DecisionEntry, EventEntry
from lrsup.supervisor.protocol.jsonl import JsonlReader, ReadStats
from lrsup.supervisor.rundir.layout import RunDirError, check_run_file

REQUESTS_FILE = protocol.REQUESTS_FILE
OPS = ("set_lr", "hold", "release", "stop", "exploit", "donate", "donation_done", "park", "unpark")
_FIELDS = {"v", "op", "lr", "who", "why", "time", "peer", "checkpoint", "epoch", "hparams", "old"}
PBT_OPS = ("exploit", "donate", "donation_done")
DONATION = "pbt donation to "  # + the member's name: the owner of the donor's engine keep
# The journal event each PBT request leaves last (apply_pbt): until it is journaled, ``lrsup resume``
# acts on the request again (pbt_done); the donations' events rebuild the donor's keeps.
PBT_EVENTS = {"exploit": "exploit", "donate": "donated", "donation_done": "donation_released"}
DONATION_EVENTS = {PBT_EVENTS["donate"]: "donate", PBT_EVENTS["donation_done"]: "donation_done"}


class RequestError(ValueError):
    """An invalid operator request; the message quotes the offending value."""


@dataclass(frozen=True)
class Request:
    """One validated operator request."""

    op: str
    who: str
    time: float
    lr: float | None = None
    why: str | None = None
    peer: str | None = None
    checkpoint: str | None = None
    epoch: int | None = None
    hparams: dict | None = None
    old: dict | None = None


def whoami() -> str:
    """``user@host`` of this terminal."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def validate_request(obj: Mapping[str, Any]) -> Request:
    """Check one decoded request line; raise RequestError naming the problem."""
    if obj.get("v") != protocol.PROTOCOL_VERSION:
        raise RequestError(f"unsupported request version {obj.get('v')!r}")
    unknown = set(obj) - _FIELDS
    if unknown:
        raise RequestError(f"unknown request field(s) {sorted(unknown)}")
    op = obj.get("op")
    if op not in OPS:
        raise RequestError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")
    who, why, when = obj.get("who"), obj.get("why"), obj.get("time")
    if not isinstance(who, str) or not who:
        raise RequestError(f"who must be a non-empty string (user@host), got {who!r}")
    if why is not None and not isinstance(why, str):
        raise RequestError(f"why must be a string, got {why!r}")
    if not isinstance(when, (int, float)) or isinstance(when, bool):
        raise RequestError(f"time must be a number, got {when!r}")
    lr = obj.get("lr")
    if op == "set_lr":
        if not is_valid_lr(lr):
            raise RequestError(f"set_lr needs lr, a finite number >= 0, got {lr!r}")
        lr = float(lr)
    elif lr is not None:
        raise RequestError(f"{op} takes no lr (got {lr!r})")
    if op in PBT_OPS:
        return _validate_pbt(obj, Request(op=op, who=who, time=float(when), why=why))
    extra = sorted(k for k in ("peer", "checkpoint", "epoch", "hparams", "old") if k in obj)
    if extra:
        raise RequestError(f"{op} takes no {', '.join(extra)}")
    return Request(op=op, who=who, time=float(when), lr=lr, why=why)


def _validate_pbt(obj: Mapping[str, Any], base: Request) -> Request:
    """``exploit``/``donate``/``donation_done``: peer (an absolute run directory), checkpoint, epoch, hparams, old."""
    op, peer, name, epoch = base.op, obj.get("peer"), obj.get("checkpoint"), obj.get("epoch")
    if not isinstance(peer, str) or not os.path.isabs(peer) or "\x00" in peer:
        raise RequestError(f"{op} needs peer, an absolute run directory, got {peer!r}")
    if not protocol.is_checkpoint_name(name):
        raise RequestError(f"{op} needs checkpoint, a checkpoint name, got {name!r}")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise RequestError(f"{op} needs epoch, an int >= 0, got {epoch!r}")
    tables: dict[str, dict[str, float]] = {}
    for key in ("hparams", "old"):
        table = obj.get(key, {})
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and k and _finite(v) and v >= 0 for k, v in table.items()
        ):
            raise RequestError(f"{op}: {key} must map names to finite numbers >= 0, got {table!r}")
        tables[key] = {k: float(v) for k, v in table.items()}
    return replace(base, peer=peer, checkpoint=name, epoch=epoch, hparams=tables["hparams"], old=tables["old"])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def send_request(
    run_dir: str | os.PathLike[str],
    op: str,
    *,
    lr: float | None = None,
    why: str | None = None,
    who: str | None = None,
    time: float | None = None,
    **pbt: Any,
) -> Request:
    """Append a validated request to ``run_dir/requests.jsonl``; return it.

    Raises RequestError (invalid request) or RunDirError (no run directory there, or an
    unsafe requests file).
    """
    root = Path(run_dir)
    if not (root / protocol.STATE_FILE).is_file() and not (root / protocol.CONFIG_FILE).is_file():
        raise RunDirError(f"{str(root)!r} is not an lrsup run directory (no {protocol.CONFIG_FILE})")
    obj: dict[str, Any] = {
        "v": protocol.PROTOCOL_VERSION,
        "op": op,
        "who": who or whoami(),
        "time": _time.time() if time is None else time,
    }
    if lr is not None:
        obj["lr"] = lr
    if why is not None:
        obj["why"] = why
    obj.update(pbt)  # exploit/donate: peer, checkpoint, epoch, hparams, old
    request = validate_request(obj)
    path = root / REQUESTS_FILE
    check_run_file(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, (protocol.dumps(obj) + "\n").encode())
    finally:
        os.close(fd)
    return request


class RequestReader:
    """Reads requests appended since the last call; bad lines are kept in ``errors``, never raised.

    A line that is not a valid request (not JSON, beyond the protocol's bounds, over-long,
    an unknown op, a bad value) becomes one message in ``errors`` (the runner journals each
    as ``bad_request``) and is counted in ``stats.garbage``.

    Args:
        path: Path, the requests file (it need not exist yet).
        offset: int, where to start (resume: past the requests already handled).
    """

    def __init__(self, path: str | os.PathLike[str], offset: int = 0) -> None:
        self.path = Path(path)
        self.errors: list[str] = []
        self.refused: str | None = None  # set by the runner when the file became unsafe
        self._reader = JsonlReader(self.path, offset)

    @property
    def offset(self) -> int:
        """Bytes read so far."""
        return self._reader.offset

    @property
    def stats(self) -> ReadStats:
        return self._reader.stats

    def read(self) -> list[Request]:
        """New complete request lines, validated (RunDirError if the file became unsafe)."""
        if not self._reader.changed():
            return []
        check_run_file(self.path)
        out = []
        before = self.stats.garbage
        for obj in self._reader.objects(self._reader.read_lines()):
            try:
                out.append(validate_request(obj))
            except RequestError as exc:
                self.stats.bad(str(exc))
        new = self.stats.garbage - before
        if new:
            self.errors.extend(f"bad request skipped: {m}" for m in list(self.stats.last_errors)[-new:])
            if new > len(self.stats.last_errors):
                self.errors.append(f"... {new - len(self.stats.last_errors)} more bad requests skipped")
        return out


@dataclass(frozen=True)
class Planned:
    """One command a PBT request is to send, its reason, and the engine decision it carries (a retain)."""

    command: Command
    reason: str
    decision: Any = None


def base_name(request: Request) -> str:
    """The name of the checkpoint a member takes right after an exploit (its new origin)."""
    return f"{EXPLOIT_BASE}{request.epoch or 0:04d}-{request.checkpoint}"[:100]


def plan_pbt(runner: Any, request: Request) -> list[Planned]:
    """The commands an ``exploit``/``donate``/``donation_done`` request is to send, in order.

    Planned before the request's journal line, which carries the seq of the last one. For
    ``donate``/``donation_done`` this changes the engine's keep (the retain decision, if any).
    """
    peer = os.path.basename(request.peer or "")
    if request.op == "exploit":
        assert request.checkpoint is not None  # validate_request refuses an exploit without one
        new = request.hparams or {}
        reason = f"population: exploit {peer}'s {request.checkpoint} ({request.who})"
        rollback = RollbackCommand(checkpoint=request.checkpoint, lr=new.get("lr"), from_run=request.peer)
        hparams = [SetHparamCommand(name=k, value=v) for k, v in new.items() if k != "lr"]
        base = CheckpointCommand(name=base_name(request))
        origin = f"population: the new origin after exploiting {peer}'s {request.checkpoint}"
        return [Planned(rollback, reason)] + [Planned(c, reason) for c in hparams] + [Planned(base, origin)]
    keep = getattr(runner.engine, "keep", None)
    if keep is None:  # an engine that tracks no checkpoints
        return []
    owner, names = donation_keep(request.op, request.peer, request.checkpoint)
    return [Planned(d.command, d.action.reason, d) for d in keep(owner, names) if d.command is not None]


def donation_keep(op: str, peer: str | None, checkpoint: str | None) -> tuple[str, tuple[str, ...]]:
    """The engine keep a ``donate``/``donation_done`` sets: its owner and what it keeps (``()``: released).

    One keep per member (``pbt donation to <member's name>``): a later donation to the same
    member replaces it.
    """
    owner = DONATION + os.path.basename(peer or "")
    return owner, ((checkpoint,) if op == "donate" and checkpoint else ())


def journaled_donations(events: Iterable[EventEntry]) -> dict[str, tuple[str, ...]]:
    """The donation keeps the journal's ``donated``/``donation_released`` events leave, by owner.

    The last event per member decides (donated: its checkpoint is kept; released: nothing);
    an event without a valid peer or checkpoint (not written by apply_pbt) is skipped.

    Example::

        journaled_donations([EventEntry("donated", fields={"peer": "/q/m1", "checkpoint": "epoch-0002"})])
        # {"pbt donation to m1": ("epoch-0002",)}
    """
    keeps: dict[str, tuple[str, ...]] = {}
    for event in events:
        op, peer, name = DONATION_EVENTS.get(event.event), event.fields.get("peer"), event.fields.get("checkpoint")
        if op is None or not isinstance(peer, str) or not peer or not protocol.is_checkpoint_name(name):
            continue
        owner, names = donation_keep(op, peer, name)
        keeps[owner] = names
    return keeps


def restore_donations(engine: Any, events: Iterable[EventEntry]) -> None:
    """Give an engine rebuilt by ``lrsup resume`` the donation keeps its journal holds (``events``).

    The journal is written as each donation is handled, the snapshot only every
    ``snapshot_interval`` seconds: a snapshot older than the last donation event (or none)
    must not lose the keep, nor keep a released one. The retain each change implies is not
    sent: apply_pbt wrote it to control.jsonl before it journaled the event, so the agent
    already has it (and a new attempt gets it with the last retain).
    """
    keep = getattr(engine, "keep", None)
    if keep is None:  # an engine that tracks no checkpoints
        return
    for owner, names in journaled_donations(events).items():
        if engine.state.keeps.get(owner, ()) != names:  # the snapshot (if any) is behind the journal
            keep(owner, names)


def pbt_done(op: str, events: Iterable[str]) -> bool:
    """Whether a request journaled before a supervisor's death was carried out to its end.

    ``events``: the names of the events journaled after its ``request`` line. A PBT request
    ends with its event (PBT_EVENTS): before that, ``lrsup resume`` acts on it again, sending
    only the commands control.jsonl lacks (``apply_pbt``'s ``skip``). Other requests: True.
    """
    return op not in PBT_EVENTS or PBT_EVENTS[op] in events


def apply_pbt(runner: Any, request: Request, planned: list[Planned], skip: int = 0) -> None:
    """Send ``planned`` (but the first ``skip``, written before a supervisor's death), then journal the event.

    ``exploit``: the rollback to the donor's checkpoint with the new LR, the other
    hyperparameters, the new origin's checkpoint. ``donate``/``donation_done``: the retain
    decision that keeps or releases the donated checkpoint.
    """
    new, old = request.hparams or {}, request.old or {}
    peer = os.path.basename(request.peer or "")
    fields = {"peer": request.peer, "checkpoint": request.checkpoint, "at_epoch": request.epoch, "old": old, "new": new}
    first = runner.channel.seq + 1 - skip  # the seq planned[0] got or gets
    seqs: list[int | None] = []
    for index, plan in enumerate(planned):
        seq = first + index if index < skip else runner.send(plan.command, reason=plan.reason)
        seqs.append(seq)
        if plan.decision is not None and not (index < skip and runner.decision_journaled(seq)):
            d = plan.decision  # the engine's retain: journaled as its decisions are, once
            suppressed = None if seq is not None else f"not sent: {runner.channel.degraded}"
            runner.journal(
                DecisionEntry(seq, d.action.policy, d.action.kind, None, plan.reason, d.epoch, d.step, suppressed)
            )
            if isinstance(plan.command, RetainCommand):
                runner.retained = list(plan.command.keep)
    if request.op == "donate":
        runner.event(
            PBT_EVENTS["donate"],
            f"{peer} copied checkpoint {request.checkpoint} at its epoch {request.epoch}; kept until it is loaded",
            **fields,
        )
        return
    if request.op == "donation_done":
        runner.event(PBT_EVENTS["donation_done"], f"{peer} is done with checkpoint {request.checkpoint}", **fields)
        return
    seq = seqs[0] if seqs else None
    changes = ", ".join(f"{k} {old.get(k, float('nan')):g} -> {v:g}" for k, v in new.items())
    runner.event(
        PBT_EVENTS["exploit"],
        f"copied {peer}'s checkpoint {request.checkpoint} at epoch {request.epoch}; {changes}",
        seq=seq,
        seqs=seqs,
        base=base_name(request),
        suppressed=None if seq is not None else f"not sent: {runner.channel.degraded}",
        **fields,
    )
