"""Your own model on the lab's Curvature page: a documented hook.

A hook is a function with no arguments that returns a :class:`LabModel` — any JAX function, its
parameter pytree, a matching loss and a few cases.  The Curvature page lists

* the hooks of the repository's examples (:data:`BUILT_IN`), and
* those named by whoever starts the server, in the environment variable ``HFLAB_MODELS``:
  comma-separated ``path/to/file.py:function`` entries (``HFLAB_MODELS=mine.py:lab_model make run``).

Only these are ever imported: a URL or a form field can choose among them but never name code,
so a shared link cannot make the server import anything new.

:class:`LabModel` gives the function the shape the page's analysis expects (``model.apply``,
``parameter_names`` from the pytree's key paths, one block per leaf, ``task.train``), so the page
shows dense H, G, H − G and Jacobians up to the cap, blocks or samples and Lanczos extremes above
it — exactly as for the lab's own models.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from .core.losses import MatchingLoss, get_loss

ENV = "HFLAB_MODELS"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BUILT_IN = {"Flax NNX MLP (example)": f"{EXAMPLES / 'flax_nnx_mlp.py'}:lab_model",
            "Equinox MLP (example)": f"{EXAMPLES / 'equinox_mlp.py'}:lab_model"}


def _path_name(path) -> str:
    """``hidden.kernel`` for ``['hidden']['kernel'].value``, ``layers.0.weight`` for
    ``.layers[0].weight``: the key path dotted, a trailing ``value`` (NNX variables) dropped."""
    parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    if len(parts) > 1 and parts[-1] == "value":
        parts = parts[:-1]
    return ".".join(parts) or "params"


@dataclass(eq=False)
class _FunctionView:
    """The :class:`hflab.core.models.Model` surface of a function and a parameter pytree."""
    apply_fn: Callable
    params: Any
    kind: str = "function"

    def apply(self, params, x):
        return self.apply_fn(params, x)

    @property
    def n_params(self) -> int:
        return int(ravel_pytree(self.params)[0].size)

    def _leaves(self):
        return jax.tree_util.tree_flatten_with_path(self.params)[0]

    def parameter_blocks(self) -> list[tuple[str, int, int]]:
        """One block per leaf, in ``ravel_pytree`` order, named by its key path."""
        out, start = [], 0
        for path, leaf in self._leaves():
            size = int(np.size(leaf))
            out.append((_path_name(path), start, start + size))
            start += size
        return out

    def parameter_names(self) -> list[str]:
        names = []
        for (path, leaf), (block, _, _) in zip(self._leaves(), self.parameter_blocks()):
            shape = np.shape(leaf)
            names += [f"{block}[{','.join(map(str, i))}]" if shape else block
                      for i in np.ndindex(*shape)]
        return names


@dataclass(eq=False)
class _Data:
    train: tuple


@dataclass(eq=False)
class LabModel:
    """What a hook returns: ``apply_fn(params, x) -> z`` (pre-activation outputs), its
    ``params`` pytree, a matching ``loss`` (name or object) and cases ``x``, ``y`` (y shaped like
    z; one-hot for softmax)."""
    apply_fn: Callable
    params: Any
    loss: str | MatchingLoss
    x: Any
    y: Any
    name: str = "your model"
    model: _FunctionView = field(init=False)
    task: _Data = field(init=False)

    def __post_init__(self):
        if isinstance(self.loss, str):
            self.loss = get_loss(self.loss)
        x, y = np.asarray(self.x), np.asarray(self.y, np.float64)
        if x.shape[0] != y.shape[0] or x.shape[0] < 1:
            raise ValueError(f"x and y need the same number of cases (≥ 1): {x.shape[0]} and "
                             f"{y.shape[0]}")
        self.model = _FunctionView(self.apply_fn, self.params)
        self.task = _Data((x, y, np.ones(y.shape[:-1])))


def available() -> dict[str, str]:
    """Hook label → ``file:function``: the built-in examples, then ``HFLAB_MODELS``."""
    out = dict(BUILT_IN)
    for entry in filter(None, (e.strip() for e in os.environ.get(ENV, "").split(","))):
        out[f"{Path(entry.rsplit(':', 1)[0]).name} · {entry.rsplit(':', 1)[-1]}"] = entry
    return out


def load(label: str) -> LabModel:
    """Import the hook called ``label`` (one of :func:`available`) and call it.  Every failure —
    a missing file or library, an exception in the hook, a wrong return type — is a ValueError
    with one line that says which."""
    hooks = available()
    if label not in hooks:
        raise ValueError(f"model hook {label!r} unknown; available: {list(hooks)}")
    path, _, fn_name = hooks[label].rpartition(":")
    if not path or not fn_name:
        raise ValueError(f"{ENV} entry {hooks[label]!r} must be 'path/to/file.py:function'")
    if not Path(path).is_file():
        raise ValueError(f"model hook file {path!r} does not exist")
    try:
        spec = importlib.util.spec_from_file_location(f"hflab_hook_{Path(path).stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        out = getattr(module, fn_name)()
    except Exception as e:  # noqa: BLE001 — a user's hook may fail any way; report it in one line
        raise ValueError(f"model hook {label!r} failed: {type(e).__name__}: {e}") from None
    if not isinstance(out, LabModel):
        raise ValueError(f"model hook {label!r} returned {type(out).__name__}, not "
                         "hflab.hooks.LabModel")
    return out
