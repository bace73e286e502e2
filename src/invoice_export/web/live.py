"""Wake-ups for open event streams when their run changes, from PostgreSQL notifications.

Every insert or update of an `exports` row sends `NOTIFY export_changed, '<run_id>'` at commit
(trigger from migration 0004): the start, the plan, every counted page, assembly, the end. One
listening connection per web process turns these into wake-ups of the streams watching that run,
so a stream re-reads its run when something happened instead of on a timer, and an open
inspector costs the database one read every FALLBACK_SECONDS while its run stands still.

A notification carries only a run id and wakes a stream that then reads through the usual
membership checks, so it reveals nothing by itself. A stream also wakes after `FALLBACK_SECONDS`
without a notice (changes only the engine records, such as a recovery, and any notice lost while
the listener reconnects); if the listener cannot connect, streams fall back to that timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import psycopg

from invoice_export.db.urls import get_urls

log = logging.getLogger(__name__)

CHANNEL = "export_changed"
FALLBACK_SECONDS = 15.0
RECONNECT_SECONDS = 2.0


class RunChanges:
    """The web process's one listener and the streams waiting on it, by run id."""

    def __init__(self) -> None:
        self._waiting: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def watch(self, run_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever `run_id` may have changed; clear it before each read. Enter it
        before the first read, so that no change falls between the read and the watch."""
        self._ensure_listening()
        changed = asyncio.Event()
        self._waiting[run_id].add(changed)
        try:
            yield changed
        finally:
            self._waiting[run_id].discard(changed)
            if not self._waiting[run_id]:
                del self._waiting[run_id]

    def _ensure_listening(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._listen(), name="export-changes")

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(get_urls().app_plain, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._wake_all()  # whatever happened while not listening
                    async for notice in conn.notifies():
                        for changed in self._waiting.get(notice.payload, ()):
                            changed.set()
            except (psycopg.Error, OSError) as exc:
                log.warning("export change listener lost its connection (%s); retrying", type(exc).__name__)
            self._wake_all()
            await asyncio.sleep(RECONNECT_SECONDS)

    def _wake_all(self) -> None:
        for events in self._waiting.values():
            for changed in events:
                changed.set()

    async def close(self) -> None:
        if self._task is not None and self._task.get_loop() is asyncio.get_running_loop():
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def wait_for_change(changed: asyncio.Event) -> None:
    """Until the run may have changed, or `FALLBACK_SECONDS` have passed."""
    with suppress(TimeoutError):
        await asyncio.wait_for(changed.wait(), FALLBACK_SECONDS)
    changed.clear()
