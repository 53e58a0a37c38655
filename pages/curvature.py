"""Curvature: Hessian, Gauss-Newton, their difference, Jacobians and spectra — of a fresh model
or of a run's newest checkpoint (following it live while the run trains), for any model size."""
import jax  # noqa: F401
import numpy  # noqa: F401

import streamlit as st

from hflab.view import analysis, plots, ui
from hflab import hooks
from hflab.config import ConfigError
from hflab.core.curvature import DENSE_PARAM_CAP
from hflab.tasks import SPECS

st.header("Curvature")
lab = ui.lab()

source = st.radio("source", ["a fresh model", "a stored run", "your own model (hook)"],
                  horizontal=True,
                  key="curv_source", index=1 if ui.query_run_id() is not None else 0)
n_cases = st.slider("cases in the curvature batch", 1, 64, 16, key="curv_cases")


@st.cache_resource(max_entries=2, show_spinner="computing the curvature view…")
def model_view(key, _built, _params, cases: int, block):
    """The view of a fresh model or a hook's model, computed once per (model ``key``, cases,
    block): a click on another figure or a slider elsewhere reruns the page, and the dense
    matrices, every kind's full spectrum and K-FAC's factors of a 2,410-parameter model take
    seconds — the same view for each rerun.  Shared read-only by every session; at most two kept
    (a view near the dense cap holds ~0.4 GB)."""
    return analysis.curvature_view(_built, _params, cases, block)


def block_choice(model):
    """Above the dense cap: which parameters the heatmaps show."""
    if model.n_params <= analysis.FULL_VIEW:
        return None
    options = ["a sample over all blocks"] + [name for name, _, _ in model.parameter_blocks()]
    why = (f"above the dense cap of {DENSE_PARAM_CAP:,} (spectra by Lanczos)"
           if model.n_params > DENSE_PARAM_CAP else "exact spectra; the heatmaps draw at most "
           f"{analysis.MAX_VIEW} of them")
    choice = st.selectbox(f"{model.n_params:,} parameters — {why}; show", options,
                          key="curv_block")
    return None if choice == options[0] else choice


def figure_choice(built, params):
    """Which figure to show (one at a time: a live page redraws what it shows on every refresh,
    and all of them at once — six 600 × 600 heatmaps — are ~24 MB of JSON and ~0.8 s of the
    server's time per refresh, taken from the runs training beside the page) and the view parts
    it needs."""
    figures = analysis.figure_parts(built, params)
    choice = st.radio("show", list(figures), horizontal=True, key=f"curv_show_{len(figures)}")
    return choice, figures[choice]


def show(snapshot, title, choice, live: bool = False):
    """The chosen figure of a view, with the extreme eigenvalues and K-FAC's per-layer error
    where the view holds them (a live view computes only what its figure needs)."""
    ui.plain_caption(f"{title} · {snapshot['n_params']:,} parameters ({snapshot['view']}) · "
                     f"{snapshot['n_cases']} cases · black lines separate weight blocks · "
                     "colour scale centred at 0, clipped at the 99th percentile")
    kinds = snapshot["kinds"]                     # (symbol, label, psd) of every curvature kind

    def heatmap(entry, name, chart_key, filename):
        # built again only for a new view: a followed run's page refreshes every 2 s or so
        return lambda: ui.chart(lambda: plots.matrix_heatmap(snapshot[entry],
                                                             f"{name} ({title})",
                                                             snapshot["names"],
                                                             snapshot["blocks"]),
                                chart_key, filename, version=(title, snapshot["view"],
                                                              ui.fingerprint(snapshot[entry])),
                                live=live)
    figures = {f"{label} {s}": heatmap(s, s, f"heat-{s}", f"matrix-{s}")
               for s, label, _ in kinds}
    figures["H − G"] = heatmap("H-G", "H-G", "heat-H-G", "matrix-H-G")
    figures["Jacobians"] = lambda: jacobians(snapshot)
    figures["spectrum"] = lambda: spectrum(snapshot, kinds)
    figures["K-FAC A ⊗ G"] = heatmap("K", "K-FAC A ⊗ G", "heat-K", "matrix-kfac")
    figures["G − A ⊗ G"] = heatmap("G-K", "G − A ⊗ G", "heat-GK", "matrix-g-minus-kfac")
    figures[choice]()
    parts = [f"λ_max({s}) = {snapshot[f'eig_{s}'][0]:.5g}, λ_min({s}) = "
             f"{snapshot[f'eig_{s}'][-1]:.3g}" + (" (PSD: negative only by rounding)"
                                                  if psd else "")
             for s, _, psd in kinds if len(snapshot.get(f"eig_{s}", ()))]
    if parts:
        st.write("; ".join(parts))
    if "K" in snapshot:
        ui.plain_caption("K-FAC's relative error ‖G_ll − A_l ⊗ G_l‖ / ‖G_ll‖ per layer block"
                         + ("" if snapshot["view"] == "every parameter" else
                            " (over the entries shown)") + ": " + ", ".join(
                             f"{name} {err:.3g}" for name, err in snapshot["kron_errors"])
                         + " — K-FAC drops every cross-layer block and the correlation "
                         "of a layer's inputs with its output gradients")


