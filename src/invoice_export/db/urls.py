"""Where the database is: the admin URL (owner of the tables, runs migrations) and the app URL
(role `invoice_app`: not a superuser, does not bypass RLS, does not own the tables)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy.engine import URL, make_url

from invoice_export.settings import Settings

APP_ROLE = "invoice_app"
EMBEDDED_DATABASE = "invoice_export"


@dataclass(frozen=True)
class DatabaseUrls:
    admin: URL
    app: URL

    @property
    def app_plain(self) -> str:
        """The app URL without a driver suffix, as DBOS wants it."""
        return self.app.set(drivername="postgresql").render_as_string(hide_password=False)


def _psycopg(url: URL) -> URL:
    return url.set(drivername="postgresql+psycopg")


def resolve_urls(settings: Settings) -> DatabaseUrls:
    if settings.database_url is None:
        from invoice_export.db.embedded import start_embedded

        admin = _psycopg(make_url(start_embedded(settings.data_dir))).set(database=EMBEDDED_DATABASE)
        app = admin.set(username=APP_ROLE, password=None)
    else:
        admin = _psycopg(make_url(settings.database_url))
        if settings.app_database_url:
            app = _psycopg(make_url(settings.app_database_url))
        else:
            app = admin.set(username=APP_ROLE, password=settings.app_db_password)
    return DatabaseUrls(admin=admin, app=app)


@functools.cache
def get_urls() -> DatabaseUrls:
    from invoice_export.settings import get_settings

    return resolve_urls(get_settings())
