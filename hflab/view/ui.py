"""Small Streamlit helpers shared by the pages (the only library module that imports Streamlit).

The lab is a process-wide resource (``st.cache_resource``): background runs outlive a browser
session, and every page reads the same store.  Text that may hold user input (URL values, run
names, layer strings, error messages quoting them) goes through :func:`plain` so that Streamlit's
markdown never turns it into links, images or formatting.
"""
from __future__ import annotations

import re

import jax
import pandas as pd
import streamlit as st

from . import plots
from ..config import ConfigError, RunConfig
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


def chart(fig, key: str, filename: str):
    """A Plotly chart with a 'download data' button behind it."""
    st.plotly_chart(fig, key=key, width="stretch")
    data = plots.figure_data(fig)
    st.download_button("download data (CSV)", data.to_csv(index=False).encode(),
                       file_name=f"{filename}.csv", mime="text/csv", key=f"dl-{key}")


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


def query_run_id() -> int | None:
    try:
        return int(st.query_params.get("run"))
    except (TypeError, ValueError):
        return None


__all__ = ["lab", "device_badge", "chart", "run_picker", "query_run_id", "device_description",
           "plain", "error", "warning"]
