"""Bad input gets a clear 4xx (problem JSON for the API, a friendly page for browsers) and
writes nothing; every answer carries the security headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from invoice_export.settings import get_settings
from tests.web.conftest import completed_export, sign_in

TABLES = ("exports", "audit_logs", "sessions", "sign_in_throttles")


@pytest.fixture
def nothing_written(admin_conn) -> Iterator[Callable[[], None]]:  # type: ignore[no-untyped-def]
    """Signs nobody in itself: tests sign in first, then call `nothing_written()` as the baseline."""

    def counts() -> dict[str, int]:
        admin_conn.rollback()
        return {t: admin_conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}

    baseline: list[dict[str, int]] = []
    yield lambda: baseline.append(counts())
    assert baseline, "the test must take its baseline"
    assert counts() == baseline[0]


def _is_problem(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["code"] == code and body["detail"]


def _is_page(response, status: int, words: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert words in response.text and "<h1>" in response.text


def test_oversized_bodies_are_413(client: TestClient, nothing_written: Callable[[], None]) -> None:
    limit = get_settings().max_body_bytes
    csrf = sign_in(client, "alice@example.com")
    nothing_written()
    page = client.post("/signin", data={"email": "a@example.com", "password": "x" * limit})
    _is_page(page, 413, "larger than")
    api = client.post(
        "/api/exports",
        content=b"{" + b" " * limit + b"}",
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"},
    )
    _is_problem(api, 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body is counted as it arrives
        for _ in range(limit // 1024 + 2):
            yield b"x" * 1024

    streamed = client.post("/exports", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    _is_page(streamed, 413, "larger than")


def test_wrong_content_types_are_415(client: TestClient, nothing_written: Callable[[], None]) -> None:
    csrf = sign_in(client, "alice@example.com")
    nothing_written()
    _is_problem(
        client.post("/api/exports", content=b"hello", headers={"X-CSRF-Token": csrf, "Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    _is_page(client.post("/exports", json={"csrf_token": csrf}), 415, "Unsupported content type")
    _is_page(client.post("/signin", json={"email": "alice@example.com", "password": "demo-password"}), 415, "send")


def test_malformed_ids_are_clear_errors(client: TestClient, nothing_written: Callable[[], None]) -> None:
    sign_in(client, "alice@example.com")
    nothing_written()
    _is_problem(client.get("/api/exports/not-a-run-id"), 422, "invalid_input")
    _is_problem(client.get("/api/exports/" + "exp-" + "f" * 5000), 422, "invalid_input")
    _is_page(client.get("/exports/not-a-uuid/download"), 422, "malformed export id")
    _is_page(client.get("/downloads/garbage"), 404, "Not found")
    _is_page(client.get("/downloads/" + "a" * 600), 422, "Invalid input")
    _is_problem(client.get("/api/nothing-here"), 404, "http_404")
    _is_page(client.get("/nothing-here"), 404, "Not Found")


def test_unknown_orgs_are_404_and_change_nothing(client: TestClient, nothing_written: Callable[[], None]) -> None:
    csrf = sign_in(client, "bob@example.com")
    nothing_written()
    for org_id in ("org_nope", "org_initech", "<script>", ""):
        response = client.post("/orgs/active", data={"csrf_token": csrf, "org_id": org_id})
        assert response.status_code in (404, 422), (org_id, response.status_code)
        assert response.headers["content-type"].startswith("text/html")
    _is_page(client.post("/exports", data={"csrf_token": csrf, "org_id": "org_initech"}), 404, "no such organization")
    _is_page(client.post("/exports", data={"csrf_token": csrf, "org_id": "Org Initech!"}), 422, "Invalid input")
    assert "Acme Corporation (member)" in client.get("/inspector").text.split("selected>")[1][:40]


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    export = completed_export("org_acme", "user_alice", date(2025, 4, 1))
    anonymous = [client.get(path) for path in ("/signin", "/static/app.css", "/nothing-here", "/api/openapi.json")]
    anonymous.append(client.get("/inspector", follow_redirects=False))
    sign_in(client, "alice@example.com")
    signed_in = [
        client.get(path)
        for path in ("/inspector", f"/exports/{export['export_id']}/download", "/api/exports/exp-0123456789abcdef-1")
    ]
    for response in anonymous + signed_in:
        headers = response.headers
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp and "script-src 'self'" in csp
        assert headers["referrer-policy"] == "same-origin"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        if not response.url.path.startswith("/static/"):
            assert "no-store" in headers["cache-control"], response.url
        assert "strict-transport-security" not in headers  # only in production
