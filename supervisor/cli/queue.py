"""``lrsup queue add/ls/cancel/run`` and ``lrsup sweep``: many runs a night.

Thin typed commands around the queue package (lrsup.supervisor.queue): the store in
``runs/.queue/queue.sqlite``, the scheduler and its loop, the sweep grid, the Ray backend
(imported only for ``--ray``). The script and the configuration are checked when an entry is
added, so a typo fails now rather than at 3 a.m.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from lrsup.supervisor.cli.app import RunsDirOption, app, check_script, fail, load_config, script_args

queue_app = typer.Typer(
    name="queue",
    help="Queue runs and run the queue: lrsup queue add/ls/cancel/run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(queue_app, name="queue")

_SCRIPT_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False}
ConfigOption = typer.Option(
    None,
    "--config",
    help="lrsup.toml (or pyproject.toml) for these runs (default: found in the current directory when the run starts).",
)


@queue_app.command("add", context_settings=_SCRIPT_CONTEXT)
def add(
    ctx: typer.Context,
    script: Path = typer.Argument(..., metavar="SCRIPT", help="The training script."),
    name: Optional[str] = typer.Option(None, "--name", help="A short name (the run directory is q<ID>-<NAME>)."),
    config: Optional[Path] = ConfigOption,
    gpus: Optional[int] = typer.Option(
        None, "--gpus", min=0, help="GPUs the run needs (default: 1 when there are GPUs)."
    ),
    cpus: float = typer.Option(1.0, "--cpus", min=0, help="CPUs the run needs (a Ray resource request)."),
    priority: int = typer.Option(0, "--priority", help="Higher starts first; equal priorities in arrival order."),
    group: Optional[str] = typer.Option(None, "--group", help="Tag the entry with a group (lrsup report --group)."),
    runs_dir: Path = RunsDirOption,
) -> None:
    """Add a run of SCRIPT to the queue; arguments after the script (or after --) go to it. Prints its id."""
    from lrsup.supervisor.queue.store import NewEntry

    cwd = Path.cwd()
    check_script(script, cwd)
    config_path = _checked_config(config, cwd)
    entry = NewEntry(
        script=str(script), args=script_args(ctx), cwd=str(cwd), name=name, group=group, config=config_path,
        gpus=gpus, cpus=cpus, priority=priority,
    )  # fmt: skip
    store = _store(runs_dir)
    print(store.add(entry))
    store.close()


@app.command(context_settings=_SCRIPT_CONTEXT)
def sweep(
    ctx: typer.Context,
    script: Path = typer.Argument(..., metavar="SCRIPT", help="The training script."),
    grid: List[str] = typer.Option(
        [],
        "--grid",
        help="NAME=V1,V2,...: appends --NAME V to the script's arguments; config.POLICY.KEY or config.TABLE.KEY varies an lrsup setting.",
    ),
    config: Optional[Path] = ConfigOption,
    group: Optional[str] = typer.Option(None, "--group", help="The group's name (default: sweep-<UTC time>)."),
    gpus: Optional[int] = typer.Option(None, "--gpus", min=0, help="GPUs each run needs."),
    cpus: float = typer.Option(1.0, "--cpus", min=0, help="CPUs each run needs (a Ray resource request)."),
    priority: int = typer.Option(0, "--priority", help="Priority of every run of the sweep."),
    pbt: bool = typer.Option(False, "--pbt", help="Population-based training over the group ([population] settings)."),
    population: Optional[int] = typer.Option(
        None, "--population", min=2, help="With --pbt: the number of members (default: one per combination)."
    ),
    runs_dir: Path = RunsDirOption,
) -> None:
    """Queue one run per combination of the --grid values, all in one group. Prints the group, then the ids.

    With --pbt, the group is a population: ``queue run`` lets its worst members copy the best
    ones' checkpoints in place and perturbs their hyperparameters (no pause, no restart).
    """
    if not pbt and (population is not None or not grid):
        fail("--population goes with --pbt" if population is not None else "sweep needs --grid (or --pbt)")
    raise typer.Exit(
        _sweep(script, script_args(ctx), grid, config, group, gpus, cpus, priority, runs_dir, pbt, population)
    )


def _sweep(
    script: Path, args: list[str], grid: list[str], config: Path | None, group: str | None,
    gpus: int | None, cpus: float, priority: int, runs_dir: Path, pbt: bool = False, population: int | None = None,
) -> int:  # fmt: skip
    from lrsup.supervisor.queue import sweep as grid_lib
    from lrsup.supervisor.queue.store import NewEntry, queue_dir

    cwd = Path.cwd()
    check_script(script, cwd)
    base_config = _checked_config(config, cwd)
    try:
        points = grid_lib.expand([grid_lib.parse_axis(g) for g in grid])
    except grid_lib.GridError as err:
        fail(str(err))
    group = group or time.strftime("sweep-%Y%m%dT%H%M%SZ", time.gmtime())
    config_dir = queue_dir(Path(cwd, runs_dir)) / "configs"
    settings = None
    if pbt:
        settings = load_config(config, cwd).population
        if settings is None:
            from lrsup.supervisor.config import PopulationSettings

            settings = PopulationSettings()
        count = population or max(len(points), 4)
        points = [points[i % len(points)] for i in range(count)]  # the grid's combinations in turn
    planned = []
    for index, point in enumerate(points):
        config_path = base_config
        overrides = grid_lib.config_overrides(point)
        if overrides:
            config_path = _write_config(config_dir / f"{group}-{index + 1}.toml", config, cwd, overrides)
        planned.append(
            NewEntry(
                script=str(script),
                args=grid_lib.script_args(args, point),
                cwd=str(cwd),
                name=grid_lib.label(point) + (f"-m{index + 1}" if pbt else ""),
                group=group,
                config=config_path,
                gpus=gpus,
                cpus=cpus,
                priority=priority,
                params=point,
            )  # fmt: skip
        )
    if settings is not None:
        from lrsup.supervisor.queue.population import create_population

        create_population(Path(cwd, runs_dir), group, settings)
    store = _store(runs_dir)
    print(group)
    for entry in planned:
        print(store.add(entry))
    store.close()
    return 0


def _write_config(target: Path, base: Path | None, cwd: Path, overrides: dict) -> str:
    """The base configuration's raw table with ``overrides`` set, written as TOML and validated."""
    from lrsup.supervisor.queue.sweep import GridError, apply_overrides, to_toml

    try:
        table = apply_overrides(_raw_config(base, cwd), overrides)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        target.write_text(to_toml(table), encoding="utf-8")
    except GridError as err:
        fail(str(err))
    load_config(target, cwd)  # exits 2 listing the problems of an invalid value
    return str(target)


