"""Repeated failed sign-ins are slowed down, per account and per client address, in the database
(so the limit holds across web processes and restarts).

Each key gets `free` failures; from then on every failure blocks the key for a delay that doubles
(30 s, 1 min, 2 min ... at most 15 min). A key's count starts again after an hour without
failures, or (for an account) at its next successful sign-in. While a key is blocked, attempts
are refused before the password is checked, and they are not counted, so waiting always helps.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, text, update

from invoice_export.db.models import SignInThrottle
from invoice_export.db.session import app_transaction

FIRST_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(minutes=15)
FORGET_AFTER = timedelta(hours=1)

_COUNT_FAILURE = text(
    """
    INSERT INTO sign_in_throttles AS t (key, failures, last_failure_at, blocked_until)
    VALUES (:key, 1, now(), NULL)
    ON CONFLICT (key) DO UPDATE SET
        failures = CASE WHEN t.last_failure_at < now() - :forget THEN 1 ELSE t.failures + 1 END,
        last_failure_at = now()
    RETURNING failures
    """
)


@dataclass(frozen=True)
class ThrottleKey:
    """One thing that is limited: an account (by email) or a client address, with its free failures."""

    digest: str
    free: int

    @classmethod
    def account(cls, email: str, free: int) -> ThrottleKey:
        return cls(hashlib.sha256(f"account:{email.strip().lower()}".encode()).hexdigest(), free)

    @classmethod
    def client(cls, address: str, free: int) -> ThrottleKey:
        return cls(hashlib.sha256(f"client:{address}".encode()).hexdigest(), free)


def delay_after(failures: int, free: int) -> timedelta:
    """How long a key is blocked after its `failures`-th failure in a row."""
    if failures < free:
        return timedelta(0)
    return min(MAX_DELAY, FIRST_DELAY * 2 ** min(failures - free, 10))


def retry_after(keys: list[ThrottleKey]) -> int:
    """Whole seconds until every key may try again (0: go ahead)."""
    with app_transaction() as session:
        left = session.execute(
            select(func.max(func.extract("epoch", SignInThrottle.blocked_until - func.now()))).where(
                SignInThrottle.key.in_([k.digest for k in keys]), SignInThrottle.blocked_until > func.now()
            )
        ).scalar()
    return math.ceil(left) if left else 0


def record_failure(keys: list[ThrottleKey]) -> int:
    """Count a failed sign-in against every key; returns the seconds the caller must now wait."""
    wait = timedelta(0)
    with app_transaction() as session:
        for key in keys:
            failures = session.execute(_COUNT_FAILURE, {"key": key.digest, "forget": FORGET_AFTER}).scalar_one()
            delay = delay_after(failures, key.free)
            if delay:
                session.execute(
                    update(SignInThrottle)
                    .where(SignInThrottle.key == key.digest)
                    .values(blocked_until=func.now() + delay)
                )
            wait = max(wait, delay)
    return math.ceil(wait.total_seconds())


def record_success(account: ThrottleKey) -> None:
    """A correct password clears the account's count (never the client address's)."""
    with app_transaction() as session:
        session.execute(delete(SignInThrottle).where(SignInThrottle.key == account.digest))
