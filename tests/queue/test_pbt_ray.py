"""``lrsup sweep --pbt`` then ``queue run --ray``: the population's coordinator is a Ray actor the
members report to (a reporter beside each member's supervisor, in its Ray task). The actor's
process is killed mid-run: Ray restarts it, it reads the coordinator's state from the group's
file, the reporters send their records again, and the population goes on exploiting in place.
Skipped without ray (``pip install 'lrsup[ray]'``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
import ray
from ray.cluster_utils import Cluster

from lrsup.supervisor.queue.ray_backend import RayPopulations
from tests.queue.night_helpers import PBT_CONFIG, entries, kill_runs, lines, pbt_sweep, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_the_coordinator_is_a_ray_actor_that_survives_its_death(tmp_path: Path) -> None:
    pbt_sweep(
        tmp_path, PBT_CONFIG,
        "--epochs", "14", "--steps", "4", "--sleep", "0.15", "--checkpoints", "--lr", "0.02",
    )  # fmt: skip
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
    daemon = None
    daemon_log = tmp_path / "runs" / ".queue" / "daemon.jsonl"
    try:
        env = {**os.environ, "RAY_ADDRESS": cluster.address}
        daemon = subprocess.Popen(
            [sys.executable, "-m", "lrsup.supervisor.cli.main", "queue", "run", "--ray", cluster.address,
             "--slots", "4"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

        def events(name: str) -> list[dict]:
            return [d for d in lines(daemon_log) if d["event"] == name]

        wait_for(lambda: events("pbt_exploit"), timeout=150, what="a first exploit")
        (first,) = events("pbt_coordinator")
        assert "Ray actor lrsup-pbt-" in first["detail"]
        before = len(events("pbt_exploit"))
        ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
        actor = ray.get_actor(RayPopulations(tmp_path / "runs").name, namespace="lrsup")
        ray.kill(actor, no_restart=False)  # its process dies; Ray starts it again
        out, _ = daemon.communicate(timeout=200)
        assert daemon.returncode == 0, out
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
        kill_runs(tmp_path / "runs")
        ray.shutdown()
        cluster.shutdown()
    assert all(e["status"] == "done" for e in entries(tmp_path)), out
    coordinators = events("pbt_coordinator")
    assert len(coordinators) == 2 and coordinators[0]["detail"] != coordinators[1]["detail"], coordinators
    assert len(events("pbt_exploit")) > before, out  # the restarted actor went on deciding
    found = [Path(e["run_dir"]) for e in entries(tmp_path)]
    exploits = [j for d in found for j in lines(d / "journal.jsonl") if j.get("event") == "exploit"]
    # none twice (a request that reached a member after its last epoch is not applied: <=)
    assert 0 < len(exploits) <= len(events("pbt_exploit"))
    keys = [(j["peer"], j["checkpoint"], j["at_epoch"]) for j in exploits]
    assert len(keys) == len(set(keys))
    for run_dir in found:  # in place: one trainer process per member
        assert len([r for r in lines(run_dir / "metrics.jsonl") if r.get("type") == "start"]) == 1