def _raw_config(base: Path | None, cwd: Path) -> dict[str, Any]:
    """The configuration table as written (lrsup.toml, [tool.lrsup]), the default stack filled in."""
    import copy
    import tomllib

    from lrsup.supervisor.config import CONFIG_NAME, DEFAULT_STACK, PYPROJECT_NAME

    candidates = [Path(cwd, base)] if base is not None else [Path(cwd, CONFIG_NAME), Path(cwd, PYPROJECT_NAME)]
    table: dict[str, Any] = {}
    for path in candidates:
        if path.is_file():
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            if path.name == PYPROJECT_NAME:
                data = data.get("tool", {}).get("lrsup")
                if data is None:
                    continue
            table = data
            break
    table = dict(table)
    if "policy" not in table:
        table["policy"] = copy.deepcopy(DEFAULT_STACK)
    return table


@queue_app.command("ls")
def ls(
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per line (id, group, status, run_dir, exit_status, ...)."
    ),
    group: Optional[str] = typer.Option(None, "--group", help="Only the entries of this group."),
    runs_dir: Path = RunsDirOption,
) -> None:
    """List the queue: queued, running, done, failed and cancelled entries with their run directories."""
    raise typer.Exit(_ls(runs_dir, as_json, group))


def _ls(runs_dir: Path, as_json: bool, group: str | None) -> int:
    from lrsup.supervisor.queue.store import DB_NAME, QueueStore, queue_dir

    path = queue_dir(Path.cwd() / runs_dir) / DB_NAME
    if not path.is_file():
        print(f"no queue in {runs_dir}", file=sys.stderr)
        return 0
    store = QueueStore(path)
    entries = store.entries(group=group)
    store.close()
    if as_json:
        for entry in entries:
            print(json.dumps(entry.to_json()))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from lrsup.supervisor.cli.format import fmt_time

    table = Table(title=f"lrsup queue in {runs_dir}", title_justify="left")
    for column in ("id", "name", "group", "status", "prio", "run dir", "exit", "reason", "started"):
        table.add_column(column, overflow="fold")
    from lrsup.supervisor.queue.local import inspect_run_dir

    styles = {"running": "cyan", "parked": "yellow", "done": "green", "failed": "red", "cancelled": "dim"}
    for e in entries:
        status = e.status.value
        if status == "running" and e.run_dir and inspect_run_dir(Path(e.run_dir)).parked:
            status = "parked"  # a PBT member waiting for its turn: its supervisor runs, its trainer does not
        table.add_row(
            str(e.id), escape(e.name or e.script), escape(e.group or "-"),
            f"[{styles[status]}]{status}[/]" if status in styles else status, str(e.priority),
            escape(Path(e.run_dir).name if e.run_dir else "-"), "-" if e.exit_status is None else str(e.exit_status),
            escape(e.reason or ""), fmt_time(e.started) if e.started else "-",
        )  # fmt: skip
    Console().print(table)
    return 0


