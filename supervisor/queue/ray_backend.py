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

Example::

    resources = connect("local")           # or "ray://head:10001", "10.0.0.5:6379", "auto"
    spawner = RaySpawner(Path("runs/.queue/logs"))
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import ray
from ray import exceptions as ray_errors

from lrsup.supervisor.queue.daemon import Ended, RunState
from lrsup.supervisor.queue.local import inspect_run_dir, resume_argv, run_argv
from lrsup.supervisor.queue.store import Entry

_PR_SET_PDEATHSIG = 1


def connect(address: str) -> dict[str, float]:
    """Join the Ray cluster at ``address`` (``local``: start one on this machine); its resources."""
    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False, logging_level="warning", log_to_driver=False)
        else:
            ray.init(address=address, logging_level="warning", log_to_driver=False)
    return dict(ray.cluster_resources())


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def supervise(kind: str, entry: Entry, run_dir: str, env: dict[str, str], log: str) -> dict[str, Any]:
    """On the worker: the supervisor as a child process; its exit status and the node it ran on."""
    argv = run_argv(entry, Path(run_dir)) if kind == "start" else resume_argv(Path(run_dir))
    node = ray.get_runtime_context().get_node_id()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
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
    return {"code": code, "node": node}


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


class RaySpawner:
    """Starts supervisors as Ray tasks; reads run directories on the shared path.

    Args:
        log_dir: Path, where each entry's supervisor output goes (``q<id>.log``; on the shared path).
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir).resolve()

    def start(self, entry: Entry, run_dir: Path, env: dict[str, str]) -> RayHandle:
        return self._submit("start", entry, run_dir, env)

    def resume(self, entry: Entry, run_dir: Path, env: dict[str, str]) -> RayHandle:
        return self._submit("resume", entry, run_dir, env)

    def adopt(self, entry: Entry, run_dir: Path) -> None:
        return None  # a driver's tasks die with it: an earlier daemon's runs are resumed

    def inspect(self, run_dir: Path) -> RunState:
        return inspect_run_dir(run_dir)

    def _submit(self, kind: str, entry: Entry, run_dir: Path, env: dict[str, str]) -> RayHandle:
        options: dict[str, Any] = {"num_cpus": entry.cpus, "num_gpus": entry.gpus or 0}
        log = str(self.log_dir / f"q{entry.id}.log")
        ref = _remote_supervise.options(**options).remote(kind, entry, str(Path(run_dir).resolve()), env, log)
        return RayHandle(ref, "ray")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
