"""Bringing up the workflow engine inside a worker process (or the demo's in-process worker)."""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from dbos import DBOS, DBOSConfig, SQLAlchemyDatasource

from invoice_export.db.session import app_engine
from invoice_export.db.urls import get_urls
from invoice_export.settings import Settings
from invoice_export.workflows.queue import APP_NAME, APP_VERSION, QUEUE_NAME, queue_options

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_datasource: SQLAlchemyDatasource | None = None


def datasource() -> SQLAlchemyDatasource:
    if _datasource is None:
        raise RuntimeError("the workflow engine is not running in this process (call launch first)")
    return _datasource


def tenant_write(func: Callable[P, R]) -> Callable[P, R]:
    """A datasource transaction: the function's writes and the step's checkpoint commit together,
    so the step takes effect exactly once even if the worker dies around it."""

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return datasource().transaction(name=func.__name__)(func)(*args, **kwargs)

    return run


def launch(settings: Settings, executor_id: str) -> None:
    """Start the engine as `executor_id` with the pinned version, then serve the exports queue.

    Runs that this executor id left unfinished (a killed worker restarted with the same
    WORKER_ID) are recovered by `DBOS.launch()`.
    """
    global _datasource
    urls = get_urls()
    config: DBOSConfig = {
        "name": APP_NAME,
        "system_database_url": urls.app_plain,
        "application_version": APP_VERSION,
        "executor_id": executor_id,
        "run_migrations": False,
        "sys_db_pool_size": 8,
        "notification_listener_polling_interval_sec": 0.1,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    _datasource = SQLAlchemyDatasource.create(urls.app_plain, engine=app_engine(), run_migrations=False)
    import invoice_export.workflows.export  # noqa: F401  (registers the workflow and its steps)

    DBOS.launch()
    # Everything loaded so far lives as long as the process. Freezing it keeps the collector from
    # walking that whole heap again and again while pages allocate their rows.
    gc.collect()
    gc.freeze()
    DBOS.register_queue(QUEUE_NAME, **queue_options(settings.queue_poll_seconds))  # type: ignore[arg-type]
    log.info("worker %s serving queue %s (version %s)", executor_id, QUEUE_NAME, APP_VERSION)


def shutdown() -> None:
    global _datasource
    DBOS.destroy(workflow_completion_timeout_sec=0)
    _datasource = None
