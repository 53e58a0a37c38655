"""HF Lab: Hessian-free optimisation of neural networks in JAX, with every inner working visible.

Process-wide numerics, set once on import:

* float64 is made available (``jax_enable_x64``) so derivative checks and float64 runs work;
  every training array is created with an explicit dtype, so float32 stays the default.
* float32 matmul precision is set explicitly to ``highest`` (true float32): on GPUs XLA would
  otherwise be free to use TF32/bf16 passes, and results would silently change between a CPU and a
  GPU.  ``HFLAB_MATMUL_PRECISION`` (``default``, ``high``, ``highest``) overrides it for users
  who want the faster tensor-core path.
"""
import os

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision",
                  os.environ.get("HFLAB_MATMUL_PRECISION", "highest"))

__version__ = "0.1.0"

# the public API for any JAX model, imported on first use (the pages import hflab cheaply)
_PUBLIC = {"hessian_free_transform": "core.transform", "curvature_operator": "core.transform",
           "HessianFreeState": "core.transform", "CurvatureOperator": "core.curvature",
           "HFConfig": "core.hf", "make_batch": "core.losses",
           # the curvature instrument: spectra, traces and loss slices of any operator
           "spectral_density": "core.density", "slq_quadrature": "core.density",
           "hutchinson_trace": "core.density", "hutchinson_diagonal": "core.density",
           "block_statistics": "core.density", "loss_slice": "core.slices",
           "loss_plane": "core.slices", "quadratic_model": "core.slices"}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        import importlib
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'hflab' has no attribute {name!r}")
