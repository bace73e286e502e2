"""Engines and the one way the app touches tenant data: a tenant transaction.

`app.org_id` (and `app.user_id`) are set with `set_config(..., true)`, i.e. local to the
transaction: when the transaction ends the setting is gone, so a pooled connection can never
carry one tenant into the next request or step. The RLS policies read these settings.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from invoice_export.db.urls import get_urls

SET_TENANT = text("SELECT set_config('app.org_id', :org_id, true), set_config('app.user_id', :user_id, true)")


@functools.cache
def app_engine() -> Engine:
    """Engine for role invoice_app. Small pool: workers and the web process share one server's
    max_connections with the workflow engine's own pools. No ping before each use (a round trip
    per transaction): a connection the server dropped fails its statement as a disconnect, which
    empties the pool, and the request answers an error or the step retries."""
    return create_engine(get_urls().app, pool_size=5, max_overflow=5)


@functools.cache
def admin_engine() -> Engine:
    return create_engine(get_urls().admin, pool_size=2, max_overflow=2, pool_pre_ping=True)


def set_tenant(session: Session, org_id: str | None, user_id: str | None = None) -> None:
    """Scope the current transaction to one org (and optionally one user) for the RLS policies."""
    session.execute(SET_TENANT, {"org_id": org_id or "", "user_id": user_id or ""})


@contextmanager
def tenant_transaction(
    org_id: str | None, user_id: str | None = None, isolation_level: str | None = None
) -> Iterator[Session]:
    """One transaction as invoice_app, scoped to `org_id`; commits on success, rolls back on error."""
    bind = app_engine() if isolation_level is None else app_engine().execution_options(isolation_level=isolation_level)
    with Session(bind, expire_on_commit=False) as session, session.begin():
        set_tenant(session, org_id, user_id)
        yield session


@contextmanager
def app_transaction() -> Iterator[Session]:
    """A transaction as invoice_app with no tenant: tenant tables look empty, by design."""
    with Session(app_engine(), expire_on_commit=False) as session, session.begin():
        yield session
