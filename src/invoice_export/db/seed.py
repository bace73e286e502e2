"""`invoice-export db seed`: a deterministic demo data set, safe to re-run.

Four orgs (acme 240 invoices, globex 212, initech 200, empty none) and six users with fixed ids.
The invoices are as awkward as real ones: several currencies, credit notes (negative amounts),
non-ASCII names, commas, quotes and line breaks in names and memos, microsecond timestamps and
some identical issue times. Extra orgs of any size are generated inside PostgreSQL.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from invoice_export.db.models import EmailSuppression, Invoice, Member, Organization, User
from invoice_export.db.session import set_tenant
from invoice_export.errors import InvalidInput
from invoice_export.orgs.passwords import hash_password

DEMO_PASSWORD = "demo-password"

ORGS = [
    ("org_acme", "Acme Corporation", 240),
    ("org_globex", "Globex", 212),
    ("org_initech", "Initech", 200),
    ("org_empty", "Empty Co", 0),
]
USERS = [
    ("user_alice", "Alice Anders", [("org_acme", "owner")]),
    ("user_bob", "Bob Brandt", [("org_acme", "member"), ("org_globex", "member")]),
    ("user_carol", "Carol Chen", [("org_globex", "owner")]),
    ("user_dave", "Dave Diaz", [("org_initech", "owner")]),
    ("user_erin", "Erin Eriksson", [("org_initech", "member")]),
    ("user_frank", "Frank Fischer", [("org_empty", "owner")]),
]
SUPPRESSED = [("bounced@example.com", "hard bounce")]

CUSTOMERS = [
    "Wayne Enterprises",
    "Müller & Söhne GmbH",
    "Café Zoë, Ltd.",
    'The "Quoted" Company',
    "Łódź Logistics",
    "東京商事株式会社",
    "O'Brien, Kelly and Partners",
    "Smith\nHolding (two-line name)",
    "Ærøskøbing Fisk",
    "Nakamura-Schmidt Ltd",
    "=SUM(A1:A9) Trading",
    "-Minus Corp",
    "@Handle Media",
    "+Plus Partners",
]
MEMOS = [
    None,
    "",
    "Thanks for your business",
    "Net 30, late fee 1.5%/month",
    'Ref "PO-77", urgent',
    "Line one\nLine two",
    "Line one\r\nLine two with CRLF",
    "Credit note, see attached; partial refund",
    "Ünïcödé ✓ — em dash",
    "Trailing comma,",
]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "KWD", "SEK"]
STATUSES = ["paid", "open", "void", "uncollectible", "draft"]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SeedSummary:
    orgs: dict[str, int]


def _slug(org_id: str) -> str:
    return org_id.removeprefix("org_")


def parse_extra_org(spec: str) -> tuple[str, int]:
    """'org_big:1000000' → ('org_big', 1000000), with a clear error for anything else."""
    match = re.fullmatch(r"(org_[a-z0-9_]{1,60}):(\d{1,9})", spec.strip())
    if match is None:
        raise InvalidInput(f"--extra-org expects ORG_ID:N such as org_big:1000000, got {spec!r}")
    return match.group(1), int(match.group(2))


def _invoice_rows(org_id: str, count: int) -> list[dict[str, object]]:
    rng = random.Random(f"invoice-export:{org_id}")
    rows = []
    issued = EPOCH
    for n in range(1, count + 1):
        # Every seventh invoice shares the previous one's issue time: keyset pages must break ties by id.
        if n % 7 != 0:
            issued = issued + timedelta(hours=rng.randint(1, 40), microseconds=rng.randint(1, 999_999))
        currency = rng.choice(CURRENCIES)
        amount = rng.randint(100, 5_000_000)
        if n % 11 == 0:
            amount = -amount  # credit note
        rows.append(
            {
                "organization_id": org_id,
                "number": f"{_slug(org_id).upper()}-{n:06d}",
                "customer_name": rng.choice(CUSTOMERS),
                "customer_email": f"billing{rng.randint(1, 40)}@customer{rng.randint(1, 9)}.example",
                "amount_minor": amount,
                "currency": currency,
                "status": rng.choice(STATUSES),
                "issued_at": issued,
                "due_at": issued + timedelta(days=30) if n % 5 else None,
                "memo": rng.choice(MEMOS),
            }
        )
    return rows


def _ensure_org(session: Session, org_id: str, name: str) -> None:
    session.execute(insert(Organization).values(id=org_id, name=name).on_conflict_do_nothing())


def _ensure_user(session: Session, user_id: str, name: str, password_hash: str) -> None:
    email = f"{user_id.removeprefix('user_')}@example.com"
    session.execute(
        insert(User).values(id=user_id, email=email, name=name, password_hash=password_hash).on_conflict_do_nothing()
    )


def _ensure_member(session: Session, org_id: str, user_id: str, role: str) -> None:
    session.execute(insert(Member).values(organization_id=org_id, user_id=user_id, role=role).on_conflict_do_nothing())


def seed(engine: Engine, extra_orgs: list[tuple[str, int]] | None = None) -> SeedSummary:
    """Insert what is missing; never changes rows that exist. Runs as the tables' owner."""
    password_hash = hash_password(DEMO_PASSWORD)
    counts: dict[str, int] = {}
    with Session(engine) as session, session.begin():
        for org_id, name, _ in ORGS:
            _ensure_org(session, org_id, name)
        for user_id, name, _ in USERS:
            _ensure_user(session, user_id, name, password_hash)
        for email, reason in SUPPRESSED:
            session.execute(insert(EmailSuppression).values(email=email, reason=reason).on_conflict_do_nothing())
    for user_id, _, memberships in USERS:
        for org_id, role in memberships:
            with Session(engine) as session, session.begin():
                set_tenant(session, org_id)
                _ensure_member(session, org_id, user_id, role)
    for org_id, _, count in ORGS:
        with Session(engine) as session, session.begin():
            set_tenant(session, org_id)
            if count:
                session.execute(
                    insert(Invoice).on_conflict_do_nothing(constraint="uq_invoices_organization_id"),
                    _invoice_rows(org_id, count),
                )
            counts[org_id] = _count(session, org_id)
    for org_id, count in extra_orgs or []:
        counts[org_id] = seed_extra_org(engine, org_id, count, password_hash)
    if extra_orgs:
        _vacuum_invoices(engine)
    return SeedSummary(orgs=counts)


