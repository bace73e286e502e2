"""Shapes that cross a boundary: the workflow's payload and the export's public view."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ORG_ID_PATTERN = r"^org_[a-z0-9_]{1,60}$"
USER_ID_PATTERN = r"^user_[a-z0-9_]{1,60}$"
RUN_ID_PATTERN = r"^exp-[0-9a-f]{16}-[1-9][0-9]{0,5}$"

ExportStatus = Literal["queued", "running", "completed", "failed", "canceled"]


class ExportRequest(BaseModel):
    """The workflow's only argument, validated before anything is enqueued. It carries the page
    size and how many pages are written at once, so that a run keeps its pages (and its
    checkpoints' meaning) across restarts even if the settings change."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    export_id: uuid.UUID
    org_id: str = Field(pattern=ORG_ID_PATTERN)
    requested_by: str = Field(pattern=USER_ID_PATTERN)
    run_id: str = Field(pattern=RUN_ID_PATTERN)
    attempt: int = Field(ge=1)
    day_bucket: date
    page_size: int = Field(ge=1, le=1_000_000)
    # Runs enqueued before this field existed wrote one page at a time.
    page_concurrency: int = Field(1, ge=1, le=8)


class ExportView(BaseModel):
    """What the API, the CLI's --json and the pages show of one run."""

    run_id: str
    export_id: uuid.UUID
    org_id: str
    requested_by: str
    status: ExportStatus
    attempts: int
    pages_done: int
    pages_total: int | None
    row_count: int | None
    rows_written: int | None = Field(None, description="rows stored so far: live while running, final when done")
    csv_path: str | None
    download_url: str | None
    error: str | None
    requested_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
