"""Tell someone when a run ends, gives up, rolls back or restarts: a webhook and/or a command.

Configuration (``[notify]`` in lrsup.toml)::

    [notify]
    webhook = "https://hooks.example.com/lrsup"     # POSTed a JSON body
    command = "notify-send lrsup \\"$LRSUP_EVENT\\""    # run by the shell
    on = ["end", "give_up"]                         # among: end, give_up, rollback, restart
    timeout = 5                                     # seconds per delivery

Example::

    notifier = Notifier(NotifySettings(webhook="http://127.0.0.1:8000/"), journal_fn=runner_journal,
                        run_dir=paths.root)
    notifier.notify("end", summary_payload(load_run(paths.root)))
    notifier.flush(10)                              # at the very end of the run

Every delivery runs in its own daemon thread, bounded by ``timeout``, so a slow or
dead receiver never holds up training or the supervisor. Nothing is raised: a
failure (timeout, refused connection, an answer that is not 2xx, a command that
fails or overruns and is killed) is reported once through ``journal_fn`` as
an ``EventEntry("notify_failed", "...")`` (lrsup.supervisor.protocol.journal).
``journal_fn`` is called from the delivery thread. The detail never holds a secret: a
URL's credentials and the values marked ``secret = ["webhook", "command"]`` are replaced
by ``***`` (lrsup.supervisor.config.redact, the one redaction).

The webhook gets ``{"event": ..., "run_dir": ..., **payload}`` as strict JSON (NaN
and infinities become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``). The
command gets the same JSON on its standard input and in the environment:
``LRSUP_EVENT``, ``LRSUP_RUN_DIR`` and ``LRSUP_PAYLOAD`` (empty when the JSON is
over 100 kB, the safe size of one environment variable).
"""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from lrsup import __version__
from lrsup.supervisor.config import NOTIFY_EVENTS, NotifySettings
from lrsup.supervisor.protocol.journal import EventEntry
from lrsup.supervisor.protocol.wire import ENV_NOTIFY_EVENT, ENV_NOTIFY_PAYLOAD, ENV_RUN_DIR

JournalFn = Callable[[EventEntry], None]

_ENV_PAYLOAD_LIMIT = 100_000
_STDERR_TAIL = 300


class Notifier:
    """Delivers notifications in the background; never raises on a failed delivery.

    Args:
        settings: NotifySettings.
        journal_fn: callable(EventEntry) that journals a line (called on failure, from a thread).
        run_dir: str, Path or None. Put in the body and in ``LRSUP_RUN_DIR``
            (default: the payload's ``run_dir``).
    """

    def __init__(
        self, settings: NotifySettings, journal_fn: JournalFn, *, run_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.settings = settings
        self.journal_fn = journal_fn
        self.run_dir = None if run_dir is None else os.fspath(run_dir)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0

    def notify(self, event: str, payload: dict | None = None) -> bool:
        """Start delivering ``event`` if it is selected; return whether anything was started.

        Raises:
            ValueError: ``event`` is not one of NOTIFY_EVENTS (a programming error).
        """
        if event not in NOTIFY_EVENTS:
            raise ValueError(f"event must be one of {', '.join(NOTIFY_EVENTS)}; got event={event!r}")
        if event not in self.settings.on:
            return False
        payload = dict(payload or {})
        run_dir = self.run_dir if self.run_dir is not None else payload.get("run_dir")
        body: dict[str, Any] = {"event": event, "run_dir": None if run_dir is None else str(run_dir)}
        body.update((k, v) for k, v in payload.items() if k not in body)
        data = json.dumps(_strict(body), default=str)
        started = False
        if self.settings.webhook is not None:
            self._start(self._post, str(self.settings.webhook), event, data)
            started = True
        if self.settings.command is not None:
            self._start(self._run, self.settings.command, event, data, body["run_dir"] or "")
            started = True
        return started

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds in all for deliveries in flight; True if none is left."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            return not self._threads

    # -- deliveries (in threads) ------------------------------------------------
    def _start(self, target: Callable[..., str | None], *args: Any) -> None:
        thread = threading.Thread(target=self._guard, args=(target, *args), name=f"lrsup-notify-{args[1]}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _guard(self, target: Callable[..., str | None], *args: Any) -> None:
        try:
            error = target(*args)
        except Exception as exc:  # never let a delivery thread die with a traceback
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            if error is None:
                self.sent += 1
            else:
                self.failed += 1
        if error is not None:
            try:  # the error quotes the webhook or command: never their secrets
                self.journal_fn(EventEntry("notify_failed", self.settings.redact(error)))
            except Exception:
                pass  # the journal itself failing must not disturb the run either

    def _post(self, url: str, event: str, data: str) -> str | None:
        headers = {"Content-Type": "application/json", "User-Agent": f"lrsup/{__version__}"}
        parts = urllib.parse.urlsplit(url)
        if "@" in parts.netloc:  # urllib does not send a URL's credentials: HTTP basic auth does
            userinfo, host = parts.netloc.rsplit("@", 1)
            user, _, password = userinfo.partition(":")
            token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
            url = urllib.parse.urlunsplit(parts._replace(netloc=host))
        request = urllib.request.Request(url, data=data.encode("utf-8"), method="POST", headers=headers)
        where = f"webhook {url} ({event})"
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            return f"{where}: the server answered HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (TimeoutError, OSError)) and "timed out" in str(reason):
                return f"{where}: no answer within {self.settings.timeout:g} s"
            return f"{where}: {reason}"
        except TimeoutError:
            return f"{where}: no answer within {self.settings.timeout:g} s"
        except OSError as exc:
            return f"{where}: {exc}"
        if not 200 <= status < 300:
            return f"{where}: the server answered HTTP {status}"
        return None

    def _run(self, command: str, event: str, data: str, run_dir: str) -> str | None:
        env = dict(os.environ)
        env[ENV_NOTIFY_EVENT] = event
        env[ENV_RUN_DIR] = run_dir
        env[ENV_NOTIFY_PAYLOAD] = data if len(data) <= _ENV_PAYLOAD_LIMIT else ""
        where = f"command {command!r} ({event})"
        try:
            proc = subprocess.Popen(
                command,
                shell=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            return f"{where}: cannot start: {exc}"
        try:
            _, stderr = proc.communicate(data.encode("utf-8"), timeout=self.settings.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            return f"{where}: still running after {self.settings.timeout:g} s, killed"
        if proc.returncode != 0:
            tail = stderr.decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
            status = (
                f"killed by signal {-proc.returncode}"
                if proc.returncode < 0
                else f"exited with status {proc.returncode}"
            )
            return f"{where}: {status}" + (f": {tail}" if tail else "")
        return None


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the command and whatever it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _strict(value: Any) -> Any:
    """The value with NaN and infinities as strings, so that the body is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def summary_payload(info: Any) -> dict:
    """The body of an ``end`` notification from a RunInfo: outcome, best and final metrics, timings."""
    best = info.best
    return {
        "outcome": info.outcome.value,
        "detail": info.outcome_detail,
        "exit_status": info.exit_status,
        "gave_up": info.gave_up,
        "summary": {
            "epochs": len(info.epochs),
            "monitor": info.monitor,
            "best_epoch": None if best is None else best.epoch,
            "best": None if best is None else dict(best.logs),
            "final": None if info.final is None else dict(info.final.logs),
            "final_lr": info.final_lr,
            "decisions": len(info.active_decisions),
            "restarts": len(info.restarts),
            "rollbacks": len(info.rollbacks),
            "wall_time": info.wall_time,
        },
    }
