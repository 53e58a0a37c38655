"""The README's recipe for a class, tried on localhost: the lab bound to loopback, Caddy in front
with the repository's Caddyfile (examples/class/Caddyfile).  Without the password nothing of the
lab is reachable; with it a real browser opens the lab through the proxy and trains (Streamlit's
websocket passes through).  Needs Debian's caddy and chromium (skipped without them)."""
import base64
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CADDY = shutil.which("caddy")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not CADDY or not Path(CHROMIUM).exists(),
                                reason="needs Debian's caddy and chromium (apt install caddy "
                                       "chromium)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, headers=None, timeout=90.0) -> int:
    """The first HTTP status ``url`` answers with (an error status counts), within ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                          timeout=2).status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.fixture
def lab_behind_proxy(tmp_path):
    lab_port, proxy_port = free_port(), free_port()
    env = {**os.environ, "HFLAB_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT),
           "HFLAB_CURVATURE_PROFILE": "0"}
    lab = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port",
                            str(lab_port), "--server.headless", "true",
                            "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hashed = subprocess.run([CADDY, "hash-password", "--plaintext", "s3cret class"],
                            capture_output=True, text=True, check=True).stdout.strip()
    proxy_env = {**os.environ, "HFLAB_CLASS_SITE": f"http://127.0.0.1:{proxy_port}",
                 "HFLAB_CLASS_HASH": hashed, "HFLAB_LAB_ADDRESS": f"127.0.0.1:{lab_port}",
                 "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
                 "XDG_CONFIG_HOME": str(tmp_path / "caddy-config")}
    proxy = subprocess.Popen([CADDY, "run", "--config", str(ROOT / "examples/class/Caddyfile"),
                              "--adapter", "caddyfile"], env=proxy_env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_http(f"http://127.0.0.1:{lab_port}/_stcore/health") == 200
        yield f"http://127.0.0.1:{proxy_port}", lab_port
    finally:
        for p in (proxy, lab):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_the_class_recipe_asks_for_the_password_and_serves_the_live_lab(lab_behind_proxy):
    url, lab_port = lab_behind_proxy
    good = "Basic " + base64.b64encode(b"class:s3cret class").decode()
    bad = "Basic " + base64.b64encode(b"class:guess").decode()
    assert wait_http(url + "/_stcore/health") == 401                 # no password: nothing
    assert wait_http(url + "/", {"Authorization": bad}) == 401
    assert wait_http(url + "/_stcore/health", {"Authorization": good}) == 200
    # the lab itself still listens on loopback only: not on this machine's other addresses
    with socket.socket() as s:
        s.settimeout(1)
        outside = socket.gethostbyname(socket.gethostname())
        if not outside.startswith("127."):
            assert s.connect_ex((outside, lab_port)) != 0

    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox",
                                                                    "--disable-gpu"])
        try:
            page = browser.new_context(http_credentials={"username": "class",
                                                         "password": "s3cret class"}).new_page()
            page.goto(url + "/?task=regression&optimizers=hf&steps=5", wait_until="networkidle")
            page.get_by_role("button", name="▶ Start").wait_for(timeout=60_000)
            page.get_by_role("button", name="▶ Start").click()
            page.wait_for_selector(".js-plotly-plot", timeout=90_000)    # live over the websocket
            page.get_by_text("finished 5/5").first.wait_for(timeout=90_000)
            page.wait_for_timeout(1000)                   # the bar and chart settle
            artifacts = ROOT / "tests" / "e2e" / "artifacts"
            artifacts.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(artifacts / "17-class-behind-proxy.png"), full_page=True)
        finally:
            browser.close()
