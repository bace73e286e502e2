"""The inspector and the run page in a real headless Chromium, against a real server process,
real worker processes and a fresh seeded database (so each seed user's first export of the day
is still to come). Screenshots go to test-artifacts/."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from invoice_export.exports.csv_format import COLUMNS
from tests.conftest import PROJECT, Server, Worker

ARTIFACTS = PROJECT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
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
PAGE_SIZE = 2
HEADER_FIELDS = list(COLUMNS)
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium), as .ci/run does")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def fresh_env(fresh_database: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The fresh database and a data folder of its own: run ids (and so file and email names)
    repeat across databases for the same org, user and day."""
    data_dir = tmp_path_factory.mktemp("browser-data")
    return {"DATABASE_URL": fresh_database, "INVOICE_EXPORT_DATA_DIR": str(data_dir)}


@pytest.fixture(scope="module")
def site(fresh_env: dict[str, str], start_server: Callable[..., Server]) -> Server:
    # The web process fixes the page size of the runs it starts (it travels in the payload).
    return start_server(**fresh_env, EXPORT_PAGE_SIZE=str(PAGE_SIZE))


@pytest.fixture
def workers(fresh_env: dict[str, str], start_worker: Callable[..., Worker]) -> Callable[[str], Worker]:
    return lambda worker_id: start_worker(worker_id, **fresh_env)