@queue_app.command("cancel")
def cancel(
    entry_id: Optional[int] = typer.Argument(None, metavar="ID", help="The entry to cancel."),
    group: Optional[str] = typer.Option(None, "--group", help="Cancel every queued entry of this group."),
    runs_dir: Path = RunsDirOption,
) -> None:
    """Cancel queued entries (an ID or a --group); running ones are stopped with lrsup stop RUN."""
    if (entry_id is None) == (group is None):
        fail("queue cancel takes an ID or --group G")
    store = _store(runs_dir)
    ids = store.cancel(entry_id, group=group, reason="cancelled by the user")
    left = [e for e in (store.entries(group=group) if group else [store.get(entry_id)]) if e is not None]
    store.close()
    if entry_id is not None and not left:
        fail(f"no queue entry {entry_id}")
    running = [e for e in left if e.status.value == "running" and e.id not in ids]
    print(
        f"cancelled {len(ids)} queued entr{'y' if len(ids) == 1 else 'ies'}"
        + (f": {', '.join(map(str, ids))}" if ids else "")
    )
    for e in running:
        print(f"q{e.id} is running: stop it with lrsup stop {e.run_dir}", file=sys.stderr)
    raise typer.Exit(0 if ids or entry_id is None else 1)


@queue_app.command("run")
def run(
    slots: Optional[int] = typer.Option(
        None, "--slots", min=1, help="Runs at a time (default: the number of GPUs, else 1)."
    ),
    gpus: Optional[str] = typer.Option(
        None, "--gpus", help="GPU ids to use, e.g. 0,1 (default: detected; 'none': no GPU)."
    ),
    per_gpu: int = typer.Option(1, "--per-gpu", min=1, help="Runs one GPU may hold at once (default 1: never two)."),
    follow: bool = typer.Option(False, "--follow", help="Keep waiting for new entries when the queue is empty."),
    finish: bool = typer.Option(
        False, "--finish", help="On SIGTERM let running runs finish (default: stop them cleanly)."
    ),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run the queue in the background; print its pid."),
    config: Optional[Path] = typer.Option(
        None, "--config", help="Where the [notify] settings for the end of the queue are."
    ),
    ray: Optional[str] = typer.Option(
        None, "--ray", metavar="ADDRESS|local", help="Run the queue on a Ray cluster (needs lrsup[ray])."
    ),
    runs_dir: Path = RunsDirOption,
) -> None:
    """Run the queue on this machine (or a Ray cluster) until it is empty; SIGTERM drains."""
    if detach:
        raise typer.Exit(_detach())
    raise typer.Exit(_run(slots, gpus, per_gpu, follow, finish, config, ray, runs_dir))


