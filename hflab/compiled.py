"""Compiled programs: JAX's persistent compilation cache, and optimiser updates compiled ahead
of time (so compilation stays out of the optimisation time curves and budgets use)."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import jax

COMPILED: dict = {}       # (id(optimizer), argument signature) → (optimizer, compiled update)
_COMPILING: dict = {}     # the same key → the lock its one compile holds
_LOCK = threading.Lock()


def enable_compilation_cache(folder) -> bool:
    """Use JAX's persistent compilation cache in ``folder`` (the store's), so a restarted app
    or a second CLI process loads the programs compiled before instead of compiling them again.
    The first folder set in a process stays (JAX initialises its cache once)."""
    if jax.config.jax_compilation_cache_dir:
        return False
    jax.config.update("jax_compilation_cache_dir", str(Path(folder) / "jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True


def signature(tree):
    """What a compiled program is specialised on: tree structure, shapes, dtypes, shardings.
    (It is taken once per update of every run: the dtype objects themselves, not their names,
    keep it at ~13 µs for an Adam state of 60 arrays, not 100.)"""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((a.shape, a.dtype, getattr(a, "sharding", None)) for a in leaves)


def update_key(opt, args) -> tuple:
    """The key of ``opt``'s update compiled for ``args`` in :data:`COMPILED`."""
    return id(opt), signature(args)


def compiled_update(opt, args, key: tuple | None = None) -> tuple[Callable, float]:
    """The optimiser's update compiled ahead of time for these argument shapes, and the seconds
    compiling took (0 when cached).  Compiling apart from the first call keeps compilation out of
    the optimisation time that curves and wall-clock budgets use; compiled programs are shared
    by every run with the same optimiser and shapes.  ``key``: :func:`update_key` of the same
    arguments, when the caller has it already."""
    key = key or update_key(opt, args)
    compiled = COMPILED.get(key)
    if compiled is not None:               # the common case, without taking a lock
        return compiled[1], 0.0
    with _LOCK:
        lock = _COMPILING.setdefault(key, threading.Lock())
    # one compile per program: a second run of the same shapes (another session's, started at
    # the same moment) waits for the first's compile instead of compiling it again beside it
    with lock:
        if key in COMPILED:
            return COMPILED[key][1], 0.0
        t0 = time.perf_counter()
        compiled = opt.update.lower(*args).compile()
        COMPILED[key] = (opt, compiled)          # keep `opt` alive so its id stays unique
        return compiled, time.perf_counter() - t0