def jacobians(snapshot):
    n_out = snapshot["J"].shape[0]
    ui.chart(plots.matrix_heatmap(snapshot["J"], "∂outputs/∂parameters", snapshot["names"],
                                  snapshot["blocks"],
                                  row_names=[f"out {i}" for i in range(n_out)]),
             "heat-J", "jacobian-params")
    if snapshot["J_inputs"] is not None:
        ui.chart(plots.matrix_heatmap(snapshot["J_inputs"], "∂outputs/∂inputs (first case)"),
                 "heat-Jin", "jacobian-inputs")


def spectrum(snapshot, kinds):
    how = "full spectrum" if snapshot["full_spectrum"] else "top/bottom eigenvalues (Lanczos)"
    ui.chart(plots.spectrum({s: snapshot[f"eig_{s}"] for s, _, _ in kinds},
                            f"Eigenvalues of {', '.join(s for s, _, _ in kinds)} — {how}"),
             "spectrum", "spectrum")
    if snapshot.get("spectrum_note"):
        ui.plain_caption(f"Lanczos: {snapshot['spectrum_note']}")


if source == "a fresh model":
    c1, c2, c3 = st.columns(3)
    task = c1.selectbox("task", analysis.FRESH_MODEL_TASKS, key="curv_task")
    layers = c2.text_input("hidden layers / units", SPECS[task].default_layers
                           if SPECS[task].kind == "rnn" or task == "seed-333" else "8",
                           key=f"curv_layers_{task}")
    seed = c3.number_input("seed", 0, 10_000, 0, key="curv_seed")
    try:
        built, params = analysis.fresh_model(task, layers, int(seed))
        choice, _ = figure_choice(built, params)
        snap = model_view(("fresh", task, layers, int(seed)), built, params, n_cases,
                          block_choice(built.model))
    except (ConfigError, ValueError) as e:
        ui.error(e)
    else:
        show(snap, f"fresh {task} model", choice)
elif source == "your own model (hook)":
    ui.plain_caption(f"Any JAX function and parameter pytree: a hook returns hflab.hooks.LabModel;"
                     f" the examples' hooks are listed, and {hooks.ENV}=file.py:function adds "
                     "yours when the server starts (see the README).")
    label = st.selectbox("model hook", list(hooks.available()), key="curv_hook")

    @st.cache_resource(show_spinner="importing the model hook…")
    def hooked(name):
        return hooks.load(name)
    try:
        lab_model = hooked(label)
        choice, _ = figure_choice(lab_model, lab_model.params)
        snap = model_view(("hook", label), lab_model, lab_model.params, n_cases,
                          block_choice(lab_model.model))
    except ValueError as e:
        ui.error(e)
    else:
        show(snap, lab_model.name, choice)
else:
    runs = lab.store.runs()
    run_id = ui.run_picker("run", runs, "curv_run", ui.query_run_id())
    if run_id is None:
        st.info("No stored runs yet — start one on **Train & compare**.")
    else:
        follow = st.checkbox("follow the newest checkpoint live", value=True, key="curv_follow")
        try:
            config, built, params, step = analysis.run_params(lab.store, int(run_id))
            choice, parts = figure_choice(built, params)
            block = block_choice(built.model)
        except (ConfigError, ValueError, KeyError) as e:
            ui.error(e)
        else:
            live_now = follow and lab.is_active(int(run_id))

            @st.fragment(run_every=ui.refresh_seconds(lab, 2.0) if live_now else None)
            def live():
                """The newest checkpoint's view, computed off the training path (a background
                process at the lowest priority, one view per run and update): while a run
                trains the page shows the newest view ready and never waits for one, and asks
                only for the parts of the figure it shows."""
                if live_now and not lab.is_active(int(run_id)):
                    st.rerun()      # the run ended: redraw the page (picker label, no refresh)
                kept = lab.store.checkpoint_steps(int(run_id))
                newest = kept[-1] if kept else 0
                shown = ui.background_view("curvature_view", int(run_id), newest, n_cases,
                                           block, parts if live_now else None, live=live_now,
                                           label="the curvature view")
                step = newest
                if shown is not None:          # else: the spectra and profiles the run stored
                    step, snap = shown
                    show(snap, f"run #{run_id} at update {step}", choice, live_now)
                metrics = ui.live_metrics(lab.store, runs[runs["id"] == int(run_id)],
                                          "curv_metrics")
                st.subheader("Curvature over training")
                if any(c.startswith("spectrum_") for c in metrics.columns):
                    ui.chart(lambda: plots.spectrum_over_training(metrics), "spectrum-training",
                             "spectrum-over-training",
                             version=(int(run_id), *ui.rows_version(metrics)), live=live_now)
                    ui.plain_caption("λ_max and λ_min of G and H at update 0 and every "
                                     "checkpoint (Lanczos on 16 training cases, tolerance 1e-3)")
                ui.curvature_over_training(lab.store, int(run_id), config, built.model.n_params,
                                           metrics)
                st.subheader("Loss slices")
                ui.loss_slices(lab.store, int(run_id), "curv-slices", newest=step, live=live_now)
            live()
