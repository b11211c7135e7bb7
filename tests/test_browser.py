"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real
vfe server (``python -m vfe serve``) with real FFmpeg.

The tests find elements only by the ``data-testid`` names of the dashboard contract, and
wait with Playwright's auto-waiting ``expect`` (no sleeps). One server (with a real
redis-server) serves the whole module; the Redis test starts its own pair, and stops and
restarts that redis-server; the API-key test starts its own server with ``API_KEYS``;
``fresh`` is a second server as a new user first meets it (no Redis, no jobs).

Screenshots of the main views at 1440x900 and 390x844 go to ``test-artifacts/screenshots/``
(git-ignored). The browser is never downloaded: ``scripts/setup --test`` installs Debian's
``chromium`` package. Without /usr/bin/chromium the module is skipped, except in CI (``CI``
set), where it must run and fails loudly instead.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    Dialog,
    Locator,
    Page,
    Route,
    expect,
    sync_playwright,
)

from tests.conftest import ROOT, LiveServer, Media, RedisServer, place, vfe_env
from vfe.models import JobSpec, Mode

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 10_000  # any single UI expectation; jobs here take well under a second
XSS_NAME = "<img src=x onerror=alert(1)>.mp4"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.live,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="Debian's Chromium (/usr/bin/chromium) is not installed; "
        "./scripts/test installs it (scripts/setup --test)",
    ),
]

expect.set_options(timeout=TIMEOUT_MS)


# --- fixtures ------------------------------------------------------------------------------


@dataclass
class Site:
    """The module's server, its videos folder and a plain HTTP client for it."""

    server: LiveServer
    videos: Path
    http: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url

    def submit(self, video_source: str, **options: Any) -> str:
        res = self.http.post("/video-job", json={"video_source": video_source, **options})
        assert res.status_code == 200, res.text
        job_id: str = res.json()["job_id"]
        return job_id

    def status(self, job_id: str) -> httpx.Response:
        return self.http.get(f"/job-status/{job_id}")

    def wait(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll until the job is finished; return its view."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.status(job_id)
            assert res.status_code == 200, res.text
            view: dict[str, Any] = res.json()
            if view["status"] in ("completed", "failed", "cancelled"):
                return view
            assert time.monotonic() < deadline, f"job {job_id} still {view['status']}"
            time.sleep(0.05)

    def frames(self, job_id: str) -> list[dict[str, Any]]:
        res = self.http.get(f"/frames/{job_id}")
        assert res.status_code == 200, res.text
        frames: list[dict[str, Any]] = res.json()["frames"]
        return frames


def start_server(root: Path, videos: Path, **env: Any) -> LiveServer:
    server = LiveServer(vfe_env(root, videos, **env), root / "server.log")
    server.start()
    return server


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, media: Media) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("browser")
    videos = root / "videos"
    videos.mkdir()
    place(media.standard(), videos)
    redis = RedisServer(root)  # as deployed: the health panel all green in the screenshots
    redis.start()
    try:
        server = start_server(root, videos, REDIS_PORT=redis.port)
        try:
            with httpx.Client(base_url=server.url, timeout=10) as http:
                yield Site(server, videos, http)
        finally:
            server.stop()
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, media: Media) -> Iterator[Site]:
    """A server as a new user first meets it: no Redis (the in-memory cache, the default)
    and no jobs. Tests using it must not submit any."""
    root = tmp_path_factory.mktemp("fresh")
    videos = root / "videos"
    videos.mkdir()
    place(media.standard(), videos)
    server = start_server(root, videos)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            yield Site(server, videos, http)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            "/usr/bin/chromium is missing but CI is set, so the browser tests must run: "
            "install Debian's chromium package (./scripts/setup --test does)"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Watch:
    """What a page did that no test wants: JS dialogs (alert/confirm) and uncaught errors."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


def open_page(browser: Browser, viewport: dict[str, int], **context: Any) -> tuple[Page, Watch]:
    page = browser.new_context(viewport=viewport, **context).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    watch = Watch()
    page.on("dialog", watch.on_dialog)
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    return page, watch


@pytest.fixture
def watched(browser: Browser) -> Iterator[tuple[Page, Watch]]:
    """A fresh desktop page; the test fails if the page threw an uncaught JS error."""
    page, watch = open_page(browser, DESKTOP)
    try:
        yield page, watch
    finally:
        # A route the test left may be mid-answer as the page closes; its error ("Response
        # has been disposed") would otherwise be raised by the next test's first call.
        page.unroute_all(behavior="ignoreErrors")
        page.context.close()
    assert not watch.errors, f"uncaught errors in the page: {watch.errors}"


@pytest.fixture
def page(watched: tuple[Page, Watch]) -> Page:
    return watched[0]


# --- helpers -------------------------------------------------------------------------------


def by_id(page: Page | Locator, test_id: str) -> Locator:
    return page.get_by_test_id(test_id)


def row(page: Page, job_id: str) -> Locator:
    return page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')


def numbers(text: str) -> list[float]:
    return [float(n) for n in re.findall(r"\d+(?:\.\d+)?", text)]


def shows_time(locator: Locator, seconds: float) -> None:
    """The element's text has a number within 0.01 of ``seconds``."""
    text = locator.inner_text()
    assert any(math.isclose(n, seconds, abs_tol=0.01) for n in numbers(text)), (
        f"{text!r} does not show {seconds} s"
    )


def submit_form(page: Page) -> str:
    """Click submit; return the new job's id from the server's answer."""
    with page.expect_response(lambda r: r.url.endswith("/video-job")) as answer:
        by_id(page, "submit-button").click()
    assert answer.value.status == 200, answer.value.text()
    job_id: str = answer.value.json()["job_id"]
    return job_id


def pick_video(page: Page, name: str) -> None:
    """Choose ``name`` in the video picker (a <select> or a clickable list)."""
    picker = by_id(page, "video-picker")
    expect(picker).to_contain_text(name)
    if picker.evaluate("el => el.tagName") == "SELECT":
        index = picker.evaluate(
            "(el, name) => [...el.options].findIndex("
            "o => o.value === name || o.textContent.includes(name))",
            name,
        )
        picker.select_option(index=index)
    else:
        picker.get_by_text(name, exact=True).click()
    expect(by_id(page, "source-path")).to_have_value(name)


def expect_completed(page: Page, job_id: str, frames: int) -> None:
    job = row(page, job_id)
    expect(job).to_have_attribute("data-status", "completed")
    expect(by_id(job, "job-status")).to_contain_text("completed")
    expect(by_id(job, "job-progress")).to_have_js_property("value", 100)
    expect(by_id(job, "job-frames")).to_have_text(re.compile(rf"\b{frames}\s*/\s*{frames}\b"))
    expect(by_id(job, "job-speed")).to_have_count(1)
    expect(by_id(job, "job-eta")).to_have_count(1)


def no_horizontal_overflow(page: Page, view: str, width: int) -> None:
    """Nothing sticks out sideways. ``width`` is the viewport asked for: a mobile page
    that overflows widens its layout viewport, and innerWidth with it, to fit."""
    scroll, inner = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert scroll <= min(inner, width), f"{view}: the page is {scroll} px wide in {width} px"


def thumbs_loaded(page: Page) -> None:
    """Wait until the first thumbnail's image has really loaded."""
    first = by_id(page, "frame-thumb").first.locator("img")
    expect(first).to_have_js_property("complete", True)
    assert first.evaluate("img => img.naturalWidth") > 0, "thumbnail image did not load"


def drop_file(page: Page, name: str, data: bytes) -> None:
    """Drop a file named ``name`` on the drop zone, as a person dragging it there would."""
    transfer = page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: 'video/mp4'}));
            return transfer;
        }""",
        [name, base64.b64encode(data).decode()],
    )
    zone = by_id(page, "drop-zone")
    for event in ("dragenter", "dragover", "drop"):
        zone.dispatch_event(event, {"dataTransfer": transfer})


def tab_to(page: Page, selector: str, *, back: bool = False, limit: int = 60) -> None:
    """Press Tab (Shift+Tab with ``back``) until the focused element matches ``selector``."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        if page.evaluate("s => document.activeElement?.matches(s) ?? false", selector):
            return
    raise AssertionError(f"{limit} presses of Tab never reached {selector}")


