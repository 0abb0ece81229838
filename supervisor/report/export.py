"""Export a run's numbers: a CSV of epochs, and TensorBoard event files.

Example::

    export_csv("runs/20260101T000000Z-train", "train.csv")
    export_tensorboard("runs/20260101T000000Z-train", "tb/train")   # then: tensorboard --logdir tb

**CSV.** One row per epoch record, in the order they were written. Columns:
``epoch, step, lr``, then every metric key seen in any epoch (``loss``, other
training metrics sorted, ``val_loss``, other ``val_*`` sorted), then ``time``
(Unix seconds). ``epoch`` is **0-based, as in the protocol and as Keras passes it
to callbacks** (Keras prints ``Epoch 1/10`` for epoch 0); the reports count from
1. After a rollback or restart an epoch number appears again: every row is what
the trainer recorded, the later row is the one that was kept. A metric missing
from an epoch is an empty cell; NaN is written ``nan``. A metric whose name
clashes with a fixed column (``lr``, ``time``...) is written as ``logs.<name>``.

**TensorBoard.** The layout of ``keras.callbacks.TensorBoard``, so that
TensorBoard overlays training and validation curves: ``<log_dir>/train`` holds
``epoch_<metric>`` for every training metric and ``epoch_learning_rate`` (step =
epoch, 0-based, as Keras writes it), ``batch_<metric>`` and
``batch_learning_rate`` for every batch record (step = the optimizer step; thinned
evenly beyond ``MAX_TB_BATCH_POINTS``, as TensorBoard keeps only 1,000 per tag), and
the decisions as text (``lrsup_decisions``, one entry per epoch that had any, and
``lrsup_summary``); ``<log_dir>/validation`` holds ``epoch_<metric>`` for every
``val_<metric>``. Events are written with the ``tensorboard`` package's record
writer and protos, never through TensorFlow; ``tensorboard`` is optional (the
``tensorboard`` extra) and without it ``MissingExtraError`` says how to install it.
A new export replaces files of an earlier lrsup export in the same folders.
"""

from __future__ import annotations

import csv
import math
import os
import socket
import time as _time
from pathlib import Path
from typing import Any, TextIO

from lrsup.supervisor import protocol
from lrsup.supervisor.history.runinfo import (
    Decision,
    MissingExtraError,
    ProgressFn,
    RunInfo,
    fmt_lr,
    iter_records,
    load_run,
)
from lrsup.supervisor.protocol.jsonl import ReadStats
from lrsup.supervisor.protocol.wire import BatchRecord, EpochRecord

CSV_FIXED = ("epoch", "step", "lr")
CSV_TRAILING = ("time",)
# Event files this module writes end with this suffix; only these are replaced by a new export.
EVENT_SUFFIX = ".lrsup"
# Batch records written to TensorBoard by default (evenly thinned beyond this).
MAX_TB_BATCH_POINTS = 50_000


# ---------------------------------------------------------------------------
# CSV


def csv_columns(info: RunInfo) -> tuple[list[str], dict[str, str]]:
    """The header, and for each metric key its column name (renamed on a clash with a fixed column)."""
    fixed = set(CSV_FIXED) | set(CSV_TRAILING)
    names = {k: (f"logs.{k}" if k in fixed else k) for k in info.metric_keys}
    return [*CSV_FIXED, *names.values(), *CSV_TRAILING], names


def write_csv(info: RunInfo, stream: TextIO) -> int:
    """Write the epoch table of ``info`` as CSV to ``stream``; return the number of rows."""
    header, names = csv_columns(info)
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(header)
    for row in info.epochs:
        cells: list[Any] = [row.epoch, row.step, _cell(row.lr)]
        cells += [_cell(row.logs.get(k)) for k in names]
        cells.append(_cell(row.time))
        writer.writerow(cells)
    return len(info.epochs)


def export_csv(
    run_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    progress: ProgressFn | None = None,
    info: RunInfo | None = None,
) -> Path:
    """Write the run's epochs to ``out_path`` as CSV (see the module docstring); return the path.

    Args:
        run_dir: the run directory.
        out_path: the CSV file to write (its folder must exist).
        progress: callable(bytes_read, total_bytes) or None, while the run is read.
        info: RunInfo or None; pass one already loaded to skip reading the files again.

    Raises:
        RunInfoError: ``run_dir`` is not a run directory.
    """
    info = info if info is not None else load_run(run_dir, progress=progress)
    out = Path(out_path)
    with open(out, "w", newline="", encoding="utf-8") as f:
        write_csv(info, f)
    return out


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


