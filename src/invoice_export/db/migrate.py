"""`invoice-export db migrate`: everything a database needs before the app or a worker starts.

Runs as the admin URL's role: creates the database if missing, the `invoice_app` role (when this
role may create roles), the app's tables through Alembic, and the workflow engine's schemas with
grants for `invoice_app`, so that the app and workers never need DDL rights.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from psycopg import sql
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from invoice_export.db.urls import APP_ROLE, DatabaseUrls

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: URL) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def ensure_database(admin: URL) -> None:
    server = create_engine(admin.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": admin.database})
            if exists.scalar() is None:
                conn.execute(text(f'CREATE DATABASE "{admin.database}"'))
                log.info("created database %s", admin.database)
    finally:
        server.dispose()


def ensure_app_role(admin: URL, password: str | None) -> None:
    """Create or update role invoice_app: LOGIN, NOSUPERUSER, NOBYPASSRLS, never an owner."""
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            may_create = conn.execute(
                text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
            ).scalar()
            exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": APP_ROLE}).scalar()
            if not may_create:
                if not exists:
                    raise RuntimeError(
                        f"role {APP_ROLE} does not exist and {admin.username} may not create roles; "
                        f"create it (LOGIN NOSUPERUSER NOBYPASSRLS) or run db migrate as a role that can"
                    )
                return
            verb = "ALTER" if exists else "CREATE"
            attrs = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
            statement: sql.Composable = sql.SQL(f"{verb} ROLE {APP_ROLE} {attrs}")
            if password:
                # DDL takes no bind parameters: quote the password as a literal.
                statement = statement + sql.SQL(" PASSWORD {}").format(sql.Literal(password))
            conn.exec_driver_sql(statement.as_string(conn.connection.driver_connection))
            conn.execute(text(f'GRANT CONNECT ON DATABASE "{admin.database}" TO {APP_ROLE}'))
    finally:
        engine.dispose()


def migrate_workflow_engine(admin: URL) -> None:
    """The workflow engine's system schema (`dbos`) and its datasource checkpoint table, both in
    the app's database, with the minimal grants for invoice_app."""
    from dbos import DBOS, SQLAlchemyDatasource

    plain = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    DBOS.migrate(plain, application_role=APP_ROLE)
    SQLAlchemyDatasource.migrate(plain, application_role=APP_ROLE)


def migrate(urls: DatabaseUrls, app_password: str | None) -> None:
    ensure_database(urls.admin)
    ensure_app_role(urls.admin, app_password)
    command.upgrade(alembic_config(urls.admin), "head")
    migrate_workflow_engine(urls.admin)
    from invoice_export.workflows.queue import declare_queue

    declare_queue(urls)
