"""ls, status, logs, watch, the operator requests, resume, replay, report and export, through the CLI."""

from __future__ import annotations

import json
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lrsup.supervisor.cli.main import app
from lrsup.supervisor.protocol.jsonl import Appender
from lrsup.supervisor.protocol.wire import PROTOCOL_VERSION, EndRecord, EpochRecord
from lrsup.supervisor.rundir.statefile import write_state

from .conftest import T0, dead_pid, live_state, make_run

cli = CliRunner()
WIDE = {"COLUMNS": "250"}


def invoke(*args: str):
    return cli.invoke(app, list(args), env=WIDE)


# -- ls / status -----------------------------------------------------------------


def test_ls_shows_every_run_newest_first(runs):
    make_run(runs, "20261126T100000Z-done", epochs=6)
    make_run(runs, "20261126T110000Z-live", outcome=None, epochs=10, epochs_done=3, t0=3600, state=live_state())
    make_run(
        runs,
        "20261126T120000Z-gone",
        outcome=None,
        epochs_done=2,
        t0=7200,
        state={**live_state(), "supervisor_pid": dead_pid()},
    )
    result = invoke("ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    rows = [line for line in lines if "20261126T" in line]
    assert [r.split()[0] for r in rows] == ["20261126T120000Z-gone", "20261126T110000Z-live", "20261126T100000Z-done"]
    gone, live, done = rows
    assert "stale" in gone and "lrsup resume RUN" in result.stdout
    assert "running" in live and "3/10" in live
    assert "completed" in done and "6/6" in done and "val_loss=0.6 @5" in done and "0.05" in done


@pytest.mark.parametrize("script", ["train", "a_training_script_with_a_rather_long_name"])
def test_ls_keeps_each_name_on_one_line_at_80_columns(runs, script):
    names = [f"20261126T1{i}0000Z-{script}" for i in range(3)]
    for i, name in enumerate(names):
        make_run(runs, name, t0=3600 * i, state={**live_state(), "supervisor_pid": dead_pid()} if i else None)
    result = cli.invoke(app, ["ls"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), result.stdout
    rows = [line.split() for line in lines if "20261126T" in line]
    assert [r[0] for r in rows] == names[::-1] and all(r[1] in ("stale", "completed") for r in rows)


def test_ls_without_runs(runs):
    result = invoke("ls")
    assert result.exit_code == 0 and "no runs in runs" in result.stderr
    result = invoke("ls", "--runs-dir", "elsewhere")
    assert result.exit_code == 0 and "not a directory" in result.stderr


def test_status_in_detail(runs):
    make_run(
        runs,
        "20261126T100000Z-train",
        outcome=None,
        epochs=10,
        epochs_done=5,
        state=live_state(held={"who": "ana@gpu3", "why": "checking"}, restarts=1, attempt=2),
    )
    result = invoke("status", "2026")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        "running",
        "attempt       2",
        "restarts      1",
        "5/10",
        "step          20",
        "lr            0.05",
        "val_loss=0.6",
        "best",
        "who=ana@gpu3",
        "degraded      no",
        "plateau",
        "scale_lr",
        "has not improved",
    ):
        assert expected in out, (expected, out)


def test_status_of_a_missing_or_ambiguous_run_exits_2(runs):
    make_run(runs, "20261126T100000Z-a")
    make_run(runs, "20261126T110000Z-b")
    result = invoke("status", "2026")
    assert result.exit_code == 2 and "matches 2 runs" in result.stderr and "Traceback" not in result.output
    result = invoke("status", "nope")
    assert result.exit_code == 2 and result.stderr.startswith("lrsup: no run 'nope'")


# -- logs ------------------------------------------------------------------------


def test_logs_prints_trainer_log(runs):
    make_run(runs, "r", trainer_log="line 1\nline 2\n")
    result = invoke("logs", "r")
    assert result.exit_code == 0 and result.stdout == "line 1\nline 2\n"


def test_logs_follow_ends_when_the_run_ends(runs):
    run = make_run(runs, "r", outcome=None, state=live_state(), trainer_log="first\n")

    def later():
        time.sleep(0.5)
        with open(run / "trainer.log", "a") as f:
            f.write("second\n")
        time.sleep(0.3)
        write_state(run / "supervisor.json", {**live_state(), "state": "exited", "exit_status": 0})
        with open(run / "trainer.log", "a") as f:
            f.write("last\n")

    thread = threading.Thread(target=later)
    thread.start()
    t = time.monotonic()
    result = invoke("logs", "-f", "r")
    thread.join()
    assert result.exit_code == 0 and result.stdout == "first\nsecond\nlast\n"
    assert time.monotonic() - t < 10


def test_logs_follow_of_a_finished_run_prints_and_returns(runs):
    make_run(runs, "r", trainer_log="all\n")
    result = invoke("logs", "--follow", "r")
    assert result.exit_code == 0 and result.stdout == "all\n"


# -- watch -----------------------------------------------------------------------


def test_watch_a_finished_run_shows_its_last_state_and_returns(runs):
    make_run(runs, "r")
    result = invoke("watch", "r")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "epoch 6/6" in out and "decision plateau scale_lr 0.05" in out and "is not running: completed" in out


def test_watch_shows_who_owns_the_lr(runs):
    run = make_run(runs, "r")
    with Appender(run / "journal.jsonl") as j:
        j.write(
            {
                "v": PROTOCOL_VERSION,
                "type": "lr_owner",
                "time": T0 + 1,
                "event": "stand_down",
                "owner": "script",
                "fit": 1,
                "movers": ["ReduceLROnPlateau"],
                "policies": ["plateau"],
                "detail": "at the start of fit 1: the script's own LR logic keeps the LR: lrsup's plateau stands down",
            }
        )
    result = invoke("watch", "r")
    assert result.exit_code == 0, result.output
    assert "lrsup's plateau stands down" in result.stdout


def test_watch_follows_a_live_run_until_it_ends(runs):
    run = make_run(runs, "r", outcome=None, epochs=8, epochs_done=2, state=live_state(), trainer_log="old\n")

    def trainer():
        time.sleep(0.5)
        with (
            Appender(run / "metrics.jsonl") as m,
            Appender(run / "journal.jsonl") as j,
            open(run / "trainer.log", "a") as log,
        ):
            m.write(EpochRecord(time=T0 + 50, epoch=2, step=12, lr=0.1, logs={"val_loss": 0.5}).to_json())
            log.write("fake: epoch 2\n")
            log.flush()
            j.write(
                {
                    "v": PROTOCOL_VERSION,
                    "type": "decision",
                    "time": T0 + 50,
                    "seq": 9,
                    "policy": "plateau",
                    "action": "scale_lr",
                    "lr": 0.02,
                    "reason": "watched cut",
                    "epoch": 2,
                    "step": 12,
                    "suppressed": None,
                }
            )
            m.write(EndRecord(time=T0 + 51, reason="completed", epoch=2, step=12).to_json())
            j.write(
                {
                    "v": PROTOCOL_VERSION,
                    "type": "event",
                    "time": T0 + 52,
                    "event": "finished",
                    "detail": "training completed (exit status 0)",
                    "status": 0,
                }
            )
        write_state(run / "supervisor.json", {**live_state(), "state": "exited", "exit_status": 0})

    thread = threading.Thread(target=trainer)
    thread.start()
    result = invoke("watch", "r")
    thread.join()
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "old" not in out  # the log is followed from where it was
    for expected in (
        "epoch 2/8",
        "watching r",
        "epoch 3/8 val_loss=0.5 lr=0.1",
        "fake: epoch 2",
        "decision plateau scale_lr 0.02: watched cut",
        "training completed (exit status 0)",
    ):
        assert expected in out, (expected, out)


# -- operator requests -------------------------------------------------------------


def requests_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]


