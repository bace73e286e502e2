"""Sign-in, sessions and sign-out: server-side sessions that expire and rotate, safe cookies,
and failed sign-ins slowed down per account and per client address, persisted in the database."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from invoice_export.orgs.sessions import lookup_session
from invoice_export.orgs.throttle import ThrottleKey, delay_after
from invoice_export.settings import get_settings
from invoice_export.web.app import create_app
from tests.conftest import make_org
from tests.web.conftest import sign_in

PASSWORD = "a-long-test-password"


def _post_signin(client: TestClient, email: str, password: str):  # type: ignore[no-untyped-def]
    return client.post("/signin", data={"email": email, "password": password}, follow_redirects=False)


def test_session_cookie_is_http_only_same_site_and_rotated(client: TestClient) -> None:
    response = _post_signin(client, "alice@example.com", "demo-password")
    cookie = response.headers["set-cookie"]
    assert "ie_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # APP_ENV=test runs on plain http
    first = client.cookies["ie_session"]
    assert lookup_session(first) is not None
    # Signing in again (or with a token planted before sign-in) yields a new token; the old one is gone.
    _post_signin(client, "alice@example.com", "demo-password")
    second = client.cookies["ie_session"]
    assert second != first
    assert lookup_session(first) is None and lookup_session(second) is not None


def test_production_cookies_are_secure(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "a-real-production-secret-of-more-than-32-chars")
    monkeypatch.setenv("APP_DB_PASSWORD", "a-real-database-password")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://testserver")
    get_settings.cache_clear()
    try:
        assert get_settings().secure_cookies
        client = TestClient(create_app(), base_url="https://testserver")
        response = _post_signin(client, "alice@example.com", "demo-password")
        assert "Secure" in response.headers["set-cookie"] and "HttpOnly" in response.headers["set-cookie"]
        assert response.headers["strict-transport-security"].startswith("max-age=")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_an_expired_session_signs_out(client: TestClient, admin_conn) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "carol@example.com")
    token = client.cookies["ie_session"]
    session = lookup_session(token)
    assert session is not None
    admin_conn.execute(
        text("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = :id"), {"id": session.session_id}
    )
    admin_conn.commit()
    assert lookup_session(token) is None
    response = client.get("/inspector", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/signin?next=/inspector"
    assert client.get("/api/exports/exp-0123456789abcdef-1").status_code == 401


def test_sign_out_ends_the_session(client: TestClient) -> None:
    csrf = sign_in(client, "dave@example.com")
    token = client.cookies["ie_session"]
    assert client.post("/signout", follow_redirects=False).status_code == 403
    assert lookup_session(token) is not None
    response = client.post("/signout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/signin"
    assert 'ie_session=""' in response.headers["set-cookie"] and "Max-Age=0" in response.headers["set-cookie"]
    assert lookup_session(token) is None
    client.cookies.set("ie_session", token)  # a copied cookie is worthless after sign-out
    assert client.get("/inspector", follow_redirects=False).status_code == 303


def test_delays_double_up_to_a_cap() -> None:
    assert [delay_after(n, 5).total_seconds() for n in (1, 4, 5, 6, 7, 8, 20)] == [0, 0, 30, 60, 120, 240, 900]


def test_failed_sign_ins_of_an_account_are_slowed_down(database: str, admin_conn) -> None:  # type: ignore[no-untyped-def]
    _, user_id = make_org([], password=PASSWORD)
    email = f"{user_id.removeprefix('user_')}@example.com"
    client = TestClient(create_app(), client=("192.0.2.10", 4000))
    free = get_settings().signin_free_failures_per_account
    for attempt in range(1, free + 1):
        response = _post_signin(client, email, "wrong")
        assert response.status_code == 401 and "do not match" in response.text
        assert ("Retry-After" in response.headers) == (attempt == free)
    assert "wait 30 seconds" in response.text

    # Even the right password waits, from another address and another web process (persisted).
    elsewhere = TestClient(create_app(), client=("192.0.2.11", 4000))
    refused = _post_signin(elsewhere, email, PASSWORD)
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.text and 0 < int(refused.headers["Retry-After"]) <= 30
    assert "ie_session" not in elsewhere.cookies
    digest = ThrottleKey.account(email, free).digest
    row = admin_conn.execute(text("SELECT failures FROM sign_in_throttles WHERE key = :k"), {"k": digest}).one()
    assert row.failures == free  # refused tries are not counted

    admin_conn.execute(text("UPDATE sign_in_throttles SET blocked_until = now() WHERE key = :k"), {"k": digest})
    admin_conn.commit()
    assert _post_signin(elsewhere, email, PASSWORD).status_code == 303
    gone = admin_conn.execute(text("SELECT count(*) FROM sign_in_throttles WHERE key = :k"), {"k": digest})
    assert gone.scalar_one() == 0


def test_failed_sign_ins_from_one_address_are_slowed_down(database: str) -> None:
    spraying = TestClient(create_app(), client=("198.51.100.7", 5000))
    for n in range(get_settings().signin_free_failures_per_client):
        assert _post_signin(spraying, f"nobody{n}@example.com", "guess").status_code == 401
    assert _post_signin(spraying, "erin@example.com", "demo-password").status_code == 429
    other_address = TestClient(create_app(), client=("198.51.100.8", 5000))
    assert _post_signin(other_address, "erin@example.com", "demo-password").status_code == 303