def focused(page: Page, selector: str) -> None:
    """The focused element matches ``selector``, and shows it: :focus-visible with an
    outline (on the pill around it for a radio button)."""
    state = page.evaluate(
        """(selector) => {
            const el = document.activeElement;
            const ring = el?.type === 'radio' ? el.closest('.tab') : el;
            const style = ring ? getComputedStyle(ring) : null;
            return {
                matches: Boolean(el?.matches(selector)),
                visible: Boolean(el?.matches(':focus-visible')),
                outline: style ? [style.outlineStyle, style.outlineWidth] : null,
                what: el ? el.outerHTML.slice(0, 120) : null,
            };
        }""",
        selector,
    )
    assert state["matches"], f"focus is on {state['what']}, not {selector}"
    assert state["visible"], f"{selector} has focus but not :focus-visible"
    style, width = state["outline"]
    assert style != "none" and width != "0px", f"{selector}: no visible focus ({style} {width})"


def lines(locator: Locator) -> int:
    """How many lines the element's text takes."""
    count: int = locator.evaluate(
        """el => {
            const range = document.createRange();
            range.selectNodeContents(el);
            return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
        }"""
    )
    return count


def fetch_in_page(page: Page, url: str) -> dict[str, Any]:
    """GET ``url`` from the page, as a download link would (its cookies, no headers)."""
    got: dict[str, Any] = page.evaluate(
        """async (url) => {
            const response = await fetch(url);
            const bytes = new Uint8Array(await response.arrayBuffer());
            return {status: response.status, type: response.headers.get('content-type'),
                    size: bytes.length, head: Array.from(bytes.slice(0, 3))};
        }""",
        url,
    )
    return got


def until(page: Page, condition: Callable[[], bool], what: str) -> None:
    """Wait for a condition on the test's side (such as requests held by a route), letting
    Playwright dispatch its events meanwhile; for conditions in the page, use expect."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(20)


def hold(page: Page, pattern: re.Pattern[str]) -> list[Route]:
    """Hold back the page's requests whose URL matches ``pattern`` until the test lets each
    go (``route.continue_()``): a slow server, with its real answers."""
    held: list[Route] = []
    page.route(pattern, lambda route: held.append(route))
    return held


def painted(locator: Locator) -> tuple[int, int, int]:
    """The colour seen at an element: its background, or the nearest one behind it."""
    rgb: list[int] = locator.evaluate(
        """el => {
            for (let node = el; node; node = node.parentElement) {
                const colour = getComputedStyle(node).backgroundColor;
                const [r, g, b, a = 1] = colour.match(/[\\d.]+/g).map(Number);
                if (a > 0) return [r, g, b];
            }
            return [255, 255, 255];
        }"""
    )
    return rgb[0], rgb[1], rgb[2]


def right_below(above: Locator, below: Locator) -> None:
    """``below`` sits just under ``above`` (within 3 rem), and they overlap sideways."""
    top, bottom = above.bounding_box(), below.bounding_box()
    assert top is not None and bottom is not None
    gap = bottom["y"] - (top["y"] + top["height"])
    assert -1 <= gap <= 48, f"{gap:.0f} px between the control and its error"
    assert bottom["x"] < top["x"] + top["width"] and top["x"] < bottom["x"] + bottom["width"]


def shoot(page: Page, name: str, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


# --- tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def showcase(site: Site, media: Media) -> str:
    """Two finished jobs to look at (a scene job and an interval job); the interval one's id."""
    scene = site.submit(place(media.cuts(), site.videos), mode="scene", min_gap=0)
    job_id = site.submit("standard.mp4", interval=0.25)
    for one in (scene, job_id):
        assert site.wait(one)["status"] == "completed"
    return job_id


@pytest.mark.parametrize(
    ("device", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)], ids=["desktop", "phone"]
)
def test_layout_fits_and_screenshots(
    browser: Browser, site: Site, showcase: str, device: str, viewport: dict[str, int]
):
    extra = {"is_mobile": True, "has_touch": True} if device == "phone" else {}
    # Reduced motion: the detail scrolls into view at once, not under the screenshot.
    page, watch = open_page(browser, viewport, reduced_motion="reduce", **extra)
    try:
        page.goto(site.url)
        expect(by_id(page, "submit-form")).to_be_visible()
        expect_completed(page, showcase, 8)
        for item in ("database", "cache", "ffmpeg", "queue", "workers", "disk"):
            expect(by_id(page, f"health-{item}")).to_have_attribute("data-state", "ok")
        no_horizontal_overflow(page, f"{device} job list", viewport["width"])
        short_id = by_id(row(page, showcase), "job-id")
        expect(short_id).to_have_text(showcase.split("-")[0])
        expect(short_id).to_have_attribute("title", re.compile(showcase))
        recent = by_id(page, "recent-frame").first
        expect(recent).to_be_visible()
        assert lines(recent.locator(".frame-time")) == 1, "a recent frame's time wraps"
        shoot(page, f"{device}-jobs", full_page=True)

        row(page, showcase).click()
        detail = by_id(page, "job-detail")
        expect(detail).to_have_attribute("data-job-id", showcase)
        expect(by_id(page, "frame-thumb")).to_have_count(8)
        if device == "desktop":
            page.evaluate("() => window.scrollTo(0, 0)")  # the health bar, form and detail
        else:
            detail.evaluate("el => el.scrollIntoView({block: 'start'})")
        thumbs_loaded(page)
        no_horizontal_overflow(page, f"{device} job detail", viewport["width"])
        full_id = detail.locator('dd[data-fact="id"]')
        expect(full_id).to_have_text(showcase)
        assert lines(full_id) == 1, "the job id wraps"
        assert lines(by_id(page, "frame-time").first) == 1, "a frame's time wraps"
        shoot(page, f"{device}-detail")

        by_id(page, "frame-thumb").nth(2).click()
        image = by_id(page, "viewer-image")
        expect(by_id(page, "frame-viewer")).to_be_visible()
        expect(image).to_have_js_property("complete", True)
        assert image.evaluate("img => img.naturalWidth") > 0, "viewer image did not load"
        no_horizontal_overflow(page, f"{device} frame viewer", viewport["width"])
        shoot(page, f"{device}-viewer")
    finally:
        page.context.close()
    assert not watch.errors, f"uncaught errors in the page: {watch.errors}"


