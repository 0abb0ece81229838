"""``lrsup queue run --ray ADDRESS|local``: each run a Ray task running the ordinary supervisor on a worker.

Imported only for ``--ray`` (it imports ray; ``pip install 'lrsup[ray]'``). The scheduler is the
same as on one machine; only its system calls differ (:class:`RaySpawner`):

- start/resume: a Ray task with the entry's resources (``num_cpus``, ``num_gpus``; Ray sets
  ``CUDA_VISIBLE_DEVICES`` on the worker) runs ``lrsup run --run-dir D ...`` (or ``lrsup resume D``)
  as a child process of the Ray worker, with the worker's own interpreter. The policies act on the
  worker, at the same speed as locally: nothing per batch crosses the network. The child is killed
  with the Ray worker (``PR_SET_PDEATHSIG``), as on a node that dies.
- the run directory: the runs directory must be a path every node sees (a shared filesystem, as on
  a localhost cluster or NFS): the supervisor writes its records, journal, checkpoints and reports
  there, so ``lrsup ls/status/watch/report`` on the head read remote runs as local ones, and a
  resume on another node finds the checkpoints.
- a task lost with its node (or worker) reads as ``Ended(lost=...)``: the scheduler resumes the run
  on another node with ``lrsup resume`` (the existing logic: from the newest known-good checkpoint,
  journaled by the run as a restart).
- stop (drain): the task is cancelled; it forwards SIGTERM to its supervisor, which stops cleanly.
- population-based training (``lrsup sweep --pbt``): the groups' coordinators run in one Ray actor
  (:class:`PopulationActor`, ``lrsup-pbt-<runs dir>`` in namespace ``lrsup``), which the members
  report to: each member's task runs a :class:`~lrsup.supervisor.queue.population.MemberReporter`
  beside its supervisor, which follows the run's records on the worker and sends the ones the
  coordinator needs (epochs, checkpoints, rollback answers; never a batch record), each once, in
  order. ``queue run`` ticks the actor once per queue tick with the queue's entries (who is
  running) and journals what it did. The actor is restarted by Ray if its process dies: it reads
  the coordinator's state from the group's file (saved before every exploit) and the reporters
  send their records again. It dies with the driver, as the members' tasks do; a new ``queue run``
  goes on from the same file.

Example::

    resources = connect("local")           # or "ray://head:10001", "10.0.0.5:6379", "auto"
    spawner = RaySpawner(Path("runs/.queue/logs"))
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import ray
from ray import exceptions as ray_errors

from lrsup.supervisor.queue.daemon import Ended, RunState
from lrsup.supervisor.queue.local import QUEUE_WHO, inspect_run_dir, resume_argv, run_argv
from lrsup.supervisor.queue.population import (
    Emit,
    MemberReporter,
    Populations,
    ReportedRecords,
    population_path,
)
from lrsup.supervisor.queue.store import Entry
from lrsup.supervisor.run.operator import send_request

_PR_SET_PDEATHSIG = 1


def connect(address: str) -> dict[str, float]:
    """Join the Ray cluster at ``address`` (``local``: start one on this machine); its resources."""
    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    return dict(ray.cluster_resources())


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


REPORT_INTERVAL = 1.0  # seconds between a member's reports to its population's coordinator
REPORT_TIMEOUT = 30.0  # seconds a report waits for the actor (one that is restarting): sent again later


def supervise(
    kind: str, entry: Entry, run_dir: str, env: dict[str, str], log: str, coordinator: Any = None
) -> dict[str, Any]:
    """On the worker: the supervisor as a child process; its exit status and the node it ran on.

    ``coordinator``: the population's actor (a PBT member), which a reporter thread beside the
    supervisor sends the run's coordinated records to while it runs, and once more at its end.
    """
    argv = run_argv(entry, Path(run_dir)) if kind == "start" else resume_argv(Path(run_dir))
    node = ray.get_runtime_context().get_node_id()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    done = threading.Event()
    reporter = None
    if coordinator is not None:

        def send(name: str, start: int, records: list) -> int:
            return int(ray.get(coordinator.report.remote(name, start, records), timeout=REPORT_TIMEOUT))

        reporter = threading.Thread(
            target=_report, args=(MemberReporter(Path(run_dir), send), done), name="lrsup-pbt-report", daemon=True
        )
        reporter.start()
    try:
        with open(log, "ab") as out, open(os.devnull, "rb") as null:
            proc = subprocess.Popen(
                argv,
                cwd=entry.cwd,
                env={**os.environ, **env},
                stdin=null,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
            try:
                code = proc.wait()
            except KeyboardInterrupt:  # ray.cancel: stop the run cleanly, then end
                proc.send_signal(signal.SIGTERM)
                code = proc.wait()
    finally:
        done.set()
        if reporter is not None:
            reporter.join(REPORT_TIMEOUT + 5.0)
    return {"code": code, "node": node}


def _report(reporter: MemberReporter, done: threading.Event) -> None:
    """The reporter thread: a report every REPORT_INTERVAL seconds, and a last one at the run's end."""
    try:
        while not done.wait(REPORT_INTERVAL):
            reporter.poll()
        reporter.poll(now=float("inf"))  # the records of the run's last moments
    finally:
        reporter.close()


_remote_supervise = ray.remote(max_retries=0)(supervise)


