"""Train & compare: configure a task, a model and optimisers; watch them train live."""
import jax  # noqa: F401  (numeric imports before worker threads)
import numpy  # noqa: F401
import streamlit as st

from hflab import datasets, optimizers
from hflab.view import formstate, plots, ui
from hflab.config import ConfigError
from hflab.ownership import NotYourRun
from hflab.tasks import CUSTOM, TASK_NAMES

st.header("Train & compare")
lab = ui.lab()

# ---- form state: one dict owned by the session (st.session_state.form), first read from the URL;
# widgets are re-seeded from it whenever Streamlit dropped their keys (e.g. after another page)
if "form" not in st.session_state:
    form, warnings = formstate.form_from_query({k: st.query_params[k] for k in st.query_params})
    st.session_state.form = form
    st.session_state.url_warnings = warnings
for key, value in st.session_state.form.items():
    if f"f_{key}" not in st.session_state:
        st.session_state[f"f_{key}"] = value
for w in st.session_state.get("url_warnings", []):
    ui.warning(w)


def on_task_change():
    task = st.session_state.f_task
    for k, v in formstate.task_defaults(task, st.session_state.get("f_data", "")).items():
        if k not in ("task", "optimizers", "seed", "data"):
            st.session_state[f"f_{k}"] = v


def data_upload():
    """Task 'custom': a CSV or NPZ file, read and checked whole; stored once per file."""
    upload = st.file_uploader("your data: CSV (header row) or NPZ (x, y, x_test, y_test)",
                              type=["csv", "npz"], key="data_file")
    targets = st.text_input("CSV target columns (names or 0-based indices; empty = autoencoder)",
                            key="data_targets")
    if upload is None or st.session_state.get("data_seen") == (upload.file_id, targets):
        return
    try:
        ds = datasets.read(upload.getvalue(), upload.name, targets)
        st.session_state.f_data = datasets.save(ds, lab.store.home)
    except (datasets.DataError, OSError) as e:
        st.session_state.data_error = str(e)
    else:
        st.session_state.data_error = ""
        # the model defaults follow the data (an autoencoder is mirrored, …); the rest stays
        defaults = formstate.task_defaults(CUSTOM, st.session_state.f_data)
        for k in ("layers", "activation", "loss"):
            st.session_state[f"f_{k}"] = defaults[k]
    # marked as seen only once its outcome is recorded: a rerun that interrupts this one
    # (another widget changed meanwhile) reads the file again instead of losing the message
    st.session_state.data_seen = (upload.file_id, targets)


def widget(key: str, label: str, container=st):
    """The widget a form key's type and choices call for (from the config's field list)."""
    kind, choices = formstate.widget_kind(key)
    help_text = formstate.field_help(key)
    if choices:
        return container.selectbox(label, choices, key=f"f_{key}", help=help_text)
    if kind == "bool":
        return container.checkbox(label, key=f"f_{key}", help=help_text)
    # no min_value: a value out of range is kept and named by the config's check on Start (a
    # widget that only turns red would start with the previous value)
    if kind == "int":
        return container.number_input(label, step=1, key=f"f_{key}", help=help_text)
    if kind == "float":
        return container.number_input(label, format="%.4g", key=f"f_{key}", help=help_text)
    return container.text_input(label, key=f"f_{key}", help=help_text)


with st.sidebar:
    st.subheader("Task")
    task = st.selectbox("preset", TASK_NAMES, key="f_task", on_change=on_task_change)
    if task == CUSTOM:
        data_upload()
        if st.session_state.get("data_error"):
            ui.error(f"data file: {st.session_state.data_error}")
    spec = formstate.spec_of(task, st.session_state.get("f_data", ""))
    ui.plain_caption(spec.description)
    if task in formstate.COMMENTARY:
        st.caption(formstate.COMMENTARY[task])
    st.subheader("Model")
    if spec.kind == "mlp":
        widget("layers", "hidden layers (e.g. 400-200-100)" + (" — mirrored" if spec.mirrored
                                                              else ""))
    else:
        widget("layers", "hidden units")
        curriculum = widget("curriculum", "length curriculum (e.g. 20,50,100; empty = none)")
        widget("seq_len", "sequence length T")
        if str(curriculum).strip():
            st.caption("With a curriculum each stage trains at its own length, moving on once "
                       "its test error reaches the target; T is the last length.")
    widget("activation", "hidden activation")
    widget("loss", "output / loss pair")
    widget("init", "initialisation")
    widget("weight_cost", "weight cost")
    st.subheader("Optimisers (same data and seed)")
    st.multiselect("optimisers", optimizers.NAMES, key="f_optimizers",
                   format_func=lambda n: optimizers.REGISTRY[n].label)
    widget("steps", "updates")
    widget("max_seconds", "time budget per run: seconds of training, compiling left out (0 = "
                          "none)")
    widget("seed", "seed")
    for name, entry in optimizers.REGISTRY.items():
        if not entry.field_names():
            continue
        with st.expander(f"{entry.label} settings"):
            for field in entry.field_names():
                widget(formstate.form_key(name, field), field.replace("_", " "))
    with st.expander("Numerics and devices"):
        widget("dtype", "dtype")
        widget("devices", "devices (1, N, all, cpu)")

defaults = formstate.task_defaults(task)
form = {k: st.session_state.get(f"f_{k}", v) for k, v in defaults.items()}
form["data"] = form["data"] if task == CUSTOM else ""
form["seq_len"] = int(form["seq_len"] or 0)
st.session_state.form = form
st.query_params.from_dict(formstate.query_from_form(form))