def test_submit_by_path_then_watch_it_finish_and_browse_its_frames(page: Page, site: Site):
    page.goto(site.url)
    by_id(page, "source-kind-path").click()
    pick_video(page, "standard.mp4")
    by_id(page, "mode").select_option("interval")
    by_id(page, "interval").fill("0.5")
    job_id = submit_form(page)

    expect(row(page, job_id)).to_be_visible()
    expect(by_id(row(page, job_id), "job-source")).to_contain_text("standard.mp4")
    expect_completed(page, job_id, 4)
    frames = site.frames(job_id)
    assert [f["target_time"] for f in frames] == [0.0, 0.5, 1.0, 1.5]
    expect(by_id(page, "recent-frame").first).to_be_attached()

    # Enter on the focused row opens the job; the URL names it.
    row(page, job_id).focus()
    page.keyboard.press("Enter")
    detail = by_id(page, "job-detail")
    expect(detail).to_be_visible()
    expect(detail).to_have_attribute("data-job-id", job_id)
    expect(page).to_have_url(re.compile(rf"#job={job_id}$"))
    expect(by_id(detail, "job-detail-progress")).to_have_js_property("value", 100)
    expect(by_id(detail, "job-facts")).to_contain_text("completed")
    expect(by_id(detail, "job-facts")).to_contain_text("h264")
    expect(by_id(detail, "cancel-button")).to_be_hidden()
    thumbs = by_id(detail, "frame-thumb")
    expect(thumbs).to_have_count(4)
    expect(detail.locator('dd[data-fact="frames"]')).to_have_text(re.compile(r"^4\s*/\s*4$"))
    expect(by_id(detail, "frame-count")).to_have_text("(4)")
    for n, frame in enumerate(frames):
        expect(thumbs.nth(n)).to_have_attribute("data-index", str(frame["index"]))
        shows_time(by_id(thumbs.nth(n), "frame-time"), frame["timestamp"])
        expect(thumbs.nth(n).locator("img")).to_have_attribute("loading", "lazy")

    download = by_id(detail, "download-all")
    expect(download).to_have_attribute("href", re.compile(rf"/job/{job_id}/frames\.zip$"))
    expect(download).to_have_attribute("download", re.compile(".*"))
    archive = page.request.get(f"{site.url}/job/{job_id}/frames.zip")
    assert archive.ok
    names = zipfile.ZipFile(io.BytesIO(archive.body())).namelist()
    assert names == [*(f["filename"] for f in frames), "frames.json"]  # the images, listed

    # The frame viewer: open the second frame, step with the keys, close with Escape.
    thumbs.nth(1).click()
    viewer = by_id(page, "frame-viewer")
    image = by_id(page, "viewer-image")
    caption = by_id(page, "viewer-caption")
    expect(viewer).to_be_visible()

    def shows(n: int) -> None:
        """The viewer shows frames[n]; its caption numbers it one way only, labelled: its
        place in the gallery ("frame 2 of 4"), not also its index in the job's targets."""
        frame = frames[n]
        expect(image).to_have_attribute("src", re.compile(re.escape(frame["url"]) + "$"))
        shows_time(caption, frame["timestamp"])
        expect(caption).to_contain_text(f"frame {n + 1} of 4")
        text = caption.inner_text()
        assert re.findall(r"(?i)\bframe\s+\d+", text) == [f"frame {n + 1}"], text
        assert re.search(rf"{frame['timestamp']:.3f}\s*s in the video\b", text), text
        expect(by_id(page, "viewer-download")).to_have_attribute(
            "href", re.compile(re.escape(frame["url"]) + "$")
        )

    shows(1)
    page.keyboard.press("ArrowRight")
    shows(2)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    shows(0)
    by_id(page, "viewer-next").click()
    shows(1)
    by_id(page, "viewer-prev").click()
    shows(0)
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("img => img.naturalWidth") == 320
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    expect(detail).to_be_visible()  # Escape closed the viewer only

    thumbs.nth(3).click()
    shows(3)
    by_id(page, "viewer-close").click()
    expect(viewer).to_be_hidden()

    # The job's URL opens it again after a reload; close-detail leaves it.
    page.reload()
    expect(by_id(page, "job-detail")).to_have_attribute("data-job-id", job_id)
    expect(by_id(page, "frame-thumb")).to_have_count(4)
    by_id(page, "close-detail").click()
    expect(by_id(page, "job-detail")).to_be_hidden()


def test_keyboard_only_submit_open_browse_and_download_a_frame(page: Page, site: Site):
    """Tab, Shift+Tab, Enter, Space, arrows and Escape alone: no clicks."""
    page.goto(site.url)
    expect(by_id(page, "video-picker")).to_contain_text("standard.mp4")

    # The source: arrows move between the radio buttons, as in any radio group.
    tab_to(page, '[data-testid="source-kind-path"]')
    focused(page, '[data-testid="source-kind-path"]')
    page.keyboard.press("ArrowRight")
    expect(by_id(page, "source-kind-upload")).to_be_checked()
    expect(by_id(page, "drop-zone")).to_be_visible()
    page.keyboard.press("ArrowLeft")
    expect(by_id(page, "source-kind-path")).to_be_checked()
    expect(by_id(page, "source-path")).to_be_visible()

    # The picker: arrows on the closed <select> choose a video.
    tab_to(page, '[data-testid="video-picker"]')
    focused(page, '[data-testid="video-picker"]')
    for _ in range(20):
        if by_id(page, "source-path").input_value() == "standard.mp4":
            break
        page.keyboard.press("ArrowDown")
    expect(by_id(page, "source-path")).to_have_value("standard.mp4")

    tab_to(page, '[data-testid="interval"]')
    focused(page, '[data-testid="interval"]')
    page.keyboard.type("0.5")
    tab_to(page, '[data-testid="submit-button"]')
    tab_to(page, '[data-testid="height"]', back=True)  # Shift+Tab goes back up the form
    tab_to(page, '[data-testid="submit-button"]')
    focused(page, '[data-testid="submit-button"]')
    with page.expect_response(lambda r: r.url.endswith("/video-job")) as answer:
        page.keyboard.press("Space")
    assert answer.value.status == 200, answer.value.text()
    job_id: str = answer.value.json()["job_id"]
    detail = by_id(page, "job-detail")
    expect(detail).to_have_attribute("data-job-id", job_id)  # the new job opens by itself
    expect_completed(page, job_id, 4)
    frames = site.frames(job_id)
    expect(by_id(detail, "frame-thumb")).to_have_count(4)

    # Escape closes the job and puts the focus on its row; Enter opens it again.
    expect(detail).to_be_focused()
    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()
    job_row = f'[data-testid="job-row"][data-job-id="{job_id}"]'
    focused(page, job_row)
    page.keyboard.press("Enter")
    expect(detail).to_be_visible()
    expect(detail).to_have_attribute("data-job-id", job_id)
    expect(detail).to_be_focused()

    # Tab into the gallery, one thumbnail too far and back, and open the first frame.
    first = f'[data-testid="frame-thumb"][data-index="{frames[0]["index"]}"]'
    tab_to(page, f'[data-testid="frame-thumb"][data-index="{frames[1]["index"]}"]')
    tab_to(page, first, back=True)
    focused(page, first)
    page.keyboard.press("Enter")
    viewer = by_id(page, "frame-viewer")
    caption = by_id(page, "viewer-caption")
    expect(viewer).to_be_visible()
    focused(page, '[data-testid="frame-viewer"] *')  # the focus moved into the viewer
    shows_time(caption, frames[0]["timestamp"])
    page.keyboard.press("ArrowRight")
    shows_time(caption, frames[1]["timestamp"])
    page.keyboard.press("ArrowRight")
    shows_time(caption, frames[2]["timestamp"])
    page.keyboard.press("ArrowLeft")
    shows_time(caption, frames[1]["timestamp"])
    expect(caption).to_contain_text("2 of 4")

    # Download one frame: the link is the frame's own URL, which serves the image.
    link = by_id(page, "viewer-download")
    expect(link).to_have_attribute("href", re.compile(re.escape(frames[1]["url"]) + "$"))
    expect(link).to_have_attribute("download", frames[1]["filename"])
    got = fetch_in_page(page, link.evaluate("a => a.href"))
    assert got["status"] == 200 and got["type"].startswith("image/"), got
    assert got["head"] == [0xFF, 0xD8, 0xFF], "not a JPEG"
    assert got["size"] == frames[1]["size_bytes"]
    tab_to(page, '[data-testid="viewer-download"]')
    focused(page, '[data-testid="viewer-download"]')

    # Escape closes the viewer only; the focus is back on the thumbnail that opened it.
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    expect(detail).to_be_visible()
    focused(page, first)


def test_submit_by_upload(page: Page, site: Site, media: Media):
    page.goto(site.url)
    by_id(page, "source-kind-upload").click()
    expect(by_id(page, "drop-zone")).to_be_visible()
    expect(by_id(page, "source-path")).to_be_hidden()
    by_id(page, "file-input").set_input_files(
        files=[
            {
                "name": "holiday clip.mp4",
                "mimeType": "video/mp4",
                "buffer": media.standard().read_bytes(),
            }
        ]
    )
    by_id(page, "mode").select_option("count")
    expect(by_id(page, "interval")).to_be_hidden()
    by_id(page, "count").fill("3")
    by_id(page, "tonemap").select_option("off")  # the output options go with an upload too
    job_id = submit_form(page)

    expect(by_id(page, "upload-progress")).to_be_hidden()
    expect(by_id(row(page, job_id), "job-source")).to_contain_text("holiday clip.mp4")
    expect_completed(page, job_id, 3)
    view = site.status(job_id).json()
    assert (view["source_type"], view["mode"]) == ("upload", "count")
    assert view["options"]["tonemap"] == "off"

    # A file dropped on the zone, sent slowly (200 kB/s) so its progress bar shows.
    drop_file(page, "dropped clip.mp4", media.standard().read_bytes())
    expect(by_id(page, "drop-zone")).to_contain_text("dropped clip.mp4")
    cdp = page.context.new_cdp_session(page)
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 200e3},
    )
    with page.expect_response(lambda r: r.url.endswith("/video-job")) as answer:
        by_id(page, "submit-button").click()
        expect(by_id(page, "upload-progress")).to_be_visible()
    assert answer.value.status == 200, answer.value.text()
    expect(by_id(page, "upload-progress")).to_be_hidden()
    dropped = answer.value.json()["job_id"]
    expect(by_id(row(page, dropped), "job-source")).to_contain_text("dropped clip.mp4")
    expect_completed(page, dropped, 3)