def test_set_lr_hold_release_reach_the_operator_channel(runs):
    run = make_run(runs, "r", outcome=None, state=live_state())
    assert invoke("set-lr", "r", "0.003", "--why", "too hot").exit_code == 0
    assert invoke("hold", "r", "--why", "looking").exit_code == 0
    result = invoke("release", "r")
    assert result.exit_code == 0 and "sent release to r" in result.stdout
    sent = requests_of(run)
    assert [(r["op"], r.get("lr"), r.get("why")) for r in sent] == [
        ("set_lr", 0.003, "too hot"),
        ("hold", None, "looking"),
        ("release", None, None),
    ]
    assert all("@" in r["who"] and r["v"] == PROTOCOL_VERSION for r in sent)


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_set_lr_refuses_bad_values(runs, value):
    run = make_run(runs, "r", outcome=None, state=live_state())
    result = invoke("set-lr", "r", "--", value)
    assert result.exit_code == 2 and "VALUE must be" in result.stderr
    assert not (run / "requests.jsonl").exists()


@pytest.mark.parametrize("op", [["stop"], ["hold"], ["set-lr", "X", "0.1"]])
def test_requests_to_a_run_that_is_not_running_are_refused(runs, op):
    stale = make_run(runs, "stale", outcome=None, state={**live_state(), "supervisor_pid": dead_pid()})
    done = make_run(runs, "done")
    for run in (stale, done):
        argv = [x if x != "X" else run.name for x in op] if "X" in op else [*op, run.name]
        result = invoke(*argv)
        assert result.exit_code == 2, result.output
        assert "is not running" in result.stderr and f"lrsup resume {run.name}" in result.stderr
        assert not (run / "requests.jsonl").exists()


