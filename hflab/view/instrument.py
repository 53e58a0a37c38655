"""The curvature instrument's views, without Streamlit: curvature over training from the stored
per-checkpoint profiles (:meth:`hflab.core.spectra.SpectrumTracker.profile`), and loss slices of a
checkpoint (:mod:`hflab.core.slices`), with HF's quadratic model along its step.

* :func:`density_heatmap` — x: update, y: eigenvalue on a signed log scale
  ``s(λ) = sign(λ)·log₁₀(1 + |λ|/τ)`` (τ six decades below the largest |λ| of the run, so the
  bulk near zero and both tails show at once), colour: log₁₀ of the spectral mass per bin.
* :func:`top_eigenvalue_chart` — λ_max(H) with the edge-of-stability line of the run's
  step size (Cohen et al. 2021: full-batch gradient descent drives λ_max(H) to about 2/η; with
  heavy-ball momentum β the line is (2 + 2β)/η, with Nesterov's (2 + 2β)/((1 + 2β)η)).
* :func:`damping_chart` — HF's λ beside G's spectrum (λ_max, λ_min, trace / n).
* :func:`block_chart` — every weight block's trace and top eigenvalue over training.
* :func:`slice_data` / :func:`slice_chart` / :func:`plane_chart` — the loss along the top
  Hessian eigenvectors, −g and HF's step p (with q(αp)), and over the plane of two of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core import slices
from ..core.curvature import CurvatureOperator
from ..core.hf import HessianFree
from ..core.losses import Batch
from .plots import PALETTE, _layout

DECADES = 6            # the signed log scale's range below the largest |λ|
BINS = 61


# ----------------------------------------------------------------------------- over training
def symlog(x, tau: float):
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.log10(1.0 + np.abs(x) / tau)


def density_matrix(profiles, symbol: str, bins: int = BINS):
    """``(steps, centres, mass, tau)``: the SLQ mass of kind ``symbol`` per signed-log bin
    (``mass[bin, checkpoint]``, each column sums to 1)."""
    rows = [(step, p["kinds"][symbol]) for step, p in profiles if symbol in p.get("kinds", {})]
    if not rows:
        return [], np.zeros(0), np.zeros((0, 0)), 1.0
    nodes = [np.asarray(k["nodes"], np.float64) for _, k in rows]
    top = max(float(np.nanmax(np.abs(n))) if n.size else 0.0 for n in nodes) or 1.0
    tau = top * 10.0 ** -DECADES
    edge = float(symlog(top, tau)) * 1.02
    edges = np.linspace(-edge, edge, bins + 1)
    mass = np.zeros((bins, len(rows)))
    for j, (n, (_, k)) in enumerate(zip(nodes, rows)):
        w = np.asarray(k["weights"], np.float64)
        ok = np.isfinite(n) & np.isfinite(w)
        hist, _ = np.histogram(symlog(n[ok], tau), bins=edges, weights=w[ok])
        mass[:, j] = hist / max(n.shape[0], 1)
    return [s for s, _ in rows], 0.5 * (edges[1:] + edges[:-1]), mass, tau


def _symlog_ticks(tau: float, edge: float):
    vals, text = [0.0], ["0"]
    for e in range(int(np.floor(np.log10(tau))) + 1, int(np.ceil(np.log10(tau) + DECADES)) + 1):
        s = float(symlog(10.0 ** e, tau))
        if s <= edge:
            vals += [s, -s]
            text += [f"1e{e}", f"−1e{e}"]
    return vals, text


def density_heatmap(profiles, symbol: str, title: str) -> go.Figure:
    steps, centres, mass, tau = density_matrix(profiles, symbol)
    fig = go.Figure()
    if len(steps):
        z = np.log10(np.where(mass > 0, mass, np.nan))
        fig.add_trace(go.Heatmap(x=steps, y=centres, z=z, colorscale="Viridis",
                                 colorbar=dict(title="log₁₀ mass"),
                                 hovertemplate="update %{x}<br>s(λ) %{y:.2f}<br>log₁₀ mass "
                                               "%{z:.2f}<extra></extra>"))
        vals, text = _symlog_ticks(tau, float(np.max(np.abs(centres))))
        fig.update_yaxes(tickvals=vals, ticktext=text)
    fig.update_xaxes(title="update")
    fig.update_yaxes(title=f"eigenvalue (signed log, τ = {tau:.2g})")
    return _layout(fig, title, height=460)


def stability_threshold(optimizer: str, settings) -> tuple[float, str] | None:
    """The edge-of-stability line for a gradient-descent run, or None for other optimisers."""
    lr = getattr(settings, "learning_rate", None)
    if optimizer == "sgd" and lr:
        return 2.0 / lr, "2/η"
    if optimizer == "momentum" and lr:
        b = settings.momentum
        return (2.0 + 2.0 * b) / ((1.0 + 2.0 * b) * lr), "(2 + 2β)/((1 + 2β)η), Nesterov"
    return None


def top_eigenvalue_chart(metrics: pd.DataFrame, threshold=None,
                         title: str = "top Hessian eigenvalue over training") -> go.Figure:
    fig = go.Figure()
    for col, name, dash in (("spectrum_H_max", "λ_max(H)", "solid"),
                            ("spectrum_G_max", "λ_max(G)", "dot")):
        if col in metrics:
            d = metrics.dropna(subset=[col])
            fig.add_trace(go.Scatter(x=d["step"], y=d[col], mode="lines+markers", name=name,
                                     line=dict(dash=dash)))
    if threshold is not None:
        fig.add_hline(y=threshold[0], line=dict(color="#d62728", dash="dash"),
                      annotation_text=f"{threshold[1]} = {threshold[0]:.4g}")
    fig.update_xaxes(title="update")
    fig.update_yaxes(title="eigenvalue", type="log")
    return _layout(fig, title, height=380)


def damping_chart(metrics: pd.DataFrame, profiles, n_params: int,
                  title: str = "HF's λ beside G's spectrum") -> go.Figure:
    fig = go.Figure()
    series = [("damping", "λ (the damping each update used)", "#d62728")]
    series += [("spectrum_G_max", "λ_max(G)", PALETTE[0]), ("spectrum_G_min", "|λ_min(G)|",
                                                            PALETTE[2])]
    for col, name, colour in series:
        if col in metrics:
            d = metrics.dropna(subset=[col])
            fig.add_trace(go.Scatter(x=d["step"], y=np.abs(d[col]), name=name, mode="lines",
                                     line=dict(color=colour)))
    mean = [(s, p["kinds"]["G"]["trace"] / n_params) for s, p in profiles
            if "G" in p.get("kinds", {}) and p["kinds"]["G"]["trace"] is not None]
    if mean:
        fig.add_trace(go.Scatter(x=[s for s, _ in mean], y=[v for _, v in mean],
                                 name="tr(G)/n (mean eigenvalue)", mode="lines+markers",
                                 line=dict(color=PALETTE[3], dash="dot")))
    fig.update_xaxes(title="update")
    fig.update_yaxes(title="value", type="log")
    return _layout(fig, title, height=380)


def block_frame(profiles, symbol: str) -> pd.DataFrame:
    rows = [{"step": step, "block": b[0], "size": b[1], "top": b[2], "trace": b[3],
             "trace_error": b[4]} for step, p in profiles
            for b in p.get("kinds", {}).get(symbol, {}).get("blocks", [])]
    return pd.DataFrame(rows, columns=["step", "block", "size", "top", "trace", "trace_error"])


def block_chart(profiles, symbol: str, title: str) -> go.Figure:
    df = block_frame(profiles, symbol)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("trace per block (Hutchinson)",
                                                        "top eigenvalue per block (Lanczos)"))
    for i, (name, d) in enumerate(df.groupby("block", sort=False)):
        colour = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=d["step"], y=d["trace"], name=name, legendgroup=name,
                                 line=dict(color=colour),
                                 error_y=dict(type="data", array=d["trace_error"], visible=True)),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=d["step"], y=d["top"], name=name, legendgroup=name,
                                 showlegend=False, line=dict(color=colour)), row=1, col=2)
    fig.update_xaxes(title="update")
    fig.update_yaxes(type="log")
    return _layout(fig, title, height=400)


# ----------------------------------------------------------------------------- loss slices
def slice_batch(built, n_cases: int) -> Batch:
    data = built.task.train
    n = min(int(n_cases), int(data.x.shape[0]))
    return Batch(data.x[:n], data.y[:n], data.mask[:n])


@dataclass(frozen=True)
class _Objective:
    """``f(θ) = L(model(θ; x), y) + ½ c‖θ‖²`` on a batch given with each call: hashable by value,
    so the slices' programs compile once per model and batch shape, not once per checkpoint."""
    model: object
    loss: object

    def __call__(self, params, batch: Batch, weight_cost):
        flat = jax.flatten_util.ravel_pytree(params)[0]
        return self.loss.value(self.model.apply(params, batch.x), batch.y, batch.mask) + \
            0.5 * weight_cost * jnp.vdot(flat, flat)


