"""End-to-end in a real browser: the Curvature page of a fresh 610-parameter model (the view
above the dense cap is checked in tests/app), and the curvature instrument following a live run — the one
module whose server measures the per-checkpoint curvature profiles, as the lab does by default."""
import time

from browser import needs_chromium, shot, wait_app

pytestmark = needs_chromium
CURVATURE_PROFILES = True          # the `server` fixture turns the profiles on for this module


def test_curvature_page_of_a_fresh_610_parameter_model(server, chromium_browser):
    page = chromium_browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(server + "/curvature", wait_until="networkidle")
    page.get_by_text("cases in the curvature batch").wait_for(timeout=60_000)
    page.get_by_label("task").first.click()
    page.get_by_role("option", name="digits", exact=True).click()
    page.wait_for_selector(".js-plotly-plot", timeout=120_000)
    page.get_by_text("610 parameters").first.wait_for(timeout=120_000)
    assert page.locator("[data-testid='stException']").count() == 0
    shot(page, "09-curvature-610")
    page.close()


def _figure_titles(page):
    """The Plotly figures' titles as drawn (Streamlit's theme wraps them in <b>)."""
    return [t.replace("<b>", "").replace("</b>", "") for t in page.evaluate(
        """() => [...document.querySelectorAll('.js-plotly-plot')].map(
        g => (g.layout && g.layout.title && g.layout.title.text) || '')""")]


def _wait_titles(page, wanted, timeout=150):
    deadline = time.time() + timeout
    while time.time() < deadline and not all(any(t.startswith(w) for t in _figure_titles(page))
                                             for w in wanted):
        time.sleep(1.0)
    titles = _figure_titles(page)
    for w in wanted:
        assert any(t.startswith(w) for t in titles), (w, titles)
    return titles


def test_curvature_over_training_and_loss_slices_follow_a_live_run(server, chromium_browser):
    """A second tab opens the Curvature page of an HF run while it trains and follows it: the
    spectral density over training fills in checkpoint by checkpoint, the loss slices render;
    the CG inspector shows the loss along HF's step with the quadratic model."""
    from browser import SERVER_HOME

    from hflab.store import Store
    page = chromium_browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(server + "/?task=regression&optimizers=hf&steps=300&layers=8",
              wait_until="networkidle")
    wait_app(page)
    store = Store(SERVER_HOME["home"])
    before = set(store.runs()["id"])                 # the module's earlier tests' runs
    page.get_by_role("button", name="▶ Start").click()

    def ours():
        runs = store.runs()
        new = runs[~runs["id"].isin(before) & (runs["task"] == "regression")]
        return new.iloc[0] if len(new) else None
    deadline = time.time() + 60
    while time.time() < deadline and (ours() is None or ours()["status"] != "running"):
        time.sleep(0.2)
    run_id = int(ours()["id"])
    assert store.get_run(run_id)["status"] == "running"
    view = chromium_browser.new_page(viewport={"width": 1500, "height": 1100})  # a second tab
    view.goto(server + f"/curvature?run={run_id}", wait_until="networkidle")
    # the heatmaps come from the background view process, the profiles from the run itself
    _wait_titles(view, ["spectral density of G over training", "loss slices at update",
                        f"G (run #{run_id} at update"])
    assert view.locator("[data-testid='stException']").count() == 0
    # 0 while the page redraws (a rerun replaces the figures for a moment)
    columns = """() => { const f = [...document.querySelectorAll('.js-plotly-plot')].find(g =>
        g.layout && (g.layout.title.text || '').includes('spectral density of G'));
        return f && f.data ? f.data[0].x.length : 0; }"""
    deadline = time.time() + 120
    while time.time() < deadline and view.evaluate(columns) < 2:
        time.sleep(1.0)
    assert view.evaluate(columns) >= 2, "the density fills in as checkpoints are measured"
    view.get_by_text("Curvature over training").first.scroll_into_view_if_needed()
    view.wait_for_timeout(500)
    shot(view, "15-curvature-over-training-live")
    view.goto(server + f"/cg_inspector?run={run_id}", wait_until="networkidle")
    _wait_titles(view, ["CG trace of update", "loss slices at update"])
    names = view.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].find(g =>
        (g.layout.title.text || '').includes('loss slices')).data.map(t => t.name)""")
    assert "HF's model q(αp) − q(0)" in names and "loss along p" in names
    view.get_by_text("The loss along HF's step").first.scroll_into_view_if_needed()
    view.wait_for_timeout(500)
    shot(view, "16-cg-inspector-loss-slices")
    view.close()
    page.close()
