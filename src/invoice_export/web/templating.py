"""The Jinja2 environment of the pages, with the few filters they share."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.templating import Jinja2Templates

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

STATUS_WORDS = {
    "queued": "Queued",
    "running": "Running",
    "completed": "Completed",
    "failed": "Failed",
    "canceled": "Canceled",
}

# Shown where a value does not exist yet (an en dash, as in the tables).
NO_VALUE = "\u2013"
STATE_WORDS = {"done": "done", "failed": "failed", "running": "in progress", "waiting": "waiting", "stopped": "stopped"}


def when(moment: datetime | None) -> str:
    """A moment in UTC, to the minute; the full ISO time goes into the <time> element."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else NO_VALUE


def duration(seconds: float | None) -> str:
    """A short human duration: 850 ms, 4.2 s, 3 min 05 s, 2 h 10 min."""
    if seconds is None:
        return NO_VALUE
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def run_seconds(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None:
        return None
    return ((finished or datetime.now(UTC)) - started).total_seconds()


templates.env.filters["when"] = when
templates.env.filters["duration"] = duration
templates.env.globals["status_words"] = STATUS_WORDS
templates.env.globals["state_words"] = STATE_WORDS
templates.env.globals["run_seconds"] = run_seconds