@partial(jax.jit, static_argnums=0)
def _value_and_gradient(objective, params, batch, weight_cost):
    value, grad = jax.value_and_grad(objective)(params, batch, weight_cost)
    return value, jax.flatten_util.ravel_pytree(grad)[0]


@partial(jax.jit, static_argnums=0)
def _hessian_product(objective, params, batch, weight_cost, v):
    return CurvatureOperator(objective.model.apply, objective.loss, params, batch,
                             kind="hessian", weight_cost=weight_cost).multiply(v)


@partial(jax.jit, static_argnums=0)
def _proposal(optimizer, params, opt_state, batch):
    return optimizer.proposal(params, opt_state, batch)


def slice_data(built, params, n_cases: int = 64, k: int = 2, opt_state=None,
               span: float = 1.0, points: int = 41, plane_points: int = 21) -> dict:
    """Loss slices of ``params`` on the first ``n_cases`` training cases: along the top-k
    Hessian eigenvectors and −g (unit directions, α ∈ [−span, span]), along HF's step p when
    ``built.optimizer`` is HF and ``opt_state`` its state (α ∈ [−0.5, 2], with
    ``q(αp) − q(0)``), and over the plane of the first two directions."""
    batch = slice_batch(built, n_cases)
    optimizer = built.optimizer
    objective = _Objective(built.model, built.loss)
    data = (batch, built.config.weight_cost)
    value, grad = _value_and_gradient(objective, params, *data)
    grad = np.asarray(grad)
    dirs = slices.slice_directions(partial(_hessian_product, objective, params, *data), grad,
                                   k=k, compiled=True)
    alphas = np.linspace(-span, span, points)
    out = {"alphas": alphas, "loss": float(value), "curves": {},
           "eigenvalues": {}, "n_cases": int(batch.x.shape[0])}
    for name, (d, lam) in dirs.items():
        out["curves"][name] = slices.loss_slice(objective, params, d, alphas, *data)
        out["eigenvalues"][name] = lam
    if isinstance(optimizer, HessianFree) and opt_state is not None:
        prop = _proposal(optimizer, params, opt_state, batch)
        step_alphas = np.linspace(-0.5, 2.0, points)
        out["step"] = {"alphas": step_alphas, "rho": float(prop["rho"]),
                       "damping": float(prop["damping"]),
                       "curve": slices.loss_slice(objective, params, prop["step"], step_alphas,
                                                  *data),
                       "model": slices.quadratic_model(prop["grad"], prop["step"],
                                                       prop["curvature_step"], step_alphas)}
    names = list(dirs)[:2]
    if len(names) == 2:
        grid = np.linspace(-span, span, plane_points)
        out["plane"] = {"names": names, "alphas": grid, "betas": grid,
                        "values": slices.loss_plane(objective, params, dirs[names[0]][0],
                                                    dirs[names[1]][0], grid, grid, *data)}
    return out