def test_a_job_submitted_elsewhere_appears_without_reload(page: Page, site: Site):
    page.goto(site.url)
    expect(by_id(page, "job-list")).to_be_visible()
    page.evaluate("() => { window.__sameDocument = true; }")
    expect(by_id(page, "health-ffmpeg")).to_have_attribute("data-state", "ok")

    job_id = site.submit("standard.mp4", interval=1)
    expect(row(page, job_id)).to_be_visible()
    expect(by_id(page, "job-row").first).to_have_attribute("data-job-id", job_id)  # newest first
    expect_completed(page, job_id, 2)
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"

    # Deleted elsewhere: the row goes away too.
    assert site.http.delete(f"/job/{job_id}").status_code == 200
    expect(row(page, job_id)).to_have_count(0)


def test_cancel_a_running_job_after_confirming(page: Page, site: Site, media: Media):
    # 750 PNG frames of 720p: about 7 s on an idle machine, so it is surely still running
    # when the test cancels it (in about 2 s), and it reports progress meanwhile. Not
    # reused: test_frame_counts_agree_while_a_job_runs submits the same job.
    job_id = site.submit(place(media.slow(), site.videos), interval=0.04, format="png", reuse=False)
    deletes: list[str] = []
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)
    page.goto(f"{site.url}/#job={job_id}")
    detail = by_id(page, "job-detail")
    expect(detail).to_have_attribute("data-job-id", job_id)
    expect(row(page, job_id)).to_have_attribute("data-status", "processing")
    running = "el => el.value > 0 && el.value < 100"  # live progress, in the list and here
    page.wait_for_function(running, arg=by_id(row(page, job_id), "job-progress").element_handle())
    page.wait_for_function(running, arg=by_id(detail, "job-detail-progress").element_handle())
    expect(by_id(row(page, job_id), "job-frames")).to_have_text(re.compile(r"\b\d+\s*/\s*750\b"))
    cancel = by_id(detail, "cancel-button")
    dialog = by_id(page, "confirm-dialog")

    cancel.click()
    expect(dialog).to_be_visible()
    by_id(page, "confirm-no").click()
    expect(dialog).to_be_hidden()
    expect(cancel).to_be_visible()
    assert site.status(job_id).json()["status"] == "processing", "the job finished too soon"

    cancel.click()
    expect(dialog).to_be_visible()
    with page.expect_response(lambda r: r.request.method == "DELETE") as answer:
        by_id(page, "confirm-yes").click()
    assert answer.value.url.endswith(f"/job/{job_id}") and answer.value.status == 200
    expect(dialog).to_be_hidden()
    assert site.status(job_id).status_code == 404
    expect(row(page, job_id)).to_have_count(0)
    expect(cancel).to_be_hidden()
    assert len(deletes) == 1, f"'no' must not cancel: {deletes}"


def test_validation_errors_show_at_the_field_and_in_the_form(page: Page, site: Site):
    page.goto(site.url)
    by_id(page, "source-kind-path").click()
    by_id(page, "source-path").fill("standard.mp4")
    by_id(page, "mode").select_option("fps")
    expect(by_id(page, "fps")).to_be_visible()
    expect(by_id(page, "interval")).to_be_hidden()
    by_id(page, "mode").select_option("interval")
    expect(by_id(page, "fps")).to_be_hidden()
    by_id(page, "interval").fill("0")

    with page.expect_response(lambda r: r.url.endswith("/video-job")) as answer:
        by_id(page, "submit-button").click()
    assert answer.value.status == 422
    expect(by_id(page, "field-error-interval")).to_be_visible()
    expect(by_id(page, "field-error-interval")).to_contain_text("greater than or equal")
    form_error = by_id(page, "form-error")
    expect(form_error).to_be_visible()
    expect(form_error).to_have_attribute("role", "alert")
    expect(form_error).not_to_be_empty()

    # A 400: the file is not in the videos folder.
    by_id(page, "interval").fill("1")
    by_id(page, "source-path").fill("no-such-video.mp4")
    with page.expect_response(lambda r: r.url.endswith("/video-job")) as answer:
        by_id(page, "submit-button").click()
    assert answer.value.status == 400
    expect(form_error).to_contain_text(answer.value.json()["detail"])
    expect(by_id(page, "field-error-interval")).to_be_empty()  # the old error is cleared

    # A URL goes in video_source like a path; the server refuses this one (a loopback
    # address, not allowed by default) with a 400, shown in the form.
    by_id(page, "source-kind-url").click()
    expect(by_id(page, "source-path")).to_be_hidden()
    url = "http://127.0.0.1:9/clip.mp4"
    by_id(page, "source-url").fill(url)
    with page.expect_response(lambda r: r.url.endswith("/video-job")) as answer:
        by_id(page, "submit-button").click()
    assert answer.value.request.post_data_json["video_source"] == url
    assert answer.value.status == 400, answer.value.text()
    expect(form_error).to_have_text(answer.value.json()["detail"])


def test_untrusted_names_show_as_text(watched: tuple[Page, Watch], site: Site, media: Media):
    page, watch = watched
    place(media.standard(), site.videos, XSS_NAME)
    page.goto(site.url)

    by_id(page, "source-kind-path").click()
    pick_video(page, XSS_NAME)  # the picker lists it as text
    by_id(page, "interval").fill("1")
    by_path = submit_form(page)

    by_id(page, "source-kind-upload").click()
    by_id(page, "file-input").set_input_files(
        files=[{"name": XSS_NAME, "mimeType": "video/mp4", "buffer": media.standard().read_bytes()}]
    )
    by_id(page, "interval").fill("1")
    by_upload = submit_form(page)

    for job_id in (by_path, by_upload):
        expect(by_id(row(page, job_id), "job-source")).to_have_text(XSS_NAME)
        expect_completed(page, job_id, 2)
    row(page, by_upload).click()
    expect(by_id(page, "job-detail")).to_have_attribute("data-job-id", by_upload)
    expect(by_id(page, "frame-thumb")).to_have_count(2)
    thumbs_loaded(page)

    assert page.locator('img[src="x"]').count() == 0, "a file name became an <img> element"
    assert page.locator("[onerror]").count() == 0, "a file name became markup"
    assert watch.dialogs == [], f"a file name ran script: {watch.dialogs}"


def test_health_panel_shows_the_workers_of_the_scaled_layout(
    browser: Browser, tmp_path: Path, postgres_url: str
):
    videos = tmp_path / "videos"
    videos.mkdir()
    env = {"DATABASE_URL": postgres_url, "STALLED_AFTER_SECONDS": "3"}
    api = LiveServer(
        vfe_env(tmp_path, videos, **env), tmp_path / "api.log", ("serve", "--api-only")
    )
    api.start()
    worker: LiveServer | None = None
    page, watch = open_page(browser, DESKTOP)
    try:
        page.goto(api.url)
        workers = by_id(page, "health-workers")
        expect(workers).to_have_attribute("data-state", "warn")  # no worker yet: jobs wait
        expect(workers).to_have_text("none live")
        expect(by_id(page, "health-database")).to_have_text("PostgreSQL")
        worker = LiveServer(vfe_env(tmp_path, videos, **env), tmp_path / "worker.log", ("worker",))
        worker.start()
        expect(workers).to_have_attribute("data-state", "ok")
        expect(workers).to_have_text(re.compile(r"^1 live · 0 running$"))
        expect(workers).to_have_attribute("title", re.compile("last heartbeat"))
        assert watch.errors == []
    finally:
        page.context.close()
        for server in (worker, api):
            if server is not None:
                server.stop()


