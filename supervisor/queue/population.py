"""Population-based training inside ``queue run``: the coordinator's eyes and hands.

``lrsup sweep --pbt`` writes ``runs/.queue/pbt/<GROUP>.json`` (the ``[population]`` settings,
then the coordinator's state). Each tick of ``queue run``, :class:`Populations` follows every
member's ``metrics.jsonl`` (the protocol's Follower, incrementally), builds one
:class:`~lrsup.supervisor.queue.pbt.MemberView` per member, asks the pure
:class:`~lrsup.supervisor.queue.pbt.Coordinator`, saves its state, then sends each decision
through the members' operator channel: ``exploit`` to the member (its supervisor sends the
``rollback`` to the donor's checkpoint and the new hyperparameters: no pause, no restart) and
``donate`` to the donor (journaled; the donor keeps the checkpoint). A member is alive while its
entry is ``running``.

Donations: the donor's supervisor retains a donated checkpoint (its ``keep_last`` would prune
it otherwise) until ``donation_done``, which the coordinator sends once the member has answered
a rollback since the exploit (an ack: loaded; an error: refused), has stopped running, or
``DONATION_TIMEOUT`` seconds have passed. Open donations are saved in the group's file with the
coordinator's state, so a ``queue run`` that dies releases them when it comes back.

Example::

    populations = Populations(Path("runs"))
    populations.tick(store.entries(), emit)   # once per queue tick
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from lrsup.supervisor import protocol
from lrsup.supervisor.config import PopulationSettings
from lrsup.supervisor.engine.checkpoint_book import EXPLOIT_BASE
from lrsup.supervisor.queue.local import inspect_run_dir
from lrsup.supervisor.queue.pbt import Coordinator, Exploit, MemberView
from lrsup.supervisor.queue.store import Entry, Status, queue_dir
from lrsup.supervisor.run.follower import Follower
from lrsup.supervisor.run.operator import send_request

PBT_DIR = "pbt"
DONATION_TIMEOUT = 600.0  # seconds a donor keeps a donated checkpoint for a member that never answers


def population_path(runs_dir: Path, group: str) -> Path:
    """Where a PBT group's settings and coordinator state live."""
    return queue_dir(runs_dir) / PBT_DIR / f"{group}.json"


def create_population(runs_dir: Path, group: str, settings: PopulationSettings) -> Path:
    """Write a new population file for ``group`` (``lrsup sweep --pbt``)."""
    path = population_path(runs_dir, group)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(path, {"group": group, "settings": settings.model_dump(mode="json"), "state": None, "hparams": {}})
    return path


