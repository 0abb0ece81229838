"""The live and plain displays, fed synthetic records (no trainer, no runner)."""

from __future__ import annotations

import io
import math
import re
import time
from types import SimpleNamespace

import pytest
from rich.console import Console

from lrsup.policies.actions import Rollback, ScaleLR, SetHparam, Stop
from lrsup.supervisor.engine.core import Decision
from lrsup.supervisor.protocol.wire import AckRecord, BatchRecord, EndRecord, EpochRecord, StartRecord
from lrsup.supervisor.view.display import (
    LiveDisplay,
    PlainDisplay,
    describe_record,
    display_state,
    format_decision,
    format_duration,
    metric_direction,
    sparkline,
)

NAN = float("nan")
T0 = 1_790_000_000.0


def decision(action, *, lr=None, epoch=0, suppressed=None):
    command = None if suppressed else SimpleNamespace(cmd=action.kind)  # what the display reads of a command
    return Decision(action=action, command=command, lr=lr, epoch=epoch, step=0, suppressed=suppressed)


def feed_run(display, *, epochs=8, steps=50):
    """start, 2 epochs of batches (1 s per 10 steps), a NaN epoch, decisions, states."""
    display.on_state("starting", "trainer pid 4242")
    display.on_record(StartRecord(time=T0, pid=1, optimizer="SGD", lr=0.1, epochs=epochs, steps_per_epoch=steps))
    display.on_state("running", "training started: SGD")
    val = [0.9, 0.8, NAN]
    acc = [0.50, 0.70, 0.60]
    step = 0
    lr = 0.1
    for epoch in range(3):
        for batch in range(steps):
            step += 1
            display.on_record(
                BatchRecord(
                    time=T0 + step / 10,
                    epoch=epoch,
                    batch=batch,
                    step=step,
                    lr=lr,
                    logs={"loss": 1.0 - epoch / 10, "accuracy": acc[epoch]},
                )
            )
        logs = {
            "loss": 1.0 - epoch / 10,
            "accuracy": acc[epoch],
            "val_loss": val[epoch],
            "val_accuracy": acc[epoch] - 0.05,
        }
        display.on_record(EpochRecord(time=T0 + step / 10, epoch=epoch, step=step, lr=lr, logs=logs))
        if epoch == 1:
            display.on_decision(
                decision(
                    ScaleLR(factor=0.5, reason="val_loss 0.8 has not improved", policy="plateau"), lr=0.05, epoch=epoch
                )
            )
            display.on_decision(
                decision(
                    SetHparam(name="momentum", value=0.9, reason="warm", policy="mom"),
                    epoch=epoch,
                    suppressed="held by alice",
                )
            )
            lr = 0.05
            display.on_record(AckRecord(time=T0 + step / 10, seq=3, cmd="scale_lr", epoch=epoch, step=step, lr=lr))
    display.on_decision(
        decision(
            Rollback(checkpoint="epoch-2", lr=0.01, reason="val_loss is NaN", policy="divergence"), lr=0.01, epoch=2
        )
    )
    display.on_state("degraded", "disk full: the journal cannot be written")
    display.on_time_lost(83.0)
    # The next epoch has begun: 20 batches at 10 steps/s.
    for batch in range(20):
        step += 1
        display.on_record(
            BatchRecord(time=T0 + step / 10, epoch=3, batch=batch, step=step, lr=0.01, logs={"loss": 0.75})
        )
    return step


def render(display, width=120) -> str:
    console = Console(record=True, width=width, force_terminal=True, color_system="truecolor", file=io.StringIO())
    console.print(display.renderable())
    return console.export_text()


@pytest.fixture
def live():
    display = LiveDisplay(Console(file=io.StringIO(), force_terminal=True, width=120), start=False)
    yield display
    display.close()