def test_health_panel_shows_a_disk_below_its_floor(browser: Browser, tmp_path: Path):
    """Below MIN_FREE_DISK_MB new jobs are refused (507): the disk and the service say so."""
    videos = tmp_path / "videos"
    videos.mkdir()
    floor = shutil.disk_usage(tmp_path).free // 2**20 + 1024
    server = start_server(tmp_path, videos, MIN_FREE_DISK_MB=str(floor))
    page, _ = open_page(browser, DESKTOP)
    try:
        page.goto(server.url)
        disk = by_id(page, "health-disk")
        expect(disk).to_have_attribute("data-state", "down")
        expect(disk).to_have_attribute("title", re.compile(f"floor of {floor} MB"))
        expect(by_id(page, "health-status")).to_have_attribute("data-state", "down")
        expect(by_id(page, "health-status")).to_have_text("service unhealthy")
    finally:
        page.context.close()
        server.stop()


def test_health_panel_follows_redis(browser: Browser, tmp_path: Path):
    redis = RedisServer(tmp_path)
    redis.start()
    videos = tmp_path / "videos"
    videos.mkdir()
    server = start_server(tmp_path, videos, REDIS_PORT=redis.port, REDIS_RETRY_SECONDS=0.2)
    page, watch = open_page(browser, DESKTOP)
    try:
        page.goto(server.url)
        expect(by_id(page, "health-panel")).to_be_visible()
        cache = by_id(page, "health-cache")
        expect(cache).to_have_attribute("data-state", "ok")
        expect(cache).to_contain_text("Redis")
        for item in ("database", "ffmpeg", "queue", "workers", "disk"):
            expect(by_id(page, f"health-{item}")).to_have_attribute("data-state", "ok")

        # Without Redis the in-memory cache serves: a normal state, not a warning.
        redis.stop()
        expect(cache).to_have_attribute("data-state", "neutral")
        expect(cache).to_have_text("in-memory")
        expect(cache).to_have_attribute("title", re.compile("Redis"))
        expect(by_id(page, "health-status")).to_have_attribute("data-state", "ok")
        expect(by_id(page, "health-database")).to_have_attribute("data-state", "ok")

        redis.start()  # same port: the server finds it again
        expect(cache).to_have_attribute("data-state", "ok")
        expect(cache).not_to_contain_text("unreachable")
    finally:
        page.context.close()
        server.stop()
        redis.stop()
    assert not watch.errors, f"uncaught errors in the page: {watch.errors}"


def test_api_key_is_asked_once_kept_and_sent(browser: Browser, tmp_path: Path, media: Media):
    key = "dashboard-key-7f3a9c"
    videos = tmp_path / "videos"
    videos.mkdir()
    place(media.standard(), videos)
    server = start_server(tmp_path, videos, API_KEYS=f"another-key,{key}")
    page, watch = open_page(browser, DESKTOP)
    try:
        refused = httpx.get(f"{server.url}/jobs", timeout=10)
        assert refused.status_code == 401, "the server runs without API keys"
        assert refused.headers["www-authenticate"].startswith("Bearer")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=10) as http:
            res = http.post("/video-job", json={"video_source": "standard.mp4", "interval": 1})
            assert res.status_code == 200, res.text
            earlier: str = res.json()["job_id"]

        sent: list[dict[str, str]] = []
        page.on("request", lambda r: sent.append(r.headers) if "/video-job" in r.url else None)
        page.goto(server.url)
        dialog = by_id(page, "api-key-dialog")
        expect(dialog).to_be_visible()
        expect(by_id(page, "api-key-input")).to_be_focused()
        expect(by_id(page, "feed-status")).to_have_text("waiting for an API key")
        expect(by_id(page, "health-ffmpeg")).to_have_attribute("data-state", "ok")  # no key
        expect(by_id(page, "job-row")).to_have_count(0)

        by_id(page, "api-key-input").fill("not-the-key")
        by_id(page, "api-key-submit").click()
        error = by_id(page, "api-key-error")
        expect(error).to_contain_text("refused")
        expect(dialog).to_be_visible()
        shoot(page, "desktop-api-key")

        by_id(page, "api-key-input").fill(key)
        by_id(page, "api-key-submit").click()
        expect(dialog).to_be_hidden()
        expect_completed(page, earlier, 2)
        expect(by_id(page, "feed-status")).to_have_text("live")
        expect(by_id(page, "video-picker")).to_contain_text("standard.mp4")
        (cookie,) = [c for c in page.context.cookies() if c["name"] == "vfe_api_key"]
        assert (cookie["value"], cookie["path"], cookie["sameSite"]) == (key, "/", "Strict")

        # A job from the form: its live progress, its thumbnails (the cookie loads them).
        pick_video(page, "standard.mp4")
        by_id(page, "interval").fill("0.5")
        job_id = submit_form(page)
        expect_completed(page, job_id, 4)
        expect(by_id(page, "job-detail")).to_have_attribute("data-job-id", job_id)
        expect(by_id(page, "frame-thumb")).to_have_count(4)
        thumbs_loaded(page)
        frame = by_id(page, "frame-thumb").first.locator("img").get_attribute("src")
        assert frame is not None
        got = fetch_in_page(page, frame)
        assert got["status"] == 200 and got["type"].startswith("image/"), got

        # The upload's XMLHttpRequest sends the key too.
        by_id(page, "source-kind-upload").click()
        by_id(page, "file-input").set_input_files(
            files=[
                {"name": "up.mp4", "mimeType": "video/mp4", "buffer": media.standard().read_bytes()}
            ]
        )
        uploaded = submit_form(page)
        expect_completed(page, uploaded, 4)  # the interval of 0.5 s is still filled in
        assert [headers.get("x-api-key") for headers in sent] == [key, key]

        # Kept: a reload does not ask again.
        page.reload()
        expect_completed(page, uploaded, 4)
        expect(by_id(page, "feed-status")).to_have_text("live")
        expect(dialog).to_be_hidden()

        # A key the server no longer takes (rotated): asked again, then everything resumes.
        page.evaluate("() => localStorage.setItem('vfe-api-key', 'rotated-away')")
        page.reload()
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("refused")
        by_id(page, "api-key-input").fill(key)
        by_id(page, "api-key-input").press("Enter")
        expect(dialog).to_be_hidden()
        expect_completed(page, job_id, 4)
        expect(by_id(page, "feed-status")).to_have_text("live")
        expect(by_id(page, "frame-thumb")).to_have_count(4)  # the open job came back
        thumbs_loaded(page)
        assert page.evaluate("() => localStorage.getItem('vfe-api-key')") == key

        # Changing the key from the top bar: a wrong one is refused even though the
        # cookie of the right one is still set; Escape keeps the key there was.
        by_id(page, "api-key-button").click()
        expect(dialog).to_be_visible()
        by_id(page, "api-key-input").fill("not-the-key")
        by_id(page, "api-key-submit").click()
        expect(error).to_contain_text("refused")
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        assert page.evaluate("() => localStorage.getItem('vfe-api-key')") == key
    finally:
        page.context.close()
        server.stop()
    assert not watch.errors, f"uncaught errors in the page: {watch.errors}"


def test_job_list_says_loading_until_the_server_answers(browser: Browser, fresh: Site):
    """Until the first snapshot or GET /jobs answers, the list is loading, not empty
    (on a phone: the health bar with the in-memory cache fits too)."""
    page, watch = open_page(browser, PHONE, is_mobile=True, has_touch=True)
    try:
        held = hold(page, re.compile(r"//[^/]+/(events$|jobs\?)"))
        page.goto(fresh.url)
        until(page, lambda: len(held) == 2, "the page to ask for /events and /jobs")
        expect(by_id(page, "health-status")).to_have_text("service ok")  # the scripts ran
        empty = by_id(page, "jobs-empty")
        expect(empty).to_be_visible()
        expect(empty).to_have_text("Loading jobs…")
        expect(by_id(page, "feed-status")).to_have_text("connecting…")
        expect(by_id(page, "feed-status")).not_to_have_attribute("data-state", "warn")
        no_horizontal_overflow(page, "phone, loading", PHONE["width"])
        shoot(page, "phone-loading", full_page=True)

        for route in held:
            route.continue_()
        expect(by_id(page, "feed-status")).to_have_text("live")
        expect(empty).to_have_text(re.compile(r"^No jobs yet\b"))
        expect(by_id(page, "job-row")).to_have_count(0)
    finally:
        page.context.close()
    assert not watch.errors, f"uncaught errors in the page: {watch.errors}"


