"""Signed download tokens for the emailed link (itsdangerous, keyed by SECRET_KEY).

A token names one export AND its org, carries its issue time and is signed, so it cannot be
guessed, edited or moved to another export or org. It is not a bearer credential: following it
still needs a signed-in member of that org who may see the export (`exports/service.py`).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from invoice_export.settings import get_settings

_SALT = "invoice-export.download-link.v1"


@dataclass(frozen=True)
class DownloadGrant:
    export_id: uuid.UUID
    org_id: str
    expired: bool


class InvalidToken(Exception):
    """Tampered, truncated, signed with another key, or not a download token at all."""


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        get_settings().secret_key, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256}
    )


def issue_download_token(export_id: uuid.UUID | str, org_id: str) -> str:
    return _serializer().dumps({"export": str(export_id), "org": org_id})


def download_url(export_id: uuid.UUID | str, org_id: str) -> str:
    """The link put in the ready email."""
    base = get_settings().public_base_url.rstrip("/")
    return f"{base}/downloads/{issue_download_token(export_id, org_id)}"


def read_download_token(token: str) -> DownloadGrant:
    """What a token grants. An expired token with a valid signature is reported (not refused) so
    that the page can offer a new export; anything else that does not verify is `InvalidToken`."""
    max_age = get_settings().download_link_ttl_days * 86400
    serializer = _serializer()
    try:
        payload = serializer.loads(token, max_age=max_age)
        expired = False
    except SignatureExpired as exc:
        payload = serializer.load_payload(exc.payload) if exc.payload is not None else None
        expired = True
    except BadSignature:
        raise InvalidToken("bad download token") from None
    if not isinstance(payload, dict) or set(payload) != {"export", "org"}:
        raise InvalidToken("bad download token")
    try:
        export_id = uuid.UUID(str(payload["export"]))
    except ValueError:
        raise InvalidToken("bad download token") from None
    return DownloadGrant(export_id=export_id, org_id=str(payload["org"]), expired=expired)
