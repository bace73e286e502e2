"""What the benchmarks share: a fresh seeded database, real worker and web processes (the same
ones the tests start), exports started and timed through the service, and the floor."""

from __future__ import annotations

import hashlib
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import psycopg  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from tests.conftest import Server, SmtpServer, Worker  # noqa: E402  (the real processes the tests use)

TERMINAL = ("completed", "failed", "canceled")


def reset_caches() -> None:
    from invoice_export.db import session, urls
    from invoice_export.settings import get_settings
    from invoice_export.workflows import queue

    for cached in (get_settings, urls.get_urls, session.app_engine, session.admin_engine, queue.engine_client):
        cached.cache_clear()


def set_env(**values: str) -> None:
    """Settings for this process and the processes it starts from now on."""
    os.environ.update(values)
    reset_caches()


def unset_env(*names: str) -> None:
    """Back to the defaults for these settings."""
    for name in names:
        os.environ.pop(name, None)
    reset_caches()


@dataclass
class Bench:
    """One benchmark session: its own database on `server_url`, its own data folder."""

    server_url: str
    database: str
    data_dir: Path
    logs: Path

    @classmethod
    @contextmanager
    def create(cls, server_url: str, keep: bool = False) -> Iterator[Bench]:
        name = f"ie_bench_{secrets.token_hex(4)}"
        url = make_url(server_url).set(drivername="postgresql+psycopg", database=name)
        data_dir = Path(tempfile.mkdtemp(prefix="ie-bench-"))
        bench = cls(server_url, url.render_as_string(hide_password=False), data_dir, data_dir / "logs")
        bench.logs.mkdir()
        set_env(
            DATABASE_URL=bench.database,
            INVOICE_EXPORT_DATA_DIR=str(data_dir),
            APP_ENV="test",
        )
        try:
            yield bench
        finally:
            reset_caches()
            if not keep:
                server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
                with server.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                server.dispose()

    def migrate_and_seed(self, extra_orgs: list[tuple[str, int]]) -> float:
        """Migrate and seed; returns the seconds the extra orgs took to seed."""
        from invoice_export.db.migrate import migrate
        from invoice_export.db.seed import seed
        from invoice_export.db.session import admin_engine
        from invoice_export.db.urls import get_urls
        from invoice_export.settings import get_settings

        migrate(get_urls(), get_settings().app_db_password)
        seed(admin_engine())
        started = time.perf_counter()
        seed(admin_engine(), extra_orgs)
        return time.perf_counter() - started

    def worker(self, name: str, **env: str) -> Worker:
        return Worker(name, env, self.logs / f"{name}.log").start()

    def server(self, **env: str) -> Server:
        return Server(env, self.logs / f"server-{secrets.token_hex(2)}.log").wait_ready()

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(plain(self.database))

    def transactions(self) -> int:
        """Transactions the server has finished in this database so far (all clients)."""
        with self.admin() as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            assert row is not None
            return int(row[0])


