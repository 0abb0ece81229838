"""Secrets stay secret (issue 17, item 11): credentials in a webhook URL and ``[notify]`` values
marked secret appear nowhere lrsup writes or prints them."""

from __future__ import annotations

import json
import socket

from lrsup.supervisor.config import ConfigError, config_from_json, load_config, redact
from tests.faults.conftest import BASE_TOML, finish, trainer_pids

SECRETS = ("s3cr3t-pw", "TOKEN-XYZ")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notify_toml(port: int) -> str:
    return (
        BASE_TOML
        + f"""
[notify]
webhook = "http://ana:s3cr3t-pw@127.0.0.1:{port}/hook"
command = "exit 3 # TOKEN-XYZ"
secret = ["command"]
on = ["end", "restart"]
timeout = 2
"""
    )


def test_no_secret_in_the_run_directory_or_on_the_terminal(workdir, procs):
    (workdir / "lrsup.toml").write_text(notify_toml(closed_port()))
    proc = procs.lrsup_run(workdir, "r", "--epochs", "2", "--die-at-epoch", "0")
    procs.add(proc.pid)
    out, err = finish(proc, 60)
    run_dir = workdir / "r"
    procs.add(*trainer_pids(run_dir))
    assert proc.returncode == 0, out + err
    journal = (run_dir / "journal.jsonl").read_text()
    assert journal.count('"notify_failed"') >= 2  # the webhook and the command both failed, and said so
    assert "webhook http://127.0.0.1" in journal  # sent with basic auth, the URL shown without its credentials
    assert json.loads((run_dir / "config.json").read_text())["notify"]["command"] == "***"
    for path in run_dir.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in text, f"{secret} in {path.name}"
    for secret in SECRETS:
        assert secret not in out + err


def test_a_resumed_run_takes_its_secrets_from_the_original_file(tmp_path):
    (tmp_path / "lrsup.toml").write_text(notify_toml(9))
    config = load_config(None, tmp_path)
    stored = json.loads(json.dumps(config.to_json()))
    assert not any(secret in json.dumps(stored) for secret in SECRETS)
    again = config_from_json(stored, "config.json")
    assert again.notify == config.notify  # read again from lrsup.toml
    (tmp_path / "lrsup.toml").write_text(notify_toml(10))  # changed since: no guessing
    assert config_from_json(stored, "config.json").notify is None


def test_config_errors_and_the_redaction_rule(tmp_path):
    (tmp_path / "lrsup.toml").write_text('[notify]\nwebhook = "ftp://ana:s3cr3t-pw@host/x"\n')
    try:
        load_config(None, tmp_path)
    except ConfigError as exc:
        assert "s3cr3t-pw" not in str(exc) and "notify.webhook" in str(exc)
    else:
        raise AssertionError("an ftp webhook was accepted")
    assert redact("see https://tok@h/x and http://a:b@h:1/ ok") == "see https://***@h/x and http://***@h:1/ ok"
    assert redact("run TOKEN-XYZ now", ["TOKEN-XYZ"]) == "run *** now"
