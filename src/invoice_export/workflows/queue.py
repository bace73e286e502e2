"""The `exports` queue and how the web process reaches the workflow engine.

The web process never imports workflow code: it enqueues by name through a DBOSClient, in the
same database transaction that writes the exports row (both live in one PostgreSQL database), so
a run exists exactly when its row does.
"""

from __future__ import annotations

import functools

from dbos import DBOSClient

from invoice_export.db.urls import DatabaseUrls, get_urls

APP_NAME = "invoice-export"
QUEUE_NAME = "exports"
WORKFLOW_NAME = "export_invoices"
# Pinned, not derived from the code: a restarted or upgraded worker must recover runs that an
# earlier build started. Bump it only with a plan for runs in flight (see ARCHITECTURE.md).
APP_VERSION = "invoice-export-1"


def queue_options(poll_seconds: float) -> dict[str, object]:
    """One run at a time per org (the partition key is the org id), orgs in parallel."""
    return {"partition_concurrency": 1, "polling_interval_sec": poll_seconds}


def declare_queue(urls: DatabaseUrls) -> None:
    """Create the queue's row so that enqueues are valid before any worker has started."""
    from invoice_export.settings import get_settings

    client = DBOSClient(
        system_database_url=urls.admin.set(drivername="postgresql").render_as_string(hide_password=False),
        application_name=APP_NAME,
    )
    try:
        client.register_queue(QUEUE_NAME, **queue_options(get_settings().queue_poll_seconds))  # type: ignore[arg-type]
    finally:
        client.destroy()


@functools.cache
def engine_client() -> DBOSClient:
    """The web process's client, connected as invoice_app."""
    return DBOSClient(system_database_url=get_urls().app_plain, application_name=APP_NAME, system_database_pool_size=4)


def enqueue_options(run_id: str, org_id: str) -> dict[str, object]:
    return {
        "queue_name": QUEUE_NAME,
        "workflow_name": WORKFLOW_NAME,
        "workflow_id": run_id,
        "queue_partition_key": org_id,
        "app_version": APP_VERSION,
    }
