"""CG inspector: every HF update's CG trace, and λ, ρ, CG iterations and line search over time."""
import jax  # noqa: F401
import numpy  # noqa: F401
import streamlit as st

from hflab import optimizers
from hflab.view import plots, ui

st.header("CG inspector")
lab = ui.lab()

runs = lab.store.runs()
with_cg = [n for n, e in optimizers.REGISTRY.items() if e.cg_trace]
traced = runs[runs["optimizer"].isin(with_cg)] if not runs.empty else runs
run_id = ui.run_picker("run", traced, "cg_run", ui.query_run_id())
if run_id is None:
    st.info("No runs with CG traces yet — start an HF run on **Train & compare**.")
else:
    @st.fragment(run_every=1.0 if lab.is_active(int(run_id)) else None)
    def live():
        steps = lab.store.trace_steps(int(run_id))
        if not steps:
            st.caption("waiting for the first update…")
            return
        latest = st.checkbox("always show the newest update", value=True, key="cg_latest")
        step = steps[-1] if latest else st.select_slider("update", steps, value=steps[-1],
                                                         key="cg_step")
        tr = lab.store.cg_traces(int(run_id), [step]).iloc[0]
        m = lab.store.metrics(int(run_id))
        row = m[m["step"] == step].iloc[0]
        c = st.columns(5)
        c[0].metric("CG iterations", int(row["cg_iters"]))
        c[1].metric("stop reason", tr["stop_reason"].replace("_", " "))
        c[2].metric("backtracked to", f"i = {int(tr['backtrack_index'])}")
        c[3].metric("ρ", f"{row['rho']:.3g}" if row["rho"] == row["rho"] else "—")
        c[4].metric("λ", f"{row['damping']:.3g}")
        ui.chart(plots.cg_trace(tr["residual_norms"], tr["quad_values"], tr["saved_iters"],
                                int(tr["backtrack_index"]), f"CG trace of update {step}"),
                 "cg-trace", f"cg-trace-run{run_id}-step{step}")
        ui.chart(plots.hf_timelines(m), "timelines", f"hf-timelines-run{run_id}")
    live()
