"""Every page under streamlit.testing.v1.AppTest: renders on defaults, follows runs, shows
curvature, traces, derivations and the run history."""
import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from hflab.config import preset_config
from hflab.core.curvature import KIND_INFO
from hflab.lab import get_lab, run_to_store

from apptest import ROOT, PAGES, shown, page, wait_idle


def test_app_entry_renders():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_on_defaults_with_an_empty_store(name):
    at = page(name).run()
    assert not at.exception, [e.value for e in at.exception]


def test_live_curves_grow_and_stop_works():
    # MNIST classification: HF is far from converged for minutes (on the 3-3-3 net, the digits
    # or the spirals it converges within seconds and its run would end before Stop), and its
    # error is not twice its loss, so both charts are drawn
    at = page("train", {"task": "mnist", "optimizers": "hf,sgd", "steps": "100000"}).run()
    at.button(key="start").click().run()
    lab = get_lab()
    deadline = time.time() + 60
    while time.time() < deadline and lab.store.metrics(lab.active()).shape[0] < 6:
        time.sleep(0.1)
    at.run()
    # while the runs train, both curves are charts that append points (hflab.view.live_chart):
    # the figure is the component's data, a train and a test series per run
    live = at.get("bidi_component")
    assert len(live) == 2 and not at.get("plotly_chart")
    fig = json.loads(json.loads(live[0].proto.json))
    names = [t["name"] for t in fig["data"]]
    assert any("hf" in n and n.endswith("train") for n in names), names
    assert any("sgd" in n and n.endswith("test") for n in names), names
    assert all(isinstance(t["x"], list) and len(t["x"]) == len(t["y"]) for t in fig["data"])
    def rows():
        return lab.store.metrics(list(lab.store.runs()["id"])).shape[0]
    n1, deadline = rows(), time.time() + 30
    while time.time() < deadline and rows() <= n1:     # an HF update on MNIST takes ~0.5–2 s
        time.sleep(0.1)
    assert rows() > n1
    # one comparison per session at a time: Start is disabled (no second click can start one)
    assert at.button(key="start").disabled
    at.button(key="stop").click().run()
    wait_idle(60)
    assert set(lab.store.runs()["status"]) == {"stopped"}
    at.run()
    assert not at.button(key="start").disabled
    # nothing trains: the final curves are Streamlit's own charts again
    assert len(at.get("plotly_chart")) == 2 and not at.get("bidi_component")
    at.button(key="resume").click().run()
    assert lab.active()
    for run_id in lab.active():
        lab.stop(run_id)
    wait_idle(60)


def test_two_sessions_cannot_stop_or_delete_each_others_runs_without_taking_them_over():
    """Alice starts a comparison; Bob's Runs page shows it as another session's and refuses to
    stop it until he ticks the take-over naming it; then Alice's Stop is refused in turn."""
    lab = get_lab()
    # HF on the digits autoencoder: a run that keeps improving for tens of seconds (on the 3-3-3
    # net HF converges within seconds and the run would end on its own)
    alice = page("train", {"task": "digits-ae", "optimizers": "hf", "steps": "100000"}).run()
    alice.button(key="start").click().run()
    run_id, = alice.session_state["group"]
    deadline = time.time() + 60
    while time.time() < deadline and lab.progress(run_id)["steps_done"] < 1:
        time.sleep(0.1)
    bob = page("runs").run()
    assert bob.dataframe[0].value.set_index("id")["origin"][run_id] == "another browser session"
    bob.button(key="runs_stop").click().run()
    assert any(f"cannot stop run #{run_id} (started by another browser session)" in
               shown(e.value) for e in bob.error), [e.value for e in bob.error]
    time.sleep(0.5)
    assert lab.is_active(run_id)
    bob.checkbox(key="runs_sure").check().run()
    bob.button(key="runs_delete").click().run()         # training: refused, whoever asks
    assert lab.store.get_run(run_id)
    bob.checkbox(key="runs_take_over").check().run()
    bob.button(key="runs_stop").click().run()
    assert not bob.error, [e.value for e in bob.error]
    wait_idle(60)
    assert lab.store.get_run(run_id)["status"] == "stopped"
    alice.run()
    alice.button(key="resume").click().run()             # Bob owns it now
    assert any("take it over" in shown(e.value) for e in alice.error)
    assert not lab.active()
    bob.run()
    bob.button(key="runs_delete").click().run()
    assert lab.store.runs().empty


