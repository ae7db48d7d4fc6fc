"""The real server (`streamlit run app.py`) in a real browser (Debian's Chromium through Playwright):
every page opened by its address shows the app's own menu; a reload mid-run reattaches to the run;
a finished run's address shows the same figures after a server restart; a run goes on while the
visitor looks at another page, and is shown when they come back; one class choice for every page.

The runs use a tiny generator on 8x8 digits (trained here in seconds), so each takes seconds."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SLOW = int(float(os.environ.get("SALUN_BROWSER_SLOW_S", "240")) * 1000)  # ms: a run on a busy 2-core machine
SHOTS = Path(os.environ.get("SALUN_SCREENSHOTS", "/tmp/salun_browser_shots"))

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")

PAGES = {  # address -> the title the page shows
    "/": "SalUn Lab: make a network forget",
    "/unlearn": "Unlearn & compare",
    "/saliency": "Saliency explorer",
    "/sweep": "Sparsity sweep",
    "/why": "Why the mask?",
    "/generation": "Diffusion: forget a class",
    "/concept": "Stable Diffusion: forget a concept",
}
MENU = ["Start here", "Unlearn & compare", "Saliency explorer", "Sparsity sweep", "Why the mask?",
        "Diffusion: forget a class",
        "Stable Diffusion: forget a concept"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(env: dict | None = None):
    """A freshly started `streamlit run app.py` on a free port; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode(errors="replace") if process.poll() is not None else ""
                pytest.fail(f"streamlit did not start on port {port}: {output[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory, digits_checkpoint):
    """The Diffusion page on a tiny generator (8x8 digits, trained for 40 steps) judged by the
    conftest's digits classifier; 2 images per class, 3 sampling steps."""
    import torch

    from core.diffusion.model import UNetConfig, save_generator
    from core.diffusion.training import GeneratorTrainConfig, train_generator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = GeneratorTrainConfig(dataset="digits", steps=40, batch_size=128, lr=1e-2, warmup_steps=5,
                                      unet=UNetConfig(image_size=8, block_out_channels=(8, 16), norm_num_groups=4,
                                                      train_timesteps=100))
        folder = tmp_path_factory.mktemp("tiny_generator")
        model, _ = train_generator(config, folder, checkpoint_every_s=1e9)
    finally:
        torch.set_num_threads(threads)
    generator = save_generator(model, folder / "gen.safetensors", {"dataset": "digits", "seed": 0})
    return {"SALUN_GENERATOR": str(generator), "SALUN_CLASSIFIER": str(digits_checkpoint),
            "SALUN_GEN_PER_CLASS": "2", "SALUN_GEN_SAMPLE_STEPS": "3", "SALUN_GEN_MASK_DRAWS": "64"}


def watch_requests(page, base_url: str) -> list[str]:
    """Every request the page makes that does not go to the app's own server."""
    outside = []
    page.on("request", lambda r: None if r.url.startswith((base_url, "data:", "blob:")) else outside.append(r.url))
    return outside


def screenshot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def menu_link(page, title: str):
    return page.get_by_test_id("stSidebar").get_by_role("link", name=title)


def image_digests(page) -> list[str]:
    """sha256 of every image the page shows (the before/after grids), fetched as the browser would."""
    base = "/".join(page.url.split("/")[:3])
    digests = []
    for image in page.locator('[data-testid="stImage"] img').all():
        source = image.get_attribute("src")
        body = page.request.get(source if source.startswith("http") else base + source).body()
        digests.append(hashlib.sha256(body).hexdigest())
    return digests


def start_diffusion_run(page, steps: int) -> None:
    steps_box = page.get_by_role("spinbutton", name="Unlearning steps")
    steps_box.fill(str(steps))
    steps_box.press("Enter")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Forget", exact=True).click()


def test_every_page_opened_by_its_address_shows_the_app_menu(browser):
    """On a freshly started server, Streamlit would run a page straight from the pages/ folder with a
    menu of file names (a helper module listed as a page). Every page must instead open inside the
    app's own menu, at its own address, and nothing may be fetched from the internet (favicon, fonts)."""
    from playwright.sync_api import expect

    with ThreadPoolExecutor(len(PAGES)) as pool:  # one fresh server per page, started side by side
        servers = [server() for _ in PAGES]
        urls = list(pool.map(lambda s: s.__enter__(), servers))
    try:
        for (path, title), url in zip(PAGES.items(), urls):
            context = browser.new_context(viewport={"width": 1300, "height": 900})
            page = context.new_page()
            outside = watch_requests(page, url)
            page.goto(url + path + "?from=link")
            expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=SLOW)
            for entry in MENU:
                expect(menu_link(page, entry)).to_be_visible()
            assert page.get_by_test_id("stSidebarNav").count() == 0  # Streamlit's own (folder) menu
            assert not page.get_by_text(re.compile(r"^(common|app|home|ui)$")).count()
            assert page.url == url + path + "?from=link"  # the address, query included, is kept
            screenshot(page, f"address{path.replace('/', '_') or '_'}")
            if path == "/saliency":  # its second tab runs only when opened, in a rerun the click starts
                expect(page.get_by_text("Salient fraction per layer")).to_be_visible(timeout=SLOW)
                page.get_by_role("tab", name="Overlap between masks").click()
                expect(page.get_by_text("IoU of the forget-set mask and the retain-set mask")).to_be_visible(timeout=SLOW)
                expect(page.get_by_text("Salient fraction per layer")).to_have_count(0, timeout=SLOW)  # not drawn
            context.close()
            assert outside == [], f"{path} fetched from outside the server: {outside}"
    finally:
        for s in servers:
            s.__exit__(None, None, None)


