"""``lrsup lr-find``: the LR range test on its own, its suggestion, and its curve as lr_find.png.

The script runs under the supervisor with one policy,
:class:`~lrsup.policies.lr_range_test.LRRangeTest` (lr_find in mode ``"always"``, then a
stop once the test is over), and a batch record every step. When the run has ended the
run's own records (metrics.jsonl) are fed again to the same policy: the curve (the
loss of each step against the LR of its update, and its smoothed version) and the
suggestion come from the code that decided live, so the plot and the printed LR
match the run's decision.

Example::

    config = range_test_config(num_steps=100, min_lr=1e-5, max_lr=10.0)
    status = supervise(config, script=script, args=args, run_dir=prepared, display=RangeTestDisplay(100))
    curve = range_test_curve(prepared.path)
    print(curve.suggestion, curve.suggestions)
    plot_range_test(curve, prepared.path / LR_FIND_PNG)
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lrsup.policies.lr_find import SUGGESTIONS, LRFind, LRFindSettings, suggest
from lrsup.policies.lr_range_test import LRRangeTest
from lrsup.supervisor.config import AgentSettings, ResolvedConfig, RunSettings

POLICY_SPEC = "lrsup.policies.lr_range_test:LRRangeTest"
SOURCE = "(lrsup lr-find)"
LR_FIND_PNG = "lr_find.png"

# Option names of the settings, for messages that name what the user typed.
_OPTIONS = {"num_steps": "--steps", "min_lr": "--min-lr", "max_lr": "--max-lr"}


def range_test_config(num_steps: int = 100, min_lr: float | None = None, max_lr: float | None = None) -> ResolvedConfig:
    """The configuration of a range test run: LRRangeTest alone, a batch record every step, no restarts.

    Example::

        range_test_config(200, min_lr=1e-6, max_lr=1.0).policies[0][2].num_steps   # 200

    Args:
        num_steps: int. Steps of the ramp (>= 20).
        min_lr: float or None. The ramp's start; None: by optimizer family.
        max_lr: float or None. The ramp's end; None: by optimizer family.

    Raises:
        ValueError: a setting is invalid; the message names the option (``--steps: ...``).
    """
    # max_share: asked for, all of it; inside the fit (LRRangeTest stops the run after the test)
    raw: dict[str, Any] = {"mode": "always", "num_steps": num_steps, "max_share": 1.0, "probe": False}
    if min_lr is not None:
        raw["min_lr"] = float(min_lr)
    if max_lr is not None:
        raw["max_lr"] = float(max_lr)
    try:
        settings = LRFindSettings.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            where = _OPTIONS.get(str(error["loc"][0]), "--min-lr/--max-lr") if error["loc"] else "--min-lr/--max-lr"
            message = error["msg"].removeprefix("Value error, ")
            got = f" (got {error['input']!r})" if error["loc"] else ""
            problems.append(f"{where}: {message}{got}")
        raise ValueError("; ".join(problems)) from None
    # A stop or a crash during the test leaves nothing to retry: no restarts.
    return ResolvedConfig(
        SOURCE,
        AgentSettings(batch_every=1, batch_min_interval=0.0),  # a record every step
        RunSettings(max_restarts=0),
        [(POLICY_SPEC, LRRangeTest, settings)],
    )


@dataclass
class RangeTestCurve:
    """A range test as its policy saw it.

    Args:
        lrs: the LR of each step's update, increasing.
        losses: the loss of each step.
        smoothed: ``losses`` smoothed as the policy smooths them.
        num_steps: the planned length of the test.
        method: the suggestion rule the test used.
        suggestion: the LR it suggested (None: too few points, or the test never ended).
        suggestions: every rule's value on the same curve, for information.
        finished: whether the test ended (with or without a suggestion).
        why: how it ended (the policy's words), or why there is no result.
        optimizer: the optimizer's class name, when the trainer said.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    num_steps: int
    method: str
    suggestion: float | None
    suggestions: dict[str, float | None] = field(default_factory=dict)
    finished: bool = False
    why: str = ""
    optimizer: str | None = None


def range_test_curve(run_dir: str | os.PathLike[str]) -> RangeTestCurve:
    """Feed a range test run's records again to its policy; the curve and the suggestion it decided on.

    Example::

        curve = range_test_curve("runs/20261126T120000-train")
        curve.suggestion, curve.suggestions["steepest"]

    Args:
        run_dir: the run directory (its config.json and metrics.jsonl are read).

    Raises:
        ValueError: the run's configuration has no lr_find policy, or cannot be used.
    """
    from lrsup.supervisor.config import ConfigError, run_config
    from lrsup.supervisor.engine.core import Engine
    from lrsup.supervisor.protocol.jsonl import ReadStats, iter_objects
    from lrsup.supervisor.protocol.wire import METRICS_FILE, ProtocolError, StartRecord, parse_record

    try:
        config = run_config(run_dir)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    engine = Engine.from_config(config)
    policy = next((p for p in engine.policies if isinstance(p, LRFind)), None)
    if policy is None:
        raise ValueError(f"{run_dir}: its configuration has no lr_find policy")
    optimizer = None
    for obj in iter_objects(Path(run_dir, METRICS_FILE), ReadStats()):
        try:
            record = parse_record(obj)
        except ProtocolError:
            continue  # skipped live too
        if isinstance(record, StartRecord) and optimizer is None:
            optimizer = record.optimizer
        engine.feed(record)
    s = policy.settings
    result = policy.result or {}
    others = {m: suggest(policy.lrs, policy.smoothed, m, policy.steps) for m in SUGGESTIONS}
    finished = policy.phase == "done"
    if finished:
        why = str(result.get("why", ""))
    elif policy.phase in ("idle", "checkpoint"):
        why = "the run ended before the range test started (no checkpoint to come back to arrived)"
    else:
        why = f"the run ended after {len(policy.lrs)} of the test's {policy.steps} steps"
    return RangeTestCurve(
        list(policy.lrs),
        list(policy.raw),
        list(policy.smoothed),
        policy.steps,
        s.suggestion,
        result.get("suggestion") if finished else None,
        others,
        finished,
        why,
        optimizer,
    )


# ---------------------------------------------------------------------------
# The figure


def plot_range_test(curve: RangeTestCurve, path: str | os.PathLike[str]) -> Path:
    """Draw loss and smoothed loss against the LR (log x), the suggestion marked; write a PNG.

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'lrsup[plots]'``).
        ValueError: the curve has no points.
    """
    from lrsup.supervisor.history.runinfo import MissingExtraError

    if not curve.lrs:
        raise ValueError("the range test has no points to plot")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("drawing lr_find.png", "matplotlib", "plots") from None

    fig = Figure(figsize=(9, 5.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(curve.lrs, curve.losses, color="#1f77b4", alpha=0.3, linewidth=0.9, label="loss per step")
    ax.plot(curve.lrs, curve.smoothed, color="#1f77b4", linewidth=2.0, label="smoothed loss")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    ax.set_ylim(*_y_limits(curve))
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="x", alpha=0.1)
    skip = curve.num_steps // 10  # the window the suggestions do not see (lr_find.suggest): shaded
    if skip and len(curve.lrs) > skip:
        ax.axvspan(curve.lrs[0], curve.lrs[skip], color="0.85", alpha=0.5, linewidth=0)
    if len(curve.lrs) > 5:
        ax.axvspan(
            curve.lrs[-5], curve.lrs[-1], color="0.85", alpha=0.5, linewidth=0, label="not used for the suggestions"
        )
    styles = {"valley": "#d62728", "steepest": "#2ca02c", "min_loss": "#9467bd"}
    for method in SUGGESTIONS:
        value = curve.suggestions.get(method)
        if value is None:
            continue
        chosen = method == curve.method and curve.suggestion is not None
        ax.axvline(
            value,
            color=styles[method],
            linewidth=2.0 if chosen else 1.0,
            linestyle="-" if chosen else ":",
            alpha=1.0 if chosen else 0.8,
            label=f"{method}: {value:.3g}" + (" (suggested)" if chosen else ""),
        )
    if curve.suggestion is not None:
        ax.annotate(
            f"{curve.suggestion:.3g}",
            xy=(curve.suggestion, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, -14),
            textcoords="offset points",
            color=styles.get(curve.method, "#d62728"),
            fontweight="bold",
        )
    title = f"LR range test: {len(curve.lrs)} steps"
    if curve.optimizer:
        title += f" ({curve.optimizer})"
    title += (
        f", suggested {curve.suggestion:.3g} ({curve.method})" if curve.suggestion is not None else ", no suggestion"
    )
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=9, framealpha=0.9)
    fig.tight_layout()
    target = Path(path)
    fig.savefig(target, format="png")
    return target


def _y_limits(curve: RangeTestCurve) -> tuple[float, float]:
    """Low: below the smallest loss. High: a little above where the smoothed curve started, so that
    the blow-up at the end does not flatten the interesting part."""
    finite = [v for v in curve.losses + curve.smoothed if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low = min(finite)
    start = [v for v in curve.smoothed[: max(1, len(curve.smoothed) // 10)] if math.isfinite(v)]
    high = min(max(finite), 1.5 * max(start) if start else max(finite))
    if high <= low:
        high = low + 1.0
    pad = 0.05 * (high - low)
    return low - pad, high + pad


# ---------------------------------------------------------------------------
# Progress while the test runs


class RangeTestDisplay:
    """The supervisor's display during ``lrsup lr-find``: the plain lines, and the test's progress.

    On a terminal, a rich progress bar (steps done / N, the LR and loss of the last step)
    stays under the scrolling lines; otherwise a line at each quarter of the test.

    Example::

        display = RangeTestDisplay(100)              # sys.stdout decides: bar or lines
        supervise(config, ..., display=display)

    Args:
        num_steps: int. The planned length of the test.
        stream: text stream or None (default: sys.stdout).
        live: bool or None. Draw the bar; None: when ``stream`` is a terminal.
    """

    def __init__(self, num_steps: int, stream: Any = None, *, live: bool | None = None) -> None:
        from lrsup.supervisor.view.display import PlainDisplay

        self.num_steps = num_steps
        self.stream = stream if stream is not None else sys.stdout
        self.ramp_start: int | None = None
        self.done = 0
        self.finished = False
        self._quarter = 0
        self.progress: Any = None
        if live if live is not None else self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                redirect_stdout=True,
                redirect_stderr=True,
            )
            self.task = self.progress.add_task("LR range test: waiting for its checkpoint", total=num_steps, info="")
            self.progress.start()
            self.inner = PlainDisplay(sys.stdout)  # rich's proxy: lines scroll above the bar
        else:
            self.inner = PlainDisplay(self.stream)

    def on_record(self, record: Any) -> None:
        from lrsup.supervisor.protocol.wire import AckRecord, BatchRecord

        if isinstance(record, BatchRecord):
            if self.ramp_start is not None and not self.finished:
                self._advance(record)
            return
        if isinstance(record, AckRecord) and record.cmd == "set_schedule" and self.ramp_start is None:
            self.ramp_start = record.step
            if self.progress is not None:
                self.progress.update(self.task, description="LR range test")
        self.inner.on_record(record)

    def _advance(self, record: Any) -> None:
        self.done = max(0, min(self.num_steps, record.step - self.ramp_start))
        loss = record.logs.get("loss")
        if self.progress is not None:
            info = f"lr {record.lr:.3g}" if record.lr is not None else ""
            if isinstance(loss, (int, float)):
                info += f"  loss {loss:.4g}"
            self.progress.update(self.task, completed=self.done, info=info)
        elif self.done * 4 >= (self._quarter + 1) * self.num_steps:
            self._quarter = self.done * 4 // self.num_steps
            print(f"LR range test: {self.done}/{self.num_steps} steps", file=self.stream, flush=True)

    def on_decision(self, decision: Any) -> None:
        self.inner.on_decision(decision)
        if decision.action.policy == "lr_find" and decision.action.kind in ("rollback", "stop") and not self.finished:
            self.finished = True
            if self.progress is not None:
                self.progress.update(self.task, description="LR range test: over")

    def on_output_line(self, line: str) -> None:
        self.inner.on_output_line(line)

    def on_state(self, event: str, detail: str) -> None:
        self.inner.on_state(event, detail)

    def close(self) -> None:
        self.inner.close()
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


# ---------------------------------------------------------------------------
# The command


def run_range_test(script: Path, args: list[str], prepared: Any, config: ResolvedConfig, cwd: Path) -> int:
    """Supervise the range test, then print the suggestion and write lr_find.png; the exit status.

    0 with a suggestion; the run's own status when it failed; 1 when the test gave no suggestion.
    """
    from lrsup.supervisor.history.runinfo import MissingExtraError
    from lrsup.supervisor.run.runner import run as supervise

    settings = config.policies[0][2]
    assert isinstance(settings, LRFindSettings)  # range_test_config made it
    num_steps = settings.num_steps
    status = supervise(
        config, script=script, args=args, run_dir=prepared, cwd=cwd, display=RangeTestDisplay(num_steps), report=False
    )
    run_dir = prepared.path
    if status != 0:
        print(
            f"lrsup: the range test's run failed (exit status {status}); see {run_dir / 'trainer.log'}", file=sys.stderr
        )
        return status
    try:
        curve = range_test_curve(run_dir)
    except ValueError as exc:
        print(f"lrsup: cannot read the range test back: {exc}", file=sys.stderr)
        return 1
    print(f"LR range test, {len(curve.lrs)} steps: {curve.why}")
    if curve.suggestion is not None:
        print(f"suggested learning rate: {curve.suggestion:.3g} ({curve.method})")
    others = "  ".join(f"{m} {_g(v)}" for m, v in curve.suggestions.items() if m != curve.method)
    print(f"for information: {others}")
    if curve.lrs:
        try:
            print(f"plot: {plot_range_test(curve, run_dir / LR_FIND_PNG)}")
        except MissingExtraError as exc:
            print(f"lrsup: {LR_FIND_PNG} not written: {exc}", file=sys.stderr)
        except (OSError, ValueError) as exc:
            print(f"lrsup: {LR_FIND_PNG} not written: {exc}", file=sys.stderr)
    if curve.suggestion is None:
        hint = "" if curve.finished else f" (give the script enough steps for --steps {num_steps})"
        print(f"lrsup: no suggestion: {curve.why}{hint}", file=sys.stderr)
        return 1
    return 0


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


__all__ = [
    "LR_FIND_PNG",
    "RangeTestCurve",
    "RangeTestDisplay",
    "plot_range_test",
    "range_test_config",
    "range_test_curve",
    "run_range_test",
]
