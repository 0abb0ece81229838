"""``lrsup policies``: the table of installed policies, their settings and defaults.

Owns the listing of the ``lrsup.policies`` entry-point group (``registry``) and the
``name: type = default`` description of a policy's pydantic Settings. rich and the
registry are imported inside the command.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from lrsup.supervisor.cli.app import app

if TYPE_CHECKING:
    from pydantic import BaseModel


@app.command()
def policies() -> None:
    """List the installed policies with their settings and defaults."""
    raise typer.Exit(_policies())


def _policies() -> int:
    """Print a table of the registered policies; 1 if the registry itself is broken."""
    from rich.console import Console
    from rich.table import Table

    from lrsup.supervisor.registry import PolicyLoadError, available, load_policy_class

    console = Console()
    try:
        found = available()
    except PolicyLoadError as err:
        print(f"lrsup: {err}", file=sys.stderr)
        return 1
    table = Table(title="installed lrsup policies", show_lines=True)
    for column in ("name", "source", "settings (default)", "description"):
        table.add_column(column, overflow="fold")
    for name, spec in found.items():
        try:
            cls = load_policy_class(name)
        except PolicyLoadError as err:
            table.add_row(name, spec, "", f"[red]cannot load: {err}[/]")
            continue
        table.add_row(name, spec, _describe_settings(cls.Settings), _first_line(cls.__doc__))
    if not found:
        console.print("no policies installed (entry-point group 'lrsup.policies' is empty)")
        return 0
    console.print(table)
    return 0


def _describe_settings(model: type[BaseModel]) -> str:
    """One ``name: type = default`` line per field of a pydantic Settings model."""
    lines = []
    for field_name, field in model.model_fields.items():
        annotation = field.annotation
        type_name = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
        type_name = type_name or str(annotation).replace("typing.", "")
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        lines.append(f"{field_name}: {type_name} = {default}")
    return "\n".join(lines) or "(no settings)"


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n", 1)[0]
