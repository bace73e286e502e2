"""The worker process: serves the `exports` queue until told to stop.

Its engine executor id is WORKER_ID. Runs left unfinished under that id (the process was killed)
are recovered when a process with the same id starts again. Two live processes must never share
an id (they would re-run each other's steps), so the id is held as a PostgreSQL advisory lock for
the life of the process and a second claimant is refused.
"""

from __future__ import annotations

import logging
import signal
import threading

import psycopg

from invoice_export.db.urls import get_urls
from invoice_export.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_WORKER_ID = "worker-1"


class WorkerIdInUse(Exception):
    pass


def claim_worker_id(worker_id: str) -> psycopg.Connection:
    """Hold `worker_id` for this process's lifetime; the lock dies with the process (or its
    connection), so a killed worker's id is free again at once."""
    url = get_urls().app.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg.connect(url, autocommit=True, application_name=f"invoice-export {worker_id}")
    held = conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended('invoice-export worker ' || %s, 0))", (worker_id,)
    ).fetchone()
    if not held or not held[0]:
        conn.close()
        raise WorkerIdInUse(
            f"WORKER_ID {worker_id!r} is held by another live process; give every worker its own WORKER_ID"
        )
    return conn


def run_worker(settings: Settings, worker_id: str, stop: threading.Event | None = None) -> None:
    from invoice_export.workflows import runtime

    lock = claim_worker_id(worker_id)
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        runtime.launch(settings, worker_id)
        log.warning("worker %s ready", worker_id)
        print(f"worker {worker_id} ready", flush=True)
        stop.wait()
    finally:
        runtime.shutdown()
        lock.close()
