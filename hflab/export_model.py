"""Export what you trained: a run's newest parameters as ``model.npz`` plus ``evaluate.py``, a
short standalone JAX script that rebuilds the model and evaluates it on the task's test set.

The zip holds
  ``model.npz``    the parameters (``W1, b1, …`` for an MLP; ``W_in, W_rec, b, W_out, b_out`` for
                   an RNN), the task's test set (``x_test``, ``y_test``, ``mask_test``) and
                   ``meta`` (JSON: kind, activations, loss, metric, run id, update, config);
  ``evaluate.py``  needs only NumPy and JAX (not HF Lab): ``python evaluate.py [model.npz]``
                   prints the test loss and error the lab reports for the same parameters.

Why the forward pass and the loss are written again in the script: a standalone script cannot
import the lab, and the test compares its numbers with the lab's own evaluation.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from .config import RunConfig
from .experiment import build, evaluation, init_params
from .checkpoint import restore_state
from .tasks import SUCCESS_TOLERANCE

SCRIPT = '''"""Evaluate an exported HF Lab model on its task's test set (NumPy and JAX only).

Usage: python evaluate.py [model.npz]
"""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
ACTIVATIONS = {"tanh": jnp.tanh, "logistic": jax.nn.sigmoid, "relu": jax.nn.relu,
               "linear": lambda a: a}


def forward(params, x, meta):
    """Pre-activation outputs: an MLP a_l = act(a W_l + b_l), or an RNN h_t = act(x_t W_in +
    h_(t-1) W_rec + b), z_t = h_t W_out + b_out."""
    if meta["kind"] == "mlp":
        a = x
        n = len(meta["activations"]) + 1
        for layer in range(1, n):
            a = ACTIVATIONS[meta["activations"][layer - 1]](a @ params[f"W{layer}"]
                                                             + params[f"b{layer}"])
        return a @ params[f"W{n}"] + params[f"b{n}"]
    act = ACTIVATIONS[meta["activations"][0]]

    def step(h, x_t):
        h = act(x_t @ params["W_in"] + h @ params["W_rec"] + params["b"])
        return h, h
    h0 = jnp.zeros((x.shape[0], params["W_rec"].shape[0]), x.dtype)
    _, hs = jax.lax.scan(step, h0, jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(hs, 0, 1) @ params["W_out"] + params["b_out"]


def loss_and_error(z, y, mask, meta):
    """The matching loss summed over outputs and target steps, averaged over cases; the error
    as the lab reports it (mean squared error, misclassification or 1 - success rate)."""
    case = mask if mask.ndim == 1 else mask.reshape(mask.shape[0], -1).max(axis=1)
    n = jnp.maximum(case.sum(), 1.0)
    if meta["loss"] == "squared":
        out, position = z, 0.5 * jnp.sum((z - y) ** 2, axis=-1)
    elif meta["loss"] == "logistic":
        out, position = jax.nn.sigmoid(z), jnp.sum(jax.nn.softplus(z) - y * z, axis=-1)
    else:
        out = jax.nn.softmax(z, axis=-1)
        position = jax.nn.logsumexp(z, axis=-1) - jnp.sum(y * z, axis=-1)
    loss = jnp.sum(mask * position) / n
    if meta["metric"] in ("mse", "reconstruction"):
        return loss, jnp.sum(mask * jnp.sum((out - y) ** 2, axis=-1)) / n
    if meta["loss"] == "softmax":
        wrong = jnp.argmax(out, -1) != jnp.argmax(y, -1)
    elif meta["loss"] == "logistic":
        wrong = jnp.any((out > 0.5) != (y > 0.5), axis=-1)
    else:
        wrong = jnp.any(jnp.abs(out - y) >= meta["success_tolerance"], axis=-1)
    wrong = wrong & (mask > 0)
    if wrong.ndim > 1:
        wrong = jnp.any(wrong.reshape(wrong.shape[0], -1), axis=1)
    return loss, jnp.sum(wrong * case) / n


def main(path="model.npz"):
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        params = {k: jnp.asarray(f[k]) for k in f.files if k[0] in "Wb"}
        x, y, mask = (jnp.asarray(f[k]) for k in ("x_test", "y_test", "mask_test"))
    loss, error = loss_and_error(forward(params, x, meta), y, mask, meta)
    print(f"run {meta['run_id']} ({meta['task']}, {meta['optimizer']}) at update {meta['step']}: "
          f"test loss {float(loss):.9g}, test error {float(error):.9g} on {x.shape[0]} cases")
    return float(loss), float(error)


if __name__ == "__main__":
    main(*sys.argv[1:])
'''


def _param_arrays(built, params) -> dict[str, np.ndarray]:
    if built.model.kind == "mlp":
        out = {}
        for i, layer in enumerate(params, start=1):
            out[f"W{i}"], out[f"b{i}"] = np.asarray(layer["W"]), np.asarray(layer["b"])
        return out
    return {k: np.asarray(v) for k, v in params.items()}


def model_files(store, run_id: int, evaluate: bool = False) -> tuple[bytes, dict | None]:
    """(model.npz bytes, with ``evaluate`` the lab's own evaluation of the same parameters —
    what the exported script must reproduce; an export itself does not need it)."""
    info = store.get_run(run_id)
    config = RunConfig.from_dict(info["config"])
    built = build(config)
    ck = store.latest_checkpoint(run_id)
    step, params = (0, init_params(built)) if ck is None else (
        ck[0], restore_state(built, ck[1])[0])
    test = built.task.test
    meta = {"kind": built.model.kind, "activations": list(built.model.activations),
            "loss": built.loss.name, "metric": built.task.spec.metric,
            "success_tolerance": SUCCESS_TOLERANCE, "run_id": int(run_id), "step": int(step),
            "task": config.task, "optimizer": config.optimizer, "config": config.to_dict()}
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), x_test=np.asarray(test.x),
             y_test=np.asarray(test.y), mask_test=np.asarray(test.mask),
             **_param_arrays(built, params))
    return buf.getvalue(), evaluation(built, params) if evaluate else None


def export_model_bytes(store, run_id: int) -> bytes:
    """The zip (``model.npz`` and ``evaluate.py``) in memory (the Runs page's download)."""
    buf = io.BytesIO()
    npz, _ = model_files(store, run_id)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.npz", npz)
        zf.writestr("evaluate.py", SCRIPT)
    return buf.getvalue()


def export_model(store, run_id: int, path) -> Path:
    """Write the zip to ``path`` (a temporary file first, so a failure leaves nothing)."""
    data = export_model_bytes(store, run_id)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
