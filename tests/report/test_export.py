"""export_csv and export_tensorboard."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lrsup.supervisor.history.runinfo import MissingExtraError, load_run
from lrsup.supervisor.report.export import export_csv, export_tensorboard

from .conftest import FIRST, SECOND, SPE, RunWriter

HAS_TENSORBOARD = True
try:
    import tensorboard  # noqa: F401
except ImportError:
    HAS_TENSORBOARD = False


def test_csv_has_one_row_per_epoch_record_in_protocol_order(synthetic_run: Path, tmp_path: Path) -> None:
    out = export_csv(synthetic_run, tmp_path / "run.csv")
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header == ["epoch", "step", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "time"]
    assert len(body) == len(FIRST) + len(SECOND)
    # 0-based epochs, as the protocol writes them; the redone epoch 5 appears twice, in order.
    assert [int(r[0]) for r in body] == [0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10]
    assert body[0][:4] == ["0", str(SPE), "0.1", "2.0"]
    assert body[5][3] == "nan" and body[5][5] == "nan"  # the NaN epoch is kept
    assert float(body[-1][5]) == SECOND[-1][1]
    assert float(body[-1][-1]) > 1e9  # Unix time


def test_csv_missing_metrics_and_clashing_names(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run")
    w.start(0.0)
    w.epoch(10.0, 0, 0.1, loss=1.0, lr=0.1)  # a metric named like a fixed column
    w.epoch(20.0, 1, 0.1, loss=0.9, val_loss=1.1, auc=0.7)
    w.close()
    out = export_csv(w.root, tmp_path / "x.csv")
    rows = list(csv.reader(open(out, newline="")))
    assert rows[0] == ["epoch", "step", "lr", "loss", "auc", "logs.lr", "val_loss", "time"]
    assert rows[1][4] == "" and rows[1][5] == "0.1" and rows[1][6] == ""  # absent: empty cell


# ---------------------------------------------------------------------------
# TensorBoard

READ_BACK = textwrap.dedent("""
    import json, sys, types
    from lrsup.supervisor.report.export import export_tensorboard
    files = export_tensorboard(sys.argv[1], sys.argv[2])
    exported_without_tf = "tensorflow" not in sys.modules
    # Read back with TensorBoard's own reader, on its TensorFlow-free stub.
    sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util
    out = {"files": [str(f) for f in files], "exported_without_tf": exported_without_tf}
    for sub in ("train", "validation"):
        acc = ea.EventAccumulator(sys.argv[2] + "/" + sub, size_guidance={ea.TENSORS: 0})
        acc.Reload()
        tags = {}
        for tag in acc.Tags()["tensors"]:
            values = []
            for event in acc.Tensors(tag):
                value = tensor_util.make_ndarray(event.tensor_proto).item()
                values.append([event.step, value.decode() if isinstance(value, bytes) else value])
            tags[tag] = {"values": values,
                         "plugin": acc.SummaryMetadata(tag).plugin_data.plugin_name}
        out[sub] = tags
    out["tf_after_reading"] = "tensorflow" in sys.modules
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def tensorboard_export(tmp_path_factory) -> dict:
    if not HAS_TENSORBOARD:
        pytest.skip("tensorboard is not installed (pip install 'lrsup[tensorboard]')")
    from .conftest import write_synthetic_run

    base = tmp_path_factory.mktemp("tb")
    run = write_synthetic_run(base / "run")
    log_dir = base / "logs"
    result = subprocess.run(
        [sys.executable, "-c", READ_BACK, str(run), str(log_dir)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_tensorboard_export_never_imports_tensorflow(tensorboard_export: dict) -> None:
    assert tensorboard_export["exported_without_tf"]
    assert not tensorboard_export["tf_after_reading"]
    assert [Path(f).parent.name for f in tensorboard_export["files"]] == ["train", "validation"]


def test_tensorboard_epoch_scalars_read_back(tensorboard_export: dict) -> None:
    train, val = tensorboard_export["train"], tensorboard_export["validation"]
    assert train["epoch_loss"]["plugin"] == "scalars"
    losses = train["epoch_loss"]["values"]
    assert [s for s, _ in losses] == [0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10]
    assert losses[0][1] == 2.0 and math.isnan(losses[5][1]) and losses[-1][1] == SECOND[-1][0]
    val_losses = val["epoch_loss"]["values"]  # val_loss, under the validation run, as Keras lays it out
    assert val_losses[-1] == [10, SECOND[-1][1]]
    assert "epoch_accuracy" in val and "epoch_val_loss" not in val
    lrs = dict(train["epoch_learning_rate"]["values"])
    assert lrs[0] == 0.1 and lrs[10] == 0.0125


def test_tensorboard_batch_scalars_read_back(tensorboard_export: dict) -> None:
    train = tensorboard_export["train"]
    batch_lr = train["batch_learning_rate"]["values"]
    assert len(batch_lr) == 12 * (SPE // 10)  # every batch record, not the plot's downsample
    assert batch_lr[0] == [1, 0.1]
    batch_loss = train["batch_loss"]["values"]
    assert any(math.isnan(v) for _, v in batch_loss)


def test_tensorboard_decisions_as_text(tensorboard_export: dict) -> None:
    train = tensorboard_export["train"]
    assert train["lrsup_decisions"]["plugin"] == "text"
    texts = dict(train["lrsup_decisions"]["values"])
    assert set(texts) == {3, 5, 7, 8, 10}  # the epochs (0-based steps) that had decisions
    assert "**cut** by `plateau` at epoch 4" in texts[3] and "suppressed: cooldown" in texts[3]
    assert "applied late at step 453" in texts[8]
    assert "**rollback**" in texts[5]
    summary = train["lrsup_summary"]["values"][0][1]
    assert "stopped" in summary and "best epoch 9" in summary


def test_a_second_export_replaces_the_first(tmp_path: Path) -> None:
    if not HAS_TENSORBOARD:
        pytest.skip("tensorboard is not installed")
    w = RunWriter(tmp_path / "run")
    w.start(0.0)
    w.epoch(10.0, 0, 0.1, loss=1.0)
    w.close()
    export_tensorboard(w.root, tmp_path / "tb")
    foreign = tmp_path / "tb" / "train" / "events.out.tfevents.1.host.keras"
    foreign.write_bytes(b"")
    export_tensorboard(w.root, tmp_path / "tb")
    names = sorted(p.name for p in (tmp_path / "tb" / "train").iterdir())
    assert len(names) == 2 and foreign.name in names  # one of ours, and the file we did not write


def test_missing_tensorboard_says_how_to_install(synthetic_run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard.compat.proto", None)
    monkeypatch.setitem(sys.modules, "tensorboard.summary.writer.record_writer", None)
    with pytest.raises(MissingExtraError) as err:
        export_tensorboard(synthetic_run, tmp_path / "tb")
    assert "pip install 'lrsup[tensorboard]'" in str(err.value)
    assert not (tmp_path / "tb").exists()
    # The CSV needs nothing optional.
    assert export_csv(synthetic_run, tmp_path / "x.csv").is_file()
    assert load_run(synthetic_run).epochs


def _read_events(path: Path) -> list:
    """Events of a TFRecord file, decoded with tensorboard's protos (no TensorFlow involved)."""
    import struct

    from tensorboard.compat.proto import event_pb2

    data, events, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        events.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length]))
        pos += 12 + length + 4
    return events


def test_batch_records_are_thinned_evenly_beyond_the_cap(synthetic_run: Path, tmp_path: Path) -> None:
    if not HAS_TENSORBOARD:
        pytest.skip("tensorboard is not installed")
    train, _ = export_tensorboard(synthetic_run, tmp_path / "tb", max_batch_points=10)
    steps = [
        e.step for e in _read_events(train) if e.HasField("summary") and e.summary.value[0].tag.startswith("batch_")
    ]
    assert len(steps) == 10  # 60 batch records, every 6th
    assert steps[0] == 1 and steps[1] - steps[0] == 6 * 10
    epochs = [e.step for e in _read_events(train) if e.HasField("summary") and e.summary.value[0].tag == "epoch_loss"]
    assert len(epochs) == 12  # epochs are never thinned
    with pytest.raises(ValueError, match="max_batch_points"):
        export_tensorboard(synthetic_run, tmp_path / "tb", max_batch_points=0)
