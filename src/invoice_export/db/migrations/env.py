from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from invoice_export.db.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = context.config.attributes.get("url")
    if url is None:
        from invoice_export.db.urls import get_urls

        url = get_urls().admin
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


run_migrations_online()
