"""Small Streamlit helpers shared by the pages (the only library module that imports Streamlit).

The lab is a process-wide resource (``st.cache_resource``): background runs outlive a browser
session, and every page reads the same store.  Text that may hold user input (URL values, run
names, layer strings, error messages quoting them) goes through :func:`plain` so that Streamlit's
markdown never turns it into links, images or formatting.
"""
from __future__ import annotations

import os
import re
import uuid

import jax
import pandas as pd
import streamlit as st

from . import live_chart, plots, worker
from ..config import ConfigError, RunConfig
from .. import ownership
from ..lab import Lab, device_description, get_lab

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:&=])")


_AUTOLINK = re.compile(r"(?i)(://|www\\?\.|@)")


def plain(text) -> str:
    """``text`` with every markdown / HTML-significant character escaped, and a zero-width space
    in ``://``, ``www.`` and ``@`` so that GitHub-flavoured markdown's autolinks cannot form."""
    escaped = _MARKDOWN.sub(r"\\\1", str(text))
    return _AUTOLINK.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], escaped)


def error(text):
    st.error(plain(text))


def warning(text):
    st.warning(plain(text))


def plain_caption(text):
    st.caption(plain(text))


@st.cache_resource
def lab() -> Lab:
    return get_lab()


def owner() -> str:
    """This browser session's owner token (:mod:`hflab.ownership`): one per tab, kept in the
    session's state — a reloaded tab is a new session and takes its earlier runs over."""
    if "lab_owner" not in st.session_state:
        st.session_state.lab_owner = ownership.session_owner(uuid.uuid4().hex[:12])
    return st.session_state.lab_owner


def device_badge(devices_spec: str | None = None):
    """Sidebar badge: the device kind and count, and the mesh a run with ``devices_spec`` uses."""
    devices = jax.devices()
    d = devices[0]
    name = "CPU" if d.platform == "cpu" else d.device_kind
    lines = [f"Device · {name} × {len(devices)} · JAX {jax.__version__}"]
    if devices_spec is not None:
        try:
            lines.append(f"Runs use · {device_description(RunConfig(devices=devices_spec))}")
        except (ConfigError, ValueError) as e:
            lines.append(f"Runs use · invalid devices setting ({e})")
    st.sidebar.caption("  \n".join(plain(line) for line in lines))


# the appending chart (hflab.view.live_chart), drawn in the page's DOM like Streamlit's own
_LIVE_CHART = st.components.v2.component("hflab_live_chart", html=live_chart.HTML,
                                         js=live_chart.JS, isolate_styles=False)


@st.cache_resource
def _live_charts_served() -> bool:
    """Whether the server can serve plotly.js for the appending charts (static serving on and
    the bundle in place); when not, live charts are Streamlit's own."""
    return bool(st.get_option("server.enableStaticServing")) and live_chart.serve_plotly()


def chart(fig, key: str, filename: str, version=None, live: bool = False):
    """A Plotly chart with a 'download data' button behind it.

    ``fig`` is a figure, or a function building one and ``version`` what the figure is drawn
    from (a run, its newest checkpoint, a count of rows): the figure is built again only when the
    version changes.  A page that follows a live run redraws every element on every refresh (a
    Streamlit rerun keeps nothing of the last one), and building the figures was most of its
    time — two thirds of a Curvature-page refresh, profiled — while what they show changes
    only at each new view or checkpoint.  The last figure of each chart is kept in the session.

    ``live``: a chart whose series grow while runs train is drawn by the appending component
    (:mod:`hflab.view.live_chart`), which adds the new points to the drawn graph instead of
    replacing it — the reader's zoom survives, and the browser draws only what is new."""
    memo = st.session_state.setdefault("_figures", {})
    if callable(fig) and version is None:
        fig = fig()
    elif callable(fig):
        if key not in memo or memo[key][0] != version:
            memo[key] = (version, fig())
        fig = memo[key][1]
    if live and _live_charts_served():
        # the JSON is made once per figure, not on every refresh that draws the same one
        if memo.get(f"{key}/json", (None,))[0] is not fig:
            memo[f"{key}/json"] = (fig, live_chart.payload(fig))
        _LIVE_CHART(data=memo[f"{key}/json"][1], key=key, width="stretch")
    else:
        st.plotly_chart(fig, key=key, width="stretch")
    # the CSV is made when the button is clicked, not on every rerun: a 600 × 600 heatmap's
    # table is 13 MB and 0.75 s, and a live page reruns every second or two
    st.download_button("download data (CSV)",
                       lambda: plots.figure_data(fig).to_csv(index=False).encode(),
                       file_name=f"{filename}.csv", mime="text/csv", key=f"dl-{key}",
                       on_click="ignore")


