"""The embedded PostgreSQL: starts on demand, survives an owner killed with SIGKILL, stops cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import PROJECT

HOLD = """
import sys, time
from pathlib import Path
from invoice_export.db.embedded import start_embedded
print(start_embedded(Path(sys.argv[1])), flush=True)
time.sleep(600)
"""


def test_server_outlives_a_killed_owner_and_stops_with_the_next_one() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="ie-emb-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    env["INVOICE_EXPORT_DATA_DIR"] = str(data_dir)
    try:
        owner = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(data_dir)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert owner.stdout is not None
        assert owner.stdout.readline().startswith("postgresql://")
        pid_file = data_dir / "pg" / "postmaster.pid"
        assert pid_file.exists()
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert pid_file.exists(), "the server should outlive an owner killed with SIGKILL"

        # The next user joins the orphaned server, prunes the dead owner, and stops it on exit.
        migrated = subprocess.run(
            [sys.executable, "-m", "invoice_export", "db", "migrate"],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert migrated.returncode == 0, migrated.stderr
        deadline = time.monotonic() + 15
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_file.exists(), "the embedded server should stop when its last live owner exits"
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