# ---------------------------------------------------------------------------
# TensorBoard


def _tensorboard() -> dict[str, Any]:
    """The parts of the tensorboard package used here, imported without TensorFlow."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.plugins.scalar import metadata as scalar_metadata
        from tensorboard.plugins.text import metadata as text_metadata
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError:
        raise MissingExtraError("exporting to TensorBoard", "tensorboard", "tensorboard") from None
    return {
        "event_pb2": event_pb2,
        "summary_pb2": summary_pb2,
        "tensor_pb2": tensor_pb2,
        "tensor_shape_pb2": tensor_shape_pb2,
        "types_pb2": types_pb2,
        "scalar_metadata": scalar_metadata,
        "text_metadata": text_metadata,
        "RecordWriter": RecordWriter,
    }


class EventWriter:
    """Writes scalar and text summaries to one TensorBoard event file, synchronously.

    The tensorboard package's own ``EventFileWriter`` reaches for TensorFlow's file
    system when TensorFlow is installed; this writer uses its ``RecordWriter`` on a
    plain file instead, so exporting never imports TensorFlow.

    Args:
        log_dir: Path, the folder of the event file (created if missing).
    """

    def __init__(self, log_dir: Path) -> None:
        self._tb = _tensorboard()
        log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(_time.time()):010d}.{socket.gethostname()}.{os.getpid()}{EVENT_SUFFIX}"
        self.path = log_dir / name
        self._file = open(self.path, "wb")
        self._writer = self._tb["RecordWriter"](self._file)
        self._described: set[str] = set()
        self._write(self._tb["event_pb2"].Event(wall_time=_time.time(), file_version="brain.Event:2"))

    def scalars(self, values: dict[str, float], step: int, wall_time: float) -> None:
        """Scalars at one step, in one event, as TensorFlow 2's ``tf.summary.scalar`` writes each
        (a 0-d tensor with the scalar plugin's metadata)."""
        tb = self._tb
        shape = tb["tensor_shape_pb2"].TensorShapeProto()
        double = tb["types_pb2"].DT_DOUBLE
        items = [
            (tag, tb["tensor_pb2"].TensorProto(dtype=double, double_val=[float(v)], tensor_shape=shape))
            for tag, v in values.items()
        ]
        self._values(items, step, wall_time, tb["scalar_metadata"])

    def text(self, tag: str, text: str, step: int, wall_time: float) -> None:
        """A Markdown text summary (TensorBoard's Text tab)."""
        tb = self._tb
        tensor = tb["tensor_pb2"].TensorProto(
            dtype=tb["types_pb2"].DT_STRING,
            string_val=[text.encode("utf-8")],
            tensor_shape=tb["tensor_shape_pb2"].TensorShapeProto(),
        )
        self._values([(tag, tensor)], step, wall_time, tb["text_metadata"])

    def _values(self, items: list[tuple[str, Any]], step: int, wall_time: float, plugin: Any) -> None:
        if not items:
            return
        summary_pb2 = self._tb["summary_pb2"]
        values = []
        for tag, tensor in items:
            value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
            if tag not in self._described:  # TensorBoard reads a tag's metadata from its first value
                value.metadata.CopyFrom(plugin.create_summary_metadata(display_name=tag, description=""))
                self._described.add(tag)
            values.append(value)
        self._write(
            self._tb["event_pb2"].Event(
                wall_time=wall_time or _time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
            )
        )

    def _write(self, event: Any) -> None:
        self._writer.write(event.SerializeToString())

    def close(self) -> None:
        if not self._file.closed:
            self._writer.flush()
            self._file.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def export_tensorboard(
    run_dir: str | os.PathLike[str],
    log_dir: str | os.PathLike[str],
    *,
    progress: ProgressFn | None = None,
    max_batch_points: int | None = MAX_TB_BATCH_POINTS,
) -> list[Path]:
    """Write the run as TensorBoard event files under ``log_dir`` (see the module docstring).

    Args:
        run_dir: the run directory.
        log_dir: the folder to write ``train/`` and ``validation/`` into (created if missing).
        progress: callable(bytes_read, total_bytes) or None, over the two reads of the run.
        max_batch_points: int or None. Batch records are thinned evenly (every k-th) to at
            most this many; None writes every one. TensorBoard itself keeps 1,000 points
            per scalar tag unless told otherwise, and a million batch records take minutes to write.

    Returns:
        The event files written.

    Raises:
        MissingExtraError: the tensorboard package is not installed.
        RunInfoError: ``run_dir`` is not a run directory.
    """
    if max_batch_points is not None and max_batch_points < 1:
        raise ValueError(f"max_batch_points must be >= 1 or None, got {max_batch_points!r}")
    _tensorboard()  # fail before reading anything
    root, out = Path(run_dir), Path(log_dir)
    metrics = root / protocol.METRICS_FILE
    size = _size(metrics) + _size(root / protocol.JOURNAL_FILE)
    total = size + _size(metrics)
    info = load_run(root, progress=None if progress is None else (lambda done, _t: progress(done, total)))
    seen = info.batches.seen
    stride = 1 if max_batch_points is None or seen <= max_batch_points else math.ceil(seen / max_batch_points)
    for sub in ("train", "validation"):
        _remove_old_exports(out / sub)
    with EventWriter(out / "train") as train, EventWriter(out / "validation") as val:
        second = None if progress is None else (lambda done, _t: progress(min(total, size + done), total))
        for record in iter_records(metrics, ReadStats(), second, batch_stride=stride):
            if isinstance(record, BatchRecord):
                values = {f"batch_{k}": v for k, v in record.logs.items()}
                if record.lr is not None:
                    values["batch_learning_rate"] = record.lr
                train.scalars(values, record.step, record.time)
            elif isinstance(record, EpochRecord):
                values = {f"epoch_{k}": v for k, v in record.logs.items() if not k.startswith("val_")}
                if record.lr is not None:
                    values["epoch_learning_rate"] = record.lr
                train.scalars(values, record.epoch, record.time)
                val.scalars(
                    {f"epoch_{k[4:]}": v for k, v in record.logs.items() if k.startswith("val_")},
                    record.epoch,
                    record.time,
                )
        _write_decisions(train, info)
        last_epoch = info.final.epoch if info.final else 0
        train.text("lrsup_summary", _summary_markdown(info), last_epoch, info.last_time or 0.0)
        files = [train.path, val.path]
    return files


def _write_decisions(writer: EventWriter, info: RunInfo) -> None:
    """One Markdown list per epoch that had decisions (TensorBoard keeps one text per step and tag)."""
    by_epoch: dict[int, list[Decision]] = {}
    for d in info.policy_decisions:
        by_epoch.setdefault(d.epoch if d.epoch is not None else 0, []).append(d)
    for epoch, decisions in sorted(by_epoch.items()):
        lines = [_decision_markdown(d) for d in decisions]
        wall = next((d.time for d in decisions if d.time), 0.0)
        writer.text("lrsup_decisions", "\n".join(lines), epoch, wall)


def _decision_markdown(d: Decision) -> str:
    lr = f", new LR {fmt_lr(d.lr)}" if d.lr is not None and math.isfinite(d.lr) else ""
    where = f"epoch {d.epoch + 1}" if d.epoch is not None else "unknown epoch"
    step = f" (step {d.step})" if d.step is not None else ""
    policy = f" by `{d.policy}`" if d.policy else ""
    return f"- **{d.label}**{policy} at {where}{step}{lr}: {d.reason or 'no reason given'} — *{d.status}*"


def _summary_markdown(info: RunInfo) -> str:
    lines = [f"**{info.name}**: {info.outcome.value}" + (f" ({info.outcome_detail})" if info.outcome_detail else "")]
    if info.best is not None and info.monitor:
        lines.append(f"- best epoch {info.best.epoch + 1}: {info.monitor} = {info.best.logs[info.monitor]:.4g}")
    lines.append(f"- decisions: {len(info.active_decisions)}")
    lines.append(f"- restarts / rollbacks: {len(info.restarts)} / {len(info.rollbacks)}")
    if info.wall_time is not None:
        lines.append(f"- wall time: {info.wall_time:.0f} s")
    return "\n".join(lines)


def _remove_old_exports(folder: Path) -> None:
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith("events.out.tfevents.") and entry.name.endswith(EVENT_SUFFIX) and entry.is_file():
            entry.unlink()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
