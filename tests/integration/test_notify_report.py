"""The real ``lrsup run`` on the fake trainer: [notify] deliveries and the report written at the end.

A webhook receiver (``http.server`` on 127.0.0.1, port 0) runs in a thread of the test and
records the JSON bodies it is POSTed; the supervisor runs as a subprocess (bounded).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_trainer.py"
LRSUP = [sys.executable, "-m", "lrsup.supervisor.cli.main"]


class Receiver:
    """A local webhook: every POST body (decoded JSON) goes to ``bodies``; answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def lrsup_run(cwd: Path, config: str, *trainer_args: str) -> subprocess.CompletedProcess:
    (cwd / "lrsup.toml").write_text(config)
    env = dict(os.environ)
    env.pop("LRSUP_RUN_DIR", None)
    return subprocess.run(
        [*LRSUP, "run", "--run-dir", "run", str(FAKE), "--", *trainer_args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def journal(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines() if line.strip()]


def test_the_webhook_receives_the_end_of_the_run(tmp_path):
    with Receiver() as hook:
        result = lrsup_run(tmp_path, f'policy = []\n[notify]\nwebhook = "{hook.url}"\n', "--epochs", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "run"
    (body,) = hook.bodies
    assert body["event"] == "end" and body["run_dir"] == str(run_dir)
    assert (body["outcome"], body["exit_status"], body["gave_up"]) == ("completed", 0, False)
    assert body["summary"]["epochs"] == 3 and body["summary"]["final"]["val_loss"] == 1.0
    assert not [e for e in journal(run_dir) if e.get("event") == "notify_failed"]
    assert json.loads((run_dir / "config.json").read_text())["notify"]["webhook"] == hook.url


def test_a_failing_webhook_is_journaled_and_changes_nothing(tmp_path):
    with Receiver(status=500) as hook:
        result = lrsup_run(tmp_path, f'policy = []\n[notify]\nwebhook = "{hook.url}"\ntimeout = 2\n', "--epochs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    (failed,) = [e for e in journal(tmp_path / "run") if e.get("event") == "notify_failed"]
    assert "HTTP 500" in failed["detail"] and hook.url in failed["detail"]


def test_a_dead_receiver_is_journaled_and_changes_nothing(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = lrsup_run(
        tmp_path, f'policy = []\n[notify]\nwebhook = "http://127.0.0.1:{port}/"\ntimeout = 2\n', "--epochs", "2"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [e["event"] for e in journal(tmp_path / "run") if e.get("event") == "notify_failed"] == ["notify_failed"]


def test_restart_and_give_up_are_notified(tmp_path):
    config = """
policy = []
[run]
max_restarts = 1
backoff_base = 0.1
backoff_cap = 0.1
grace_period = 1.0
[notify]
webhook = "URL"
on = ["end", "give_up", "restart"]
"""
    with Receiver() as hook:
        result = lrsup_run(tmp_path, config.replace("URL", hook.url), "--epochs", "3", "--crash-at-epoch", "1")
    assert result.returncode == 3, result.stdout + result.stderr
    by_event = {b["event"]: b for b in hook.bodies}
    assert sorted(by_event) == ["end", "give_up", "restart"] and len(hook.bodies) == 3
    assert by_event["restart"]["attempt"] == 2
    assert by_event["give_up"]["exit_status"] == 3 and by_event["end"]["exit_status"] == 3


def test_the_report_is_written_when_the_run_ends(tmp_path):
    result = lrsup_run(tmp_path, "policy = []\n", "--epochs", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "run"
    report = (run_dir / "report.md").read_text()
    assert report.startswith("# lrsup report") and "completed" in report
    assert (run_dir / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert result.stderr.rstrip().splitlines()[-1] == f"lrsup: report: {run_dir / 'report.md'}"
    assert result.stdout.rstrip().endswith("lrsup: training completed (exit status 0)")


def test_a_failed_run_gets_a_report_too(tmp_path):
    result = lrsup_run(tmp_path, "policy = []\n[run]\nmax_restarts = 0\n", "--epochs", "3", "--exit-code", "4")
    assert result.returncode == 4
    assert (tmp_path / "run" / "report.md").is_file() and (tmp_path / "run" / "report.html").is_file()
