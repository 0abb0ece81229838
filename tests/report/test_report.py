"""write_report, render_terminal and compare_runs."""

from __future__ import annotations

import base64
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rich.console import Console

from lrsup.supervisor.history.runinfo import load_run
from lrsup.supervisor.report.write import (
    compare_runs,
    fmt_duration,
    fmt_num,
    render_compare_terminal,
    render_terminal,
    write_report,
)

from .conftest import XSS, RunWriter, write_synthetic_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (asserting it is a PNG)."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


class _Page(HTMLParser):
    """Collects what the HTML checks need: tags with their attributes, and table ids."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse_html(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


# ---------------------------------------------------------------------------


def test_write_report_writes_three_files(synthetic_run: Path) -> None:
    paths = write_report(synthetic_run)
    assert paths.md == synthetic_run / "report.md" and paths.md.is_file()
    assert paths.html == synthetic_run / "report.html" and paths.html.is_file()
    assert paths.png == synthetic_run / "report.png"
    width, height = png_size(paths.png.read_bytes())
    assert 900 <= width <= 2000 and 450 <= height <= 1200
    assert not list(synthetic_run.glob(".*.tmp"))  # written through a temporary, renamed
    assert any("incomplete" in n for n in paths.notes)


def test_markdown_holds_outcome_best_epoch_decisions_and_config(synthetic_run: Path) -> None:
    md = write_report(synthetic_run).md.read_text()
    assert "| **Outcome** | stopped: training stopped early by a policy (exit status 0) |" in md
    assert "| **Best epoch** | 9 (val_loss = 0.97, min) |" in md  # protocol epoch 8, people's 9th
    assert "| **Restarts / rollbacks** | 0 / 1, ≈ 10.5s lost |" in md
    assert "val_loss did not improve on 1.3 by 1e-4 for 2 epochs" in md
    assert "applied late at step 453" in md
    assert "refused: optimizer SGD has no hyperparameter 'beta_9'" in md
    assert "suppressed: cooldown" in md
    assert "| rollback | 6 | +1m 00s |" in md and "≈ 10.5s" in md
    assert "![loss, val_loss and learning rate per epoch](report.png)" in md
    assert '"patience": 2' in md
    # Raw HTML in a reason is neutralised, and the pipe does not break the table.
    assert "<script>" not in md and "&lt;script&gt;" in md and "\\| pipe" in md


def test_html_is_self_contained_and_escaped(synthetic_run: Path) -> None:
    paths = write_report(synthetic_run)
    text = paths.html.read_text()
    page = parse_html(text)
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) == 1
    src = imgs[0]["src"]
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == paths.png.read_bytes()
    # Nothing is fetched from anywhere: no scripts, no stylesheets, no other src/href.
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    assert not [a for t, a in page.tags for k in ("src", "href") if k in a and not a[k].startswith("data:")]
    ids = {a.get("id") for _, a in page.tags}
    assert {"summary", "decisions", "metrics", "interruptions", "events", "config"} <= ids
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text and XSS not in text
    assert "val_loss did not improve for 2 epochs" in text
    assert '<tr class="late">' in text


def test_report_of_a_run_with_only_a_start(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "fresh")
    w.start(0.0)
    w.close()
    paths = write_report(w.root)
    md = paths.md.read_text()
    assert "No epoch was recorded." in md and "No decision was taken." in md
    png_size(paths.png.read_bytes())


def test_the_report_says_who_owned_the_lr(tmp_path: Path) -> None:
    from lrsup.supervisor.protocol.journal import LrOwnerEntry, journal_line

    w = RunWriter(tmp_path / "owned")
    w.start(0.0)
    w.epoch(10.0, 0, 0.1, loss=1.0)
    detail = (
        "at the start of fit 1: the script's own LR logic keeps the LR (ReduceLROnPlateau): lrsup's plateau stands down"
    )
    note = journal_line(
        LrOwnerEntry("stand_down", "script", 1, ("ReduceLROnPlateau",), ("plateau",), None, None, 0, detail), 0.0
    )
    w.journal(1.0, "lr_owner", **{k: v for k, v in note.items() if k not in ("v", "type", "time")})
    w.close()
    info = load_run(w.root)
    assert [e.event for e in info.lr_owner] == ["stand_down"]
    md = write_report(w.root).md.read_text()
    assert "LR owner" in md and "plateau stands down" in md


def test_without_matplotlib_md_and_html_are_still_written(synthetic_run: Path, monkeypatch) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    paths = write_report(synthetic_run)
    assert paths.png is None
    assert any("pip install matplotlib" in n for n in paths.notes)
    md = paths.md.read_text()
    assert "](report.png)" not in md
    assert "pip install matplotlib" in md  # the note says how to get the figure
    assert "<img" not in paths.html.read_text()


def test_render_terminal(synthetic_run: Path) -> None:
    console = Console(record=True, width=140, color_system=None)
    render_terminal(load_run(synthetic_run), console)
    out = console.export_text()
    assert "lrsup report: 20260101T000000Z-train" in out
    assert "stopped: training stopped early by a policy" in out
    assert "9 (val_loss = 0.97, min)" in out
    assert "<script>alert('x')</script>" in out  # shown literally, not taken as rich markup
    assert "applied late at step 453" in out
    assert "rollback" in out and "≈ 10.5s" in out


def test_compare_runs(tmp_path: Path) -> None:
    a = write_synthetic_run(tmp_path / "a" / "run")
    b = tmp_path / "b" / "run"
    w = RunWriter(b)
    w.start(0.0, lr=0.01, epochs=4)
    for e in range(4):
        w.epoch(10.0 * (e + 1), e, 0.01, loss=1.0 - 0.1 * e, val_loss=1.2 - 0.1 * e)
    w.end(41.0, "completed", 3)
    w.close()
    calls: list[tuple[int, int]] = []
    paths = compare_runs([a, b], tmp_path / "cmp", progress=lambda d, t: calls.append((d, t)))
    assert paths.md == tmp_path / "cmp" / "compare.md"
    md = paths.md.read_text()
    # Same directory names: told apart by their parent.
    assert "| a/run | stopped | val_loss = 0.97 | 9 | val_loss = 1 | 5 | 2m 02s |" in md
    assert "| b/run | completed | val_loss = 0.9 | 4 | val_loss = 0.9 | 0 | 41.0s |" in md
    width, height = png_size(paths.png.read_bytes())
    assert width > 900 and height > 600
    assert calls[-1][0] == calls[-1][1]
    console = Console(record=True, width=140, color_system=None)
    render_compare_terminal(paths.infos, console)
    out = console.export_text()
    assert "a/run" in out and "b/run" in out and "completed" in out
    with pytest.raises(ValueError, match="at least one"):
        compare_runs([], tmp_path / "cmp")


def test_formatting_helpers() -> None:
    assert fmt_num(float("nan")) == "NaN" and fmt_num(None) == "–" and fmt_num(0.000123456) == "0.0001235"
    assert fmt_duration(12.34) == "12.3s" and fmt_duration(245) == "4m 05s"
    assert fmt_duration(7380) == "2h 03m" and fmt_duration(None) == "–"


# ---------------------------------------------------------------------------
# A real browser opens report.html.


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium); the headless-browser check of report.html is skipped",
)
@pytest.mark.timeout(120)
def test_report_html_in_headless_chromium(synthetic_run: Path, tmp_path: Path) -> None:
    html_path = write_report(synthetic_run).html
    # A copy with a probe that records whether the inlined PNG decoded (the report itself has no script).
    probe = tmp_path / "probe.html"
    probe.write_text(
        html_path.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load',function(){var i=document.getElementById('plot');"
            "var p=document.createElement('div');p.id='probe';"
            "p.textContent='decoded='+(i.complete&&i.naturalWidth>0)+' width='+i.naturalWidth;"
            "document.body.appendChild(p);});</script></body>",
        )
    )
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r'<img id="plot"[^>]*src="data:image/png;base64,', dom)
    m = re.search(r'<div id="probe">decoded=(\w+) width=(\d+)</div>', dom)
    assert m is not None, dom[-2000:]
    assert m.group(1) == "true" and int(m.group(2)) > 900
    assert '<table id="decisions">' in dom and "val_loss did not improve for 2 epochs" in dom
    assert "<script>alert" not in dom.split('<div id="probe">')[0]  # the reason stayed text


def test_importing_the_reporting_modules_loads_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "import lrsup.supervisor.report.write, lrsup.supervisor.report.export, lrsup.supervisor.run.notify\n"
        "heavy = [m for m in ('matplotlib', 'tensorboard', 'tensorflow', 'keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
