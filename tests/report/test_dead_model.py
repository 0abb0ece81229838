"""A model that did not learn is never reported as a plain success (issue 17): the one rule,
``history.outcome.dead_model``, and what the report and the notification make of it."""

from __future__ import annotations

import math

import pytest

from lrsup.supervisor.history.outcome import dead_model, with_dead_model


@pytest.mark.parametrize(
    "logs, expected",
    [
        # Collapsed to uniform predictions over 10 classes (the README's LR 1.0 digits run).
        ({"loss": 2.31, "accuracy": 0.11, "val_loss": math.log(10), "val_accuracy": 0.1}, "at chance level"),
        ({"loss": 0.6931, "binary_accuracy": 0.52}, "near ln 2"),  # binary, sigmoid output
        ({"val_loss": float("nan"), "val_accuracy": 0.1}, "diverged: its val_loss is nan"),
        ({"loss": float("inf")}, "diverged"),
        ({"val_loss": 0.1, "val_accuracy": 0.97}, None),  # trained
        ({"loss": 1.5, "accuracy": 0.6}, None),  # still learning: loss near ln 4.5, accuracy far above 1/4
        ({"loss": 2.30, "accuracy": 0.5}, None),  # the loss of chance, but an accuracy far above it
        ({"loss": 2.30}, None),  # no accuracy: a regression's loss says nothing about chance
        ({"loss": 0.0, "accuracy": 1.0}, None),
    ],
)
def test_dead_model(logs, expected):
    note = dead_model(logs)
    assert (note is None) if expected is None else (note is not None and expected in note)


def test_validation_metrics_are_judged_first():
    # Training at chance would be flagged, but the validation metrics show the model learned.
    assert dead_model({"loss": math.log(10), "accuracy": 0.1, "val_loss": 0.3, "val_accuracy": 0.9}) is None


def test_the_note_is_added_once():
    logs = {"val_loss": math.log(10), "val_accuracy": 0.1}
    once = with_dead_model("training completed", logs)
    assert once.startswith("training completed; the model ended at chance level: val_loss 2.303, near ln 10")
    assert with_dead_model(once, logs) == once
    assert with_dead_model("training completed", {"val_loss": 0.1, "val_accuracy": 0.97}) == "training completed"


def test_a_run_that_ends_diverged_says_so_everywhere_and_keeps_status_0(tmp_path):
    from lrsup.supervisor.history.runinfo import load_run
    from lrsup.supervisor.report.tables import summary_rows
    from lrsup.supervisor.run.notify import summary_payload
    from tests.run.test_night import TickingClock, journal, make
    from tests.run.test_runner import ScriptedTrainer

    runner, _ = make(tmp_path, [lambda r: ScriptedTrainer(r, [1.0, float("nan")])], clock=TickingClock())
    assert runner.run() == 0  # the script's status: unchanged
    events = {e["event"]: e["detail"] for e in journal(runner, "event")}
    assert events["dead_model"] == "the model ended diverged: its val_loss is nan"
    assert events["finished"] == (
        "training completed; the model ended diverged: its val_loss is nan (exit status 0)"
    )  # the end line
    info = load_run(runner.paths.root)
    assert info.outcome.value == "completed" and "the model ended diverged" in info.outcome_detail
    assert info.outcome_detail.count("the model ended") == 1
    outcome = dict(summary_rows(info))["Outcome"]
    assert outcome.startswith("completed (the model did not learn): training completed; the model ended diverged")
    assert "the model ended diverged" in summary_payload(info)["detail"]  # the end notification
