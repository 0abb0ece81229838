"""Reading a run back, finished or running, in one pass.

``runinfo`` (RunInfo and load_run), ``reader`` and ``rows`` (the files' lines as
rows), ``outcome`` (how the run ended), ``interruptions`` (restarts, resumes,
rollbacks), ``runs`` (finding runs: ``lrsup ls``/``status``).
"""
