"""Runs: the history from the store — filter, overlay, export, delete, open elsewhere."""

import tempfile
from pathlib import Path

import jax  # noqa: F401
import numpy  # noqa: F401
import streamlit as st

from hflab import bundles, ownership
from hflab.view import plots, ui
from hflab.export_model import export_model_bytes

st.header("Runs")
lab = ui.lab()
uploaded = st.file_uploader("import an exported bundle", type=["zip"], key="runs_import")
# an upload stays in the widget across reruns: import each file once (by its upload id)
if uploaded is not None and st.session_state.get("imported_upload") != uploaded.file_id:
    st.session_state.imported_upload = uploaded.file_id
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "bundle.zip"
        p.write_bytes(uploaded.getvalue())
        try:
            ids = bundles.import_bundle(lab.store, p)
        except bundles.BundleError as e:
            ui.error(e)
        else:
            st.session_state.import_message = f"imported as runs {ids}"
            st.rerun()
if st.session_state.get("import_message"):
    st.success(st.session_state.import_message)
runs = lab.store.runs()
if runs.empty:
    st.info("No runs stored yet — start one on **Train & compare**.")
    st.stop()

c1, c2, c3 = st.columns(3)
tasks = c1.multiselect("task", sorted(runs["task"].unique()), key="runs_task")
opts = c2.multiselect("optimiser", sorted(runs["optimizer"].unique()), key="runs_opt")
statuses = c3.multiselect("status", sorted(runs["status"].unique()), key="runs_status")
view = runs
if tasks:
    view = view[view["task"].isin(tasks)]
if opts:
    view = view[view["optimizer"].isin(opts)]
if statuses:
    view = view[view["status"].isin(statuses)]
final = lab.store.final_metrics()
view = view.merge(final, left_on="id", right_on="run_id", how="left").rename(
    columns={"error": "note", "train_loss": "final train loss",
             "wall_seconds": "optimisation seconds"})
me = ui.owner()
view["origin"] = [ownership.origin_label(o, me) for o in view["owner"]]
cols = ["id", "name", "task", "optimizer", "seed", "status", "origin", "steps_done",
        "final train loss", "optimisation seconds", "device", "note"]
st.dataframe(view[cols].sort_values("id", ascending=False), hide_index=True, key="runs_table")

chosen = st.multiselect("runs to overlay / export / delete", list(view["id"]),
                        default=list(view["id"])[-2:], key="runs_chosen",
                        format_func=lambda i: ui.run_label(runs[runs["id"] == i].iloc[0]))
if chosen:
    metrics = lab.store.metrics(chosen)
    labels = {int(i): ui.run_label(runs[runs["id"] == i].iloc[0]) for i in chosen}
    c1, c2, c3 = st.columns([3, 2, 1])
    x_axis = c1.radio("x axis", list(plots.X_AXES), horizontal=True, key="runs_x",
                      format_func=lambda k: plots.X_AXES[k])
    y_kind = c2.radio("curve", ["loss", "error"], horizontal=True, key="runs_y")
    log_y = c3.checkbox("log y", value=True, key="runs_log")
    if not metrics.empty:
        ui.chart(plots.loss_curves(metrics, labels, x=x_axis, y=y_kind, log_y=log_y),
                 "runs-curves", f"runs-{y_kind}")
    c1, c2 = st.columns(2)
    for col, fmt in ((c1, "csv"), (c2, "parquet")):
        with tempfile.TemporaryDirectory() as tmp:
            path = bundles.export(lab.store, chosen, Path(tmp) / f"hflab-runs.{fmt}.zip", fmt)
            col.download_button(f"download {fmt.upper()} bundle", path.read_bytes(),
                                file_name=path.name, mime="application/zip", key=f"dl-{fmt}")
    # Stop, Resume and Delete act on this session's runs; another's only once taken over
    others = ownership.foreign(lab.store, chosen, me)
    take_over = bool(others) and st.checkbox(
        "take over " + ", ".join(f"run #{i} (started by {ownership.origin_label(o)})"
                                 for i, o in sorted(others.items()))
        + " — this session may then stop, resume or delete them", key="runs_take_over")
    training = [int(i) for i in chosen if lab.is_active(int(i))]
    resumable = [int(i) for i in chosen if lab.resumable(int(i))]
    c1, c2 = st.columns(2)
    if c1.button(f"■ stop {len(training)} of the chosen runs (training)", disabled=not training,
                 key="runs_stop"):
        try:
            ownership.claim(lab.store, training, me, take_over, "stop")
            for i in training:
                lab.stop(i, owner=me)
        except ownership.NotYourRun as e:
            ui.error(e)
        else:
            st.success(f"stopping runs {training}: each ends before its next update")
    if c2.button(f"↻ resume {len(resumable)} of the chosen runs (stopped, interrupted or failed)",
                 disabled=not resumable, key="runs_resume"):
        try:
            started = lab.resume_many(resumable, owner=me, take_over=take_over)
        except ownership.NotYourRun as e:
            ui.error(e)
        else:
            st.success(f"resumed runs {started}: follow them on Curvature, the CG inspector or "
                       "here")
    with st.expander("delete"):
        sure = st.checkbox(f"yes, delete runs {', '.join(map(str, chosen))} and their checkpoints",
                           key="runs_sure")
        if st.button("delete", disabled=not sure, key="runs_delete"):
            try:
                lab.delete(chosen, owner=me, take_over=take_over)
            except ValueError as e:
                ui.error(e)
            else:
                st.success("deleted")
                st.rerun()
    one = int(chosen[0])
    with st.expander(f"export run #{one}'s trained model"):
        ui.plain_caption("model.npz (the newest checkpoint's parameters and the task's test set) "
                         "and evaluate.py, a standalone JAX script that rebuilds the model and "
                         "prints its test loss and error (python evaluate.py).")
        if st.button("prepare the model export", key="model_prepare"):
            try:
                st.session_state.model_zip = (one, export_model_bytes(lab.store, one))
            except (ValueError, KeyError, OSError) as e:
                ui.error(f"cannot export run #{one}: {e}")
        ready = st.session_state.get("model_zip")
        if ready and ready[0] == one:
            st.download_button("download model zip", ready[1], file_name=f"hflab-model-{one}.zip",
                               mime="application/zip", key="dl-model")
    c1, c2 = st.columns(2)
    if c1.button(f"open run #{one} on Curvature", key="open_curv"):
        st.switch_page("pages/curvature.py", query_params={"run": str(one)})
    if c2.button(f"open run #{one} in the CG inspector", key="open_cg"):
        st.switch_page("pages/cg_inspector.py", query_params={"run": str(one)})

