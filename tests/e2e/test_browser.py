"""End-to-end in a real browser (Playwright drives Debian's chromium against `streamlit run`): a
researcher's session — a live comparison, the pages, navigation, uploads, stopping."""
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect

from browser import (SERVER_HOME, nav, needs_chromium, shot, stop_and_wait, trace_points,
                     wait_app)

pytestmark = needs_chromium
MAX_CONCURRENT = 2                 # the server trains two comparisons at once, as on 2 cores


def test_hf_kfac_and_adam_live_then_curvature_and_cg(server, chromium_browser):
    """HF, K-FAC and Adam side by side on the digits autoencoder: three runs' curves grow on one
    chart; then the other pages."""
    page = chromium_browser.new_page(viewport={"width": 1500, "height": 1000})
    requests = []                      # every request any page makes: the lab's own only
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server + "/?task=digits-ae&optimizers=hf,kfac,adam&steps=400",
              wait_until="networkidle")
    page.get_by_role("button", name="▶ Start").wait_for(timeout=60_000)
    shot(page, "01-train-configured")
    page.get_by_role("button", name="▶ Start").click()
    page.wait_for_selector(".js-plotly-plot", timeout=90_000)
    deadline = time.time() + 60
    first = trace_points(page)
    while time.time() < deadline and trace_points(page)[0] < 6:   # 3 runs × train/test
        time.sleep(0.5)
    n_traces, points = trace_points(page)
    assert n_traces >= 6, "the three runs' loss curves appear"
    # the drawn graph is kept and the new points appended to it (hflab.view.live_chart): mark
    # the element now, find the same element, grown, later
    page.evaluate("() => { document.querySelector('.js-plotly-plot').__seen = true; }")
    names = page.evaluate("() => document.querySelector('.js-plotly-plot').data.map(t => t.name)")
    for opt in ("hf", "kfac", "adam"):
        assert any(f"· {opt} ·" in n for n in names), (opt, names)
    # update 0 is plotted at once; the curves then grow as the updates come (after compiling)
    deadline = time.time() + 90
    while time.time() < deadline and trace_points(page)[1] <= points:
        time.sleep(0.5)
    grown = trace_points(page)[1]
    assert grown > points, "the curves grow while training"
    deadline = time.time() + 30
    while time.time() < deadline and trace_points(page)[1] <= grown:
        time.sleep(0.5)
    assert trace_points(page)[1] > grown > first[1]
    kept = page.evaluate("""() => { const g = document.querySelector('.js-plotly-plot');
        return [g.__seen === true, g.__hflabAppends || 0]; }""")
    assert kept[0] and kept[1] >= 1, f"the live chart is replaced, not appended to: {kept}"
    shot(page, "02-train-live")
    stop_and_wait(page)
    from hflab.store import Store
    store = Store(SERVER_HOME["home"])

    page.goto(server + "/curvature", wait_until="networkidle")
    page.wait_for_selector(".js-plotly-plot .heatmaplayer, .js-plotly-plot", timeout=90_000)
    assert page.locator(".js-plotly-plot").count() >= 1
    assert page.evaluate("() => document.querySelector('.js-plotly-plot').data[0].type") == "heatmap"
    shot(page, "03-curvature")

    runs = store.runs()
    hf_id = int(runs[runs["optimizer"] == "hf"]["id"].max())
    page.goto(server + f"/cg_inspector?run={hf_id}", wait_until="networkidle")
    page.wait_for_selector(".js-plotly-plot", timeout=90_000)
    names = page.evaluate("() => document.querySelector('.js-plotly-plot').data.map(t => t.name)")
    assert "‖r_i‖" in names
    shot(page, "04-cg-inspector")

    page.goto(server + "/derivations", wait_until="networkidle")
    page.wait_for_selector(".js-plotly-plot", timeout=90_000)
    shot(page, "05-derivations")
    # a chart's data is made when its download button is clicked (not on every rerun)
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="download data (CSV)").first.click()
    table = Path(download.value.path()).read_text().splitlines()
    assert table[0].startswith("trace,") and len(table) > 2, table[:3]
    page.goto(server + "/runs", wait_until="networkidle")
    page.get_by_text("runs to overlay").wait_for(timeout=60_000)
    page.wait_for_selector(".js-plotly-plot", timeout=60_000)
    shot(page, "06-runs")
    from urllib.parse import urlparse
    outside = sorted({u for u in requests if urlparse(u).scheme not in ("data", "blob")
                      and urlparse(u).hostname not in ("127.0.0.1", "localhost")})
    assert len(requests) > 50 and not outside, outside
    page.close()


