"""Data parallelism through JAX's own machinery: a 1-d device mesh over the batch axis.

Batches are sharded over the mesh's ``batch`` axis (``NamedSharding(mesh, P("batch"))``);
parameters, optimiser state and every CG vector are replicated (``P()``).  The jitted update is
unchanged: XLA's SPMD partitioner splits the forward, tangent and backward passes by cases and
inserts the all-reduces for the sums over cases (loss, gradient, Gv, preconditioner statistics),
so there is no per-device Python loop.

Batches whose size does not divide by the device count are padded with cases whose mask is 0.
Every loss divides by the number of *real* cases (:func:`hflab.core.losses.n_cases`), so a padded batch
gives the same numbers as the unpadded one.

Known XLA-CPU trap (many queued sharded programs with all-reduces can deadlock with simulated
devices): the run loop waits for every update's result before issuing the next, so at most one
sharded program is in flight.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .losses import Batch, pad_batch


def select_devices(spec: str = "1") -> list:
    """'1' (default device), 'N' (first N of the default backend), 'all', or 'cpu' (all CPUs)."""
    text = str(spec).strip().lower()
    if text == "cpu":
        return jax.devices("cpu")
    devices = jax.devices()
    if text == "all":
        return devices
    n = int(text)
    if n > len(devices):
        raise ValueError(f"devices: {n} requested but only {len(devices)} "
                         f"{devices[0].platform} device(s) are available")
    return devices[:n]


def make_mesh(devices) -> Mesh:
    return Mesh(np.asarray(devices), ("batch",))


def shard_batch(batch: Batch, mesh: Mesh) -> Batch:
    batch = pad_batch(batch, mesh.devices.size)
    sharding = NamedSharding(mesh, P("batch"))
    return Batch(*(jax.device_put(a, sharding) for a in batch))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def placer(devices_spec: str = "1"):
    """``None`` for one device, else ``place(params, state, grad_batch, curv_batch)`` that puts
    everything on the mesh (re-using the placed copy of a batch seen at the previous step)."""
    devices = select_devices(devices_spec)
    if len(devices) == 1 and str(devices_spec).strip().lower() in ("1", "cpu", "all"):
        return None
    mesh = make_mesh(devices)
    cache: dict = {}

    def placed(batch):
        key = id(batch.x), id(batch.y), id(batch.mask)
        if key not in cache:
            cache.clear() if len(cache) > 8 else None
            cache[key] = (batch, shard_batch(batch, mesh))   # keep `batch` alive: ids stay unique
        return cache[key][1]

    def place(params, opt_state, grad_batch, curv_batch):
        return (replicate(params, mesh), replicate(opt_state, mesh), placed(grad_batch),
                placed(curv_batch))

    place.mesh = mesh
    return place
