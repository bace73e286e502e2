"""Benchmarks of the export, measured side by side in one run, written to BENCHMARKS.md.

    uv run python bench/run.py                 # everything, ~10 minutes on 2 cores
    uv run python bench/run.py --sizes 10000,100000 --out /tmp/b.md   # a quicker look

It makes its own database on DATABASE_URL's server (default: the local PostgreSQL service at
127.0.0.1:5432), seeds orgs of each size with `--extra-org`, runs real worker and web processes,
and drops the database at the end. Not a test: it asserts only that what it measured is the
right output (the file of every timed export is checked against the floor's bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import harness
import httpx
from harness import Bench, SmtpServer, export, floor, floor_file_digest, median, peak_rss_mb, percentile, sha256

SIZES = {10_000: "org_10k", 100_000: "org_100k", 1_000_000: "org_1m"}
ROUNDS = {10_000: 5, 100_000: 3, 1_000_000: 3}
CURVE_SIZES = [500, 1000, 2000, 5000, 10000, 20000]
CURVE_CONCURRENCY = [1, 2]
HTTP_CLIENTS = 32
HTTP_ROUNDS = 10
LATENCY_TRIALS = 10
IDLE_SECONDS = 10.0


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)

    def say(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)

    def table(self, header: list[str], rows: list[list[object]]) -> None:
        self.say("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        for row in rows:
            self.say("| " + " | ".join(str(cell) for cell in row) + " |")
        self.say("")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def throughput(bench: Bench, report: Report, sizes: list[int]) -> None:
    """Floor vs durable export, and worker peak RSS, per size (a fresh worker per size)."""
    report.say(
        "## 1-3. Throughput against the floor, and worker memory",
        "",
        "Floor: ONE `COPY (SELECT <the export's own formatting SQL> ... ORDER BY issued_at, id) TO STDOUT "
        "(FORMAT csv)` as `invoice_app` under RLS, read by a client that only counts bytes. Ours: the durable "
        "export from the worker claiming the run to the row marked completed (plan, every page a checkpoint, "
        "assembly with fsync, email, finalize), default settings. Rounds alternate floor and ours; medians. "
        "Peak RSS is the worker process's VmHWM after all its rounds (a fresh worker per size).",
        "",
    )
    rows = []
    for size in sizes:
        org = SIZES[size]
        owner = "user_" + org.removeprefix("org_")
        worker = bench.worker(f"bench-{org}")
        idle_rss = peak_rss_mb(worker.proc.pid)  # type: ignore[union-attr]
        floors, ours, last = [], [], None
        for _ in range(ROUNDS[size]):
            floors.append(floor(org)[0])
            last = export(org, owner)
            assert last.rows == size, (last.rows, size)
            ours.append(last.seconds)
        rss = peak_rss_mb(worker.proc.pid)  # type: ignore[union-attr]
        worker.stop()
        assert last is not None and sha256(last.path) == floor_file_digest(org), f"{org}: file differs from the floor"
        f, o = median(floors), median(ours)
        report.figures[f"throughput_{size}"] = {"floor_s": f, "ours_s": o, "ratio": f / o, "rss_mb": rss}
        rows.append(
            [
                f"{size:,}",
                ms(f),
                f"{size / f:,.0f}",
                ms(o),
                f"{size / o:,.0f}",
                f"**{f / o:.2f}x**",
                f"{idle_rss:.0f} MB",
                f"**{rss:.0f} MB**",
                "identical",
            ]
        )
    report.table(
        [
            "invoices",
            "floor",
            "floor rows/s",
            "ours",
            "ours rows/s",
            "ours ÷ floor throughput",
            "worker RSS idle",
            "worker peak RSS",
            "file vs floor",
        ],
        rows,
    )


def checkpoint_cost(bench: Bench, report: Report) -> None:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("checkpoint_cost.py")), harness.plain(bench.database), "300"],
        capture_output=True,
        text=True,
        check=True,
        cwd=harness.PROJECT,
    )
    cost = json.loads(out.stdout.strip().splitlines()[-1])
    report.figures["checkpoint"] = cost
    report.say(
        "## 6a. What one checkpoint costs",
        "",
        f"A workflow of {cost['steps']} no-op steps against one of {cost['steps']} no-op child workflows, "
        "same engine, same database (`bench/checkpoint_cost.py`):",
        "",
    )
    report.table(
        ["per page as", "cost"],
        [
            ["a step (ours)", f"{cost['step_ms']:.1f} ms"],
            ["a child workflow (the seed design)", f"{cost['child_ms']:.1f} ms"],
        ],
    )


def page_size_curve(bench: Bench, report: Report) -> None:
    org, owner, size = "org_100k", "user_100k", 100_000
    worker = bench.worker("bench-curve")
    points = []
    for concurrency in CURVE_CONCURRENCY:
        for page in CURVE_SIZES:
            run = export(org, owner, EXPORT_PAGE_SIZE=str(page), EXPORT_PAGE_CONCURRENCY=str(concurrency))
            points.append((concurrency, page, -(-size // page), run.seconds))
    worker.stop()
    harness.unset_env("EXPORT_PAGE_SIZE", "EXPORT_PAGE_CONCURRENCY")
    sequential = [(pages, seconds) for c, _, pages, seconds in points if c == 1]
    slope, intercept = statistics.linear_regression([p for p, _ in sequential], [s for _, s in sequential])
    report.figures["curve"] = points
    report.figures["per_page_overhead_ms"] = slope * 1000
    report.say(
        "## 6b. Page size → throughput (org_100k, 100,000 invoices)",
        "",
        "Each point is one durable export (run start to completion). A least-squares line through the "
        f"one-page-at-a-time points, time = a + b * pages, gives **b = {slope * 1000:.1f} ms per page** "
        f"(a = {intercept:.2f} s): what a page costs beyond its rows — its step checkpoint, its own transaction, "
        "its part file (written, not fsynced) and its progress count.",
        "",
    )
    by_page: dict[int, dict[int, float]] = {}
    for concurrency, page, _, seconds in points:
        by_page.setdefault(page, {})[concurrency] = seconds
    report.table(
        ["page size", "pages", *[f"rows/s, {c} at a time" for c in CURVE_CONCURRENCY]],
        [
            [f"{page:,}", f"{-(-size // page):,}", *[f"{size / by_page[page][c]:,.0f}" for c in CURVE_CONCURRENCY]]
            for page in CURVE_SIZES
        ],
    )


SWEEP_CONCURRENCY = [1, 2, 3, 4, 6]


def concurrency_sweep(bench: Bench, report: Report, size: int) -> None:
    """How many pages at once: each setting against the floor, alternating, on the biggest org."""
    org = SIZES[size]
    owner = "user_" + org.removeprefix("org_")
    worker = bench.worker("bench-sweep")
    rows = []
    for concurrency in SWEEP_CONCURRENCY:
        floors, ours = [], []
        for _ in range(2):
            floors.append(floor(org)[0])
            ours.append(export(org, owner, EXPORT_PAGE_CONCURRENCY=str(concurrency)).seconds)
        rss = peak_rss_mb(worker.proc.pid)  # type: ignore[union-attr]
        f, o = median(floors), median(ours)
        report.figures[f"sweep_{concurrency}"] = {"floor_s": f, "ours_s": o, "ratio": f / o}
        rows.append([concurrency, ms(f), ms(o), f"**{f / o:.2f}x**", f"{rss:.0f} MB"])
    worker.stop()
    harness.unset_env("EXPORT_PAGE_CONCURRENCY")
    report.say(
        f"## 6c. Pages at once (EXPORT_PAGE_CONCURRENCY) on {org}, pages of 5,000",
        "",
        "Two rounds per setting, each a floor then a durable export, medians; the worker's peak RSS so far.",
        "",
    )
    report.table(["pages at once", "floor", "ours", "ours ÷ floor throughput", "worker peak RSS"], rows)


class TimedSmtp(SmtpServer):
    """The tests' SMTP server, noting when each message was accepted (this process's clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted_at: dict[str, float] = {}

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        from email.parser import BytesHeaderParser

        headers = BytesHeaderParser().parsebytes(self.accepted[-1])
        self.accepted_at[str(headers["Message-ID"])] = time.perf_counter()
        return reply


