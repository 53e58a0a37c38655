"""Live charts that append points: the browser side of ``ui.chart(..., live=True)``.

Why written by hand: Streamlit's ``st.plotly_chart`` replaces the chart's element whenever its
figure changes (measured in chromium: a new plot on every refresh of a live page, and with it the
reader's zoom and hover), and Streamlit has no message that appends to a drawn chart.  This
module is a small ``st.components.v2`` component (drawn in the page's own DOM, no iframe) that
keeps one Plotly graph per chart and, when a refresh only adds points at the ends of the same
traces, calls ``Plotly.extendTraces`` with the new points alone; any other change (a trace
added, a style or the layout changed, a series that shrank or whose last point moved, as after a
resume) redraws it in place with ``Plotly.react``.  ``layout.uirevision`` keeps the reader's
zoom and pan across both.

plotly.js is the copy the ``plotly`` package ships, served by the lab's own server
(``server.enableStaticServing``, the ``static/`` folder beside ``app.py``): no page makes an
outside request.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

PLOTLY_FILE = "plotly.min.js"
# the static folder Streamlit serves at app/static/ when server.enableStaticServing is on
STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

HTML = '<div class="hflab-live-chart"></div>'

JS = """
const SOURCE = "app/static/%(plotly)s";

function plotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!window.__hflabPlotly) {
    window.__hflabPlotly = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = new URL(SOURCE, document.baseURI).href;
      s.onload = () => resolve(window.Plotly);
      s.onerror = () => { window.__hflabPlotly = null; reject(new Error("plotly.js")); };
      document.head.appendChild(s);
    });
  }
  return window.__hflabPlotly;
}

// a trace's per-point arrays: what an append extends (hover data travels with its points)
const POINTS = ["x", "y", "customdata", "text", "hovertext"];

function pointKeys(trace) {
  const n = (trace.x || []).length;
  return POINTS.filter((k) => Array.isArray(trace[k]) && trace[k].length === n);
}

// everything about a trace but its points: what must not change for an append
function style(trace) {
  const rest = { ...trace };
  for (const k of pointKeys(trace)) delete rest[k];
  return JSON.stringify(rest);
}

function same(a, b) { return a === b || (a !== a && b !== b); }   // NaN equals NaN here

// the new points, grouped by the arrays they carry (one extendTraces call per group), or null
// when the figure is not the last one plus points at the ends of its traces
function appended(last, fig, now) {
  if (!last || last.layout !== now.layout || last.traces.length !== now.traces.length)
    return null;
  const groups = new Map();
  for (let i = 0; i < fig.data.length; i++) {
    const t = fig.data[i], was = last.traces[i], is = now.traces[i];
    const keys = is.keys.split(",");
    if (!keys.includes("x") || !keys.includes("y")) return null;     // not a series of points
    if (was.style !== is.style || was.keys !== is.keys || is.n < was.n) return null;
    if (was.n > 0 && !(same(t.x[was.n - 1], was.lastX) && same(t.y[was.n - 1], was.lastY)))
      return null;
    if (is.n === was.n) continue;
    if (!groups.has(is.keys)) groups.set(is.keys, { idx: [], update: {} });
    const g = groups.get(is.keys);
    g.idx.push(i);
    for (const k of keys) (g.update[k] = g.update[k] || []).push(t[k].slice(was.n));
  }
  return [...groups.values()];
}

function remember(fig) {
  return {
    layout: JSON.stringify(fig.layout),
    traces: fig.data.map((t) => {
      const x = t.x || [], y = t.y || [];
      return { style: style(t), keys: pointKeys(t).join(","), n: x.length,
               lastX: x[x.length - 1], lastY: y[y.length - 1] };
    }),
  };
}

export default function (component) {
  const { parentElement, data } = component;
  const fig = typeof data === "string" ? JSON.parse(data) : data;
  const root = parentElement.querySelector(".hflab-live-chart") || parentElement;
  fig.layout = { ...fig.layout, uirevision: "keep" };
  // summarised before drawing: Plotly writes into the objects it draws (ranges, uids)
  const drawn = remember(fig);
  plotly().then((Plotly) => {
    const add = appended(root.__hflabLast, fig, drawn);
    if (add) {
      for (const g of add) Plotly.extendTraces(root, g.update, g.idx);
      root.__hflabAppends = (root.__hflabAppends || 0) + 1;
    } else {
      Plotly.react(root, fig.data, fig.layout, { displaylogo: false, responsive: true });
      root.__hflabRedraws = (root.__hflabRedraws || 0) + 1;
    }
    root.__hflabLast = drawn;
  }).catch(() => {
    root.textContent = "The chart library did not load: reload the page.";
  });
}
""" % {"plotly": PLOTLY_FILE}


def plotly_source() -> Path:
    """The plotly.js bundle of the installed ``plotly`` package (the version the figures are
    written for)."""
    import plotly
    return Path(plotly.__file__).resolve().parent / "package_data" / PLOTLY_FILE


def serve_plotly(static_dir: Path = STATIC_DIR) -> bool:
    """Put the installed plotly.js in the served static folder (once per version; written to a
    temporary name and renamed, so a page never loads half a file).  False where it cannot be
    written: the live charts then fall back to Streamlit's own."""
    source, target = plotly_source(), static_dir / PLOTLY_FILE
    try:
        if target.is_file() and target.stat().st_size == source.stat().st_size:
            return True
        static_dir.mkdir(parents=True, exist_ok=True)
        tmp = static_dir / f".{PLOTLY_FILE}.{os.getpid()}"
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return True
    except OSError:
        return False


# a trace's per-point arrays, as the component's POINTS
POINT_KEYS = ("x", "y", "customdata", "text", "hovertext")


def _as_list(value):
    """A typed array (Plotly's ``{"dtype", "bdata"}``) or an ndarray as a JSON list."""
    import base64

    import numpy as np
    if isinstance(value, dict) and "bdata" in value and "dtype" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        if shape:
            arr = arr.reshape([int(n) for n in str(shape).split(",")])
        return arr.tolist()
    return value.tolist() if isinstance(value, np.ndarray) else value


def payload(fig) -> str:
    """The figure as the component reads it: Plotly's JSON (NaN as null, dates as ISO text),
    the traces' per-point arrays as plain lists (the component finds new points in them); other
    arrays — a heatmap's z — stay Plotly's typed arrays, which plotly.js reads as they are."""
    from plotly.io.json import to_json_plotly
    spec = fig.to_plotly_json()
    spec["data"] = [{k: _as_list(v) if k in POINT_KEYS else v for k, v in trace.items()}
                    for trace in spec.get("data", [])]
    return to_json_plotly(spec)
