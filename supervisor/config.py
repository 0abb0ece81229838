"""lrsup's configuration: the policy stack, the agent's and the run's settings.

Read from ``lrsup.toml`` (keys at top level) or from the ``[tool.lrsup]`` table of
pyproject.toml, validated once with pydantic (unknown keys refused everywhere), each
policy's table by that policy's own Settings model. Nothing is read or built at
import time: :func:`load_config` does it when the command runs.

Example lrsup.toml::

    [[policy]]
    use = "plateau"
    monitor = "val_loss"
    factor = 0.5
    patience = 2

    [agent]
    batch_every = 20

    [run]
    grace_period = 30.0

    [notify]                      # optional: lrsup.supervisor.run.notify
    webhook = "https://hooks.example.com/lrsup"
    on = ["end", "give_up"]

Without a ``policy`` key the stack is :data:`DEFAULT_STACK`; ``policy = []`` means no
policies at all.

Example (Python)::

    config = load_config(None, cwd=Path.cwd())
    engine = Engine.from_config(config)
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lrsup.policies.base import Policy, PolicySettings
from lrsup.supervisor.protocol.bounds import AGENT_BOUNDS
from lrsup.supervisor.protocol.wire import CONFIG_FILE, DEFAULT_BATCH_MIN_INTERVAL
from lrsup.supervisor.registry import PolicyLoadError, load_policy_class

CONFIG_NAME = "lrsup.toml"
PYPROJECT_NAME = "pyproject.toml"
DEFAULTS_SOURCE = "(built-in defaults)"

# The stack used when the configuration has no `policy` key: the unattended-night default,
# in priority order (the engine lets the first policy win; rollbacks beat LR changes anyway).
# - divergence: on NaN/inf, a loss spike, a collapse or an exploding val_loss, roll back to
#   the newest known-good checkpoint with a cut LR (x0.1 SGD, x0.5 Adam-family); give up
#   (exit status 3) after 5 rollbacks in 10 epochs.
# - lr_find (auto): an LR range test on the first 100 steps; when it suggests an LR more
#   than 10x the script's, or the script's LR is more than 10x its suggestion or at or past
#   where the test's loss blew up, go back to the start with the suggestion (rescues a run
#   that learns far too slowly, and one whose LR is far too high before it collapses).
# - plateau: halve the LR after 3 epochs without val_loss improvement, down to 1e-6.
# They rely on the agent's checkpoints: [agent] checkpoint_every_epochs = 1, keep_last = 3.
DEFAULT_STACK: list[dict[str, Any]] = [
    {"use": "divergence"},
    {"use": "lr_find", "mode": "auto"},
    {"use": "plateau", "monitor": "val_loss", "factor": 0.5, "patience": 3, "cooldown": 0, "min_lr": 1e-6},
]


# The longest interval or timeout accepted (a year, in seconds): far below what the platform
# bounds (threading.TIMEOUT_MAX, time_t, datetime), so no setting can overflow a wait or a timestamp.
MAX_SECONDS = 365 * 24 * 3600.0
# The deepest nesting of tables and arrays read from a TOML file (lrsup's own need 3).
MAX_DEPTH = 32

REDACTED = "***"
# scheme://userinfo@ : the userinfo (user, user:password, a token) is a credential.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s'\"]*@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL's credentials (``user:password@``) and each of ``secrets`` replaced by ``***``.

    The one redaction of lrsup: whatever it writes or prints that may hold a ``[notify]``
    value (journal, config.json, report, terminal, error messages) goes through it.

    Example::

        redact("POST https://ana:pw@hooks.example.com/x failed")  # 'POST https://***@hooks.example.com/x failed'
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


NotifyEvent = Literal["end", "give_up", "rollback", "restart"]
NOTIFY_EVENTS: tuple[str, ...] = ("end", "give_up", "rollback", "restart")


class NotifySettings(BaseModel):
    """The ``[notify]`` table. Unknown keys are refused.

    Args:
        webhook: http(s) URL or None. POSTed the JSON body of each selected event.
        command: str or None. A shell command run for each selected event.
        on: list of events to notify: ``end``, ``give_up``, ``rollback``, ``restart``.
        timeout: float seconds (> 0, at most 300) each delivery may take.
        secret: list of ``"webhook"`` / ``"command"``: values never written or printed
            (``***`` instead, the webhook's scheme and host kept). A URL's credentials
            (``https://user:password@host``) are always hidden.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook: HttpUrl | None = None
    command: str | None = Field(default=None, min_length=1)
    on: list[NotifyEvent] = Field(default_factory=lambda: list[NotifyEvent](("end", "give_up")))
    timeout: float = Field(default=5.0, gt=0, le=300)
    secret: list[Literal["webhook", "command"]] = Field(default_factory=list)

    def secrets(self) -> list[str]:
        """The values to hide: the fields marked secret, and the webhook's credentials."""
        out = []
        if self.webhook is not None:
            parts = urlsplit(str(self.webhook))
            if "webhook" in self.secret:
                out.append(str(self.webhook))
                out.append(str(self.webhook).rstrip("/"))
            if "@" in parts.netloc:
                out.append(parts.netloc.rsplit("@", 1)[0])
        if self.command is not None and "command" in self.secret:
            out.append(self.command)
        return [s for s in out if s and s not in ("/", "@")]

    def redact(self, text: str) -> str:
        """``text`` without this table's secrets (see :func:`redact`)."""
        return redact(text, self.secrets())

    def redacted(self) -> dict[str, Any]:
        """The table as JSON with its secrets replaced (what config.json and reports show)."""
        data = self.model_dump(mode="json", exclude={"secret"} if not self.secret else None)
        if data.get("webhook") is not None:
            parts = urlsplit(data["webhook"])
            host = parts.netloc.rsplit("@", 1)[-1]
            shown = f"{parts.scheme}://{host}/{REDACTED}" if "webhook" in self.secret else redact(data["webhook"])
            data["webhook"] = shown
        if data.get("command") is not None and "command" in self.secret:
            data["command"] = REDACTED
        return data

    @property
    def enabled(self) -> bool:
        return (self.webhook is not None or self.command is not None) and bool(self.on)


class AgentSettings(BaseModel):
    """How the trainer-side agent behaves (the ``[agent]`` table).

    Args:
        batch_every: int. Write a batch record every this many batches (>= 1). Default 10.
        batch_min_interval: float. Seconds at least between two batch records (>= 0): a
            multiple of ``batch_every`` that comes sooner is skipped. Default 0.1 (at most 10
            records a second, whatever the step time); 0 records every ``batch_every`` steps.
        verdict_timeout: float. Seconds the agent waits at each epoch end for the
            supervisor's verdict (>= 0; 0: no wait). Default 10.0.
        heartbeat_interval: float. Seconds between heartbeat records (> 0). Default 5.0.
        Intervals and timeouts are at most ``threading.TIMEOUT_MAX`` (the platform's longest
        wait, about 9.2e9 s on Linux); counts at most 2**63 - 1.
        checkpoint_every_epochs: int. Save a checkpoint at the end of every this many
            epochs (>= 0; 0: off). Default 1: rollbacks need somewhere to go.
        checkpoint_every_steps: int. Save a checkpoint every this many optimizer steps
            (>= 0; 0: off). Default 0.
        keep_last: int. Checkpoints kept on disk besides those the supervisor asks to
            retain (the known-good and the best) (>= 1). Default 3.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The types here; the ranges are the protocol's one rule (protocol/bounds.py), checked below.
    batch_every: int = Field(10, strict=True)
    batch_min_interval: float = Field(DEFAULT_BATCH_MIN_INTERVAL, strict=True)
    verdict_timeout: float = Field(10.0, strict=True)
    heartbeat_interval: float = Field(5.0, strict=True)
    checkpoint_every_epochs: int = Field(1, strict=True)
    checkpoint_every_steps: int = Field(0, strict=True)
    keep_last: int = Field(3, strict=True)

    @field_validator("*")
    @classmethod
    def _in_range(cls, value: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None  # a field validator's
        bound = AGENT_BOUNDS[info.field_name]  # the value is quoted by the error's formatter
        if not bound.admits(value):
            raise ValueError(f"must be {bound.describe()}")
        return value if bound.integer else float(value)


class RunSettings(BaseModel):
    """How the supervisor runs the trainer (the ``[run]`` table).

    Args:
        grace_period: float. Seconds the trainer gets to exit after a stop before it is
            killed (> 0). Default 10.0.
        poll_interval: float. Period, in seconds, of the file follower's polling
            fallback (> 0). Default 0.05.
        max_restarts: int. Restarts of a dead or hung trainer allowed within
            ``restart_window`` before the run is given up (>= 0; 0 never restarts).
            Default 5.
        restart_window: float. Seconds over which restarts are counted (> 0). Default 3600.
        backoff_base: float. Seconds before the first restart; doubled for each further
            restart within the window (> 0). Default 5.
        backoff_cap: float. Longest wait before a restart (>= backoff_base). Default 300.
        hang_timeout: float. Seconds without any record or heartbeat before the trainer
            is killed as hung and restarted (> 0). Default 120.
        stall_timeout: float. Seconds with heartbeats but no step progress (counted from
            the first batch of an attempt) before the trainer is killed as stalled (> 0).
            A slow trainer whose batches keep coming is never killed. Default 1800.
        stop_timeout: float. Seconds an operator's graceful stop (``lrsup stop``) waits for
            the trainer to finish its epoch before forcing it (> 0). Default 120.
        start_timeout: float. Seconds from starting the trainer to its start record (the
            first ``fit``) before it is killed as hung before training and restarted
            (>= 0; 0: never). Covers imports, data loading and model building, which no
            heartbeat covers. Default 1800.
        snapshot_interval: float. Seconds between two snapshots of the policies' state
            (snapshot.json), from which ``lrsup resume`` continues without replaying the
            whole run (>= 0; 0 writes none: resume replays every record). Default 30.
        lr_owner: ``"script"`` or ``"lrsup"``. Who owns the learning rate in a fit where the
            script moves it itself (its ReduceLROnPlateau or LearningRateScheduler callbacks,
            its optimizer's LearningRateSchedule, a callback that assigns the LR). ``"script"``
            (default): the script's own LR logic keeps it; lrsup's LR-tuning policies (plateau,
            schedules, warm restarts, the LR range test) stand down for that fit, journaled
            once; the rescues (divergence) stay on. ``"lrsup"``: lrsup takes the LR over; the
            script's LR callbacks are left out of each fit (the script's list is untouched),
            and a LearningRateSchedule is driven through lrsup's multiplier.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    grace_period: float = Field(10.0, strict=True, gt=0, allow_inf_nan=False, le=MAX_SECONDS)
    poll_interval: float = Field(0.05, strict=True, gt=0, allow_inf_nan=False, le=MAX_SECONDS)
    max_restarts: int = Field(5, strict=True, ge=0)
    restart_window: float = Field(3600.0, gt=0, allow_inf_nan=False, le=MAX_SECONDS)
    backoff_base: float = Field(5.0, gt=0, allow_inf_nan=False, le=MAX_SECONDS)
    backoff_cap: float = Field(300.0, gt=0, allow_inf_nan=False, le=MAX_SECONDS)
    hang_timeout: float = Field(120.0, gt=0, allow_inf_nan=False, le=MAX_SECONDS)
    stall_timeout: float = Field(1800.0, gt=0, allow_inf_nan=False, le=MAX_SECONDS)
    stop_timeout: float = Field(120.0, gt=0, allow_inf_nan=False, le=MAX_SECONDS)
    start_timeout: float = Field(1800.0, ge=0, allow_inf_nan=False, le=MAX_SECONDS)
    snapshot_interval: float = Field(30.0, ge=0, allow_inf_nan=False, le=MAX_SECONDS)
    lr_owner: Literal["script", "lrsup"] = "script"

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> "RunSettings":
        if self.backoff_cap < self.backoff_base:
            raise ValueError(f"backoff_cap ({self.backoff_cap!r}) must be >= backoff_base ({self.backoff_base!r})")
        return self


class Mutation(BaseModel):
    """How one hyperparameter is perturbed by a population's explore step (Ray's ``hyperparam_mutations``).

    Exactly one of: ``values`` (a list: resample from it, else move to a neighbouring value),
    ``log_uniform`` or ``uniform`` (``[low, high]``: resample from the range, else multiply
    the donor's value by one of ``[population] factors``).
    """

    model_config = ConfigDict(extra="forbid")

    values: list[float] | None = Field(None, min_length=1)
    log_uniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Mutation":
        given = [k for k in ("values", "log_uniform", "uniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of values, log_uniform, uniform (got {given or 'none'})")
        for kind in ("log_uniform", "uniform"):
            span = getattr(self, kind)
            if span is not None and not (span[0] < span[1] and (kind == "uniform" or span[0] > 0)):
                raise ValueError(
                    f"{kind} must be [low, high] with low < high (and low > 0 for log_uniform), got {list(span)}"
                )
        return self


class PopulationSettings(BaseModel):
    """The ``[population]`` table: population-based training over a sweep's runs (``lrsup sweep --pbt``).

    Args:
        interval: int. Epochs between a member's exploit rounds (Ray's ``perturbation_interval``). Default 4.
        quantile: float. The bottom and top fractions of the live members (Ray's ``quantile_fraction``). Default 0.25.
        metric: str. The epoch log compared across members. Default ``val_loss``.
        mode: ``auto``, ``min`` or ``max``. ``auto`` infers it from ``metric``, as every policy does.
        mutations: table NAME -> Mutation. ``lr`` or an optimizer hyperparameter (``momentum``,
            ``weight_decay``...). Default: ``lr`` log-uniform in [1e-5, 1].
        resample_probability: float. The chance to resample instead of perturbing. Default 0.25 (Ray's).
        factors: list of float. The perturbation factors. Default ``[1.2, 0.8]`` (Ray's).
        burn_in: int. Epochs before a member's first round. Default 0.
        seed: int. The seed of the coordinator's choices (donor, perturbation). Default 0.
    """

    model_config = ConfigDict(extra="forbid")

    interval: int = Field(4, strict=True, ge=1)
    quantile: float = Field(0.25, gt=0, le=0.5)
    metric: str = Field("val_loss", min_length=1)
    mode: Literal["auto", "min", "max"] = "auto"
    mutations: dict[str, Mutation] = Field(default_factory=lambda: {"lr": Mutation(log_uniform=(1e-5, 1.0))})
    resample_probability: float = Field(0.25, ge=0, le=1)
    factors: list[float] = Field(default_factory=lambda: [1.2, 0.8], min_length=1)
    burn_in: int = Field(0, strict=True, ge=0)
    seed: int = Field(0, strict=True)

    @model_validator(mode="after")
    def _known_mode(self) -> "PopulationSettings":
        from lrsup.policies.monitor import resolve_mode

        resolve_mode(self.metric, self.mode)  # ValueError names the metric when auto cannot tell
        if any(not (f > 0) for f in self.factors):
            raise ValueError(f"factors must be > 0, got {self.factors}")
        return self

    @property
    def direction(self) -> str:
        """``"min"`` or ``"max"``, the one direction rule (lrsup.policies.monitor)."""
        from lrsup.policies.monitor import resolve_mode

        return resolve_mode(self.metric, self.mode)


_SECTIONS: dict[str, type[BaseModel]] = {"agent": AgentSettings, "run": RunSettings}
_TOP_KEYS = ("agent", "notify", "policy", "population", "run")


class ConfigError(ValueError):
    """An invalid or unreadable configuration; ``str()`` is one bullet per problem.

    Args:
        source: str. The file the configuration came from (or the defaults).
        problems: list of str. Each ``"field.path: message"``.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = [redact(problem) for problem in problems]  # a bad webhook URL quotes its credentials
        super().__init__("\n".join(f"- {source}: {problem}" for problem in self.problems))


@dataclass(frozen=True)
class ResolvedConfig:
    """A validated configuration.

    Args:
        source: str. Where it came from: a file path, or ``"(built-in defaults)"``.
        agent: AgentSettings.
        run: RunSettings.
        policies: list of (name, Policy class, settings), in stack order; ``name`` is
            the ``use`` value as written.
        notify: NotifySettings or None. The ``[notify]`` table; None when there is none.
        population: PopulationSettings or None. The ``[population]`` table (``lrsup sweep --pbt``).
    """

    source: str
    agent: AgentSettings
    run: RunSettings
    policies: list[tuple[str, type[Policy], PolicySettings]]
    notify: NotifySettings | None = None
    population: PopulationSettings | None = None

    def build_policies(self) -> list[Policy]:
        """Fresh policy instances, in stack order."""
        return [cls(settings) for _, cls, settings in self.policies]

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (what goes to config.json); non-finite floats are kept as floats.

        ``notify`` is there only when the configuration has a ``[notify]`` table, its
        secrets replaced by ``***`` (:meth:`NotifySettings.redacted`).
        """
        data = {
            "source": self.source,
            "agent": self.agent.model_dump(),
            "run": self.run.model_dump(),
            "policies": [{"use": name, **settings.model_dump()} for name, _, settings in self.policies],
        }
        if self.notify is not None:
            data["notify"] = self.notify.redacted()  # never a secret in config.json
        return data


def load_config(path: Path | None, cwd: Path) -> ResolvedConfig:
    """Find, read and validate the configuration.

    ``path`` given: that file (``[tool.lrsup]`` if it is named pyproject.toml, else the
    whole file). Otherwise ``cwd/lrsup.toml`` if it exists, else the ``[tool.lrsup]``
    table of ``cwd/pyproject.toml`` if there is one, else the defaults.

    Example::

        load_config(Path("night.toml"), cwd=Path.cwd()).to_json()

    Args:
        path: Path or None. The ``--config`` file; relative paths are taken from ``cwd``.
        cwd: Path. The directory to look in when ``path`` is None.

    Raises:
        ConfigError: the file is missing, unreadable, not TOML, or the settings are invalid.
    """
    if path is not None:
        path = Path(cwd, path)
        if not path.is_file():
            why = "is a directory, not a file" if path.is_dir() else "file not found"
            raise ConfigError(str(path), [why])
        if path.name == PYPROJECT_NAME:
            data = _read_toml(path)
            if "tool" not in data or not isinstance(data["tool"], dict) or "lrsup" not in data["tool"]:
                raise ConfigError(str(path), ["no [tool.lrsup] table"])
            return _resolve(data["tool"]["lrsup"], str(path), "tool.lrsup")
        return _resolve(_read_toml(path), str(path), "")
    candidate = Path(cwd, CONFIG_NAME)
    if candidate.is_file():
        return _resolve(_read_toml(candidate), str(candidate), "")
    candidate = Path(cwd, PYPROJECT_NAME)
    if candidate.is_file():
        tool = _read_toml(candidate).get("tool")
        if isinstance(tool, dict) and "lrsup" in tool:
            return _resolve(tool["lrsup"], str(candidate), "tool.lrsup")
    return _resolve({}, DEFAULTS_SOURCE, "")


def config_from_json(data: Any, source: str) -> ResolvedConfig:
    """Validate again a configuration written by :meth:`ResolvedConfig.to_json` (a run's config.json).

    Example::

        config = config_from_json(json.loads((run_dir / CONFIG_FILE).read_text()), str(run_dir))

    Args:
        data: the decoded JSON object.
        source: str. Where it came from, for messages.

    Raises:
        ConfigError: it is not such an object, or its settings are invalid here.
    """
    if not isinstance(data, dict):
        raise ConfigError(source, [f"expected a JSON object (got {_got(data)})"])
    table = {key: data[key] for key in ("agent", "run") if key in data}
    if data.get("notify") is not None:
        table["notify"] = _unredacted_notify(data["notify"], data.get("source"))
    if "policies" in data:
        table["policy"] = data["policies"]
    return _resolve(table, source, "")


def run_config(run_dir: str | os.PathLike[str]) -> ResolvedConfig:
    """The configuration a run was supervised with, from its config.json, validated again.

    The one way a run's configuration is reloaded (``lrsup replay``, ``lrsup resume``, the
    range test's ``--apply``).

    Example::

        run_config("runs/2025-01-01T00-00-00-train").policies

    Args:
        run_dir: str or PathLike. The run directory.

    Raises:
        ConfigError: config.json is missing, not JSON, or no longer valid (e.g. a policy
            that is not installed any more).
    """
    path = Path(run_dir, CONFIG_FILE)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found: give a configuration to replay with"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(str(path), [f"not JSON: {exc}"]) from None
    return config_from_json(data, str(path))


def _unredacted_notify(stored: Any, source: Any) -> Any:
    """A ``[notify]`` table from config.json with its secrets back, read again from the original file.

    config.json holds ``***`` for secrets; a resumed run takes them from the file the run
    was started with, when its ``[notify]`` still redacts to exactly what was stored.
    Otherwise the table is dropped (no notifications rather than a command ``***``).
    """
    if not isinstance(stored, dict) or REDACTED not in json.dumps(stored, default=str):
        return stored
    try:
        original = load_config(Path(source), Path("/")) if isinstance(source, str) else None
    except ConfigError:
        original = None
    if original is None or original.notify is None or original.notify.redacted() != stored:
        return None
    return original.notify.model_dump(mode="json")


def _read_toml(path: Path) -> dict[str, Any]:
    too_deep = ConfigError(str(path), [f"a value nested more than {MAX_DEPTH} levels deep (tables and arrays)"])
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"TOML syntax error: {exc}"]) from None
    except RecursionError:  # tomllib's parser recurses once per level
        raise too_deep from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    if _depth(data) > MAX_DEPTH:
        raise too_deep
    return data


def _depth(value: Any) -> int:
    """How deeply ``value``'s dicts and lists nest (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level + 1)
            stack.extend((child, level + 1) for child in children)
    return deepest


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _join(prefix: str, loc: tuple) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def _pydantic_problems(exc: ValidationError, prefix: str, model: type[BaseModel]) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        where = _join(prefix, error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            problems.append(f"{where}: {message}")
        elif error["type"] == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields)) or "(none)"
            problems.append(f"{where}: unknown setting (got {_got(error['input'])}); known settings: {known}")
        else:
            problems.append(f"{where}: {message} (got {_got(error['input'])})")
    return problems


def _resolve(data: Any, source: str, prefix: str) -> ResolvedConfig:
    if not isinstance(data, dict):
        raise ConfigError(source, [f"{prefix or 'configuration'}: expected a table (got {_got(data)})"])
    problems: list[str] = []
    for key in sorted(set(data) - set(_TOP_KEYS)):
        problems.append(
            f"{_join(prefix, (key,))}: unknown key (got {_got(data[key])}); expected one of: {', '.join(_TOP_KEYS)}"
        )
    sections: dict[str, BaseModel] = {}
    for key, model in _SECTIONS.items():
        raw = data.get(key, {})
        where = _join(prefix, (key,))
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a table [{key}] (got {_got(raw)})")
            continue
        try:
            sections[key] = model.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(exc, where, model))
    notify = _resolve_notify(data.get("notify"), _join(prefix, ("notify",)), problems)
    policies = _resolve_policies(data.get("policy", DEFAULT_STACK), _join(prefix, ("policy",)), problems)
    population = _resolve_population(data.get("population"), _join(prefix, ("population",)), problems)
    if problems:
        raise ConfigError(source, problems)
    return ResolvedConfig(source, sections["agent"], sections["run"], policies, notify, population)  # type: ignore[arg-type]


def _resolve_population(raw: Any, where: str, problems: list[str]) -> PopulationSettings | None:
    """The ``[population]`` table, or None when there is none."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table [population] (got {_got(raw)})")
        return None
    try:
        return PopulationSettings.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, where, PopulationSettings))
        return None


