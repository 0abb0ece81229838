"""The journal's entry kinds: one writer, one reader, old and foreign lines read without a crash."""

from __future__ import annotations

import pytest

from lrsup.supervisor.protocol.journal import (
    ENTRY_TYPES,
    AppliedEntry,
    CommandErrorEntry,
    DecisionEntry,
    EventEntry,
    LrOwnerEntry,
    MissingMetricEntry,
    OverrideEntry,
    StageEntry,
    UnknownEntry,
    journal_line,
    read_entry,
)
from lrsup.supervisor.protocol.wire import dumps

ENTRIES = [
    DecisionEntry(3, "plateau", "scale_lr", 0.005, "val_loss flat", 4, 500, None),
    DecisionEntry(None, "warmup", "set_lr", None, "", None, 0, "cooldown"),
    AppliedEntry(3, "set_lr", 4, 500, 0.005, False),
    CommandErrorEntry(4, "set_hparam", "optimizer SGD has no hyperparameter 'beta_9'"),
    OverrideEntry("ana@gpu3", "manual", 0.02, 5, None),
    OverrideEntry("ana@gpu3", None, 0.02, None, "not sent: disk full"),
    EventEntry("started", "trainer pid 12"),
    EventEntry("trainer_exited", "status 1", {"returncode": 1}),
    MissingMetricEntry("plateau", "val_loss", ("loss", "accuracy"), 1, 0, 10, "plateau monitors val_loss, ..."),
    LrOwnerEntry("stand_down", "script", 1, ("ReduceLROnPlateau",), ("plateau",), None, None, 0, "fit 1: ..."),
    StageEntry(2, "Adam", 5.0, 8, 0, 0, 4242),
]


def test_the_writer_keeps_the_line_format_byte_for_byte() -> None:
    # What the runner wrote before entries were typed (keyword arguments after v, type, time).
    assert dumps(journal_line(ENTRIES[0], 12.5)) == (
        '{"v":1,"type":"decision","time":12.5,"seq":3,"policy":"plateau","action":"scale_lr","lr":0.005,'
        '"reason":"val_loss flat","epoch":4,"step":500,"suppressed":null}'
    )
    assert dumps(journal_line(ENTRIES[2], 1.0)) == (
        '{"v":1,"type":"applied","time":1.0,"seq":3,"cmd":"set_lr","epoch":4,"step":500,"lr":0.005,"late":false}'
    )
    assert dumps(journal_line(ENTRIES[4], 1.0)) == (
        '{"v":1,"type":"override","time":1.0,"who":"ana@gpu3","why":"manual","lr":0.02,"seq":5,"suppressed":null}'
    )
    assert dumps(journal_line(ENTRIES[7], 1.0)) == (
        '{"v":1,"type":"event","time":1.0,"event":"trainer_exited","detail":"status 1","returncode":1}'
    )


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: type(e).__name__)
def test_the_reader_reads_what_the_writer_wrote(entry) -> None:
    read = read_entry(journal_line(entry, 7.0))
    assert type(read) is type(entry)
    assert read.time == 7.0
    assert read == type(entry)(**{**entry.__dict__, "time": 7.0})


def test_every_kind_has_its_own_type() -> None:
    assert set(ENTRY_TYPES) == {
        "decision",
        "applied",
        "command_error",
        "override",
        "event",
        "request",
        "missing_metric",
        "lr_owner",
        "stage",
    }
    assert dumps(journal_line(ENTRIES[8], 1.0)) == (
        '{"v":1,"type":"missing_metric","time":1.0,"policy":"plateau","metric":"val_loss",'
        '"available":["loss","accuracy"],"fit":1,"epoch":0,"step":10,"message":"plateau monitors val_loss, ..."}'
    )
    broken = read_entry({"type": "missing_metric", "available": ["loss", 3], "fit": "1"})
    assert isinstance(broken, MissingMetricEntry) and (broken.available, broken.fit) == (("loss",), None)


def test_an_lr_owner_entry_writes_its_lists_as_json_lists() -> None:
    line = journal_line(ENTRIES[9], 2.0)
    assert line["movers"] == ["ReduceLROnPlateau"] and line["policies"] == ["plateau"]
    assert dumps(line).startswith('{"v":1,"type":"lr_owner","time":2.0,"event":"stand_down","owner":"script","fit":1')


def test_unknown_kinds_are_kept_as_generic_entries() -> None:
    entry = read_entry({"v": 1, "type": "checkpoint", "time": 3, "name": "ckpt-3", "step": 150})
    assert entry == UnknownEntry("checkpoint", {"name": "ckpt-3", "step": 150}, 3.0)
    assert entry.kind == "checkpoint"
    assert read_entry({"v": 1}).kind == ""
    assert journal_line(entry, 3.0) == {"v": 1, "type": "checkpoint", "time": 3.0, "name": "ckpt-3", "step": 150}


def test_old_and_broken_lines_never_crash_the_reader() -> None:
    # Wrong types read as None ("" for text); fields a later lrsup adds are kept in ``extra``.
    decision = read_entry({"type": "decision", "seq": "3", "policy": 7, "lr": True, "give_up": True, "late": "x"})
    assert isinstance(decision, DecisionEntry)
    assert (decision.seq, decision.policy, decision.lr, decision.time) == (None, "", None, None)
    assert decision.extra == {"give_up": True, "late": "x"}
    event = read_entry({"type": "event", "detail": "no name"})
    assert isinstance(event, EventEntry) and event.event == ""
    applied = read_entry({"type": "applied", "seq": 2, "late": "journaled late: disk full"})
    assert isinstance(applied, AppliedEntry) and applied.late is False


def test_a_request_line_round_trips_through_the_one_writer_and_reader() -> None:
    from lrsup.supervisor.protocol.journal import RequestEntry, journal_line, read_entry

    entry = RequestEntry("set_lr", "ana", "too slow", 0.01, 7, 120, 2)
    line = journal_line(entry, 5.0)
    assert line == {
        "v": 1, "type": "request", "time": 5.0, "op": "set_lr", "who": "ana", "why": "too slow",
        "lr": 0.01, "seq": 7, "offset": 120, "index": 2,
    }  # fmt: skip
    assert read_entry(line) == RequestEntry("set_lr", "ana", "too slow", 0.01, 7, 120, 2, time=5.0)


def test_a_stage_line_says_which_fit_began_and_a_line_without_fit_is_the_first() -> None:
    stage = next(e for e in ENTRIES if isinstance(e, StageEntry))
    assert dumps(journal_line(stage, 1.0)) == (
        '{"v":1,"type":"stage","time":1.0,"fit":2,"optimizer":"Adam","lr":5.0,"epochs":8,"initial_epoch":0,'
        '"step":0,"pid":4242}'
    )
    old = read_entry({"v": 1, "type": "stage", "time": 2.0, "optimizer": "SGD", "lr": "x"})
    assert isinstance(old, StageEntry) and (old.fit, old.optimizer, old.lr) == (1, "SGD", None)
