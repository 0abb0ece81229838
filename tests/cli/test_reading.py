"""What a person reads from the CLI: one LR format, decisions without bookkeeping, RUN by script name,
help without ``<bool>``, and RUN arguments that are not runs refused cleanly (exit 2, no traceback)."""

from __future__ import annotations

import struct

import pytest
from typer.testing import CliRunner

from lrsup.supervisor.cli.main import app
from lrsup.supervisor.history.rows import fmt_lr
from lrsup.supervisor.history.runs import RunRefError, resolve_run
from lrsup.supervisor.protocol.jsonl import Appender
from lrsup.supervisor.protocol.wire import PROTOCOL_VERSION, EpochRecord

from .conftest import T0, make_run

cli = CliRunner()
WIDE = {"COLUMNS": "250"}
F32_001 = struct.unpack("<f", struct.pack("<f", 0.01))[0]  # 0.009999999776482582: what a float32 optimizer reports


def invoke(*args: str):
    return cli.invoke(app, list(args), env=WIDE)


def test_fmt_lr_prints_a_float32_lr_as_people_write_it():
    assert F32_001 != 0.01 and fmt_lr(F32_001) == "0.01"
    assert fmt_lr(0.0115) == "0.0115" and fmt_lr(1e-5) == "1e-05" and fmt_lr(None) == "–"
    assert fmt_lr(float("nan")) == "NaN"


def test_status_and_ls_print_the_lr_at_a_sensible_precision(runs):
    run = make_run(runs, "20261126T100000Z-train")
    with Appender(run / "metrics.jsonl") as m:
        m.write(EpochRecord(time=T0 + 100, epoch=6, step=28, lr=F32_001, logs={"loss": 0.3}).to_json())
    for command in ("status", "ls"):
        result = invoke(command, *(["train"] if command == "status" else []))
        assert result.exit_code == 0, result.output
        assert "0.01" in result.stdout and "0.00999" not in result.stdout


def test_status_last_decisions_leave_bookkeeping_out(runs):
    run = make_run(runs, "20261126T100000Z-train")
    with Appender(run / "journal.jsonl") as j:
        for i, action in enumerate(("retain", "configure", "checkpoint", "keep", "retain", "retain")):
            j.write(
                {"v": PROTOCOL_VERSION, "type": "decision", "time": T0 + 70 + i, "seq": 100 + i, "policy": "engine"}
                | {"action": action, "lr": None, "reason": "bookkeeping", "epoch": 5, "step": 24, "suppressed": None}
            )
    result = invoke("status", "20261126T100000Z-train")
    assert result.exit_code == 0, result.output
    decisions = result.stdout.split("last decisions", 1)[1]
    assert "scale_lr" in decisions and "bookkeeping" not in decisions
    assert "0.05" in decisions and "4" in decisions.split("plateau")[0]  # epoch 4, 1-based (protocol epoch 3)


def test_a_run_is_named_by_a_prefix_of_its_script(runs):
    digits = make_run(runs, "20261126T100000Z-digits")
    make_run(runs, "20261126T110000Z-train", t0=3600)
    make_run(runs, "20261126T120000Z-train", t0=7200)
    assert resolve_run("dig", "runs") == digits
    assert resolve_run("digits", "runs") == digits
    assert resolve_run("20261126T10", "runs") == digits  # the timestamp still works
    with pytest.raises(RunRefError) as err:
        resolve_run("tra", "runs")
    text = str(err.value)
    assert "matches 2 runs" in text and "20261126T110000Z-train" in text and "20261126T120000Z-train" in text
    result = invoke("status", "tra")
    assert result.exit_code == 2 and "matches 2 runs" in result.stderr


def test_a_very_long_run_name_is_refused_without_a_traceback(runs):
    make_run(runs, "20261126T100000Z-train")
    for ref in ("x" * 5000, "y" * 300, "a/" + "z" * 300):
        result = invoke("status", ref)
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)  # no OSError
        assert result.stderr.startswith("lrsup: ")


def test_a_directory_that_is_not_a_run_is_refused(runs, tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    for ref in ("/etc", str(tmp_path / "plain"), "plain", "."):
        result = invoke("status", ref)
        assert result.exit_code == 2, (ref, result.output)
        assert "not an lrsup run directory" in result.stderr


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["export", "--help"], ["lr-find", "--help"]])
def test_help_shows_no_bool_after_flags(argv):
    result = invoke(*argv)
    assert result.exit_code == 0 and "Usage" in result.stdout
    assert "<bool>" not in result.stdout and "\\[" not in result.stdout