def test_stop_waits_for_the_run_to_finish(runs):
    run = make_run(runs, "r", outcome=None, state=live_state())

    def supervisor():
        deadline = time.monotonic() + 10
        while not (run / "requests.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        write_state(run / "supervisor.json", {**live_state(), "state": "exited", "exit_status": 0})

    thread = threading.Thread(target=supervisor)
    thread.start()
    result = invoke("stop", "r", "--why", "enough", "--timeout", "20")
    thread.join()
    assert result.exit_code == 0, result.output
    assert requests_of(run)[0]["op"] == "stop" and requests_of(run)[0]["why"] == "enough"
    assert "sent stop to r" in result.stdout and "r completed (exit status 0)" in result.stdout


def test_stop_gives_up_waiting_after_the_timeout(runs):
    make_run(runs, "r", outcome=None, state=live_state())
    result = invoke("stop", "r", "--timeout", "0.5")
    assert result.exit_code == 1 and "still running after 0.5 s" in result.stderr


# -- resume / replay -----------------------------------------------------------------


def test_resume_calls_the_runner_and_exits_with_its_status(runs, monkeypatch):
    run = make_run(runs, "r", outcome=None, state={**live_state(), "supervisor_pid": dead_pid()})
    calls = []
    import lrsup.supervisor.run.runner as runner

    monkeypatch.setattr(runner, "resume", lambda d: calls.append(d) or 5, raising=False)
    result = invoke("resume", "r")
    assert result.exit_code == 5 and calls == [run]


def test_resume_refuses_a_running_run(runs):
    make_run(runs, "r", outcome=None, state=live_state())
    result = invoke("resume", "r")
    assert result.exit_code == 2 and "is running" in result.stderr


def fake_replay(monkeypatch, seen):
    def replay(run_dir, config, housekeeping=False):
        seen.append((run_dir, config))
        if housekeeping:
            yield {"epoch": 3, "step": 16, "policy": "engine", "action": "retain", "lr": None, "reason": "kept"}
        yield {
            "epoch": 3,
            "step": 16,
            "policy": "plateau",
            "action": "scale_lr",
            "lr": 0.05,
            "reason": "no improvement",
            "suppressed": None,
        }

    module = types.ModuleType("lrsup.supervisor.engine.replay")
    module.replay = replay
    monkeypatch.setitem(sys.modules, "lrsup.supervisor.engine.replay", module)


def test_replay_table_and_json(runs, monkeypatch, tmp_path):
    run = make_run(runs, "r")
    seen = []
    fake_replay(monkeypatch, seen)
    result = invoke("replay", "r")
    assert result.exit_code == 0, result.output
    assert "plateau" in result.stdout and "no improvement" in result.stdout and seen == [(run, None)]
    (tmp_path / "what-if.toml").write_text('[[policy]]\nuse = "plateau"\npatience = 7\n')
    result = invoke("replay", "r", "--json", "--config", "what-if.toml")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["lr"] == 0.05
    assert seen[-1][1].policies[0][2].patience == 7
    # checkpoint bookkeeping only with --all
    assert "retain" not in invoke("replay", "r").stdout
    result = invoke("replay", "r", "--all", "--json")
    assert [json.loads(line)["action"] for line in result.stdout.splitlines()] == ["retain", "scale_lr"]


def test_replay_with_an_invalid_config_exits_2(runs, monkeypatch, tmp_path):
    make_run(runs, "r")
    fake_replay(monkeypatch, [])
    (tmp_path / "bad.toml").write_text('[[policy]]\nuse = "plateau"\nfactor = 3.0\n')
    result = invoke("replay", "r", "--config", "bad.toml")
    assert result.exit_code == 2 and "invalid configuration" in result.stderr and "policy[0].factor" in result.stderr


# -- report / export -----------------------------------------------------------------


def test_report_of_one_run(runs):
    run = make_run(runs, "r")
    result = invoke("report", "r")
    assert result.exit_code == 0, result.output
    assert str(run / "report.md") in result.stdout and str(run / "report.html") in result.stdout
    assert (run / "report.md").exists() and "lrsup report: r" in result.stdout


def test_report_compares_several_runs(runs, tmp_path):
    make_run(runs, "a")
    make_run(runs, "b", outcome="stopped")
    result = invoke("report", "a", "b", "--out", "cmp")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cmp" / "compare.md").exists() and "Runs compared" in result.stdout


def test_report_refuses_out_for_one_run(runs):
    make_run(runs, "a")
    result = invoke("report", "a", "--out", "x")
    assert result.exit_code == 2 and "--out is for comparisons" in result.stderr


def test_export_csv(runs, tmp_path):
    run = make_run(runs, "r")
    result = invoke("export", "r", "--csv", "--out", "out.csv")
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,lr") and len(rows) == 7
    result = invoke("export", "r", "--csv")
    assert result.exit_code == 0 and (run / "epochs.csv").exists()
    result = invoke("export", "r", "--csv", "-o", "-")
    assert result.exit_code == 0 and result.stdout.splitlines()[0].startswith("epoch,step,lr")


def test_export_needs_a_format(runs):
    make_run(runs, "r")
    result = invoke("export", "r")
    assert result.exit_code == 2 and "--csv" in result.stderr


def test_export_tensorboard_or_its_missing_extra(runs, tmp_path):
    make_run(runs, "r")
    result = invoke("export", "r", "--tensorboard", "tb")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert result.exit_code == 1 and "pip install 'lrsup[tensorboard]'" in result.stderr
    else:
        assert result.exit_code == 0 and (tmp_path / "tb" / "train").is_dir()


# -- help --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    ["ls", "status", "logs", "watch", "set-lr", "hold", "release", "stop", "resume", "replay", "report", "export"],
)
def test_every_command_has_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage" in result.stdout


