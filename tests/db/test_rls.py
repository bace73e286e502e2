"""Row-level security as the second wall: the app role sees only the tenant of its transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

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


@pytest.mark.parametrize(
    ("table", "expected"),
    [("invoices", 240), ("exports", None), ("audit_logs", None), ("members", 2), ("organizations", 1)],
)
def test_every_tenant_table_hides_other_tenants_without_an_org_filter(
    database: str, table: str, expected: int | None
) -> None:
    column = "id" if table == "organizations" else "organization_id"
    with tenant_transaction("org_acme") as session:
        orgs = set(session.execute(text(f"SELECT DISTINCT {column} FROM {table}")).scalars())
        count = session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    assert orgs <= {"org_acme"}
    if expected is not None:
        assert count == expected


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO exports (id, organization_id, requested_by, status, run_id, idempotency_key, day_bucket) "
        "VALUES (gen_random_uuid(), 'org_globex', 'user_carol', 'queued', 'exp-rls', 'k', current_date)",
        "UPDATE exports SET organization_id = 'org_globex' WHERE organization_id = 'org_acme'",
        "INSERT INTO audit_logs (organization_id, action, target_type, target_id) VALUES ('org_globex', 'x', 'y', 'z')",
    ],
)
def test_cross_tenant_writes_are_refused_by_the_policy(database: str, admin_conn, statement: str) -> None:  # type: ignore[no-untyped-def]
    admin_conn.execute(
        text(
            "INSERT INTO exports (id, organization_id, requested_by, status, run_id, idempotency_key, day_bucket) "
            "VALUES (gen_random_uuid(), 'org_acme', 'user_alice', 'completed', 'exp-rls-' || gen_random_uuid(), "
            "'k', DATE '2024-01-01' + (random() * 1000)::int) ON CONFLICT DO NOTHING"
        )
    )
    admin_conn.commit()
    with pytest.raises(ProgrammingError, match="row-level security"), tenant_transaction("org_acme") as session:
        session.execute(text(statement))


def test_without_a_tenant_nothing_can_be_written(database: str) -> None:
    with pytest.raises(ProgrammingError, match="row-level security"), app_transaction() as session:
        session.execute(
            text(
                "INSERT INTO audit_logs (organization_id, action, target_type, target_id) "
                "VALUES ('org_acme', 'x', 'y', 'z')"
            )
        )


def test_the_app_role_cannot_delete_or_change_the_schema(database: str) -> None:
    for statement in ("DELETE FROM exports", "DELETE FROM invoices", "ALTER TABLE invoices DISABLE ROW LEVEL SECURITY"):
        with (
            pytest.raises(ProgrammingError, match=r"permission denied|must be owner"),
            tenant_transaction("org_acme") as session,
        ):
            session.execute(text(statement))


def test_a_pooled_connection_never_carries_a_tenant_into_the_next_use(database: str) -> None:
    """One physical connection, reused: after a committed, a failed and a rolled-back tenant
    transaction, the next user of the connection (another request, another step) sees no tenant."""
    from invoice_export.db.session import set_tenant
    from invoice_export.db.urls import get_urls

    engine = create_engine(get_urls().app, pool_size=1, max_overflow=0)
    try:
        pids = set()

        def next_use_sees_nothing() -> None:
            with engine.connect() as conn:
                pids.add(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
                assert conn.execute(text("SELECT current_setting('app.org_id', true)")).scalar() in (None, "")
                assert conn.execute(text("SELECT current_setting('app.user_id', true)")).scalar() in (None, "")
                assert conn.execute(text("SELECT count(*) FROM invoices")).scalar_one() == 0

        with Session(engine) as session, session.begin():  # committed
            set_tenant(session, "org_acme", "user_alice")
            pids.add(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
            assert session.execute(text("SELECT count(*) FROM invoices")).scalar_one() == 240
        next_use_sees_nothing()

        with pytest.raises(ProgrammingError), Session(engine) as session, session.begin():  # failed
            set_tenant(session, "org_globex")
            session.execute(text("SELECT no_such_column FROM invoices"))
        next_use_sees_nothing()

        with Session(engine) as session:  # rolled back without commit
            session.begin()
            set_tenant(session, "org_initech")
            assert session.execute(text("SELECT count(*) FROM invoices")).scalar_one() == 200
            session.rollback()
        next_use_sees_nothing()
        assert len(pids) == 1, "the test must reuse one physical connection"
    finally:
        engine.dispose()


def test_interleaved_tenants_on_one_connection_see_only_themselves(database: str) -> None:
    """Like worker steps of two orgs taking turns on a one-connection pool."""
    from invoice_export.db.session import set_tenant
    from invoice_export.db.urls import get_urls

    engine = create_engine(get_urls().app, pool_size=1, max_overflow=0)
    try:
        seen = []
        for org_id in ["org_acme", "org_globex", "org_acme", "org_initech", None]:
            with Session(engine) as session, session.begin():
                if org_id is not None:
                    set_tenant(session, org_id)
                seen.append(
                    session.execute(text("SELECT array_agg(DISTINCT organization_id) FROM invoices")).scalar_one()
                )
        assert seen == [["org_acme"], ["org_globex"], ["org_acme"], ["org_initech"], None]
    finally:
        engine.dispose()
