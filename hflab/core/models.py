"""Models as pure functions on parameter pytrees: a multilayer perceptron and a tanh-style RNN.

Both return *pre-activation* outputs: the output nonlinearity belongs to the matching loss in
:mod:`hflab.core.losses` (Schraudolph 2002; Martens 2010 §4), which is what makes the Gauss-Newton
matrix ``Jᵀ H_L J`` positive semi-definite.

MLP:  ``a_0 = x``, ``a_l = act_l(a_{l-1} W_l + b_l)``, output ``z = a_{L-1} W_L + b_L``.
RNN:  ``h_t = act(x_t W_in + h_{t-1} W_rec + b)``, ``z_t = h_t W_out + b_out``, ``h_0 = 0``,
unrolled with :func:`jax.lax.scan`; :func:`rnn_apply_with_hidden` also returns every ``h_t``
(structural damping needs them, Martens & Sutskever 2011 §3).

Initialisations: scaled Gaussian, Glorot (uniform), and Martens' sparse init (each unit gets
``SPARSE_FAN_IN = 15`` non-zero incoming weights from N(0, 1); for tanh units the scale is
halved and biases are 0.5; other biases 0 — and RNN hidden biases 0, see :func:`init_rnn`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "logistic": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "linear": lambda a: a,
}
INITS = ("sparse", "gaussian", "glorot", "orthogonal")
SPARSE_FAN_IN = 15
# Unrolling the time loop fully lets XLA fuse across steps; on CPU the per-iteration overhead of a
# rolled loop dominates the small (batch × hidden) matmuls of an RNN step (``make bench-rnn-cost``
# measures a CG iteration of both forms); partial unrolling does not help.  Compile time grows
# with T, so sequences longer than this stay rolled.
FULL_UNROLL_MAX_STEPS = 64


def activation(name: str) -> Callable:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}") from None


def _init_matrix(key, fan_in: int, fan_out: int, init: str, scale: float, act: str, dtype):
    """One weight matrix (fan_in, fan_out) and its bias, by the named scheme."""
    if init == "sparse":
        # Martens (2010) §5: a fixed number of non-zero incoming weights per unit, so that the
        # total input to a unit does not grow with fan-in and units differ from one another.
        # NumPy, seeded from the JAX key, rather than jax.random: eager JAX compiles every new
        # shape (~0.5 s each), NumPy does not — the 842k-parameter CURVES net initialises in
        # well under a second.  The smallest n_nonzero of i.i.d. uniform keys per unit form a
        # uniformly random subset of its inputs.
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        n_nonzero = min(SPARSE_FAN_IN, fan_in)
        chosen = np.argpartition(rng.random((fan_out, fan_in)), n_nonzero - 1,
                                 axis=1)[:, :n_nonzero]
        w = np.zeros((fan_out, fan_in))
        np.put_along_axis(w, chosen, rng.standard_normal((fan_out, n_nonzero)), axis=1)
        w_scale = 0.5 if act == "tanh" else 1.0
        b = np.full((fan_out,), 0.5 if act == "tanh" else 0.0)
        return jnp.asarray(w.T * (w_scale * scale), dtype), jnp.asarray(b, dtype)
    if init == "gaussian":
        # a Python float keeps the dtype (a NumPy float64 scalar would promote to float64)
        w = jax.random.normal(key, (fan_in, fan_out), dtype) * float(scale / np.sqrt(fan_in))
        return w.astype(dtype), jnp.zeros((fan_out,), dtype)
    if init == "glorot":
        lim = float(scale * np.sqrt(6.0 / (fan_in + fan_out)))
        w = jax.random.uniform(key, (fan_in, fan_out), dtype, -lim, lim)
        return w.astype(dtype), jnp.zeros((fan_out,), dtype)
    if init == "orthogonal":
        # Saxe, McClelland & Ganguli (2014): orthonormal rows or columns keep every singular value
        # at ``scale``, so a square recurrent matrix neither shrinks nor stretches any direction of
        # the state (its spectral radius is exactly ``scale``), unlike a random Gaussian or sparse
        # matrix whose singular values spread up to twice its radius.  JAX's initialiser (a QR of
        # a Gaussian matrix) rather than one written here.
        w = jax.nn.initializers.orthogonal(float(scale))(key, (fan_in, fan_out), dtype)
        return w.astype(dtype), jnp.zeros((fan_out,), dtype)
    raise ValueError(f"unknown init {init!r}; allowed: {list(INITS)}")


# ----------------------------------------------------------------------------- MLP
def init_mlp(key, sizes: Sequence[int], activations: Sequence[str], init: str = "sparse",
             scale: float = 1.0, dtype=jnp.float32) -> list[dict]:
    """Parameters ``[{"W": (n_in, n_out), "b": (n_out,)}, ...]`` for layer sizes ``sizes``.

    ``activations`` names the nonlinearity of each hidden layer (``len(sizes) - 2`` entries); the
    output layer is linear here and its nonlinearity lives in the loss.
    """
    if len(activations) != len(sizes) - 2:
        raise ValueError(f"need {len(sizes) - 2} hidden activations, got {len(activations)}")
    params = []
    keys = jax.random.split(key, len(sizes) - 1)
    acts = list(activations) + ["linear"]
    for k, n_in, n_out, act in zip(keys, sizes[:-1], sizes[1:], acts):
        w, b = _init_matrix(k, n_in, n_out, init, scale, act, dtype)
        params.append({"W": w, "b": b})
    return params


def mlp_apply(params, x, activations: Sequence[str]):
    """Pre-activation output of the MLP for inputs ``x`` of shape (..., n_in)."""
    a = x
    for layer, act in zip(params[:-1], activations):
        a = activation(act)(a @ layer["W"] + layer["b"])
    last = params[-1]
    return a @ last["W"] + last["b"]


def mlp_squared_gradients(params, x, activations: Sequence[str], case_losses: Callable):
    """``Σ_i g_i ⊙ g_i`` over the cases (rows) of ``x``, ``g_i`` the gradient of case i's loss
    (``case_losses(z)`` gives each row's), as a pytree like ``params`` — in one backward pass.

    Why by hand, not ``vmap`` of per-case gradients: in a dense layer case i's gradient is the
    outer product ``a_i δ_iᵀ`` of the layer's input and the loss's gradient at its
    pre-activation, so the sum of squares is ``(A ⊙ A)ᵀ (Δ ⊙ Δ)`` (Goodfellow 2015, "Efficient
    per-example gradient computations"; BackPACK's ``SumGradSquared``) — two matmuls a layer
    instead of materialising N parameter-sized gradients (the generic route,
    :func:`hflab.core.curvature.empirical_fisher_diagonal`, which the RNN's shared weights
    need).  The δ_i are the gradients of the summed loss with respect to a zero added to each
    pre-activation: case i's loss depends only on row i.
    """
    def loss_with_inputs(shifts):
        a, inputs = x, []
        for layer, act, shift in zip(params[:-1], activations, shifts):
            inputs.append(a)
            a = activation(act)(a @ layer["W"] + layer["b"] + shift)
        inputs.append(a)
        z = a @ params[-1]["W"] + params[-1]["b"] + shifts[-1]
        return jnp.sum(case_losses(z)), inputs

    shifts = [jnp.zeros((x.shape[0], layer["b"].shape[-1]), x.dtype) for layer in params]
    deltas, inputs = jax.grad(loss_with_inputs, has_aux=True)(shifts)
    return [{"W": (a * a).T @ (d * d), "b": jnp.sum(d * d, axis=0)}
            for a, d in zip(inputs, deltas)]


# ----------------------------------------------------------------------------- RNN
def init_rnn(key, n_in: int, n_hidden: int, n_out: int, activation_name: str = "tanh",
             init: str = "sparse", scale: float = 1.0, rec_scale: float | None = None,
             dtype=jnp.float32) -> dict:
    """Parameters of ``h_t = act(x_t W_in + h_{t-1} W_rec + b)``, ``z_t = h_t W_out + b_out``.

    ``rec_scale`` (if given) rescales ``W_rec`` to that spectral radius, as Martens & Sutskever
    (2011) did for their sparse-initialised RNNs (they report 1.2 works well).  The hidden
    biases start at 0 (see below).
    """
    k_in, k_rec, k_out = jax.random.split(key, 3)
    w_in, _ = _init_matrix(k_in, n_in, n_hidden, init, scale, activation_name, dtype)
    # Hidden biases start at 0, not at the sparse init's 0.5 for tanh MLP units: the 0.5 offset
    # moves the state's operating point off h = 0, where tanh' < 1 shrinks the effective
    # spectral radius below 1.2 and the net forgets: the sensitivity of the last state to an
    # early input decays geometrically in T (the initial_sensitivity study measures it).
    b = jnp.zeros((n_hidden,), dtype)
    w_rec, _ = _init_matrix(k_rec, n_hidden, n_hidden, init, scale, activation_name, dtype)
    if rec_scale is not None:
        radius = float(np.max(np.abs(np.linalg.eigvals(np.asarray(w_rec, np.float64)))))
        if radius > 0:
            w_rec = w_rec * (rec_scale / radius)
    w_out, b_out = _init_matrix(k_out, n_hidden, n_out, init, scale, "linear", dtype)
    return {"W_in": w_in, "W_rec": w_rec, "b": b, "W_out": w_out, "b_out": b_out}


def rnn_apply_with_hidden(params, x, activation_name: str = "tanh"):
    """``x``: (batch, T, n_in) → (outputs (batch, T, n_out), hidden states (batch, T, n_hidden))."""
    act = activation(activation_name)
    xs = jnp.swapaxes(x, 0, 1)                            # (T, batch, n_in): scan over time
    x_proj = xs @ params["W_in"] + params["b"]            # input projections for all t at once
    h0 = jnp.zeros((x.shape[0], params["W_rec"].shape[0]), x_proj.dtype)

    def step(h, xp):
        h = act(xp + h @ params["W_rec"])
        return h, h

    steps = x_proj.shape[0]
    unroll = steps if steps <= FULL_UNROLL_MAX_STEPS else 1
    _, hs = jax.lax.scan(step, h0, x_proj, unroll=max(unroll, 1))
    hs = jnp.swapaxes(hs, 0, 1)                           # (batch, T, n_hidden)
    return hs @ params["W_out"] + params["b_out"], hs


def rnn_apply(params, x, activation_name: str = "tanh"):
    return rnn_apply_with_hidden(params, x, activation_name)[0]


# ----------------------------------------------------------------------------- Model wrapper
@dataclass(frozen=True)
class Model:
    """A model described by a hashable spec, so jitted functions can close over it.

    ``kind`` is ``"mlp"`` or ``"rnn"``.  For an MLP, ``sizes`` are all layer widths and
    ``activations`` the hidden nonlinearities; for an RNN, ``sizes == (n_in, n_hidden, n_out)`` and
    ``activations == (hidden_activation,)``.
    """
    kind: str
    sizes: tuple
    activations: tuple
    init: str = "sparse"
    init_scale: float = 1.0
    rec_scale: float | None = None
    name: str = field(default="", compare=False)

    def init_params(self, key, dtype=jnp.float32):
        if self.kind == "mlp":
            return init_mlp(key, self.sizes, self.activations, self.init, self.init_scale, dtype)
        n_in, n_hidden, n_out = self.sizes
        return init_rnn(key, n_in, n_hidden, n_out, self.activations[0], self.init,
                        self.init_scale, self.rec_scale, dtype)

    def apply(self, params, x):
        if self.kind == "mlp":
            return mlp_apply(params, x, self.activations)
        return rnn_apply(params, x, self.activations[0])

    def apply_with_hidden(self, params, x):
        """(outputs, hidden states); hidden states are ``None`` for an MLP."""
        if self.kind == "mlp":
            return mlp_apply(params, x, self.activations), None
        return rnn_apply_with_hidden(params, x, self.activations[0])

    @property
    def n_params(self) -> int:
        if self.kind == "mlp":
            return int(sum((a + 1) * b for a, b in zip(self.sizes[:-1], self.sizes[1:])))
        n_in, n_h, n_out = self.sizes
        return int(n_in * n_h + n_h * n_h + n_h + n_h * n_out + n_out)

    def parameter_names(self) -> list[str]:
        """A readable name for each entry of ``ravel_pytree(params)`` (same order)."""
        names = []
        if self.kind == "mlp":
            # ravel_pytree orders list entries, and dict keys sorted: W before b
            for l, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:]), start=1):
                names += [f"W{l}[{i},{j}]" for i in range(a) for j in range(b)]
                names += [f"b{l}[{j}]" for j in range(b)]
            return names
        n_in, n_h, n_out = self.sizes
        blocks = {"W_in": (n_in, n_h), "W_out": (n_h, n_out), "W_rec": (n_h, n_h),
                  "b": (n_h,), "b_out": (n_out,)}
        for key in sorted(blocks):
            shape = blocks[key]
            if len(shape) == 2:
                names += [f"{key}[{i},{j}]" for i in range(shape[0]) for j in range(shape[1])]
            else:
                names += [f"{key}[{j}]" for j in range(shape[0])]
        return names

    def parameter_blocks(self) -> list[tuple[str, int, int]]:
        """(block name, start, stop) in the raveled parameter vector, for drawing boundaries."""
        out, start = [], 0
        names = self.parameter_names()
        i = 0
        while i < len(names):
            prefix = names[i].split("[")[0]
            j = i
            while j < len(names) and names[j].split("[")[0] == prefix:
                j += 1
            out.append((prefix, start + i, start + j))
            i = j
        return out
