"""The supervisor's own files in a run directory.

``layout`` (the directory and its checks), ``statefile`` (supervisor.json),
``snapshot`` (snapshot.json, the engine's state for a fast resume) and ``recovery``
(torn tails and replay of what was written).
"""
