"""``lrsup sweep``'s grid: from ``--grid NAME=V1,V2`` options to one combination per run (pure).

A plain ``NAME`` is a script argument: each combination appends ``--NAME VALUE`` to the
script's arguments. A ``config.`` prefix varies an lrsup setting instead:
``config.plateau.patience=2,5`` sets ``patience`` of the ``plateau`` policy in the stack,
``config.run.grace_period=30`` a key of the ``[run]`` table. Values are parsed as TOML
would read them (int, float, true/false, else a string).

Example::

    axes = [parse_axis("lr=0.001,0.01"), parse_axis("config.plateau.patience=2,5")]
    for point in expand(axes):          # 4 points, the last axis varying fastest
        script_args(["--epochs", "30"], point), config_overrides(point)
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

CONFIG_PREFIX = "config."
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_TABLES = ("agent", "run", "notify")


class GridError(ValueError):
    """A ``--grid`` option or an override that cannot be used; the message names it."""


@dataclass(frozen=True)
class Axis:
    """One ``--grid`` option: a name and its values (in the order given)."""

    name: str
    values: tuple[Any, ...]

    @property
    def is_config(self) -> bool:
        return self.name.startswith(CONFIG_PREFIX)


def parse_value(text: str) -> Any:
    """``"0.01"`` -> 0.01, ``"3"`` -> 3, ``"true"`` -> True, anything else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_axis(option: str) -> Axis:
    """``"lr=0.001,0.01"`` as an Axis; GridError for a missing ``=``, a bad name or no value."""
    name, sep, values = option.partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name):
        raise GridError(f"--grid takes NAME=V1,V2,... (got {option!r})")
    if name.startswith(CONFIG_PREFIX) and len(name.split(".")) < 3:
        raise GridError(f"--grid {name}: a config setting is config.TABLE.KEY or config.POLICY.KEY")
    parts = [v.strip() for v in values.split(",")]
    if not any(parts) or "" in parts:
        raise GridError(f"--grid {name}: empty value in {values!r}")
    return Axis(name, tuple(parse_value(v) for v in parts))


def expand(axes: list[Axis]) -> list[dict[str, Any]]:
    """Every combination, as {name: value}, the last axis varying fastest; GridError on a repeated name."""
    names = [a.name for a in axes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise GridError(f"--grid {repeated[0]} is given twice")
    return [dict(zip(names, combo)) for combo in itertools.product(*(a.values for a in axes))]


def script_args(base: list[str], point: dict[str, Any]) -> list[str]:
    """``base`` with ``--NAME VALUE`` appended for each script parameter of ``point``."""
    extra: list[str] = []
    for name, value in point.items():
        if not name.startswith(CONFIG_PREFIX):
            extra += [f"--{name}", _arg_text(value)]
    return [*base, *extra]


def config_overrides(point: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    """The lrsup settings of ``point``: {("plateau", "patience"): 2, ...}."""
    return {tuple(n[len(CONFIG_PREFIX) :].split(".")): v for n, v in point.items() if n.startswith(CONFIG_PREFIX)}


def apply_overrides(table: dict[str, Any], overrides: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    """A copy of a raw lrsup configuration table (as in lrsup.toml) with ``overrides`` set.

    ``("agent"|"run"|"notify", key...)`` sets a key of that table; ``(POLICY, key)`` sets a key
    of every ``[[policy]]`` whose ``use`` is POLICY (GridError when the stack has none).
    """
    out = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for k, v in table.items()}
    out["policy"] = [dict(p) for p in out.get("policy", [])]
    for path, value in overrides.items():
        head, rest = path[0], path[1:]
        if head in _TABLES:
            section = out.setdefault(head, {})
            if not isinstance(section, dict):
                raise GridError(f"{head} is not a table in the configuration, so {'.'.join(path)} cannot be set")
            _set(section, rest, value)
            continue
        targets = [p for p in out["policy"] if p.get("use") == head]
        if not targets:
            used = ", ".join(str(p.get("use")) for p in out["policy"]) or "none"
            raise GridError(f"config.{'.'.join(path)}: no policy {head!r} in the stack (policies: {used})")
        for policy in targets:
            _set(policy, rest, value)
    return out


def _set(table: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        table[key] = dict(table.get(key) or {})
        table = table[key]
    table[path[-1]] = value


def _arg_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def label(point: dict[str, Any]) -> str:
    """A short name for a combination: ``lr=0.01,optimizer=adam`` -> ``lr0.01-optimizeradam``."""
    parts = [f"{name.split('.')[-1]}{_arg_text(v)}" for name, v in point.items()]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "-".join(parts))[:60] or "run"


def to_toml(table: dict[str, Any]) -> str:
    """A raw lrsup configuration table as TOML (scalars, lists of scalars, tables, ``[[policy]]``)."""
    lines: list[str] = []
    for key, value in table.items():
        if not isinstance(value, (dict, list)) or (isinstance(value, list) and not _is_tables(value)):
            lines.append(f"{_key(key)} = {_toml_value(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            lines += ["", f"[{_key(key)}]"] + [f"{_key(k)} = {_toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and _is_tables(value):
            for item in value:
                lines += ["", f"[[{_key(key)}]]"] + [f"{_key(k)} = {_toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def _is_tables(value: list) -> bool:
    return bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise GridError(f"cannot write {value!r} as TOML")
