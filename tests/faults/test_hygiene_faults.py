"""Run-directory hygiene (issue 17, item 13): temp files, a planted ``checkpoints`` link, modes under umask 000."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import pytest

from lrsup.supervisor.agent.checkpoints import CheckpointError, CheckpointStore
from lrsup.supervisor.rundir import layout
from lrsup.supervisor.rundir.layout import RunDir, RunDirError, check_existing_run_dir, remove_temp_files, write_atomic
from tests.faults.conftest import finish, trainer_pids


def write_weights(path: str) -> None:
    Path(path).write_bytes(b"weights")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_temp_checkpoint_files_are_removed_before_each_attempt_and_at_the_end(workdir, procs):
    proc = procs.lrsup_run(workdir, "r", "--leave-temp", "--die-at-epoch", "0", "--epochs", "2")
    procs.add(proc.pid)
    out, err = finish(proc, 60)
    run_dir = workdir / "r"
    procs.add(*trainer_pids(run_dir))
    assert proc.returncode == 0, out + err
    seen = re.findall(r"^fault: temp (.*)$", (run_dir / "trainer.log").read_text(), re.M)
    assert seen == ["[]", "[]"], "the second attempt found the first one's half-written checkpoint"
    assert [n for n in os.listdir(run_dir / "checkpoints") if n.startswith(".tmp-")] == []


def test_remove_temp_files_takes_only_temporary_files(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    keep = ["journal.jsonl", "report.png", "checkpoints/epoch-0001.weights.h5", "checkpoints/manifest.json"]
    gone = [".report.png.tmp", ".supervisor.json.77.tmp", "checkpoints/.tmp-epoch-0001-77.weights.h5"]
    gone.append("checkpoints/manifest.json.tmp-77")
    for name in keep + gone:
        (tmp_path / name).write_text("x")
    assert remove_temp_files(tmp_path) == sorted(gone)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(keep)


def test_a_full_disk_leaves_no_empty_report_temp_file(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(layout.os, "write", full)
    with pytest.raises(OSError, match="No space"):
        write_atomic(tmp_path / "report.png", b"\x89PNG")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_a_checkpoints_link_planted_after_the_run_directory_exists_is_refused(tmp_path):
    paths = RunDir(tmp_path / "run").create()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.rmdir(paths.root / "checkpoints")
    os.symlink(elsewhere, paths.root / "checkpoints")
    with pytest.raises(RunDirError, match="checkpoints' is a symbolic link"):
        check_existing_run_dir(paths.root)
    with pytest.raises(CheckpointError, match="symbolic link"):
        CheckpointStore(paths.root).save(
            "epoch-0001", write_weights, suffix=".h5", epoch=0, step=1, lr=0.1, multiplier=None
        )
    assert os.listdir(elsewhere) == []


def test_modes_are_private_whatever_the_umask(tmp_path):
    from tests.report.conftest import write_synthetic_run

    old = os.umask(0)
    try:
        paths = RunDir(tmp_path / "runs" / "r").create()
        store = CheckpointStore(paths.root)
        store.save("epoch-0001", write_weights, suffix=".h5", epoch=0, step=1, lr=0.1, multiplier=None)
        report = tmp_path / "report"
        write_synthetic_run(report)
        from lrsup.supervisor.report.write import write_report

        written = write_report(report)
    finally:
        os.umask(old)
    assert mode(tmp_path / "runs") == 0o700 and mode(paths.root) == 0o700
    assert mode(paths.root / "checkpoints") == 0o700
    assert mode(paths.root / "checkpoints" / "epoch-0001.h5") == 0o600
    assert mode(paths.root / "checkpoints" / "manifest.json") == 0o600
    for path in (written.md, written.html, written.png):
        if path is not None:
            assert mode(path) == 0o600, path
