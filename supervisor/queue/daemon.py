"""``lrsup queue run``'s scheduler: a state machine over the queue, advanced by ``tick(now)``.

Modelled on supervisord: the clock and every system call come in from outside (a
:class:`Spawner` starts, resumes and adopts supervisors and reads their run directories), so
the tests drive it with fakes. Each run is an ordinary ``lrsup run --run-dir D`` (its own
supervisor), so ``lrsup ls/status/watch/stop/set-lr/report`` work on it unchanged.

One tick:

1. reap: a supervisor that ended is looked up in its run directory. An exit status there is
   final (0: done, else failed, with the run's reason). None means the supervisor died (SIGKILL,
   a reboot, a lost Ray node): the run is resumed (``lrsup resume``, the existing logic) up to
   ``max_starts`` supervisors in all, journaled by the run as a restart.
2. start: while fewer than ``slots`` run, the queued entries in priority then arrival order
   that fit on the free GPUs are claimed (queued -> running, with their run directory, in one
   guarded UPDATE) and started; an entry that cannot fit this machine at all fails at once.
3. turns: a run whose supervisor is **parked** (a PBT member put aside by its population so that
   members take turns, as Ray's PBT pauses trials: its supervisor waits with no trainer) does not
   hold a slot or its GPUs. Once no queued entry can start, free slots go to parked runs, the one
   parked longest first (the least progress, as Ray's PBT picks), each sent an ``unpark``
   request (a new attempt from its newest known-good checkpoint); on GPUs only when its own
   GPUs have room again, since its supervisor's environment names them.

``recover()`` runs once before the first tick: entries left ``running`` by a daemon that died
are adopted (their supervisor is alive), settled (it finished), resumed (it died), or started
(it never got a process: after ``STARTUP_GRACE`` seconds without a supervisor.json). So no run
is started twice and none is lost. ``drain(finish)`` (SIGTERM): no new runs; running ones are
asked to stop cleanly (or, with ``finish``, left to end).

Population-based training's coordinators sit beside the scheduler (lrsup.supervisor.queue.population):
they park members through the runs' operator channel; the scheduler unparks them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from lrsup.supervisor.queue.store import Entry, QueueStore, Status

STARTUP_GRACE = 20.0  # seconds a claimed entry may have no supervisor.json before it counts as never started
MAX_STARTS = 4  # supervisors per entry: the first run and up to three resumes


@dataclass(frozen=True)
class Ended:
    """How a supervisor process ended: its exit code (None when not ours to know), or the node it was lost with."""

    code: int | None
    lost: str | None = None


@dataclass(frozen=True)
class RunState:
    """What a run directory says about its supervisor (supervisor.json)."""

    exists: bool  # the run directory has a supervisor.json
    exit_status: int | None = None
    reason: str | None = None
    parked: bool = False  # its supervisor is alive with no trainer, waiting for ``unpark``


class Handle(Protocol):
    """A running supervisor."""

    worker: str

    def poll(self) -> Ended | None: ...

    def stop(self) -> None: ...


class Spawner(Protocol):
    """The system-call seam: processes (or Ray tasks) and run directories."""

    def start(self, entry: Entry, run_dir: Path, env: dict[str, str]) -> Handle: ...

    def resume(self, entry: Entry, run_dir: Path, env: dict[str, str]) -> Handle: ...

    def adopt(self, entry: Entry, run_dir: Path) -> Handle | None: ...

    def inspect(self, run_dir: Path) -> RunState: ...

    def request(self, run_dir: Path, op: str, why: str) -> None:
        """An operator request to the run's supervisor (``unpark``)."""
        ...


Emit = Callable[[str, Entry, str], None]


@dataclass
class Running:
    """An entry the scheduler is watching: its handle and the GPUs it holds."""

    entry: Entry
    handle: Handle | None  # None: recovered, waiting for its supervisor.json to appear
    gpus: list[str] = field(default_factory=list)
    stopped_by_drain: bool = False
    parked_since: float | None = None  # its supervisor is parked (no trainer): since when
    unparking: bool = False  # sent ``unpark``; holds its slot until its supervisor has taken it

    @property
    def busy(self) -> bool:
        """Holds a slot and its GPUs: anything but a parked run that has not been unparked yet."""
        return self.parked_since is None or self.unparking


