"""Unit tests of the Keras-free agent core, driven by a fake optimizer handle."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrsup.supervisor.agent import (
    Agent,
    AgentError,
    Settings,
    load_settings,
    metrics_of,
)
from lrsup.supervisor.protocol.jsonl import iter_objects
from lrsup.supervisor.protocol.wire import (
    CONTROL_FILE,
    DEFAULT_BATCH_MIN_INTERVAL,
    ENV_RUN_DIR,
    METRICS_FILE,
    dumps,
    make_command,
    parse_record,
)
from tests.fakes import FakeClock

pytestmark = pytest.mark.timeout(60)


class FakeHandle:
    """An optimizer with a float LR and a momentum, recording what the agent did to it."""

    def __init__(self, lr: float = 0.1, on_stop=None) -> None:
        self.lr = lr
        self.hparams = {"momentum": 0.9}
        self.calls: list[tuple] = []
        self.stopped = False
        self._on_stop = on_stop

    def get_lr(self) -> float:
        return self.lr

    def set_lr(self, lr: float) -> None:
        self.calls.append(("set_lr", lr))
        self.lr = lr

    def scale_lr(self, factor: float) -> None:
        self.calls.append(("scale_lr", factor))
        self.lr *= factor

    def set_hparam(self, name: str, value: float) -> None:
        if name not in self.hparams:
            raise ValueError(f"FakeOptimizer has no hyperparameter {name!r}")
        self.calls.append(("set_hparam", name, value))
        self.hparams[name] = value

    def request_stop(self) -> None:
        if self._on_stop is not None:
            self._on_stop()
        self.stopped = True


def records(run_dir: Path, kind: str | None = None) -> list[dict]:
    """The records of metrics.jsonl, each checked against the protocol."""
    out = []
    for obj in iter_objects(run_dir / METRICS_FILE):
        parse_record(obj)  # raises if the agent wrote something the supervisor would refuse
        if kind is None or obj["type"] == kind:
            out.append(obj)
    return out


class Control:
    """Writes commands to control.jsonl the way the supervisor does."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / CONTROL_FILE
        self.seq = 0

    def send(self, cmd: str, **args) -> int:
        self.seq += 1
        self.raw(dumps(make_command(self.seq, cmd, time=time.time(), **args)) + "\n")
        return self.seq

    def raw(self, text: str) -> None:
        with open(self.path, "ab") as f:
            f.write(text.encode())


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


@pytest.fixture
def agent_factory(run_dir: Path):
    agents: list[Agent] = []

    def make(**kwargs) -> Agent:
        kwargs.setdefault("verdict_timeout", 0.0)
        kwargs.setdefault("heartbeat_interval", 60.0)
        agent = Agent(run_dir, **kwargs)
        agent.poll_interval = 0.0  # poll at every batch end: the tests write a command, then call batch_end
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.close()


def test_start_writes_a_valid_start_record(run_dir, agent_factory):
    agent = agent_factory()
    agent.start(
        FakeHandle(0.25), optimizer="SGD", optimizer_config={"momentum": 0.9}, steps_per_epoch=5, epochs=3, step=7
    )
    (start,) = records(run_dir, "start")
    assert start["pid"] == os.getpid()
    assert start["lr"] == 0.25
    assert start["step"] == 7 and start["epochs"] == 3 and start["steps_per_epoch"] == 5
    assert start["optimizer"] == "SGD" and start["optimizer_config"] == {"momentum": 0.9}
    assert start["agent"].startswith("lrsup ")
    assert start["time"] == pytest.approx(time.time(), abs=5)
    assert start["fit"] == 1


def test_each_fit_of_the_process_is_numbered_in_its_start_record(run_dir, agent_factory):
    agent = agent_factory()
    for _ in range(3):
        agent.start(FakeHandle(0.1), barrier=False)
        agent.end(reason="completed", epoch=None, step=0)
    assert [start["fit"] for start in records(run_dir, "start")] == [1, 2, 3]


