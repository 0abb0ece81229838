"""What a person reads about the LR range test's probe: its steps are the probe's, undone after it."""

from __future__ import annotations

from lrsup.supervisor.agent.records import describe_command
from lrsup.supervisor.protocol.wire import StartRecord
from lrsup.supervisor.run.lifecycle import _describe_start


def test_a_command_applied_inside_the_probe_names_the_probe_not_an_epoch_of_the_run():
    line = describe_command({"cmd": "clear_schedule", "reason": "test over"}, None, 102, 10.0, False, probe=True)
    assert line.startswith("LR range test probe, step 102: clear_schedule") and "epoch" not in line
    assert describe_command({"cmd": "set_lr", "lr": 0.1}, 2, 90, 0.1, False).startswith("epoch 3 step 90: set_lr")


def test_the_probe_start_is_not_announced_as_the_training():
    probe = _describe_start(StartRecord(pid=7, optimizer="SGD", lr=0.01, epochs=15, probe=True))
    assert probe == "LR range test probe started (pid 7, before fit 1; undone after it)"
    assert _describe_start(StartRecord(pid=7, optimizer="SGD", lr=0.01, epochs=15)).startswith("training started")
