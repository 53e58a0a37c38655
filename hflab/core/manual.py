"""Hand-derived algorithms from the project's origin notebook, kept as independent cross-checks.

Everything here is plain NumPy in float64 and deliberately does *not* use JAX's autodiff, so the
tests can compare it against :mod:`hflab.core.curvature` as two independent routes.

* The quadratic ``f(x) = ½ xᵀAx + bᵀx + c`` (symmetric A): ``∇f = Ax + b``, ``∇²f = A``.
* The reverse-mode pitfall: differentiating a *vector* output in reverse mode returns
  ``Σ_i ∂f_i/∂x = Jᵀ1`` — a vector — not the Jacobian; differentiating the gradient of the
  quadratic that way gives the row sums of A, not A (the notebook's ``[10, 14, 16, 18]``).
* Bishop's (1992) exact Hessian of a feed-forward network: all units are numbered globally in
  topological order, weights live in one matrix ``W[i, j]`` (from unit j to unit i; unit 0 is a
  constant-1 bias unit, so biases are ordinary weights), and with ``a_i = Σ_j W_ij z_j``,
  ``z_i = f(a_i)``, ``E = Σ_k c_k z_k`` over output units:

      g_li = δ_li + Σ_r W_lr f'(a_r) g_ri               (forward:  g_li = ∂a_l/∂a_i)
      σ_n  = f'(a_n) (c_n + Σ_r W_rn σ_r)                (backward: σ_n = ∂E/∂a_n)
      b_ni = f''(a_n) g_ni (c_n + Σ_r W_rn σ_r) + f'(a_n) Σ_r W_rn b_ri   (b_ni = ∂σ_n/∂a_i)
      ∂²E / ∂W_ij ∂W_nl = z_j σ_n f'(a_l) g_li + z_j z_l b_ni    (unit i not above unit n;
                                                               the rest by symmetry)

* Hand-written backpropagation through time for ``h_t = tanh(x_t W_in + h_{t−1} W_rec + b)``,
  ``y_t = h_t W_out + b_out``.
"""
from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------- the quadratic
SEED_A = np.array([[1, 2, 3, 4], [2, 1, 5, 6], [3, 5, 1, 7], [4, 6, 7, 1]], dtype=np.float64)
SEED_B = np.array([1, 2, 3, 4], dtype=np.float64)
SEED_C = 1.0


def quadratic_value(x, A=SEED_A, b=SEED_B, c=SEED_C):
    return 0.5 * x @ A @ x + b @ x + c


def quadratic_gradient(x, A=SEED_A, b=SEED_B):
    """Analytic gradient ``A x + b`` (A symmetric)."""
    return A @ x + b


def quadratic_hessian(A=SEED_A):
    return np.array(A, dtype=np.float64)


def reverse_mode_of_vector(vector_fun, x):
    """What a reverse-mode 'gradient' of a vector-valued function returns: ``Jᵀ 1 = Σ_i ∂f_i/∂x``.

    Uses JAX's ``vjp`` with a vector of ones — exactly the call TensorFlow's ``tf.gradients`` made
    in the origin notebook — to demonstrate that it is not the Jacobian.
    """
    import jax
    import jax.numpy as jnp
    y, pullback = jax.vjp(vector_fun, jnp.asarray(x))
    return np.asarray(pullback(jnp.ones_like(y))[0])


# ----------------------------------------------------------------------------- seed MLP
def seed_mlp():
    """The notebook's 3-3-3 net: W1 = [[1,2,3],[4,5,6],[7,8,9]]/10, W2 = W1ᵀ, unit biases.

    Column-vector convention of the notebook: ``h = W x + b``.
    """
    w1 = np.arange(1, 10, dtype=np.float64).reshape(3, 3) / 10.0
    return w1, w1.T.copy(), np.ones(3), np.ones(3)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def seed_mlp_output(x, w1=None, w2=None, b1=None, b2=None):
    """y = Σ σ(W2 σ(W1 x + b1) + b2)."""
    if w1 is None:
        w1, w2, b1, b2 = seed_mlp()
    z1 = _sigmoid(w1 @ x + b1)
    return float(np.sum(_sigmoid(w2 @ z1 + b2)))


