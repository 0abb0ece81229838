"""Notifier: webhook and command deliveries, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shlex
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from lrsup.supervisor.config import NotifySettings
from lrsup.supervisor.history.runinfo import load_run
from lrsup.supervisor.protocol.journal import EventEntry
from lrsup.supervisor.run.notify import Notifier, summary_payload

pytestmark = pytest.mark.timeout(60)


class _Server:
    """An HTTP server on 127.0.0.1 (port 0) in a thread; ``mode`` decides each answer."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.requests: list[dict] = []
        self.release = threading.Event()  # lets a sleeping handler go at teardown
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if outer.mode == "slow":
                    outer.release.wait(10)
                status = 500 if outer.mode == "error" else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    servers: list[_Server] = []

    def make(mode: str = "ok") -> _Server:
        s = _Server(mode)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


class Journal:
    """journal_fn that records lines (called from delivery threads)."""

    def __init__(self) -> None:
        self.lines: list[EventEntry] = []
        self._lock = threading.Lock()

    def __call__(self, line: EventEntry) -> None:
        with self._lock:
            self.lines.append(line)


def free_port() -> int:
    """A port nothing listens on: bind, read the port, close."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------


def test_webhook_delivers_the_json_body(server, tmp_path: Path) -> None:
    srv = server()
    journal = Journal()
    notifier = Notifier(NotifySettings(webhook=srv.url), journal, run_dir=tmp_path)
    assert notifier.notify(
        "end",
        {
            "outcome": "completed",
            "summary": {"best": float("nan"), "epochs": 3},
            "event": "ignored: the event name wins",
        },
    )
    assert notifier.flush(10)
    assert len(srv.requests) == 1 and journal.lines == []
    request = srv.requests[0]
    assert request["path"] == "/hook"
    assert request["headers"]["Content-Type"] == "application/json"
    body = json.loads(request["body"])  # strict JSON: NaN was turned into a string
    assert body == {
        "event": "end",
        "run_dir": str(tmp_path),
        "outcome": "completed",
        "summary": {"best": "NaN", "epochs": 3},
    }
    assert notifier.sent == 1 and notifier.failed == 0


def test_events_not_selected_are_not_sent(server) -> None:
    srv = server()
    notifier = Notifier(NotifySettings(webhook=srv.url), Journal())
    assert notifier.notify("rollback", {}) is False  # default on = ["end", "give_up"]
    assert notifier.notify("give_up", {}) is True
    notifier.flush(10)
    assert [json.loads(r["body"])["event"] for r in srv.requests] == ["give_up"]
    with pytest.raises(ValueError, match="event must be one of"):
        notifier.notify("finished", {})


def test_refused_connection_is_journaled_not_raised() -> None:
    journal = Journal()
    url = f"http://127.0.0.1:{free_port()}/"
    notifier = Notifier(NotifySettings(webhook=url, timeout=2), journal)
    notifier.notify("end", {"outcome": "failed"})
    assert notifier.flush(10)
    assert len(journal.lines) == 1
    line = journal.lines[0]
    assert isinstance(line, EventEntry) and line.event == "notify_failed"
    assert url in line.detail and "refused" in line.detail.lower()
    assert notifier.failed == 1


def test_a_server_slower_than_the_timeout_is_a_failure_and_never_blocks(server) -> None:
    srv = server("slow")
    journal = Journal()
    notifier = Notifier(NotifySettings(webhook=srv.url, timeout=0.5), journal)
    started = time.monotonic()
    notifier.notify("end", {})
    assert time.monotonic() - started < 0.3  # the caller (the run) does not wait
    assert notifier.flush(10)
    assert time.monotonic() - started < 5
    assert len(journal.lines) == 1 and "no answer within 0.5 s" in journal.lines[0].detail


def test_a_non_2xx_answer_is_a_failure(server) -> None:
    srv = server("error")
    journal = Journal()
    notifier = Notifier(NotifySettings(webhook=srv.url), journal)
    notifier.notify("end", {})
    notifier.flush(10)
    assert len(journal.lines) == 1 and "HTTP 500" in journal.lines[0].detail


def test_command_gets_the_payload_on_stdin_and_in_env(tmp_path: Path) -> None:
    out, env_out = tmp_path / "payload.json", tmp_path / "env.txt"
    command = (
        f"cat > {shlex.quote(str(out))}; "
        f'printf \'%s\\n%s\\n%s\' "$LRSUP_EVENT" "$LRSUP_RUN_DIR" "$LRSUP_PAYLOAD" > {shlex.quote(str(env_out))}'
    )
    journal = Journal()
    notifier = Notifier(NotifySettings(command=command, on=["end", "rollback"]), journal, run_dir=tmp_path / "run")
    notifier.notify("rollback", {"epoch": 5, "reason": "NaN loss"})
    assert notifier.flush(10)
    assert journal.lines == []
    payload = json.loads(out.read_text())
    assert payload == {"event": "rollback", "run_dir": str(tmp_path / "run"), "epoch": 5, "reason": "NaN loss"}
    event, run_dir, env_payload = env_out.read_text().split("\n", 2)
    assert event == "rollback" and run_dir == str(tmp_path / "run") and json.loads(env_payload) == payload


def test_failing_command_is_journaled_with_its_stderr() -> None:
    journal = Journal()
    notifier = Notifier(NotifySettings(command="echo boom >&2; exit 3"), journal)
    notifier.notify("end", {})
    notifier.flush(10)
    assert len(journal.lines) == 1
    assert "exited with status 3: boom" in journal.lines[0].detail


def test_overrunning_command_is_killed_with_what_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    journal = Journal()
    command = f"sleep 30 & echo $! > {shlex.quote(str(pid_file))}; wait"
    notifier = Notifier(NotifySettings(command=command, timeout=0.5), journal)
    started = time.monotonic()
    notifier.notify("end", {})
    assert notifier.flush(10)
    assert time.monotonic() - started < 5
    assert len(journal.lines) == 1 and "killed" in journal.lines[0].detail
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the command's own child outlived the timeout"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by its init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_failing_journal_does_not_escape() -> None:
    def broken_journal(line: dict) -> None:
        raise RuntimeError("disk full")

    notifier = Notifier(NotifySettings(command="exit 1"), broken_journal)
    notifier.notify("end", {})
    assert notifier.flush(10)
    assert notifier.failed == 1


def test_webhook_and_command_both_run(server, tmp_path: Path) -> None:
    srv = server()
    marker = tmp_path / "ran"
    notifier = Notifier(NotifySettings(webhook=srv.url, command=f"touch {shlex.quote(str(marker))}"), Journal())
    notifier.notify("end", {})
    assert notifier.flush(10)
    assert len(srv.requests) == 1 and marker.exists() and notifier.sent == 2


def test_settings_validation() -> None:
    s = NotifySettings()
    assert s.on == ["end", "give_up"] and s.timeout == 5 and s.webhook is None and not s.enabled
    assert NotifySettings(command="true").enabled
    with pytest.raises(ValidationError, match="extra"):
        NotifySettings(webhok="http://x")
    with pytest.raises(ValidationError):
        NotifySettings(on=["end", "finished"])
    with pytest.raises(ValidationError):
        NotifySettings(timeout=0)
    with pytest.raises(ValidationError):
        NotifySettings(webhook="ftp://example.com/x")
    with pytest.raises(ValidationError):
        NotifySettings(command="")


def test_summary_payload_from_a_run(synthetic_run: Path) -> None:
    payload = summary_payload(load_run(synthetic_run))
    assert payload["outcome"] == "stopped" and payload["exit_status"] == 0
    assert payload["summary"]["best_epoch"] == 8 and payload["summary"]["rollbacks"] == 1
    json.dumps(payload)  # plain data
