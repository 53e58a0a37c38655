"""The browser tests' fixtures: one `streamlit run` server and one chromium per test module."""
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from browser import ARGS, CHROMIUM, ROOT, SERVER_HOME, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    port = free_port()
    home = tmp_path_factory.mktemp("e2e-home")
    # the per-checkpoint curvature profiles (on for a person) only where the module checks them
    profiles = getattr(request.module, "CURVATURE_PROFILES", False)
    env = {**os.environ, "HFLAB_HOME": str(home), "PYTHONPATH": str(ROOT),
           "HFLAB_CURVATURE_PROFILE": "1" if profiles else "0"}
    if getattr(request.module, "MAX_CONCURRENT", None) is not None:
        env["HFLAB_MAX_CONCURRENT"] = str(request.module.MAX_CONCURRENT)
    # no --server.address: the project's .streamlit/config.toml decides where it listens
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py",
                             "--server.port", str(port), "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    SERVER_HOME["home"], SERVER_HOME["port"] = home, port
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
