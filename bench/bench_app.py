"""What a visitor waits for, measured in a real browser (Playwright + Debian's /usr/bin/chromium) on the
real server (`streamlit run app.py`, started as tests/test_browser_app.py starts it), plus the CLI's
class-wise SalUn / Retrain time ratio. Prints each figure; not a test, nothing is asserted.

    python bench/bench_app.py                 # warm store (runs/): what `make app` serves
    python bench/bench_app.py --cold          # an empty run store: every click computes
    python bench/bench_app.py --skip-cli      # only the browser figures
    make bench-app

Figures (seconds):
  server answers           `streamlit run` started -> /_stcore/health says ok
  first page rendered      Start here opened -> title, button, the ten example digits drawn, script idle
  Start here click         "Forget digit 3 with SalUn" clicked -> result heading, chart, example predictions, idle
  Retrain reference shown  Unlearn & compare, Run with its defaults (SalUn + Retrain) -> comparison table, idle
  slider -> idle           Saliency explorer's sparsity slider moved one step -> the open tab's charts redrawn for
                           the new value, painted, idle (Layer by layer, the default tab, with its heatmaps; and
                           Overlap between masks)
  Diffusion before-grid    Diffusion page opened -> the original model's grid drawn, idle
  Diffusion forgetting     Forget clicked with the page's defaults (SalUn, class 3) -> result heading, idle;
                           a stored app run of it is deleted first, so the click computes the run (its mask's
                           gradients, which `warm` keeps, are read back)
Before the server starts, `python -m core.cli warm --classes 3` makes sure the default target's runs and
the before-grid are in the store (unless --cold), and says whether it had to compute them.
The machine's load average is printed: on a shared 2-core machine it decides every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IDLE_JS = """() => { const app = document.querySelector('[data-testid="stApp"]');
                     return app && app.getAttribute('data-test-script-state') === 'notRunning'; }"""
WATCH_JS = """() => { window.__salunRan = false; const app = document.querySelector('[data-testid="stApp"]');
  new MutationObserver(() => { if (app.getAttribute('data-test-script-state') === 'running') window.__salunRan = true; })
    .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']}); }"""


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


def cli(argv: list[str], env: dict) -> dict:
    done = subprocess.run([sys.executable, "-m", "core.cli", *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"python -m core.cli {' '.join(argv)} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli_ratio(env: dict) -> None:
    """Class-wise SalUn and Retrain in one invocation (class 3, seed 0, defaults, nothing from the store)."""
    start = time.perf_counter()
    out = cli(["unlearn", "--forget", "class:3", "--method", "salun", "--compare-retrain", "--no-store", "--json",
               "--quiet"], env)
    salun, retrain = out["rte_seconds"], out["retrain"]["rte_seconds"]
    print(f"CLI, one invocation: SalUn {salun:.2f} s (mask included), Retrain {retrain:.2f} s, "
          f"ratio {salun / retrain:.3f} (UA {out['ua']:.1f} / {out['retrain']['ua']:.1f}, "
          f"TA {out['ta']:.2f} / {out['retrain']['ta']:.2f}); whole command {time.perf_counter() - start:.1f} s; {load()}",
          flush=True)


def idle(page, timeout_ms: int) -> None:
    page.wait_for_function(IDLE_JS, timeout=timeout_ms)


def move_slider(page, slider, key: str, redrawn: str, timeout_ms: int) -> float:
    """Seconds from one arrow `key` on the focused slider to the page idle with `redrawn` (a text of the
    chart drawn for the new value) on screen and two frames painted after it."""
    page.evaluate(WATCH_JS)
    slider.focus()
    start = time.perf_counter()
    page.keyboard.press(key)
    deadline = time.perf_counter() + 5
    while not page.evaluate("() => window.__salunRan") and time.perf_counter() < deadline:
        time.sleep(0.02)
    idle(page, timeout_ms)
    page.get_by_text(redrawn, exact=False).first.wait_for(timeout=timeout_ms)
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    return time.perf_counter() - start


def figure(name: str, seconds: float, note: str = "") -> None:
    print(f"{name:<26}{seconds:8.2f} s{('  ' + note) if note else ''}   [{load()}]", flush=True)


def forget_diffusion_runs(env: dict) -> int:
    """Delete (MLflow's soft delete) the stored runs the Diffusion figure would otherwise read back: SalUn
    on class 3 made by the app, so that its Forget click computes the run (the mask's gradients, which
    `warm` keeps, are still read back). Returns how many were deleted."""
    code = ("import json; from core.store import ResultStore; runs = ResultStore().runs; "
            "ids = runs.run_ids(**{'salun.kind': 'generation', 'salun.method': 'salun', 'salun.forget': 'class:3', "
            "'salun.source': 'app'}); [runs.client().delete_run(i) for i in ids]; print(json.dumps(len(ids)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"could not clear the stored Diffusion runs: {done.stderr.strip()[-2000:]}")
    return int(done.stdout.strip().splitlines()[-1])


def browser_figures(env: dict, slow_ms: int) -> None:
    from playwright.sync_api import expect, sync_playwright
    import re

    sys.path.insert(0, str(ROOT / "tests"))  # tests/ is no package (and a site-package may be called `tests`)
    from test_browser_app import ARGS, CHROMIUM, server

    started = time.perf_counter()
    with server(env) as url, sync_playwright() as p:
        figure("server answers", time.perf_counter() - started)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})

        start = time.perf_counter()
        page.goto(url)
        expect(page.get_by_role("heading", name="SalUn Lab: make a network forget")).to_be_visible(timeout=slow_ms)
        expect(page.get_by_role("button", name="Forget digit 3 with SalUn")).to_be_visible(timeout=slow_ms)
        page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 10",
                               timeout=slow_ms)
        idle(page, slow_ms)
        figure("first page rendered", time.perf_counter() - start)

        start = time.perf_counter()
        page.get_by_role("button", name="Forget digit 3 with SalUn").click()
        expect(page.get_by_role("heading", name=re.compile("Digit 3 is forgotten"))).to_be_visible(timeout=slow_ms)
        expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=slow_ms)
        idle(page, slow_ms)
        cached = page.get_by_text("cached", exact=False).count() > 0
        figure("Start here click", time.perf_counter() - start, "cached" if cached else "computed")

        page.goto(url + "/unlearn")
        expect(page.get_by_role("button", name="Run", exact=True)).to_be_visible(timeout=slow_ms)
        idle(page, slow_ms)
        start = time.perf_counter()
        page.get_by_role("button", name="Run", exact=True).click()
        expect(page.get_by_role("heading", name="Before / after")).to_be_visible(timeout=slow_ms)
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=slow_ms)
        idle(page, slow_ms)
        cached = page.get_by_text("cached", exact=False).count() > 0
        figure("Retrain reference shown", time.perf_counter() - start,
               "SalUn + Retrain, " + ("cached" if cached else "computed"))

        start = time.perf_counter()
        page.goto(url + "/saliency")
        slider = page.get_by_role("slider").first
        expect(slider).to_be_visible(timeout=slow_ms)
        expect(page.get_by_text("global 50%")).to_be_visible(timeout=slow_ms)
        idle(page, slow_ms)
        figure("saliency page opened", time.perf_counter() - start)
        figure("slider -> idle", move_slider(page, slider, "ArrowRight", "global 51%", slow_ms), "sparsity 50% -> 51%, Layer by layer")
        page.get_by_role("tab", name="Overlap between masks").click()
        expect(page.get_by_text("IoU of the forget-set mask", exact=False)).to_be_visible(timeout=slow_ms)
        idle(page, slow_ms)
        figure("slider -> idle, overlaps", move_slider(page, slider, "ArrowLeft", "each mask at 50%", slow_ms),
               "sparsity 51% -> 50%, Overlap between masks")
        page.get_by_role("tab", name="Layer by layer").click()  # the page's default, for the next visitor
        idle(page, slow_ms)

        start = time.perf_counter()
        page.goto(url + "/generation")
        expect(page.get_by_text("What the original model generates")).to_be_visible(timeout=slow_ms)
        expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=slow_ms)
        idle(page, slow_ms)
        figure("Diffusion before-grid", time.perf_counter() - start)

        # the page's default run (SalUn, class 3, its default steps and images per class)
        start = time.perf_counter()
        page.get_by_role("button", name="Forget", exact=True).click()
        done = page.get_by_role("heading", name=re.compile(r"Class 3 forgotten with SalUn in \d+ s"))
        expect(done).to_be_visible(timeout=slow_ms)
        idle(page, slow_ms)
        mask = "mask from the store" if page.get_by_text("read back from the store", exact=False).count() else "mask computed"
        figure("Diffusion forgetting", time.perf_counter() - start, f"{done.inner_text().strip()}; {mask}")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="an empty run store: every click computes")
    parser.add_argument("--skip-cli", action="store_true", help="skip the CLI's SalUn / Retrain ratio")
    parser.add_argument("--skip-browser", action="store_true", help="only the CLI's ratio")
    parser.add_argument("--slow-s", type=float, default=600, help="give up on a figure after this long (default 600)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    print(f"bench_app: {load()}; {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC", flush=True)
    if not args.skip_cli:
        cli_ratio(env)
    if args.skip_browser:
        return
    if args.cold:
        env["SALUN_HOME"] = tempfile.mkdtemp(prefix="salun-bench-cold-")
        print(f"cold: empty run store {env['SALUN_HOME']}", flush=True)
    else:
        start = time.perf_counter()
        out = cli(["warm", "--classes", "3", "--json", "--quiet"], env)
        grids = ", ".join([f"{g['dataset']} grid {g['status']}" for g in out.get("grids", [])]
                          + [f"{m['dataset']} class {m['class']} mask {m['status']}" for m in out.get("masks", [])])
        print(f"warm store for class 3: {out['computed']} computed, {out['stored']} already stored"
              f"{'; ' + grids if grids else ''} ({time.perf_counter() - start:.1f} s)", flush=True)
        cleared = forget_diffusion_runs(env)
        print(f"Diffusion figure: {cleared} stored app run(s) of SalUn on class 3 deleted, so the click computes",
              flush=True)
    browser_figures(env, int(args.slow_s * 1000))


if __name__ == "__main__":
    main()