# ----------------------------------------------------------------------------- a researcher's session


def test_server_listens_on_localhost_only(server):
    port = SERVER_HOME["port"]
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, p = local.rsplit(":", 1)
            if int(p, 16) == port and state == "0A":             # LISTEN
                listening.append(addr)
    assert listening, "the server is listening"
    loopback = {"0100007F", "00000000000000000000000001000000"}
    assert set(listening) <= loopback, listening


def test_navigation_keeps_the_form_and_the_url(server, chromium_browser):
    page = chromium_browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(server + "/?task=regression&layers=16-16&steps=1500&optimizers=hf",
              wait_until="networkidle")
    wait_app(page)
    page.get_by_role("button", name="▶ Start").click()
    page.wait_for_selector(".js-plotly-plot", timeout=90_000)
    for title in ("Curvature", "CG inspector", "Train & compare"):
        nav(page, title)
    wait_app(page)
    # the page writes the form into the URL when its script reaches that line (a rerun — the
    # comparison ending re-enables Start — can delay it under load): poll, page.url stays live
    for _ in range(30):
        page.wait_for_timeout(500)
        if "layers=16-16" in page.url:
            break
    assert "layers=16-16" in page.url and "steps=1500" in page.url, page.url
    assert "task=regression" in page.url and "optimizers=hf" in page.url
    layers = page.get_by_role("textbox", name="hidden layers (e.g. 400-200-100)")
    try:
        expect(layers).to_have_value("16-16", timeout=30_000)   # drawn once its rerun ends
        shot(page, "07-navigation-kept-form")
    finally:
        stop_and_wait(page)      # also when a check fails: a run left training slows the rest
    page.close()


def test_markdown_in_the_url_renders_as_plain_text(server, chromium_browser):
    page = chromium_browser.new_page(viewport={"width": 1500, "height": 1000})
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    evil = "[login](https://evil.example/x) ![t](https://evil.example/t.png)"
    page.goto(server + "/?devices=" + urllib.request.quote(evil), wait_until="networkidle")
    wait_app(page)
    time.sleep(1.0)
    assert page.locator("a[href*='evil.example']").count() == 0
    assert page.locator("img[src*='evil.example']").count() == 0
    assert not [u for u in requests if u.split("//")[1].startswith("evil.example")]
    assert "evil.example" in page.content()            # shown, as text, in the warning
    shot(page, "08-markdown-as-text")
    page.close()


def test_stop_during_preparation_ends_the_run_within_a_second(server, chromium_browser):
    from hflab.store import Store
    store = Store(SERVER_HOME["home"])
    page = chromium_browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(server + "/?task=curves&optimizers=hf&steps=5", wait_until="networkidle")
    wait_app(page)
    before = set(store.runs()["id"]) if not store.runs().empty else set()
    page.get_by_role("button", name="▶ Start").click()
    deadline = time.time() + 30
    new = set()
    while not new and time.time() < deadline:
        runs = store.runs()
        new = (set(runs["id"]) - before) if not runs.empty else set()
        time.sleep(0.05)
    assert new, "Start created the run"
    t0 = time.time()
    page.get_by_role("button", name="■ Stop").click()
    status = ""
    while time.time() - t0 < 4.0:
        status = store.get_run(max(new))["status"]
        if status == "stopped":
            break
        time.sleep(0.05)
    # well under the preparation it interrupts; 3 s, not 2, because the click's own round trip
    # took 2.4 s once on a slow 2-core machine with the other test worker busy
    assert status == "stopped" and time.time() - t0 < 3.0, status
    shot(page, "12-stopped-while-preparing")
    page.close()


def test_upload_imports_a_bundle_once(server, chromium_browser, tmp_path):
    from hflab import bundles
    from hflab.config import preset_config
    from hflab.lab import run_to_store
    from hflab.store import Store
    src = Store(tmp_path / "src")
    cfg = preset_config("regression", layers="4", steps=3, n_train=32, n_test=16,
                        checkpoint_every=0)
    ids = [src.create_run(cfg) for _ in range(2)]
    for i in ids:
        run_to_store(src, i, cfg)
    bundle = bundles.export(src, ids, tmp_path / "two-runs.zip")
    server_store = Store(SERVER_HOME["home"])
    before = len(server_store.runs())
    page = chromium_browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(server + "/runs", wait_until="networkidle")
    page.locator("input[type=file]").set_input_files(str(bundle))
    page.get_by_text("imported as runs").wait_for(timeout=60_000)
    for _ in range(3):                                   # later widget clicks: no re-import
        page.get_by_text("log y").first.click()
        time.sleep(1.0)
    assert len(server_store.runs()) == before + 2
    shot(page, "11-upload-once")
    page.close()