def test_batch_records_every_n_steps_and_logs_converted_only_then(run_dir, agent_factory):
    agent = agent_factory(batch_every=3, batch_min_interval=0)
    handle = FakeHandle()
    agent.start(handle)
    calls = []

    def logs():
        calls.append(1)
        return {"loss": 1.5}

    for step in range(1, 11):
        agent.batch_end(handle, epoch=0, batch=step - 1, step=step, logs=logs)
    batches = records(run_dir, "batch")
    assert [b["step"] for b in batches] == [3, 6, 9]
    assert [b["batch"] for b in batches] == [2, 5, 8]
    assert batches[0]["logs"] == {"loss": 1.5} and batches[0]["lr"] == 0.1
    assert len(calls) == 3


def test_batch_records_line_up_on_multiples_after_a_resume(run_dir, agent_factory):
    agent = agent_factory(batch_every=4, batch_min_interval=0)
    handle = FakeHandle()
    agent.start(handle, step=6)
    for step in range(7, 15, 3):  # steps_per_execution=3: 7, 10, 13
        agent.batch_end(handle, epoch=0, batch=0, step=step)
    assert [b["step"] for b in records(run_dir, "batch")] == [10, 13]


def test_batch_min_interval_skips_multiples_that_come_too_soon(run_dir, agent_factory):
    agent = agent_factory(batch_every=2, batch_min_interval=1.0)
    clock = FakeClock(start=1000.0)
    agent.clock = clock.monotonic
    handle = FakeHandle()
    agent.start(handle)
    for step in range(1, 13):  # 0.3 s a step
        clock.now += 0.3
        agent.batch_end(handle, epoch=0, batch=step - 1, step=step, logs={"loss": 1.0})
    # step 2 (the first block), then the first multiple of 2 at least 1 s after the last record
    assert [b["step"] for b in records(run_dir, "batch")] == [2, 6, 10]


def test_batch_min_interval_defaults_to_a_tenth_of_a_second(run_dir, agent_factory):
    agent = agent_factory(batch_every=1)
    assert agent.settings.batch_min_interval == DEFAULT_BATCH_MIN_INTERVAL == 0.1
    clock = FakeClock(start=1000.0)
    agent.clock = clock.monotonic
    handle = FakeHandle()
    agent.start(handle)
    for step in range(1, 201):  # 200 steps of 1/1024 s (exact in binary)
        clock.now += 1 / 1024
        agent.batch_end(handle, epoch=0, batch=step - 1, step=step)
    # the first block, then the first step at least 0.1 s later: 103 steps of 0.98 ms
    assert [b["step"] for b in records(run_dir, "batch")] == [1, 104]


def test_a_configure_command_changes_batch_min_interval_and_records_the_next_block(run_dir, agent_factory):
    agent = agent_factory(batch_every=1, batch_min_interval=10.0)
    clock = FakeClock(start=1000.0)
    agent.clock = clock.monotonic
    agent.poll_interval = 0  # a look at control.jsonl at every batch end
    handle = FakeHandle()
    agent.start(handle)
    agent.batch_end(handle, epoch=0, batch=0, step=1)  # recorded: the first block
    agent.batch_end(handle, epoch=0, batch=1, step=2)  # too soon
    control = Control(run_dir)
    control.send("configure", batch_min_interval=0.0)
    agent.batch_end(handle, epoch=0, batch=2, step=3)  # too soon still: the command is read after it
    for step in (4, 5, 6):
        agent.batch_end(handle, epoch=0, batch=step - 1, step=step)
    assert agent.settings.batch_min_interval == 0.0
    assert [b["step"] for b in records(run_dir, "batch")] == [1, 4, 5, 6]
    control.send("configure", batch_min_interval=10.0)
    for step in (7, 8, 9):  # read at step 7's batch end; step 8 begins a new count
        agent.batch_end(handle, epoch=0, batch=step - 1, step=step)
    assert [b["step"] for b in records(run_dir, "batch")][4:] == [7, 8]
    clock.now += 10.0
    agent.batch_end(handle, epoch=0, batch=9, step=10)
    assert [b["step"] for b in records(run_dir, "batch")][6:] == [10]


