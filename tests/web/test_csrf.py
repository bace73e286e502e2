"""CSRF: every state-changing request needs the session's token, and cross-site requests are
refused, including sign-in. The check is app-wide, so a route that forgets it is still covered."""

from __future__ import annotations

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import text

from invoice_export.web.app import create_app
from tests.web.conftest import sign_in

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def api_routes(routes: list[object]) -> list[APIRoute]:
    """Every endpoint of the app, including those of included routers."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += api_routes(route.original_router.routes)
    return found


def _table_counts(admin_conn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {
        table: admin_conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
        for table in ("exports", "audit_logs", "sessions")
    }


def test_every_state_changing_route_refuses_a_missing_or_wrong_token(client: TestClient, admin_conn) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "alice@example.com")
    routes = [
        (method, route.path)
        for route in api_routes(client.app.routes)  # type: ignore[attr-defined]
        for method in route.methods & UNSAFE
        if route.path != "/signin"
    ]
    assert ("POST", "/exports") in routes and ("POST", "/api/exports") in routes
    before = _table_counts(admin_conn)
    for method, path in routes:
        url = path.replace("{run_id}", "exp-0123456789abcdef-1").replace("{export_id}", "0" * 32)
        for kwargs in ({}, {"data": {"csrf_token": "forged"}}, {"headers": {"X-CSRF-Token": "forged"}}):
            response = client.request(method, url, follow_redirects=False, **kwargs)  # type: ignore[arg-type]
            # A form body sent to the JSON API is refused even earlier, as an unreadable type.
            refused = (403, 415) if url.startswith("/api/") and "data" in kwargs else (403,)
            assert response.status_code in refused, (method, url, kwargs, response.text)
    assert _table_counts(admin_conn) == before


def test_a_route_that_forgets_its_csrf_dependency_is_still_protected(database: str) -> None:
    app = create_app()

    @app.post("/forgetful")
    def forgetful() -> dict[str, bool]:
        return {"changed": True}

    client = TestClient(app)
    assert client.post("/forgetful", follow_redirects=False).status_code == 303  # signed out: sign in first
    csrf = sign_in(client, "alice@example.com")
    assert client.post("/forgetful").status_code == 403
    assert client.post("/forgetful", headers={"X-CSRF-Token": csrf}).json() == {"changed": True}
    assert client.post("/forgetful", data={"csrf_token": csrf}).json() == {"changed": True}


def test_cross_site_requests_are_refused_even_with_a_token(client: TestClient) -> None:
    csrf = sign_in(client, "alice@example.com")
    evil = {"Origin": "https://evil.example"}
    login = client.post(
        "/signin",
        data={"email": "alice@example.com", "password": "demo-password"},
        headers=evil,
        follow_redirects=False,
    )
    assert login.status_code == 403
    assert client.post("/exports", data={"csrf_token": csrf}, headers=evil).status_code == 403
    fetch_metadata = {"Sec-Fetch-Site": "cross-site", "X-CSRF-Token": csrf}
    assert client.post("/api/exports", headers=fetch_metadata).status_code == 403
    same_site = {"Origin": "http://testserver", "X-CSRF-Token": csrf}
    assert client.post("/api/exports", headers=same_site).status_code == 202