def test_a_reload_mid_run_reattaches_and_a_restart_shows_the_same_run(browser, tiny_env, tmp_path):
    from playwright.sync_api import expect

    env = {**tiny_env, "SALUN_HOME": str(tmp_path / "home")}
    with server(env) as url:
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(url + "/generation")
        expect(page.get_by_text("What the original model generates")).to_be_visible(timeout=SLOW)
        start_diffusion_run(page, steps=400)
        page.wait_for_url(re.compile(r"job="), timeout=60_000)  # the address names the running job
        screenshot(page, "run_started")
        page.reload()
        # reattached: the same job's progress, not the page's empty state
        expect(page.get_by_text(re.compile(r"Forgetting 3 with SalUn: (step \d+/\d+|starting)"))).to_be_visible(
            timeout=60_000)
        screenshot(page, "run_reattached")
        expect(page.get_by_role("spinbutton", name="Unlearning steps")).to_have_value("400")  # its settings too
        # a short run replaces the long one (which is cancelled): its finished address is what survives a restart
        start_diffusion_run(page, steps=5)
        done = page.get_by_role("heading", name=re.compile(r"Class 3 forgotten with SalUn in \d+ s"))
        expect(done).to_be_visible(timeout=SLOW)
        page.wait_for_url(re.compile(r"run=\w+"), timeout=30_000)
        address = page.url.split("/", 3)[3]  # generation?run=...
        assert "job=" not in address
        page.wait_for_load_state("networkidle")
        heading, images = done.inner_text(), image_digests(page)
        assert len(images) >= 2  # before and after grids
        screenshot(page, "run_finished")

    with server(env) as url:  # a restarted server: nothing in memory, the run store on disk
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(f"{url}/{address}")
        again = page.get_by_role("heading", name=re.compile(r"Class 3 forgotten"))
        expect(again).to_be_visible(timeout=SLOW)
        expect(page.locator('[data-testid="stImage"] img').nth(len(images) - 1)).to_be_visible(timeout=60_000)
        page.wait_for_load_state("networkidle")
        assert again.inner_text() == heading
        assert image_digests(page) == images  # the same figures, pixel for pixel
        screenshot(page, "run_after_restart")


def test_a_run_goes_on_while_the_visitor_is_elsewhere_and_choices_follow_them(browser, tiny_env, tmp_path):
    from playwright.sync_api import expect

    with server({**tiny_env, "SALUN_HOME": str(tmp_path / "home")}) as url:
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(url)
        expect(page.get_by_role("heading", name=PAGES["/"])).to_be_visible(timeout=SLOW)
        page.get_by_test_id("stRadio").get_by_text("4", exact=True).click()  # forget digit 4 on Start here
        expect(page.get_by_role("button", name=re.compile("Forget digit 4"))).to_be_visible(timeout=30_000)

        menu_link(page, "Diffusion: forget a class").click()
        expect(page.get_by_text("What the original model generates")).to_be_visible(timeout=SLOW)
        # the class chosen on Start here (a select box's choice is its combobox's value, not its text)
        expect(page.get_by_role("combobox", name="Class to forget")).to_have_value("4")
        start_diffusion_run(page, steps=60)  # ~0.5 s a step here: still running when the visitor leaves
        expect(page.get_by_text(re.compile(r"Forgetting 4 with SalUn: "))).to_be_visible(timeout=60_000)

        menu_link(page, "Start here").click()  # leave while it runs
        expect(page.get_by_role("heading", name=PAGES["/"])).to_be_visible(timeout=SLOW)
        page.wait_for_timeout(1000)
        menu_link(page, "Diffusion: forget a class").click()  # and come back
        expect(page.get_by_role("heading", name=re.compile(r"Class 4 forgotten with SalUn"))).to_be_visible(
            timeout=SLOW)
        expect(page.get_by_text("after unlearning")).to_be_visible()
        screenshot(page, "run_after_page_switch")
