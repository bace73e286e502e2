"""Test set-up: a real PostgreSQL, a fresh database per test session, real worker processes.

The server is TEST_DATABASE_URL or DATABASE_URL when set (CI uses the machine's PostgreSQL
service); otherwise an embedded PostgreSQL in a temporary folder, so the README's test command
works on a machine with nothing installed. Each session creates its own database on that server
and exports DATABASE_URL so that worker subprocesses use it too.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PROJECT = Path(__file__).resolve().parents[1]


def _reset_caches() -> None:
    from invoice_export.db import session, urls
    from invoice_export.settings import get_settings
    from invoice_export.workflows import queue

    for cached in (get_settings, urls.get_urls, session.app_engine, session.admin_engine, queue.engine_client):
        cached.cache_clear()


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ie-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database(data_dir: Path) -> Iterator[str]:
    """Admin URL of a brand-new, migrated and seeded database for this test session."""
    base = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    embedded_dir: Path | None = None
    if not base:
        from invoice_export.db.embedded import start_embedded

        embedded_dir = Path(tempfile.mkdtemp(prefix="iepg-", dir="/tmp"))
        base = start_embedded(embedded_dir)
    name = f"ie_test_{secrets.token_hex(4)}"
    url = make_url(base).set(drivername="postgresql+psycopg", database=name)
    os.environ["DATABASE_URL"] = url.render_as_string(hide_password=False)
    os.environ["INVOICE_EXPORT_DATA_DIR"] = str(data_dir)
    os.environ["APP_ENV"] = "test"
    os.environ.setdefault("QUEUE_POLL_SECONDS", "0.05")
    _reset_caches()
    from invoice_export.db.migrate import migrate
    from invoice_export.db.seed import seed
    from invoice_export.db.session import admin_engine
    from invoice_export.db.urls import get_urls
    from invoice_export.settings import get_settings

    migrate(get_urls(), get_settings().app_db_password)
    seed(admin_engine())
    yield os.environ["DATABASE_URL"]
    _reset_caches()
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()
    if embedded_dir is not None:
        from invoice_export.db.embedded import release_embedded

        release_embedded(embedded_dir)  # stop it while its folder still exists, then remove the folder
        shutil.rmtree(embedded_dir, ignore_errors=True)


@pytest.fixture
def admin_conn(database: str) -> Iterator[object]:
    from invoice_export.db.session import admin_engine

    with admin_engine().connect() as conn:
        yield conn


class Worker:
    """A real `invoice-export worker` process."""

    def __init__(self, worker_id: str, env: dict[str, str], log: Path) -> None:
        self.worker_id = worker_id
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Worker:
        env = os.environ | self.env | {"WORKER_ID": self.worker_id}
        self._log_file = open(self.log, "ab")  # noqa: SIM115
        self.log_offset = self._log_file.tell()  # a restart appends: only this start's lines count
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "invoice_export", "worker"],
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=PROJECT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"worker {self.worker_id} ready" in self.output():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.05)
        raise RuntimeError(f"worker not ready in {timeout}s:\n{self.log.read_text(errors='replace')}")

    def output(self) -> str:
        """What the process printed since this start."""
        with open(self.log, "rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def wait_killed(self, timeout: float = 60) -> None:
        """Wait for the process to die by SIGKILL (an armed failpoint kills it)."""
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        assert code == -9, f"worker exited with {code}, not SIGKILL:\n{self.log.read_text(errors='replace')}"
        self._log_file.close()

    def restart(self, **env: str) -> Worker:
        """Stop (if alive) and start again with the same WORKER_ID and only `env` on top."""
        self.stop()
        self.env = env
        return self.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


@pytest.fixture
def start_worker(database: str, tmp_path: Path) -> Iterator[object]:
    """Start worker processes: `start_worker("w1", EXPORT_PAGE_SIZE="10")`."""
    started: list[Worker] = []

    def start(worker_id: str | None = None, **env: str) -> Worker:
        worker_id = worker_id or f"test-{secrets.token_hex(3)}"
        worker = Worker(worker_id, env, tmp_path / f"{worker_id}.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def worker(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One shared worker process for tests that only need exports to run."""
    w = Worker(f"shared-{secrets.token_hex(3)}", {}, tmp_path_factory.mktemp("worker") / "w.log").start()
    yield w
    w.stop()


@pytest.fixture
def sole_worker(worker: Worker) -> Iterator[object]:
    """The shared worker, restarted with extra environment (failpoints, SMTP settings) for this
    test. It is the only live worker while the test runs, so it is the one that takes the runs;
    it is restarted with a clean environment afterwards."""

    def configure(**env: str) -> Worker:
        return worker.restart(**env)

    yield configure
    if worker.env or not worker.alive:
        worker.restart()


