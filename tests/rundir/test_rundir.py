"""Run directory: naming, permissions, refusals, and leaving nothing behind."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lrsup.supervisor import protocol
from lrsup.supervisor.rundir.layout import RunDir, RunDirError, RunPaths, check_run_dir, default_run_dir

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_default_name_is_utc_timestamp_and_script_stem(tmp_path):
    path = default_run_dir(Path("sub/train.py"), tmp_path, NOW)
    assert path == tmp_path / "runs" / "20250304T050607Z-train"


def test_default_name_converts_to_utc(tmp_path):
    from datetime import timedelta

    local = NOW.astimezone(timezone(timedelta(hours=2)))
    assert default_run_dir(Path("t.py"), tmp_path, local).name == "20250304T050607Z-t"


def test_default_name_gets_a_suffix_when_taken(tmp_path):
    first = default_run_dir(Path("train.py"), tmp_path, NOW)
    first.mkdir(parents=True)
    second = default_run_dir(Path("train.py"), tmp_path, NOW)
    assert second.name == "20250304T050607Z-train-2"


def test_create_makes_private_dir_despite_umask(tmp_path):
    old = os.umask(0)
    try:
        run_dir = RunDir.prepare(None, script=Path("train.py"), cwd=tmp_path, now=NOW)
        paths = run_dir.create()
    finally:
        os.umask(old)
    assert paths.root.is_dir()
    assert mode(paths.root) == 0o700
    assert paths.root.is_absolute()


def test_paths_use_protocol_names(tmp_path):
    paths = RunPaths(tmp_path)
    assert paths.config.name == protocol.CONFIG_FILE
    assert paths.metrics.name == protocol.METRICS_FILE
    assert paths.control.name == protocol.CONTROL_FILE
    assert paths.journal.name == protocol.JOURNAL_FILE
    assert paths.trainer_log.name == protocol.TRAINER_LOG


def test_explicit_run_dir_relative_to_cwd_with_missing_parents(tmp_path):
    run_dir = RunDir.prepare(Path("a/b/run"), script=Path("t.py"), cwd=tmp_path)
    paths = run_dir.create()
    assert paths.root == tmp_path / "a" / "b" / "run"
    assert mode(paths.root) == 0o700


def test_existing_empty_dir_is_accepted_and_made_private(tmp_path):
    target = tmp_path / "run"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    RunDir.prepare(target, script=Path("t.py"), cwd=tmp_path).create()
    assert mode(target) == 0o700


def test_non_empty_dir_refused_naming_it(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    (target / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(RunDirError, match=r"already exists and is not empty \(metrics.jsonl\)") as err:
        RunDir.prepare(target, script=Path("t.py"), cwd=tmp_path)
    assert str(target) in str(err.value)


def test_world_writable_dir_refused(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    os.chmod(target, 0o777)
    with pytest.raises(RunDirError, match="world-writable .mode 0777"):
        check_run_dir(target)


def test_file_and_symlink_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        check_run_dir(tmp_path / "file")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(RunDirError, match="symbolic link"):
        check_run_dir(tmp_path / "link")


def test_prepare_creates_nothing(tmp_path):
    RunDir.prepare(None, script=Path("train.py"), cwd=tmp_path, now=NOW)
    RunDir.prepare(Path("x/y"), script=Path("train.py"), cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_discard_removes_what_create_made_including_runs_parent(tmp_path):
    run_dir = RunDir.prepare(None, script=Path("train.py"), cwd=tmp_path, now=NOW)
    paths = run_dir.create()
    paths.config.write_text("{}")
    run_dir.discard()
    assert list(tmp_path.iterdir()) == []


def test_discard_keeps_existing_runs_parent_and_siblings(tmp_path):
    (tmp_path / "runs" / "older").mkdir(parents=True)
    run_dir = RunDir.prepare(None, script=Path("train.py"), cwd=tmp_path, now=NOW)
    run_dir.create()
    run_dir.discard()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["older"]


def test_discard_of_given_empty_dir_empties_but_keeps_it(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    run_dir = RunDir.prepare(target, script=Path("t.py"), cwd=tmp_path)
    paths = run_dir.create()
    paths.journal.write_text("x")
    run_dir.discard()
    assert target.is_dir() and list(target.iterdir()) == []
