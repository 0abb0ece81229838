"""What the user sees while a run is supervised.

Two displays with one small interface (``on_record``, ``on_decision``,
``on_output_line``, ``on_state``, ``close``, and the optional ``on_time_lost`` and ``on_note``):

- ``LiveDisplay`` (a terminal): a rich Live area under the scrolling trainer output,
  redrawn at most 4 times a second, showing

  - the run state (starting, running, restarting, degraded, held, stopping, finished /
    failed / gave up) with its last detail, and the time lost to restarts and rollbacks;
  - a progress bar for the run (epochs done of N, ETA) and one for the epoch (batch of
    steps_per_epoch, steps per second, ETA);
  - a table of every metric of the latest epoch logs (``val_*`` beside its train twin):
    last batch value, current value, best value and the epoch of the best (min for
    loss-like names, max for accuracy/auc-like ones: lrsup.policies.monitor.metric_direction);
    the current LR, with ``x multiplier`` when one is known, the schedule's name and the
    script's own LR callbacks (``[script: ReduceLROnPlateau]``);
  - sparklines of loss, val_loss and LR (log scale) over the last 40 epochs (``×``: NaN);
  - the last decisions, newest first; rollbacks, restarts and give-ups in bold colour,
    suppressed decisions dimmed; who owns the LR (``on_note``: lrsup's LR tuning standing
    down while the script's own LR logic keeps it, a rescue of the script's LR).

- ``PlainDisplay`` (a pipe or file): one line per event, e.g.
  ``epoch 3/15 loss=0.41 val_loss=0.43 lr=0.01`` and
  ``decision plateau scale_lr 0.005: val_loss did not improve for 3 epochs``.

``make_display()`` picks by ``sys.stdout.isatty()``. Both are cheap on batch
records: the live display keeps a reference to the record and renders nothing,
the plain one ignores it.
"""

from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, TextIO

from lrsup.policies.monitor import metric_direction
from lrsup.supervisor.history.rows import fmt_lr
from lrsup.supervisor.protocol.journal import MISSING_METRIC
from lrsup.supervisor.protocol.wire import (
    HOUSEKEEPING_ACTIONS,
    AckRecord,
    BatchRecord,
    EndRecord,
    EpochRecord,
    ErrorRecord,
    Record,
    StartRecord,
)


class Display(Protocol):
    def on_record(self, record: Record) -> None: ...
    def on_decision(self, decision: Any) -> None: ...
    def on_output_line(self, line: str) -> None: ...
    def on_state(self, event: str, detail: str) -> None: ...
    def close(self) -> None: ...

    # Optional (callers check with getattr): seconds of training lost so far to
    # restarts and rollbacks (a running total, not an increment).
    # def on_time_lost(self, seconds: float) -> None: ...
    # Optional: a sentence the supervisor wants seen (who owns the LR: an lr_owner journal entry).
    # def on_note(self, text: str) -> None: ...


def format_metrics(logs: dict) -> str:
    """``loss=0.41 val_loss=0.43`` (4 significant digits, Keras's order)."""
    return " ".join(f"{k}={v:.4g}" for k, v in logs.items())


def format_decision(decision: Any) -> str:
    """``decision plateau scale_lr 0.005: <reason>`` (the new LR when there is one)."""
    action = decision.action
    if action.kind == MISSING_METRIC:
        return f"warning: {action.reason}"
    value = decision.lr if decision.lr is not None else getattr(action, "lr", None)
    what = f"{action.kind} {fmt_lr(value)}" if value is not None else action.kind
    if action.kind == "set_hparam":
        what = f"set_hparam {action.name}={action.value:.4g}"
    suppressed = f" [suppressed: {decision.suppressed}]" if decision.suppressed else ""
    return f"decision {action.policy or '?'} {what}{suppressed}: {action.reason}"