def _resolve_notify(raw: Any, where: str, problems: list[str]) -> NotifySettings | None:
    """The ``[notify]`` table, or None when there is none."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table [notify] (got {_got(raw)})")
        return None
    try:
        return NotifySettings.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, where, NotifySettings))
        return None


def _resolve_policies(raw: Any, where: str, problems: list[str]) -> list[tuple[str, type[Policy], PolicySettings]]:
    if not isinstance(raw, list):
        problems.append(f"{where}: expected an array of tables ([[policy]]) (got {_got(raw)})")
        return []
    out = []
    for index, entry in enumerate(raw):
        here = f"{where}[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{here}: expected a table with a `use` key (got {_got(entry)})")
            continue
        entry = dict(entry)
        if "use" not in entry:
            problems.append(f'{here}.use: missing: the policy\'s name, e.g. use = "plateau"')
            continue
        name = entry.pop("use")
        if not isinstance(name, str):
            problems.append(f"{here}.use: expected a string (got {_got(name)})")
            continue
        try:
            cls = load_policy_class(name)
        except PolicyLoadError as exc:
            problems.append(f"{here}.use: {exc}")
            continue
        try:
            settings = cls.Settings.model_validate(entry)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(exc, here, cls.Settings))
            continue
        out.append((name, cls, settings))
    return out
