"""What a person reads after the run: report.md, report.png, report.html, the
terminal summary, comparisons (``write``, ``markdown``, ``html``, ``plot``,
``terminal``, ``tables``, ``series``), and exports as CSV or TensorBoard (``export``).

Example::

    from lrsup.supervisor.report import write_report
    paths = write_report("runs/20260101T000000Z-train")
"""

from lrsup.supervisor.report.export import export_csv, export_tensorboard, write_csv
from lrsup.supervisor.report.write import (
    ComparePaths,
    ReportPaths,
    compare_runs,
    render_compare_terminal,
    render_terminal,
    write_report,
)

__all__ = [
    "ComparePaths",
    "ReportPaths",
    "compare_runs",
    "export_csv",
    "export_tensorboard",
    "render_compare_terminal",
    "render_terminal",
    "write_csv",
    "write_report",
]
