"""The ``lrsup`` command line: typer commands, each a thin wrapper around one service call.

``main`` is the entry point; ``app`` holds the typer application and the shared
arguments; one module per family of commands.
"""
