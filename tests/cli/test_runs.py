"""supervisor/history/runs.py on synthetic run directories: resolve_run, summaries, liveness, cheap reading."""

from __future__ import annotations

import os

import pytest

from lrsup.supervisor.history.runs import (
    RunRefError,
    TailReader,
    head_objects,
    list_runs,
    resolve_run,
    summarize,
    supervisor_alive,
    tail_objects,
)
from lrsup.supervisor.protocol.jsonl import Appender
from lrsup.supervisor.protocol.wire import BatchRecord, EpochRecord

from .conftest import T0, dead_pid, live_state, make_run

# -- resolve_run -----------------------------------------------------------------


def test_resolve_by_path_by_name_and_by_unique_prefix(runs, tmp_path):
    a = make_run(runs, "20261126T100000Z-train")
    b = make_run(runs, "20261126T110000Z-train", t0=3600)
    assert resolve_run("runs/20261126T100000Z-train", "runs") == a
    assert resolve_run(str(a), "runs") == a
    assert resolve_run("20261126T11", "runs") == b
    assert resolve_run("20261126T110000Z-train", "runs") == b
    elsewhere = make_run(tmp_path, "other")
    assert resolve_run("other", "runs") == elsewhere  # a run directory in the current directory


def test_exact_name_wins_over_a_longer_name_with_that_prefix(runs):
    short = make_run(runs, "night")
    make_run(runs, "night-2")
    assert resolve_run("night", "runs") == short


def test_ambiguous_prefix_lists_the_candidates(runs):
    make_run(runs, "20261126T100000Z-train")
    make_run(runs, "20261126T110000Z-train", t0=3600)
    with pytest.raises(RunRefError) as err:
        resolve_run("20261126", "runs")
    text = str(err.value)
    assert "matches 2 runs" in text and "20261126T100000Z-train" in text and "20261126T110000Z-train" in text


def test_missing_run_names_what_exists(runs):
    make_run(runs, "20261126T100000Z-train")
    with pytest.raises(RunRefError) as err:
        resolve_run("nosuch", "runs")
    assert "no run 'nosuch'" in str(err.value) and "20261126T100000Z-train" in str(err.value)
    with pytest.raises(RunRefError, match="holds no runs"):
        resolve_run("x", "empty-or-missing")


def test_a_directory_that_is_not_a_run_is_refused(runs, tmp_path):
    (tmp_path / "notarun").mkdir()
    with pytest.raises(RunRefError, match="not an lrsup run directory"):
        resolve_run("notarun", "runs")


def test_list_runs_newest_first_and_skips_non_runs(runs):
    make_run(runs, "b-old", t0=0)
    make_run(runs, "a-new", t0=7200)
    (runs / "junk").mkdir()
    (runs / "compare.md").write_text("x")
    assert [p.name for p in list_runs(runs)] == ["a-new", "b-old"]


# -- summaries -------------------------------------------------------------------


@pytest.mark.parametrize(
    "outcome, state", [("completed", "completed"), ("stopped", "stopped"), ("failed", "failed"), ("fatal", "fatal")]
)
def test_final_states_from_the_files(runs, outcome, state):
    s = summarize(make_run(runs, "r", outcome=outcome))
    assert s.state == state and s.finished


def test_summary_fields(runs):
    s = summarize(make_run(runs, "r", epochs=10, epochs_done=6), full_journal=True)
    assert (s.epoch, s.epochs, s.step) == (6, 10, 24)
    assert s.lr == pytest.approx(0.05)
    assert (s.monitor, s.best, s.best_epoch) == ("val_loss", 0.6, 5)
    assert s.last_logs["val_loss"] == 0.65
    assert s.started == T0 and s.ended == T0 + 62.5 and s.duration() == 62.5
    (d,) = s.decisions
    assert (d.policy, d.action, d.epoch, d.lr) == ("plateau", "scale_lr", 3, 0.05)


def test_supervisor_json_states(runs):
    done = make_run(runs, "done", state={"supervisor_pid": dead_pid(), "state": "exited", "exit_status": 0})
    assert summarize(done).state == "completed"
    fatal = make_run(
        runs, "fatal", outcome=None, state={"supervisor_pid": dead_pid(), "state": "fatal", "exit_status": 3}
    )
    assert summarize(fatal).state == "fatal"
    interrupted = make_run(runs, "int", outcome=None, state={"state": "failed", "exit_status": 130})
    assert summarize(interrupted).state == "stopped"


def test_running_when_the_recorded_supervisor_is_alive(runs):
    s = summarize(make_run(runs, "r", outcome=None, state=live_state(held={"who": "ana@gpu", "why": "look"})))
    assert s.state == "running" and s.alive and s.pid == os.getpid()
    assert s.held == {"who": "ana@gpu", "why": "look"}
    assert s.duration(now=T0 + 100) == 100