def test_set_lr_is_applied_at_the_next_batch_end_and_acked(run_dir, agent_factory):
    agent = agent_factory()
    handle = FakeHandle()
    agent.start(handle)
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    Control(run_dir).send("set_lr", lr=0.05, reason="plateau")
    assert handle.lr == 0.1
    agent.batch_end(handle, epoch=0, batch=1, step=2)
    assert handle.lr == 0.05
    (ack,) = records(run_dir, "ack")
    assert ack == {**ack, "seq": 1, "cmd": "set_lr", "epoch": 0, "step": 2, "lr": 0.05, "late": False}


def test_a_partial_line_waits_for_its_newline(run_dir, agent_factory):
    agent = agent_factory()
    handle = FakeHandle()
    agent.start(handle)
    control = Control(run_dir)
    line = dumps(make_command(1, "scale_lr", time=0.0, factor=0.5)) + "\n"
    control.raw(line[:10])
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    assert handle.calls == [] and records(run_dir, "error") == []
    control.raw(line[10:])
    agent.batch_end(handle, epoch=0, batch=1, step=2)
    assert handle.calls == [("scale_lr", 0.5)]


def test_garbage_and_invalid_commands_give_error_records_and_training_goes_on(run_dir, agent_factory):
    agent = agent_factory()
    handle = FakeHandle()
    agent.start(handle)
    control = Control(run_dir)
    control.raw("this is not json\n")
    control.raw('{"v":1,"seq":1,"cmd":"explode","time":0}\n')
    control.raw('{"v":1,"seq":2,"cmd":"set_lr","lr":-1.0,"time":0}\n')
    control.raw('{"v":1,"seq":3,"cmd":"set_hparam","name":"nesterov","value":1.0,"time":0}\n')
    control.raw('{"v":1,"seq":4,"cmd":"scale_lr","factor":0.5,"time":0}\n')
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    errors = records(run_dir, "error")
    assert [(e["seq"], e["cmd"]) for e in errors] == [(None, None), (1, "explode"), (2, "set_lr"), (3, "set_hparam")]
    assert "explode" in errors[1]["message"]
    assert "-1.0" in errors[2]["message"]
    assert "nesterov" in errors[3]["message"]  # the handle's ValueError, quoted
    assert handle.lr == 0.05
    assert [a["seq"] for a in records(run_dir, "ack")] == [4]


def test_commands_are_idempotent_by_seq(run_dir, agent_factory):
    agent = agent_factory()
    handle = FakeHandle()
    agent.start(handle)
    line = dumps(make_command(1, "scale_lr", time=0.0, factor=0.5)) + "\n"
    control = Control(run_dir)
    control.raw(line + line)
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    control.raw(line)
    control.raw(dumps(make_command(2, "scale_lr", time=0.0, factor=0.5)) + "\n")
    agent.batch_end(handle, epoch=0, batch=1, step=2)
    assert handle.lr == pytest.approx(0.025)
    assert [a["seq"] for a in records(run_dir, "ack")] == [1, 2]


def test_stop_is_acked_before_the_stop_is_requested(run_dir, agent_factory):
    seen_at_stop = []
    handle = FakeHandle(on_stop=lambda: seen_at_stop.extend(records(run_dir, "ack")))
    agent = agent_factory()
    agent.start(handle)
    Control(run_dir).send("stop")
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    assert handle.stopped
    assert [a["cmd"] for a in seen_at_stop] == ["stop"]