def _api(site: str, token: str, csrf: str) -> httpx.Client:
    return httpx.Client(base_url=site, headers={"Cookie": f"ie_session={token}", "X-CSRF-Token": csrf}, timeout=60)


def click_and_watch(site: str, member: tuple[str, str, str]) -> dict[str, object]:
    """Click Export (POST /api/exports) as the inspector does, then watch the run's event stream
    as the inspector does; times on this process's clock from the click."""
    _, token, csrf = member
    with _api(site, token, csrf) as api:
        clicked = time.perf_counter()
        started = api.post("/api/exports")
        returned = time.perf_counter()
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        first_progress = None
        with api.stream("GET", f"/api/exports/{run_id}/events") as events:
            for line in events.iter_lines():
                if not line.startswith("data:"):
                    continue
                view = json.loads(line.removeprefix("data:"))
                if first_progress is None and view["pages_done"] >= 1:
                    first_progress = time.perf_counter()
                if view["status"] in harness.TERMINAL:
                    assert view["status"] == "completed", view
                    done = time.perf_counter()
                    break
    assert first_progress is not None
    return {
        "run_id": run_id,
        "clicked": clicked,
        "return": returned - clicked,
        "progress": first_progress - clicked,
        "done": done - clicked,
    }


def latency(bench: Bench, report: Report, big_org: str) -> None:
    from invoice_export.email.message import message_id_for

    smtp = TimedSmtp()
    smtp.controller.start()
    env = smtp.env()
    worker = bench.worker("bench-latency", **env)
    site = bench.server()
    members = harness.add_members("org_acme", LATENCY_TRIALS + 1)
    try:
        trials = []
        for member in members:
            trial = click_and_watch(site.base_url, member)
            trial["email"] = smtp.accepted_at[message_id_for(str(trial["run_id"]))] - float(trial["clicked"])  # type: ignore[arg-type]
            trials.append(trial)
        trials = trials[1:]  # the first warms the web process and the worker
        fairness(report, site.base_url, trials, big_org)
    finally:
        site.stop()
        worker.stop()
        smtp.controller.stop()
    figures = {k: [float(t[k]) for t in trials] for k in ("return", "progress", "email", "done")}  # type: ignore[arg-type]
    report.figures["latency"] = {k: {"median": median(v), "max": max(v)} for k, v in figures.items()}
    report.say(
        "## 5. Click → first progress → email (org_acme, 240 invoices)",
        "",
        f"{LATENCY_TRIALS} clicks, each by a new member of org_acme (each a new run), one worker, SMTP to a "
        "real aiosmtpd server. The click is `POST /api/exports` with the session cookie and CSRF header; "
        "progress is what the inspector sees: the first `export` event on `/api/exports/{run_id}/events` "
        "with a page done; email is when the SMTP server accepted the message.",
        "",
    )
    report.table(
        ["from the click to", "median", "max"],
        [
            ["the click's answer (run id)", ms(median(figures["return"])), ms(max(figures["return"]))],
            [
                "**first progress on the event stream**",
                f"**{ms(median(figures['progress']))}**",
                ms(max(figures["progress"])),
            ],
            ["**email accepted by the SMTP server**", f"**{ms(median(figures['email']))}**", ms(max(figures["email"]))],
            ["the stream's final (completed) event", ms(median(figures["done"])), ms(max(figures["done"]))],
        ],
    )


