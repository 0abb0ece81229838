"""Crashes are diagnosed, not retried blindly (issue 13 item 4): the same crash twice ends the run
at once with the script's traceback; a different crash is restarted (fakes, no real processes)."""

from __future__ import annotations

import pytest

from lrsup.policies.plateau import Plateau
from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.protocol import wire as protocol
from lrsup.supervisor.protocol.jsonl import Appender, iter_objects
from lrsup.supervisor.protocol.wire import EndRecord
from lrsup.supervisor.run.lifecycle import State
from tests.run.test_night import Crashing, GoodEngine, TickingClock, events, journal, make
from tests.run.test_runner import ScriptedTrainer

pytestmark = pytest.mark.timeout(60)

TRACEBACK = """Traceback (most recent call last):
  File "{root}/t.py", line 20, in <module>
    model.fit(x, y, callbacks=[Buggy()])
  File "/venv/lib/python3.12/site-packages/keras/src/utils/traceback_utils.py", line 122, in error_handler
    raise e.with_traceback(filtered_tb) from None
  File "{root}/t.py", line 9, in on_epoch_end
    raise {error}
{error}
"""


class RaisingAt(Crashing):
    """Trains ``epochs_before`` epochs of this attempt, then raises in the next one: an end record
    (reason exception) and a traceback in trainer.log, exit status 1 (as the launcher exits)."""

    def __init__(self, root, epochs_before: int, error: str = "RuntimeError: bug at epoch 4", epoch: int = 3) -> None:
        super().__init__(root, epochs_before)
        self.error, self.epoch, self.root = error, epoch, root

    def __call__(self):
        if len(self.epoch_lrs) > self.limit:
            Appender(self.root / protocol.METRICS_FILE).write(EndRecord(reason="exception", epoch=self.epoch).to_json())
            with open(self.root / "trainer.log", "a") as log:
                log.write(TRACEBACK.format(root=self.root, error=self.error))
            return 1
        return ScriptedTrainer.__call__(self)


def test_the_same_crash_at_the_same_epoch_twice_ends_the_run_with_its_traceback(tmp_path, capsys):
    # Attempt 1 trains 3 epochs and raises in epoch 4; attempt 2 resumes there and raises again.
    runner, spawner = make(
        tmp_path,
        [lambda r: RaisingAt(r, 3), lambda r: RaisingAt(r, 0), lambda r: ScriptedTrainer(r, [1.0])],
        engine=GoodEngine([]),
        clock=TickingClock(),
    )
    assert runner.run() == 3
    assert len(spawner.spawned) == 2 and runner.lifecycle.state is State.FATAL  # one restart, not four
    err = capsys.readouterr().err
    assert "the same crash twice, in epoch 4 of fit 1: RuntimeError: bug at epoch 4" in err
    assert "before its first epoch" not in err
    assert "raise RuntimeError: bug at epoch 4" in err  # the script's traceback is shown
    fatal = next(e for e in journal(runner, "event") if e["event"] == "fatal")
    assert fatal["exception"] == "RuntimeError: bug at epoch 4"
    assert fatal["frame"].endswith("line 9, in on_epoch_end") and fatal["traceback"][0].startswith("Traceback")


def test_a_different_crash_is_restarted(tmp_path):
    runner, spawner = make(
        tmp_path,
        [
            lambda r: RaisingAt(r, 3),
            lambda r: RaisingAt(r, 0, error="ValueError: another bug"),
            lambda r: ScriptedTrainer(r, [1.0]),
        ],
        engine=GoodEngine([]),
        clock=TickingClock(),
    )
    assert runner.run() == 0
    assert len(spawner.spawned) == 3 and events(runner).count("restarted") == 2


class FreshAgent(ScriptedTrainer):
    """A restarted attempt: like the agent, counts every command already in control.jsonl as handled."""

    def __init__(self, root, val_losses, **kw) -> None:
        super().__init__(root, val_losses, **kw)
        self._skip = max((o["seq"] for o in iter_objects(root / protocol.CONTROL_FILE)), default=0)

    def _commands(self):
        for obj in super()._commands():
            if obj["seq"] > self._skip:
                yield obj


class PlateauWithCheckpoint(Engine):
    known_good_checkpoint = "epoch-0001"


def losses(trainer, values):
    trainer.val_losses = values  # read lazily by the scripted trainer's generator
    return trainer


def test_a_restarted_attempt_trains_at_the_lr_lrsup_last_decided(tmp_path):
    # Plateau cuts 0.1 -> 0.05 at epoch 2 (acked); epoch 3 improves; the trainer crashes in epoch 4. The
    # checkpoint it restores holds the LR before the cut (0.1): the restart is sent the cut LR, once,
    # before its start barrier opens.
    engine = PlateauWithCheckpoint([Plateau(factor=0.5, patience=1)])
    runner, _ = make(
        tmp_path,
        [lambda r: losses(Crashing(r, 3), [1.0, 1.0, 0.5, 0.4]), lambda r: FreshAgent(r, [0.3], lr=0.1)],
        engine=engine,
        clock=TickingClock(),
    )
    assert runner.run() == 0
    lines = journal(runner)
    restarted = next(i for i, x in enumerate(lines) if x.get("event") == "restarted")
    assert [x["lr"] for x in lines[:restarted] if x["type"] == "decision"] == pytest.approx([0.05])
    restart_lr = [e for e in journal(runner, "event") if e["event"] == "restart_lr"]
    assert len(restart_lr) == 1
    assert "back to the LR lrsup last decided (0.05); the attempt started at 0.1" in restart_lr[0]["detail"]
    control = list(iter_objects(runner.paths.control))
    index = next(i for i, c in enumerate(control) if c["seq"] == restart_lr[0]["seq"])
    assert control[index]["cmd"] == "set_lr" and control[index]["lr"] == pytest.approx(0.05)
    assert control[index + 1]["cmd"] == "verdict" and control[index + 1]["epoch"] == -1  # before the start barrier


def test_a_cut_in_flight_at_the_crash_is_resent_once_not_doubled(tmp_path):
    # The cut decided on epoch 3 (0.025) was never acknowledged: it is re-sent, and nothing else sets the LR.
    engine = PlateauWithCheckpoint([Plateau(factor=0.5, patience=1)])
    runner, _ = make(
        tmp_path,
        [lambda r: Crashing(r, 2), lambda r: FreshAgent(r, [1.0], lr=0.1)],
        engine=engine,
        clock=TickingClock(),
    )
    assert runner.run() == 0
    control = list(iter_objects(runner.paths.control))
    (resent,) = [e for e in journal(runner, "event") if e["event"] == "resent"]
    by_seq = {c["seq"]: c for c in control}
    assert by_seq[resent["original_seq"]]["lr"] == by_seq[resent["seq"]]["lr"] == pytest.approx(0.025)
    # The re-sent cut is the only LR command before the new attempt's start barrier: no second set_lr.
    first = next(i for i, c in enumerate(control) if c["seq"] == resent["seq"])
    barrier = next(i for i, c in enumerate(control) if i > first and c["cmd"] == "verdict")
    assert control[barrier]["epoch"] == -1 and [c["cmd"] for c in control[first + 1 : barrier]] == []
    assert "restart_lr" not in events(runner)
