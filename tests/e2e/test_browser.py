"""End-to-end in a real browser: Playwright drives Debian's chromium against `streamlit run`."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "e2e" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                                reason="Debian chromium is not installed (CI installs it)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    home = tmp_path_factory.mktemp("e2e-home")
    env = {**os.environ, "HFLAB_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py",
                             "--server.port", str(port), "--server.headless", "true",
                             "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not become healthy")
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def chromium_browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def trace_points(page):
    """Number of plotted points in the loss chart (the first Plotly figure on the page)."""
    return page.evaluate("""() => {
        const g = document.querySelector('.js-plotly-plot');
        if (!g || !g.data) return [0, 0];
        return [g.data.length, (g._fullData || []).reduce((n, t) => n + (t._length || 0), 0)];
    }""")


def test_hf_vs_adam_live_then_curvature_and_cg(server, chromium_browser):
    page = chromium_browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(server + "/?task=digits-ae&optimizers=hf,adam&steps=400", wait_until="networkidle")
    page.get_by_role("button", name="▶ Start").wait_for(timeout=60_000)
    shot(page, "01-train-configured")
    page.get_by_role("button", name="▶ Start").click()
    page.wait_for_selector(".js-plotly-plot", timeout=90_000)
    deadline = time.time() + 60
    first = trace_points(page)
    while time.time() < deadline and trace_points(page)[0] < 4:   # 2 runs × train/test
        time.sleep(0.5)
    n_traces, points = trace_points(page)
    assert n_traces >= 4, "both runs' loss curves appear"
    time.sleep(3)
    assert trace_points(page)[1] > points, "the curves grow while training"
    assert trace_points(page)[1] > first[1]
    shot(page, "02-train-live")
    page.get_by_role("button", name="■ Stop").click()

    page.goto(server + "/curvature", wait_until="networkidle")
    page.wait_for_selector(".js-plotly-plot .heatmaplayer, .js-plotly-plot", timeout=90_000)
    assert page.locator(".js-plotly-plot").count() >= 1
    assert page.evaluate("() => document.querySelector('.js-plotly-plot').data[0].type") == "heatmap"
    shot(page, "03-curvature")

    page.goto(server + "/cg_inspector", wait_until="networkidle")
    page.wait_for_selector(".js-plotly-plot", timeout=90_000)
    names = page.evaluate("() => document.querySelector('.js-plotly-plot').data.map(t => t.name)")
    assert "‖r_i‖" in names
    shot(page, "04-cg-inspector")

    page.goto(server + "/derivations", wait_until="networkidle")
    page.wait_for_selector(".js-plotly-plot", timeout=90_000)
    shot(page, "05-derivations")
    page.goto(server + "/runs", wait_until="networkidle")
    page.get_by_text("runs to overlay").wait_for(timeout=60_000)
    page.wait_for_selector(".js-plotly-plot", timeout=60_000)
    shot(page, "06-runs")
    page.close()