def test_health_shows_the_memory_cache_as_normal(page: Page, fresh: Site):
    """Redis is optional: the in-memory cache (the default) is not a warning."""
    page.goto(fresh.url)
    cache = by_id(page, "health-cache")
    expect(cache).to_have_text("in-memory")
    expect(cache).to_have_attribute("data-state", "neutral")
    for item in ("database", "ffmpeg", "queue", "disk"):
        expect(by_id(page, f"health-{item}")).to_have_attribute("data-state", "ok")
    expect(by_id(page, "health-status")).to_have_attribute("data-state", "ok")
    warn = page.evaluate(
        """() => {
            const probe = document.createElement('span');
            probe.className = 'chip';
            probe.dataset.state = 'warn';
            document.body.append(probe);
            const style = getComputedStyle(probe);
            const colours = [style.color, style.backgroundColor];
            probe.remove();
            return colours;
        }"""
    )
    shown = cache.evaluate(
        "el => [getComputedStyle(el).color, getComputedStyle(el).backgroundColor]"
    )
    assert shown[0] != warn[0] and shown[1] != warn[1], f"warning colours: {shown}"


def test_frame_counts_agree_while_a_job_runs(page: Page, site: Site, media: Media):
    """The job's "Frames n / total" and the gallery's "Frames (n)" are one count, at every
    moment of a long job (750 PNG frames of 720p: seconds of frames arriving). When it
    is finished too: see test_submit_by_path_then_watch_it_finish_and_browse_its_frames.
    Not reused: test_cancel_a_running_job_after_confirming submits the same job."""
    job_id = site.submit(place(media.slow(), site.videos), interval=0.04, format="png", reuse=False)
    page.goto(f"{site.url}/#job={job_id}")
    detail = by_id(page, "job-detail")
    expect(detail).to_have_attribute("data-job-id", job_id)
    expect(detail).to_have_attribute("data-status", "processing", timeout=60_000)
    read = """detail => ({
        status: detail.dataset.status,
        fact: detail.querySelector('dd[data-fact="frames"]').textContent,
        heading: detail.querySelector('[data-testid="frame-count"]').textContent,
        thumbs: detail.querySelectorAll('[data-testid="frame-thumb"]').length,
    })"""
    more = """([detail, n]) => detail.dataset.status !== 'processing'
        || detail.querySelectorAll('[data-testid="frame-thumb"]').length > n"""
    handle = detail.element_handle()
    seen: list[dict[str, Any]] = []
    thumbs = 0
    while len(seen) < 5:
        page.wait_for_function(more, arg=[handle, thumbs + 25], timeout=60_000)
        state: dict[str, Any] = detail.evaluate(read)
        if state["status"] != "processing":
            break
        done, total = numbers(state["fact"])
        assert total == 750, state
        assert numbers(state["heading"]) == [done], f"the counts disagree: {state}"
        seen.append(state)
        thumbs = state["thumbs"]
    assert len(seen) >= 3, f"the job finished too soon to watch it: {seen}"
    assert site.http.delete(f"/job/{job_id}").status_code == 200  # seen enough


def test_thumbnails_show_a_placeholder_until_loaded_and_say_when_broken(page: Page, site: Site):
    job_id = site.submit("standard.mp4", interval=0.5)
    assert site.wait(job_id)["status"] == "completed"
    frames = site.frames(job_id)
    # four different pictures: breaking the last frame's object breaks no other thumbnail
    assert len({frame["checksum"] for frame in frames}) == 4, frames
    images = re.compile(rf"/frames/{job_id}/[^/?]+$")
    held = hold(page, images)
    page.goto(f"{site.url}/#job={job_id}")
    thumbs = by_id(page, "frame-thumb")
    expect(thumbs).to_have_count(4)
    until(page, lambda: len(held) == 4, "the page to ask for the 4 images")
    for n in range(4):
        box = by_id(thumbs.nth(n), "frame-image")
        expect(box).to_have_attribute("data-image", "loading")
        r, g, b = painted(thumbs.nth(n).locator("img"))
        assert min(r, g, b) >= 200, f"an unloaded thumbnail is dark: rgb({r}, {g}, {b})"
        expect(by_id(thumbs.nth(n), "frame-time")).to_be_visible()
    shoot(page, "desktop-thumbs-loading")

    # The last frame's stored object (its bytes, named by their checksum) is gone: the
    # server answers 404 for it. Put back at the end: other jobs of the module's server
    # (the same clip at other options) may hold the same bytes.
    checksum, ext = frames[3]["checksum"], frames[3]["filename"].rsplit(".", 1)[1]
    stored = Path(site.server.env["FRAMES_BASE_PATH"]) / checksum[:2] / f"{checksum}.{ext}"
    data = stored.read_bytes()
    stored.unlink()
    try:
        for route in held:
            route.continue_()
        page.unroute(images)
        for n in range(3):
            box = by_id(thumbs.nth(n), "frame-image")
            expect(box).to_have_attribute("data-image", "loaded")
            assert box.locator("img").evaluate("img => img.naturalWidth") == 320
        broken = by_id(thumbs.nth(3), "frame-image")
        expect(broken).to_have_attribute("data-image", "broken")
        expect(broken).to_contain_text("Image not available")
        expect(broken.locator("img")).to_be_hidden()
        shoot(page, "desktop-thumbs-broken")

        thumbs.nth(3).click()  # the large view says so too
        expect(by_id(page, "frame-viewer")).to_be_visible()
        expect(by_id(page, "viewer-image")).to_be_hidden()
        expect(by_id(page, "frame-viewer")).to_contain_text("Image not available")
        page.keyboard.press("ArrowLeft")
        expect(by_id(page, "viewer-image")).to_be_visible()
        expect(by_id(page, "viewer-image")).to_have_js_property("complete", True)
        assert by_id(page, "viewer-image").evaluate("img => img.naturalWidth") == 320
    finally:
        stored.write_bytes(data)
    assert site.http.get(frames[3]["url"]).content == data  # served again once put back


SAMPLING_RULES = [
    ({"interval": 0.5}, r"every\s0\.5\ss"),
    ({"fps": 2}, r"2\sfps"),
    ({"count": 3}, r"3\sframes"),
    ({"count": 1}, r"1\sframe"),
    ({"timestamps": [0.5, 1, 1.5]}, r"3\stimestamps"),
    ({"mode": "keyframes"}, r"keyframes"),
    ({"scene_threshold": 0.4}, r"scene\s≥\s0\.4"),
    ({"mode": "scene"}, r"scene\s≥\s0\.3"),  # the server's default threshold
    ({"mode": "best", "count": 2}, r"best\sof\s2\sstretches"),
]


def test_job_rows_show_each_sampling_rule(page: Page, site: Site):
    jobs = [(site.submit("standard.mp4", **options), rule) for options, rule in SAMPLING_RULES]
    page.goto(site.url)
    for job_id, rule in jobs:
        expect(by_id(row(page, job_id), "job-mode")).to_have_text(re.compile(rf"^{rule}$"))
    for job_id, _ in jobs:
        site.wait(job_id)


# Fields of JobSpec the form has no option control for, and why.
NOT_IN_THE_FORM = {
    "video_source": "the source controls (path, upload or URL) give it",
    "reuse": "the server's default (true) always",
}


def test_the_form_offers_every_job_field(page: Page, site: Site):
    page.goto(site.url)
    names = by_id(page, "submit-form").locator(".options [name]")
    expect(names.first).to_be_attached()
    offered = set(names.evaluate_all("controls => controls.map((c) => c.name)"))
    assert offered == set(JobSpec.model_fields) - set(NOT_IN_THE_FORM)
    modes = by_id(page, "mode").locator("option").evaluate_all("os => os.map((o) => o.value)")
    assert modes == [mode.value for mode in Mode]


def metric(text: str, name: str) -> float:
    """The number after ``name`` in a frame's metrics text ("sharpness 741 · black …")."""
    found = re.search(rf"\b{name}\s+(-?\d+(?:\.\d+)?)", text)
    assert found, f"{text!r} shows no {name}"
    return float(found[1])


