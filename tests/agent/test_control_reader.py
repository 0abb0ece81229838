"""ControlReader: appended lines through the open file, a replaced or truncated file noticed."""

from __future__ import annotations

import os

from lrsup.supervisor.agent import control
from lrsup.supervisor.agent.control import ControlReader
from tests.fakes import FakeClock


def test_appended_lines_are_read_without_looking_up_the_path_each_time(tmp_path, monkeypatch):
    path = tmp_path / "control.jsonl"
    path.write_bytes(b"a\n")
    clock = FakeClock(start=100.0)
    reader = ControlReader(str(path), path_check=0.5, clock=clock.monotonic)
    assert reader.read_lines() == [b"a"]
    looked_up = []
    real_stat = os.stat
    monkeypatch.setattr(control.os, "stat", lambda p, *a, **k: looked_up.append(p) or real_stat(p, *a, **k))
    for i in range(50):  # a poll per batch: fstat of the open file only
        with open(path, "ab") as f:
            f.write(b"x%d\n" % i)
        assert reader.read_lines() == [b"x%d" % i]
    assert reader.read_lines() == []
    assert looked_up == [str(path)]  # the first read after opening checks the path once
    clock.now += 0.6
    assert reader.read_lines() == [] and len(looked_up) == 2  # then once per path_check
    with open(path, "ab") as f:
        f.write(b"half")
    assert reader.read_lines() == []  # no newline yet
    with open(path, "ab") as f:
        f.write(b"-line\n")
    assert reader.read_lines() == [b"half-line"]


def test_a_replaced_file_is_read_from_its_start_within_path_check(tmp_path):
    path = tmp_path / "control.jsonl"
    path.write_bytes(b"a\nb\n")
    clock = FakeClock(start=100.0)
    reader = ControlReader(str(path), path_check=0.5, clock=clock.monotonic)
    assert reader.read_lines() == [b"a", b"b"]
    assert reader.read_lines() == []
    fresh = tmp_path / "new"
    fresh.write_bytes(b"c\nd\ne\n")
    os.replace(fresh, path)  # another inode at the same path
    clock.now += 0.1
    assert reader.read_lines() == []  # still the old, open file
    clock.now += 0.5
    assert reader.read_lines() == [b"c", b"d", b"e"]


def test_a_file_truncated_in_place_is_read_again_at_once(tmp_path):
    path = tmp_path / "control.jsonl"
    path.write_bytes(b"a\nb\n")
    reader = ControlReader(str(path), path_check=10.0, clock=FakeClock().monotonic)
    assert reader.read_lines() == [b"a", b"b"]
    assert reader.read_lines() == []
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(b"z\n")
    assert reader.read_lines() == [b"z"]


def test_a_missing_file_is_nothing_yet(tmp_path):
    reader = ControlReader(str(tmp_path / "control.jsonl"), clock=FakeClock().monotonic)
    assert reader.read_lines() == []
    (tmp_path / "control.jsonl").write_bytes(b"q\n")
    assert reader.read_lines() == [b"q"]