def slice_chart(data: dict, title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2 if "step" in data else 1, subplot_titles=(
        ["f(θ + α d) − f(θ), unit directions d"] +
        (["along HF's step p: f(θ + αp) − f(θ) and q(αp) − q(0)"] if "step" in data else [])))
    f0 = data["loss"]
    for i, (name, values) in enumerate(data["curves"].items()):
        lam = data["eigenvalues"].get(name)
        label = name + (f" (λ = {lam:.3g})" if lam is not None else "")
        fig.add_trace(go.Scatter(x=data["alphas"], y=values - f0, name=label, mode="lines",
                                 line=dict(color=PALETTE[i % len(PALETTE)])), row=1, col=1)
    if "step" in data:
        s = data["step"]
        fig.add_trace(go.Scatter(x=s["alphas"], y=s["curve"] - f0, name="loss along p",
                                 line=dict(color="#000000")), row=1, col=2)
        fig.add_trace(go.Scatter(x=s["alphas"], y=s["model"], name="HF's model q(αp) − q(0)",
                                 line=dict(color="#d62728", dash="dash")), row=1, col=2)
        fig.add_vline(x=1.0, line=dict(color="#888888", dash="dot"), row=1, col=2,
                      annotation_text=f"α = 1: ρ = {s['rho']:.3g}")
    fig.update_xaxes(title="α")
    return _layout(fig, title, height=420)


def plane_chart(data: dict, title: str) -> go.Figure:
    p = data["plane"]
    fig = go.Figure(go.Contour(x=p["alphas"], y=p["betas"], z=p["values"] - data["loss"],
                               colorscale="Viridis", colorbar=dict(title="f − f(θ)"),
                               contours=dict(showlabels=True)))
    fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", name="θ",
                             marker=dict(color="#ffffff", size=9, line=dict(width=1))))
    fig.update_xaxes(title=f"α along {p['names'][0]}")
    fig.update_yaxes(title=f"β along {p['names'][1]}")
    return _layout(fig, title, height=460)