def plain(url: str) -> str:
    """A SQLAlchemy URL as libpq (and the workflow engine) take it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


_days = iter(range(1, 100_000))


def new_day() -> datetime:
    """A UTC day no earlier run of this session used: every start is a new run."""
    return datetime.now(UTC) - timedelta(days=next(_days))


@dataclass(frozen=True)
class Run:
    run_id: str
    export_id: uuid.UUID
    rows: int
    seconds: float  # run start (the worker claimed it) to completion, on the database's clock
    path: Path


def wait_for_row(export_id: uuid.UUID, timeout: float = 600, every: float = 0.01) -> dict[str, Any]:
    from invoice_export.db.session import admin_engine

    deadline = time.monotonic() + timeout
    while True:
        with admin_engine().connect() as conn:
            row = conn.execute(
                text("SELECT status, row_count, started_at, completed_at, file_key, error FROM exports WHERE id = :i"),
                {"i": export_id},
            ).one()
        if row.status in TERMINAL:
            return dict(row._mapping)
        if time.monotonic() > deadline:
            raise RuntimeError(f"export {export_id} still {row.status} after {timeout}s")
        time.sleep(every)


def pages_done(export_id: uuid.UUID) -> int:
    from invoice_export.db.session import admin_engine

    with admin_engine().connect() as conn:
        return int(conn.execute(text("SELECT pages_done FROM exports WHERE id = :i"), {"i": export_id}).scalar_one())


def export(org_id: str, user_id: str, **settings: str) -> Run:
    """One new durable export through the service (as the CLI and the API start them), timed."""
    from invoice_export.exports.service import start_export
    from invoice_export.settings import get_settings

    if settings:
        set_env(**settings)
    view = start_export(org_id, user_id, now=new_day())
    row = wait_for_row(view.export_id)
    if row["status"] != "completed":
        raise RuntimeError(f"run {view.run_id} {row['status']}: {row['error']}")
    path = get_settings().data_dir / "exports" / row["file_key"]
    seconds = (row["completed_at"] - row["started_at"]).total_seconds()
    return Run(view.run_id, view.export_id, row["row_count"], seconds, path)


FLOOR_QUERY = """COPY (SELECT {columns}
                       FROM (SELECT invoices.*, exponent FROM invoices JOIN currencies ON code = currency
                             WHERE organization_id = %s) AS i
                       ORDER BY i.issued_at, i.id) TO STDOUT (FORMAT csv)"""


@contextmanager
def _floor_copy(org_id: str) -> Iterator[Any]:
    from invoice_export.db.urls import get_urls
    from invoice_export.exports.csv_format import SELECT_CSV_COLUMNS

    with psycopg.connect(get_urls().app_plain) as conn:
        conn.execute("SELECT set_config('app.org_id', %s, true)", (org_id,))
        with conn.cursor() as cur, cur.copy(FLOOR_QUERY.format(columns=SELECT_CSV_COLUMNS), (org_id,)) as copy:
            yield copy


def floor(org_id: str) -> tuple[float, int]:
    """The physical floor: the same rows, formatted by the same SQL, in ONE COPY ... TO STDOUT,
    as invoice_app under row-level security, read by a client that only counts the bytes.
    Returns (seconds, bytes)."""
    started = time.perf_counter()
    size = 0
    with _floor_copy(org_id) as copy:
        for record in copy:
            size += len(record)
    return time.perf_counter() - started, size


def floor_file_digest(org_id: str) -> bytes:
    """SHA-256 of the file the floor's rows make as an export (BOM, header, CRLF records): not
    timed, only to check that the durable export wrote exactly these bytes."""
    from invoice_export.exports.csv_format import BOM, HEADER

    digest = hashlib.sha256(BOM + HEADER)
    with _floor_copy(org_id) as copy:
        for record in copy:
            digest.update(bytes(record[:-1]) + b"\r\n")
    return digest.digest()


def sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.digest()


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def add_members(org_id: str, n: int) -> list[tuple[str, str, str]]:
    """`n` new members of `org_id`, each signed in: [(user_id, session cookie, csrf token)]."""
    from sqlalchemy.orm import Session

    from invoice_export.db.models import Member, User
    from invoice_export.db.session import admin_engine, set_tenant
    from invoice_export.orgs.sessions import create_session

    users = [f"user_b{secrets.token_hex(5)}" for _ in range(n)]
    with Session(admin_engine()) as session, session.begin():
        session.add_all(User(id=u, email=f"{u}@example.com", name=u, password_hash="x") for u in users)
        session.flush()
        set_tenant(session, org_id)
        session.add_all(Member(organization_id=org_id, user_id=u, role="member") for u in users)
    tokens = [create_session(u, timedelta(hours=2)) for u in users]
    with admin_engine().connect() as conn:
        rows = conn.execute(text("SELECT user_id, csrf_token FROM sessions WHERE user_id = ANY(:u)"), {"u": users})
        csrf = dict(rows.tuples().all())
    return [(u, token, csrf[u]) for u, token in zip(users, tokens, strict=True)]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    with psycopg.connect(
        make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql").render_as_string(False)
    ) as c:
        version = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, PostgreSQL {version}, Python {platform.python_version()}"


def git_revision() -> str:
    return subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=PROJECT, capture_output=True, text=True
    ).stdout.strip()


__all__ = ["Bench", "Server", "SmtpServer", "Worker"]