def test_commands_already_there_when_the_agent_starts_are_not_replayed(run_dir, agent_factory):
    control = Control(run_dir)
    control.send("stop")
    control.send("set_lr", lr=0.5)
    agent = agent_factory()
    handle = FakeHandle()
    agent.start(handle)
    control.send("scale_lr", factor=0.5)
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    assert not handle.stopped
    assert handle.calls == [("scale_lr", 0.5)]
    assert [a["seq"] for a in records(run_dir, "ack")] == [3]


def test_a_replaced_control_file_is_read_again_without_replaying(run_dir, agent_factory):
    agent = agent_factory()
    handle = FakeHandle()
    agent.start(handle)
    control = Control(run_dir)
    control.send("scale_lr", factor=0.5)
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    text = (run_dir / CONTROL_FILE).read_text()
    (run_dir / CONTROL_FILE).unlink()
    (run_dir / CONTROL_FILE).write_text(text)
    control.send("scale_lr", factor=0.1)
    agent.batch_end(handle, epoch=0, batch=1, step=2)
    assert handle.calls == [("scale_lr", 0.5), ("scale_lr", 0.1)]


def test_epoch_end_returns_as_soon_as_the_verdict_is_there(run_dir, agent_factory):
    agent = agent_factory(verdict_timeout=10.0)
    handle = FakeHandle()
    agent.start(handle, barrier=False)
    control = Control(run_dir)

    def supervisor():
        while not records(run_dir, "epoch"):
            time.sleep(0.005)
        time.sleep(0.1)
        control.send("set_lr", lr=0.01)
        control.send("verdict", epoch=0)

    thread = threading.Thread(target=supervisor)
    thread.start()
    t0 = time.monotonic()
    agent.epoch_end(handle, epoch=0, step=5, logs={"loss": 1.0})
    elapsed = time.monotonic() - t0
    thread.join()
    assert 0.1 <= elapsed < 1.0
    assert handle.lr == 0.01
    (ack,) = records(run_dir, "ack")
    assert (ack["epoch"], ack["step"], ack["late"]) == (0, 5, False)

    control.send("verdict", epoch=1)  # already there: no wait at all
    t0 = time.monotonic()
    agent.epoch_end(handle, epoch=1, step=10, logs={})
    assert time.monotonic() - t0 < 0.05


def test_a_verdict_timeout_warns_and_later_commands_are_acked_late(run_dir, agent_factory, capsys):
    agent = agent_factory(verdict_timeout=0.05)
    handle = FakeHandle()
    agent.start(handle, barrier=False)
    control = Control(run_dir)
    t0 = time.monotonic()
    agent.epoch_end(handle, epoch=0, step=5, logs={"loss": 1.0})
    assert 0.05 <= time.monotonic() - t0 < 1.0
    err = capsys.readouterr().err
    assert err.count("no verdict") == 1 and "for epoch 1 after" in err  # shown 1-based, as Keras does
    control.send("set_lr", lr=0.02)
    agent.batch_end(handle, epoch=1, batch=0, step=6)
    control.send("verdict", epoch=0)
    control.send("set_lr", lr=0.03)
    agent.batch_end(handle, epoch=1, batch=1, step=7)
    assert [(a["lr"], a["late"]) for a in records(run_dir, "ack")] == [(0.02, True), (0.03, False)]


def test_verdicts_of_an_earlier_fit_do_not_release_a_later_one(run_dir, agent_factory):
    agent = agent_factory(verdict_timeout=0.05)
    handle = FakeHandle()
    agent.start(handle)
    control = Control(run_dir)
    for epoch in range(3):
        control.send("verdict", epoch=epoch)
    agent.epoch_end(handle, epoch=2, step=3, logs={})
    agent.end(reason="completed", epoch=2, step=3)
    agent.start(handle, step=3)
    t0 = time.monotonic()
    agent.epoch_end(handle, epoch=0, step=4, logs={})
    assert time.monotonic() - t0 >= 0.05


