"""Train & compare: configure a task, a model and optimisers; watch them train live."""
import jax  # noqa: F401  (numeric imports before worker threads)
import numpy  # noqa: F401
import streamlit as st

from hflab import plots, ui
from hflab.experiment import ConfigError
from hflab.formstate import (OPTIMIZER_CHOICES, configs_from_form, form_from_query,
                             query_from_form, task_defaults)
from hflab.tasks import SPECS, TASK_NAMES

st.header("Train & compare")
lab = ui.lab()

# ---- form state: URL first (so a copied URL reproduces the set-up), then the widgets
if "form" not in st.session_state:
    form, warnings = form_from_query({k: st.query_params[k] for k in st.query_params})
    st.session_state.form = form
    st.session_state.url_warnings = warnings
    for k, v in form.items():
        st.session_state[f"f_{k}"] = v
for w in st.session_state.get("url_warnings", []):
    st.warning(w)


def on_task_change():
    for k, v in task_defaults(st.session_state.f_task).items():
        if k not in ("task", "optimizers", "seed"):
            st.session_state[f"f_{k}"] = v


with st.sidebar:
    st.subheader("Task")
    task = st.selectbox("preset", TASK_NAMES, key="f_task", on_change=on_task_change)
    spec = SPECS[task]
    st.caption(spec.description)
    st.subheader("Model")
    if spec.kind == "mlp":
        st.text_input("hidden layers (e.g. 400-200-100)" + (" — mirrored" if spec.mirrored else ""),
                      key="f_layers")
    else:
        st.text_input("hidden units", key="f_layers")
        st.number_input("sequence length T", min_value=1, max_value=10000, step=1, key="f_seq_len")
    st.selectbox("hidden activation", ["tanh", "logistic", "relu", "linear"], key="f_activation")
    st.selectbox("output / loss pair", ["squared", "logistic", "softmax"], key="f_loss",
                 help="linear + squared error, logistic + cross-entropy, softmax + cross-entropy")
    st.selectbox("initialisation", ["sparse", "gaussian", "glorot"], key="f_init")
    st.subheader("Optimisers (same data and seed)")
    st.multiselect("optimisers", OPTIMIZER_CHOICES, key="f_optimizers")
    st.number_input("updates", min_value=1, max_value=1_000_000, step=1, key="f_steps")
    st.number_input("seed", min_value=0, max_value=2**31 - 1, step=1, key="f_seed")
    with st.expander("Hessian-free settings"):
        st.selectbox("curvature", ["gauss_newton", "hessian", "fisher"], key="f_curvature")
        st.number_input("initial damping λ", min_value=0.0, format="%.4g", key="f_damping")
        st.number_input("structural damping μ (RNN)", min_value=0.0, format="%.4g",
                        key="f_structural_damping")
        st.number_input("max CG iterations", min_value=1, max_value=5000, key="f_max_cg_iters")
        st.number_input("curvature chunks", min_value=1, max_value=10000, key="f_n_chunks")
        st.number_input("weight cost", min_value=0.0, format="%.4g", key="f_weight_cost")
        st.checkbox("diagonal preconditioner", key="f_preconditioner")
        st.checkbox("CG backtracking", key="f_backtracking")
        st.checkbox("Armijo line search", key="f_line_search")
    with st.expander("First-order learning rates"):
        st.number_input("SGD", min_value=0.0, format="%.4g", key="f_lr_sgd")
        st.number_input("Nesterov momentum", min_value=0.0, format="%.4g", key="f_lr_momentum")
        st.number_input("Adam", min_value=0.0, format="%.4g", key="f_lr_adam")
    with st.expander("Numerics and devices"):
        st.selectbox("dtype", ["float32", "float64"], key="f_dtype")
        st.text_input("devices (1, N, all, cpu)", key="f_devices")

form = {k: st.session_state.get(f"f_{k}", v) for k, v in task_defaults(task).items()}
ui.device_badge(form["devices"])
form["seq_len"] = int(form["seq_len"] or 0)
st.session_state.form = form
st.query_params.from_dict(query_from_form(form))

c1, c2, c3 = st.columns([1, 1, 1])
start = c1.button("▶ Start", type="primary", key="start")
stop = c2.button("■ Stop", key="stop")
resume = c3.button("↻ Resume", key="resume")

if start:
    try:
        configs = configs_from_form(form)
    except ConfigError as e:
        st.error(f"Cannot start: {e}")
    else:
        st.session_state.group = lab.start_many(configs)
group = st.session_state.get("group", [])
if stop:
    for run_id in group:
        lab.stop(run_id)
if resume:
    for run_id in group:
        if not lab.is_active(run_id) and lab.store.get_run(run_id)["status"] in (
                "stopped", "interrupted"):
            lab.resume(run_id)

x_axis = st.radio("x axis", list(plots.X_AXES), horizontal=True, key="x_axis",
                  format_func=lambda k: plots.X_AXES[k])
log_y = st.checkbox("log y", value=True, key="log_y")


@st.fragment(run_every=1.0)
def live():
    group = st.session_state.get("group", [])
    if not group:
        st.info("Choose a task and optimisers in the sidebar, then press **Start**.")
        return
    runs = lab.store.runs()
    runs = runs[runs["id"].isin(group)]
    labels = {int(r["id"]): r["name"] or f"#{r['id']}" for _, r in runs.iterrows()}
    cols = st.columns(max(len(group), 1))
    for col, (_, r) in zip(cols, runs.iterrows()):
        p = lab.progress(int(r["id"]))
        col.progress(p["fraction"], text=f"#{r['id']} {r['optimizer']}: {p['status']} "
                                         f"({p['steps_done']}/{p['steps']}) · {r['device']}")
        if p["status"] in ("failed", "diverged"):
            col.error(p["error"].splitlines()[0] if p["error"] else p["status"])
    metrics = lab.store.metrics(list(labels))
    if metrics.empty:
        st.caption("compiling…")
        return
    left, right = st.columns(2)
    with left:
        ui.chart(plots.loss_curves(metrics, labels, x=x_axis, y="loss", log_y=log_y),
                 "loss", "loss-curves")
    with right:
        ui.chart(plots.loss_curves(metrics, labels, x=x_axis, y="error", log_y=log_y),
                 "error", "error-curves")


live()
