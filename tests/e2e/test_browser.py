"""The report and the viewer in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Chromium comes from the system (FSD_CHROMIUM, else `chromium` / `chromium-browser` on PATH); Playwright never
downloads a browser here. Without Chromium or Playwright the tests skip with the reason, except under CI=true,
where they fail (.ci/run installs Chromium).
"""
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsdbatch.report import Media, write_report

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
ROOT = Path(__file__).resolve().parents[2]
# headless Chromium has no GPU: WebGL (viser's three.js) runs on SwiftShader
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--mute-audio"]
# The one console error allowed in the viewer, from viser itself: its splat mesh is a quad whose "position"
# attribute has 2 components (viser 1.1.1, client/src/Splatting/GaussianSplatsHelpers.ts,
# createGaussianMeshProps), so three.js's computeBoundingSphere, which reads x, y, z, gives a NaN radius whenever
# something asks for the bounds. Reproduced with viser alone and random splats, no fsd code; harmless (the
# splats draw). Every other console error fails the test.
VISER_KNOWN = "THREE.BufferGeometry.computeBoundingSphere(): Computed radius is NaN"


def chromium_path() -> str | None:
    found = os.environ.get("FSD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return found if found and Path(found).exists() else None


def unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}: .ci/run should have installed it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    if exe is None:
        unavailable("no Chromium (apt-get install chromium, or set FSD_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A page with its console errors and uncaught exceptions recorded."""

    def __init__(self, browser, width=1280, height=900):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.logs: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url[:100]}"))

    def _console(self, msg):
        self.logs.append(msg.text)
        if msg.type == "error":
            self.errors.append(msg.text)

    def screenshot(self, **kw) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(self.page.screenshot(**kw))).convert("RGB")).astype(np.int16)


def assert_not_blank(img: np.ndarray, what: str) -> None:
    """Not one colour: many pixels differ clearly from the most common one (the background)."""
    flat = img.reshape(-1, 3)
    values, counts = np.unique(flat, axis=0, return_counts=True)
    background = values[counts.argmax()]
    differ = (np.abs(flat - background).max(axis=1) > 40).mean()
    assert differ > 0.01, f"{what}: only {differ:.4f} of the pixels differ from the background {background}"


def check_report(browser, page_path: Path, videos: int) -> np.ndarray:
    p = Page(browser)
    p.page.goto(page_path.resolve().as_uri())
    p.page.wait_for_load_state("load")
    n = p.page.evaluate("document.querySelectorAll('video').length")
    assert n == videos
    # every <video> decodes its metadata: a finite, non-zero duration (H.264 in Debian's Chromium)
    p.page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 1 || v.error)",
                             timeout=15000)
    state = p.page.evaluate("[...document.querySelectorAll('video')].map(v => [v.duration, v.error && v.error.code])")
    assert all(err is None and d > 0 and d != float("inf") for d, err in state), state
    imgs = p.page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth])")
    assert all(done and w > 0 for done, w in imgs), imgs
    shot = p.screenshot(full_page=True)
    assert p.errors == [], p.errors
    p.page.close()
    return shot


def test_run_report_loads_from_disk_with_playing_videos(browser, run, tmp_path):
    page = write_report(run, Media.EMBED)
    alone = tmp_path / "alone.html"  # copied away from the run: embedded media travel with the page
    shutil.copy(page, alone)
    shot = check_report(browser, alone, videos=2)
    assert_not_blank(shot, "run report")
    Image.fromarray(shot.astype(np.uint8)).save(tmp_path / "report.png")
    # the red mushroom's turntable and views: strongly red pixels on the page
    red = (shot[..., 0] > 150) & (shot[..., 1] < 90) & (shot[..., 2] < 90)
    assert red.sum() > 200, red.sum()


def test_linked_run_report_loads_its_files(browser, run):
    check_report(browser, write_report(run, Media.LINK), videos=2)


def test_sweep_report_loads_with_a_video_per_seed_and_method(browser, sweep):
    shot = check_report(browser, sweep / "report.html", videos=4)  # written by gather at the end of `fsd batch`
    assert_not_blank(shot, "sweep report")


def test_viewer_draws_the_splat(browser, run, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "cli", "view", str(run), "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = proc.stdout.readline()
        assert " at http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split(" at ", 1)[1].split()[0]
        p = Page(browser, 1024, 768)
        p.page.goto(url)
        p.page.wait_for_function("document.querySelector('canvas') !== null", timeout=20000)
        deadline = time.monotonic() + 30
        while not any(m.startswith("Connected!") for m in p.logs) and time.monotonic() < deadline:
            p.page.wait_for_timeout(200)
        assert any(m.startswith("Connected!") for m in p.logs), p.logs
        p.page.wait_for_timeout(4000)  # the scene arrives over the websocket, splats are sorted in a worker
        shot = p.screenshot()
        p.page.wait_for_timeout(300)
        assert [e for e in p.errors if not e.startswith(VISER_KNOWN)] == [], p.errors
        Image.fromarray(shot.astype(np.uint8)).save(tmp_path / "viewer.png")
        assert_not_blank(shot, "viewer")
        # the splat itself: the red mushroom cap near the middle of the view (the GUI panel is at the top right)
        h, w = shot.shape[:2]
        mid = shot[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
        red = (mid[..., 0] > 150) & (mid[..., 1] < 90) & (mid[..., 2] < 90)
        assert red.sum() > 500, f"{red.sum()} red pixels where the mushroom should be"
        p.page.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