c1, c2, c3 = st.columns([1, 1, 1])
# one comparison per session at a time: a double click cannot start two that share the cores
busy = any(lab.is_active(i) for i in st.session_state.get("group", []))
# the click is handled before the button is drawn, so this same run draws Start disabled and the
# new comparison's progress (its place in the queue): no second full run of the page, which a
# loaded server would make the user wait for
if st.session_state.get("start") and not busy:
    try:
        configs = formstate.configs_from_form(form)
    except ConfigError as e:
        ui.error(f"Cannot start: {e}")
    else:
        st.session_state.group = lab.start_many(configs, owner=ui.owner())
        busy = True
st.session_state.busy_shown = busy
c1.button("▶ Start", type="primary", key="start", disabled=busy,
          help="disabled while this session's comparison trains" if busy else None)
stop = c2.button("■ Stop", key="stop")
resume = c3.button("↻ Resume", key="resume")
group = st.session_state.get("group", [])
if stop:
    try:
        for run_id in group:
            lab.stop(run_id, owner=ui.owner())
    except NotYourRun as e:              # taken over on the Runs page by another session
        ui.error(e)
    if any(lab.is_active(i) for i in group):
        st.toast("stopping — each run ends before its next update")
if resume:
    if not group:
        st.info("This browser session has started no comparison: resume any stored run on the "
                "**Runs** page.")
    else:
        try:
            resumed = lab.resume_many(group, owner=ui.owner())
        except NotYourRun as e:
            ui.error(e)
            resumed = None
        if resumed == []:
            st.info("Nothing to resume: this comparison's runs are training or ended on their "
                    "own (finished or diverged).")

x_axis = st.radio("x axis", list(plots.X_AXES), horizontal=True, key="x_axis",
                  format_func=lambda k: plots.X_AXES[k])
log_y = st.checkbox("log y", value=True, key="log_y")


def progress_text(p: dict) -> str:
    """'compiling… 3 s', 'training 40/300 · about 12 s left', or the final status."""
    phase = p["phase"] if p["active"] else p["status"]
    text = f"{phase} {p['steps_done']}/{p['steps']}"
    if p.get("queue_ahead") is not None:           # waiting for the lab's scheduler
        wait = "" if p["queue_wait"] is None else f", about {p['queue_wait']:.0f} s"
        return (f"queued — {p['queue_ahead']} ahead, {p['queue_running']} running (the lab "
                f"trains at most {lab.scheduler.limit} comparisons at once){wait}")
    if p["active"] and p["phase_seconds"] is not None and phase != "training":
        text = f"{phase}… {p['phase_seconds']:.0f} s"
    if not p["active"] and p["status"] == "finished" and "target" in (p["error"] or ""):
        text = f"solved — {p['error']}"
    if p.get("stage"):
        text += f" · {p['stage']}"
    if p["eta"] is not None:
        text += f" · about {p['eta']:.0f} s left"
    return text


# the live view refreshes fast only while this session's own comparison trains (ui.live_refresh)
st.session_state.live_refresh, refresh = ui.live_refresh(lab, group, 1.0)
if busy and refresh is None:     # ended since Start was drawn disabled (a Stop): one more refresh
    refresh = 1.0                # reruns the page (below) to draw it enabled


@st.fragment(run_every=refresh)
def live():
    group = st.session_state.get("group", [])
    if not group:
        st.info("Choose a task and optimisers in the sidebar, then press **Start**.")
        return
    if st.session_state.get("busy_shown") and not any(lab.is_active(i) for i in group):
        st.session_state.busy_shown = False
        st.rerun()                       # the comparison is over: Start is enabled again
    if ui.live_refresh(lab, group, 1.0)[0] != st.session_state.get("live_refresh"):
        st.rerun()                       # admitted (or ended): the page's cadence follows
    runs = ui.runs_of(lab.store, group)
    labels = {int(r["id"]): r["name"] or f"#{r['id']}" for _, r in runs.iterrows()}
    cols = st.columns(max(len(group), 1))
    training = False          # while any run of the comparison trains, its curves append points
    for col, (_, r) in zip(cols, runs.iterrows()):
        p = lab.progress(int(r["id"]))
        training = training or bool(p["active"])
        if p["status"] == "finished" and p["steps_done"] < p["steps"]:
            p["fraction"] = 1.0          # stopped at its target: done, not part-way
        col.progress(p["fraction"], text=ui.plain(
            f"#{r['id']} {r['optimizer']}: {progress_text(p)} · {r['device']}"))
        if p["status"] in ("failed", "diverged"):
            col.error(ui.plain(p["error"].splitlines()[0] if p["error"] else p["status"]))
    metrics = ui.live_metrics(lab.store, runs, "train_metrics")
    if metrics.empty:
        st.caption("preparing data and the model…")
        return
    colours = {int(r["id"]): plots.optimizer_colour(r["optimizer"]) for _, r in runs.iterrows()}
    spec = formstate.spec_of(runs["task"].iloc[0]) if len(runs) else None
    # a squared-error loss's error is the summed squared error: twice the loss, not drawn again
    same = spec is not None and spec.loss == "squared" and spec.metric in ("mse",
                                                                            "reconstruction")
    left, right = st.columns(2)
    drawn = (tuple(labels.items()), x_axis, log_y, len(metrics),
             tuple(metrics.groupby("run_id")["step"].max().items()))
    with left:
        ui.chart(lambda: plots.loss_curves(metrics, labels, x=x_axis, y="loss", log_y=log_y,
                                           colours=colours), "loss", "loss-curves", version=drawn,
                 live=training)
        if same:
            st.caption("The error (squared error summed over outputs) is twice this loss here, "
                       "so it is not drawn again.")
    if not same:
        with right:
            ui.chart(lambda: plots.loss_curves(metrics, labels, x=x_axis, y="error",
                                               log_y=log_y, colours=colours),
                     "error", "error-curves", version=drawn, live=training)


live()