def describe_record(record: Record, epochs: int | None) -> str | None:
    """The one line a record deserves in the plain display (None: nothing to say)."""
    if isinstance(record, EpochRecord):
        total = f"/{epochs}" if epochs else ""
        lr = f" lr={fmt_lr(record.lr)}" if record.lr is not None else ""
        metrics = format_metrics(record.logs)
        return f"epoch {record.epoch + 1}{total}" + (f" {metrics}" if metrics else "") + lr
    if isinstance(record, StartRecord):
        opt = record.optimizer or "optimizer"
        lr = f" lr={fmt_lr(record.lr)}" if record.lr is not None else ""
        shape = f", {record.epochs} epochs" if record.epochs else ""
        shape += f" x {record.steps_per_epoch} steps" if record.steps_per_epoch else ""
        if record.probe:  # the LR range test's hidden fit: put back before the script's fit
            return f"LR range test probe started (before fit {record.fit}, undone after it): {opt}{lr}"
        stage = f" (fit {record.fit})" if record.fit > 1 else ""  # a later fit of the script: a stage
        return f"training started{stage}: {opt}{lr}{shape}"
    if isinstance(record, AckRecord):
        late = " (late)" if record.late else ""
        lr = f" lr={fmt_lr(record.lr)}" if record.lr is not None else ""
        return f"applied {record.cmd} (seq {record.seq}) after step {record.step}{lr}{late}"
    if isinstance(record, ErrorRecord):
        which = f" {record.cmd} (seq {record.seq})" if record.cmd else ""
        return f"trainer error{which}: {record.message}"
    if isinstance(record, EndRecord):
        return f"training ended: {record.reason}"
    return None


# ---------------------------------------------------------------------------
# Small pure helpers (tested on their own).

SPARK_CHARS = "▁▂▃▄▅▆▇█"
SPARK_NAN = "×"
SPARK_WIDTH = 40
_LR_KEYS = frozenset({"lr", "learning_rate"})
# Bookkeeping (checkpoints, retention, cadence): the protocol's housekeeping commands and a
# policy's Keep action. Neither display prints their decisions or acks (the journal has them);
# the live one keeps them out of its feed.
_HOUSEKEEPING = HOUSEKEEPING_ACTIONS


