"""Every figure of the lab, as functions from data to a Plotly figure (no Streamlit here).

Each function takes plain arrays / DataFrames, so tests call them directly; :func:`figure_data`
turns any of these figures back into a tidy DataFrame for the "download data" buttons.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core.curvature import KIND_INFO

X_AXES = {"step": "updates", "wall_seconds": "wall seconds (optimisation)",
          "n_passes": "forward + backward passes"}
DIVERGING = "RdBu_r"
SHORT_SERIES = 30          # at most this many points: draw markers too
HEATMAP_CLIP_PERCENTILE = 99.0
RHO_DISPLAY = (-1.0, 2.0)  # ρ is clipped to this band for display; hover shows the true value
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf"]


def _layout(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    # the legend's top 0.3 of the plot's height below it: the x-axis title takes ~45 px under
    # the plot, and at -0.2 a legend of three or more rows (the live Train chart in a narrow
    # column, where automargin shrinks the plot to ~225 px) touched it, seen in chromium
    fig.update_layout(title=title, height=height, margin=dict(l=60, r=20, t=50, b=50),
                      hovermode="x unified",
                      legend=dict(orientation="h", y=-0.3, yanchor="top"))
    return fig


def optimizer_colour(name: str) -> str:
    """One colour per optimiser, the same on every chart and page (its place in the registry)."""
    from ..optimizers import NAMES
    return PALETTE[list(NAMES).index(name) % len(PALETTE)] if name in NAMES else PALETTE[-1]


def loss_curves(metrics: pd.DataFrame, labels: dict, x: str = "step", y: str = "loss",
                log_y: bool = True, title: str | None = None,
                colours: dict | None = None) -> go.Figure:
    """Train (solid) and test (dashed) curves of ``y`` ∈ {loss, error} for each run.

    ``metrics`` has ``run_id``, the x column and ``train_<y>``/``test_<y>``; ``labels`` maps
    run ids to legend names; ``colours`` run ids to colours (default: by position).
    """
    if x not in X_AXES:
        raise ValueError(f"x axis {x!r}; allowed: {list(X_AXES)}")
    fig = go.Figure()
    for i, (run_id, label) in enumerate(labels.items()):
        df = metrics[metrics["run_id"] == run_id] if not metrics.empty else metrics
        colour = (colours or {}).get(run_id) or PALETTE[i % len(PALETTE)]
        for split, dash in (("train", "solid"), ("test", "dash")):
            col = f"{split}_{y}"
            if df.empty or col not in df:
                continue
            d = df.dropna(subset=[col])
            # short series get markers, so one or two points are visible at all
            mode = "lines+markers" if len(d) <= SHORT_SERIES else "lines"
            fig.add_trace(go.Scatter(
                x=d[x], y=d[col], mode=mode, name=f"{label} · {split}",
                line=dict(color=colour, dash=dash), legendgroup=str(run_id),
                marker=dict(size=6),
                hovertemplate=f"{label} {split} {y}: %{{y:.5g}}<extra></extra>"))
        for at, length in stage_starts(df, x):
            fig.add_vline(x=at, line=dict(color=colour, dash="dot", width=1),
                          annotation_text=f"T = {length}", annotation_position="top left",
                          annotation_font_color=colour)
    fig.update_xaxes(title=X_AXES[x])
    fig.update_yaxes(title=y, **_y_axis(log_y))
    return _layout(fig, title or f"{y} against {X_AXES[x]}")


def stage_starts(df: pd.DataFrame, x: str) -> list[tuple[float, int]]:
    """(x, T) where a length curriculum's later stages begin in one run's metrics (the x of the
    last point before the stage's first update: where its curve jumps); [] without stages."""
    if df.empty or "stage" not in df or "seq_len" not in df:
        return []
    d = df.dropna(subset=["stage"]).sort_values("step")
    new = d["stage"].diff() > 0
    return [(float(d[x].iloc[i - 1]), int(d["seq_len"].iloc[i])) for i in
            np.flatnonzero(new.to_numpy())]


def _y_axis(log: bool) -> dict:
    """Plain-number tick labels: powers of ten on a log axis (never '5, 2, 10' or SI '1T')."""
    if log:
        return dict(type="log", dtick=1, tickformat=".0e", exponentformat="power")
    return dict(type="linear", exponentformat="power", tickformat="~g")


def _distinct(labels) -> list[str]:
    """Axis categories must differ: repeated labels get their index in front."""
    labels = [str(v) for v in labels]
    return labels if len(set(labels)) == len(labels) else [f"{i}: {v}" for i, v in
                                                            enumerate(labels)]


def matrix_heatmap(mat, title: str, names: list[str] | None = None,
                   blocks: list[tuple[str, int, int]] | None = None,
                   row_names: list[str] | None = None) -> go.Figure:
    """A matrix with a diverging colour scale centred at 0, block boundaries drawn, and hover
    showing the row's and column's parameter names and the value.

    The names are the axes' categories, not a per-cell ``customdata`` of name pairs: for the
    page's 600 × 600 views that array made each figure ~13 MB of JSON and 1.6 s to serialise
    (z alone, sent as binary, is ~5 MB and 0.04 s)."""
    mat = np.asarray(mat, np.float64)
    rows, cols = mat.shape
    col_names = _distinct(names or [str(j) for j in range(cols)])
    r_names = _distinct(row_names or (names if rows == cols and names else
                                      [str(i) for i in range(rows)]))
    # colours saturate at the 99th percentile of |value| so a few large entries do not wash the
    # rest out to white; hover always shows the true value
    finite = np.abs(mat[np.isfinite(mat)])
    bound = float(np.percentile(finite, HEATMAP_CLIP_PERCENTILE)) if finite.size else 1.0
    bound = bound if bound > 0 else (float(finite.max()) if finite.size and finite.max() > 0
                                     else 1.0)
    fig = go.Figure(go.Heatmap(
        z=mat, x=col_names, y=r_names, colorscale=DIVERGING, zmid=0.0, zmin=-bound, zmax=bound,
        hovertemplate="row %{y}<br>column %{x}<br>value %{z:.6g}<extra></extra>",
        colorbar=dict(title=f"clipped at ±{bound:.3g}" if finite.size and
                      bound < finite.max() else "")))
    # one line per boundary between adjacent blocks (a category axis places numbers by index)
    for pos in sorted({p - 0.5 for _, a, b in (blocks or []) for p in (a, b)}):
        if 0 < pos < cols - 0.5:
            fig.add_vline(x=pos, line=dict(color="black", width=1))
        if rows == cols and 0 < pos < rows - 0.5:
            fig.add_hline(y=pos, line=dict(color="black", width=1))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    if blocks:                       # block names on the axes, at each block's middle entry
        ticks = dict(tickmode="array", tickvals=[col_names[(a + b - 1) // 2] for _, a, b in blocks],
                     ticktext=[name for name, _, _ in blocks])
        fig.update_xaxes(**ticks)
        if rows == cols:
            fig.update_yaxes(**ticks)
    else:
        fig.update_xaxes(showticklabels=cols <= 40)
        fig.update_yaxes(showticklabels=rows <= 40)
    fig = _layout(fig, title, height=520)
    fig.update_layout(hovermode="closest")
    return fig


def spectrum(eigs: dict[str, np.ndarray], title: str = "Eigen-spectrum") -> go.Figure:
    """Eigenvalues (sorted, largest first) of each named matrix, on a symmetric-log-like axis."""
    fig = go.Figure()
    for i, (name, w) in enumerate(eigs.items()):
        w = np.sort(np.asarray(w, np.float64))[::-1]
        fig.add_trace(go.Scatter(x=np.arange(1, len(w) + 1), y=w, mode="markers+lines",
                                 name=name, marker=dict(color=PALETTE[i % len(PALETTE)]),
                                 hovertemplate=f"{name} λ_%{{x}} = %{{y:.6g}}<extra></extra>"))
    fig.add_hline(y=0, line=dict(color="grey", dash="dot"))
    fig.update_xaxes(title="index (largest first)")
    fig.update_yaxes(title="eigenvalue")
    fig = _layout(fig, title)
    fig.update_layout(hovermode="closest")
    return fig


def spectrum_over_training(metrics: pd.DataFrame,
                           title: str = "Extremes of the spectrum over training") -> go.Figure:
    """λ_max and λ_min of G and H at each checkpoint (the ``spectrum_*`` metrics of
    :mod:`hflab.core.spectra`) against updates; markers, so a run with one checkpoint still shows."""
    fig = go.Figure()
    symbols = [k.symbol for k in KIND_INFO.values() if k.tracked]
    cols = [(f"spectrum_{s}_{end}", f"λ_{end}({s})") for s in symbols for end in ("max", "min")]
    have = metrics.dropna(subset=[c for c, _ in cols if c in metrics], how="all") \
        if any(c in metrics for c, _ in cols) else metrics.iloc[0:0]
    for i, (col, name) in enumerate(cols):
        if col not in have:
            continue
        # magnitudes on a log axis (the ends span decades; a PSD matrix's floor is rounding
        # around 0), the signed value in the hover
        fig.add_trace(go.Scatter(
            x=have["step"], y=have[col].abs(), customdata=have[col], name=f"|{name}|",
            mode="lines+markers",
            line=dict(color=PALETTE[i // 2], dash="solid" if col.endswith("max") else "dot"),
            hovertemplate=f"{name} at update %{{x}}: %{{customdata:.6g}}<extra></extra>"))
    fig.update_xaxes(title="updates")
    fig.update_yaxes(title="|eigenvalue|", type="log", exponentformat="power")
    return _layout(fig, title)


def cg_trace(residual_norms, quad_values, saved_iters=(), backtrack_index=None,
             title: str = "CG trace") -> go.Figure:
    """Residual norm (log) and quadratic-model value φ per CG iteration, with the saved iterates
    marked and the one CG-backtracking chose highlighted."""
    r = np.asarray(residual_norms, np.float64)
    q = np.asarray(quad_values, np.float64)
    it = np.arange(len(r))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("residual norm ‖r_i‖",
                                                        "quadratic model φ(p_i)"))
    fig.add_trace(go.Scatter(x=it, y=r, mode="lines", name="‖r_i‖",
                             hovertemplate="i=%{x}: %{y:.4g}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=it, y=q, mode="lines", name="φ(p_i)",
                             hovertemplate="i=%{x}: %{y:.6g}<extra></extra>"), row=1, col=2)
    saved = [i for i in saved_iters if 0 <= i < len(q)]
    if saved:
        fig.add_trace(go.Scatter(x=saved, y=q[saved], mode="markers", name="saved iterates",
                                 marker=dict(symbol="circle-open", size=9, color="black")),
                      row=1, col=2)
    if backtrack_index is not None and 0 <= backtrack_index < len(q):
        fig.add_trace(go.Scatter(x=[backtrack_index], y=[q[backtrack_index]], mode="markers",
                                 name=f"chosen by backtracking (i={backtrack_index})",
                                 marker=dict(symbol="star", size=14, color="#d62728")),
                      row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_xaxes(title="CG iteration")
    fig = _layout(fig, title)
    fig.update_layout(hovermode="closest")
    return fig


HF_PANELS = (("damping", "damping λ", True), ("rho", "reduction ratio ρ", False),
             ("cg_iters", "CG iterations", False), ("line_search_rate", "line-search rate", False))


def hf_timelines(metrics: pd.DataFrame, title: str = "HF across updates") -> go.Figure:
    """λ, ρ, CG iterations and line-search rate against the update number."""
    return state_timelines(metrics, HF_PANELS, title)


def state_timelines(metrics: pd.DataFrame, panels, title: str) -> go.Figure:
    """An optimiser's state across updates: one panel per ``(metric, label, log axis)``; the
    ρ panel (if any) is clipped for display and marked at the Levenberg–Marquardt thresholds."""
    panels = list(panels)
    rows = (len(panels) + 1) // 2
    fig = make_subplots(rows=rows, cols=2, subplot_titles=[p[1] for p in panels])
    for k, (col, name, log) in enumerate(panels):
        r, c = divmod(k, 2)
        if col in metrics:
            d = metrics.dropna(subset=[col])
            y = d[col].astype(float)
            true = y
            if col == "rho":
                y = y.where(np.isfinite(y)).clip(*RHO_DISPLAY)
            fig.add_trace(go.Scatter(x=d["step"], y=y, mode="lines+markers", name=name,
                                     marker=dict(size=4), customdata=true,
                                     hovertemplate=f"update %{{x}}: {name} = "
                                                   "%{customdata:.6g}<extra></extra>"),
                          row=r + 1, col=c + 1)
        fig.update_yaxes(row=r + 1, col=c + 1, **_y_axis(log))
    where = [k for k, p in enumerate(panels) if p[0] == "rho"]
    if "rho" in metrics and where:
        r, c = divmod(where[0], 2)
        fig.update_yaxes(range=[RHO_DISPLAY[0] - 0.1, RHO_DISPLAY[1] + 0.1], row=r + 1,
                         col=c + 1)
        for level in (0.25, 0.75):                        # the Levenberg–Marquardt thresholds
            fig.add_hline(y=level, line=dict(color="grey", dash="dot"), row=r + 1, col=c + 1)
    fig.update_xaxes(title="update")
    fig = _layout(fig, title, height=280 * rows)
    fig.update_layout(showlegend=False)
    return fig


def side_by_side(mats: dict[str, np.ndarray], title: str) -> go.Figure:
    """Several same-shape matrices next to each other on one shared diverging scale."""
    names = list(mats)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    bound = max(float(np.nanmax(np.abs(m))) for m in mats.values()) or 1.0
    for i, n in enumerate(names):
        fig.add_trace(go.Heatmap(z=np.asarray(mats[n], np.float64), colorscale=DIVERGING, zmid=0,
                                 zmin=-bound, zmax=bound, showscale=i == len(names) - 1,
                                 hovertemplate=f"{n}<br>(%{{y}}, %{{x}}) = %{{z:.6g}}"
                                               "<extra></extra>"), row=1, col=i + 1)
        fig.update_yaxes(autorange="reversed", row=1, col=i + 1)
    fig = _layout(fig, title, height=380)
    fig.update_layout(hovermode="closest")
    return fig


def figure_data(fig: go.Figure) -> pd.DataFrame:
    """The data behind a figure as a tidy table (trace, x, y[, z]) for download buttons."""
    frames = []
    for i, tr in enumerate(fig.data):
        name = tr.name or f"trace {i}"
        if tr.type == "heatmap":
            z = np.asarray(tr.z, np.float64)
            r, c = np.indices(z.shape)
            frames.append(pd.DataFrame({"trace": name, "row": r.ravel(), "column": c.ravel(),
                                        "value": z.ravel()}))
        else:
            x = np.asarray(tr.x) if tr.x is not None else np.arange(len(tr.y))
            frames.append(pd.DataFrame({"trace": name, "x": x, "y": np.asarray(tr.y)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
