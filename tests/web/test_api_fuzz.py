"""Fuzz the JSON API from its own OpenAPI schema (schemathesis), with data that fits the schema
and data that does not: signed in or not, with a valid CSRF token or a generated one, the answer
is never a server error, its status and content type are the documented ones, and every error
is problem details JSON."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from invoice_export.web.app import create_app
from tests.web.conftest import sign_in

app = create_app()
schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def session_of_bob(database: str) -> dict[str, str]:
    client = TestClient(app)
    csrf = sign_in(client, "bob@example.com")
    return {"cookie": f"ie_session={client.cookies['ie_session']}", "csrf": csrf}


def _check(case: schemathesis.Case, response: schemathesis.Response) -> None:
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance, content_type_conformance])
    if response.status_code >= 400:
        content_type = {k.lower(): v for k, v in response.headers.items()}["content-type"][0]
        assert content_type.startswith("application/problem+json"), (response.status_code, response.text)


@schema.parametrize()
@FUZZ
def test_signed_in_with_a_valid_token(case: schemathesis.Case, session_of_bob: dict[str, str]) -> None:
    if case.headers and "X-CSRF-Token" in case.headers:
        case.headers["X-CSRF-Token"] = session_of_bob["csrf"]
    _check(case, case.call(headers={"Cookie": session_of_bob["cookie"]}))


@schema.parametrize()
@FUZZ
def test_as_generated(case: schemathesis.Case, session_of_bob: dict[str, str]) -> None:
    _check(case, case.call(headers={"Cookie": session_of_bob["cookie"]}))
    _check(case, case.call())