def _vacuum_invoices(engine: Engine) -> None:
    """After a bulk load: fresh planner statistics, and a visibility map that lets the export's
    keyset walks read the index alone (autovacuum would get there too, later)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) invoices"))


def _count(session: Session, org_id: str) -> int:
    return int(
        session.execute(text("SELECT count(*) FROM invoices WHERE organization_id = :o"), {"o": org_id}).scalar_one()
    )


def seed_extra_org(engine: Engine, org_id: str, count: int, password_hash: str) -> int:
    """An org with `count` generated invoices and its owner `user_<slug>`, built by one
    INSERT ... SELECT over generate_series (a million rows take seconds, not minutes)."""
    user_id = f"user_{_slug(org_id)}"
    with Session(engine) as session, session.begin():
        _ensure_org(session, org_id, f"{_slug(org_id).replace('_', ' ').title()} Inc")
        _ensure_user(session, user_id, f"{_slug(org_id).title()} Owner", password_hash)
    with Session(engine) as session, session.begin():
        set_tenant(session, org_id)
        _ensure_member(session, org_id, user_id, "owner")
        session.execute(
            text(
                """
                INSERT INTO invoices (organization_id, number, customer_name, customer_email, amount_minor,
                                      currency, status, issued_at, due_at, memo)
                SELECT :org, upper(:slug) || '-' || lpad(n::text, 9, '0'),
                       (ARRAY['Wayne Enterprises', 'Müller & Söhne GmbH', 'Café Zoë, Ltd.',
                              'The "Quoted" Company', E'Two\\nLines Ltd'])[1 + n % 5],
                       'billing' || (n % 97) || '@customer.example',
                       CASE WHEN n % 11 = 0 THEN -1 ELSE 1 END * (100 + (n * 7919) % 4999901),
                       (ARRAY['USD', 'EUR', 'GBP', 'JPY', 'KWD'])[1 + n % 5],
                       (ARRAY['paid', 'open', 'void'])[1 + n % 3],
                       timestamptz '2025-01-01 00:00:00+00' + (n / 3) * interval '1 second'
                           + ((n * 104729) % 1000000) * interval '1 microsecond' * (n % 3),
                       timestamptz '2025-01-31 00:00:00+00' + (n / 3) * interval '1 second',
                       CASE WHEN n % 4 = 0 THEN 'Memo, with "quotes"' ELSE NULL END
                FROM generate_series(1::bigint, :count) AS n
                ON CONFLICT ON CONSTRAINT uq_invoices_organization_id DO NOTHING
                """
            ),
            {"org": org_id, "slug": _slug(org_id), "count": count},
        )
        return _count(session, org_id)
