"""Row-level security as the second wall: the app role sees only the tenant of its transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from invoice_export.db.session import app_engine, app_transaction, tenant_transaction


def test_app_role_is_not_privileged(database: str) -> None:
    with app_engine().connect() as conn:
        role = conn.execute(
            text("SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        ).one()
        owners = (
            conn.execute(text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        )
        forced = (
            conn.execute(
                text(
                    "SELECT relname FROM pg_class WHERE relname IN ('invoices', 'exports', 'audit_logs', 'members', "
                    "'organizations') AND relrowsecurity AND relforcerowsecurity"
                )
            )
            .scalars()
            .all()
        )
    assert (role.rolname, role.rolsuper, role.rolbypassrls) == ("invoice_app", False, False)
    assert "invoice_app" not in owners
    assert sorted(forced) == ["audit_logs", "exports", "invoices", "members", "organizations"]


def test_no_tenant_sees_nothing(database: str) -> None:
    with app_transaction() as session:
        assert session.execute(text("SELECT count(*) FROM invoices")).scalar_one() == 0
        assert session.execute(text("SELECT count(*) FROM organizations")).scalar_one() == 0


def test_query_without_org_filter_returns_only_the_tenant(database: str) -> None:
    with tenant_transaction("org_acme") as session:
        orgs = session.execute(text("SELECT DISTINCT organization_id FROM invoices")).scalars().all()
        count = session.execute(text("SELECT count(*) FROM invoices")).scalar_one()
    assert orgs == ["org_acme"]
    assert count == 240


def test_tenant_setting_does_not_outlive_its_transaction(database: str) -> None:
    with tenant_transaction("org_acme") as session:
        assert session.execute(text("SELECT count(*) FROM invoices")).scalar_one() == 240
    # Same pool, next transaction: nothing leaks across.
    for _ in range(3):
        with app_transaction() as session:
            assert session.execute(text("SELECT current_setting('app.org_id', true)")).scalar() in (None, "")
            assert session.execute(text("SELECT count(*) FROM invoices")).scalar_one() == 0


def test_cross_tenant_write_is_refused(database: str) -> None:
    with pytest.raises(ProgrammingError, match="row-level security"), tenant_transaction("org_acme") as session:
        session.execute(
            text(
                "INSERT INTO audit_logs (organization_id, action, target_type, target_id) "
                "VALUES ('org_globex', 'x', 'y', 'z')"
            )
        )
    with tenant_transaction("org_acme") as session:
        updated = session.execute(text("UPDATE exports SET error = 'x' WHERE organization_id = 'org_globex'")).rowcount
    assert updated == 0