def _run(
    slots: int | None, gpus: str | None, per_gpu: int, follow: bool, finish: bool, config: Path | None,
    ray: str | None, runs_dir: Path,
) -> int:  # fmt: skip
    from lrsup.supervisor.queue.local import LocalSpawner, detect_gpus
    from lrsup.supervisor.queue.night import QueueBusyError, QueueOptions, run_queue
    from lrsup.supervisor.queue.store import queue_dir

    cwd = Path.cwd()
    notify = load_config(config, cwd).notify
    root = Path(cwd, runs_dir)
    spawner: Any
    populations: Any = None  # without --ray: the coordinators run in queue run, reading the members' files
    if ray is not None:
        try:
            from lrsup.supervisor.queue.ray_backend import RayPopulations, RaySpawner, connect
        except ImportError as err:
            print(f"lrsup: --ray needs Ray: pip install 'lrsup[ray]' ({err})", file=sys.stderr)
            return 2
        try:
            cluster = connect(ray)
        except Exception as err:  # ray raises ConnectionError, RuntimeError, ValueError...
            fail(f"cannot join the Ray cluster at {ray!r}: {err}")
        device_ids: list[str] = []  # Ray places GPUs itself
        slots = slots or max(1, int(cluster.get("CPU", 1)))
        populations = RayPopulations(root, slots)  # PBT coordinators: a Ray actor the members report to
        spawner = RaySpawner(queue_dir(root) / "logs", populations)
    else:
        device_ids = _gpu_ids(gpus) if gpus is not None else detect_gpus()
        spawner = LocalSpawner(queue_dir(root) / "logs")
        slots = slots or max(1, len(device_ids))
    options = QueueOptions(
        root, slots=slots, gpus=device_ids, per_gpu=per_gpu, follow=follow, finish=finish, notify=notify,
        place_gpus=ray is None,
    )  # fmt: skip
    try:
        return run_queue(options, spawner, populations=populations)
    except QueueBusyError as err:
        fail(str(err))


def _gpu_ids(text: str) -> list[str]:
    if text.strip().lower() in ("none", ""):
        return []
    ids = [g.strip() for g in text.split(",") if g.strip()]
    if not all(g.isdigit() for g in ids):
        fail(f"--gpus takes GPU ids like 0,1 (got {text!r})")
    return ids


def _detach() -> int:
    """``queue run`` again without --detach, in its own session; its output in runs/.queue/daemon.log."""
    import subprocess

    argv = [a for a in sys.argv[1:] if a not in ("--detach", "-d")]
    runs = Path.cwd() / _runs_dir_of(argv)
    log_dir = runs / ".queue"
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(log_dir / "daemon.log", "ab") as log, open(os.devnull, "rb") as null:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lrsup.supervisor.cli.main", *argv],
            stdin=null, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )  # fmt: skip
    print(proc.pid)
    print(
        f"lrsup: the queue runs in the background (pid {proc.pid}); its log: {log_dir / 'daemon.log'}", file=sys.stderr
    )
    return 0


def _runs_dir_of(argv: list[str]) -> Path:
    for i, a in enumerate(argv):
        if a == "--runs-dir" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if a.startswith("--runs-dir="):
            return Path(a.split("=", 1)[1])
    return Path("runs")