def test_live_view_shows_bars_metrics_sparklines_and_feed(live):
    feed_run(live)
    text = render(live)
    lines = text.splitlines()
    # Bars: the run (3 of 8 epochs done, with an ETA) and the epoch (20 of 50, speed, ETA).
    run_line = next(line for line in lines if line.strip().startswith("run"))
    assert "3/8 epochs" in run_line and "ETA" in run_line and "━" in run_line
    epoch_line = next(line for line in lines if line.strip().startswith("epoch 4"))
    assert "20/50 (step 170)  10.0 steps/s  ETA 0:03" in epoch_line
    # Metric table: val_* beside its train twin, best and the epoch of the best.
    header = next(line for line in lines if "last batch" in line)
    assert header.split()[:7] == ["metric", "last", "batch", "epoch", "best", "@", "val"]
    loss_row = next(line for line in lines if line.split()[:1] == ["loss"]).split()
    # loss: batch 0.75, epoch 0.8, best 0.8 at epoch 3; val nan, best 0.8 at epoch 2.
    assert loss_row[1:8] == ["0.75", "0.8", "0.8", "3", "nan", "0.8", "2"]
    acc_row = next(line for line in lines if line.split()[:1] == ["accuracy"]).split()
    assert acc_row[1:7] == ["0.6", "0.7", "2", "0.55", "0.65", "2"]  # max for accuracy (no batch value)
    lr_row = next(line for line in lines if line.split()[:1] == ["lr"]).split()
    assert lr_row[1] == "0.05"
    # Sparklines: loss, val_loss (NaN as ×) and the LR on a log scale.
    assert re.search(r"\bloss +█▅▁ ", text)
    assert re.search(r"\bval_loss +█▁× ", text)
    assert re.search(r"\blr \(log\) +██▁ ", text)
    # State, time lost, decisions newest first, with the rollback tagged.
    assert "● degraded" in text and "lost 1:23 to restarts/rollbacks" in text
    feed_at = next(i for i, line in enumerate(lines) if "decisions (newest first)" in line)
    feed = lines[feed_at + 1 :]
    assert "DEGRADED disk full" in feed[0]
    assert "ROLLBACK decision divergence rollback 0.01: val_loss is NaN" in feed[1] and "ep 3" in feed[1]
    assert "[suppressed: held by alice]" in feed[2]
    assert "decision plateau scale_lr 0.05: val_loss 0.8 has not improved" in feed[3] and "ep 2" in feed[3]


def test_live_styles_rollback_give_up_and_suppressed(live):
    live.on_decision(decision(Stop(reason="3 divergences", policy="divergence", give_up=True), epoch=4))
    live.on_decision(decision(Rollback(checkpoint="c", reason="NaN", policy="divergence"), epoch=3))
    live.on_decision(decision(ScaleLR(factor=0.5, reason="r", policy="p"), epoch=3, suppressed="held"))
    console = Console(record=True, width=120, force_terminal=True, color_system="truecolor", file=io.StringIO())
    console.print(live.renderable())
    html = console.export_html(inline_styles=True)
    assert "GIVE UP" in html and "ROLLBACK" in html
    styles = {text: style for text, style in live.feed}
    assert any("GIVE UP" in t and "bold red" in s for t, s in styles.items())
    assert any("ROLLBACK" in t and "bold" in s for t, s in styles.items())
    assert any("suppressed" in t and s == "dim" for t, s in styles.items())


def test_housekeeping_decisions_stay_out_of_the_feed(live):
    from lrsup.policies.actions import Retain

    live.on_decision(decision(ScaleLR(factor=0.5, reason="plateau", policy="plateau"), lr=0.05, epoch=1))
    live.on_decision(decision(Retain(keep=("epoch-0001",), reason="keep newest", policy="engine"), epoch=1))
    assert [text for text, _ in live.feed] == ["ep 2   decision plateau scale_lr 0.05: plateau"]
    assert len(live.decisions) == 2


def test_live_state_changes_and_restarts(live):
    live.on_state("starting", "trainer pid 1")
    assert live.state == "starting"
    live.on_state("running", "training started")
    live.on_state("backoff", "trainer exited with status 1; restarting in 5 s")
    assert live.state == "restarting" and "RESTARTING" in live.feed[0][0]
    live.on_state("starting", "restarting the trainer (attempt 2)")
    assert live.state == "restarting"
    live.on_state("running", "training started again")
    live.on_state("held", "held by alice")
    assert live.state == "held"
    live.on_state("garbage", "skipped a bad line")  # an event, not a state
    assert live.state == "held" and live.state_detail == "skipped a bad line"
    live.on_state("stopping", "interrupted by the user")
    live.on_state("exited", "training completed (exit status 0)")
    assert live.state == "finished"
    assert "● finished" in render(live)
    live.on_state("fatal", "restarts used up")
    assert live.state == "gave up"


def test_display_state_mapping():
    assert display_state("spawned", "trainer pid 3") == "starting"
    assert display_state("restarting", "restarting the trainer (attempt 2)") == "restarting"
    assert display_state("watching", "watching run") == "running"
    assert display_state("trainer_exited", "trainer exited with status 1") == "failed"
    assert display_state("trainer_exited", "training completed (exit status 0)") == "finished"
    assert display_state("signal", "SIGINT") is None


def test_live_multiplier_and_schedule(live):
    live.on_record(
        StartRecord(pid=1, optimizer="Adam", lr=0.001, lr_schedule="CosineDecay", epochs=3, steps_per_epoch=10)
    )
    text = " ".join(render(live).split())
    assert "lr 0.001 (CosineDecay)" in text
    live.multiplier = 0.5
    assert "lr 0.001 x0.5 (CosineDecay)" in " ".join(render(live).split())


