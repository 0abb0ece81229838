"""One live supervised run: the runner's loop and the IO at its edges.

``runner`` wires config, run directory, trainer, engine and display together;
``lifecycle`` is the run's one state machine and ``restart`` its restart rule;
``process`` the system-call seam; ``follower``/``inotify`` read metrics.jsonl;
``commands`` writes control.jsonl and the journal; ``operator`` reads requests.jsonl;
``resume`` takes over a run whose supervisor died; ``notify`` webhooks and commands;
``launch`` the trainer's command line and environment; ``range_test`` is ``lrsup lr-find``.
"""