def test_a_time_budget_in_the_form_ends_every_run_of_the_comparison():
    """The form's time budget (max_seconds, also in the URL) gives each optimiser the same
    seconds of optimisation; a new session's Resume says where resuming is."""
    at = page("train", {"task": "digits-ae", "optimizers": "hf,adam", "steps": "1000000",
                        "max_seconds": "1.5"}).run()      # HF far from converged at 1.5 s
    assert at.number_input(key="f_max_seconds").value == 1.5
    at.button(key="start").click().run()
    wait_idle(180)
    lab = get_lab()
    runs = lab.store.runs()
    assert set(runs["status"]) == {"finished"} and runs["error"].str.contains("budget").all()
    for run_id in runs["id"]:
        m = lab.store.metrics(int(run_id))
        assert m["wall_seconds"].max() < 1.5 + 2.0             # at most one update over
        assert m["step"].max() < 1_000_000
    fresh = page("train").run()
    fresh.button(key="resume").click().run()
    assert any("Runs" in shown(i.value) for i in fresh.info)
    # an out-of-range value typed in a field is named on Start, not replaced by the last one
    at = page("train", {"task": "seed-333", "optimizers": "sgd"}).run()
    at.number_input(key="f_steps").set_value(-10).run()
    at.button(key="start").click().run()
    assert any("steps" in shown(e.value) and "-10" in shown(e.value) for e in at.error)
    assert len(get_lab().store.runs()) == 2                         # nothing started


def test_app_frame_shows_the_device_badge():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    badge = " ".join(shown(c.value) for c in at.sidebar.caption)
    assert "Runs use · cpu" in badge and "Device · CPU" in badge


def chart_specs(at) -> list[dict]:
    """Every chart's figure in page order: Streamlit's own charts and the appending ones a live
    page draws (hflab.view.live_chart; their data is the figure's JSON)."""
    import json
    specs = []
    for node in at.main:
        kind = getattr(node, "type", None)
        if kind == "plotly_chart":
            specs.append(json.loads(node.proto.spec))
        elif kind == "bidi_component" and node.proto.component_name == "hflab_live_chart":
            specs.append(json.loads(json.loads(node.proto.json)))
    return specs


def chart_spec(at, title):
    for spec in chart_specs(at):
        if spec["layout"].get("title", {}).get("text") == title:
            return spec
    raise AssertionError(f"no chart titled {title!r}")


def chart_titles(at) -> list[str]:
    return [spec["layout"].get("title", {}).get("text") for spec in chart_specs(at)]


def test_a_chart_is_built_again_only_when_what_it_shows_changes():
    """A live page keeps each chart's last figure: the same version draws the kept figure
    without building it again; a new version (a new view, checkpoint or row) builds it anew."""
    def script():
        import plotly.graph_objects as go
        import streamlit as st
        from hflab.view import ui
        v = st.session_state.get("v", 0)

        def build():
            st.session_state.builds = st.session_state.get("builds", 0) + 1
            return go.Figure(layout=dict(title=f"version {v}"))
        ui.chart(build, "memo", "memo", version=v)
        ui.chart(lambda: go.Figure(layout=dict(title=f"unversioned {v}")), "plain", "plain")
    at = AppTest.from_function(script).run()
    at.run()
    assert at.session_state["builds"] == 1 and chart_titles(at) == ["version 0", "unversioned 0"]
    at.session_state["v"] = 1
    at.run()
    assert at.session_state["builds"] == 2 and chart_titles(at) == ["version 1", "unversioned 1"]
    at.run()
    assert at.session_state["builds"] == 2 and chart_titles(at) == ["version 1", "unversioned 1"]


