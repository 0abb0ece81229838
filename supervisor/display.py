"""What the user sees while a run is supervised.

Two displays with one small interface (``on_record``, ``on_decision``,
``on_output_line``, ``on_state``, ``close``):

- ``LiveDisplay`` (a terminal): a rich Live area with epoch and step progress,
  the current learning rate, the latest metrics, the last five decisions and the
  run state; the trainer's output scrolls above it.
- ``PlainDisplay`` (a pipe or file): one line per event, e.g.
  ``epoch 3/15 loss=0.41 val_loss=0.43 lr=0.01`` and
  ``decision plateau scale_lr 0.005: val_loss did not improve for 3 epochs``.

``make_display()`` picks by ``sys.stdout.isatty()``. Both are cheap on batch
records: numbers are stored, nothing is printed or rendered per batch.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO

from lrsup.supervisor.protocol import (
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


def format_metrics(logs: dict) -> str:
    """``loss=0.41 val_loss=0.43`` (4 significant digits, Keras's order)."""
    return " ".join(f"{k}={v:.4g}" for k, v in logs.items())


def format_decision(decision: Any) -> str:
    """``decision plateau scale_lr 0.005: <reason>`` (the new LR when there is one)."""
    action = decision.action
    value = decision.lr if decision.lr is not None else getattr(action, "lr", None)
    what = f"{action.kind} {value:.4g}" if value is not None else action.kind
    if action.kind == "set_hparam":
        what = f"set_hparam {action.name}={action.value:.4g}"
    suppressed = f" [suppressed: {decision.suppressed}]" if decision.suppressed else ""
    return f"decision {action.policy or '?'} {what}{suppressed}: {action.reason}"


def describe_record(record: Record, epochs: int | None) -> str | None:
    """The one line a record deserves in the plain display (None: nothing to say)."""
    if isinstance(record, EpochRecord):
        total = f"/{epochs}" if epochs else ""
        lr = f" lr={record.lr:.4g}" if record.lr is not None else ""
        metrics = format_metrics(record.logs)
        return f"epoch {record.epoch + 1}{total}" + (f" {metrics}" if metrics else "") + lr
    if isinstance(record, StartRecord):
        opt = record.optimizer or "optimizer"
        lr = f" lr={record.lr:.4g}" if record.lr is not None else ""
        shape = f", {record.epochs} epochs" if record.epochs else ""
        shape += f" x {record.steps_per_epoch} steps" if record.steps_per_epoch else ""
        return f"training started: {opt}{lr}{shape}"
    if isinstance(record, AckRecord):
        late = " (late)" if record.late else ""
        lr = f" lr={record.lr:.4g}" if record.lr is not None else ""
        return f"applied {record.cmd} (seq {record.seq}) after step {record.step}{lr}{late}"
    if isinstance(record, ErrorRecord):
        which = f" {record.cmd} (seq {record.seq})" if record.cmd else ""
        return f"trainer error{which}: {record.message}"
    if isinstance(record, EndRecord):
        return f"training ended: {record.reason}"
    return None


class PlainDisplay:
    """One line per event on ``stream``; trainer output passed through unchanged."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.epochs: int | None = None

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def on_record(self, record: Record) -> None:
        if isinstance(record, BatchRecord):
            return
        if isinstance(record, StartRecord):
            self.epochs = record.epochs
        line = describe_record(record, self.epochs)
        if line is not None:
            self._print(line)

    def on_decision(self, decision: Any) -> None:
        self._print(format_decision(decision))

    def on_output_line(self, line: str) -> None:
        self._print(line)

    def on_state(self, event: str, detail: str) -> None:
        self._print(f"lrsup: {detail}")

    def close(self) -> None:
        self.stream.flush()


class LiveDisplay:
    """A rich Live area (refreshed at most 4 times a second) under the scrolling output."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = console if console is not None else Console()
        self.state = "starting"
        self.epochs: int | None = None
        self.steps_per_epoch: int | None = None
        self.initial_epoch = 0
        self.epoch: int | None = None
        self.batch = 0
        self.step = 0
        self.lr: float | None = None
        self.metrics: dict = {}
        self.batch_metrics: dict = {}
        self.decisions: tuple[str, ...] = ()  # the last five, replaced whole
        self._live = Live(
            console=self.console, get_renderable=self._render, refresh_per_second=4, transient=False
        )
        self._live.start()

    def on_record(self, record: Record) -> None:
        # Only attribute assignments here (new dicts, never mutated): the refresh thread renders.
        if isinstance(record, BatchRecord):
            self.epoch, self.batch, self.step = record.epoch, record.batch + 1, record.step
            self.lr = record.lr if record.lr is not None else self.lr
            self.batch_metrics = dict(record.logs)
            return
        if isinstance(record, StartRecord):
            self.epochs, self.steps_per_epoch = record.epochs, record.steps_per_epoch
            self.initial_epoch, self.lr, self.step = record.initial_epoch, record.lr, record.step
        elif isinstance(record, EpochRecord):
            self.epoch, self.step, self.metrics = record.epoch, record.step, dict(record.logs)
            self.batch = self.steps_per_epoch or self.batch
            self.lr = record.lr if record.lr is not None else self.lr
        elif isinstance(record, AckRecord) and record.lr is not None:
            self.lr = record.lr
        if isinstance(record, (StartRecord, EpochRecord, ErrorRecord, EndRecord)):
            line = describe_record(record, self.epochs)
            if line is not None:
                self.console.print(f"[dim]lrsup:[/] {line}", highlight=False, markup=True)

    def on_decision(self, decision: Any) -> None:
        text = format_decision(decision)
        self.decisions = (*self.decisions, text)[-5:]
        self.console.print(f"[bold]lrsup:[/] {text}", highlight=False, markup=False)

    def on_output_line(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, emoji=False)

    def on_state(self, event: str, detail: str) -> None:
        self.state = event
        self.console.print(f"lrsup: {detail}", highlight=False, markup=False)

    def close(self) -> None:
        self._live.stop()

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_column(justify="right", style="bold")
        grid.add_column()
        grid.add_column()
        done_epochs = 0 if self.epoch is None else self.epoch + (1 if self.batch == self.steps_per_epoch else 0)
        if self.epochs:
            bar = ProgressBar(total=self.epochs, completed=done_epochs, width=40)
            grid.add_row("epochs", bar, f"{done_epochs}/{self.epochs}")
        if self.steps_per_epoch:
            bar = ProgressBar(total=self.steps_per_epoch, completed=self.batch, width=40)
            grid.add_row("steps", bar, f"{self.batch}/{self.steps_per_epoch} (step {self.step})")
        grid.add_row("state", self.state, "")
        grid.add_row("lr", "?" if self.lr is None else f"{self.lr:.6g}", "")
        parts: list[Any] = [grid]
        rows = [("last batch", self.batch_metrics), ("last epoch", self.metrics)]
        names = list(dict.fromkeys(k for _, logs in rows for k in logs))
        if names:
            table = Table(box=None, padding=(0, 2))
            table.add_column("")
            for name in names:
                table.add_column(name, justify="right")
            for label, logs in rows:
                table.add_row(label, *(f"{logs[n]:.4g}" if n in logs else "" for n in names))
            parts.append(table)
        if self.decisions:
            parts.append(Text("last decisions", style="bold"))
            parts.extend(Text(f"  {d}") for d in self.decisions)
        return Group(*parts)


def make_display(stream: TextIO | None = None) -> Display:
    """LiveDisplay on a terminal, PlainDisplay otherwise."""
    stream = stream if stream is not None else sys.stdout
    return LiveDisplay() if stream.isatty() else PlainDisplay(stream)