def test_replay_is_a_what_if_through_the_cli(runs, tmp_path):
    # the real replay: the run's recorded LRs (0.1, then its own cut to 0.05) do not count,
    # each cut of the replayed stack starts from its previous one
    make_run(runs, "r")
    (tmp_path / "what-if.toml").write_text('[[policy]]\nuse = "plateau"\nfactor = 0.5\npatience = 1\n')
    result = invoke("replay", "r", "--json", "--config", "what-if.toml")
    assert result.exit_code == 0, result.output
    items = [json.loads(line) for line in result.stdout.splitlines()]
    cuts = [(i["epoch"], round(i["lr"], 6)) for i in items if i["action"] == "scale_lr"]
    assert cuts and all(i["policy"] == "plateau" for i in items)
    assert [lr for _, lr in cuts] == [round(0.1 * 0.5 ** (n + 1), 6) for n in range(len(cuts))]
    table = invoke("replay", "r", "--config", "what-if.toml")
    assert table.exit_code == 0 and "scale_lr" in table.stdout and "retain" not in table.stdout


def test_watch_shows_a_journaled_missing_metric_as_the_live_run_did():
    import io

    from lrsup.supervisor.cli.watch import _feed_journal
    from lrsup.supervisor.protocol.journal import MissingMetricEntry, journal_line
    from lrsup.supervisor.view.display import PlainDisplay

    out = io.StringIO()
    entry = MissingMetricEntry(
        "plateau", "val_loss", ("loss",), 1, 0, 10, "plateau monitors val_loss, which is missing"
    )
    _feed_journal(PlainDisplay(out), journal_line(entry, T0))
    assert out.getvalue() == "warning: plateau monitors val_loss, which is missing\n"