def test_curvature_page_fresh_model_and_run_checkpoint(curvature_profiles):
    at = page("curvature").run()
    assert not at.exception
    # one figure at a time: a heatmap per curvature kind, H − G, 2 Jacobians, the spectrum,
    # K-FAC's A ⊗ G and G − A ⊗ G — each drawn when chosen, and only then
    key = f"curv_show_{len(KIND_INFO) + 5}"
    options = at.radio(key=key).options
    kinds = [f"{k.label} {k.symbol}" for k in KIND_INFO.values()]
    assert options == kinds + ["H − G", "Jacobians", "spectrum", "K-FAC A ⊗ G", "G − A ⊗ G"]
    drawn = {}
    for option in options:
        at.radio(key=key).set_value(option).run()
        assert not at.exception
        drawn[option] = [t.split(" (")[0] for t in chart_titles(at)]
    assert drawn == {**{o: [k.symbol] for o, k in zip(kinds, KIND_INFO.values())},
                     "H − G": ["H-G"], "Jacobians": ["∂outputs/∂parameters",
                                                      "∂outputs/∂inputs"],
                     "spectrum": [drawn["spectrum"][0]], "K-FAC A ⊗ G": ["K-FAC A ⊗ G"],
                     "G − A ⊗ G": ["G − A ⊗ G"]}
    assert drawn["spectrum"][0].startswith("Eigenvalues of")
    lab = get_lab()
    cfg = preset_config("seed-333", steps=4, checkpoint_every=2)
    run_id = lab.store.create_run(cfg)
    run_to_store(lab.store, run_id, cfg)
    at = page("curvature", {"run": str(run_id)}).run()
    assert not at.exception and not at.error
    assert any("at update 4" in c.value for c in at.caption)
    assert any("at update 0 and every checkpoint" in shown(c.value) for c in at.caption)
    m = lab.store.metrics(run_id)
    assert m.dropna(subset=["spectrum_G_max"])["step"].tolist() == [0, 2, 4]
    # the curvature instrument: densities of G and H over training, λ_max with its line, HF's
    # λ beside G, per-block traces; loss slices of the newest checkpoint and their plane
    titles = chart_titles(at)
    for title in ("spectral density of G over training", "spectral density of H over training",
                  "top Hessian eigenvalue over training", "HF's λ beside G's spectrum",
                  "G per weight block", "loss slices at update 4 (64 cases)",
                  "the loss over the plane of the first two directions"):
        assert title in titles, (title, titles)
    slices = chart_spec(at, "loss slices at update 4 (64 cases)")
    names = [t["name"] for t in slices["data"]]
    assert "HF's model q(αp) − q(0)" in names and "loss along p" in names
    assert sum(n.startswith("eigenvector") for n in names) == 2
    at.selectbox(key="curv-slices-step").set_value(2).run()
    assert not at.exception and "loss slices at update 2 (64 cases)" in chart_titles(at)


def test_a_page_following_a_live_run_asks_only_for_the_figure_it_shows():
    """While a run trains, the Curvature page asks the view process for the parts of its chosen
    figure only (G, then H when H is chosen) — not the whole view it gets for a finished run —
    and draws the newest checkpoint's.  A page that asked for everything while live (the cost
    that starved its views under load) or drew a figure its view does not hold would fail."""
    from hflab.view import worker
    lab = get_lab()
    # Adam: a run that trains to its budget (HF on this net converges within seconds and ends)
    cfg = preset_config("regression", layers="8", steps=10_000_000, max_seconds=120,
                        checkpoint_every=200, optimizer="adam")
    run_id = lab.start(cfg)
    views = worker.for_home(lab.store.home)

    def drawn(symbol):
        deadline = time.time() + 90
        while time.time() < deadline:
            at.run()
            assert not at.exception and not at.error
            if any(t.startswith(f"{symbol} (run #{run_id} at update") for t in chart_titles(at)):
                return
            time.sleep(0.5)
        raise AssertionError((symbol, chart_titles(at)))
    try:
        at = page("curvature", {"run": str(run_id)})
        drawn("G")
        key = next(r.key for r in at.radio if r.key.startswith("curv_show_"))
        at.radio(key=key).set_value("Hessian H")
        drawn("H")
        assert lab.is_active(run_id), "the run ended before the page was seen following it"
        asked = {k[5] for k in views._done if k[0] == "curvature_view" and k[1] == run_id}
        assert asked == {("G",), ("H",)}, asked
        assert not any("λ_max" in m.value for m in at.markdown)     # no spectrum asked for
    finally:
        lab.stop(run_id)
        lab.wait(run_id, 60)


