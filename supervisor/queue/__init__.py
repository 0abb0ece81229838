"""The queue of runs: many supervised runs a night, on this machine or a Ray cluster.

Modules: ``store`` (the SQLite queue: QueueStore, Entry, Status), ``daemon`` (the scheduler, a
state machine with its system calls passed in), ``local`` (those system calls on this machine),
``night`` (``queue run``'s loop: lock, signals, journal, notification), ``sweep`` (grid
expansion, pure), ``group`` (a group's members and best run), ``ray_backend`` (the Ray
placement, imported only for ``--ray``).
"""
