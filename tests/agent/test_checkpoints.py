"""Checkpoints without TensorFlow: the store (atomic save, manifest, sha256, retention, ENOSPC)
and the agent's checkpoint, rollback, restore, schedule, retain and configure commands,
driven by a fake handle whose "weights" are a small JSON file."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from lrsup.supervisor.agent import checkpoints as ckmod
from lrsup.supervisor.agent.checkpoints import CheckpointError, CheckpointStore
from lrsup.supervisor.agent.core import Agent
from lrsup.supervisor.protocol.schedules import Schedule
from tests.agent.test_core import Control, records  # the same protocol helpers

pytestmark = pytest.mark.timeout(60)


class StateHandle:
    """A float-LR optimizer with one weight ``w``; ``step()`` does ``w -= lr``."""

    state_suffix = ".json"
    native_schedule = None

    def __init__(self, lr: float = 0.1) -> None:
        self.lr = lr
        self.w = 0.0
        self.iterations = 0
        self.stopped = False
        self.lr_history: list[float] = []

    def get_lr(self) -> float:
        return self.lr

    def set_lr(self, lr: float) -> None:
        self.lr = lr

    def scale_lr(self, factor: float) -> None:
        self.lr *= factor

    def set_hparam(self, name: str, value: float) -> None:
        raise ValueError(f"no hyperparameter {name!r}")

    def request_stop(self) -> None:
        self.stopped = True

    def step(self) -> None:
        self.lr_history.append(self.lr)
        self.w -= self.lr
        self.iterations += 1

    def save_state(self, path: str) -> dict:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"w": self.w, "lr": self.lr, "iterations": self.iterations}, f)
        return {"extra": 1}

    def load_state(self, path: str, meta: dict) -> None:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        self.w, self.lr, self.iterations = state["w"], state["lr"], state["iterations"]

    def set_step(self, step: int) -> None:
        self.iterations = step


def writer_of(payload: bytes):
    def write(path: str) -> dict:
        with open(path, "wb") as f:
            f.write(payload)
        return {}

    return write


def save(store: CheckpointStore, name: str, payload: bytes = b"x", step: int = 0, **kw):
    return store.save(
        name,
        writer_of(payload),
        suffix=".bin",
        epoch=kw.get("epoch"),
        step=step,
        lr=0.1,
        multiplier=None,
        epoch_end=kw.get("epoch_end", False),
    )


def train(
    agent: Agent,
    handle: StateHandle,
    *,
    epochs: int,
    steps: int,
    first_epoch: int = 0,
    step: int = 0,
    before_epoch_end=None,
) -> int:
    """A training loop as fit runs it: batch_begin (if a schedule), update, batch_end, epoch_end."""
    for epoch in range(first_epoch, first_epoch + epochs):
        for batch in range(steps):
            if agent.schedule_active:
                agent.batch_begin(handle, step)
            handle.step()
            step = handle.iterations
            agent.batch_end(handle, epoch=epoch, batch=batch, step=step, logs={"w": handle.w})
            step = handle.iterations  # a rollback moves it
        if before_epoch_end is not None:
            before_epoch_end(epoch)
        agent.epoch_end(handle, epoch=epoch, step=step, logs={"w": handle.w})
        step = handle.iterations
    return step


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path


def make_agent(run_dir: Path, **kw) -> Agent:
    kw.setdefault("verdict_timeout", 0)
    kw.setdefault("heartbeat_interval", 60)
    agent = Agent(run_dir, **kw)
    agent.poll_interval = 0.0  # poll at every batch end: the tests write a command, then call batch_end
    return agent


# -- the store ----------------------------------------------------------------------------


def test_save_writes_file_then_manifest_with_its_digest(run_dir):
    store = CheckpointStore(run_dir)
    entry = save(store, "a", b"hello", step=5, epoch=1, epoch_end=True)
    assert entry.file == "checkpoints/a.bin"
    assert (run_dir / entry.file).read_bytes() == b"hello"
    manifest = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())
    assert [e["name"] for e in manifest["checkpoints"]] == ["a"]
    assert manifest["checkpoints"][0]["sha256"] == ckmod.sha256_of(str(run_dir / entry.file))
    assert store.verify("a").step == 5
    assert entry.resume_epoch() == 2
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp")] == []


def test_torn_file_is_refused(run_dir):
    store = CheckpointStore(run_dir)
    entry = save(store, "a", b"0123456789")
    with open(run_dir / entry.file, "r+b") as f:
        f.truncate(4)
    with pytest.raises(CheckpointError, match="torn"):
        store.verify("a")


def test_manifest_mismatch_and_unknown_name_are_refused(run_dir):
    store = CheckpointStore(run_dir)
    save(store, "a", b"abc")
    (run_dir / "checkpoints" / "stray.bin").write_bytes(b"abc")  # a file without an entry does not exist
    with pytest.raises(CheckpointError, match="no checkpoint 'stray'"):
        store.verify("stray")
    manifest_path = run_dir / "checkpoints" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["checkpoints"][0]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="sha256"):
        store.verify("a")
    with pytest.raises(CheckpointError, match="invalid"):
        store.verify("../x")


def test_retention_keeps_last_k_and_retained(run_dir):
    store = CheckpointStore(run_dir)
    for i in range(6):
        save(store, f"c{i}", bytes([i]), step=i)
    deleted = store.prune(keep_last=2, retain={"c1"})
    assert sorted(deleted) == ["c0", "c2", "c3"]
    assert [e.name for e in store.entries()] == ["c1", "c4", "c5"]
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.bin")) == ["c1.bin", "c4.bin", "c5.bin"]


def test_retention_never_deletes_the_only_verified_checkpoint(run_dir):
    store = CheckpointStore(run_dir)
    for i in range(3):
        save(store, f"c{i}", b"payload%d" % i, step=i)
    (run_dir / "checkpoints" / "c2.bin").write_bytes(b"torn")  # the newest no longer verifies
    deleted = store.prune(keep_last=1)
    assert deleted == ["c0"]  # c1, the newest verified one, is spared
    assert [e.name for e in store.entries()] == ["c1", "c2"]
    assert store.verify("c1")


def test_enospc_during_save_leaves_previous_checkpoint_intact(run_dir, monkeypatch):
    store = CheckpointStore(run_dir)
    save(store, "good", b"good bytes")

    def full_disk(path: str) -> dict:
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(CheckpointError, match="ENOSPC"):
        store.save("bad", full_disk, suffix=".bin", epoch=0, step=1, lr=0.1, multiplier=None)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["good.bin", "manifest.json"]
    assert [e.name for e in store.entries()] == ["good"]
    assert store.verify("good")


def test_enospc_writing_the_manifest_removes_the_new_file(run_dir, monkeypatch):
    store = CheckpointStore(run_dir)
    save(store, "good", b"good bytes")
    real_write = os.write

    def write(fd, data):
        if b'"checkpoints"' in bytes(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(ckmod.os, "write", write)
    with pytest.raises(CheckpointError, match="ENOSPC"):
        save(store, "bad", b"new")
    monkeypatch.undo()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["good.bin", "manifest.json"]
    assert store.verify("good")


# -- the agent ----------------------------------------------------------------------------


def test_agent_checkpoints_at_start_and_epoch_end_before_the_epoch_record(run_dir):
    handle = StateHandle()
    with make_agent(run_dir, keep_last=10) as agent:
        agent.start(handle, step=0)
        train(agent, handle, epochs=2, steps=3)
    kinds = [(r["type"], r.get("name")) for r in records(run_dir) if r["type"] in ("checkpoint", "epoch")]
    assert kinds == [
        ("checkpoint", "step-0000000"),
        ("checkpoint", "epoch-0001"),
        ("epoch", None),
        ("checkpoint", "epoch-0002"),
        ("epoch", None),
    ]
    ck = records(run_dir, "checkpoint")
    assert [(r["epoch"], r["step"]) for r in ck] == [(None, 0), (0, 3), (1, 6)]
    # the epoch-end checkpoint holds the weights after that epoch
    state = json.loads((run_dir / ck[1]["file"]).read_text())
    assert state["w"] == pytest.approx(-0.3) and state["iterations"] == 3


def test_each_manifest_entry_carries_the_fit_it_was_taken_in(run_dir):
    handle = StateHandle()
    with make_agent(run_dir, keep_last=10) as agent:
        agent.start(handle, step=0)
        train(agent, handle, epochs=1, steps=3)
        agent.start(handle, step=handle.iterations)  # the script's second fit
        train(agent, handle, epochs=1, steps=3)
    entries = CheckpointStore(run_dir).entries()
    assert [(e.name, e.fit) for e in entries] == [
        ("step-0000000", 1),
        ("epoch-0001", 1),
        ("step-0000003", 2),
        ("epoch-0001.2", 2),
    ]
    manifest = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())
    for item in manifest["checkpoints"]:
        del item["fit"]  # a manifest from before stages
    (run_dir / "checkpoints" / "manifest.json").write_text(json.dumps(manifest))
    assert {e.fit for e in CheckpointStore(run_dir).entries()} == {1}


def test_step_cadence_and_retention_in_the_agent(run_dir):
    handle = StateHandle()
    with make_agent(run_dir, checkpoint_every_epochs=0, checkpoint_every_steps=4, keep_last=2) as agent:
        agent.start(handle, step=0)
        train(agent, handle, epochs=2, steps=5)
    names = [r["name"] for r in records(run_dir, "checkpoint")]
    assert names == ["step-0000000", "step-0000004", "step-0000008"]
    # the start checkpoint is pinned; the rest keep the last 2
    assert [e.name for e in CheckpointStore(run_dir).entries()] == ["step-0000000", "step-0000004", "step-0000008"]
    with make_agent(run_dir, checkpoint_every_epochs=0, checkpoint_every_steps=4, keep_last=1) as agent:
        agent.start(handle, step=10, checkpoint=False)
        train(agent, handle, epochs=1, steps=6, step=10)
    assert [e.name for e in CheckpointStore(run_dir).entries()] == ["step-0000016"]


def test_checkpoint_failure_is_an_error_record_and_training_goes_on(run_dir):
    class FullDisk(StateHandle):
        full = False

        def save_state(self, path):
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().save_state(path)

    handle = FullDisk()
    with make_agent(run_dir) as agent:
        agent.start(handle, step=0)
        handle.full = True
        train(agent, handle, epochs=2, steps=2)
    errors = records(run_dir, "error")
    assert len(errors) == 2 and all("ENOSPC" in e["message"] for e in errors)
    assert len(records(run_dir, "epoch")) == 2
    assert CheckpointStore(run_dir).verify("step-0000000")


def test_rollback_restores_weights_rewinds_the_step_and_sets_lr(run_dir):
    handle = StateHandle(lr=0.1)
    control = Control(run_dir)
    with make_agent(run_dir, keep_last=10) as agent:
        agent.start(handle, step=0)
        train(agent, handle, epochs=2, steps=4)  # w = -0.8 at step 8; epoch-0001 holds w = -0.4
        seq = control.send("rollback", checkpoint="epoch-0001", lr=0.01, skip_batches=0)
        step = train(agent, handle, epochs=1, steps=1, first_epoch=2, step=8)  # polls after step 9
        assert handle.w == pytest.approx(-0.4)
        assert handle.iterations == 4  # back at the checkpoint's step
        assert handle.lr == 0.01
        train(agent, handle, epochs=1, steps=2, first_epoch=3, step=step)
    acks = [r for r in records(run_dir, "ack") if r["seq"] == seq]
    assert acks and (acks[0]["epoch"], acks[0]["step"], acks[0]["lr"]) == (2, 4, 0.01)
    assert [(r["epoch"], r["step"]) for r in records(run_dir, "epoch")][-2:] == [(2, 4), (3, 6)]
    assert records(run_dir, "epoch")[-1]["logs"]["w"] == pytest.approx(-0.42)


def test_rollback_to_a_torn_checkpoint_is_refused_and_nothing_loaded(run_dir):
    handle = StateHandle()
    control = Control(run_dir)
    with make_agent(run_dir) as agent:
        agent.start(handle, step=0)
        step = train(agent, handle, epochs=1, steps=2)
        entry = CheckpointStore(run_dir).get("step-0000000")
        (run_dir / entry.file).write_text("{}")
        seq = control.send("rollback", checkpoint="step-0000000")
        agent.batch_end(handle, epoch=1, batch=0, step=step)
    assert handle.w == pytest.approx(-0.2)
    errors = [r for r in records(run_dir, "error") if r["seq"] == seq]
    assert errors and "torn" in errors[0]["message"]
    assert not [r for r in records(run_dir, "ack") if r["seq"] == seq]


def test_set_schedule_drives_lr_per_step_and_scale_sets_multiplier(run_dir):
    spec = {"kind": "exponential_decay", "initial_learning_rate": 0.2, "decay_steps": 3, "decay_rate": 0.5}
    handle = StateHandle()
    control = Control(run_dir)
    with make_agent(run_dir) as agent:
        agent.start(handle, step=0)
        step = train(agent, handle, epochs=1, steps=2)
        control.send("set_schedule", schedule=spec)
        agent.batch_end(handle, epoch=0, batch=1, step=step)
        handle.lr_history.clear()
        step = train(agent, handle, epochs=1, steps=3, first_epoch=1, step=step)
        control.send("scale_lr", factor=0.5)
        control.send("set_lr", lr=Schedule(spec)(step) * 0.25)  # multiplier 0.25 from here
        agent.batch_end(handle, epoch=1, batch=2, step=step)
        train(agent, handle, epochs=1, steps=2, first_epoch=2, step=step)
        control.send("clear_schedule")
        agent.batch_end(handle, epoch=2, batch=1, step=step + 2)
        assert not agent.schedule_active
    s = Schedule(spec)
    assert handle.lr_history[:3] == pytest.approx([s(2), s(3), s(4)])
    assert handle.lr_history[3:] == pytest.approx([0.25 * s(5), 0.25 * s(6)])


class NativeScheduleHandle(StateHandle):
    """An optimizer on its own schedule ``native(it) = 0.1 * 0.5 ** it`` times a multiplier
    (what KerasOptimizerHandle does with a LearningRateSchedule: ScaledSchedule)."""

    native_schedule = "ExponentialDecay"

    def __init__(self) -> None:
        super().__init__()
        self.multiplier = 1.0

    def native(self) -> float:
        return 0.1 * 0.5**self.iterations

    def get_lr(self) -> float:
        return self.native() * self.multiplier

    def set_lr(self, lr: float) -> None:
        self.multiplier = lr / self.native()

    def scale_lr(self, factor: float) -> None:
        self.multiplier *= factor

    def step(self) -> None:
        self.lr = self.get_lr()
        super().step()

    def native_multiplier(self) -> float:
        return self.multiplier

    def set_native_multiplier(self, value: float) -> None:
        self.multiplier = value


def test_set_schedule_over_a_native_schedule_drives_its_multiplier_and_clear_gives_it_back(run_dir):
    spec = {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 2}
    handle = NativeScheduleHandle()
    control = Control(run_dir)
    with make_agent(run_dir) as agent:
        agent.start(handle, step=0)
        control.send("scale_lr", factor=0.25)  # the script's schedule, scaled (from the first batch end)
        step = train(agent, handle, epochs=1, steps=2)
        control.send("set_schedule", schedule=spec)
        agent.batch_end(handle, epoch=0, batch=1, step=step)
        assert agent.schedule_active
        step = train(agent, handle, epochs=1, steps=3, first_epoch=1, step=step)
        control.send("clear_schedule")
        agent.batch_end(handle, epoch=1, batch=2, step=step)
        assert not agent.schedule_active
        train(agent, handle, epochs=1, steps=2, first_epoch=2, step=step)
    s = Schedule(spec)
    native = [0.1 * 0.5**k for k in range(7)]
    expected = [native[0], 0.25 * native[1], s(2), s(3), s(4), 0.25 * native[5], 0.25 * native[6]]
    assert handle.lr_history == pytest.approx(expected)
    assert records(run_dir, "error") == []


def test_rollback_restores_schedule_state_of_the_checkpoint(run_dir):
    spec = {"kind": "step_decay", "initial_learning_rate": 0.1, "factor": 0.5, "every_steps": 2}
    handle = StateHandle()
    control = Control(run_dir)
    with make_agent(run_dir, keep_last=10) as agent:
        agent.start(handle, step=0)
        control.send("set_schedule", schedule=spec)
        control.send("checkpoint", name="sched")
        agent.batch_end(handle, epoch=0, batch=0, step=0)
        control.send("clear_schedule")
        control.send("rollback", checkpoint="sched")
        agent.batch_end(handle, epoch=0, batch=0, step=0)
        assert agent.schedule_active
        control.send("rollback", checkpoint="step-0000000")
        agent.batch_end(handle, epoch=0, batch=0, step=0)
        assert not agent.schedule_active
    ck = [r for r in records(run_dir, "checkpoint") if r["name"] == "sched"]
    assert ck and ck[0]["multiplier"] == 1.0


def test_retain_and_configure(run_dir):
    handle = StateHandle()
    control = Control(run_dir)
    with make_agent(run_dir, keep_last=1) as agent:
        agent.start(handle, step=0)
        control.send("checkpoint", name="keepme")
        control.send("retain", keep=["keepme", "nothing-yet"])
        control.send(
            "configure", batch_every=1, batch_min_interval=0.0, checkpoint_every_epochs=0, checkpoint_every_steps=2
        )
        agent.batch_end(handle, epoch=0, batch=0, step=0)
        assert agent.batch_every == 1
        train(agent, handle, epochs=1, steps=4)
    names = [e.name for e in CheckpointStore(run_dir).entries()]
    assert names == ["step-0000000", "keepme", "step-0000004"]  # pinned start, retained, last 1
    assert [r["step"] for r in records(run_dir, "batch")] == [1, 2, 3, 4]
    assert len(records(run_dir, "ack")) == 3


def test_a_commanded_checkpoint_is_kept_until_the_next_retain_says_otherwise(run_dir):
    # A PBT exploit's new origin is taken by command; the epoch-end checkpoint right after it came
    # before the supervisor's retain naming it, and pruned it (keep_last 1): a later restart found
    # no such checkpoint and trained from scratch.
    handle = StateHandle()
    control = Control(run_dir)
    with make_agent(run_dir, keep_last=1) as agent:
        agent.start(handle, step=0)
        control.send("checkpoint", name="exploit-0001-epoch-0001")
        train(agent, handle, epochs=1, steps=2)  # its epoch-end checkpoint, before any retain
        names = [e.name for e in CheckpointStore(run_dir).entries()]
        assert names == ["step-0000000", "exploit-0001-epoch-0001", "epoch-0001"]
        control.send("retain", keep=[])  # the supervisor's list replaces it: pruned now
        agent.batch_end(handle, epoch=1, batch=0, step=handle.iterations)
    assert [e.name for e in CheckpointStore(run_dir).entries()] == ["step-0000000", "epoch-0001"]


def test_restore_at_start_loads_state_and_reports_resume_epoch(run_dir):
    handle = StateHandle()
    with make_agent(run_dir, keep_last=10) as agent:
        agent.start(handle, step=0)
        train(agent, handle, epochs=2, steps=3)
    fresh = StateHandle(lr=0.5)
    with make_agent(run_dir) as agent:
        entry = agent.restore(fresh, "epoch-0001")
        assert entry is not None and entry.resume_epoch() == 1
        assert (fresh.w, fresh.iterations, fresh.lr) == (pytest.approx(-0.3), 3, 0.1)
        assert agent.restore(StateHandle(), "nope") is None
    assert "nope" in records(run_dir, "error")[-1]["message"]


def test_fresh_names_do_not_overwrite_an_earlier_attempts_checkpoints(run_dir):
    for _ in range(2):
        handle = StateHandle()
        with make_agent(run_dir, keep_last=10) as agent:
            agent.start(handle, step=0)
            train(agent, handle, epochs=1, steps=2)
    names = [e.name for e in CheckpointStore(run_dir).entries()]
    assert names == ["step-0000000", "epoch-0001", "step-0000000.2", "epoch-0001.2"]


def test_fake_trainer_checkpoints_and_restores_without_tensorflow(run_dir):
    import subprocess
    import sys

    fake = Path(__file__).resolve().parents[1] / "fakes" / "fake_trainer.py"
    (run_dir / "config.json").write_text(json.dumps({"agent": {"verdict_timeout": 0, "keep_last": 10}}))
    env = dict(os.environ, LRSUP_RUN_DIR=str(run_dir))
    args = [sys.executable, str(fake), "--epochs", "3", "--steps", "4", "--checkpoints"]
    subprocess.run(args, env=env, check=True, timeout=60, capture_output=True)
    first = records(run_dir, "epoch")
    assert [r["name"] for r in records(run_dir, "checkpoint")] == [
        "step-0000000",
        "epoch-0001",
        "epoch-0002",
        "epoch-0003",
    ]
    out = subprocess.run(
        args,
        env={**env, "LRSUP_RESTORE": "epoch-0001", "LRSUP_ATTEMPT": "2"},
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert "restored epoch-0001 at step 4, epoch 1" in out.stdout
    start = records(run_dir, "start")[-1]
    assert (start["initial_epoch"], start["step"]) == (1, 4)
    again = records(run_dir, "epoch")[len(first) :]
    assert [(r["epoch"], r["step"], r["logs"]["w"]) for r in again] == [
        (e["epoch"], e["step"], pytest.approx(e["logs"]["w"])) for e in first[1:]
    ]
