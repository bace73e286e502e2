"""Worker processes: who is alive, and who continues the runs of a worker that died.

A worker's engine executor id is its WORKER_ID. The engine recovers a run only in a process with
the run's executor id, so the id must be unique among live processes (two would re-run each
other's steps) and a dead id's runs must be moved on, or its orgs' lanes stay blocked. Both rest
on one fact: a live worker holds its id as a PostgreSQL session advisory lock on a connection of
its own, and PostgreSQL frees the lock when that connection ends (the process died, or lost it).

- claim: at start-up the lock is taken, retrying for a few seconds (a peer may be holding it for
  a moment while it takes over this id's runs); a live holder is refused with a clear error.
- fence: every second the process checks that its lock connection still answers; if it does not,
  a peer may take its runs now, so the process exits at once rather than run them alongside.
- take over: every few seconds a worker looks for other executor ids with PENDING runs of this
  app version. An id whose lock nobody holds, still after a grace period longer than the fence
  needs to stop a worker that lost its lock, belongs to no live process: under that id's lock the
  runs go back to their own queue, partition and version through the engine's recovery path, and
  any live worker continues them from their checkpoints (the step in flight runs again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import psycopg

from invoice_export.db.urls import get_urls
from invoice_export.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_WORKER_ID = "worker-1"
# How long a start-up claim waits for a holder to let go before refusing.
CLAIM_WAIT_SECONDS = 5.0
FENCE_INTERVAL_SECONDS = 1.0
# The exit status of a fenced worker: a temporary failure, so a supervisor restarts it.
FENCED_EXIT_CODE = 75
TAKEOVER_SCAN_SECONDS = 2.0
# Longer than a fence check plus the client's TCP timeout (3 s, below): a worker whose lock
# connection broke has exited before its runs are handed to others.
TAKEOVER_GRACE_SECONDS = 6.0

# The server drops a lock connection whose peer went silent (a host that died without closing
# its sockets) after 5 s idle plus 3 unanswered probes 2 s apart, so the lock, and the runs, are
# free within about 11 s; the client gives up on unacknowledged data after 3 s, so a worker cut
# off from the server fences itself well before that. Unix sockets ignore these.
_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
_SERVER_KEEPALIVE = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
_LOCK_KEY = "hashtextextended('invoice-export worker ' || %s, 0)"


class WorkerIdInUse(Exception):
    pass


def _connect(purpose: str) -> psycopg.Connection:
    url = get_urls().app.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(
        url,
        autocommit=True,
        application_name=purpose,
        connect_timeout=10,
        tcp_user_timeout=3000,
        options=_SERVER_KEEPALIVE,
        **_KEEPALIVE,  # type: ignore[arg-type]
    )


def claim_worker_id(worker_id: str) -> psycopg.Connection:
    """Hold `worker_id` for this process's lifetime on a connection of its own. The lock dies with
    the process (or the connection), so a killed worker's id is free again at once."""
    conn = _connect(f"invoice-export {worker_id}")
    deadline = time.monotonic() + CLAIM_WAIT_SECONDS
    while True:
        held = conn.execute(f"SELECT pg_try_advisory_lock({_LOCK_KEY})", (worker_id,)).fetchone()
        if held and held[0]:
            return conn
        if time.monotonic() >= deadline:
            conn.close()
            raise WorkerIdInUse(
                f"WORKER_ID {worker_id!r} is held by another live process; give every worker its own WORKER_ID"
            )
        time.sleep(0.2)


def _fence(lock: psycopg.Connection, worker_id: str, stop: threading.Event) -> None:
    """Exit the process as soon as the lock connection stops answering: from then on nothing
    proves this worker alive, and a peer may already be running its runs."""
    while not stop.wait(FENCE_INTERVAL_SECONDS):
        try:
            lock.execute("SELECT 1")
        except psycopg.Error as exc:
            if stop.is_set():
                return
            print(
                f"worker {worker_id} lost the connection that holds its WORKER_ID ({exc}); "
                "exiting so that a live worker can take over its runs",
                file=sys.stderr,
                flush=True,
            )
            os._exit(FENCED_EXIT_CODE)