@pytest.fixture
def shared_worker_paused(worker: Worker) -> Iterator[None]:
    """No shared worker while the test runs (it brings its own processes)."""
    worker.stop()
    yield
    worker.restart()


class SmtpServer:
    """A real SMTP server (aiosmtpd) that records what it accepts and refuses on request."""

    def __init__(self) -> None:
        import socket

        from aiosmtpd.controller import Controller

        self.accepted: list[bytes] = []
        self.attempts = 0
        self.refusals: list[str] = []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    def refuse(self, reply: str, times: int = 1) -> None:
        self.refusals.extend([reply] * times)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.attempts += 1
        if self.refusals:
            return self.refusals.pop(0)
        self.accepted.append(envelope.original_content or envelope.content)  # type: ignore[attr-defined]
        return "250 Message accepted for delivery"

    def env(self) -> dict[str, str]:
        return {"EMAIL_BACKEND": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port)}

    def messages(self) -> list[object]:
        from email import policy
        from email.parser import BytesParser

        return [BytesParser(policy=policy.default).parsebytes(raw) for raw in self.accepted]


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.controller.start()
    yield server
    server.controller.stop()


def wait_for_status(org_id: str, user_id: str, run_id: str, timeout: float = 60) -> object:
    from invoice_export.exports.service import get_export

    deadline = time.monotonic() + timeout
    while True:
        view = get_export(org_id, user_id, run_id)
        if view.status in ("completed", "failed", "canceled"):
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {view.status} after {timeout}s")
        time.sleep(0.05)


def make_org(invoices: list[dict[str, object]], role: str = "owner", password: str | None = None) -> tuple[str, str]:
    """A fresh org with `invoices` and one member (who can sign in with `password`, if given,
    as t<suffix>@example.com); returns (org_id, user_id)."""
    from sqlalchemy.orm import Session

    from invoice_export.db.models import Invoice, Member, Organization, User
    from invoice_export.db.session import admin_engine, set_tenant
    from invoice_export.orgs.passwords import hash_password

    suffix = secrets.token_hex(4)
    org_id, user_id = f"org_t{suffix}", f"user_t{suffix}"
    with Session(admin_engine()) as session, session.begin():
        session.add(Organization(id=org_id, name=f"Test {suffix}"))
        session.add(
            User(
                id=user_id,
                email=f"t{suffix}@example.com",
                name=f"Tester {suffix}",
                password_hash=hash_password(password) if password else "x",
            )
        )
        session.flush()
        set_tenant(session, org_id)
        session.add(Member(organization_id=org_id, user_id=user_id, role=role))
        for n, fields in enumerate(invoices, start=1):
            row = {
                "number": f"T-{n:06d}",
                "customer_name": "Customer",
                "customer_email": "c@example.com",
                "amount_minor": 100,
                "currency": "USD",
                "status": "open",
                "due_at": None,
                "memo": None,
            } | fields
            session.add(Invoice(organization_id=org_id, **row))
    return org_id, user_id


def add_member(org_id: str, role: str = "member") -> str:
    """Another member of `org_id`; returns the user id."""
    from sqlalchemy.orm import Session

    from invoice_export.db.models import Member, User
    from invoice_export.db.session import admin_engine, set_tenant

    suffix = secrets.token_hex(4)
    user_id = f"user_t{suffix}"
    with Session(admin_engine()) as session, session.begin():
        session.add(User(id=user_id, email=f"t{suffix}@example.com", name=f"Tester {suffix}", password_hash="x"))
        session.flush()
        set_tenant(session, org_id)
        session.add(Member(organization_id=org_id, user_id=user_id, role=role))
    return user_id


def invoices(n: int) -> list[dict[str, object]]:
    """`n` invoices with distinct times and awkward memos (quotes, commas, line breaks)."""
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    return [
        {"issued_at": t0 + timedelta(minutes=i // 2), "memo": f'memo "{i}",\nline' if i % 3 else None} for i in range(n)
    ]


def wait_for_engine(run_id: str, timeout: float = 60) -> str:
    """Wait until the workflow engine has finished `run_id`; returns its final status."""
    from invoice_export.workflows.queue import engine_client

    deadline = time.monotonic() + timeout
    while True:
        found = engine_client().list_workflows(workflow_ids=[run_id], load_input=False)
        if found and found[0].status in ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"):
            return str(found[0].status)
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} not finished by the engine after {timeout}s")
        time.sleep(0.05)


def audit_count(action: str, export_id: object) -> int:
    from invoice_export.db.session import admin_engine

    with admin_engine().connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM audit_logs WHERE action = :a AND target_id = :t"),
                {"a": action, "t": str(export_id)},
            ).scalar_one()
        )


