"""``queue run --ray`` on a Ray cluster of this machine (a head and worker nodes on localhost).

The run lands on worker node A; node A is killed mid-run (its raylet and workers, and the run's
trainer, as on a machine that dies); the run is resumed on node B from its checkpoint and
completes. Skipped without ray (``pip install 'lrsup[ray]'``); about a minute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
from ray.cluster_utils import Cluster

from tests.queue.night_helpers import NO_POLICIES, add, entries, kill_runs, lrsup, supervisors_up, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def epochs_done(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"type": "epoch"' in line or '"type":"epoch"' in line)


def test_a_worker_node_dies_and_the_run_is_resumed_on_another(tmp_path: Path) -> None:
    (tmp_path / "lrsup.toml").write_text(NO_POLICIES)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    daemon = None
    try:
        node_a = cluster.add_node(num_cpus=1)
        entry_id = add(tmp_path, "--epochs", "40", "--steps", "4", "--sleep", "0.05", "--checkpoints", name="far")
        env = {**os.environ, "RAY_ADDRESS": cluster.address}
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lrsup.supervisor.cli.main",
                "queue",
                "run",
                "--ray",
                cluster.address,
                "--slots",
                "1",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(lambda: supervisors_up(tmp_path, 1), timeout=120, what="the run on node A")
        run_dir = Path(entries(tmp_path)[0]["run_dir"])
        wait_for(lambda: epochs_done(run_dir) >= 2, timeout=60, what="two epochs (a checkpoint)")
        cluster.add_node(num_cpus=1)  # node B
        cluster.remove_node(node_a, allow_graceful=False)
        kill_runs(tmp_path / "runs")  # what ran on node A dies with it
        out, _ = daemon.communicate(timeout=240)
        assert daemon.returncode == 0, out
        (entry,) = entries(tmp_path)
        assert entry["id"] == entry_id and entry["status"] == "done", out
        assert entry["starts"] == 2 and entry["worker"].startswith("ray:"), out
        journal = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
        events = [j.get("event") for j in journal]
        assert "resumed" in events and "restarting" in events, events
        assert lrsup(tmp_path, "status", str(run_dir)).returncode == 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
        kill_runs(tmp_path / "runs")
        cluster.shutdown()