def _lock_is_held(conn: psycopg.Connection, worker_id: str) -> bool:
    """Whether any session of this database holds `worker_id`'s lock. A look at pg_locks, not a
    try-lock, so that looking never gets in the way of that worker claiming its id."""
    found = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        f" AND ((classid::bigint << 32) | objid::bigint) = {_LOCK_KEY})",
        (worker_id,),
    ).fetchone()
    return bool(found and found[0])


def _recover_if_still_dead(conn: psycopg.Connection, dead_id: str) -> int:
    """Under `dead_id`'s own lock (so no process can claim that id meanwhile), put its PENDING
    runs back on their queue. Returns how many; 0 if the id was claimed after all."""
    from dbos import DBOS

    held = conn.execute(f"SELECT pg_try_advisory_lock({_LOCK_KEY})", (dead_id,)).fetchone()
    if not held or not held[0]:
        return 0
    try:
        # Private API (dbos==3.4.0 is pinned exactly; see ARCHITECTURE.md for why no public call
        # will do): the engine's own recovery. It re-enqueues each PENDING run of that id and this
        # app version onto its own queue and partition, only while the run still names that
        # executor, so a run that some worker already dequeued is left alone.
        return len(DBOS._recover_pending_workflows([dead_id]))
    finally:
        conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})", (dead_id,))


def _take_over_dead_workers(worker_id: str, stop: threading.Event) -> None:
    """Every few seconds: hand the runs of executor ids that no live process holds to the queue.
    An id counts as dead once its lock has been seen free for TAKEOVER_GRACE_SECONDS on every
    look; seeing it held once starts the count again."""
    from dbos import DBOS

    from invoice_export.workflows.queue import APP_VERSION

    free_since: dict[str, float] = {}
    conn: psycopg.Connection | None = None
    while not stop.wait(TAKEOVER_SCAN_SECONDS):
        try:
            if conn is None or conn.closed:
                conn = _connect(f"invoice-export {worker_id} takeover")
            pending = DBOS.list_workflows(
                status="PENDING", app_version=APP_VERSION, load_input=False, load_output=False
            )
            others = {run.executor_id for run in pending if run.executor_id and run.executor_id != worker_id}
            free_since = {
                other: free_since.get(other, time.monotonic()) for other in others if not _lock_is_held(conn, other)
            }
            for dead_id, since in free_since.items():
                if time.monotonic() - since >= TAKEOVER_GRACE_SECONDS:
                    taken = _recover_if_still_dead(conn, dead_id)
                    if taken:
                        log.warning("worker %s took over %d run(s) of dead worker %s", worker_id, taken, dead_id)
        except Exception:
            log.exception("worker %s: looking for dead workers failed; trying again", worker_id)
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


@contextlib.contextmanager
def serving(settings: Settings, worker_id: str) -> Iterator[None]:
    """Run the workflow engine in this process as `worker_id` for the duration of the block:
    claim the id, fence on it, start the engine (which recovers this id's own unfinished runs),
    and take over runs of dead workers. Raises WorkerIdInUse if a live process holds the id."""
    from invoice_export.workflows import runtime

    lock = claim_worker_id(worker_id)
    stop = threading.Event()
    fence = threading.Thread(target=_fence, args=(lock, worker_id, stop), name="worker-fence", daemon=True)
    fence.start()
    takeover = threading.Thread(
        target=_take_over_dead_workers, args=(worker_id, stop), name="worker-takeover", daemon=True
    )
    try:
        runtime.launch(settings, worker_id)
        takeover.start()
        yield
    finally:
        stop.set()
        fence.join()
        if takeover.is_alive():
            takeover.join(timeout=10)
        runtime.shutdown()
        lock.close()


def run_worker(settings: Settings, worker_id: str, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with serving(settings, worker_id):
        log.warning("worker %s ready", worker_id)
        print(f"worker {worker_id} ready", flush=True)
        stop.wait()
