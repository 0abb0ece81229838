"""The runner asks the trainer for the LR range test's probe ($LRSUP_PROBE) only while lr_find wants one."""

from __future__ import annotations

from lrsup.supervisor.config import load_config
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.protocol.wire import ENV_PROBE, ENV_RESTORE, StartRecord
from tests.run.test_night import make

TOML = """
[[policy]]
use = "lr_find"
mode = "auto"

[run]
backoff_base = 2.0
"""


def test_the_first_attempt_gets_the_probe_and_one_after_the_test_began_does_not(tmp_path):
    runner, _ = make(tmp_path, [], toml=TOML)
    assert runner._env_for(1)[ENV_PROBE] == "1"
    runner.engine.feed(StartRecord(pid=1, lr=0.1, optimizer="SGD", probe=True))  # the probe began, then died
    env = runner._env_for(2)
    assert ENV_PROBE not in env and ENV_RESTORE not in env  # afresh, at the script's LR, no probe


def test_no_probe_for_a_stack_without_lr_find_nor_for_an_in_fit_test_nor_a_restored_attempt(tmp_path):
    runner, _ = make(tmp_path, [], toml='[[policy]]\nuse = "plateau"\n')
    assert ENV_PROBE not in runner._env_for(1)
    (tmp_path / "b").mkdir()
    runner, _ = make(tmp_path / "b", [], toml='[[policy]]\nuse = "lr_find"\nprobe = false\n')
    assert ENV_PROBE not in runner._env_for(1)

    class Restoring(Engine):
        known_good_checkpoint = "epoch-0001"

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "lrsup.toml").write_text(TOML)
    engine = Restoring(load_config(None, tmp_path / "c").build_policies())
    runner, _ = make(tmp_path / "c", [], toml=TOML, engine=engine)
    env = runner._env_for(2)
    assert env[ENV_RESTORE] == "epoch-0001" and ENV_PROBE not in env
