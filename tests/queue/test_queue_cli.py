"""The queue's commands: add, sweep, ls --json, cancel, and their refusals (no daemon runs here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lrsup.supervisor.cli.main import app


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print('hi')\n")
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


def ls_json(cli) -> list[dict]:
    result = cli("queue", "ls", "--json")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_add_sweep_ls_cancel(cli) -> None:
    assert cli("queue", "add", "--name", "base", "--priority", "3", "train.py", "--", "--lr", "0.1").stdout == "1\n"
    result = cli("sweep", "--group", "g", "--grid", "lr=0.1,0.01", "--grid", "config.plateau.patience=2,5", "train.py")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["g", "2", "3", "4", "5"]
    found = ls_json(cli)
    assert {"id", "group", "status", "run_dir", "exit_status"} <= set(found[0])
    assert found[0]["args"] == ["--lr", "0.1"] and found[0]["priority"] == 3
    assert [e["group"] for e in found] == [None, "g", "g", "g", "g"]
    assert found[2]["args"] == ["--lr", "0.1"] and found[2]["params"] == {"config.plateau.patience": 5, "lr": 0.1}
    assert cli("queue", "cancel", "2").exit_code == 0
    assert "cancelled 3 queued entries" in cli("queue", "cancel", "--group", "g").stdout
    assert [e["status"] for e in ls_json(cli)] == ["queued"] + ["cancelled"] * 4
    assert cli("queue", "cancel", "2").exit_code == 1  # nothing left to cancel
    assert cli("queue", "cancel").exit_code == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (("queue", "add", "missing.py"), "not found"),
        (("sweep", "--grid", "lr", "train.py"), "NAME=V1"),
        (("sweep", "--grid", "config.cosine.period=3", "train.py"), "no policy 'cosine'"),
        (("sweep", "--grid", "config.plateau.patience=-1", "train.py"), "invalid configuration"),
        (("report", "--group", "nothing"), "no queue group"),
    ],
)
def test_refusals_exit_2_with_one_message(cli, args: tuple[str, ...], message: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_ray_without_ray_says_how_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from lrsup.supervisor.cli.main import main\n"
        "sys.argv = ['lrsup', 'queue', 'run', '--ray', 'local']\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "pip install 'lrsup[ray]'" in out.stderr


def test_ls_shows_a_parked_pbt_member_as_parked(cli, tmp_path: Path) -> None:
    from lrsup.supervisor.queue.store import QueueStore

    assert cli("queue", "add", "--name", "m", "train.py").exit_code == 0
    run_dir = tmp_path / "runs" / "q1-m"
    run_dir.mkdir(parents=True)
    store = QueueStore.open(tmp_path / "runs")
    store.claim(1, run_dir=str(run_dir), gpus=None)
    store.close()
    (run_dir / "supervisor.json").write_text(json.dumps({"v": 1, "state": "parked", "exit_status": None}))
    table = cli("queue", "ls").stdout
    assert "parked" in table and "running" not in table
    (run_dir / "supervisor.json").write_text(json.dumps({"v": 1, "state": "running", "exit_status": None}))
    assert "running" in cli("queue", "ls").stdout