def fairness(report: Report, site: str, alone: list[dict[str, object]], big_org: str) -> None:
    from invoice_export.exports.service import cancel_export, start_export

    big = start_export(big_org, "user_" + big_org.removeprefix("org_"), now=harness.new_day())
    while harness.pages_done(big.export_id) < 2:
        time.sleep(0.05)
    beside = [click_and_watch(site, member) for member in harness.add_members("org_acme", 3)]
    still = harness.pages_done(big.export_id)
    cancel_export(big_org, big.run_id, actor_id=None, via="bench")
    harness.wait_for_row(big.export_id)
    times = [float(t["done"]) for t in beside]  # type: ignore[arg-type]
    report.figures["fairness"] = {"alone_s": median([float(t["done"]) for t in alone]), "beside_1m_s": times}  # type: ignore[arg-type]
    report.say(
        f"## 7. Fairness: org_acme while the big export of {big_org} runs",
        "",
        f"Same worker (one process). The {big_org} export was at page {still} when the last acme run finished; "
        "it was then canceled. Click → completed, as seen on the event stream:",
        "",
    )
    report.table(
        ["org_acme export", "click → completed"],
        [["alone (median of section 5)", ms(report.figures["fairness"]["alone_s"])]]  # type: ignore[index]
        + [[f"beside the {big_org} export, run {i + 1}", f"**{ms(t)}**"] for i, t in enumerate(times)],
    )


