"""What the browser tests share: where chromium is, the skip marker, screenshots, waiting for
the app."""
import os
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "e2e" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage",
        # several sessions (contexts) at once are several people's foreground tabs
        "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows"]

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                                    reason="Debian chromium is not installed (CI installs it)")

# the running server's store folder and port (set by the module-scoped ``server`` fixture)
SERVER_HOME: dict = {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def stop_and_wait(page, timeout=60.0):
    """Press the Train page's Stop and wait until the server's store has no run training: the
    click is a rerun the server must process before the page goes away, and runs left training
    take the queue's places and the cores from the module's later tests."""
    import time

    from hflab.store import Store
    page.get_by_role("button", name="■ Stop").click()
    store = Store(SERVER_HOME["home"])
    # the Train page's Stop ends this session's comparison; another test's leftover run is
    # waited for as well (it would take the cores and the queue's places from the next test)
    deadline = time.time() + timeout
    while time.time() < deadline and store.runs()["status"].isin(["running", "queued"]).any():
        time.sleep(0.2)
    active = store.runs()[store.runs()["status"].isin(["running", "queued"])]
    assert active.empty, f"runs still training after Stop: {list(active['id'])}"


def wait_app(page):
    page.get_by_role("button", name="▶ Start").wait_for(timeout=60_000)


def nav(page, title):
    page.get_by_role("link", name=title).first.click()
    page.wait_for_load_state("networkidle")
