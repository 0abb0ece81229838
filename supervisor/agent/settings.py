"""The agent's cadence: the ``Settings`` dataclass, its range checks and its loading.

Owns the defaults, ``check_setting`` (one rule per setting, errors quoting the value),
``load_settings`` (the "agent" object of ``run_dir/config.json``, then overrides) and
``AgentError``, the error for a run directory or config.json the agent cannot use.
Standard library only.

Example::

    settings = load_settings("runs/night-1", verdict_timeout=2.0)
    settings.batch_every                  # 10 unless config.json says otherwise
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from lrsup.supervisor.protocol.bounds import AGENT_BOUNDS, check_agent_setting
from lrsup.supervisor.protocol.wire import CONFIG_FILE, DEFAULT_BATCH_MIN_INTERVAL

DEFAULT_BATCH_EVERY = 10
# DEFAULT_BATCH_MIN_INTERVAL (0.1 s, from protocol): 10 steps of 1.5 ms would otherwise make 67 batch
# records a second (half a gigabyte of metrics.jsonl a day) and cost the trainer a percent or two of
# its time; at 0.1 s a day's run stays within the million records that resume and report are
# benchmarked on (docs/benchmarks.md, sections 1 and 3).
DEFAULT_VERDICT_TIMEOUT = 10.0
DEFAULT_HEARTBEAT_INTERVAL = 5.0
DEFAULT_CHECKPOINT_EVERY_EPOCHS = 1
DEFAULT_CHECKPOINT_EVERY_STEPS = 0
DEFAULT_KEEP_LAST = 3


class AgentError(RuntimeError):
    """A run directory or config.json the agent cannot use; the message names the path."""


@dataclass(frozen=True)
class Settings:
    """The agent's cadence.

    Args:
        batch_every: int, a batch record every this many optimizer steps (>= 1).
        verdict_timeout: float, seconds to wait at an epoch end for the verdict (>= 0; 0 does not wait).
        heartbeat_interval: float, seconds between heartbeat records (> 0).
        checkpoint_every_epochs: int, a checkpoint at the end of every this many epochs (0: off).
        checkpoint_every_steps: int, a checkpoint every this many optimizer steps (0: off).
        keep_last: int, checkpoints kept besides the retained ones (>= 1).
        batch_min_interval: float, seconds at least between two batch records (>= 0; 0: a record
            at every multiple of ``batch_every``). A multiple of ``batch_every`` that comes sooner
            after the last record is skipped, so records stay on multiples of ``batch_every``.
    """

    batch_every: int = DEFAULT_BATCH_EVERY
    verdict_timeout: float = DEFAULT_VERDICT_TIMEOUT
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    checkpoint_every_epochs: int = DEFAULT_CHECKPOINT_EVERY_EPOCHS
    checkpoint_every_steps: int = DEFAULT_CHECKPOINT_EVERY_STEPS
    keep_last: int = DEFAULT_KEEP_LAST
    batch_min_interval: float = DEFAULT_BATCH_MIN_INTERVAL  # last: positional construction keeps its meaning


def check_setting(name: str, value: Any, source: str) -> Any:
    """``value`` as setting ``name`` takes it; ValueError quoting it when out of range.

    The ranges are the protocol's (``lrsup.supervisor.protocol.bounds``), the same that the
    ``[agent]`` table and the ``configure`` command are checked against.

    Args:
        name: str, a ``Settings`` field (else TypeError).
        value: the value given.
        source: str, where it came from, for the message.
    """
    if name not in AGENT_BOUNDS:
        raise TypeError(f"unknown agent setting {name!r}")
    try:
        return check_agent_setting(name, value)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def load_settings(run_dir: str | os.PathLike[str], **overrides: Any) -> Settings:
    """Settings from the "agent" object of ``run_dir/config.json``, then ``overrides`` not None.

    Args:
        run_dir: str or PathLike, the run directory.
        **overrides: ``Settings`` fields; None means "not given".

    Raises:
        AgentError: config.json exists but cannot be read, is not JSON, or has a bad agent value.
        ValueError: an override is out of range (the message quotes it).
    """
    path = os.path.join(os.fspath(run_dir), CONFIG_FILE)
    values: dict[str, Any] = {}
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = None
    except OSError as exc:
        raise AgentError(f"cannot read {path}: {exc.strerror or exc}") from None
    if text is not None:
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise AgentError(f"{path} is not valid JSON: {exc}") from None
        section = config.get("agent", {}) if isinstance(config, dict) else {}
        if not isinstance(section, dict):
            raise AgentError(f"{path}: 'agent' must be an object, got {section!r}")
        for name in Settings.__dataclass_fields__:
            if name in section:
                try:
                    values[name] = check_setting(name, section[name], f"{path}: agent")
                except ValueError as exc:
                    raise AgentError(str(exc)) from None
    for name, value in overrides.items():
        if value is not None:
            values[name] = check_setting(name, value, "Agent")
    return Settings(**values)


LR_OWNERS = ("script", "lrsup")


def load_lr_owner(run_dir: str | os.PathLike[str] | None) -> str:
    """``[run] lr_owner`` from ``run_dir/config.json``: ``"script"`` (the default, also when it cannot
    be read: the script's own LR logic is left alone) or ``"lrsup"`` (lrsup takes the LR over)."""
    if run_dir is None:
        return "script"
    try:
        with open(os.path.join(os.fspath(run_dir), CONFIG_FILE), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return "script"
    run = config.get("run") if isinstance(config, dict) else None
    owner = run.get("lr_owner") if isinstance(run, dict) else None
    return owner if owner in LR_OWNERS else "script"