def test_live_shows_the_scripts_lr_callbacks_and_who_owns_the_lr(live):
    live.on_record(StartRecord(pid=1, optimizer="Adam", lr=0.001, lr_callbacks=["ReduceLROnPlateau"], epochs=3))
    assert "lr 0.001 [script: ReduceLROnPlateau]" in " ".join(render(live).split())
    live.on_note("at the start of fit 1: the script's own LR logic keeps the LR: lrsup's plateau stands down")
    assert "plateau stands down" in " ".join(render(live).split())  # in the feed
    # Left out of the fit (lrsup owns the LR): not shown as the script's.
    live.on_record(
        StartRecord(pid=1, lr=0.001, lr_callbacks=["ReduceLROnPlateau"], lr_callbacks_left_out=True, fit=2, epochs=3)
    )
    assert "[script:" not in render(live)


def test_plain_display_prints_a_note():
    out = io.StringIO()
    PlainDisplay(out).on_note("fit 1: lrsup owns the LR")
    assert out.getvalue() == "lrsup: fit 1: lrsup owns the LR\n"


def test_live_without_epochs_or_steps_and_before_any_record(live):
    text = render(live)
    assert "● starting" in text and "epoch –" in text
    live.on_record(StartRecord(pid=1))
    live.on_record(BatchRecord(epoch=0, batch=6, step=7, logs={"loss": 2.0}))
    text = render(live)
    assert "batch 7 (step 7)" in text and "run " not in text


def test_live_narrow_console_stacks_tables():
    display = LiveDisplay(Console(file=io.StringIO(), force_terminal=True, width=80), start=False)
    feed_run(display)
    text = render(display, width=80)
    assert "…" not in text.split("decisions")[0].split("\n", 1)[1], text
    assert "epoch 4" in text and "last batch" in text and "val_loss  █▁×" in text


def test_live_display_really_draws(tmp_path):
    out = io.StringIO()
    display = LiveDisplay(Console(file=out, force_terminal=True, width=100))
    try:
        feed_run(display)
        display.on_output_line("[not markup] trainer line")
        time.sleep(0.35)
    finally:
        display.close()
    text = out.getvalue()
    assert "[not markup] trainer line" in text and "decisions (newest first)" in text
    assert "lrsup: epoch 3/8" in text


def test_batch_records_are_cheap():
    display = LiveDisplay(Console(file=io.StringIO(), force_terminal=True, width=120))
    try:
        display.on_record(StartRecord(pid=1, lr=0.1, epochs=1000, steps_per_epoch=100_000))
        records = [
            BatchRecord(time=T0 + i, epoch=0, batch=i, step=i + 1, lr=0.1, logs={"loss": 0.5}) for i in range(100_000)
        ]
        started = time.perf_counter()
        for record in records:
            display.on_record(record)
        elapsed = time.perf_counter() - started
    finally:
        display.close()
    assert elapsed < 3.0, f"100k batch records took {elapsed:.2f} s"
    assert "100000/100000" in render(display)


def test_plain_display_one_line_per_epoch_decision_and_state():
    out = io.StringIO()
    display = PlainDisplay(out)
    feed_run(display, epochs=3, steps=5)
    display.on_record(EndRecord(reason="completed", epoch=3, step=20))
    display.on_time_lost(83.5)  # no new line: the same total
    display.on_state("exited", "training completed (exit status 0)")
    lines = out.getvalue().splitlines()
    assert lines == [
        "lrsup: trainer pid 4242",
        "training started: SGD lr=0.1, 3 epochs x 5 steps",
        "lrsup: training started: SGD",
        "epoch 1/3 loss=1 accuracy=0.5 val_loss=0.9 val_accuracy=0.45 lr=0.1",
        "epoch 2/3 loss=0.9 accuracy=0.7 val_loss=0.8 val_accuracy=0.65 lr=0.1",
        "decision plateau scale_lr 0.05: val_loss 0.8 has not improved",
        "decision mom set_hparam momentum=0.9 [suppressed: held by alice]: warm",
        "epoch 3/3 loss=0.8 accuracy=0.6 val_loss=nan val_accuracy=0.55 lr=0.05",
        "decision divergence rollback 0.01: val_loss is NaN",
        "lrsup: disk full: the journal cannot be written",
        "lrsup: 1:23 lost to restarts and rollbacks so far",
        "training ended: completed",
        "lrsup: training completed (exit status 0)",
    ]


