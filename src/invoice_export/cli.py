"""`invoice-export`: the command line (Typer + Rich)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from invoice_export.errors import DomainError
from invoice_export.exports.schemas import ExportView
from invoice_export.settings import Settings, SettingsError, get_settings

app = typer.Typer(help="Durable CSV exports of an organization's invoices.", no_args_is_help=True)
db_app = typer.Typer(help="Database set-up.", no_args_is_help=True)
runs_app = typer.Typer(help="Inspect and control export runs.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(runs_app, name="runs")

console = Console()
err = Console(stderr=True)

TERMINAL = ("completed", "failed", "canceled")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _fail(exc: Exception, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code)


@db_app.command("migrate")
def db_migrate() -> None:
    """Create the database, role invoice_app, tables with row-level security, and the engine schema."""
    from invoice_export.db.migrate import migrate
    from invoice_export.db.urls import get_urls

    settings = _settings()
    migrate(get_urls(), None if settings.embedded else settings.app_db_password)
    console.print("[green]database migrated[/green]")


@db_app.command("seed")
def db_seed(
    extra_org: Annotated[
        list[str] | None, typer.Option("--extra-org", help="ORG_ID:N — add an org with N invoices.")
    ] = None,
) -> None:
    """Load the deterministic demo data (safe to re-run; refused in production)."""
    from invoice_export.db.seed import parse_extra_org, seed
    from invoice_export.db.session import admin_engine

    settings = _settings()
    if settings.app_env == "production":
        raise _fail(Exception("db seed refuses to run with APP_ENV=production"), 2)
    try:
        extras = [parse_extra_org(spec) for spec in extra_org or []]
    except DomainError as exc:
        raise _fail(exc, 2) from None
    started = time.perf_counter()
    summary = seed(admin_engine(), extras)
    table = Table("organization", "invoices")
    for org_id, count in summary.orgs.items():
        table.add_row(org_id, f"{count:,}")
    console.print(table)
    console.print(f"seeded in {time.perf_counter() - started:.1f}s")


def _print_view(view: ExportView, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(view.model_dump_json() + "\n")
        return
    table = Table(show_header=False)
    table.add_column()
    table.add_column(overflow="fold")  # long paths and links fold, never cut short
    for key, value in view.model_dump(mode="json").items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)


# How long `--wait` watches a run sit in the queue before it says that a worker must run it.
QUEUED_HINT_SECONDS = 10.0


def _wait_with_progress(org_id: str, user_id: str, run_id: str, show: bool, timeout: float = 600) -> ExportView:
    from invoice_export.exports.service import get_export

    started = time.monotonic()
    hinted = False
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, disable=not show, transient=False) as progress:
        task = progress.add_task(f"export {run_id}", total=None)
        while True:
            view = get_export(org_id, user_id, run_id)
            progress.update(task, total=view.pages_total, completed=view.pages_done, description=view.status)
            if view.status in TERMINAL:
                return view
            waited = time.monotonic() - started
            if view.status == "queued" and waited > QUEUED_HINT_SECONDS and not hinted:
                # Said even with --json (on stderr): a run waits in the queue until a worker runs it.
                err.print(
                    f"run {run_id} is still queued after {QUEUED_HINT_SECONDS:.0f}s: runs are executed by a "
                    "worker; start one with `invoice-export worker` (or `invoice-export serve`)",
                    soft_wrap=True,
                )
                hinted = True
            if waited > timeout:
                raise _fail(Exception(f"run {run_id} did not finish within {timeout:.0f}s"))
            time.sleep(0.05)


@app.command("export")
def export(
    org: Annotated[str, typer.Option("--org", help="Organization id, e.g. org_acme.")],
    as_user: Annotated[str, typer.Option("--as", help="Requesting member, e.g. user_alice.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to finish.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start today's export of ORG as a member (or return the run already started)."""
    from invoice_export.exports.service import start_export

    _settings()
    try:
        view = start_export(org, as_user)
        if wait:
            view = _wait_with_progress(org, as_user, view.run_id, show=not as_json)
    except DomainError as exc:
        raise _fail(exc, 2) from None
    _print_view(view, as_json)
    if wait and view.status != "completed":
        raise typer.Exit(1)


@runs_app.command("show")
def runs_show(run_id: str, as_json: JsonOpt = False) -> None:
    """Show one run: its row and the workflow engine's state."""
    from invoice_export.exports.service import find_export_by_run_id, get_export

    _settings()
    try:
        org_id, user_id = find_export_by_run_id(run_id)
        view = get_export(org_id, user_id, run_id)
    except DomainError as exc:
        raise _fail(exc, 2) from None
    _print_view(view, as_json)


@runs_app.command("cancel")
def runs_cancel(run_id: str, as_json: JsonOpt = False) -> None:
    """Cancel a queued or running run: it stops at its next page boundary, its files are removed
    and no email is sent. Audited as export.canceled (by an operator)."""
    from invoice_export.exports.service import cancel_export, find_export_by_run_id

    _settings()
    try:
        org_id, _ = find_export_by_run_id(run_id)
        view = cancel_export(org_id, run_id, actor_id=None, via="cli")
    except DomainError as exc:
        raise _fail(exc, 2) from None
    _print_view(view, as_json)


