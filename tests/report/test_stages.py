"""A script that fits twice: the report shows one stage per fit, and the figure puts fit 2 after fit 1."""

from __future__ import annotations

from pathlib import Path

from lrsup.supervisor.history.runinfo import load_run
from lrsup.supervisor.report.markdown import render_markdown
from lrsup.supervisor.report.series import fit_boundaries, lr_series, x_of_row
from lrsup.supervisor.report.tables import stage_rows
from lrsup.supervisor.report.write import write_report

from .conftest import RunWriter


def two_fits(root: Path) -> Path:
    w = RunWriter(root)
    w.start(0, lr=0.001, epochs=3)
    for e in range(3):
        w.epoch(10 * (e + 1), e, 0.001, loss=1.5 - 0.2 * e, val_loss=1.4 - 0.2 * e)
    w.end(31, "completed", 2)
    w.start(40, lr=5.0, epochs=3, fit=2)  # recompiled at another LR: the second stage
    w.epoch(50, 0, 5.0, loss=2.3, val_loss=2.3)
    w.decision(51, 1, "divergence", "rollback", "stuck; rolling back to step-0000000.2, LR 5 -> 2.5", 0, lr=2.5)
    w.ack(52, 1, "rollback", 0, 0, 2.5)
    for e in range(3):
        w.epoch(60 + 10 * e, e, 2.5, loss=1.0 - 0.1 * e, val_loss=0.9 - 0.1 * e)
    w.end(91, "completed", 2)
    w.close()
    return root


def test_the_report_has_a_line_per_fit_with_its_epochs_lrs_and_rescues(tmp_path: Path) -> None:
    info = load_run(two_fits(tmp_path / "run"))
    first, second = info.stages
    assert (first.fit, first.lr_start, first.lr_end, first.epochs_done, first.rescues) == (1, 0.001, 0.001, 3, [])
    assert (second.fit, second.lr_start, second.lr_end, second.epochs_done) == (2, 5.0, 2.5, 3)
    assert [d.label for d in second.rescues] == ["rollback"]
    assert stage_rows(info) == [
        ["fit 1", "SGD", "3 of 3", "0.001", "0.001", "none"],
        ["fit 2", "SGD", "3 of 3", "5", "2.5", "rollback at epoch 1 (LR 2.5)"],
    ]
    text = render_markdown(info)
    assert "## Stages" in text and "| fit 2 | SGD | 3 of 3 | 5 | 2.5 | rollback at epoch 1 (LR 2.5) |" in text


def test_the_figure_puts_each_fit_after_the_last_and_marks_where_it_begins(tmp_path: Path) -> None:
    info = load_run(two_fits(tmp_path / "run"))
    assert fit_boundaries(info) == [(3.0, 2)]
    fit2 = [r for r in info.epochs if info.fit_of(r) == 2 and not r.superseded]
    assert [x_of_row(r, info) for r in fit2] == [4.0, 5.0, 6.0]
    xs, lrs = lr_series(info)
    assert (3.0, 5.0) in list(zip(xs, lrs))  # fit 2 begins at the script's LR for it
    paths = write_report(tmp_path / "run", info=info)  # the figure draws (boundary line and all)
    assert Path(paths.png).stat().st_size > 0


def test_a_single_fit_run_has_no_stage_table_and_no_offsets(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "one")
    w.start(0, lr=0.1, epochs=2)
    w.epoch(10, 0, 0.1, loss=1.0)
    w.close()
    info = load_run(tmp_path / "one")
    assert stage_rows(info) == [] and fit_boundaries(info) == [] and x_of_row(info.epochs[0], info) == 1.0
    assert "## Stages" not in render_markdown(info)


def test_a_restart_in_fit_two_supersedes_only_fit_twos_redone_epochs(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run")
    w.start(0, lr=0.01, epochs=3)
    for e in range(3):
        w.epoch(10 * (e + 1), e, 0.01, loss=1.5 - 0.2 * e, val_loss=1.4 - 0.2 * e)
    w.end(31, "completed", 2)
    w.start(40, lr=0.005, epochs=4, fit=2)
    w.epoch(50, 0, 0.005, loss=0.8, val_loss=0.75)
    w.epoch(60, 1, 0.005, loss=0.7, val_loss=0.7)
    w.end(61, "exception", 1)
    # The restarted attempt: fit 1 is skipped (no epoch), fit 2 resumes after its epoch-0001 checkpoint.
    w.start(80, lr=0.01, epochs=3, initial_epoch=3, pid=4343)
    w.end(81, "completed", 2)
    w.start(82, lr=0.005, epochs=4, initial_epoch=1, pid=4343, fit=2)
    for e in (1, 2, 3):
        w.epoch(90 + 10 * e, e, 0.005, loss=0.7 - 0.05 * e, val_loss=0.7 - 0.05 * e)
    w.end(131, "completed", 3)
    w.close()
    info = load_run(tmp_path / "run")
    kept = [(info.fit_of(r), r.epoch) for r in info.epochs if not r.superseded]
    assert kept == [
        (1, 0),
        (1, 1),
        (1, 2),
        (2, 0),
        (2, 1),
        (2, 2),
        (2, 3),
    ]  # attempt 1's second epoch of fit 2 was redone
    first, second = info.stages
    assert (first.epochs_done, first.attempts, second.epochs_done, second.attempts) == (3, 2, 4, 2)