def test_curvature_page_above_the_dense_cap_shows_a_block_and_lanczos():
    """A 3,610-parameter run: no error, a block choice, sub-matrix heatmaps and Lanczos."""
    lab = get_lab()
    cfg = preset_config("digits", layers="48", steps=1, checkpoint_every=1)
    run_id = lab.store.create_run(cfg)
    run_to_store(lab.store, run_id, cfg)
    at = page("curvature", {"run": str(run_id)})
    at.session_state["curv_block"] = "W2"         # one view (the sample view: the browser test)
    at.run()
    assert not at.exception and not at.error
    assert "above the dense cap" in at.selectbox(key="curv_block").label
    captions = " ".join(shown(c.value) for c in at.caption)
    assert "3,610 parameters (block W2)" in captions
    # every kind, H−G, J, spectrum, K-FAC's two, the spectrum and curvature over training and
    # the loss slices (Lanczos on the Hessian operator: no dense matrix above the cap)
    titles = chart_titles(at)
    assert "G (run #%d at update 1)" % run_id in titles              # the first kind, G
    assert "loss slices at update 1 (64 cases)" in titles
    at.radio(key=f"curv_show_{len(KIND_INFO) + 5}").set_value("H − G").run()
    assert "H-G (run #%d at update 1)" % run_id in chart_titles(at)
    assert any("relative error" in shown(c.value) and "(over the entries shown)" in shown(c.value)
               for c in at.caption)
    assert any("λ_max(H)" in m.value for m in at.markdown)


def test_cg_inspector_shows_trace_and_timelines():
    lab = get_lab()
    cfg = preset_config("digits-ae", steps=3, checkpoint_every=0)
    run_id = lab.store.create_run(cfg)
    run_to_store(lab.store, run_id, cfg)
    at = page("cg_inspector").run()
    assert not at.exception and not at.error
    titles = chart_titles(at)
    assert titles[0] == "CG trace of update 3" and len(titles) == 4
    names = [t["name"] for t in chart_spec(at, "loss slices at update 0 (64 cases)")["data"]]
    assert "HF's model q(αp) − q(0)" in names
    assert [m.label for m in at.metric][:2] == ["CG iterations", "stop reason"]


def test_cg_inspector_waits_for_the_metrics_row_of_a_newer_trace():
    """A trace is stored as its update ends, the metrics rows in batches: while a run trains the
    newest trace can be ahead of the rows.  The inspector shows the newest update it has both
    for — it raised IndexError (a traceback on the page) before."""
    import sqlite3
    lab = get_lab()
    cfg = preset_config("digits-ae", steps=3, checkpoint_every=0)
    run_id = lab.store.create_run(cfg)
    run_to_store(lab.store, run_id, cfg)
    with sqlite3.connect(lab.store.path) as db:
        db.execute("DELETE FROM metrics WHERE run_id = ? AND step = 3", (run_id,))
    at = page("cg_inspector", {"run": str(run_id)}).run()
    assert not at.exception and not at.error
    assert chart_titles(at)[0] == "CG trace of update 2"


def test_the_inspector_shows_k_fac_state_across_updates():
    """A K-FAC run has no CG: the inspector shows λ, ρ, α, μ and the predicted against the
    actual change, the values the run recorded."""
    lab = get_lab()
    cfg = preset_config("digits-ae", optimizer="kfac", steps=3, checkpoint_every=0,
                        layers="8-4", n_train=100, n_test=20)
    run_id = lab.store.create_run(cfg)
    run_to_store(lab.store, run_id, cfg)
    at = page("cg_inspector", {"run": str(run_id)}).run()
    assert not at.exception
    assert [m.label for m in at.metric] == ["damping λ", "reduction ratio ρ",
                                            "learning rate α (quadratic model)",
                                            "momentum μ (quadratic model)"]
    last = lab.store.metrics(run_id).iloc[-1]
    assert at.metric[1].value == f"{last['rho']:.3g}"
    (chart,) = at.get("plotly_chart")
    import base64
    import json
    import numpy as np
    fig = json.loads(chart.proto.spec)
    x = fig["data"][4]["x"]                       # plotly's typed-array encoding
    steps = np.frombuffer(base64.b64decode(x["bdata"]), np.dtype(x["dtype"])) \
        if isinstance(x, dict) else np.asarray(x)
    assert len(fig["data"]) == 6 and steps.tolist() == [1, 2, 3]


def test_derivations_page_agreement_and_bad_sizes():
    at = page("derivations").run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "f(1) = **40**" in text
    assert "max |Bishop − autodiff|" in text
    at.text_input(key="der_sizes").set_value("3-x").run()
    assert any("layer sizes: '3-x' is not allowed" in shown(e.value) for e in at.error)