def test_plain_display_leaves_housekeeping_and_announced_acks_out():
    from lrsup.policies.actions import Keep, Retain

    out = io.StringIO()
    display = PlainDisplay(out)
    display.on_decision(decision(Retain(keep=("epoch-0001",), reason="keep newest", policy="engine")))
    display.on_decision(decision(Keep(checkpoints=("lr_find-0",), reason="range test", policy="lr_find")))
    display.on_record(AckRecord(time=T0, seq=1, cmd="retain", epoch=0, step=5, lr=0.1))
    display.on_record(AckRecord(time=T0, seq=2, cmd="configure", epoch=0, step=5, lr=0.1, late=True))
    display.on_record(AckRecord(time=T0, seq=3, cmd="checkpoint", epoch=0, step=5, lr=0.1))
    display.on_decision(decision(ScaleLR(factor=0.5, reason="plateau", policy="plateau"), lr=0.05))
    display.on_decision(decision(ScaleLR(factor=0.5, reason="again", policy="plateau"), lr=0.025))
    display.on_record(AckRecord(time=T0, seq=4, cmd="scale_lr", epoch=0, step=5, lr=0.05))
    display.on_record(AckRecord(time=T0, seq=5, cmd="scale_lr", epoch=0, step=6, lr=0.025, late=True))
    display.on_record(AckRecord(time=T0, seq=6, cmd="scale_lr", epoch=0, step=7, lr=0.0125))  # an operator's
    assert out.getvalue().splitlines() == [
        "decision plateau scale_lr 0.05: plateau",
        "decision plateau scale_lr 0.025: again",
        "applied scale_lr (seq 5) after step 6 lr=0.025 (late)",
        "applied scale_lr (seq 6) after step 7 lr=0.0125",
    ]


def test_live_display_prints_no_housekeeping_decision():
    from lrsup.policies.actions import Retain

    console = Console(record=True, width=120, file=io.StringIO())
    live = LiveDisplay(console, start=False)
    live.on_decision(decision(Retain(keep=("epoch-0001",), reason="keep newest", policy="engine")))
    live.on_decision(decision(ScaleLR(factor=0.5, reason="plateau", policy="plateau"), lr=0.05))
    assert console.export_text().splitlines() == ["lrsup: decision plateau scale_lr 0.05: plateau"]
    assert len(live.feed) == 1


def test_sparkline():
    assert sparkline([]) == ""
    assert sparkline([1.0, 2.0, 3.0]) == "▁▄█" or sparkline([1.0, 2.0, 3.0]) == "▁▅█"
    assert sparkline([1.0, NAN, float("inf"), 0.0]) == "█××▁"
    assert sparkline([NAN, NAN]) == "××"
    assert sparkline([0.5, 0.5]) == "▄▄"
    assert sparkline(list(range(100))) == sparkline(list(range(60, 100)))
    assert len(sparkline(list(range(100)))) == 40
    assert sparkline([1e-1, 1e-2, 1e-3], log=True) == "█▄▁" or sparkline([1e-1, 1e-2, 1e-3], log=True) == "█▅▁"
    assert sparkline([0.1, 0.0], log=True) == "▄×"


def test_metric_direction_and_duration():
    assert metric_direction("val_loss") == "min" and metric_direction("val_accuracy") == "max"
    assert metric_direction("auc_1") == "max" and metric_direction("my_loss") == "min"
    assert metric_direction("lr_seen") is None
    assert format_duration(42) == "0:42" and format_duration(3723) == "1:02:03"
    assert format_duration(None) == "–" and format_duration(math.inf) == "–"


def test_a_later_fit_shows_as_a_stage_live_and_plain(live):
    live.on_record(StartRecord(pid=1, optimizer="Adam", lr=0.001, epochs=3, steps_per_epoch=10))
    assert "fit " not in render(live)  # a single-fit run is not cluttered with stages
    live.on_record(StartRecord(pid=1, optimizer="Adam", lr=5.0, epochs=8, steps_per_epoch=10, fit=2))
    assert "fit 2/?" in render(live)
    start = StartRecord(pid=1, optimizer="Adam", lr=5.0, epochs=8, steps_per_epoch=10, fit=2)
    assert describe_record(start, None) == "training started (fit 2): Adam lr=5, 8 epochs x 10 steps"


def test_a_missing_metric_is_a_warning_line_not_a_decision():
    from lrsup.policies.plateau import Plateau
    from lrsup.supervisor.engine.metric_check import MetricCheck

    (warning,) = MetricCheck([Plateau()]).on_epoch(EpochRecord(epoch=0, step=10, logs={"loss": 1.0}))
    decision = Decision(warning, None, None, 0, 10)
    assert format_decision(decision) == f"warning: {warning.reason}"
    out = io.StringIO()
    PlainDisplay(out).on_decision(decision)
    assert out.getvalue().startswith("warning: plateau monitors val_loss, which is missing from the epoch logs")
