"""PBT's exploit on the agent side: a rollback to a checkpoint of another run directory of the
population, verified by that run's own sha256 manifest (weights and optimizer state loaded in place)."""

from __future__ import annotations

import pytest

from lrsup.supervisor.agent.checkpoints import CheckpointStore
from lrsup.supervisor.protocol.wire import ProtocolError, make_command
from tests.agent.test_checkpoints import StateHandle, make_agent, train
from tests.agent.test_core import Control, records

pytestmark = pytest.mark.timeout(60)


def donor_run(tmp_path, lr):
    donor = tmp_path / "donor"
    donor.mkdir()
    handle = StateHandle(lr=lr)
    with make_agent(donor, keep_last=10) as agent:
        agent.start(handle, step=0)
        train(agent, handle, epochs=2, steps=4)  # its newest checkpoint holds w = -8 * lr at step 8
    return donor


def newest(run_dir):
    return CheckpointStore(run_dir).entries()[-1]


def test_rollback_from_another_run_loads_the_donors_checkpoint(tmp_path):
    donor = donor_run(tmp_path, lr=1.0)
    member = tmp_path / "member"
    member.mkdir()
    handle = StateHandle(lr=0.1)
    control = Control(member)
    with make_agent(member, keep_last=10) as agent:
        agent.start(handle, step=0)
        step = train(agent, handle, epochs=2, steps=4)
        name = newest(donor).name
        assert newest(donor).step == 8
        seq = control.send("rollback", checkpoint=name, from_run=str(donor), lr=0.5, skip_batches=0)
        train(agent, handle, epochs=1, steps=1, first_epoch=2, step=step)
        assert handle.w == pytest.approx(-8.0)  # the donor's weights
        assert handle.iterations == 8 and handle.lr == 0.5
    assert [r for r in records(member, "ack") if r["seq"] == seq]
    assert CheckpointStore(member).get(name).step == 8  # the member's own manifest is untouched (its own w)


def test_a_torn_donor_checkpoint_is_refused(tmp_path):
    donor = donor_run(tmp_path, lr=1.0)
    entry = newest(donor)
    (donor / entry.file).write_text('{"w": 123}')
    member = tmp_path / "member"
    member.mkdir()
    handle = StateHandle(lr=0.1)
    control = Control(member)
    with make_agent(member) as agent:
        agent.start(handle, step=0)
        step = train(agent, handle, epochs=1, steps=2)
        seq = control.send("rollback", checkpoint=entry.name, from_run=str(donor))
        agent.batch_end(handle, epoch=1, batch=0, step=step)
    assert handle.w == pytest.approx(-0.2)
    errors = [r for r in records(member, "error") if r["seq"] == seq]
    assert errors and "torn" in errors[0]["message"]


def test_from_run_must_be_absolute():
    with pytest.raises(ProtocolError, match="from_run"):
        make_command(1, "rollback", time=0.0, checkpoint="epoch-0001", from_run="../other")