def test_your_own_csv_uploaded_on_the_train_page_trains_and_a_bad_one_is_named(
        server, chromium_browser, tmp_path):
    import numpy as np

    from hflab.store import Store
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 2))
    good = tmp_path / "blobs.csv"
    good.write_text("u,v,label\n" + "\n".join(f"{a:.5f},{b:.5f},{int(a + b > 0)}"
                                              for a, b in x))
    bad = tmp_path / "broken.csv"
    bad.write_text("u,v,label\n1,2,0\n3,oops,1\n")
    store = Store(SERVER_HOME["home"])
    before = len(store.runs())
    page = chromium_browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(server + "/?task=custom&optimizers=hf,adam&steps=3", wait_until="networkidle")
    page.get_by_label("CSV target columns").fill("label")
    page.get_by_label("CSV target columns").press("Tab")
    page.wait_for_timeout(1500)
    page.locator("section[data-testid=stSidebar] input[type=file]").set_input_files(str(bad))
    try:
        page.get_by_text("row 3, column 'v': 'oops' is not a number").wait_for(timeout=30_000)
    finally:
        shot(page, "12-custom-data-bad-file")
    shot(page, "12-custom-data-bad-file")
    page.locator("section[data-testid=stSidebar] input[type=file]").set_input_files(str(good))
    page.get_by_text("blobs.csv: 80 cases × 2 inputs, classification into 2 classes").wait_for(
        timeout=30_000)
    # the URL records which data set; read from the page itself (page.url is updated only by
    # events that Playwright's sync API processes inside its own calls, never during a sleep)
    page.wait_for_function("() => location.search.includes('data=')", timeout=60_000)
    page.get_by_role("button", name="▶ Start").click()
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = store.runs()
        new = runs[runs["id"] > (runs["id"].max() - 2)] if len(runs) > before else runs.iloc[0:0]
        if len(runs) == before + 2 and set(new["status"]) == {"finished"}:
            break
        time.sleep(0.5)
    runs = store.runs()
    assert len(runs) == before + 2 and set(runs["task"].iloc[-2:]) == {"custom"}
    assert set(runs["steps_done"].iloc[-2:]) == {3}          # the URL's settings survived
    time.sleep(2)
    shot(page, "13-custom-data-trained")
    page.close()


def test_a_length_curriculum_typed_in_the_form_trains_stage_by_stage(server, chromium_browser):
    """XOR through T = 5 → 10: the field typed as a person would, the curves marked where the
    second stage begins and the run's progress naming it.  (T = 5 is solved within a few
    updates — about a second of training — so the progress may never show stage 1 between two
    refreshes; the mark on the curves is where the first stage's end is seen.)"""
    page = chromium_browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(server + "/?task=xor&optimizers=hf&steps=300", wait_until="networkidle")
    wait_app(page)
    field = page.get_by_role("textbox", name="length curriculum (e.g. 20,50,100; empty = none)")
    field.fill("5,10")
    field.press("Enter")
    page.get_by_text("each stage trains at its own length").wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    assert "curriculum=5%2C10" in page.url or "curriculum=5,10" in page.url, page.url
    page.get_by_role("button", name="▶ Start").click()
    # the first point waits for the run's preparation (data, compile), which on 2 loaded cores
    # once took over 90 s inside the suite (alone: ~10 s)
    page.wait_for_selector(".js-plotly-plot", timeout=180_000)
    marked = """() => [...document.querySelectorAll('.js-plotly-plot')].some(g =>
        (g.layout.annotations || []).some(a => a.text === 'T = 10'))"""
    try:
        deadline = time.time() + 150
        while time.time() < deadline and not page.evaluate(marked):
            time.sleep(1.0)
        assert page.evaluate(marked), "the second stage's start is marked on the curves"
        page.get_by_text("T = 10 (stage 2 of 2)").first.wait_for(timeout=30_000)
        shot(page, "14-length-curriculum")
    finally:
        stop_and_wait(page)
    page.close()
