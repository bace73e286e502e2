"""The README's run command, exactly as a new user types it, in a fresh copy of the project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def readme_run_command() -> str:
    text = (PROJECT / "README.md").read_text()
    match = re.search(r"^uv run invoice-export demo$", text, re.MULTILINE)
    assert match, "README must show `uv run invoice-export demo` on a line of its own"
    return match.group(0)


def fresh_copy(target: Path) -> None:
    """The project's files as a clone would have them (tracked and new, minus ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for name in listed:
        source = PROJECT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
def test_readme_demo_runs_on_the_embedded_default() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "APP_", "EXPORT_", "INVOICE_"))}
    env.pop("VIRTUAL_ENV", None)
    # A short path: the embedded server's socket lives in the data dir.
    workdir = Path(f"/tmp/ie-readme-{os.getpid()}")
    workdir.mkdir()
    try:
        fresh_copy(workdir)
        result = subprocess.run(
            readme_run_command() + " --json",
            shell=True,
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        out = json.loads(result.stdout.strip().splitlines()[-1])
        assert out["status"] == "completed" and out["row_count"] == 240
        csv_path = Path(out["csv_path"])
        assert csv_path.is_relative_to(workdir / ".data" / "exports")
        data = csv_path.read_bytes()
        assert data.startswith(b"\xef\xbb\xbfinvoice_number,") and data.count(b"invoice_number,") == 1
        assert len(list((workdir / ".data" / "outbox").glob("*.eml"))) == 1
        assert not (workdir / ".data" / "pg" / "postmaster.pid").exists(), "embedded server left running"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
