"""HF Lab: Hessian-free optimisation of neural networks in JAX, with every inner working visible.

float64 is made available process-wide (``jax_enable_x64``) so derivative checks and float64 runs
work; every training array is created with an explicit dtype, so float32 stays the default for
training.
"""
import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