def is_housekeeping(decision: Any) -> bool:
    """True for a decision that manages checkpoints or cadence, not the training."""
    return getattr(decision.action, "kind", None) in _HOUSEKEEPING


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH, log: bool = False) -> str:
    """One block character per value for the last ``width`` values, scaled to their range.

    Non-finite values (and non-positive ones on a log scale) are ``×``; a flat series
    sits in the middle (``▄``).

    Example::

        sparkline([1.0, 0.5, float("nan"), 0.25])  # '█▃×▁'
    """
    values = list(values)[-width:] if width > 0 else []

    def scaled(v: float) -> float | None:
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        if log:
            return math.log10(v) if v > 0 else None
        return float(v)

    points = [scaled(v) for v in values]
    finite = [p for p in points if p is not None]
    if not finite:
        return SPARK_NAN * len(points)
    low, high = min(finite), max(finite)
    top = len(SPARK_CHARS) - 1
    out = []
    for p in points:
        if p is None:
            out.append(SPARK_NAN)
        elif high - low <= abs(high) * 1e-12:
            out.append(SPARK_CHARS[top // 2])
        else:
            out.append(SPARK_CHARS[min(top, max(0, round((p - low) / (high - low) * top)))])
    return "".join(out)


def format_duration(seconds: float | None) -> str:
    """``0:42``, ``12:05``, ``1:02:03`` (``–`` when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}g}"


def _is_bad(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


# Display state for each state / event name the runner (lifecycle State values) and
# ``lrsup watch`` (journal event names, run summary states) pass to ``on_state``.
_STATES = {
    "starting": "starting",
    "spawned": "starting",
    "attached": "running",
    "running": "running",
    "started": "running",
    "watching": "running",
    "resumed": "running",
    "released": "running",
    "recovered": "running",
    "undegraded": "running",
    "backoff": "restarting",
    "restarting": "restarting",
    "restart": "restarting",
    "degraded": "degraded",
    "held": "held",
    "hold": "held",
    "stopping": "stopping",
    "stop_requested": "stopping",
    "killing": "stopping",
    "parking": "parking",
    "parked": "parked",
    "unparked": "starting",
    "exited": "finished",
    "finished": "finished",
    "completed": "finished",
    "stopped": "finished",
    "trainer_exited": "finished",
    "failed": "failed",
    "failed_to_start": "failed",
    "crashed": "failed",
    "stale": "failed",
    "fatal": "gave up",
    "gave_up": "gave up",
    "give_up": "gave up",
}
_STATE_STYLES = {
    "starting": "cyan",
    "running": "bold green",
    "restarting": "bold red",
    "degraded": "bold yellow",
    "held": "bold yellow",
    "stopping": "yellow",
    "parking": "yellow",
    "parked": "yellow",
    "finished": "bold green",
    "failed": "bold red",
    "gave up": "bold red",
}


def display_state(event: str, detail: str = "", previous: str | None = None) -> str | None:
    """The state the live display shows for an ``on_state`` call (None: leave it as it is)."""
    state = _STATES.get(event.lower())
    if state == "starting" and (previous == "restarting" or "restart" in detail or "attempt" in detail):
        return "restarting"
    if state == "finished" and event.lower() == "trainer_exited" and "status 0" not in detail:
        return "failed"
    return state


def _decision_style(decision: Any) -> tuple[str, str]:
    """(tag, rich style) of a decision in the feed."""
    action = decision.action
    kind = getattr(action, "kind", "?")
    if decision.suppressed:
        return "", "dim"
    if kind == MISSING_METRIC:
        return "WARNING", "bold yellow"
    if kind in ("give_up",) or (kind == "stop" and getattr(action, "give_up", False)):
        return "GIVE UP", "bold red"
    if kind == "rollback":
        return "ROLLBACK", "bold magenta"
    if kind == "restart":
        return "RESTART", "bold red"
    if kind == "stop":
        return "STOP", "bold yellow"
    return "", ""


@dataclass(frozen=True)
class _Position:
    """Where the live display shows training: epoch (0-based, None before the first), batch done, step."""

    epoch: int | None
    batch: int
    step: int
    done_in_epoch: bool  # the position is an epoch's end


class PlainDisplay:
    """One line per event on ``stream``; trainer output passed through unchanged."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.epochs: int | None = None
        self.time_lost = 0.0
        # Commands whose decision line is printed and whose ack has not come: cmd -> count.
        # Their ack gets no line of its own unless it is late (an operator's command still does).
        self._announced: dict[str, int] = {}

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def on_record(self, record: Record) -> None:
        if isinstance(record, BatchRecord):
            return
        if isinstance(record, StartRecord):
            self.epochs = record.epochs
        elif isinstance(record, AckRecord):
            if record.cmd in _HOUSEKEEPING:
                return
            pending = self._announced.get(record.cmd, 0)
            if pending:
                self._announced[record.cmd] = pending - 1
                if not record.late:
                    return  # the decision line said it
        line = describe_record(record, self.epochs)
        if line is not None:
            self._print(line)

    def on_decision(self, decision: Any) -> None:
        if is_housekeeping(decision):
            return
        command = getattr(decision, "command", None)
        cmd = getattr(command, "cmd", None)
        if command is not None and not decision.suppressed and isinstance(cmd, str):
            self._announced[cmd] = self._announced.get(cmd, 0) + 1
        self._print(format_decision(decision))

    def on_output_line(self, line: str) -> None:
        self._print(line)

    def on_state(self, event: str, detail: str) -> None:
        self._print(f"lrsup: {detail}")

    def on_note(self, text: str) -> None:
        self._print(f"lrsup: {text}")

    def on_time_lost(self, seconds: float) -> None:
        """A line when the total grows by a second or more (a restart or rollback happened)."""
        if seconds >= self.time_lost + 1.0:
            self._print(f"lrsup: {format_duration(seconds)} lost to restarts and rollbacks so far")
        self.time_lost = max(self.time_lost, seconds)

    def close(self) -> None:
        self.stream.flush()


class LiveDisplay:
    """A rich Live area (refreshed at most 4 times a second) under the scrolling output.

    Args:
        console: rich Console (default: a new one on stdout).
        start: start the Live area now (tests render ``renderable()`` without it).
        feed_size: how many decisions and events the feed shows.
    """

    def __init__(self, console: Any = None, *, start: bool = True, feed_size: int = 5) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = console if console is not None else Console()
        self._lock = threading.Lock()  # epoch/decision/state updates vs. the refresh thread
        self.state = "starting"
        self.state_detail = ""
        self.time_lost: float | None = None
        self.optimizer: str | None = None
        self.lr_schedule: str | None = None
        self.lr_owner: str | None = None  # the script's LR callbacks in this fit, as the LR row shows them
        self.multiplier: float | None = None
        self.epochs: int | None = None
        self.steps_per_epoch: int | None = None
        self.fit = 1  # the current fit (stage): the last start record's
        self.initial_epoch = 0
        self.epoch: int | None = None
        self.batch = 0
        self.step = 0
        self.lr: float | None = None
        self.metrics: dict = {}
        self.best: dict[str, tuple[float, int]] = {}  # key -> (best value, 1-based epoch)
        self.history: dict[str, list[float]] = {}  # key -> values per epoch record (bounded)
        self.lr_history: list[float] = []
        self.decisions: tuple[str, ...] = ()  # the last five decision lines, oldest first
        self.feed: tuple[tuple[str, str], ...] = ()  # (text, style), newest first
        self.feed_size = feed_size
        # The last batch record, kept as is: the one assignment a batch record costs.
        self._last_batch: BatchRecord | None = None
        self._epoch_done = False  # the last progress record was an epoch end
        # Speed: (record time, step) when the current epoch began, and the last epoch's rates.
        self._anchor: tuple[float, int] | None = None
        self._step_rate: float | None = None
        self._epoch_seconds: float | None = None
        self._live = Live(
            console=self.console,
            get_renderable=self.renderable,
            refresh_per_second=4,
            auto_refresh=True,
            transient=False,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._started = False
        if start:
            self._live.start()
            self._started = True

    # -- the interface ------------------------------------------------------------
    @property
    def batch_metrics(self) -> dict:
        last = self._last_batch
        return dict(last.logs) if last is not None else {}

    def on_record(self, record: Record) -> None:
        if type(record) is BatchRecord:  # the hot path: no lock, no work
            self._last_batch = record
            return
        if isinstance(record, BatchRecord):
            self._last_batch = record
            return
        with self._lock:
            if isinstance(record, StartRecord):
                self._on_start(record)
            elif isinstance(record, EpochRecord):
                self._on_epoch(record)
            elif isinstance(record, AckRecord):
                if record.lr is not None:
                    self.lr = record.lr
            multiplier = getattr(record, "multiplier", None)
            if isinstance(multiplier, (int, float)) and not isinstance(multiplier, bool):
                self.multiplier = float(multiplier)
        # Never print while holding the lock: the refresh thread renders under the console's lock.
        if isinstance(record, (StartRecord, EpochRecord, ErrorRecord, EndRecord)):
            line = describe_record(record, self.epochs)
            if line is not None:
                style = "red" if isinstance(record, ErrorRecord) else "dim"
                self._print(f"lrsup: {line}", style)

    def on_decision(self, decision: Any) -> None:
        text = format_decision(decision)
        tag, style = _decision_style(decision)
        epoch = getattr(decision, "epoch", None)
        where = f"ep {epoch + 1:<3} " if isinstance(epoch, int) else " " * 7
        housekeeping = is_housekeeping(decision)
        with self._lock:
            self.decisions = (*self.decisions, text)[-5:]
            if not housekeeping:
                self._push_feed(f"{where}{tag + ' ' if tag else ''}{text}", style)
        if not housekeeping:
            self._print(f"lrsup: {text}", style or "bold")

    def on_output_line(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, emoji=False)

    def on_state(self, event: str, detail: str) -> None:
        with self._lock:
            previous = self.state
            state = display_state(event, detail, previous)
            if state is not None:
                self.state = state
            self.state_detail = detail
            if state is not None and state != previous and state in ("restarting", "degraded", "held", "gave up"):
                self._push_feed(f"{state.upper()} {detail}", _STATE_STYLES[state])
        style = (
            _STATE_STYLES.get(state or "", "")
            if state in ("restarting", "degraded", "held", "failed", "gave up")
            else ""
        )
        self._print(f"lrsup: {detail}", style)

    def on_time_lost(self, seconds: float) -> None:
        """The total seconds lost to restarts and rollbacks so far (shown in the state line)."""
        self.time_lost = float(seconds)

    def on_note(self, text: str) -> None:
        """A sentence about who owns the LR: in the feed and above the live area."""
        with self._lock:
            self._push_feed(f"{' ' * 7}{text}", "cyan")
        self._print(f"lrsup: {text}", "cyan")

    def close(self) -> None:
        if self._started:
            self._started = False
            self._live.stop()

    # -- updates (under the lock) -------------------------------------------------
    def _print(self, text: str, style: str = "") -> None:
        self.console.print(text, style=style or None, highlight=False, markup=False, emoji=False)

    def _push_feed(self, text: str, style: str) -> None:
        self.feed = ((text, style), *self.feed)[: self.feed_size]

    def _on_start(self, record: StartRecord) -> None:
        self.fit = record.fit
        self.epochs, self.steps_per_epoch = record.epochs, record.steps_per_epoch
        self.initial_epoch, self.step = record.initial_epoch, record.step
        self.lr = record.lr if record.lr is not None else self.lr
        self.optimizer, self.lr_schedule = record.optimizer, record.lr_schedule
        callbacks = [] if record.lr_callbacks_left_out else list(record.lr_callbacks)
        self.lr_owner = f"script: {', '.join(callbacks)}" if callbacks else None
        self.epoch, self.batch, self._last_batch, self._epoch_done = None, 0, None, False
        self._anchor = (record.time, record.step) if record.time else None
        self._epoch_seconds = None

    def _on_epoch(self, record: EpochRecord) -> None:
        self.epoch, self.step, self.metrics = record.epoch, record.step, dict(record.logs)
        self.batch = self.steps_per_epoch or self.batch
        self._epoch_done = True
        if record.lr is not None:
            self.lr = record.lr
        if self._anchor is not None and record.time:
            seconds, steps = record.time - self._anchor[0], record.step - self._anchor[1]
            if seconds > 0:
                self._epoch_seconds = seconds
                if steps > 0:
                    self._step_rate = steps / seconds
        self._anchor = (record.time, record.step) if record.time else None
        shown = record.epoch + 1
        history = dict(self.history)
        best = dict(self.best)
        for key, value in record.logs.items():
            history[key] = [*history.get(key, ()), value][-4 * SPARK_WIDTH :]
            direction = metric_direction(key)
            if direction is None or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            old = best.get(key)
            if old is None or (value < old[0] if direction == "min" else value > old[0]):
                best[key] = (value, shown)
        self.history, self.best = history, best
        if self.lr is not None:
            self.lr_history = [*self.lr_history, self.lr][-4 * SPARK_WIDTH :]

    # -- rendering (the refresh thread, at most 4 times a second) -----------------
    def _render(self) -> Any:
        return self.renderable()

    def renderable(self) -> Any:
        """The Live area as one rich renderable (a Group)."""
        from rich.console import Group

        with self._lock:
            parts = [self._header(), self._progress()]
            metrics = self._metrics_table()
            trends = self._trends()
            feed = self._feed()
        from rich.table import Table

        if metrics is not None and trends is not None and self.console.width >= 110:
            pair = Table.grid(padding=(0, 4))
            pair.add_column()
            pair.add_column()
            pair.add_row(metrics, trends)
            parts.append(pair)
        else:
            parts.extend(p for p in (metrics, trends) if p is not None)
        if feed is not None:
            parts.append(feed)
        return Group(*parts)

    def _header(self) -> Any:
        from rich.text import Text

        text = Text()
        text.append("lrsup ", style="bold")
        text.append(f"● {self.state}", style=_STATE_STYLES.get(self.state, "bold"))
        if self.fit > 1:  # the stage: the script's number of fits is known only when it ends
            text.append(f"  fit {self.fit}/?", style="bold magenta")
        if self.optimizer:
            text.append(f"  {self.optimizer}", style="cyan")
        if self.time_lost:
            text.append(f"  lost {format_duration(self.time_lost)} to restarts/rollbacks", style="yellow")
        if self.state_detail:
            text.append(f"  {self.state_detail}", style="dim")
        text.no_wrap, text.overflow = True, "ellipsis"
        return text

    def _progress(self) -> Any:
        """Two bars: the run (epochs done of N, ETA) and the epoch (batch of steps_per_epoch, speed, ETA)."""
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        grid.add_column(justify="right", style="bold", no_wrap=True)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True)
        where = self._position()
        spe = self.steps_per_epoch
        if spe and where.batch > spe:  # steps_per_epoch was a guess (or the epoch is longer): grow the bar
            spe = where.batch
        rate = self._rate()
        bar_width = max(10, min(40, self.console.width - 60))
        if self.epochs:
            grid.add_row(*self._run_row(where, spe, rate, bar_width))
        grid.add_row(*self._epoch_row(where, spe, rate, bar_width))
        return grid

    def _position(self) -> _Position:
        """Where training is: the last batch record when it is newer than the last epoch end."""
        last, epoch = self._last_batch, self.epoch
        if last is not None and (epoch is None or last.epoch > epoch or (last.epoch == epoch and not self._epoch_done)):
            return _Position(last.epoch, last.batch + 1, last.step, done_in_epoch=False)
        return _Position(epoch, self.batch, self.step, done_in_epoch=self._epoch_done)

    def _rate(self) -> float | None:
        """Steps per second since the epoch began, on the records' own clock; else the last epoch's."""
        rate, last, anchor = self._step_rate, self._last_batch, self._anchor
        if last is None or anchor is None or not last.time or last.step <= anchor[1]:
            return rate
        seconds = last.time - anchor[0]
        if seconds > 0 and (seconds > 0.5 or rate is None):
            return (last.step - anchor[1]) / seconds
        return rate

    def _run_row(self, where: _Position, spe: int | None, rate: float | None, width: int) -> tuple[Any, ...]:
        from rich.progress_bar import ProgressBar

        epochs = self.epochs or 0
        done = 0 if where.epoch is None else where.epoch + (1 if where.done_in_epoch else 0)
        in_epoch = spe and not where.done_in_epoch and where.epoch is not None
        fraction = where.batch / spe if in_epoch and spe else 0.0
        remaining = max(0.0, epochs - done - fraction)
        if self._epoch_seconds:
            run_eta: float | None = remaining * self._epoch_seconds
        elif spe and rate:
            run_eta = remaining * spe / rate
        else:
            run_eta = None
        bar = ProgressBar(total=epochs, completed=min(epochs, done + fraction), width=width)
        eta = f"  ETA {format_duration(run_eta)}" if run_eta is not None and done < epochs else ""
        return "run", bar, f"{done}/{epochs} epochs{eta}"

    def _epoch_row(self, where: _Position, spe: int | None, rate: float | None, width: int) -> tuple[Any, ...]:
        from rich.progress_bar import ProgressBar

        label = f"epoch {'–' if where.epoch is None else where.epoch + 1}"
        speed = f"  {rate:.1f} steps/s" if rate else ""
        if not spe:
            return label, "", f"batch {where.batch} (step {where.step}){speed}"
        epoch_eta = (spe - where.batch) / rate if rate and not where.done_in_epoch else None
        eta = f"  ETA {format_duration(epoch_eta)}" if epoch_eta is not None else ""
        bar = ProgressBar(total=spe, completed=min(where.batch, spe), width=width)
        return label, bar, f"{where.batch}/{spe} (step {where.step}){speed}{eta}"

    def _lr_text(self) -> str:
        text = fmt_lr(self.lr, "?")
        if self.multiplier is not None and self.multiplier != 1.0:
            text += f" x{self.multiplier:.4g}"
        if self.lr_schedule:
            text += f" ({self.lr_schedule})"
        if self.lr_owner:
            text += f" [{self.lr_owner}]"
        return text

    def _metrics_table(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        last = self._last_batch
        batch_logs = last.logs if last is not None else {}
        epoch_logs = self.metrics
        names: list[str] = []
        for key in (*epoch_logs, *batch_logs):
            base = key.removeprefix("val_") if key.startswith("val_") and key[4:] in (*epoch_logs, *batch_logs) else key
            if base not in names and base not in _LR_KEYS:
                names.append(base)
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
        table.add_column("metric", no_wrap=True)
        table.add_column("last batch", justify="right", no_wrap=True)
        table.add_column("epoch", justify="right", no_wrap=True)
        table.add_column("best", justify="right", no_wrap=True)
        table.add_column("@", justify="right", no_wrap=True, style="dim")
        table.add_column("val", justify="right", no_wrap=True)
        table.add_column("best", justify="right", no_wrap=True)
        table.add_column("@", justify="right", no_wrap=True, style="dim")

        def cell(value: Any) -> Any:
            if value is None:
                return ""
            return Text(_num(value), style="bold red") if _is_bad(value) else _num(value)

        def best(key: str) -> tuple[str, str]:
            found = self.best.get(key)
            if found is None:
                return ("–" if key in epoch_logs else "", "")
            return _num(found[0]), str(found[1])

        for name in names:
            val_key = f"val_{name}" if not name.startswith("val_") else None
            row = [name, cell(batch_logs.get(name)), cell(epoch_logs.get(name)), *best(name)]
            if val_key is not None and val_key in epoch_logs:
                row += [cell(epoch_logs.get(val_key)), *best(val_key)]
            else:
                row += ["", "", ""]
            table.add_row(*row)
        table.add_row(Text("lr", style="bold"), "", Text(self._lr_text(), style="cyan"), "", "", "", "", "")
        return table

    def _trends(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        series: list[tuple[str, list[float], bool]] = [
            (key, self.history[key], False) for key in ("loss", "val_loss") if key in self.history
        ]
        if self.lr_history:
            series.append(("lr (log)", self.lr_history, True))
        if not series:
            return None
        count = max(len(values) for _, values, _ in series)
        first = self.initial_epoch + 1 if count <= SPARK_WIDTH else None
        title = f"last {min(count, SPARK_WIDTH)} epochs" + (f" from {first}" if first and count > 1 else "")
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
        table.add_column("trend", no_wrap=True)
        table.add_column(title, no_wrap=True)
        table.add_column("now", justify="right", no_wrap=True)
        table.add_column("range", no_wrap=True, style="dim")
        for label, values, log in series:
            window = values[-SPARK_WIDTH:]
            finite = [v for v in window if isinstance(v, (int, float)) and math.isfinite(v)]
            span = f"{_num(min(finite), 3)}–{_num(max(finite), 3)}" if finite else ""
            style = "magenta" if log else "green"
            table.add_row(label, Text(sparkline(window, log=log), style=style), _num(values[-1]), span)
        return table

    def _feed(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        if not self.feed:
            return None
        lines: list[Any] = [Text("decisions (newest first)", style="bold")]
        for text, style in self.feed:
            line = Text(f"  {text}", style=style)
            line.no_wrap, line.overflow = True, "ellipsis"
            lines.append(line)
        return Group(*lines)


def make_display(stream: TextIO | None = None) -> Display:
    """LiveDisplay on a terminal, PlainDisplay otherwise."""
    stream = stream if stream is not None else sys.stdout
    return LiveDisplay() if stream.isatty() else PlainDisplay(stream)
