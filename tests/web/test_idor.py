"""The IDOR matrix: every endpoint that names a run, an export, a link or an org, for exports of
two orgs, as the org's owner, a member, an outsider and a signed-out visitor.

Rule (README "Who sees what"): an owner sees every export of the org, a member only their own;
anything else answers exactly like an unknown id. Denied downloads are not audited.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from invoice_export.exports.tokens import issue_download_token
from invoice_export.web.app import create_app
from tests.web.conftest import completed_export, sign_in
from tests.web.test_csrf import api_routes

PASSWORD = "idor-matrix-password"
ACTORS = ("owner", "member", "outsider", "signed_out")
ENDPOINTS = ("api_run", "events", "cancel", "run_page", "run_timeline", "download", "emailed_link")
API_ENDPOINTS = ("api_run", "events", "cancel")
DOWNLOADS = ("download", "emailed_link")
# Every route that takes an id of an export, a run or a link must be in this matrix.
COVERED_PATHS = {
    "/api/exports/{run_id}",
    "/api/exports/{run_id}/events",
    "/api/exports/{run_id}/cancel",
    "/runs/{run_id}",
    "/runs/{run_id}/timeline",
    "/exports/{export_id}/download",
    "/downloads/{token}",
}


@dataclass
class Org:
    org_id: str
    name: str
    owner: str
    member: str
    exports: dict[str, dict[str, Any]]  # by requester role


@dataclass
class World:
    orgs: dict[str, Org]
    outsider: str
    clients: dict[str, TestClient]  # by user id; "signed_out" too
    csrf: dict[str, str]


def _add_user(session: Session, user_id: str) -> None:
    from invoice_export.db.models import User
    from invoice_export.orgs.passwords import hash_password

    session.add(User(id=user_id, email=f"{user_id}@example.com", name=user_id, password_hash=hash_password(PASSWORD)))


@pytest.fixture(scope="module")
def world(database: str) -> World:
    from invoice_export.db.models import Member, Organization
    from invoice_export.db.session import admin_engine, set_tenant

    tag = secrets.token_hex(3)
    orgs: dict[str, Org] = {}
    outsider = f"user_out{tag}"
    with Session(admin_engine()) as session, session.begin():
        _add_user(session, outsider)
        session.add(Organization(id=f"org_elsewhere{tag}", name="Elsewhere"))
        for label in ("a", "b"):
            org = Org(
                f"org_{label}{tag}", f"Org {label.upper()} {tag}", f"user_{label}own{tag}", f"user_{label}mem{tag}", {}
            )
            session.add(Organization(id=org.org_id, name=org.name))
            _add_user(session, org.owner)
            _add_user(session, org.member)
            orgs[label] = org
        session.flush()
        for org in orgs.values():
            set_tenant(session, org.org_id)
            session.add(Member(organization_id=org.org_id, user_id=org.owner, role="owner"))
            session.add(Member(organization_id=org.org_id, user_id=org.member, role="member"))
        set_tenant(session, f"org_elsewhere{tag}")
        session.add(Member(organization_id=f"org_elsewhere{tag}", user_id=outsider, role="owner"))
    for n, org in enumerate(orgs.values()):
        for role in ("owner", "member"):
            user = org.owner if role == "owner" else org.member
            org.exports[role] = completed_export(
                org.org_id, user, date(2025, 1, 1 + n), body=f"{org.org_id}\r\n".encode()
            )
    clients: dict[str, TestClient] = {"signed_out": TestClient(create_app())}
    csrf: dict[str, str] = {}
    for user in [outsider] + [u for org in orgs.values() for u in (org.owner, org.member)]:
        clients[user] = TestClient(create_app())
        csrf[user] = sign_in(clients[user], f"{user}@example.com", PASSWORD)
        clients[user].headers["X-CSRF-Token"] = csrf[user]
    return World(orgs, outsider, clients, csrf)


def _actor(world: World, org: Org, actor: str) -> str:
    return {"owner": org.owner, "member": org.member, "outsider": world.outsider, "signed_out": "signed_out"}[actor]


def _request(client: TestClient, endpoint: str, export: dict[str, Any]):  # type: ignore[no-untyped-def]
    if endpoint == "api_run":
        return client.get(f"/api/exports/{export['run_id']}")
    if endpoint == "events":
        return client.get(f"/api/exports/{export['run_id']}/events")
    if endpoint == "cancel":
        return client.post(f"/api/exports/{export['run_id']}/cancel")
    if endpoint == "run_page":
        return client.get(f"/runs/{export['run_id']}", follow_redirects=False)
    if endpoint == "run_timeline":
        return client.get(f"/runs/{export['run_id']}/timeline", follow_redirects=False)
    if endpoint == "download":
        return client.get(f"/exports/{export['export_id']}/download", follow_redirects=False)
    token = issue_download_token(export["export_id"], export["org_id"])
    return client.get(f"/downloads/{token}", follow_redirects=False)


def _unknown(export: dict[str, Any]) -> dict[str, Any]:
    return export | {"export_id": str(uuid.uuid4()), "run_id": f"exp-{secrets.token_hex(8)}-1"}


def _audited(admin_conn, export_id: str) -> int:  # type: ignore[no-untyped-def]
    admin_conn.rollback()
    return admin_conn.execute(
        text("SELECT count(*) FROM audit_logs WHERE action = 'export.downloaded' AND target_id = :id"),
        {"id": export_id},
    ).scalar_one()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("requester", ["owner", "member"])
@pytest.mark.parametrize("org_label", ["a", "b"])
def test_matrix(world: World, admin_conn, org_label: str, requester: str, actor: str, endpoint: str) -> None:  # type: ignore[no-untyped-def]
    org = world.orgs[org_label]
    export = org.exports[requester]
    actor_id = _actor(world, org, actor)
    client = world.clients[actor_id]
    allowed = actor == "owner" or actor == requester
    audited = _audited(admin_conn, export["export_id"])

    response = _request(client, endpoint, export)

    if actor == "signed_out":
        if endpoint in API_ENDPOINTS:
            assert response.status_code == 401
            assert response.headers["content-type"].startswith("application/problem+json")
        else:
            assert response.status_code == 303 and response.headers["location"].startswith("/signin?next=/")
    elif endpoint == "cancel" and allowed:
        assert response.status_code == 409 and "already completed" in response.json()["detail"]
    elif allowed:
        assert response.status_code == 200, response.text
        if endpoint == "api_run":
            assert response.json()["run_id"] == export["run_id"] and response.json()["org_id"] == org.org_id
        elif endpoint == "events":
            assert f'"run_id":"{export["run_id"]}"' in response.text and org.org_id in response.text
        elif endpoint in ("run_page", "run_timeline"):
            assert export["run_id"] in response.text and "Timeline" in response.text
        else:
            assert response.content == f"{org.org_id}\r\n".encode()
    else:
        unknown = _request(client, endpoint, _unknown(export))
        assert response.status_code == unknown.status_code == 404
        assert response.headers["content-type"] == unknown.headers["content-type"]
        assert response.text.replace(export["run_id"], "ID") == unknown.text.replace(_run_in(unknown.text), "ID")
    expected_audits = audited + (1 if allowed and actor != "signed_out" and endpoint in DOWNLOADS else 0)
    assert _audited(admin_conn, export["export_id"]) == expected_audits


def _run_in(body: str) -> str:
    found = re.search(r"exp-[0-9a-f]{16}-1", body)
    return found.group(0) if found else "\x00"


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("org_label", ["a", "b"])
def test_inspector_lists_only_what_the_actor_may_see(world: World, org_label: str, actor: str) -> None:
    org = world.orgs[org_label]
    actor_id = _actor(world, org, actor)
    client = world.clients[actor_id]
    if actor != "signed_out":
        switched = client.post("/orgs/active", data={"csrf_token": world.csrf[actor_id], "org_id": org.org_id})
        assert switched.status_code == (404 if actor == "outsider" else 200)
    page = client.get("/inspector", follow_redirects=False)
    if actor == "signed_out":
        assert page.status_code == 303
        return
    assert page.status_code == 200
    shown = {e["export_id"] for o in world.orgs.values() for e in o.exports.values() if e["export_id"] in page.text}
    expected = {
        "owner": {e["export_id"] for e in org.exports.values()},
        "member": {org.exports["member"]["export_id"]},
        "outsider": set(),
    }[actor]
    assert shown == expected
    active = re.search(r'<option value="([^"]+)" selected>', page.text)
    assert active and active.group(1) == (org.org_id if actor != "outsider" else f"org_elsewhere{org.org_id[-6:]}")


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("org_label", ["a", "b"])
def test_starting_an_export_needs_membership(world: World, admin_conn, org_label: str, actor: str) -> None:  # type: ignore[no-untyped-def]
    org = world.orgs[org_label]
    actor_id = _actor(world, org, actor)
    client = world.clients[actor_id]
    data = {"csrf_token": world.csrf.get(actor_id, "none"), "org_id": org.org_id}

    def count(user_only: bool) -> int:
        admin_conn.rollback()
        where = "organization_id = :o" + (" AND requested_by = :u" if user_only else "")
        return admin_conn.execute(
            text(f"SELECT count(*) FROM exports WHERE {where}"), {"o": org.org_id, "u": actor_id}
        ).scalar_one()

    mine, everyone = count(True), count(False)
    response = client.post("/exports", data=data, follow_redirects=False)
    if actor in ("owner", "member"):
        assert response.status_code == 303 and count(True) == mine + 1
        api = client.post("/api/exports", headers={"X-CSRF-Token": world.csrf[actor_id]})
        assert api.status_code == 202 and api.json()["org_id"] == org.org_id  # the active org, now this one
    else:
        if actor == "signed_out":
            assert response.status_code == 303 and response.headers["location"].startswith("/signin")
        else:
            assert response.status_code == 404
        assert count(False) == everyone


def test_every_id_taking_route_is_in_the_matrix(database: str) -> None:
    with_ids = {
        route.path
        for route in api_routes(create_app().routes)
        if re.search(r"\{(run_id|export_id|token)\}", route.path)
    }
    assert with_ids <= COVERED_PATHS, f"add {sorted(with_ids - COVERED_PATHS)} to the IDOR matrix"
