"""The web console in headless Chromium (Debian's, driven by Playwright): sign in, dry-run
and submit a purge, watch it complete, pause, resume and cancel, download failures, CSRF.
Screenshots of the main pages go to tests/service/artifacts/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ops.fake_api import RunningFakeApi
from tests.service.conftest import TOKENS, Service, owned, text_body
from tests.services import WorkerProcess

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).parent / "artifacts"
Api = Callable[..., httpx.Client]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Chromium from the system (Playwright's own download cannot work here)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, service: Service, api: Api) -> Iterator[Page]:
    """A fresh browser context (no cookies) on the service, a laptop-sized window."""
    context = browser.new_context(
        base_url=service.url, viewport={"width": 1280, "height": 860}, accept_downloads=True
    )
    opened = context.new_page()
    yield opened
    context.close()


def shot(page: Page, name: str) -> None:
    """Keep a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, token_name: str) -> None:
    page.goto("/console/login")
    page.fill("#token", TOKENS[token_name][0])
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{page.context.pages[0].url.split('/console')[0]}/console/jobs")


def test_sign_in_dry_run_submit_and_watch_a_purge_complete(
    page: Page,
    api: Api,
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """An operator signs in, uploads a file, sees the dry run's counts and invalid lines,
    confirms, watches the job reach completed, and downloads the failures CSV."""
    fake = fake_api(items=5_000)
    workers(fake.url, rate_limit=50, concurrency=4)
    page.goto("/console/login")
    shot(page, "01-sign-in")
    sign_in(page, "shop")
    ids = tmp_path / "takedown.txt"
    ids.write_bytes(text_body([*owned(3_000), "bad id", "vec-0000001", "unknown-7"]))
    page.click("text=New purge")
    page.set_input_files("#ids", str(ids))
    page.fill("#reason", "takedown 4711")
    page.select_option("#priority", "high")
    shot(page, "02-new-purge")
    page.click("button:has-text('Dry run')")
    expect(page.locator("[data-field=valid]")).to_have_text("3,001")
    expect(page.locator("[data-field=invalid]")).to_have_text("1")
    expect(page.locator("#invalid-lines")).to_contain_text("bad id")
    shot(page, "03-dry-run")
    page.click("button:has-text('Confirm and start the purge')")
    expect(page.locator("#state")).to_have_text("running", timeout=20_000)
    shot(page, "04-job-running")
    expect(page.locator("#state")).to_have_text("completed", timeout=60_000)
    expect(page.locator("[data-field=deleted]")).to_have_text("3,000")
    expect(page.locator("[data-field=failed]")).to_have_text("1")  # unknown-7: not found
    expect(page.locator("#reasons")).to_contain_text("invalid_id")
    shot(page, "05-job-completed")
    with page.expect_download() as download:
        page.click("#failures-csv")
    rows = Path(download.value.path()).read_text().splitlines()
    assert rows[0] == "media_id,outcome,reason,operation_id"
    assert sorted(r.split(",")[0] for r in rows[1:]) == ["bad id"]
    page.click("text=Jobs")
    expect(page.locator("#job-rows tr")).to_have_count(1)
    expect(page.locator("#job-rows")).to_contain_text("completed")
    shot(page, "06-jobs")


def test_pause_resume_and_cancel_from_the_job_page(
    page: Page,
    api: Api,
    fake_api: Callable[..., RunningFakeApi],
    workers: Callable[..., WorkerProcess],
) -> None:
    """Pause holds a running job, Resume sends it on; Cancel asks first, then cancels."""
    fake = fake_api(items=20_000)
    workers(fake.url, rate_limit=20, concurrency=4)
    shop = api("shop")
    job = shop.post(
        "/v1/jobs", content=text_body(owned(20_000)), headers={"Content-Type": "text/plain"},
        params={"reason": "slow purge"},
    ).json()["job_id"]  # fmt: skip
    sign_in(page, "shop")
    page.goto(f"/console/jobs/{job}")
    expect(page.locator("#state")).to_have_text("running", timeout=20_000)
    expect(page.locator("#chart-note")).to_contain_text("samples since it started", timeout=20_000)
    shot(page, "07-job-running")
    page.click("button:has-text('Pause')")
    expect(page.locator("#state")).to_have_text("paused")
    assert shop.get(f"/v1/jobs/{job}").json()["state"] == "paused"
    shot(page, "08-job-paused")
    page.click("button:has-text('Resume')")
    expect(page.locator("#state")).to_have_text("running")
    page.click("text=Cancel…")
    expect(page.locator("h1")).to_contain_text("Cancel job")
    shot(page, "09-cancel-confirm")
    assert shop.get(f"/v1/jobs/{job}").json()["state"] == "running"  # asking did nothing
    page.click("button:has-text('Yes, cancel this job')")
    expect(page.locator("#state")).to_have_text("cancelled", timeout=30_000)
    final = shop.get(f"/v1/jobs/{job}").json()
    assert final["not_attempted"] > 0
    assert final["deleted"] + final["not_attempted"] == 20_000


def test_a_read_only_token_sees_no_buttons_and_cannot_submit(page: Page, api: Api) -> None:
    """A read-scoped token: no New purge link, no control buttons, the new page refused."""
    job = (
        api("shop")
        .post("/v1/jobs", content=text_body(owned(5)), headers={"Content-Type": "text/plain"})
        .json()["job_id"]
    )
    sign_in(page, "viewer")
    expect(page.locator("header nav")).not_to_contain_text("New purge")
    page.goto(f"/console/jobs/{job}")
    expect(page.locator("#state")).to_have_text("queued")
    expect(page.locator("#controls")).to_have_count(0)
    expect(page.locator("button:has-text('Pause')")).to_have_count(0)
    shot(page, "10-read-only-job")
    answer = page.goto("/console/new")
    assert answer is not None
    assert answer.status == 403


def test_forms_without_the_sessions_csrf_token_are_refused(
    page: Page, api: Api, service: Service
) -> None:
    """A POST with no or another CSRF token does nothing (403, logged); the session
    cookie is HttpOnly and SameSite=Strict; pages cannot be framed."""
    job = (
        api("shop")
        .post("/v1/jobs", content=text_body(owned(5)), headers={"Content-Type": "text/plain"})
        .json()["job_id"]
    )
    sign_in(page, "shop")
    headers = page.request.get("/console/jobs").headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    [cookie] = [c for c in page.context.cookies() if c["name"] == "wp_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    for form in ({}, {"csrf": "forged"}):
        answer = page.request.post(f"/console/jobs/{job}/pause", form=form)
        assert answer.status == 403
    assert api("shop").get(f"/v1/jobs/{job}").json()["state"] == "queued"
    assert "CSRF token missing or wrong" in service.log()


def test_a_wrong_token_is_refused_at_sign_in(page: Page) -> None:
    """An unknown token: the sign-in page says so, and no session cookie is set."""
    page.goto("/console/login")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("That token is not valid.")
    assert not [c for c in page.context.cookies() if c["name"] == "wp_session"]
    assert page.goto("/console/jobs") is not None
    expect(page).to_have_url(page.url.split("/console")[0] + "/console/login")