def fingerprint(*arrays) -> tuple:
    """What identifies the data of a figure for :func:`chart`'s ``version``: shapes and a short
    hash of the bytes (~3 ms for a 600 × 600 matrix, against ~60 ms to build its heatmap)."""
    import hashlib
    import numpy as np
    return tuple((np.shape(a), hashlib.blake2b(np.ascontiguousarray(a).tobytes(),
                                               digest_size=8).hexdigest()) for a in arrays)


def rows_version(df: pd.DataFrame) -> tuple:
    """A live table's version for :func:`chart`: its length and newest step."""
    return (len(df), None if df.empty or "step" not in df else int(df["step"].max()))


def runs_of(store, ids) -> pd.DataFrame:
    """The runs-table rows of ``ids`` that still exist (another session may have deleted one),
    read one by one: a live view does not re-read the whole history every refresh."""
    rows = []
    for i in ids:
        try:
            rows.append(store.get_run(int(i)))
        except KeyError:
            pass
    return pd.DataFrame(rows, columns=None if rows else ["id", "name", "task", "optimizer",
                                                          "status", "device"])


def live_metrics(store, runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """The metrics of ``runs`` (rows of the runs table) for a view that refreshes while they
    train, read incrementally: the rows read before stay in the session's state and a refresh
    fetches only the rows past each run's newest step — its cost follows the new rows, not the
    runs' whole history.  A change of the runs or of a status (a resume rewrites the rows past
    its checkpoint) reads everything again."""
    ids = tuple(int(i) for i in runs["id"])
    version = (ids, tuple(runs["status"]))
    cached = st.session_state.get(key)
    if cached is None or cached[0] != version:
        df = store.metrics(list(ids))
    else:
        old = cached[1]
        newest = old.groupby("run_id")["step"].max().to_dict() if len(old) else {}
        new = store.metrics(list(ids), after=newest)
        df = old if new.empty else pd.concat([old, new], ignore_index=True).sort_values(
            ["run_id", "step"], kind="stable", ignore_index=True)
    st.session_state[key] = (version, df)
    return df


def refresh_seconds(lab, base: float) -> float:
    """A live view's refresh period, longer when the machine is busy: ``base`` while the lab
    trains no more comparisons than it admits at once, then in proportion to the queue (every
    refresh of every open page competes with training for the same cores)."""
    capacity = lab.scheduler.limit or os.cpu_count() or 1       # no limit: the cores
    busy = len(lab.scheduler.running()) + len(lab.scheduler.waiting())
    return base * min(4.0, max(1.0, busy / capacity))


def live_refresh(lab, group, base: float) -> tuple[str, float | None]:
    """How often a session's live view of its own comparison ``group`` refreshes, and why:
    ``("idle", None)`` when none of its runs is active (nothing changes until the next Start,
    which reruns the page anyway); ``("waiting", …)`` while the comparison waits in the
    scheduler's queue — its place changes only when another comparison ends, so it refreshes at
    :func:`refresh_seconds`'s load-scaled period; ``("active", base)`` once admitted.  Only the
    comparisons the scheduler admits refresh fast, so the pages' cost grows with the limit, not
    with the number of sessions, and an admitted run's first point is drawn about ``base``
    seconds after it is stored."""
    admitted = [lab.admitted(int(i)) for i in group]
    if all(a is None for a in admitted):
        return "idle", None
    if any(admitted):
        return "active", base
    return "waiting", refresh_seconds(lab, base)


def run_label(row) -> str:
    name = row.get("name") or f"{row['task']} · {row['optimizer']}"
    return f"#{row['id']} {name} ({row['status']})"


def run_picker(label: str, runs: pd.DataFrame, key: str, default_id: int | None = None):
    """A selectbox over runs (newest first); returns the chosen run id or None."""
    if runs.empty:
        return None
    runs = runs.sort_values("id", ascending=False)
    ids = list(runs["id"])
    labels = {int(r["id"]): run_label(r) for _, r in runs.iterrows()}
    index = ids.index(default_id) if default_id in ids else 0
    return st.selectbox(label, ids, index=index, format_func=lambda i: labels[int(i)], key=key)


def curvature_over_training(store, run_id: int, config, n_params: int,
                            metrics: pd.DataFrame | None = None):
    """The curvature instrument's over-training views of a run (stored per checkpoint);
    ``metrics``: the run's metrics when the page has read them (a live page reads only the new
    rows, :func:`live_metrics`)."""
    from . import instrument
    profiles = store.spectra(run_id)
    if not profiles:
        plain_caption("No curvature profiles stored for this run yet (they are taken at update 0 "
                      "and every checkpoint; checkpoint_every = 0 keeps only the end).")
        return
    metrics = store.metrics(run_id) if metrics is None else metrics
    first = profiles[-1][1]
    plain_caption(f"{len(profiles)} checkpoints · on the first {first['cases']} training cases · "
                  f"density by SLQ ({first['probes']} probes × {first['steps']} Lanczos steps), "
                  "traces by Hutchinson, block λ_max by Lanczos — computed between updates, "
                  "never inside a timed update")
    symbols = list(first["kinds"])
    profiled = (run_id, len(profiles), profiles[-1][0])      # a new checkpoint's profile
    rows = (run_id, *rows_version(metrics))
    tabs = st.tabs([f"density of {s}" for s in symbols] +
                   ["top eigenvalue", "HF's λ and G", "per block"])
    for tab, s in zip(tabs, symbols):
        with tab:
            chart(lambda: instrument.density_heatmap(profiles, s, f"spectral density of {s} "
                                                     "over training"),
                  f"density-{s}", f"density-{s}-{run_id}", version=profiled)
    with tabs[len(symbols)]:
        line = instrument.stability_threshold(config.optimizer, config.settings)
        chart(lambda: instrument.top_eigenvalue_chart(metrics, line), "top-eig",
              f"top-eig-{run_id}", version=rows)
        plain_caption("λ_max on the tracking batch (the first training cases); the edge of "
                      "stability concerns the full-batch Hessian of full-batch descent"
                      + ("" if line else " — the 2/η line is drawn for SGD and momentum runs"))
    with tabs[len(symbols) + 1]:
        chart(lambda: instrument.damping_chart(metrics, profiles, n_params), "damping-g",
              f"damping-g-{run_id}", version=(*rows, *profiled))
    with tabs[len(symbols) + 2]:
        s = st.radio("matrix", symbols, horizontal=True, key=f"blocks-{run_id}")
        chart(lambda: instrument.block_chart(profiles, s, f"{s} per weight block"), "blocks",
              f"blocks-{s}-{run_id}", version=(s, *profiled))


def view_worker() -> worker.ViewWorker:
    """The server's background view process (one per store, shared by every session)."""
    return worker.for_home(lab().store.home)


def background_view(job: str, run_id: int, step: int, *options, live: bool, label: str,
                    stand_in: bool = True):
    """(step shown, value) of ``job``'s view of the run's checkpoint ``step``, computed off the
    training path (:mod:`hflab.view.worker`), or None with a message when nothing can be shown.

    A page that follows a live run never waits: it asks for ``step``'s view and shows it on a
    later refresh, meanwhile (``stand_in``) the newest view of the run that is ready.  Any other
    page waits for its view behind a spinner."""
    views = view_worker()
    if live:
        state, value = views.get(job, run_id, step, *options)
        if state == "pending":
            older = views.ready(job, run_id, *options) if stand_in else None
            if older is None:
                st.info(f"Computing {label} of update {step} in the background view process "
                        "(lowest priority, off the training path)…")
                return None
            plain_caption(f"{label} of update {step} is being computed in the background; "
                          f"showing update {older[0]} meanwhile")
            return older
    else:
        with st.spinner(f"computing {label}…"):
            state, value = views.wait(job, run_id, step, *options)
        if state == "pending":
            error(f"{label} of update {step} is still being computed — open the page again "
                  "in a little while")
            return None
    if state == "error":
        error(value)
        return None
    return step, value


def loss_slices(store, run_id: int, key: str, newest: int | None = None, live: bool = False):
    """Loss slices of one of the run's kept checkpoints (HF: along its step with q(αp)); a live
    view passes the checkpoint it follows as ``newest`` (later ones wait for its next view)."""
    from . import instrument
    steps = [0] + [s for s in store.checkpoint_steps(run_id) if s and
                   (newest is None or s <= newest)]
    c1, c2, c3 = st.columns(3)
    step = c1.selectbox("checkpoint (update)", steps, index=len(steps) - 1, key=f"{key}-step")
    k = c2.number_input("Hessian eigenvectors", 0, 4, 2, key=f"{key}-k")
    cases = c3.number_input("cases", 1, 512, 64, key=f"{key}-cases")
    shown = background_view("loss_slices", int(run_id), int(step), int(k), int(cases),
                            live=live, label="the loss slices", stand_in=step == steps[-1])
    if shown is None:
        return
    step, data = shown
    view = (run_id, step, int(k), int(cases))            # one view per run, update and options
    chart(lambda: instrument.slice_chart(data, f"loss slices at update {step} "
                                         f"({data['n_cases']} cases)"),
          f"{key}-slices", f"slices-{run_id}-{step}", version=view)
    if "step" in data:
        s = data["step"]
        plain_caption(f"HF's step from this checkpoint (λ = {s['damping']:.3g}, its warm start; "
                      f"this batch as gradient and curvature batch): ρ = {s['rho']:.3g}, the "
                      "ratio of the two curves' values at α = 1")
    if "plane" in data:
        chart(lambda: instrument.plane_chart(data, "the loss over the plane of the first two "
                                             "directions"),
              f"{key}-plane", f"plane-{run_id}-{step}", version=view)


def query_run_id() -> int | None:
    try:
        return int(st.query_params.get("run"))
    except (TypeError, ValueError):
        return None


__all__ = ["lab", "device_badge", "chart", "run_picker", "query_run_id", "device_description",
           "plain", "error", "warning"]
