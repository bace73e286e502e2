"""One run as the run page shows it: the exports row, plus the workflow engine's own record of the
run (status, executor, recoveries) and of its steps (each checkpoint with its timing and error).

Everything is read through the engine client, so the web process never imports workflow code.
Step names are matched by their last dotted part, which is the function name in
`workflows/export.py`; a step this module does not know is still listed, under its own name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from invoice_export.exports.schemas import ExportView
from invoice_export.exports.service import get_export
from invoice_export.workflows.queue import engine_client

StepState = Literal["done", "failed", "running", "waiting", "stopped"]

AFTER_PAGES = (("assemble", "Assemble the file"), ("email", "Email the download link"), ("finalize", "Finalize"))


@dataclass(frozen=True)
class TimelineStep:
    kind: str
    label: str
    state: StepState
    detail: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    attempt: int | None = None
    error: str | None = None
    rows: int | None = None
    pages: tuple[TimelineStep, ...] = ()

    @property
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return max(int((self.completed_at - self.started_at).total_seconds() * 1000), 0)


@dataclass(frozen=True)
class RunDetail:
    export: ExportView
    engine_status: str | None
    worker: str | None
    recoveries: int
    queued_at: datetime | None
    dequeued_at: datetime | None
    steps: list[TimelineStep] = field(default_factory=list)


def _when(epoch_ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC) if epoch_ms is not None else None


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _describe(name: str, output: Any) -> tuple[str, str, str | None] | None:
    """(kind, label, detail) of a recorded step, or None for bookkeeping that is not a stage."""
    short = name.rsplit(".", 1)[-1]
    out = output if isinstance(output, dict) else {}
    if short in ("setEvent", "set_event", "getEvent", "get_event"):
        return None
    if out.get("canceled") is True:
        return "cancel", "Saw the cancel and stopped", None
    if short == "plan_export":
        detail = None
        if "invoices" in out:
            detail = f"{_plural(out['invoices'], 'invoice')} in {_plural(out.get('pages_total', 0), 'page')}"
        return "plan", "Count invoices", detail
    if short == "write_page":
        page = out.get("page")
        detail = _plural(out["rows"], "row") if "rows" in out else None
        return "page", f"Page {page}" if page else "Page", detail
    if short == "assemble_file":
        detail = _plural(out["bytes"], "byte") if "bytes" in out else None
        return "assemble", "Assemble the file", detail
    if short == "send_ready_email":
        if out.get("sent"):
            detail = "sent"
        elif out.get("skipped_reason"):
            detail = f"not sent: {out['skipped_reason']}"
        else:
            detail = None
        return "email", "Email the download link", detail
    if short == "finalize_export":
        return "finalize", "Finalize", "row completed and audited"
    if short == "fail_export":
        return "fail", "Record the failure", None
    if short == "remove_files":
        return "cleanup", "Remove partial files", None
    return "other", short, None


def _recorded_steps(run_id: str) -> list[TimelineStep]:
    steps: list[TimelineStep] = []
    for info in engine_client().list_workflow_steps(run_id):
        described = _describe(info["function_name"], info["output"])
        if described is None:
            continue
        kind, label, detail = described
        error = info["error"]
        output = info["output"] if isinstance(info["output"], dict) else {}
        attempt = output.get("attempt")
        steps.append(
            TimelineStep(
                kind=kind,
                label=label,
                state="failed" if error is not None else "done",
                detail=detail,
                started_at=_when(info["started_at_epoch_ms"]),
                completed_at=_when(info["completed_at_epoch_ms"]),
                attempt=attempt if isinstance(attempt, int) else None,
                error=str(error) if error is not None else None,
                rows=output.get("rows") if kind == "page" else None,
            )
        )
    return steps


def _pages_stage(view: ExportView, pages: list[TimelineStep], pending: StepState | None) -> TimelineStep:
    """All page steps as one stage that holds them (a run may have thousands of pages). `pending`
    is the state of the first stage not reached yet, None once the run has ended."""
    total = view.pages_total
    failed = next((p for p in pages if p.state == "failed"), None)
    retried = sum(1 for p in pages if (p.attempt or 1) > 1)
    unfinished = total is None or len(pages) < total
    state: StepState
    if failed is not None:
        state = "failed"
    elif unfinished and pending is not None:
        state = pending
    elif unfinished and view.status != "completed":
        state = "stopped"
    else:
        state = "done"
    counted = f"{len(pages):,} of {total:,} pages" if total is not None else _plural(len(pages), "page")
    rows = _plural(sum(p.rows or 0 for p in pages), "row")
    detail = f"{counted} · {rows}" + (f" · {_plural(retried, 'page')} retried" if retried else "")
    return TimelineStep(
        kind="pages",
        label="Write pages",
        state=state,
        detail=detail,
        started_at=pages[0].started_at if pages else None,
        completed_at=pages[-1].completed_at if pages and state in ("done", "failed") else None,
        attempt=max((p.attempt or 1 for p in pages), default=None),
        error=failed.error if failed else None,
        pages=tuple(pages),
    )


def _timeline(view: ExportView, recorded: list[TimelineStep]) -> list[TimelineStep]:
    """The run's stages in order. For a queued or running run the stages still to come follow;
    the first of them is the one in flight."""
    pending: StepState | None = None
    if view.status in ("queued", "running"):
        pending = "running" if view.status == "running" else "waiting"
    steps = [s for s in recorded if s.kind == "plan"]
    if not steps and pending is not None:
        steps.append(TimelineStep(kind="plan", label="Count invoices", state=pending))
        pending = "waiting"
    pages = [s for s in recorded if s.kind == "page"]
    if pages or (pending is not None and view.pages_total):
        group = _pages_stage(view, pages, pending)
        steps.append(group)
        if pending is not None and group.state == pending:
            pending = "waiting"
    steps += [s for s in recorded if s.kind not in ("plan", "page")]
    if pending is not None:
        reached = {s.kind for s in recorded}
        for kind, label in AFTER_PAGES:
            if kind not in reached:
                steps.append(TimelineStep(kind=kind, label=label, state=pending))
                pending = "waiting"
    return steps


def run_detail(org_id: str, user_id: str, run_id: str) -> RunDetail:
    """The run, for a member of its org: a run of another org is not found, like an unknown one."""
    view = get_export(org_id, user_id, run_id)
    found = engine_client().list_workflows(workflow_ids=[run_id], load_input=False, load_output=False)
    if not found:
        return RunDetail(export=view, engine_status=None, worker=None, recoveries=0, queued_at=None, dequeued_at=None)
    status = found[0]
    recorded = _recorded_steps(run_id)
    return RunDetail(
        export=view,
        engine_status=status.status,
        worker=status.executor_id if status.dequeued_at is not None else None,
        recoveries=max((status.recovery_attempts or 0) - 1, 0),
        queued_at=_when(status.created_at),
        dequeued_at=_when(status.dequeued_at),
        steps=_timeline(view, recorded),
    )