class Scheduler:
    """Runs the queue: at most ``slots`` supervisors at a time, each on its own GPUs.

    Args:
        store: QueueStore.
        spawner: Spawner.
        runs_dir: Path, where run directories are made (``q<id>-<name>``).
        slots: int >= 1, supervisors at a time.
        gpus: list[str], the GPU ids to hand out (empty: none; ``CUDA_VISIBLE_DEVICES`` left alone).
        per_gpu: int >= 1, runs one GPU may hold at once (1: never two runs on one GPU).
        emit: callable(event, entry, detail) told of each start, end and resume.
        max_starts: int, supervisors per entry before it is failed.
        place_gpus: bool, hand out ``gpus`` here (False on Ray, which places GPUs itself).
    """

    def __init__(
        self,
        store: QueueStore,
        spawner: Spawner,
        runs_dir: Path,
        *,
        slots: int = 1,
        gpus: list[str] | None = None,
        per_gpu: int = 1,
        emit: Emit | None = None,
        max_starts: int = MAX_STARTS,
        place_gpus: bool = True,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1; got slots={slots!r}")
        if per_gpu < 1:
            raise ValueError(f"per_gpu must be >= 1; got per_gpu={per_gpu!r}")
        self.store = store
        self.spawner = spawner
        self.runs_dir = Path(runs_dir)
        self.slots = slots
        self.gpus = list(gpus or [])
        self.per_gpu = per_gpu
        self.emit = emit or (lambda event, entry, detail: None)
        self.max_starts = max_starts
        self.place_gpus = place_gpus
        self.running: dict[int, Running] = {}
        self.draining = False
        self.peak = 0  # the most supervisors at once (for tests and the end summary)

    # -- the loop's verbs --------------------------------------------------------
    def recover(self, now: float) -> None:
        """Take over the entries a previous daemon left running (see the module docstring)."""
        for entry in self.store.entries(status=Status.RUNNING):
            run_dir = Path(entry.run_dir or self._run_dir(entry))
            gpus = _gpu_list(entry.assigned_gpus)
            handle = self.spawner.adopt(entry, run_dir)
            self.running[entry.id] = Running(entry, handle, gpus)
            if handle is not None:
                self.emit("adopted", entry, f"its supervisor is alive ({handle.worker})")
            else:
                self._settle_dead(self.running[entry.id], now)

    def tick(self, now: float) -> None:
        """Reap ended supervisors, then start queued entries into free slots (unless draining)."""
        for item in list(self.running.values()):
            if item.handle is None:
                self._settle_dead(item, now)
                continue
            ended = item.handle.poll()
            if ended is not None:
                self._ended(item, ended, now)
            else:
                self._look_parked(item, now)
        if not self.draining:
            self._start_queued(now)
        self._unpark(now)  # also while draining with --finish: a parked run must get its turn to finish
        self.peak = max(self.peak, self._busy())

    def drain(self, finish: bool = False) -> None:
        """Start nothing new; ask running supervisors to stop cleanly (``finish``: let them end)."""
        if self.draining and finish:
            return
        self.draining = True
        if finish:
            return
        for item in self.running.values():
            if item.handle is not None and not item.stopped_by_drain:
                item.stopped_by_drain = True
                self.emit("stopping", item.entry, "queue run is draining: stopping the run cleanly")
                item.handle.stop()

    def idle(self) -> bool:
        """Nothing is running, and nothing queued can be started now (or draining)."""
        if self.running:
            return False
        return self.draining or not any(True for _ in self.store.next_queued())

    # -- reaping -------------------------------------------------------------------
    def _ended(self, item: Running, ended: Ended, now: float) -> None:
        if item.handle is not None:
            self.store.set_worker(item.entry.id, item.handle.worker)
        entry = self.store.get(item.entry.id) or item.entry
        run_dir = Path(entry.run_dir or self._run_dir(entry))
        state = self.spawner.inspect(run_dir)
        if state.exit_status is not None:
            self._finish(item, _final_status(state.exit_status, item), state.exit_status, state.reason or "")
        elif not state.exists:
            code = ended.code
            self._finish(item, Status.FAILED, code, f"the supervisor exited ({code}) before the run started")
        elif item.stopped_by_drain:
            self._finish(item, Status.CANCELLED, ended.code, "stopped when queue run drained")
        else:
            why = f"node {ended.lost} was lost" if ended.lost else f"its supervisor died (exit {ended.code})"
            self._resume(item, entry, run_dir, why)

    def _settle_dead(self, item: Running, now: float) -> None:
        """An entry whose supervisor is gone (or never came): settle, resume or (re)start it."""
        entry = item.entry
        run_dir = Path(entry.run_dir or self._run_dir(entry))
        state = self.spawner.inspect(run_dir)
        if state.exit_status is not None:
            self._finish(item, _final_status(state.exit_status, item), state.exit_status, state.reason or "")
        elif state.exists:
            self._resume(item, entry, run_dir, "its supervisor died while queue run was down")
        elif entry.started is not None and self.store.clock() - entry.started < STARTUP_GRACE:
            item.handle = None  # a supervisor may be starting it: look again next tick
        elif _dir_used(run_dir):
            self._finish(item, Status.FAILED, None, f"{run_dir} has files but no supervisor.json")
        else:
            self.emit("restarting", entry, "it never got a supervisor: starting it")
            item.handle = self.spawner.start(entry, run_dir, self._env(entry, item.gpus))
            self.store.restarted(entry.id, worker=item.handle.worker)

    def _resume(self, item: Running, entry: Entry, run_dir: Path, why: str) -> None:
        if self.draining:
            self._finish(item, Status.CANCELLED, None, f"{why}; not resumed while draining (lrsup resume it)")
            return
        if entry.starts >= self.max_starts:
            self._finish(item, Status.FAILED, None, f"{why}; gave up after {entry.starts} supervisors")
            return
        self.emit("resuming", entry, why)
        item.handle = self.spawner.resume(entry, run_dir, self._env(entry, item.gpus))
        self.store.restarted(entry.id, worker=item.handle.worker)
        item.entry = self.store.get(entry.id) or entry

    def _finish(self, item: Running, status: Status, exit_status: int | None, reason: str) -> None:
        self.store.finish(item.entry.id, status, exit_status=exit_status, reason=reason)
        self.running.pop(item.entry.id, None)
        self.emit(status.value, item.entry, reason if exit_status is None else f"exit {exit_status}: {reason}")

    # -- turns (parked PBT members) ---------------------------------------------------
    def _look_parked(self, item: Running, now: float) -> None:
        entry = item.entry
        parked = self.spawner.inspect(Path(entry.run_dir or self._run_dir(entry))).parked
        if parked and item.parked_since is None:
            item.parked_since = now
            self.emit("parked", entry, "its supervisor waits with no trainer: its slot is free")
        elif not parked and item.parked_since is not None:  # unparked (or stopped meanwhile)
            item.parked_since, item.unparking = None, False

    def _busy(self) -> int:
        return sum(1 for item in self.running.values() if item.busy)

    def _unpark(self, now: float) -> None:
        """Free slots to parked runs, the one parked longest first (see the module docstring)."""
        waiting = sorted(
            (
                i
                for i in self.running.values()
                if i.parked_since is not None and not i.unparking and not i.stopped_by_drain
            ),
            key=lambda i: (i.parked_since, i.entry.id),
        )
        for item in waiting:
            if self._busy() >= self.slots:
                return
            if not self._room_for(item.gpus):
                continue
            run_dir = Path(item.entry.run_dir or self._run_dir(item.entry))
            try:
                self.spawner.request(run_dir, "unpark", "a slot is free: its turn")
            except (OSError, ValueError) as err:  # its run directory is gone: reaped when its supervisor ends
                self.emit("unpark_failed", item.entry, str(err))
                continue
            item.unparking = True
            self.emit("unparking", item.entry, "a slot is free: its turn (a new attempt from its checkpoint)")

    def _room_for(self, gpus: list[str]) -> bool:
        use = self._gpu_use()
        return all(use.get(g, 0) < self.per_gpu for g in gpus)

    # -- starting ------------------------------------------------------------------
    def _start_queued(self, now: float) -> None:
        for entry in self.store.next_queued():
            if self._busy() >= self.slots:
                return
            want = self._gpus_wanted(entry)
            if want > len(self.gpus) and (self.gpus or entry.gpus):
                self._refuse(entry, f"needs {want} GPU(s); this machine has {len(self.gpus)}")
                continue
            gpus = self._free_gpus(want)
            if gpus is None:
                continue  # not now: a smaller entry behind it may fit
            self._start(entry, gpus)

    def _start(self, entry: Entry, gpus: list[str]) -> None:
        run_dir = self._run_dir(entry)
        visible = ",".join(gpus) if self.gpus else None
        if not self.store.claim(entry.id, run_dir=str(run_dir), gpus=visible):
            return  # cancelled (or taken) meanwhile
        claimed = self.store.get(entry.id) or entry
        item = Running(claimed, None, gpus)
        self.running[entry.id] = item
        if _dir_used(run_dir):
            self._finish(item, Status.FAILED, None, f"{run_dir} already exists and is not empty")
            return
        item.handle = self.spawner.start(claimed, run_dir, self._env(claimed, gpus))
        self.store.set_worker(entry.id, item.handle.worker)
        where = f" on GPU {visible}" if visible else ""
        self.emit("started", claimed, f"{run_dir}{where} ({item.handle.worker})")

    def _refuse(self, entry: Entry, why: str) -> None:
        if self.store.claim(entry.id, run_dir=str(self._run_dir(entry)), gpus=None):
            item = Running(entry, None)
            self.running[entry.id] = item
            self._finish(item, Status.FAILED, None, why)

    def _gpus_wanted(self, entry: Entry) -> int:
        if not self.place_gpus:
            return 0
        if entry.gpus is not None:
            return entry.gpus
        return 1 if self.gpus else 0

    def _free_gpus(self, want: int) -> list[str] | None:
        """``want`` GPUs with room (least used first), or None when there are not enough now."""
        use = self._gpu_use()
        free = sorted((g for g in self.gpus if use[g] < self.per_gpu), key=lambda g: (use[g], self.gpus.index(g)))
        return free[:want] if len(free) >= want else None

    def _gpu_use(self) -> dict[str, int]:
        """Runs on each GPU now (a parked run's trainer is gone: it uses none until unparked)."""
        use = {g: 0 for g in self.gpus}
        for item in self.running.values():
            if item.busy:
                for g in item.gpus:
                    use[g] = use.get(g, 0) + 1
        return use

    def _env(self, entry: Entry, gpus: list[str]) -> dict[str, str]:
        env = {"LRSUP_QUEUE_ID": str(entry.id)}
        if entry.group:
            env["LRSUP_QUEUE_GROUP"] = entry.group
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        return env

    def _run_dir(self, entry: Entry) -> Path:
        if entry.run_dir:
            return Path(entry.run_dir)
        return self.runs_dir / f"q{entry.id}-{_slug(entry.name or Path(entry.script).stem)}"


def _final_status(exit_status: int, item: Running) -> Status:
    if exit_status == 0:
        return Status.DONE
    return Status.CANCELLED if item.stopped_by_drain else Status.FAILED


def _gpu_list(text: str | None) -> list[str]:
    return [g for g in (text or "").split(",") if g]


def _dir_used(path: Path) -> bool:
    try:
        return any(True for _ in os.scandir(path))
    except OSError:
        return False


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", name)[:60] or "run"