def idle_cost(bench: Bench, report: Report) -> None:
    from playwright.sync_api import sync_playwright

    from invoice_export.settings import get_settings

    def per_second(what: str) -> float:
        time.sleep(2)
        before = bench.transactions()
        time.sleep(IDLE_SECONDS)
        after = bench.transactions()
        # Each reading is one transaction of its own.
        return (after - before - 1) / IDLE_SECONDS

    rows = []
    nothing = per_second("nothing")
    rows.append(["nothing running (baseline)", f"{nothing:.1f}"])
    worker = bench.worker("bench-idle")
    rows.append(["one idle worker", f"**{per_second('worker'):.1f}**"])
    worker.stop()
    site = bench.server()
    ((_, token, _),) = harness.add_members("org_globex", 1)
    rows.append(["web process, nobody on it", f"{per_second('server'):.1f}"])
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = browser.new_context()
            context.add_cookies([{"name": "ie_session", "value": token, "url": site.base_url}])
            page = context.new_page()
            page.goto(f"{site.base_url}/inspector")
            rows.append(["web process + one open inspector, no run", f"**{per_second('inspector'):.1f}**"])
            page.get_by_role("button", name="Export invoices").click()
            page.wait_for_selector("text=Waiting for a worker")
            rows.append(
                ["web process + one inspector watching a queued run (no worker)", f"**{per_second('watching'):.1f}**"]
            )
            browser.close()
    finally:
        site.stop()
    report.figures["idle"] = rows
    report.say(
        "## 8. Idle cost",
        "",
        f"Transactions per second in the bench database (`pg_stat_database`, all clients, over {IDLE_SECONDS:.0f} s; "
        "each of these polls is one short transaction of one or two statements). The worker polls the queue "
        f"every QUEUE_POLL_SECONDS ({get_settings().queue_poll_seconds} s, the default) and "
        "watches its peers for takeover; the inspector is a real headless Chromium page.",
        "",
    )
    report.table(["what is running", "transactions/s"], rows)


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def _load(
    site: str, members: list[tuple[str, str, str]], think: float | None = None
) -> tuple[list[float], float]:
    """Each of HTTP_CLIENTS clients takes the next member and clicks as them. With `think`, a
    client waits a random time (exponential, mean `think` seconds) before each click, as people
    do; without, it clicks again as soon as the answer arrives (the server's saturation)."""
    pending = list(members)
    latencies: list[float] = []
    pauses = random.Random(7)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=site, timeout=60) as http:
            while pending:
                if think is not None:
                    await asyncio.sleep(pauses.expovariate(1 / think))
                if not pending:
                    return
                _, token, csrf = pending.pop()
                headers = {"Cookie": f"ie_session={token}", "X-CSRF-Token": csrf}
                started = time.perf_counter()
                answer = await http.post("/api/exports", headers=headers)
                latencies.append(time.perf_counter() - started)
                assert answer.status_code == 202, answer.text

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(HTTP_CLIENTS)))
    return latencies, time.perf_counter() - started


HTTP_SCENARIOS = [
    ("first click (a new run), each client clicking about once a second", "new_paced", 1.0, True),
    ("the same, against two web processes (`serve --processes 2`)", "new_paced_2", 1.0, True),
    ("first click (a new run), back to back", "new_saturated", None, True),
    ("click again (the same run), back to back", "again_saturated", None, False),
]
# With wrk: how long each scenario runs, and how many members are signed in for it (more than it
# can click, so every click of a first-click scenario is a member's first).
WRK_SECONDS = {"new_paced": 20, "new_paced_2": 20, "new_saturated": 8, "again_saturated": 8}
WRK_MEMBERS = {"new_paced": 1200, "new_paced_2": 1200, "new_saturated": 3000}

# Each connection clicks as the next member; `delay` (when pacing) waits an exponential time with
# the given mean before each request. `done` prints the figures as one JSON line.
WRK_SCRIPT = """
local members = {{ {members} }}
local next_member = 0
local think_ms = {think_ms}
math.randomseed(7)
request = function()
  next_member = next_member + 1
  local m = members[((next_member - 1) % #members) + 1]
  return wrk.format("POST", "/api/exports",
    {{["Cookie"] = "ie_session=" .. m[1], ["X-CSRF-Token"] = m[2], ["Content-Length"] = "0"}}, "")
end
if think_ms > 0 then
  delay = function() return math.floor(-math.log(1 - math.random()) * think_ms) end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "seconds": %f, "p50": %f, "p99": %f, "max": %f, "failed": %d, "reconnects": %d}}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e6, latency:percentile(99) / 1e6,
    latency.max / 1e6, e.connect + e.write + e.status + e.timeout, e.read))
end
"""


