"""End to end in a real browser: start `streamlit run app.py`, forget the default digit from the home
page, find the before/after comparison, and save a screenshot (the README's, with SALUN_UPDATE_SCREENSHOT=1)."""

import os
import re
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# The README's screenshot is refreshed only when asked (SALUN_UPDATE_SCREENSHOT=1): a test run must
# not change tracked files.
SCREENSHOT = (ROOT / "assets" / "screenshot_app.png" if os.environ.get("SALUN_UPDATE_SCREENSHOT")
              else Path(tempfile.gettempdir()) / "salun_screenshot_app.png")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")


@pytest.fixture
def app_url():
    from test_browser_app import server  # the one way the browser tests start the real server

    with server() as url:
        yield url


def test_forget_default_digit_in_browser(app_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            requested = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto(app_url)
            # the default digit's button is the guided path's one click
            button = page.get_by_role("button", name=re.compile(r"Forget digit 3 with SalUn"))
            expect(button).to_be_visible(timeout=60_000)
            # the chart code (Plotly's bundle) is fetched while the visitor reads, before any chart is shown
            for _ in range(150):
                if any("/static/js/PlotlyChart." in url for url in requested):
                    break
                page.wait_for_timeout(100)
            assert any("/static/js/PlotlyChart." in url for url in requested), "the chart code was not prefetched"
            assert page.get_by_test_id("stPlotlyChart").count() == 0
            button.click()
            expect(page.get_by_text("Digit 3 is forgotten")).to_be_visible(timeout=240_000)
            recognised = page.get_by_test_id("stMetric").filter(has_text="Test images of 3 recognised")
            value = float(recognised.get_by_test_id("stMetricValue").inner_text().rstrip("%"))
            assert value < 20.0, f"the forgotten digit is still recognised {value}% of the time"
            expect(page.get_by_text("what the model says before → after")).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Compare with Retrain and other methods")).to_be_visible(timeout=60_000)
            page.wait_for_timeout(1500)  # let the Plotly chart finish drawing
            # Streamlit scrolls inside its main section, not the document: grow the window to fit it
            height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
            page.set_viewport_size({"width": 1400, "height": min(int(height), 4000)})
            page.wait_for_load_state("networkidle")  # the digit images come from the media endpoint
            page.wait_for_timeout(1000)
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