def _checked_config(config: Path | None, cwd: Path) -> str | None:
    """``--config`` validated now and made absolute (the run may start elsewhere, later)."""
    if config is None:
        return None
    load_config(config, cwd)
    return str(Path(cwd, config).resolve())


def _store(runs_dir: Path) -> Any:
    from lrsup.supervisor.queue.store import QueueStore

    return QueueStore.open(Path.cwd() / runs_dir)


def report_group(group: str, runs: list[str] | None, out: Path | None, runs_dir: Path, report: Any) -> int:
    """``lrsup report --group G``: the group's runs compared (``report``: cli.reports._report), then the best."""
    from lrsup.supervisor.queue.group import best_run, group_members, member_run_dirs

    if runs:
        fail("give RUN arguments or --group, not both")
    store = _store(runs_dir)
    members = group_members(store, group)
    store.close()
    if not members:
        fail(f"no queue group {group!r} in {runs_dir} (see lrsup queue ls)")
    run_dirs = member_run_dirs(members)
    if not run_dirs:
        fail(f"group {group!r} has no run that started yet ({len(members)} queued)")
    waiting = [e for e in members if e.status.value in ("queued", "running")]
    if waiting:
        print(
            f"lrsup: note: {len(waiting)} of {len(members)} runs of {group} are still queued or running",
            file=sys.stderr,
        )
    status = report(run_dirs, out if out is not None or len(run_dirs) == 1 else Path(runs_dir) / f"{group}-report")
    if status == 0 and len(run_dirs) > 1:
        from lrsup.supervisor.history.runinfo import RunInfoError, load_run

        try:
            best = best_run([load_run(d) for d in run_dirs])
        except RunInfoError:
            best = None
        if best is not None:
            member = next((e for e in members if e.run_dir and Path(e.run_dir).name == best.name), None)
            params = f" ({', '.join(f'{k}={v}' for k, v in member.params.items())})" if member and member.params else ""
            print(
                f"best run: {best.name}{params}: {best.monitor} {best.best.logs[best.monitor]:.6g} at epoch {best.best.epoch + 1}"
            )
    if status == 0:
        _report_population(group, run_dirs, out if out is not None else Path(runs_dir) / f"{group}-report", runs_dir)
    return status


def _report_population(group: str, run_dirs: list[Path], out: Path, runs_dir: Path) -> None:
    """A PBT group's lineage (who copied whom, when, with which LR) and best curve: printed, population.md/.png."""
    from lrsup.supervisor.config import PopulationSettings
    from lrsup.supervisor.history.runinfo import RunInfoError, load_run
    from lrsup.supervisor.queue.group import turns, write_population
    from lrsup.supervisor.queue.population import population_path

    path = population_path(Path(runs_dir), group)
    if not path.is_file():
        return
    settings = PopulationSettings.model_validate(json.loads(path.read_text("utf-8"))["settings"])
    try:
        infos = [load_run(d) for d in run_dirs]
    except RunInfoError as err:
        print(f"lrsup: population lineage not drawn: {err}", file=sys.stderr)
        return
    events, curve, note = write_population(out, infos, settings.metric, settings.direction)
    if note:
        print(f"lrsup: {note}", file=sys.stderr)
    for e in events:
        lr = e["new"].get("lr")
        print(
            f"epoch {e['epoch']}: {e['member']} copied {e['donor']} ({e['checkpoint']})"
            + (f", lr {lr:g}" if lr is not None else "")
        )
    parked = sum(turns(infos).values())
    if curve:
        n, value, who = curve[-1]
        restarts = f"{parked} turn(s) (members parked for others: more members than slots)" if parked else "no restart"
        print(
            f"population best {settings.metric}: {value:.6g} at epoch {n} ({who}); {len(events)} exploit(s), {restarts}"
        )
