"""Signed download tokens: bound to export and org, unforgeable, expiring."""

from __future__ import annotations

import time
import uuid

import pytest
from itsdangerous import TimestampSigner

from invoice_export.exports.tokens import InvalidToken, issue_download_token, read_download_token
from invoice_export.settings import get_settings


def test_a_token_names_its_export_and_org(database: str) -> None:
    export_id = uuid.uuid4()
    grant = read_download_token(issue_download_token(export_id, "org_acme"))
    assert (grant.export_id, grant.org_id, grant.expired) == (export_id, "org_acme", False)


def test_tokens_are_unguessable(database: str) -> None:
    export_id = uuid.uuid4()
    first, second = issue_download_token(export_id, "org_acme"), issue_download_token(uuid.uuid4(), "org_acme")
    assert first != second and len(first) > 60


# Not the very last character: its low bits are base64 padding and may not change the bytes.
@pytest.mark.parametrize("position", [0, 10, -3, -10])
def test_a_changed_character_is_refused(database: str, position: int) -> None:
    token = issue_download_token(uuid.uuid4(), "org_acme")
    flipped = "A" if token[position] != "A" else "B"
    position %= len(token)
    tampered = token[:position] + flipped + token[position + 1 :]
    with pytest.raises(InvalidToken):
        read_download_token(tampered)


def test_a_token_moved_to_another_org_is_refused(database: str) -> None:
    token = issue_download_token(uuid.uuid4(), "org_acme")
    other = issue_download_token(uuid.uuid4(), "org_globex")
    payload, _, rest = token.partition(".")
    other_payload = other.partition(".")[0]
    with pytest.raises(InvalidToken):
        read_download_token(f"{other_payload}.{rest}")
    with pytest.raises(InvalidToken):
        read_download_token(payload)


def test_a_token_signed_with_another_key_is_refused(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "another-secret-key-of-at-least-32-characters")
    get_settings.cache_clear()
    token = issue_download_token(uuid.uuid4(), "org_acme")
    monkeypatch.delenv("SECRET_KEY")
    get_settings.cache_clear()
    with pytest.raises(InvalidToken):
        read_download_token(token)


def test_expiry_follows_the_setting(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ttl = get_settings().download_link_ttl_days
    assert ttl == 7
    issued_at = time.time()
    for age_days, expired in ((ttl - 0.01, False), (ttl + 0.01, True)):
        monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self, a=age_days: int(issued_at - a * 86400))
        token = issue_download_token(uuid.uuid4(), "org_acme")
        monkeypatch.undo()
        assert read_download_token(token).expired is expired
    monkeypatch.setenv("DOWNLOAD_LINK_TTL_DAYS", "1")
    get_settings.cache_clear()
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(issued_at - 2 * 86400))
    token = issue_download_token(uuid.uuid4(), "org_acme")
    monkeypatch.undo()
    get_settings.cache_clear()
    assert read_download_token(token).expired is False
    monkeypatch.setenv("DOWNLOAD_LINK_TTL_DAYS", "1")
    get_settings.cache_clear()
    assert read_download_token(token).expired is True
    monkeypatch.undo()
    get_settings.cache_clear()
