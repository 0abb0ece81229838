"""Reading a run back, finished or running, in one pass.

``runinfo`` (RunInfo and load_run), ``reader`` and ``rows`` (the files' lines as
rows), ``outcome`` (how the run ended), ``interruptions`` (restarts, resumes,
rollbacks), ``runs`` (finding runs and their cheap summaries: ``lrsup ls``/``status``).

What the rest of lrsup reads a run through is exported here::

    from lrsup.supervisor.history import load_run, resolve_run, summarize
"""

from lrsup.supervisor.history.rows import fmt_lr, monitor_direction
from lrsup.supervisor.history.runinfo import EpochRow, Outcome, RunInfo, RunInfoError, load_run
from lrsup.supervisor.history.runs import RunRefError, RunSummary, list_runs, resolve_run, summarize

__all__ = [
    "EpochRow",
    "Outcome",
    "RunInfo",
    "RunInfoError",
    "RunRefError",
    "RunSummary",
    "fmt_lr",
    "list_runs",
    "load_run",
    "monitor_direction",
    "resolve_run",
    "summarize",
]
