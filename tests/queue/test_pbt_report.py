"""``report --group`` of a PBT group draws the lineage: population.png (a PNG: one line per member,
the best curve, an arrow per exploit), embedded in population.md and linked from compare.md."""

from __future__ import annotations

from pathlib import Path

from lrsup.supervisor import protocol
from lrsup.supervisor.history.runinfo import load_run
from lrsup.supervisor.queue.group import COMPARE_SECTION, write_population

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_member(run_dir: Path, val_losses: list[float], exploit: dict | None = None) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / protocol.CONFIG_FILE).write_text("{}")
    records = [{"v": 1, "type": "start", "time": 1.0, "step": 0, "lr": 0.1, "steps_per_epoch": 10, "epochs": 4}]
    records += [
        {"v": 1, "type": "epoch", "time": 2.0 + n, "epoch": n, "step": 10 * (n + 1), "lr": 0.1, "logs": {"val_loss": v}}
        for n, v in enumerate(val_losses)
    ]
    (run_dir / protocol.METRICS_FILE).write_text("".join(protocol.dumps(r) + "\n" for r in records))
    journal = []
    if exploit is not None:
        journal.append({"v": 1, "type": "event", "time": 3.5, "event": "exploit", "detail": "copied", **exploit})
    (run_dir / protocol.JOURNAL_FILE).write_text("".join(protocol.dumps(j) + "\n" for j in journal))


def test_the_population_figure_is_a_png_embedded_in_the_group_report(tmp_path: Path):
    runs = tmp_path / "runs"
    write_member(runs / "q1-a", [0.9, 0.5, 0.4, 0.3])
    exploit = {"peer": str(runs / "q1-a"), "checkpoint": "epoch-0002", "at_epoch": 2,
               "old": {"lr": 0.1}, "new": {"lr": 0.05}}  # fmt: skip
    write_member(runs / "q2-b", [2.0, 1.9, 0.5, 0.45], exploit)
    out = tmp_path / "report"
    out.mkdir()
    (out / "compare.md").write_text("# Runs compared\n")
    infos = [load_run(runs / "q1-a"), load_run(runs / "q2-b")]
    events, curve, note = write_population(out, infos, "val_loss", "min")
    assert note is None and [(e["member"], e["donor"], e["epoch"]) for e in events] == [("q2-b", "q1-a", 2)]
    assert curve[-1] == (4, 0.3, "q1-a")
    png = (out / "population.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    assert "![" in (out / "population.md").read_text() and "(population.png)" in (out / "population.md").read_text()
    write_population(out, infos, "val_loss", "min")  # a second report links it once
    compare = (out / "compare.md").read_text()
    assert compare.count(COMPARE_SECTION) == 1 and "(population.png)" in compare