def test_runs_page_overlay_export_delete():
    lab = get_lab()
    ids = []
    for opt in ("hf", "adam"):
        cfg = preset_config("seed-333", optimizer=opt, steps=3, learning_rate=0.01)
        ids.append(lab.store.create_run(cfg, owner="cli"))
        run_to_store(lab.store, ids[-1], cfg)
    at = page("runs").run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    assert len(at.get("download_button")) >= 3
    table = at.dataframe[0].value
    assert {"final train loss", "optimisation seconds", "note"} <= set(table.columns)
    last = lab.store.metrics(ids[1]).iloc[-1]
    row = table[table["id"] == ids[1]].iloc[0]
    assert row["final train loss"] == pytest.approx(last["train_loss"])
    assert row["origin"] == "the command line"
    # Resume from the Runs page: a run started elsewhere only once this session takes it over
    lab.store.set_status(ids[0], "interrupted", "the process running it ended unexpectedly")
    at.run()
    at.button(key="runs_resume").click().run()
    assert any(f"cannot resume run #{ids[0]} (started by the command line)" in shown(e.value)
               for e in at.error), [e.value for e in at.error]
    assert lab.store.get_run(ids[0])["status"] == "interrupted" and not lab.active()
    take = at.checkbox(key="runs_take_over")
    assert f"run #{ids[0]} (started by the command line)" in take.label
    take.check().run()
    at.button(key="runs_resume").click().run()
    wait_idle(60)
    assert lab.store.get_run(ids[0])["status"] == "finished"
    at.run()
    origins = at.dataframe[0].value.set_index("id")["origin"]
    assert origins[ids[0]] == "this session" and origins[ids[1]] == "the command line"
    at.checkbox(key="runs_sure").check().run()
    at.button(key="runs_delete").click().run()
    assert lab.store.runs().empty


def test_a_stored_data_set_named_in_the_url_trains_and_an_unknown_one_is_named(tmp_path):
    import numpy as np

    from hflab import datasets
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    buf = tmp_path / "mine.npz"
    np.savez(buf, x=x, y=(x[:, 0] > 0).astype(np.int64))
    ds = datasets.read_path(str(buf))
    ds_id = datasets.save(ds, get_lab().store.home)
    at = page("train", {"task": "custom", "data": ds_id, "optimizers": "hf,adam",
                        "steps": "2"}).run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    assert any("mine.npz: 60 cases × 3 inputs, classification into 2 classes" in shown(c.value)
               for c in at.caption)
    at.button(key="start").click().run()
    assert not at.error, [e.value for e in at.error]
    wait_idle()
    runs = get_lab().store.runs()
    assert list(runs["status"]) == ["finished", "finished"]
    assert all(ds_id in c for c in runs["config"])
    assert at.query_params["data"] == [ds_id] or at.query_params["data"] == ds_id
    # a data set this store does not have: named in a warning, and Start refuses with the reason
    at = page("train", {"task": "custom", "data": "0123456789abcdef"}).run()
    assert any("data='0123456789abcdef' is not allowed" in shown(w.value) and
               "not in this store" in shown(w.value) for w in at.warning)
    at.button(key="start").click().run()
    assert any("task 'custom' needs a data set" in shown(e.value) for e in at.error)
    assert len(get_lab().store.runs()) == 2


def test_curvature_page_shows_a_model_hook(monkeypatch):
    from hflab.view import analysis
    views = []
    compute = analysis.curvature_view
    monkeypatch.setattr(analysis, "curvature_view", lambda *a, **k: views.append(a[2:]) or
                        compute(*a, **k))
    at = page("curvature").run()
    at.radio(key="curv_source").set_value("your own model (hook)").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="curv_hook").options[:2] == ["Flax NNX MLP (example)",
                                                         "Equinox MLP (example)"]
    assert any("Flax NNX MLP · 2,410 parameters" in shown(c.value) for c in at.caption)
    # G first, then any other matrix chosen (the Equinox hook's numbers are checked in
    # tests/test_examples.py)
    assert chart_titles(at)[0] == "G (Flax NNX MLP)"
    at.radio(key=next(r.key for r in at.radio if r.key.startswith("curv_show_"))) \
        .set_value("H − G").run()
    assert not at.exception and chart_titles(at)[0] == "H-G (Flax NNX MLP)"
    # the view is computed once: another figure of the same model reruns the page, not the
    # dense matrices and spectra (seconds at 2,410 parameters); fewer cases is a new view
    assert len(views) == 2                      # the fresh model's (the page opens on it), the hook's
    at.slider(key="curv_cases").set_value(4).run()
    assert not at.exception and len(views) == 3 and views[2][0] == 4
