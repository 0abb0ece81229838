"""``lrsup resume`` rebuilds a PBT donor's donation keeps from its journal (``donated``/``donation_released``),
whatever the snapshot saw: the last event per member decides (lrsup.supervisor.run.operator.restore_donations)."""

from __future__ import annotations

import json
from pathlib import Path

from lrsup.supervisor.engine.core import Engine
from lrsup.supervisor.protocol.journal import EventEntry, RequestEntry, journal_line, read_entry
from lrsup.supervisor.run.operator import (
    DONATION,
    DONATION_EVENTS,
    PBT_EVENTS,
    apply_pbt,
    journaled_donations,
    pbt_done,
    plan_pbt,
    restore_donations,
)
from lrsup.supervisor.run.resume import rebuild
from lrsup.supervisor.rundir.layout import RunPaths
from lrsup.supervisor.rundir.recovery import ControlHistory, read_journal
from tests.run.test_operator_pbt import FakeRunner, request, trained_engine


def event(name: str, member: str, checkpoint: str = "epoch-0002", **extra) -> EventEntry:
    fields = {"peer": f"/runs/{member}", "checkpoint": checkpoint, "at_epoch": 2, "old": {}, "new": {}, **extra}
    return EventEntry(name, "a detail", fields)


def journaled(entries) -> list[dict]:
    """The lines journal.jsonl holds for ``entries`` (the one writer)."""
    return [journal_line(entry, time=1.0) for entry in entries]


def test_the_last_event_per_member_decides():
    events = [
        event("donated", "m1", "epoch-0001"),
        event("donated", "m2", "epoch-0002"),
        event("donation_released", "m1", "epoch-0001"),
        event("donated", "m3", "epoch-0003"),
        event("donated", "m3", "epoch-0004"),  # a later donation to the same member replaces the keep
    ]
    assert journaled_donations(events) == {
        DONATION + "m1": (),
        DONATION + "m2": ("epoch-0002",),
        DONATION + "m3": ("epoch-0004",),
    }


def test_events_not_written_by_apply_pbt_are_skipped():
    events = [
        event("donated", "m1", "../etc/passwd"),  # not a checkpoint name
        EventEntry("donated", None, {"checkpoint": "epoch-0001"}),  # no peer
        EventEntry("donated", None, {"peer": 7, "checkpoint": "epoch-0001"}),
        event("exploit", "m2"),  # not a donation
        event("restarted", "m3"),
    ]
    assert journaled_donations(events) == {}


def test_resume_restores_what_the_live_path_kept():
    """The live path (plan_pbt/apply_pbt) and the journal's reading agree, through the journal's own lines."""
    runner = FakeRunner(trained_engine())
    for op, member in [("donate", "m1"), ("donate", "m2"), ("donation_done", "m1"), ("donate", "m3")]:
        req = request(op, peer=f"/runs/{member}")
        apply_pbt(runner, req, plan_pbt(runner, req))
    lines = journaled(EventEntry(name, "detail", fields) for name, fields in runner.events)
    events = [read_entry(obj) for obj in lines]
    engine = trained_engine()  # what a resume without a snapshot (or an older one) starts from
    restore_donations(engine, events)
    assert (
        engine.state.keeps
        == runner.engine.state.keeps
        == {DONATION + "m2": ("epoch-0002",), DONATION + "m3": ("epoch-0002",)}
    )
    assert engine.state.retain_set() == runner.engine.state.retain_set()


def test_a_released_donation_a_snapshot_still_holds_is_dropped():
    engine = trained_engine()
    engine.keep(DONATION + "m1", ("epoch-0001",))  # what the snapshot saw
    engine.keep("my_policy", ("epoch-0002",))  # a policy's own keep: not the journal's to decide
    snapshot = engine.state_dict()
    resumed = trained_engine()
    resumed.load_state_dict(snapshot)
    restore_donations(resumed, [event("donated", "m1", "epoch-0001"), event("donation_released", "m1", "epoch-0001")])
    assert resumed.state.keeps == {"my_policy": ("epoch-0002",)}
    assert "epoch-0001" not in resumed.state.retain_set()


def test_a_keep_the_journal_does_not_mention_is_left_as_the_snapshot_has_it():
    engine = trained_engine()
    engine.keep(DONATION + "m1", ("epoch-0001",))
    restore_donations(engine, [event("donated", "m2", "epoch-0002")])
    assert engine.state.keeps == {DONATION + "m1": ("epoch-0001",), DONATION + "m2": ("epoch-0002",)}


def test_an_engine_that_tracks_no_checkpoints_is_left_alone():
    restore_donations(object(), [event("donated", "m1")])  # no keep(): nothing to restore, no error


def test_read_journal_keeps_the_events_asked_for_in_order(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    entries = [
        event("donated", "m1", "epoch-0001"),
        RequestEntry("donation_done", "lrsup-pbt", None, None, 4, 0, 1),
        event("resumed", "m1"),
        event("donation_released", "m1", "epoch-0001"),
    ]
    path.write_text("".join(json.dumps(obj) + "\n" for obj in journaled(entries)) + '{"torn')
    assert read_journal(path).events == []  # none by default
    journal = read_journal(path, events=DONATION_EVENTS)
    assert [e.event for e in journal.events] == ["donated", "donation_released"]
    assert journal.request is not None and journal.request.op == "donation_done"
    assert journal.after_request == ["donation_released"]  # the request was carried out to its end


def test_a_pbt_request_is_done_once_its_event_is_journaled(tmp_path: Path):
    assert pbt_done("donate", ["donated"]) and pbt_done("exploit", ["donated", "exploit"])
    assert not pbt_done("donate", []) and not pbt_done("donation_done", ["donated"])
    assert not pbt_done("exploit", ["donation_released"])
    assert pbt_done("set_lr", []) and pbt_done("hold", [])  # the others end with their command (or none)
    path = tmp_path / "journal.jsonl"
    entries = [
        RequestEntry("donate", "lrsup-pbt", None, None, 3, 0, 0),
        event("donated", "m1", "epoch-0001"),
        RequestEntry("donate", "lrsup-pbt", None, None, None, 0, 1),  # cut off before its event
    ]
    path.write_text("".join(json.dumps(obj) + "\n" for obj in journaled(entries)))
    journal = read_journal(path, events=PBT_EVENTS.values())
    assert journal.request is not None and journal.request.index == 1
    assert journal.after_request == [] and not pbt_done(journal.request.op, journal.after_request)


def test_rebuild_without_a_snapshot_has_the_journals_donations(tmp_path: Path):
    """No snapshot, no records yet: the engine ``lrsup resume`` starts with keeps what the journal says."""
    entries = [event("donated", "m1", "epoch-0001"), event("donated", "m2", "epoch-0002")]
    entries.append(event("donation_released", "m2", "epoch-0002"))
    (tmp_path / "journal.jsonl").write_text("".join(json.dumps(obj) + "\n" for obj in journaled(entries)))
    rebuilt = rebuild(RunPaths(tmp_path), None, ControlHistory(), lambda config: Engine([]))  # type: ignore[arg-type]
    assert rebuilt.snapshot is None and rebuilt.records == []
    assert rebuilt.engine.state.keeps == {DONATION + "m1": ("epoch-0001",)}
    assert rebuilt.engine.state.retain_set() == ("epoch-0001",)