def shows_metrics(text: str, frame: dict[str, Any]) -> None:
    """``text`` gives the frame's metrics (as rounded for people) and its phash."""
    for name in ("brightness", "contrast", "black"):
        assert math.isclose(metric(text, name), frame[name], abs_tol=0.0011), (name, text)
    assert math.isclose(metric(text, "sharpness"), frame["sharpness"], abs_tol=0.51), text
    assert f"phash {frame['phash']}" in text, text
    if frame["score"] is None:
        assert not re.search(r"\b(score|stretch)\b", text), text
    else:
        assert math.isclose(metric(text, "score"), frame["score"], abs_tol=0.0011), text
        assert metric(text, "stretch") == frame["stretch"] + 1, text  # counted from 1


def test_frame_choice_from_the_form_shows_metrics_and_marks_substitutes(
    page: Page, site: Site, media: Media
):
    """reject black and dedupe, chosen in the form, on a clip black from 1.0 to 1.4 s and
    from 3.0 to 3.9 s: at interval 1 with search 0.5, target 1.0 gets the first frame
    that is not black, 1.4 (substituted), and 3.0 none within 0.5 s (a rejected
    target). Every frame's tooltip and large view give its metrics."""
    black = "drawbox=enable='between(t,1,1.4)+between(t,3,3.9)':c=black:t=fill"
    clip = place(media.clip("black-gaps.mp4", duration=6, extra=("-vf", black)), site.videos)
    page.goto(site.url)
    pick_video(page, clip)
    by_id(page, "interval").fill("1")
    by_id(page, "reject-black").check()
    by_id(page, "dedupe").check()
    more = by_id(page, "choice-more")
    expect(by_id(page, "search")).to_be_hidden()  # folded away until asked for
    more.locator("summary").click()
    by_id(page, "search").fill("0.5")
    by_id(page, "dedupe-distance").fill("0")  # identical pictures only: none here

    # An error in the folded fields shows there, unfolded again if it was closed.
    by_id(page, "black-threshold").fill("2")
    more.locator("summary").click()
    expect(by_id(page, "search")).to_be_hidden()
    with page.expect_response(lambda r: r.url.endswith("/video-job")) as answer:
        by_id(page, "submit-button").click()
    assert answer.value.status == 422, answer.value.text()
    expect(by_id(page, "field-error-black-threshold")).to_be_visible()
    expect(by_id(page, "field-error-black-threshold")).to_contain_text("less than or equal")
    expect(by_id(page, "black-threshold")).to_have_attribute("aria-invalid", "true")
    by_id(page, "black-threshold").fill("")  # back to the server's default

    with page.expect_response(lambda r: r.url.endswith("/video-job")) as answer:
        by_id(page, "submit-button").click()
    assert answer.value.status == 200, answer.value.text()
    sent = answer.value.request.post_data_json
    assert {k: v for k, v in sent.items() if k not in ("video_source", "format", "tonemap")} == {
        "mode": "interval",
        "interval": 1,
        "reject": ["black"],
        "dedupe": True,
        "search": 0.5,
        "dedupe_distance": 0,
    }, "what was left empty or unchecked must not be sent"
    job_id: str = answer.value.json()["job_id"]
    view = site.wait(job_id)
    assert view["status"] == "completed", view
    assert (view["plan"]["rejected_targets"], view["plan"]["dropped_duplicates"]) == (1, 0)
    frames = site.frames(job_id)
    assert [(f["timestamp"], f["substituted"]) for f in frames] == [
        (0.0, False), (1.4, True), (2.0, False), (4.0, False), (5.0, False)
    ]  # fmt: skip

    detail = by_id(page, "job-detail")
    expect(detail).to_have_attribute("data-job-id", job_id)
    thumbs = by_id(detail, "frame-thumb")
    expect(thumbs).to_have_count(5)
    expect(detail.locator('dd[data-fact="choice"]')).to_have_text(
        re.compile(r"reject black \(search 0\.5\ss\); dedupe within 0 bits")
    )
    expect(detail.locator('dd[data-fact="rejected"]')).to_have_text("1")
    expect(detail.locator('dd[data-fact="duplicates"]')).to_have_text("0")

    # One badge, on the substitute; its title says the time asked and the frame's.
    badges = by_id(detail, "frame-substituted")
    expect(badges).to_have_count(1)
    expect(badges).to_have_text("substituted")
    expect(badges).to_be_visible()
    substitute = thumbs.filter(has=by_id(page, "frame-substituted"))
    expect(substitute).to_have_attribute("data-index", str(frames[1]["index"]))
    expect(badges).to_have_attribute("title", re.compile(r"1\.000\ss.*1\.400\ss"))
    for n, frame in enumerate(frames):
        title = thumbs.nth(n).get_attribute("title") or ""
        shows_metrics(title, frame)
        assert ("Substituted" in title) is frame["substituted"], title
    thumbs_loaded(page)
    shoot(page, "desktop-detail-substituted")

    # The large view says the same as text.
    substitute.click()
    expect(by_id(page, "frame-viewer")).to_be_visible()
    expect(by_id(page, "viewer-substituted")).to_be_visible()
    expect(by_id(page, "viewer-substituted")).to_have_text(re.compile(r"1\.000\ss.*1\.400\ss"))
    metrics = by_id(page, "viewer-metrics")
    expect(metrics).to_be_visible()
    shows_metrics(metrics.inner_text(), frames[1])
    expect(by_id(page, "viewer-image")).to_have_js_property("complete", True)
    shoot(page, "desktop-viewer-substituted")
    page.keyboard.press("ArrowRight")
    shows_time(by_id(page, "viewer-caption"), 2.0)
    expect(by_id(page, "viewer-substituted")).to_be_hidden()
    expect(metrics).to_contain_text(f"phash {frames[2]['phash']}")
    shows_metrics(metrics.inner_text(), frames[2])
    page.keyboard.press("Escape")

    # best mode takes the count field; its frames show their stretch and score.
    by_id(page, "mode").select_option("best")
    expect(by_id(page, "interval")).to_be_hidden()
    expect(by_id(page, "search")).to_be_hidden()  # best mode looks for no substitute
    by_id(page, "count").fill("3")
    by_id(page, "reject-black").uncheck()
    by_id(page, "dedupe").uncheck()
    by_id(page, "dedupe-distance").fill("")
    with page.expect_response(lambda r: r.url.endswith("/video-job")) as answer:
        by_id(page, "submit-button").click()
    assert answer.value.status == 200, answer.value.text()
    sent = answer.value.request.post_data_json
    assert {k: v for k, v in sent.items() if k not in ("format", "tonemap")} == {
        "video_source": clip,
        "mode": "best",
        "count": 3,
    }
    best = answer.value.json()["job_id"]
    assert site.wait(best)["status"] == "completed"
    frames = site.frames(best)
    assert [f["stretch"] for f in frames] == [0, 1, 2]
    expect(detail).to_have_attribute("data-job-id", best)
    expect(detail.locator('dd[data-fact="mode"]')).to_contain_text("each of 3 stretches")
    expect(detail.locator('dd[data-fact="choice"]')).to_be_hidden()
    expect(detail.locator('dd[data-fact="rejected"]')).to_be_hidden()
    expect(thumbs).to_have_count(3)
    expect(by_id(detail, "frame-substituted")).to_have_count(0)
    for n, frame in enumerate(frames):
        shows_metrics(thumbs.nth(n).get_attribute("title") or "", frame)
    thumbs.nth(1).click()
    shows_metrics(by_id(page, "viewer-metrics").inner_text(), frames[1])