def test_stale_when_the_supervisor_is_gone(runs):
    s = summarize(make_run(runs, "r", outcome=None, state={**live_state(), "supervisor_pid": dead_pid()}))
    assert s.state == "stale" and s.alive is False and "lrsup resume" in s.detail


def test_stale_when_the_pid_was_reused(runs):
    state = {**live_state(), "supervisor_start_time": live_state()["supervisor_start_time"] + 12345}
    assert summarize(make_run(runs, "r", outcome=None, state=state)).state == "stale"


def test_liveness_asks_the_seam_with_the_recorded_pid_and_start_time():
    asked = []

    def alive(pid, start):
        asked.append((pid, start))
        return start == 500

    assert supervisor_alive({}) is None
    assert supervisor_alive({"supervisor_pid": 7, "supervisor_start_time": 500}, alive) is True
    assert supervisor_alive({"supervisor_pid": 7, "supervisor_start_time": 501}, alive) is False
    assert asked == [(7, 500), (7, 501)]
    # keys statefile.py never writes are not read
    assert supervisor_alive({"pid": 7, "pid_start_time": 1005.5}, alive) is None


def test_no_state_file_and_old_files_is_unknown(runs):
    run = make_run(runs, "r", outcome=None)
    for f in run.iterdir():
        os.utime(f, (T0, T0))
    assert summarize(run).state == "unknown"


def test_garbage_and_half_written_state_are_tolerated(runs):
    run = make_run(runs, "r")
    (run / "supervisor.json").write_text('{"supervisor_pid": 1, "sta')
    with open(run / "metrics.jsonl", "a") as f:
        f.write('garbage\n{not json}\n[1,2]\n{"v":1,"type":"epoch","epo')  # torn last line
    s = summarize(run)
    assert s.state == "completed" and s.epoch == 6


def test_big_metrics_file_is_read_cheaply(runs):
    """ls reads 64 KiB from each end and byte-searches for epoch lines: a 200k-batch file stays fast."""
    import time

    run = make_run(runs, "big", epochs=100, epochs_done=0, outcome=None)
    with Appender(run / "metrics.jsonl"):
        step = 0
        lines = []
        for e in range(100):
            for b in range(2000):
                step += 1
                lines.append(BatchRecord(time=T0, epoch=e, batch=b, step=step, lr=0.1, logs={"loss": 1.0}).to_json())
            lines.append(
                EpochRecord(
                    time=T0,
                    epoch=e,
                    step=step,
                    lr=0.1,
                    logs={"loss": 1.0, "val_loss": 5.0 - abs(e - 40) * 0.01 - (e == 40)},
                ).to_json()
            )
        from lrsup.supervisor.protocol.wire import dumps

        with open(run / "metrics.jsonl", "a") as f:
            f.write("".join(dumps(x) + "\n" for x in lines))
    assert (run / "metrics.jsonl").stat().st_size > 10_000_000
    t = time.perf_counter()
    s = summarize(run)
    elapsed = time.perf_counter() - t
    assert (s.epoch, s.best_epoch, s.best) == (100, 41, 4.0)
    assert elapsed < 2.0, elapsed


def test_head_and_tail_drop_cut_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("".join(f'{{"v":1,"n":{i}}}\n' for i in range(1000)) + '{"v":1,"n":')
    assert [o["n"] for o in head_objects(p, 20)] == [0]
    tail = tail_objects(p, 50)
    assert tail[-1]["n"] == 999 and all("n" in o for o in tail)


def test_tail_reader_keeps_partial_lines_and_starts_at_the_end(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a":1}\n{"a":2')
    from_start, from_end = TailReader(p, 0), TailReader(p, None)
    assert from_start.read() == [{"a": 1}] and from_end.read() == []
    with open(p, "a") as f:
        f.write('}\n{"a":3}\n')
    assert from_start.read() == [{"a": 2}, {"a": 3}]
    assert from_end.read() == [{"a": 3}]  # the line being written when it started is skipped
    assert TailReader(tmp_path / "missing").read() == []


def test_the_current_fit_is_the_newest_start_or_stage_line(runs):
    from lrsup.supervisor.cli.format import fit_text
    from lrsup.supervisor.protocol.journal import StageEntry, journal_line
    from lrsup.supervisor.protocol.wire import StartRecord

    run = make_run(runs, "two", outcome=None)
    s = summarize(run, full_journal=True)
    assert (s.fit, fit_text(s)) == (1, "1/?")
    with Appender(run / "metrics.jsonl") as m, Appender(run / "journal.jsonl") as j:
        m.write(StartRecord(time=T0 + 100, pid=4242, optimizer="Adam", lr=5.0, epochs=8, fit=2).to_json())
        j.write(journal_line(StageEntry(2, "Adam", 5.0, 8, 0, 0, 4242), T0 + 100.1))
    s = summarize(run, full_journal=True)
    assert (s.fit, fit_text(s)) == (2, "2/?")
    assert fit_text(summarize(make_run(runs, "done"))) == "1/1"