@runs_app.command("list")
def runs_list(
    org: Annotated[str, typer.Option("--org", help="Organization id.")],
    as_json: JsonOpt = False,
) -> None:
    """The organization's recent runs, newest first."""
    from invoice_export.exports.service import list_org_exports

    _settings()
    try:
        views = list_org_exports(org)
    except DomainError as exc:
        raise _fail(exc, 2) from None
    if as_json:
        sys.stdout.write(json.dumps([v.model_dump(mode="json") for v in views]) + "\n")
        return
    # Ids and times are what the next command needs: never cut or folded, whatever the width.
    table = Table(box=None, pad_edge=False)
    for name in ("run id", "requested by", "status", "pages", "rows", "requested at"):
        table.add_column(name, no_wrap=True)
    for v in views:
        pages = f"{v.pages_done}/{v.pages_total}" if v.pages_total is not None else "-"
        table.add_row(v.run_id, v.requested_by, v.status, pages, str(v.row_count or "-"), v.requested_at.isoformat())
    # Rendered at its natural width (a narrow terminal wraps the lines, it does not cut them).
    Console(width=10_000, highlight=False).print(table)


@app.command("worker")
def worker() -> None:
    """Run a worker process (engine executor id = WORKER_ID)."""
    from invoice_export.worker import DEFAULT_WORKER_ID, WorkerIdInUse, run_worker

    settings = _settings()
    try:
        run_worker(settings, settings.worker_id or DEFAULT_WORKER_ID)
    except WorkerIdInUse as exc:
        raise _fail(exc, 3) from None


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Serve pages only; run workers apart.")] = False,
    processes: Annotated[int, typer.Option("--processes", min=1, max=64, help="Web processes on the port.")] = 1,
) -> None:
    """Serve the web app (with an in-process worker unless --no-worker)."""
    import uvicorn

    from invoice_export.web.app import create_app
    from invoice_export.worker import DEFAULT_WORKER_ID, WorkerIdInUse, serving

    settings = _settings()
    with contextlib.ExitStack() as in_process:
        if not no_worker:
            try:
                in_process.enter_context(serving(settings, settings.worker_id or DEFAULT_WORKER_ID))
            except WorkerIdInUse as exc:
                raise _fail(exc, 3) from None
        # Open the database here, before uvicorn takes the signals: an embedded server is then
        # owned by this process, which stops it on SIGTERM like any other command.
        from invoice_export.db.urls import get_urls

        get_urls()
        worker_note = "no worker (--no-worker)" if no_worker else "with an in-process worker"
        err.print(f"serving on http://{host}:{port}/ {worker_note}; Ctrl-C stops", soft_wrap=True)
        # Several processes each build their own app, so uvicorn is given the factory by name.
        several = processes > 1
        target = "invoice_export.web.app:create_app" if several else create_app()
        uvicorn.run(target, factory=several, workers=processes, host=host, port=port, log_level="warning")


@app.command("demo")
def demo(as_json: JsonOpt = False) -> None:
    """Migrate, seed, run an in-process worker and export org_acme as user_alice, end to end."""
    from invoice_export.db.migrate import migrate
    from invoice_export.db.seed import seed
    from invoice_export.db.session import admin_engine
    from invoice_export.db.urls import get_urls
    from invoice_export.email.backends import FileBackend
    from invoice_export.email.message import message_id_for
    from invoice_export.exports.service import start_export
    from invoice_export.worker import WorkerIdInUse, serving

    settings = _settings()
    say = err.print
    where = "embedded PostgreSQL in " + str(settings.data_dir / "pg") if settings.embedded else "DATABASE_URL"
    say(f"[bold]invoice-export demo[/bold] — database: {where}")
    urls = get_urls()
    migrate(urls, None if settings.embedded else settings.app_db_password)
    summary = seed(admin_engine())
    say(f"seeded: {', '.join(f'{org} {n}' for org, n in summary.orgs.items())}")
    try:
        with serving(settings, "demo"):
            view = start_export("org_acme", "user_alice")
            say(f"today's run for user_alice: {view.run_id} ({view.status})")
            view = _wait_with_progress("org_acme", "user_alice", view.run_id, show=not as_json)
    except WorkerIdInUse as exc:
        raise _fail(exc, 3) from None
    email_path: Path | None = None
    if settings.email_backend == "file":
        candidate = FileBackend(settings.data_dir / "outbox").path_for_id(message_id_for(view.run_id))
        email_path = candidate if candidate.exists() else None
    if as_json:
        payload = view.model_dump(mode="json") | {"email_path": str(email_path) if email_path else None}
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        _print_view(view, False)
        console.print(f"CSV file:  {view.csv_path}", soft_wrap=True, highlight=False)
        console.print(
            f"Email:     {email_path or '(not written: see the email backend setting)'}",
            soft_wrap=True,
            highlight=False,
        )
    if view.status != "completed":
        raise typer.Exit(1)


def main() -> None:
    app()
