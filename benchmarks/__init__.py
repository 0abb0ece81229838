"""lrsup's benchmarks: cost inside the trainer, reaction time, the supervisor at scale, outcomes.

Each module is one command (``python -m benchmarks.<name>``) that prints a table and
updates its section of docs/benchmarks.md; ``python -m benchmarks all`` runs them all.
They are benchmarks, not tests: ``--smoke`` makes each tiny (tests/benchmarks runs that).
"""