def test_heartbeats_run_on_a_thread_and_stop_at_end(run_dir, agent_factory):
    agent = agent_factory(heartbeat_interval=0.05)
    handle = FakeHandle()
    agent.start(handle, step=3)
    agent.batch_end(handle, epoch=1, batch=0, step=4)
    deadline = time.monotonic() + 5
    while len(records(run_dir, "heartbeat")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    beats = records(run_dir, "heartbeat")
    assert len(beats) >= 2
    assert (beats[-1]["epoch"], beats[-1]["step"]) == (1, 4)
    assert any(t.name == "lrsup-heartbeat" for t in threading.enumerate())
    agent.end(reason="completed", epoch=1, step=4)
    time.sleep(0.15)
    assert records(run_dir)[-1]["type"] == "end"
    assert not any(t.name == "lrsup-heartbeat" for t in threading.enumerate())


def test_non_finite_logs_round_trip_and_scalars_become_floats(run_dir, agent_factory):
    class Scalar:  # what a numpy or tensor scalar offers
        def __float__(self) -> float:
            return 0.75

    agent = agent_factory()
    handle = FakeHandle()
    agent.start(handle)
    logs = {"loss": float("nan"), "val_loss": float("inf"), "acc": Scalar(), "name": "text", "n": 3}
    agent.epoch_end(handle, epoch=0, step=1, logs=logs)
    text = (run_dir / METRICS_FILE).read_text()
    assert "NaN" in text and "Infinity" in text
    (epoch,) = records(run_dir, "epoch")
    assert math.isnan(epoch["logs"]["loss"]) and epoch["logs"]["val_loss"] == math.inf
    assert epoch["logs"]["acc"] == 0.75 and epoch["logs"]["n"] == 3.0
    assert "name" not in epoch["logs"]


def test_metrics_of_accepts_a_callable_or_nothing():
    assert metrics_of(None) == {}
    assert metrics_of(lambda: {"a": 1}) == {"a": 1.0}


def test_settings_come_from_config_json_and_arguments_override(run_dir):
    (run_dir / "config.json").write_text(json.dumps({"agent": {"batch_every": 4, "verdict_timeout": 0.5}, "run": {}}))
    assert load_settings(run_dir) == Settings(batch_every=4, verdict_timeout=0.5, heartbeat_interval=5.0)
    assert load_settings(run_dir, verdict_timeout=2, batch_every=None).verdict_timeout == 2.0
    with Agent(run_dir, heartbeat_interval=1.0) as agent:
        assert (agent.batch_every, agent.verdict_timeout, agent.heartbeat_interval) == (4, 0.5, 1.0)


def test_defaults_without_config_json(run_dir):
    assert load_settings(run_dir) == Settings(10, 10.0, 5.0)
    assert load_settings(run_dir).batch_min_interval == 0.1


@pytest.mark.parametrize(
    "config, quoted",
    [
        ({"agent": {"batch_every": 0}}, "0"),
        ({"agent": {"verdict_timeout": "soon"}}, "'soon'"),
        ({"agent": 3}, "3"),
        ({"agent": {"batch_min_interval": -0.5}}, "batch_min_interval must be a number of seconds >= 0"),
    ],
)
def test_a_bad_config_json_names_the_file_and_the_value(run_dir, config, quoted):
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(AgentError) as info:
        Agent(run_dir)
    assert "config.json" in str(info.value) and quoted in str(info.value)


def test_bad_arguments_are_refused_by_name(run_dir):
    with pytest.raises(ValueError, match=r"batch_every .* got True"):
        Agent(run_dir, batch_every=True)
    with pytest.raises(ValueError, match=r"heartbeat_interval .* got 0"):
        Agent(run_dir, heartbeat_interval=0)


def test_a_missing_run_dir_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(AgentError, match="nowhere"):
        Agent(missing)


def test_an_unwritable_metrics_file_is_named(run_dir):
    (run_dir / METRICS_FILE).mkdir()  # refused even to root
    with pytest.raises(AgentError, match="metrics.jsonl"):
        Agent(run_dir)


def test_from_env(run_dir, monkeypatch):
    monkeypatch.delenv(ENV_RUN_DIR, raising=False)
    assert Agent.from_env() is None
    monkeypatch.setenv(ENV_RUN_DIR, str(run_dir))
    agent = Agent.from_env()
    assert agent is not None and agent.run_dir == str(run_dir)
    agent.close()


def test_writing_after_close_is_an_error(run_dir):
    agent = Agent(run_dir)
    agent.close()
    agent.close()
    with pytest.raises(AgentError, match="closed"):
        agent.end(reason="completed", epoch=0, step=0)


def test_an_idle_poll_is_cheap(run_dir, agent_factory):
    agent = agent_factory(batch_every=10**9)
    handle = FakeHandle()
    agent.start(handle)
    Control(run_dir).send("verdict", epoch=0)
    n = 2000
    t0 = time.perf_counter()
    for step in range(1, n + 1):
        agent.batch_end(handle, epoch=0, batch=step, step=step, logs=None)
    per_batch = (time.perf_counter() - t0) / n
    assert per_batch < 200e-6  # about 2-5 us here; loose for a busy machine


def test_core_imports_neither_keras_nor_numpy():
    code = (
        "import sys, lrsup.supervisor.agent.core\n"
        "bad = [m for m in ('keras', 'tensorflow', 'numpy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    factors=st.lists(st.sampled_from([0.5, 2.0, 0.25]), min_size=1, max_size=6),
)
def test_commands_split_anywhere_are_applied_once_each_in_order(cuts, factors):
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        text = "".join(dumps(make_command(i + 1, "scale_lr", time=0.0, factor=f)) + "\n" for i, f in enumerate(factors))
        points = sorted({min(c, len(text)) for c in cuts} | {len(text)})
        handle = FakeHandle()
        with Agent(run_dir, verdict_timeout=0, heartbeat_interval=60) as agent:
            agent.poll_interval = 0.0
            agent.start(handle)
            start = 0
            for step, point in enumerate(points, 1):
                with open(run_dir / CONTROL_FILE, "ab") as f:
                    f.write(text[start:point].encode())
                start = point
                agent.batch_end(handle, epoch=0, batch=step, step=step)
        assert handle.calls == [("scale_lr", f) for f in factors]
        assert records(run_dir, "error") == []


# -- the start barrier ---------------------------------------------------------------


def _answer_start(run_dir: Path, control: Control, commands: list[tuple[str, dict]], delay: float = 0.1):
    """A supervisor thread: once the start record is there, wait ``delay``, send ``commands``
    and then the verdict on the start record (epoch initial_epoch - 1)."""

    def supervisor():
        while not records(run_dir, "start"):
            time.sleep(0.002)
        (start,) = records(run_dir, "start")[-1:]
        time.sleep(delay)
        for cmd, args in commands:
            control.send(cmd, **args)
        control.send("verdict", epoch=start["initial_epoch"] - 1)

    thread = threading.Thread(target=supervisor)
    thread.start()
    return thread


def test_start_waits_for_the_verdict_and_applies_commands_before_the_first_batch(run_dir, agent_factory, capsys):
    agent = agent_factory(verdict_timeout=10.0)
    handle = FakeHandle(0.1)
    control = Control(run_dir)
    thread = _answer_start(run_dir, control, [("set_lr", {"lr": 0.01, "reason": "range test"})])
    t0 = time.monotonic()
    agent.start(handle, step=0)
    elapsed = time.monotonic() - t0
    thread.join()
    assert 0.1 <= elapsed < 5.0
    assert handle.lr == 0.01 and handle.calls == [("set_lr", 0.01)]  # before any batch
    (ack,) = records(run_dir, "ack")
    assert (ack["epoch"], ack["step"], ack["late"]) == (0, 0, False)
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    assert [r["type"] for r in records(run_dir)] == ["start", "ack"]  # no batch record yet (every 10)
    assert "no verdict" not in capsys.readouterr().err


def test_the_start_barrier_of_a_resumed_fit_waits_for_initial_epoch_minus_one(run_dir, agent_factory):
    agent = agent_factory(verdict_timeout=10.0)
    handle = FakeHandle(0.1)
    thread = _answer_start(run_dir, Control(run_dir), [("scale_lr", {"factor": 0.5})], delay=0.05)
    agent.start(handle, initial_epoch=4, step=40)
    thread.join()
    assert handle.lr == pytest.approx(0.05)
    (ack,) = records(run_dir, "ack")
    assert (ack["epoch"], ack["step"], ack["late"]) == (4, 40, False)


def test_a_verdict_read_before_the_start_record_does_not_release_it(run_dir, agent_factory, capsys):
    agent = agent_factory(verdict_timeout=0.1)
    handle = FakeHandle()
    agent.start(handle, barrier=False)
    control = Control(run_dir)
    control.send("verdict", epoch=5)  # an earlier fit's, read by the next start's first poll
    t0 = time.monotonic()
    agent.start(handle, step=3)
    assert time.monotonic() - t0 >= 0.1
    assert "no verdict from the supervisor for the start of training" in capsys.readouterr().err
    # The timeout marks what comes before the verdict late, as at an epoch end.
    control.send("set_lr", lr=0.02)
    agent.batch_end(handle, epoch=0, batch=0, step=4)
    control.send("verdict", epoch=-1)
    control.send("set_lr", lr=0.03)
    agent.batch_end(handle, epoch=0, batch=1, step=5)
    assert [(a["lr"], a["late"]) for a in records(run_dir, "ack")] == [(0.02, True), (0.03, False)]


def test_no_barrier_wait_with_verdict_timeout_zero(run_dir, agent_factory):
    agent = agent_factory(verdict_timeout=0.0)
    handle = FakeHandle()
    t0 = time.monotonic()
    agent.start(handle)
    assert time.monotonic() - t0 < 0.5
    Control(run_dir).send("set_lr", lr=0.02)
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    assert [a["late"] for a in records(run_dir, "ack")] == [False]


# -- quiet housekeeping and the poll cadence -------------------------------------------


def test_housekeeping_commands_are_acked_without_a_line_on_stderr(run_dir, agent_factory, capsys):
    agent = agent_factory()
    handle = FakeHandle()
    agent.start(handle)
    capsys.readouterr()
    control = Control(run_dir)
    control.send("retain", keep=["a"], reason="keep the best")
    control.send("configure", batch_every=1, reason="range test")
    control.send("checkpoint", name="x")  # refused (no save_state): errors still get a line
    control.send("set_lr", lr=0.05, reason="plateau")
    agent.batch_end(handle, epoch=0, batch=0, step=1)
    assert [a["cmd"] for a in records(run_dir, "ack")] == ["retain", "configure", "set_lr"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("lrsup: command refused: checkpoint failed")
    assert err[1] == "lrsup: epoch 1 step 1: set_lr lr=0.05 (lr now 0.05): plateau"


def test_batch_end_polls_at_most_once_per_poll_interval(run_dir, agent_factory):
    agent = agent_factory()
    agent.poll_interval = 60.0
    handle = FakeHandle()
    agent.start(handle)
    agent.batch_end(handle, epoch=0, batch=0, step=1)  # polls, and not again for a minute
    control = Control(run_dir)
    control.send("set_lr", lr=0.05)
    for step in range(2, 50):
        agent.batch_end(handle, epoch=0, batch=step - 1, step=step)
    assert handle.lr == 0.1
    agent.epoch_end(handle, epoch=0, step=49, logs={})  # the epoch barrier always polls
    assert handle.lr == 0.05