def _write(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    os.replace(tmp, path)


# What the coordinator needs of a member's records; batch records and heartbeats never leave the member.
COORDINATED = (
    protocol.StartRecord,
    protocol.EpochRecord,
    protocol.CheckpointRecord,
    protocol.AckRecord,
    protocol.ErrorRecord,
)


class MemberRecords:
    """What one member's records said so far (fed incrementally, from any source)."""

    def __init__(self) -> None:
        self.epochs, self.step = 0, 0
        self.score: float | None = None
        self.lr: float | None = None
        self.checkpoints: list[tuple[str, int | None, int]] = []  # (name, epoch, step)
        self.rollbacks = 0  # the rollback commands it answered (ack or error): a donation's end
        self.planned: int | None = None  # the epochs its fit runs (its start record's), when known

    def feed(self, records: list[protocol.Record], metric: str) -> None:
        for record in records:
            if isinstance(record, protocol.StartRecord) and not record.probe:
                self.planned = record.epochs
            elif isinstance(record, protocol.EpochRecord):
                value = record.logs.get(metric)
                self.epochs, self.step, self.lr = record.epoch + 1, record.step, record.lr
                self.score = float(value) if isinstance(value, (int, float)) else math.nan
            elif isinstance(record, protocol.CheckpointRecord):
                if record.name.startswith(EXPLOIT_BASE):  # its new origin: the older ones hold abandoned weights
                    self.checkpoints.clear()
                self.checkpoints.append((record.name, record.epoch, record.step))
            elif isinstance(record, protocol.AckRecord) and record.lr is not None:
                self.lr = record.lr
            if isinstance(record, (protocol.AckRecord, protocol.ErrorRecord)) and record.cmd == "rollback":
                self.rollbacks += 1

    def known_good(self) -> str | None:
        """The newest checkpoint taken at or before the scored epoch's step (its score vouches for it)."""
        if self.score is None or math.isnan(self.score):
            return None
        good = [name for name, _, step in self.checkpoints if step <= self.step]
        return good[-1] if good else None


class RecordSource(Protocol):
    """Where a population's coordinator gets its members' new records."""

    def read(self, name: str, run_dir: Path) -> list[protocol.Record]: ...

    def close(self, name: str) -> None: ...


class FollowedRecords:
    """Members' records read from their run directories (``queue run`` on one machine)."""

    def __init__(self) -> None:
        self.followers: dict[str, Follower] = {}

    def read(self, name: str, run_dir: Path) -> list[protocol.Record]:
        follower = self.followers.get(name)
        if follower is None:
            follower = self.followers[name] = Follower(run_dir / protocol.METRICS_FILE, use_watchdog=False)
        return follower.read()

    def close(self, name: str) -> None:
        follower = self.followers.pop(name, None)
        if follower is not None:
            follower.stop()


class ReportedRecords:
    """Members' records as their reporters send them (``queue run --ray``: the coordinator actor's inbox).

    Each member's reporter sends its coordinated records in order, saying how many it sent
    before (``start``). The answer is how many this inbox holds, so a report that was lost, or an
    inbox that was started again (the actor restarted), is answered with a smaller count and the
    reporter sends again from there: every record arrives once, in order.
    """

    def __init__(self) -> None:
        self.received: dict[str, int] = {}
        self.inbox: dict[str, list[protocol.Record]] = {}

    def report(self, name: str, start: int, records: list[protocol.Record]) -> int:
        have = self.received.get(name, 0)
        if start != have:
            return have
        self.inbox.setdefault(name, []).extend(records)
        self.received[name] = have + len(records)
        return self.received[name]

    def read(self, name: str, run_dir: Path) -> list[protocol.Record]:
        return self.inbox.pop(name, [])

    def close(self, name: str) -> None:
        self.inbox.pop(name, None)


class Population:
    """One PBT group: its coordinator, its members' records, its file."""

    def __init__(self, path: Path, data: dict, source: RecordSource | None = None, take_turns: bool = True) -> None:
        self.path = path
        self.take_turns = take_turns  # park members at boundaries while others wait for a slot
        self.source: RecordSource = source if source is not None else FollowedRecords()
        self.group = data["group"]
        self.settings = PopulationSettings.model_validate(data["settings"])
        self.coordinator = Coordinator(self.settings)
        if data.get("state"):
            self.coordinator.load_state_dict(data["state"])
        self.hparams: dict[str, dict[str, float]] = data.get("hparams") or {}
        self.donations: list[dict[str, Any]] = data.get("donations") or []  # open: see the module docstring
        self.members: dict[str, MemberRecords] = {}

    def save(self) -> None:
        _write(
            self.path,
            {
                "group": self.group,
                "settings": self.settings.model_dump(mode="json"),
                "state": self.coordinator.state_dict(),
                "hparams": self.hparams,
                "donations": self.donations,
            },
        )

    def close(self) -> None:
        for name in self.members:
            self.source.close(name)
        self.members.clear()

    def views(self, entries: list[Entry]) -> tuple[list[MemberView], dict[str, Path]]:
        views, dirs = [], {}
        for entry in entries:
            if not entry.run_dir:
                continue
            run_dir = Path(entry.run_dir)
            name = run_dir.name
            member = self.members.setdefault(name, MemberRecords())
            member.feed(self.source.read(name, run_dir), self.settings.metric)
            hparams = {k: float(v) for k, v in (entry.params or {}).items() if k in self.settings.mutations and _num(v)}
            hparams.update(self.hparams.get(name, {}))
            if member.lr is not None:
                hparams["lr"] = member.lr
            alive = entry.status is Status.RUNNING
            parked = alive and inspect_run_dir(run_dir).parked
            ending = member.planned is not None and member.epochs >= member.planned  # its fit's last epoch
            views.append(
                MemberView(name, member.epochs, member.score, member.known_good(), hparams, alive, parked, ending)
            )
            dirs[name] = run_dir.resolve()
        return views, dirs

    def tick(
        self, entries: list[Entry], emit: Callable[[str, Any, str], None], now: float | None = None
    ) -> list[Exploit]:
        views, dirs = self.views(entries)
        now = time.time() if now is None else now
        self._end_donations(views, dirs, emit, now)
        queued = sum(1 for e in entries if e.status is Status.QUEUED) if self.take_turns else 0
        step = self.coordinator.step(views, queued)
        decisions = step.exploits
        parks = step.parks if self.take_turns else []
        if not decisions and not parks:
            return []
        for d in decisions:
            self.hparams[d.member] = {k: v for k, v in d.new.items() if k != "lr"}
            rollbacks = self.members[d.member].rollbacks  # the member's answer to this exploit makes it the next
            self.donations.append({**self.request_fields(d), "member": d.member, "donor": d.donor,
                                   "rollbacks": rollbacks, "time": now})  # fmt: skip
        self.save()  # before sending: a coordinator that dies now loses an exploit, never repeats one
        for name in parks:
            waiting = queued + sum(1 for v in views if v.parked)
            why = f"population {self.group}: {waiting} member(s) wait for a slot; members take turns"
            try:
                send_request(dirs[name], "park", who="lrsup-pbt", why=why)
            except Exception as exc:  # gone meanwhile: its next boundary decides again
                emit("pbt_error", None, f"{self.group}: parking {name}: {exc}")
                continue
            emit("pbt_park", None, f"{self.group}: {name} gives way at epoch {self._epochs(views, name)} ({why})")
        for d in decisions:
            fields = self.request_fields(d)
            why = f"population {self.group}: {self.settings.metric} {d.score:g} vs {d.donor_score:g}"
            try:
                send_request(dirs[d.member], "exploit", who="lrsup-pbt", why=why, peer=str(dirs[d.donor]), **fields)
                send_request(dirs[d.donor], "donate", who="lrsup-pbt", why=why, peer=str(dirs[d.member]), **fields)
            except Exception as exc:  # a member that vanished: the next boundary decides again
                emit("pbt_error", None, f"{self.group}: {d.member} <- {d.donor}: {exc}")
                continue
            lr = d.new.get("lr")
            emit(
                "pbt_exploit",
                None,
                f"{self.group}: {d.member} copies {d.donor}'s {d.checkpoint} at epoch {d.epoch}"
                + (f", lr {lr:g}" if lr is not None else ""),
            )
        return decisions

    @staticmethod
    def _epochs(views: list[MemberView], name: str) -> int:
        return next(v.epochs for v in views if v.name == name)

    @staticmethod
    def request_fields(d: Exploit) -> dict[str, Any]:
        return {"checkpoint": d.checkpoint, "epoch": d.epoch, "hparams": d.new, "old": d.old}

    def _end_donations(
        self, views: list[MemberView], dirs: dict[str, Path], emit: Callable[[str, Any, str], None], now: float
    ) -> None:
        """``donation_done`` to each donor whose member answered a rollback since, stopped, or timed out."""
        alive = {v.name for v in views if v.alive}
        kept = []
        for d in self.donations:
            member = self.members.get(d["member"])
            if member is not None and member.rollbacks > d["rollbacks"]:
                why = "the member answered its rollback"
            elif d["member"] not in alive:
                why = "the member is not running"
            elif now - d["time"] > DONATION_TIMEOUT:
                why = f"no answer within {DONATION_TIMEOUT:g} s"
            else:
                kept.append(d)
                continue
            if d["donor"] not in dirs or d["member"] not in dirs:
                continue  # no run directory to tell: nothing is kept there
            fields = {k: d[k] for k in ("checkpoint", "epoch", "hparams", "old")}
            try:
                send_request(dirs[d["donor"]], "donation_done", who="lrsup-pbt", why=why,
                             peer=str(dirs[d["member"]]), **fields)  # fmt: skip
            except Exception as exc:  # the donor's run directory is gone: nothing is kept there
                emit("pbt_error", None, f"{self.group}: releasing {d['donor']}'s {d['checkpoint']}: {exc}")
        if len(kept) != len(self.donations):
            self.donations = kept
            self.save()


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class MemberReporter:
    """A member's side of :class:`ReportedRecords`: follows its ``metrics.jsonl`` where it runs and sends
    the coordinated records (never batch records) to the coordinator, each once, in order.

    Args:
        run_dir: Path, the member's run directory (read on the node the member runs on).
        send: ``send(name, start, records) -> int``, the coordinator's ``report`` (a Ray actor call);
            it may raise (the actor is restarting): the records are sent again at the next ``poll``.

    Example::

        reporter = MemberReporter(run_dir, lambda *a: ray.get(actor.report.remote(*a), timeout=30))
        while trainer_running:
            reporter.poll()
            time.sleep(1.0)
        reporter.poll(); reporter.close()
    """

    PING = 10.0  # seconds between reports with nothing new, which find an inbox that started again

    def __init__(self, run_dir: Path, send: Callable[[str, int, list[protocol.Record]], int]) -> None:
        self.name = run_dir.name
        self.follower = Follower(run_dir / protocol.METRICS_FILE, use_watchdog=False)
        self.send = send
        self.sent: list[protocol.Record] = []  # every coordinated record so far (an inbox that restarts wants them all)
        self.acked = 0
        self.last = -math.inf

    def poll(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.sent.extend(r for r in self.follower.read() if isinstance(r, COORDINATED))
        if self.acked >= len(self.sent) and now - self.last < self.PING:
            return
        self.last = now
        try:
            # A second send when the inbox holds fewer (it started again): the rest at once. It may
            # hold more: this reporter is a resumed member's, whose file still has the records the
            # first reporter sent; they are not sent again.
            for _ in range(2):
                self.acked = self.send(self.name, self.acked, self.sent[self.acked :])
                if self.acked >= len(self.sent):
                    break
        except Exception:  # the coordinator is away (restarting, or its driver is gone): next poll
            return

    def close(self) -> None:
        self.follower.stop()


Emit = Callable[[str, Any, str], None]  # (event, entry, detail): the queue's journal


def slots_note(group: str, members: int, slots: int, take_turns: bool) -> str:
    """What a population with more members than the queue's slots will do (journaled once)."""
    head = f"population {group}: {members} members, {slots} slot(s): "
    if take_turns:
        return head + (
            "members take turns at their boundaries (each turn ends a trainer and starts it again from its "
            f"checkpoint); --slots {members} runs them all at once, with no restart"
        )
    return head + (
        "members beyond the slots wait until others end and are compared only with those running then "
        f"(turns are not supported with --ray yet): give the population {members} slots and the resources for them"
    )


class CoordinatorHost(Protocol):
    """Where a queue's population coordinators run: in ``queue run`` (:class:`Populations`) or in a
    Ray actor (``queue run --ray``: ``ray_backend.RayPopulations``); ticked once per queue tick."""

    def tick(self, entries: list[Entry], emit: Emit) -> None: ...


class Populations:
    """Every PBT group of a queue, ticked by ``queue run``; an error journals and never stops the queue.

    Args:
        runs_dir: Path, the queue's runs directory (the groups' files are in ``runs/.queue/pbt``).
        source: RecordSource, where the members' records come from: their files (the default),
            or what their reporters sent (``queue run --ray``: the coordinator actor).
        take_turns: bool, park members at boundaries while others of their group wait for a slot
            (False on Ray: a parked supervisor's task would keep its resources).
        slots: int or None, the queue's slots: a group with more members is told about once.
    """

    def __init__(
        self, runs_dir: Path, source: RecordSource | None = None, take_turns: bool = True, slots: int | None = None
    ) -> None:
        self.runs_dir = runs_dir
        self.source: RecordSource = source if source is not None else FollowedRecords()
        self.take_turns = take_turns
        self.slots = slots
        self.groups: dict[str, Population] = {}
        self.broken: set[str] = set()
        self.ended: set[str] = set()  # every member finished (in this queue run)

    def _note_slots(self, group: str, members: list[Entry], emit: Emit) -> None:
        live = [e for e in members if e.status in (Status.QUEUED, Status.RUNNING)]
        if self.slots is not None and len(live) > self.slots:
            emit("pbt_note", None, slots_note(group, len(members), self.slots, self.take_turns))

    def tick(self, entries: list[Entry], emit: Emit) -> None:
        """One round over every group: ``entries`` is the whole queue (its groups' members)."""
        folder = queue_dir(self.runs_dir) / PBT_DIR
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.json")):
            if path.stem in self.broken or path.stem in self.ended:
                continue
            try:
                population = self.groups.get(path.stem)
                if population is None:
                    data = json.loads(path.read_text("utf-8"))
                    population = Population(path, data, self.source, self.take_turns)
                    self.groups[path.stem] = population
                    self._note_slots(population.group, [e for e in entries if e.group == population.group], emit)
                members = [e for e in entries if e.group == population.group]
                if members and not any(e.status in (Status.QUEUED, Status.RUNNING) for e in members):
                    population.close()  # the population has ended: its files are no longer followed
                    del self.groups[path.stem]
                    self.ended.add(path.stem)
                    continue
                population.tick(members, emit)
            except Exception as exc:
                self.broken.add(path.stem)  # journaled once; the queue goes on without this population
                emit("pbt_error", None, f"{path.stem}: {type(exc).__name__}: {exc}; population stopped")
