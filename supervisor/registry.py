"""Finds policy classes: by registered name (entry points) or by ``module:Class``.

Policies are registered in the ``lrsup.policies`` entry-point group; lrsup's own
are declared in its pyproject.toml the same way a plug-in would::

    [project.entry-points."lrsup.policies"]
    plateau = "lrsup.policies.plateau:Plateau"

Discovery happens only when asked (:func:`available`, :func:`load_policy_class`),
never at import, and each call reads the installed distributions afresh.

Example::

    available()                          # {"plateau": "lrsup.policies.plateau:Plateau", ...}
    load_policy_class("plateau")         # <class 'lrsup.policies.plateau.Plateau'>
    load_policy_class("my_pkg.policies:Warmup")
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect

from lrsup.policies.base import Policy

GROUP = "lrsup.policies"


class PolicyLoadError(ValueError):
    """A policy spec names something that cannot be loaded as a Policy class."""


class UnknownPolicyError(PolicyLoadError):
    """No policy is registered under that name; the message lists the known ones."""


class DuplicatePolicyError(PolicyLoadError):
    """Two distributions register different classes under the same policy name."""


def _origin(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown distribution"
    return f"distribution {dist.name} {dist.version}"


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry_point in importlib.metadata.entry_points(group=GROUP):
        other = found.get(entry_point.name)
        if other is None:
            found[entry_point.name] = entry_point
        elif other.value != entry_point.value:
            raise DuplicatePolicyError(
                f"policy name {entry_point.name!r} is registered twice in entry-point group {GROUP!r}: "
                f"{other.value!r} ({_origin(other)}) and {entry_point.value!r} ({_origin(entry_point)}); "
                "uninstall one, or use the 'module:Class' spec of the one you mean"
            )
    return found


def available() -> dict[str, str]:
    """Registered policy names and their ``module:Class`` specs, sorted by name.

    Example::

        available()  # {"plateau": "lrsup.policies.plateau:Plateau"}

    Raises:
        DuplicatePolicyError: two distributions register one name for different classes.
    """
    return {name: ep.value for name, ep in sorted(_entry_points().items())}


def load_policy_class(spec: str) -> type[Policy]:
    """The Policy subclass named by ``spec``: a registered name, or ``module:Class``.

    Example::

        load_policy_class("plateau")
        load_policy_class("lrsup.policies.plateau:Plateau")

    Args:
        spec: str. A name from :func:`available`, or ``"package.module:Class"``
            (``Class`` may be dotted: ``module:Outer.Inner``).

    Raises:
        UnknownPolicyError: ``spec`` is not ``module:Class`` and no policy has that name.
        PolicyLoadError: the module cannot be imported, has no such attribute, or the
            attribute is not a Policy subclass with a ``name``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise PolicyLoadError(f"a policy spec must be a non-empty string; got {spec!r}")
    if ":" in spec:
        target, origin = spec, f"policy spec {spec!r}"
    else:
        entry_points = _entry_points()
        entry_point = entry_points.get(spec)
        if entry_point is None:
            names = ", ".join(sorted(entry_points)) or "(none installed)"
            raise UnknownPolicyError(f"unknown policy {spec!r}; available: {names} (or give a 'module:Class' spec)")
        target, origin = entry_point.value, f"policy {spec!r} ({entry_point.value!r}, {_origin(entry_point)})"
    cls = _import(target, origin)
    if not (inspect.isclass(cls) and issubclass(cls, Policy)):
        raise PolicyLoadError(f"{origin} is {cls!r}, not a subclass of lrsup.policies.Policy")
    if cls is Policy or not cls.name:
        raise PolicyLoadError(f"{origin}: class {cls.__qualname__} does not set a policy `name`")
    return cls


def _import(target: str, origin: str) -> object:
    module_name, _, attr_path = target.partition(":")
    module_name = module_name.strip()
    attr_path = attr_path.split("[", 1)[0].strip()  # entry-point extras: "mod:Cls [extra]"
    if not module_name or not attr_path:
        raise PolicyLoadError(f"{origin}: expected 'module:Class'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolicyLoadError(f"{origin}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PolicyLoadError(f"{origin}: module {module_name!r} has no attribute {attr_path!r}") from None
    return obj