def seed_mlp_input_gradient(x, w1=None, w2=None, b1=None, b2=None):
    """dy/dx by the notebook's hand-written backward pass."""
    if w1 is None:
        w1, w2, b1, b2 = seed_mlp()
    z1 = _sigmoid(w1 @ x + b1)
    z2 = _sigmoid(w2 @ z1 + b2)
    dydh2 = z2 * (1.0 - z2)
    dydz1 = w2.T @ dydh2
    dydh1 = z1 * (1.0 - z1) * dydz1
    return w1.T @ dydh1


# ----------------------------------------------------------------------------- Bishop's Hessian
_ACT = {
    "logistic": (lambda a: _sigmoid(a),
                 lambda a: _sigmoid(a) * (1 - _sigmoid(a)),
                 lambda a: _sigmoid(a) * (1 - _sigmoid(a)) * (1 - 2 * _sigmoid(a))),
    "tanh": (np.tanh, lambda a: 1 - np.tanh(a) ** 2,
             lambda a: -2 * np.tanh(a) * (1 - np.tanh(a) ** 2)),
    "linear": (lambda a: a, lambda a: np.ones_like(a), lambda a: np.zeros_like(a)),
}


class GlobalNet:
    """A layered net written as Bishop's global weight matrix (unit 0 = bias, then inputs, …)."""

    def __init__(self, weights, biases, activations):
        """``weights[l]``: (n_out, n_in) in the column convention ``a = W z + b``;
        ``activations``: one name per non-input layer (hidden layers and the output layer)."""
        self.sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
        self.offsets = np.cumsum([1] + self.sizes)[:-1]        # first unit of each layer
        self.n_units = 1 + sum(self.sizes)
        self.activations = list(activations)
        w = np.zeros((self.n_units, self.n_units))
        for l, (wl, bl) in enumerate(zip(weights, biases)):
            rows = self.layer_units(l + 1)
            w[np.ix_(rows, self.layer_units(l))] = wl
            w[rows, 0] = bl
        self.W = w

    def layer_units(self, layer):
        start = self.offsets[layer]
        return np.arange(start, start + self.sizes[layer])

    def layer_weight_indices(self, layer):
        """Indices into ``W.ravel()`` of layer ``layer``'s weights (rows = its units, columns =
        previous layer), in the row-major order of the notebook's ``W_l`` — the notebook's
        ``get_W_idx``."""
        out_idx, in_idx = self.layer_units(layer), self.layer_units(layer - 1)
        i, j = np.meshgrid(out_idx * self.n_units, in_idx, indexing="ij")
        return (i + j).ravel()

    def layer_bias_indices(self, layer):
        return self.layer_units(layer) * self.n_units

    def forward(self, x):
        """Pre-activations a, activations z, f'(a), f''(a) for every global unit."""
        n = self.n_units
        a, z = np.zeros(n), np.zeros(n)
        f1, f2 = np.zeros(n), np.zeros(n)
        z[0] = 1.0                                             # bias unit: constant, f' = 0
        inputs = self.layer_units(0)
        z[inputs] = a[inputs] = x
        f1[inputs] = 1.0                                       # inputs pass through unchanged
        for layer in range(1, len(self.sizes)):
            units = self.layer_units(layer)
            f, d1, d2 = _ACT[self.activations[layer - 1]]
            a[units] = self.W[units] @ z
            z[units], f1[units], f2[units] = f(a[units]), d1(a[units]), d2(a[units])
        return a, z, f1, f2

    def hessian(self, x, c=None):
        """Bishop's exact Hessian of E = Σ_k c_k z_k (outputs) over all entries of ``W``:
        returns an (n_units², n_units²) matrix indexed by ``W.ravel()`` positions."""
        n, W = self.n_units, self.W
        a, z, f1, f2 = self.forward(x)
        outputs = self.layer_units(len(self.sizes) - 1)
        coef = np.zeros(n)
        coef[outputs] = 1.0 if c is None else c
        # forward: g[l, i] = ∂a_l/∂a_i, units in topological order
        g = np.eye(n)
        for l in range(n):
            g[l] += (W[l] * f1) @ g
        # backward: σ_n and b[n, i]
        sigma = np.zeros(n)
        b = np.zeros((n, n))
        for m in range(n - 1, -1, -1):
            back = coef[m] + W[:, m] @ sigma
            sigma[m] = f1[m] * back
            b[m] = f2[m] * g[m] * back + f1[m] * (W[:, m] @ b)
        # H[(i,j),(n,l)] = z_j σ_n f'(a_l) g_li + z_j z_l b_ni
        term1 = np.einsum("j,n,l,li->ijnl", z, sigma, f1, g)
        term2 = np.einsum("j,l,ni->ijnl", z, z, b)
        h = (term1 + term2).reshape(n * n, n * n)
        # The formula assumes w_ij influences σ_n only through a_i, which holds when unit i is
        # not in a later layer than unit n.  The other half follows from symmetry.
        layer = np.zeros(n, int)
        for lay in range(len(self.sizes)):
            layer[self.layer_units(lay)] = lay
        row_layer = np.repeat(layer, n)                       # layer of i for row (i, j)
        valid = row_layer[:, None] <= row_layer[None, :]
        return np.where(valid, h, h.T)

    def output_sum(self, x):
        return float(np.sum(self.forward(x)[1][self.layer_units(len(self.sizes) - 1)]))