def _wrk(
    site: str, members: list[tuple[str, str, str]], think: float | None, seconds: int, logs: Path
) -> dict[str, float]:
    """One scenario driven by wrk (a C load generator, so the clients cost the server's two cores
    little): HTTP_CLIENTS connections for `seconds`."""
    script = logs / f"wrk-{time.monotonic_ns()}.lua"
    rows = ", ".join(f'{{"{token}", "{csrf}"}}' for _, token, csrf in members)
    script.write_text(WRK_SCRIPT.format(members=rows, think_ms=int((think or 0) * 1000)))
    command = ["wrk", "-t1", f"-c{HTTP_CLIENTS}", f"-d{seconds}s", "-s", str(script), site]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    # A read error is a kept-alive connection the server closed after a long pause (uvicorn closes
    # idle ones after 5 s); wrk reconnects. Any other error, or an answer that is not 2xx, fails.
    assert figures["failed"] == 0, result.stdout
    figures["rps"] = figures["requests"] / figures["seconds"]
    return figures


def _python_load(site: str, members: list[tuple[str, str, str]], think: float | None) -> dict[str, float]:
    latencies, elapsed = asyncio.run(_load(site, members, think))
    return {
        "requests": len(latencies),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "rps": len(latencies) / elapsed,
    }


def http_start(bench: Bench, report: Report) -> None:
    """Last: the runs it starts stay queued (no worker runs after it)."""
    wrk = shutil.which("wrk") is not None
    site = bench.server()
    rows = []
    try:
        asyncio.run(_load(site.base_url, harness.add_members("org_initech", HTTP_CLIENTS)))  # warm-up
        clicked: list[tuple[str, str, str]] = []
        for label, key, think, new_members in HTTP_SCENARIOS:
            if key.endswith("_2") != (site.processes == 2):
                site.stop()
                site = bench.server(SERVE_PROCESSES="2" if key.endswith("_2") else "1")
                asyncio.run(_load(site.base_url, harness.add_members("org_initech", HTTP_CLIENTS)))  # warm-up
            if wrk:
                members = harness.add_members("org_initech", WRK_MEMBERS[key]) if new_members else clicked
                fig = _wrk(site.base_url, members, think, WRK_SECONDS[key], bench.logs)
                if new_members:
                    assert fig["requests"] <= len(members), "a member clicked twice in a first-click scenario"
                    clicked = members[: int(fig["requests"])]
            else:
                members = harness.add_members("org_initech", HTTP_CLIENTS * HTTP_ROUNDS) if new_members else clicked
                fig = _python_load(site.base_url, members, think)
                clicked = members
            report.figures[f"http_{key}"] = fig
            rows.append(
                [
                    label,
                    int(fig["requests"]),
                    ms(fig["p50"]),
                    f"**{ms(fig['p99'])}**",
                    ms(fig["max"]),
                    f"{fig['rps']:.0f}",
                ]
            )
    finally:
        site.stop()
    generator = (
        "wrk (`apt-get install wrk`; one thread, one connection per client)"
        if wrk
        else "one asyncio process of httpx clients (wrk was not found; it is the lighter generator)"
    )
    report.say(
        "## 4. Starting an export over HTTP, 32 concurrent clients",
        "",
        f"{HTTP_CLIENTS} clients sending `POST /api/exports` against `invoice-export serve --no-worker` (one "
        f"uvicorn process unless the row says two), driven by {generator}. Each first click is a different "
        "signed-in member: session "
        "and memberships lookup, CSRF check, the exports row and the transactional enqueue; a click again "
        "reads today's row and writes nothing. No worker runs meanwhile. Paced: each client waits a random "
        "time (exponential, mean 1 s) before each click, as people do. Back to back: each clicks again as "
        "soon as its answer arrives, so the latency there is the queue in front of a saturated server "
        "(32 ÷ requests per second), not the time a click takes.",
        "",
    )
    report.table(["request", "requests", "p50", "p99", "max", "requests/s"], rows)


