"""CG inspector: every HF update's CG trace, and λ, ρ, CG iterations and line search over time;
for the other second-order optimisers (K-FAC) their own state across updates."""
import jax  # noqa: F401
import numpy  # noqa: F401
import streamlit as st

from hflab import optimizers
from hflab.view import plots, ui

st.header("CG inspector")
lab = ui.lab()

runs = lab.store.runs()
inspected = [n for n, e in optimizers.REGISTRY.items() if e.cg_trace or e.state_panels]
traced = runs[runs["optimizer"].isin(inspected)] if not runs.empty else runs
run_id = ui.run_picker("run", traced, "cg_run", ui.query_run_id())


def metric(row, key, label, column):
    value = row.get(key)
    column.metric(label, "—" if value is None or value != value else f"{value:.3g}")


def cg_view(run_id, m, live: bool):
    # updates whose CG trace and metrics row are both stored: a trace is written as its update
    # ends, the metrics rows in batches, so the newest trace can be ahead of the rows read
    have = set(m["step"].astype(int)) if "step" in m else set()
    steps = [s for s in lab.store.trace_steps(int(run_id)) if int(s) in have]
    if not steps:
        st.caption("waiting for the first update…")
        return
    latest = st.checkbox("always show the newest update", value=True, key="cg_latest")
    step = steps[-1] if latest else st.select_slider("update", steps, value=steps[-1],
                                                     key="cg_step")
    tr = lab.store.cg_traces(int(run_id), [step]).iloc[0]
    row = m[m["step"] == step].iloc[0]
    c = st.columns(5)
    c[0].metric("CG iterations", int(row["cg_iters"]))
    c[1].metric("stop reason", tr["stop_reason"].replace("_", " "))
    c[2].metric("backtracked to", f"i = {int(tr['backtrack_index'])}")
    metric(row, "rho", "ρ", c[3])
    metric(row, "damping", "λ", c[4])
    # one slot whether or not the note shows: the elements after it keep their places, so the
    # live chart below stays the same element and is appended to
    note = st.empty()
    if tr["stop_reason"] == "negative_curvature":
        note.caption(ui.plain(
            "CG stopped where pᵀAp ≤ 0. With the Gauss-Newton matrix or the Fisher (positive "
            "semi-definite) and λ > 0, A = C + λI is positive definite: the stop is rounding — "
            "near convergence pᵀAp falls below the noise of the products (about 1e-7 relative "
            "in float32); a float64 run or a larger λ avoids it. With the Hessian it can be "
            "real negative curvature."))
    ui.chart(lambda: plots.cg_trace(tr["residual_norms"], tr["quad_values"], tr["saved_iters"],
                                    int(tr["backtrack_index"]), f"CG trace of update {step}"),
             "cg-trace", f"cg-trace-run{run_id}-step{step}",
             version=(int(run_id), int(step), ui.fingerprint(tr["residual_norms"],
                                                             tr["quad_values"])), live=live)
    ui.chart(lambda: plots.hf_timelines(m), "timelines", f"hf-timelines-run{run_id}",
             version=(int(run_id), *ui.rows_version(m)), live=live)


def state_view(run_id, m, entry, live: bool):
    done = m.dropna(subset=[entry.state_panels[0][0]]) if entry.state_panels[0][0] in m \
        else m.iloc[0:0]
    if done.empty:
        st.caption("waiting for the first update…")
        return
    row = done.iloc[-1]
    ui.plain_caption(f"{entry.label}: its state after update {int(row['step'])} — no CG here; "
                     "the step is the approximate natural gradient, scaled by α and mixed with "
                     "the last step by μ, both chosen by the quadratic model")
    c = st.columns(4)
    for column, (key, label, _) in zip(c, entry.state_panels):
        metric(row, key, label, column)
    ui.chart(lambda: plots.state_timelines(m, entry.state_panels,
                                           f"{entry.label} across updates"),
             "timelines", f"state-timelines-run{run_id}",
             version=(int(run_id), *ui.rows_version(m)), live=live)


if run_id is None:
    st.info("No runs to inspect yet — start an HF or K-FAC run on **Train & compare**.")
else:
    live_now = lab.is_active(int(run_id))

    # every 2 s: a new CG trace per update is more than a reader can follow, and each refresh
    # is server time taken from the run being watched
    @st.fragment(run_every=ui.refresh_seconds(lab, 2.0) if live_now else None)
    def live():
        if live_now and not lab.is_active(int(run_id)):
            st.rerun()              # the run ended: redraw the page (picker label, no refresh)
        m = ui.live_metrics(lab.store, runs[runs["id"] == int(run_id)], "cg_metrics")
        name = runs.loc[runs["id"] == int(run_id), "optimizer"].iloc[0]
        entry = optimizers.REGISTRY[name]
        if entry.cg_trace:
            cg_view(run_id, m, live_now)
            st.subheader("The loss along HF's step and the quadratic model")
            ui.loss_slices(lab.store, int(run_id), "cg-slices", live=live_now)
        else:
            state_view(run_id, m, entry, live_now)
    live()