class RayHandle:
    """A supervisor in a Ray task."""

    def __init__(self, ref: Any, worker: str) -> None:
        self.ref = ref
        self.worker = worker

    def poll(self) -> Ended | None:
        ready, _ = ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        try:
            result = ray.get(self.ref)
        except ray_errors.TaskCancelledError:
            return Ended(None)
        except (ray_errors.NodeDiedError, ray_errors.WorkerCrashedError, ray_errors.RayActorError) as err:
            return Ended(None, lost=_first_line(err))
        except ray_errors.RayError as err:
            return Ended(None, lost=f"the Ray task failed: {_first_line(err)}")
        self.worker = f"ray:{str(result.get('node'))[:12]}"
        return Ended(int(result["code"]))

    def stop(self) -> None:
        ray.cancel(self.ref, force=False)


class PopulationActor:
    """The queue's population coordinators in a Ray actor: the members' reporters feed it, ``queue run`` ticks it.

    Args:
        runs_dir: str, the queue's runs directory (a path every node sees: the groups' files are
            read and saved there, and the exploit requests written into the members' run directories).
    """

    def __init__(self, runs_dir: str, slots: int | None = None) -> None:
        self.inbox = ReportedRecords()
        # no turns on Ray: a parked supervisor's task would keep its CPUs and GPUs from the waiting members
        self.populations = Populations(Path(runs_dir), self.inbox, take_turns=False, slots=slots)

    def report(self, name: str, start: int, records: list) -> int:
        """A member's records from ``start`` on; how many of its records this actor holds."""
        return self.inbox.report(name, start, records)

    def tick(self, entries: list[Entry]) -> tuple[str, list[tuple[str, str]]]:
        """One round over every group: where this actor runs, and what happened, as (event, detail)."""
        events: list[tuple[str, str]] = []
        self.populations.tick(entries, lambda event, _entry, detail: events.append((event, detail)))
        return f"pid {os.getpid()} on node {ray.get_runtime_context().get_node_id()[:12]}", events


_RemotePopulation = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(PopulationActor)
TICK_TIMEOUT = 60.0  # seconds ``queue run`` waits for the actor's round; then it journals and goes on


class RayPopulations:
    """``queue run --ray``'s population coordinators: the actor, created on the first PBT group.

    Args:
        runs_dir: Path, the queue's runs directory.
        slots: int or None, the queue's slots (a group with more members is told about once).
    """

    def __init__(self, runs_dir: Path, slots: int | None = None) -> None:
        self.runs_dir = Path(runs_dir).resolve()
        self.slots = slots
        self.name = "lrsup-pbt-" + hashlib.sha1(str(self.runs_dir).encode()).hexdigest()[:10]
        self.actor: Any = None
        self.where = ""

    def coordinator(self, entry: Entry) -> Any:
        """The actor a member of a PBT group reports to (created now if need be); None for other runs."""
        if not entry.group or not population_path(self.runs_dir, entry.group).is_file():
            return None
        if self.actor is None:
            self.actor = _RemotePopulation.options(name=self.name, namespace="lrsup", get_if_exists=True).remote(
                str(self.runs_dir), self.slots
            )
        return self.actor

    def tick(self, entries: list[Entry], emit: Emit) -> None:
        if self.actor is None:
            return
        try:
            where, events = ray.get(self.actor.tick.remote(entries), timeout=TICK_TIMEOUT)
        except (ray_errors.RayError, TimeoutError) as err:  # restarting: the next tick asks again
            emit("pbt_error", None, f"the population actor did not answer: {_first_line(err)}")
            return
        if where != self.where:  # journaled when it starts, and again when Ray restarted it
            self.where = where
            emit("pbt_coordinator", None, f"Ray actor {self.name} (namespace lrsup), {where}")
        for event, detail in events:
            emit(event, None, detail)


class RaySpawner:
    """Starts supervisors as Ray tasks; reads run directories on the shared path.

    Args:
        log_dir: Path, where each entry's supervisor output goes (``q<id>.log``; on the shared path).
        populations: RayPopulations or None, the coordinators PBT members report to.
    """

    def __init__(self, log_dir: Path, populations: RayPopulations | None = None) -> None:
        self.log_dir = Path(log_dir).resolve()
        self.populations = populations

    def start(self, entry: Entry, run_dir: Path, env: dict[str, str]) -> RayHandle:
        return self._submit("start", entry, run_dir, env)

    def resume(self, entry: Entry, run_dir: Path, env: dict[str, str]) -> RayHandle:
        return self._submit("resume", entry, run_dir, env)

    def adopt(self, entry: Entry, run_dir: Path) -> None:
        return None  # a driver's tasks die with it: an earlier daemon's runs are resumed

    def inspect(self, run_dir: Path) -> RunState:
        return inspect_run_dir(run_dir)

    def request(self, run_dir: Path, op: str, why: str) -> None:
        send_request(run_dir, op, who=QUEUE_WHO, why=why)  # the runs directory is shared

    def _submit(self, kind: str, entry: Entry, run_dir: Path, env: dict[str, str]) -> RayHandle:
        options: dict[str, Any] = {"num_cpus": entry.cpus, "num_gpus": entry.gpus or 0}
        log = str(self.log_dir / f"q{entry.id}.log")
        coordinator = self.populations.coordinator(entry) if self.populations is not None else None
        ref = _remote_supervise.options(**options).remote(
            kind, entry, str(Path(run_dir).resolve()), env, log, coordinator
        )
        return RayHandle(ref, "ray")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