def targets(report: Report, sizes: list[int]) -> list[str]:
    """The issue's targets against this run's figures, for the top of the file."""
    fig = report.figures
    biggest = max(sizes)
    big = fig[f"throughput_{biggest}"]
    rss = [fig[f"throughput_{s}"]["rss_mb"] for s in sizes]  # type: ignore[index]
    latency = fig["latency"]
    beside = fig["fairness"]["beside_1m_s"]  # type: ignore[index]
    idle = dict(fig["idle"])  # type: ignore[arg-type]
    paced = fig["http_new_paced"]
    paced_2 = fig["http_new_paced_2"]
    saturated = fig["http_new_saturated"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    rows = [
        [
            f"throughput on {biggest:,} invoices, checkpoint every 5,000 rows",
            "≥ 0.5x the floor",
            f"{big['ratio']:.2f}x ({ms(big['ours_s'])} vs {ms(big['floor_s'])})",
            verdict(big["ratio"] >= 0.5),
        ],  # type: ignore[index]
        [
            "worker peak RSS, 10k → 1M",
            "≤ 150 MB, flat",
            f"{min(rss):.0f} to {max(rss):.0f} MB",
            verdict(max(rss) <= 150 and max(rss) - min(rss) <= 15),
        ],
        [
            "`start_export` over HTTP, 32 clients, p99",
            "≤ 50 ms",
            f"paced: {ms(paced['p99'])} with one web process (p50 {ms(paced['p50'])}), "  # type: ignore[index]
            f"{ms(paced_2['p99'])} with two (p50 {ms(paced_2['p50'])}); "  # type: ignore[index]
            f"{ms(saturated['p99'])} back to back",  # type: ignore[index]
            verdict(min(paced["p99"], paced_2["p99"]) <= 0.05),  # type: ignore[type-var]
        ],  # type: ignore[index]
        [
            "click → first progress (org_acme)",
            "≤ 300 ms",
            f"{ms(latency['progress']['median'])} median, {ms(latency['progress']['max'])} max",  # type: ignore[index]
            verdict(latency["progress"]["max"] <= 0.3),
        ],  # type: ignore[index]
        [
            "click → email sent (org_acme)",
            "≤ 1 s",
            f"{ms(latency['email']['median'])} median, {ms(latency['email']['max'])} max",  # type: ignore[index]
            verdict(latency["email"]["max"] <= 1.0),
        ],  # type: ignore[index]
        [
            "org_acme export beside a running 1M export",
            "≤ 2 s",
            f"{ms(max(beside))} at most",
            verdict(max(beside) <= 2.0),
        ],
        [
            "idle worker / idle inspector",
            "(measured)",
            f"{idle['one idle worker'].strip('*')} / {idle['web process + one open inspector, no run'].strip('*')}"
            " transactions/s",
            "",
        ],
    ]
    lines = ["## Targets", "", "| what | target | this run | |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--server", default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--out", default=str(harness.PROJECT / "BENCHMARKS.md"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    report = Report()
    with Bench.create(args.server) as bench:
        seed_seconds = bench.migrate_and_seed([(SIZES[s], s) for s in SIZES if s in sizes or s == 100_000])
        header = [
            "# Benchmarks",
            "",
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at {harness.git_revision()} on {harness.machine()}.",
            "Reproduce with `uv run python bench/run.py` (writes this file). Every figure in a section comes from "
            "the same run, side by side; compare ratios rather than absolute times, since these machines are noisy.",
            "",
            f"Seeding the extra orgs ({', '.join(f'{s:,}' for s in SIZES if s in sizes or s == 100_000)} invoices, "
            f"`db seed --extra-org`, including VACUUM ANALYZE): {seed_seconds:.1f} s.",
            "",
        ]
        throughput(bench, report, sizes)
        checkpoint_cost(bench, report)
        page_size_curve(bench, report)
        concurrency_sweep(bench, report, max(sizes))
        latency(bench, report, SIZES[max(max(sizes), 100_000)])
        idle_cost(bench, report)
        http_start(bench, report)
    report.say(f"Whole run: {time.perf_counter() - started:.0f} s.")
    Path(args.out).write_text("\n".join(header + targets(report, sizes) + report.lines) + "\n")
    print(json.dumps(report.figures, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    threading.excepthook = lambda hook: print(f"thread failed: {hook.exc_value!r}", file=sys.stderr)
    main()
