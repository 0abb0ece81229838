"""A fake Spawner for the scheduler: supervisors that end when the test says so."""

from __future__ import annotations

from pathlib import Path

from lrsup.supervisor.queue.daemon import Ended, RunState
from lrsup.supervisor.queue.store import Entry


class FakeSupervisor:
    """A Handle: running until ``end()``; records ``stop()``."""

    def __init__(self, entry_id: int, run_dir: Path, env: dict[str, str], kind: str, worker: str = "local") -> None:
        self.entry_id, self.run_dir, self.env, self.kind, self.worker = entry_id, run_dir, env, kind, worker
        self.result: Ended | None = None
        self.stopped = False

    def poll(self) -> Ended | None:
        return self.result

    def stop(self) -> None:
        self.stopped = True


class FakeSpawner:
    """Starts FakeSupervisors; run directories are a dict of RunState (``exists`` once started)."""

    def __init__(self) -> None:
        self.launched: list[FakeSupervisor] = []
        self.states: dict[Path, RunState] = {}
        self.live: dict[Path, FakeSupervisor] = {}  # what adopt() finds
        self.requests: list[tuple[Path, str]] = []  # operator requests sent (unpark)

    def start(self, entry: Entry, run_dir: Path, env: dict[str, str]) -> FakeSupervisor:
        return self._launch(entry, run_dir, env, "start")

    def resume(self, entry: Entry, run_dir: Path, env: dict[str, str]) -> FakeSupervisor:
        return self._launch(entry, run_dir, env, "resume")

    def adopt(self, entry: Entry, run_dir: Path) -> FakeSupervisor | None:
        return self.live.get(Path(run_dir))

    def inspect(self, run_dir: Path) -> RunState:
        return self.states.get(Path(run_dir), RunState(False))

    def request(self, run_dir: Path, op: str, why: str) -> None:
        self.requests.append((Path(run_dir), op))

    def _launch(self, entry: Entry, run_dir: Path, env: dict[str, str], kind: str) -> FakeSupervisor:
        sup = FakeSupervisor(entry.id, Path(run_dir), dict(env), kind)
        self.launched.append(sup)
        self.states[Path(run_dir)] = RunState(True)
        return sup

    # -- what the test does to them ----------------------------------------------
    def running(self) -> list[FakeSupervisor]:
        return [s for s in self.launched if s.result is None]

    def finish(self, sup: FakeSupervisor, status: int = 0, reason: str = "training completed") -> None:
        """The run ended and its supervisor recorded it."""
        self.states[sup.run_dir] = RunState(True, status, reason)
        sup.result = Ended(status)

    def park(self, sup: FakeSupervisor, parked: bool = True) -> None:
        """Its supervisor is parked (no trainer) or, with ``parked=False``, took its unpark."""
        self.states[sup.run_dir] = RunState(True, parked=parked)

    def die(self, sup: FakeSupervisor, lost: str | None = None) -> None:
        """The supervisor died (SIGKILL, a lost node) without recording an exit status."""
        sup.result = Ended(None if lost else -9, lost)