def signed_in(chromium: Browser, site: Server, email: str, **context: object) -> Page:
    page = chromium.new_context(base_url=site.base_url, accept_downloads=True, **context).new_page()  # type: ignore[arg-type]
    page.goto("/inspector")
    expect(page).to_have_url(re.compile(r"/signin\?next=/inspector$"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("demo-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/inspector$"))
    return page


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def progress(page: Page) -> tuple[int, int]:
    bar = page.get_by_role("progressbar")
    return int(bar.get_attribute("aria-valuenow") or 0), int(bar.get_attribute("aria-valuemax") or 0)


def watch_progress(page: Page, until: Callable[[], bool], timeout: float = 120) -> list[tuple[int, int]]:
    """Every distinct (pages done, pages total) the progress bar shows until `until()` holds."""
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"run did not finish; progress seen: {seen[-5:]}"
        value = progress(page)
        if not seen or seen[-1] != value:
            seen.append(value)
        time.sleep(0.02)
    return seen


def run_id_of(page: Page) -> str:
    link = page.locator("#details-link")
    expect(link).to_have_attribute("href", re.compile(r"^/runs/exp-"))
    href = link.get_attribute("href") or ""
    match = re.fullmatch(r"/runs/(exp-[0-9a-f]{16}-\d+)", href)
    assert match, href
    return match.group(1)


def download_rows(page: Page) -> list[list[str]]:
    with page.expect_download() as info:
        page.get_by_role("link", name="Download", exact=True).first.click()
    data = Path(info.value.path()).read_bytes()
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_export_shows_live_progress_and_downloads_240_rows(
    chromium: Browser, site: Server, workers: Callable[[str], Worker]
) -> None:
    workers("browser-1")
    page = signed_in(chromium, site, "alice@example.com")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    button = page.get_by_role("button", name="Export invoices")
    expect(button).to_be_enabled()
    expect(page.get_by_text("No exports yet.")).to_be_visible()

    button.focus()
    page.keyboard.press("Enter")
    expect(button).to_be_disabled()
    expect(page.locator("#export-reason")).to_contain_text("already running")
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    download = page.locator("#download-link")
    running_shot = False

    def finished() -> bool:
        nonlocal running_shot
        done, total = progress(page)
        if not running_shot and total > 1 and total // 3 <= done < total:
            shot(page, "inspector-running")
            running_shot = True
        return download.is_visible()

    seen = watch_progress(page, finished)
    totals = {total for _, total in seen if total > 1}
    assert totals == {240 // PAGE_SIZE}, seen
    values = [done for done, total in seen if total > 1]
    assert values == sorted(values), "the bar never moves backwards"
    assert any(0 < done < 120 for done in values), f"no intermediate progress seen: {seen}"
    assert progress(page) == (120, 120)
    expect(page.locator("#run-status")).to_have_text("Completed")
    expect(page.locator("#run-words")).to_have_text("Done: 240 rows in 120 pages.")
    expect(page.locator("#run-announce")).to_have_text("Export completed. Done: 240 rows in 120 pages.")
    expect(page.locator("#f-rows")).to_have_text("240")
    expect(page.locator("#f-attempts")).to_have_text("1")
    expect(page.locator("#export-form")).to_be_hidden()
    expect(page.locator("#export-reason")).to_contain_text("Today's export is ready")
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    expect(page.locator("#recent tbody tr")).to_have_count(1)
    expect(page.locator("#recent tbody tr").first).to_contain_text("Alice Anders")
    run_id = run_id_of(page)
    assert any(url.endswith(f"/api/exports/{run_id}/events") for url in requests), "updates came by SSE"
    assert not any(url.endswith(f"/api/exports/{run_id}") for url in requests), "no polling was needed"

    rows = download_rows(page)
    assert len(rows) == 241 and rows[0] == HEADER_FIELDS
    assert len({tuple(r) for r in rows[1:]}) == 240
    shot(page, "inspector-done")

    page.reload()
    expect(page.locator("#download-link")).to_be_visible()
    expect(page.get_by_role("button", name="Export invoices")).to_be_hidden()

    page.get_by_role("link", name="Run details").click()
    expect(page).to_have_url(re.compile(rf"/runs/{run_id}$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(run_id)
    timeline = page.locator("ol.timeline > li")
    expect(timeline.filter(has_text="Count invoices")).to_contain_text("240 invoices in 120 pages")
    pages = timeline.filter(has_text="Write pages")
    expect(pages).to_have_class(re.compile("st-done"))
    expect(pages).to_contain_text("120 of 120 pages · 240 rows")
    expect(pages.locator("tr.page-step.st-done")).to_have_count(120)
    for stage in ("Assemble the file", "Email the download link", "Finalize"):
        expect(timeline.filter(has_text=stage)).to_have_class(re.compile("st-done"))
    expect(page.locator("dl.facts")).to_contain_text("never")
    expect(page.locator("dl.facts")).to_contain_text("browser-1")
    shot(page, "run-page")
    pages.get_by_text("Each page").click()
    expect(pages.get_by_role("row", name=re.compile(r"^Page 120 2 "))).to_be_visible()

    page.get_by_label("Status").select_option("failed")
    expect(page).to_have_url(re.compile(r"status=failed"))
    expect(page.get_by_text("No failed runs.")).to_be_visible()
    page.get_by_label("Status").select_option("completed")
    expect(page.locator(".run-list tbody tr")).to_have_count(1)


def test_screens_in_dark_mode_and_at_phone_width(
    chromium: Browser, site: Server, workers: Callable[[str], Worker]
) -> None:
    workers("browser-2")
    page = signed_in(chromium, site, "dave@example.com", color_scheme="dark", viewport=PHONE)
    page.get_by_role("button", name="Export invoices").click()
    expect(page.locator("#download-link")).to_be_visible(timeout=120_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "no sideways scrolling"
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(14, 20, 27)", background
    shot(page, "inspector-dark-phone")
    page.get_by_role("link", name="Run details").click()
    expect(page.locator("ol.timeline tr.page-step.st-done")).to_have_count(100)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "run-page-dark-phone")


def test_worker_killed_mid_run_still_ends_with_the_download_link(
    chromium: Browser, site: Server, workers: Callable[[str], Worker]
) -> None:
    worker = workers("browser-kill")
    page = signed_in(chromium, site, "carol@example.com")
    page.get_by_role("button", name="Export invoices").click()
    expect(page.locator("#run-status")).to_have_text("Running")
    watch_progress(page, lambda: progress(page)[0] >= 10)
    worker.kill()
    time.sleep(1.5)  # let the last page the dead worker wrote reach the page
    stalled = progress(page)
    time.sleep(1.5)
    assert progress(page) == stalled and stalled[0] < 106, "nothing runs while the worker is dead"
    expect(page.locator("#run-status")).to_have_text("Running")

    workers("browser-kill")
    expect(page.locator("#download-link")).to_be_visible(timeout=120_000)
    assert progress(page) == (106, 106)
    expect(page.locator("#f-attempts")).to_have_text("2")
    rows = download_rows(page)
    assert len(rows) == 213 and len({tuple(r) for r in rows[1:]}) == 212

    page.get_by_role("link", name="Run details").click()
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("once")
    expect(facts).to_contain_text("browser-kill")
    pages = page.locator("ol.timeline tr.page-step")
    expect(pages).to_have_count(106)
    labels = pages.locator("th").all_text_contents()
    assert labels == [f"Page {n}" for n in range(1, 107)], "each page once, in order"
    shot(page, "run-page-recovered")


def test_a_failed_run_shows_why_and_retries_even_without_the_event_stream(
    chromium: Browser, site: Server, workers: Callable[[str], Worker]
) -> None:
    workers("browser-3")
    page = signed_in(chromium, site, "frank@example.com")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.route("**/events", lambda route: route.abort())
    page.get_by_role("button", name="Export invoices").click()
    expect(page.locator("#run-status")).to_have_text("Failed", timeout=60_000)
    expect(page.get_by_role("alert")).to_contain_text("nothing to export")
    first = run_id_of(page)
    assert any(url.endswith(f"/api/exports/{first}") for url in requests), "fell back to polling"

    retry = page.get_by_role("button", name="Retry")
    expect(retry).to_be_enabled()
    retry.click()
    expect(page.locator("#details-link")).not_to_have_attribute("href", f"/runs/{first}")
    expect(page.locator("#run-status")).to_have_text("Failed", timeout=60_000)
    assert run_id_of(page) == first[:-1] + "2"
    expect(page.locator("#recent tbody tr")).to_have_count(1)
    shot(page, "inspector-failed")


def test_another_orgs_run_is_not_found(chromium: Browser, site: Server, workers: Callable[[str], Worker]) -> None:
    workers("browser-4")
    owner = signed_in(chromium, site, "erin@example.com")
    owner.get_by_role("button", name="Export invoices").click()
    run_id = run_id_of(owner)
    expect(owner.locator("#download-link")).to_be_visible(timeout=120_000)

    outsider = signed_in(chromium, site, "bob@example.com")
    response = outsider.goto(f"/runs/{run_id}")
    assert response is not None and response.status == 404
    expect(outsider.get_by_role("heading", level=1)).to_have_text("Not found")
    assert outsider.request.get(f"/api/exports/{run_id}/events").status == 404
    assert outsider.request.get(f"/api/exports/{run_id}").status == 404
    outsider.goto("/runs")
    expect(outsider.locator(f'tr[data-run-id="{run_id}"]')).to_have_count(0)


def test_cancel_stops_a_running_export_and_offers_retry(
    chromium: Browser, site: Server, workers: Callable[[str], Worker]
) -> None:
    workers("browser-5")
    page = signed_in(chromium, site, "bob@example.com")
    page.get_by_role("button", name="Export invoices").click()
    watch_progress(page, lambda: progress(page)[0] >= 3)
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#run-status")).to_have_text("Canceled")
    expect(page.get_by_role("alert")).to_contain_text("canceled by user_bob")
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    expect(page.get_by_role("button", name="Retry")).to_be_enabled()
    stopped_at = progress(page)[0]
    assert 3 <= stopped_at < 120

    page.get_by_role("link", name="Run details").click()
    timeline = page.locator("ol.timeline > li")
    expect(timeline.filter(has_text="Write pages")).to_have_class(re.compile("st-stopped"))
    expect(page.locator("ol.timeline")).not_to_contain_text("Email the download link")
    expect(page.locator("#detail-status")).to_have_text("Canceled")
    shot(page, "run-page-canceled")
