"""Derivations: the origin notebook's journey — each hand derivation beside autodiff."""
import jax  # noqa: F401
import numpy as np
import pandas as pd
import streamlit as st

from hflab.view import analysis, plots, ui



@st.cache_data(show_spinner="computing the derivations…")
def derived(name: str, *args):
    """Each derivation once per server (its inputs are fixed or the form's): a rerun of the page
    redraws, it does not differentiate again."""
    return getattr(analysis, f"derivation_{name}")(*args)


st.header("Derivations")
st.write("Every derivative the lab uses, computed two or three independent ways in float64.")

st.subheader("1 · The quadratic  f(x) = ½xᵀAx + bᵀx + c")
q = derived("quadratic")
c1, c2, c3 = st.columns(3)
c1.write(f"f(1) = **{q['f']:g}**")
c1.write("∇f autodiff: " + str(q["grad_autodiff"].tolist()))
c1.write("∇f analytic Ax + b: " + str(q["grad_analytic"].tolist()))
c2.write("Hessian by autodiff equals A:")
c2.dataframe(pd.DataFrame(q["hessian_autodiff"]), key="df-quad-h")
c3.write("A *naive* reverse-mode derivative of ∇f returns Σᵢ ∂(∇f)ᵢ/∂x — the column sums of A — "
         "not the Hessian:")
c3.write(str(q["naive_reverse_mode"].tolist()))

st.subheader("2 · The 3-3-3 net's forward pass and input gradient")
fw = derived("forward")
c1, c2 = st.columns(2)
c1.write(f"y at x = (1, 1, 1): float32 autodiff **{fw['y_float32']:.7f}** (the notebook printed "
         f"2.7463741), float64 {fw['y_float64']:.10f}, hand-written {fw['y_manual']:.10f}")
c2.dataframe(pd.DataFrame({"dy/dx hand-written": fw["dydx_manual"],
                           "dy/dx autodiff float32": fw["dydx_float32"],
                           "dy/dx autodiff float64": fw["dydx_float64"]}), key="df-fwd")

st.subheader("3 · Jacobians")
j = derived("jacobian")
c1, c2 = st.columns(2)
c1.write("∂h₂/∂z₁ of the notebook's 3-3-3 net by forward-mode autodiff (= W₂):")
c1.dataframe(pd.DataFrame(j["jacobian_autodiff"]), key="df-jac")
c2.write("reverse mode with a vector of ones gives only the column sums "
         f"{np.round(j['naive_reverse_mode'], 6).tolist()}")

st.subheader("4 · The MLP Hessian three ways")
c1, c2 = st.columns(2)
sizes_text = c1.text_input("layer sizes", "3-3-3", key="der_sizes")
act = c2.selectbox("activation", ["logistic", "tanh"], key="der_act")
try:
    sizes = tuple(int(s) for s in sizes_text.split("-"))
    if len(sizes) < 2 or min(sizes) < 1 or sum(a * b + b for a, b in zip(sizes, sizes[1:])) > 200:
        raise ValueError
except ValueError:
    ui.error(f"layer sizes: {sizes_text!r} is not allowed — whole numbers ≥ 1 separated by '-', "
             "at least two layers, at most 200 parameters")
else:
    h = derived("mlp_hessian", sizes, act)
    ui.chart(plots.side_by_side({k: h[k] for k in ("autodiff", "bishop", "finite differences")},
                                "Hessian of Σ outputs w.r.t. all weights and biases"),
             "mlp-hessian", "mlp-hessian")
    st.write(f"max |Bishop − autodiff| = **{h['max_abs_bishop_vs_autodiff']:.2e}**, "
             f"max |finite differences − autodiff| = **{h['max_abs_fd_vs_autodiff']:.2e}**")

st.subheader("5 · The RNN gradient by hand-written BPTT")
b = derived("bptt")
table = pd.DataFrame(b["table"])
st.write(f"∂J/∂θ for J = Σ_t Σ_k y_t,k of the notebook's 3-3-2 tanh RNN over 3 steps; largest "
         f"|difference| **{table['difference'].abs().max():.2e}**")
st.dataframe(table, key="df-bptt", hide_index=True)

st.subheader("6 · The Gauss-Newton product")
g = derived("gv")
c1, c2 = st.columns(2)
c1.dataframe(pd.DataFrame({"Gv (jvp → H_L → vjp)": g["Gv"], "dense JᵀH_L J v": g["dense"]}),
             key="df-gv")
c2.write(f"max |difference| = **{g['max_abs_difference']:.2e}**; smallest eigenvalue of G = "
         f"{g['min_eigenvalue']:.2e} (PSD up to rounding)")