def export_files(data_dir: Path, export_id: object) -> list[Path]:
    """Every file the export left under the storage root (parts, temp files, final file)."""
    folder = data_dir / "exports" / str(export_id)
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def outbox_for(data_dir: Path, run_id: str) -> list[Path]:
    from invoice_export.email.message import message_id_for

    return [p for p in (data_dir / "outbox").glob("*.eml") if message_id_for(run_id).strip("<>") in p.name]


@pytest.fixture
def page_size(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Set EXPORT_PAGE_SIZE (and, if given, EXPORT_PAGE_CONCURRENCY) for runs started by this
    test; both travel in the payload. Tests that time a run by slowing its pages write one page
    at a time, so that a run lasts what its pages add up to."""
    from invoice_export.settings import get_settings

    def set_size(size: int, concurrency: int | None = None) -> None:
        monkeypatch.setenv("EXPORT_PAGE_SIZE", str(size))
        if concurrency is not None:
            monkeypatch.setenv("EXPORT_PAGE_CONCURRENCY", str(concurrency))
        get_settings.cache_clear()

    yield set_size
    monkeypatch.delenv("EXPORT_PAGE_SIZE", raising=False)
    monkeypatch.delenv("EXPORT_PAGE_CONCURRENCY", raising=False)
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def fresh_database(database: str) -> Iterator[str]:
    """Admin URL of a second migrated and seeded database that no other test module touches, for
    flows that need a seed user's first export of the day (one run per org, user and day)."""
    from invoice_export.db.migrate import migrate
    from invoice_export.db.seed import seed
    from invoice_export.db.urls import resolve_urls
    from invoice_export.settings import Settings

    url = make_url(database).set(database=f"ie_test_{secrets.token_hex(4)}")
    rendered = url.render_as_string(hide_password=False)
    settings = Settings(database_url=rendered)
    urls = resolve_urls(settings)
    migrate(urls, settings.app_db_password)
    engine = create_engine(urls.admin)
    seed(engine)
    engine.dispose()
    yield rendered
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    server.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A real `invoice-export serve --no-worker` process on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = open(log, "ab")  # noqa: SIM115
        command = [sys.executable, "-m", "invoice_export", "serve", "--no-worker", "--port", str(self.port)]
        self.processes = int((os.environ | env).get("SERVE_PROCESSES", "1"))
        command += ["--processes", str(self.processes)]
        self.proc = subprocess.Popen(
            command, env=os.environ | env, stdout=self._log_file, stderr=subprocess.STDOUT, cwd=PROJECT
        )

    def wait_ready(self, timeout: float = 60) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text(errors='replace')}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


@pytest.fixture(scope="module")
def start_server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Start web servers: `start_server(DATABASE_URL=..., EXPORT_PAGE_SIZE="2")` → Server."""
    started: list[Server] = []

    def start(**env: str) -> Server:
        server = Server(env, tmp_path_factory.mktemp("server") / "server.log")
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()


def slow_pages(pages: int, seconds: float) -> str:
    """A failpoint spec that makes each of the first `pages` pages pause `seconds` inside its
    transaction, so a run is still in flight when a test kills its worker."""
    return ",".join(f"page.read@{page}=sleep:{seconds}" for page in range(1, pages + 1))


def engine_run(run_id: str) -> object:
    """The workflow engine's record of `run_id` (status, executor, timestamps in epoch ms)."""
    from invoice_export.workflows.queue import engine_client

    found = engine_client().list_workflows(workflow_ids=[run_id], load_input=False, load_output=False)
    assert len(found) == 1, f"{len(found)} engine workflows for {run_id}"
    return found[0]


def wait_until(condition: object, timeout: float = 60, what: str = "condition") -> object:
    """Poll `condition()` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()  # type: ignore[operator]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout}s")
        time.sleep(0.05)


def reference_file(org_id: str, user_id: str) -> bytes:
    """An uninterrupted export of the same org (yesterday's run, so a separate run)."""
    from datetime import UTC, datetime, timedelta

    from invoice_export.exports.service import start_export

    run = start_export(org_id, user_id, now=datetime.now(UTC) - timedelta(days=1))
    view = wait_for_status(org_id, user_id, run.run_id)
    assert view.status == "completed", view.error  # type: ignore[attr-defined]
    return Path(view.csv_path).read_bytes()  # type: ignore[attr-defined]
