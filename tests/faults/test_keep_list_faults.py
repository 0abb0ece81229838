"""The keep-list is part of the run's durable state: a restarted attempt never prunes what the run keeps."""

from __future__ import annotations

import json

from tests.faults.conftest import read_jsonl
from tests.integration.test_run_fake import FAKE, lrsup

TOML = """
[[policy]]
use = "plateau"
patience = 1

[agent]
keep_last = 1
checkpoint_every_epochs = 1

[run]
backoff_base = 0.1
backoff_cap = 0.2
"""


def test_a_restarted_attempt_keeps_the_checkpoints_the_run_retains(tmp_path):
    # The best checkpoint is the first epoch's (epoch-0001); the trainer crashes once in the fifth
    # epoch and is restarted from epoch-0004. With keep_last = 1 the new attempt, which never read
    # the old retain commands, used to delete epoch-0001 at its first checkpoint; $LRSUP_RETAIN
    # now gives it the list.
    (tmp_path / "lrsup.toml").write_text(TOML)
    losses = ["--val-loss", "0.5,0.9,0.9,0.9,0.9,0.9"]
    args = ["--checkpoints", "--epochs", "6", *losses, "--crash-once-at-epoch", "4"]
    result = lrsup("run", "--run-dir", "r", str(FAKE), "--", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "r"
    assert "restored checkpoint 'epoch-0004'" in (run_dir / "trainer.log").read_text()
    retains = [c["keep"] for c in read_jsonl(run_dir / "control.jsonl") if c["cmd"] == "retain"]
    assert retains[-1] == ["epoch-0001", "epoch-0006"]
    manifest = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())
    assert {"epoch-0001", "epoch-0006"} <= {entry["name"] for entry in manifest["checkpoints"]}
    assert (run_dir / "checkpoints" / "epoch-0001.json").exists()


def test_the_keep_list_is_read_back_from_control_jsonl_and_passed_by_environment(tmp_path):
    from lrsup.supervisor.protocol.wire import ENV_RETAIN, retain_from_env
    from lrsup.supervisor.rundir.recovery import read_control

    control = tmp_path / "control.jsonl"
    lines = [
        {"v": 1, "seq": 1, "cmd": "retain", "time": 0.0, "keep": ["lr_find-0"]},
        {"v": 1, "seq": 2, "cmd": "verdict", "time": 0.0, "epoch": 0},
        {"v": 1, "seq": 3, "cmd": "retain", "time": 0.0, "keep": ["lr_find-0", "epoch-0001"]},
    ]
    control.write_text("".join(json.dumps(line) + "\n" for line in lines))
    history = read_control(control)  # what lrsup resume gives every new attempt
    assert history.retained == ["lr_find-0", "epoch-0001"] and history.last_verdict_seq == 2
    assert retain_from_env({ENV_RETAIN: json.dumps(history.retained)}) == {"lr_find-0", "epoch-0001"}
    assert retain_from_env({}) == frozenset() and retain_from_env({ENV_RETAIN: "{oops"}) == frozenset()
    assert retain_from_env({ENV_RETAIN: '["../etc", "ok-1"]'}) == {"ok-1"}  # only checkpoint names