def test_source_errors_show_by_the_drop_zone_and_the_url_field(
    page: Page, site: Site, media: Media
):
    """A refused upload or URL (400, a string detail) is shown at its control."""
    page.goto(site.url)
    slot = by_id(page, "field-error-video-source")
    by_id(page, "source-kind-upload").click()
    by_id(page, "file-input").set_input_files(
        files=[
            {
                "name": "notes.mp4",
                "mimeType": "video/mp4",
                "buffer": media.not_a_video().read_bytes(),
            }
        ]
    )
    with page.expect_response(lambda r: r.url.endswith("/video-job")) as answer:
        by_id(page, "submit-button").click()
    assert answer.value.status == 400, answer.value.text()
    expect(slot).to_have_text(answer.value.json()["detail"])
    right_below(by_id(page, "drop-zone"), slot)
    expect(by_id(page, "file-input")).to_have_attribute("aria-invalid", "true")
    shoot(page, "desktop-upload-error")

    by_id(page, "source-kind-url").click()
    expect(slot).to_be_empty()  # it was about the upload
    by_id(page, "source-url").fill("http://127.0.0.1:9/clip.mp4")
    with page.expect_response(lambda r: r.url.endswith("/video-job")) as answer:
        by_id(page, "submit-button").click()
    assert answer.value.status == 400, answer.value.text()
    expect(slot).to_have_text(answer.value.json()["detail"])
    right_below(by_id(page, "source-url"), slot)
    expect(by_id(page, "source-url")).to_have_attribute("aria-invalid", "true")
    expect(by_id(page, "source-url")).to_be_focused()
    by_id(page, "source-url").fill("http://127.0.0.1:9/other.mp4")  # editing clears it
    expect(slot).to_be_empty()


# The answers' shapes before and after issue 12: what changed, one entry a shape.
TIME_ENDINGS = {"old": "Z", "new": "+00:00"}
HEALTH_STATUSES = {"old": ("ok", "unavailable"), "new": ("healthy", "unhealthy")}
FRAME_SIZE = {"old": "size_bytes", "new": "file_size"}


def _times(value: Any, shape: str) -> Any:
    """``value`` with every time ending as in ``shape`` (``...Z`` or ``...+00:00``)."""
    if isinstance(value, dict):
        return {k: _times(v, shape) for k, v in value.items()}
    if isinstance(value, list):
        return [_times(v, shape) for v in value]
    if isinstance(value, str):
        found = re.fullmatch(r"(\d{4}-\d\d-\d\dT[\d:.]+)(Z|\+00:00)", value)
        if found:
            return found[1] + TIME_ENDINGS[shape]
    return value


def _health(body: dict[str, Any], shape: str) -> dict[str, Any]:
    """/health as the old or the new server answers it."""
    healthy = body["status"] in ("ok", "healthy")
    status = HEALTH_STATUSES[shape][0 if healthy else 1]
    base = {
        k: v for k, v in body.items() if k not in ("timestamp", "redis_available", "active_jobs")
    }
    if shape == "old":
        return {**base, "status": status}
    return {
        **base,
        "status": status,
        "timestamp": _times("2030-01-01T00:00:00Z", shape),
        "redis_available": body["cache"]["backend"] == "redis",
        "active_jobs": body["jobs"]["running"],
    }


def _frames(body: dict[str, Any], shape: str) -> dict[str, Any]:
    """Frames with only the size field of ``shape`` (the new server sends both)."""
    frames = []
    for frame in body["frames"]:
        size = frame.get("size_bytes", frame.get("file_size"))
        kept = {k: v for k, v in frame.items() if k not in ("size_bytes", "file_size")}
        frames.append({**kept, FRAME_SIZE[shape]: size})
    return _times({**body, "frames": frames}, shape)


@pytest.mark.parametrize("shape", ["old", "new"])
def test_dashboard_reads_the_old_and_new_answer_shapes(
    page: Page, site: Site, showcase: str, shape: str
):
    """The server's answers change in issue 12: /health says healthy/unhealthy (and gains
    timestamp, redis_available, active_jobs), times end in +00:00 instead of Z, frames
    carry file_size. The real answers are rewritten into each shape here; /events is
    refused, so the job list comes from GET /jobs."""

    def rewrite(change: Callable[[Any, str], Any]) -> Callable[[Route], None]:
        def handler(route: Route) -> None:
            response = route.fetch()
            body = json.dumps(change(response.json(), shape))
            route.fulfill(response=response, body=body, content_type="application/json")

        return handler

    # /events only: the job's own stream (/job-status/{id}/events) stays.
    page.route(re.compile(r"//[^/]+/events$"), lambda route: route.abort())
    page.route(re.compile(r"/health$"), rewrite(_health))
    page.route(re.compile(r"/jobs\?|/job-status/[^/]+$"), rewrite(_times))
    page.route(re.compile(r"/frames/[^/]+\?|/recent-frames\?"), rewrite(_frames))
    page.goto(site.url)

    expect(by_id(page, "health-status")).to_have_text("service ok")
    expect(by_id(page, "health-status")).to_have_attribute("data-state", "ok")
    expect(by_id(page, "health-cache")).to_have_text("Redis")
    expect_completed(page, showcase, 8)
    expect(by_id(row(page, showcase), "job-when")).to_have_text(re.compile(r"\d:\d\d"))
    newest_first = [job["job_id"] for job in site.http.get("/jobs?limit=50").json()["jobs"]]
    rows = by_id(page, "job-row")
    expect(rows).to_have_count(len(newest_first))
    assert [rows.nth(n).get_attribute("data-job-id") for n in range(rows.count())] == newest_first

    row(page, showcase).click()
    detail = by_id(page, "job-detail")
    expect(detail.locator('dd[data-fact="created"]')).to_have_text(re.compile(r"\d:\d\d"))
    expect(by_id(detail, "frame-thumb")).to_have_count(8)
    by_id(detail, "frame-thumb").nth(1).click()
    caption = by_id(page, "viewer-caption")
    expect(caption).to_contain_text("frame 2 of 8")
    expect(caption).to_have_text(re.compile(r"\d\s(B|KB)$"))
    expect(caption).not_to_contain_text("—")


def test_the_storyboard_strip_shows_the_tile_under_the_pointer(page: Page, site: Site):
    """A completed job with a storyboard: hovering its timeline strip shows, above the
    pointer, the tile of the cue a player would show at that time (the last tile whose
    cue starts at or before it), cut out of its sheet; the keyboard steps through them."""
    job_id = site.submit("standard.mp4", mode="count", count=12, storyboard=True,
                         storyboard_width=64)  # fmt: skip
    assert site.wait(job_id)["status"] == "completed"
    board = site.http.get(f"/job/{job_id}/storyboard.json").json()
    tiles = board["tiles"]
    page.goto(f"{site.url}/#job={job_id}")
    strip = by_id(page, "storyboard-strip")
    expect(by_id(page, "job-storyboard")).to_be_visible()
    expect(by_id(page, "job-storyboard")).to_have_attribute("data-job-id", job_id)
    preview, tile = by_id(page, "storyboard-preview"), by_id(page, "storyboard-tile")
    expect(preview).to_be_hidden()
    box = strip.bounding_box()
    assert box is not None
    for share in (0.0, 0.04, 0.33, 0.5, 0.77, 0.999):
        t = share * board["end"]
        want = max(i for i, item in enumerate(tiles) if item["start"] <= t or i == 0)
        page.mouse.move(box["x"] + share * box["width"], box["y"] + box["height"] / 2)
        expect(preview).to_be_visible()
        expect(tile).to_have_attribute("data-tile", str(want))
        expect(tile).to_have_attribute("data-frame", tiles[want]["frame"])
        style = tile.evaluate("t => [t.style.backgroundPosition, t.style.width, t.style.height]")
        x, y, h = tiles[want]["x"], tiles[want]["y"], tiles[want]["h"]
        assert style == [f"{-x}px {-y}px", "64px", f"{h}px"], (share, style)
    # the sheet it shows is the one the manifest names, and it loads
    loaded = page.evaluate(
        """url => new Promise((done) => { const i = new Image(); i.onload = () =>
        done([i.naturalWidth, i.naturalHeight]); i.onerror = () => done(null); i.src = url; })""",
        tiles[0]["url"],
    )
    assert loaded == [board["sheets"][0]["width"], board["sheets"][0]["height"]]
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] - 300)  # away: hidden again
    expect(preview).to_be_hidden()
    strip.focus()
    page.keyboard.press("End")
    expect(tile).to_have_attribute("data-tile", str(len(tiles) - 1))
    page.keyboard.press("ArrowLeft")
    expect(tile).to_have_attribute("data-tile", str(len(tiles) - 2))
    expect(strip).to_have_attribute("aria-valuenow", str(len(tiles) - 2))
