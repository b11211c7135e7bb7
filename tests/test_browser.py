"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real
vfe server (``python -m vfe serve``) with real FFmpeg.

The tests find elements only by the ``data-testid`` names of the dashboard contract, and
wait with Playwright's auto-waiting ``expect`` (no sleeps). One server (with a real
redis-server) serves the whole module; the Redis test starts its own pair, and stops and
restarts that redis-server; the API-key test starts its own server with ``API_KEYS``.

Screenshots of the main views at 1440x900 and 390x844 go to ``test-artifacts/screenshots/``
(git-ignored). The browser is never downloaded: ``scripts/setup --test`` installs Debian's
``chromium`` package. Without /usr/bin/chromium the module is skipped, except in CI (``CI``
set), where it must run and fails loudly instead.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, expect, sync_playwright

from tests.conftest import ROOT, LiveServer, Media, RedisServer, place, vfe_env

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
        for item in ("database", "cache", "ffmpeg", "queue", "disk"):
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
    for n, frame in enumerate(frames):
        expect(thumbs.nth(n)).to_have_attribute("data-index", str(frame["index"]))
        shows_time(by_id(thumbs.nth(n), "frame-time"), frame["timestamp"])
        expect(thumbs.nth(n).locator("img")).to_have_attribute("loading", "lazy")

    download = by_id(detail, "download-all")
    expect(download).to_have_attribute("href", re.compile(rf"/job/{job_id}/frames\.zip$"))
    expect(download).to_have_attribute("download", re.compile(".*"))
    archive = page.request.get(f"{site.url}/job/{job_id}/frames.zip")
    assert archive.ok
    assert len(zipfile.ZipFile(io.BytesIO(archive.body())).namelist()) == 4

    # The frame viewer: open the second frame, step with the keys, close with Escape.
    thumbs.nth(1).click()
    viewer = by_id(page, "frame-viewer")
    image = by_id(page, "viewer-image")
    caption = by_id(page, "viewer-caption")
    expect(viewer).to_be_visible()

    def shows(frame: dict[str, Any]) -> None:
        expect(image).to_have_attribute("src", re.compile(re.escape(frame["url"]) + "$"))
        shows_time(caption, frame["timestamp"])
        expect(by_id(page, "viewer-download")).to_have_attribute(
            "href", re.compile(re.escape(frame["url"]) + "$")
        )

    shows(frames[1])
    page.keyboard.press("ArrowRight")
    shows(frames[2])
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    shows(frames[0])
    by_id(page, "viewer-next").click()
    shows(frames[1])
    by_id(page, "viewer-prev").click()
    shows(frames[0])
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("img => img.naturalWidth") == 320
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    expect(detail).to_be_visible()  # Escape closed the viewer only

    thumbs.nth(3).click()
    shows(frames[3])
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
    job_id = submit_form(page)

    expect(by_id(page, "upload-progress")).to_be_hidden()
    expect(by_id(row(page, job_id), "job-source")).to_contain_text("holiday clip.mp4")
    expect_completed(page, job_id, 3)
    view = site.status(job_id).json()
    assert (view["source_type"], view["mode"]) == ("upload", "count")

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
    # when the test cancels it (in about 2 s), and it reports progress meanwhile.
    job_id = site.submit(place(media.slow(), site.videos), interval=0.04, format="png")
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
        for item in ("database", "ffmpeg", "queue", "disk"):
            expect(by_id(page, f"health-{item}")).to_have_attribute("data-state", "ok")

        redis.stop()
        expect(cache).to_have_attribute("data-state", "warn")
        expect(cache).to_contain_text("in-memory (Redis unreachable)")
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