def bishop_param_hessian(weights, biases, activations, x, c=None):
    """Bishop's Hessian restricted to the network's parameters, ordered like
    ``ravel_pytree`` of an :mod:`hflab.core.models` MLP ([{"W": (in, out), "b"}, …]: each layer's
    W in (in, out) row-major order, then its b)."""
    net = GlobalNet(weights, biases, activations)
    h = net.hessian(x, c)
    idx = []
    for layer in range(1, len(net.sizes)):
        out_idx, in_idx = net.layer_units(layer), net.layer_units(layer - 1)
        # (in, out) row-major == for each input unit j, for each output unit i: W[i, j]
        idx += [i * net.n_units + j for j in in_idx for i in out_idx]
        idx += list(net.layer_bias_indices(layer))
    idx = np.asarray(idx)
    return h[np.ix_(idx, idx)]


# ----------------------------------------------------------------------------- BPTT
def rnn_forward(params, x):
    """x: (B, T, n_in) → (hidden (B, T, H), outputs (B, T, n_out)), NumPy float64."""
    w_in, w_rec, b = (np.asarray(params[k], np.float64) for k in ("W_in", "W_rec", "b"))
    w_out, b_out = np.asarray(params["W_out"], np.float64), np.asarray(params["b_out"], np.float64)
    x = np.asarray(x, np.float64)
    bsz, steps, _ = x.shape
    h = np.zeros((bsz, w_rec.shape[0]))
    hs = np.zeros((bsz, steps, w_rec.shape[0]))
    for t in range(steps):
        h = np.tanh(x[:, t] @ w_in + h @ w_rec + b)
        hs[:, t] = h
    return hs, hs @ w_out + b_out


def bptt_gradients(params, x, dl_dy):
    """Gradients of a loss with ``∂L/∂y_t = dl_dy[:, t]`` w.r.t. every RNN parameter, by
    hand-written backpropagation through time (tanh units)."""
    x = np.asarray(x, np.float64)
    dl_dy = np.asarray(dl_dy, np.float64)
    w_rec = np.asarray(params["W_rec"], np.float64)
    w_out = np.asarray(params["W_out"], np.float64)
    hs, _ = rnn_forward(params, x)
    bsz, steps, n_h = hs.shape
    grads = {"W_in": np.zeros_like(np.asarray(params["W_in"], np.float64)),
             "W_rec": np.zeros_like(w_rec), "b": np.zeros(n_h),
             "W_out": np.einsum("bth,bto->ho", hs, dl_dy), "b_out": dl_dy.sum(axis=(0, 1))}
    carry = np.zeros((bsz, n_h))                      # ∂L/∂h_t arriving from step t+1
    for t in range(steps - 1, -1, -1):
        d_h = dl_dy[:, t] @ w_out.T + carry
        d_a = d_h * (1.0 - hs[:, t] ** 2)             # through tanh
        h_prev = hs[:, t - 1] if t > 0 else np.zeros((bsz, n_h))
        grads["W_in"] += x[:, t].T @ d_a
        grads["W_rec"] += h_prev.T @ d_a
        grads["b"] += d_a.sum(0)
        carry = d_a @ w_rec.T
    return grads
