"""Test-only fault injection at named points of the export. Inert unless the environment says
otherwise; production never sets these variables.

- `INVOICE_EXPORT_FAILPOINTS="point=action,..."` arms points. Actions: `kill` (SIGKILL this
  process), `error` (raise `InjectedFault`), `drop-connection` (terminate this step's own
  database connection, so its next statement fails like a dropped connection), `sleep:SECONDS`
  (pause there, so that a run takes long enough for a test to kill its worker mid-run).
  `action*N` fires on the first N hits only (in this process); without `*N` it fires on every hit.
- `INVOICE_EXPORT_FAILPOINT_TRACE=/path` appends `point pid unix-time` for every hit, armed or not, so a
  test can count how often each piece of work ran across a kill and a restart.

Points: `page.read@N` (page N's transaction is open, nothing read yet), `page.written@N` (part N
stored, its transaction not yet committed), `between-pages@N` (the workflow has seen page N's
checkpoint recorded; with EXPORT_PAGE_CONCURRENCY > 1 other pages may be in flight), `assembled`,
`email.handed-over` (the mail server accepted the message, the acceptance is not yet recorded),
`email.recorded` (the acceptance is recorded, the email step's checkpoint not yet),
`finalize.before-commit` (row and audit written, transaction not committed).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

from sqlalchemy import text

_hits: Counter[str] = Counter()


class InjectedFault(OSError):
    """Raised by an armed `error` point; an OSError, like a failing storage write."""


def _armed() -> dict[str, str]:
    spec = os.environ.get("INVOICE_EXPORT_FAILPOINTS", "")
    return dict(item.split("=", 1) for item in spec.split(",") if "=" in item)


def hit(point: str, session: Any = None) -> None:
    """Mark that execution reached `point`; act if the point is armed."""
    trace = os.environ.get("INVOICE_EXPORT_FAILPOINT_TRACE")
    if trace:
        with open(trace, "a") as f:
            f.write(f"{point} {os.getpid()} {time.time():.3f}\n")
    action = _armed().get(point)
    if action is None:
        return
    _hits[point] += 1
    name, _, limit = action.partition("*")
    if limit and _hits[point] > int(limit):
        return
    if name == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif name == "error":
        raise InjectedFault(f"injected fault at {point}")
    elif name == "drop-connection" and session is not None:
        session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    elif name.startswith("sleep:"):
        time.sleep(float(name.removeprefix("sleep:")))
    else:
        raise ValueError(f"unknown failpoint action {action!r} at {point}")
