"""What one run may hold in memory, and what it is planned to hold: the config's memory check
(:func:`hflab.config.validate`) refuses a run whose plan exceeds the budget; and the memory a
server's threads free, handed back to the system while runs train
(:func:`release_freed_memory`).

``c`` is a :class:`hflab.config.RunConfig`.
"""
from __future__ import annotations

import ctypes
import os

from .core.models import FULL_UNROLL_MAX_STEPS

_LIBC = None              # glibc's malloc_trim once found (False: not on this system)


def _machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):        # not POSIX: assume the reference 24 GiB
        return 24 * 2 ** 30


# What one run may plan to hold: three quarters of this machine's memory, at most 16 GiB (the
# lab runs several optimisers of one comparison side by side, and the store and app need room).
MEMORY_BUDGET_BYTES = min(16 * 2 ** 30, _machine_memory_bytes() * 3 // 4)
# Values held per case, step and unit by one update (forward states, tangents, residuals),
# set from XLA's memory analysis of the compiled HF update (float32) with ~25 % to spare: an MLP
# holds a few values per case and unit, an RNN unrolled in full a few more; a rolled scan's while
# loop stacks its residuals at every step, so it holds the most.
ACTIVATION_FACTOR = {"mlp": 4, "rnn-unrolled": 5, "rnn-rolled": 12}


def largest_batch(c, n_train: int) -> int:
    """The largest gradient batch of the run (growing batches end at the whole training set)."""
    return n_train if c.grad_batch_doubling else c.grad_batch or n_train


def memory_estimate_bytes(c, n_train: int) -> int:
    """Bytes one update of this run is planned to hold: activations of its largest gradient batch
    (:data:`ACTIVATION_FACTOR` values per case, step and unit) plus the optimiser's
    parameter-sized vectors."""
    model = c.model()
    itemsize = 4 if c.dtype == "float32" else 8
    if c.spec.kind == "rnn":
        t_max = int(1.1 * c.final_seq_len())             # the padded length of the sequences
        steps = t_max + 10
        factor = ACTIVATION_FACTOR["rnn-rolled" if t_max > FULL_UNROLL_MAX_STEPS
                                   else "rnn-unrolled"]
    else:
        steps, factor = 1, ACTIVATION_FACTOR["mlp"]
    return (factor * largest_batch(c, n_train) * steps * sum(model.sizes)
            + c.entry.memory_vectors * model.n_params) * itemsize


def release_freed_memory() -> bool:
    """Hand the memory the process has freed back to the system (glibc's ``malloc_trim``);
    False where there is no glibc.

    glibc keeps what a thread frees in that thread's arena for reuse, and a lab server's threads
    free a great deal — a compile's working memory, a finished run's buffers — so without this
    a class's server holds its peak of every comparison that ever trained beside another
    (``make bench-class`` records the peak).  Called by hand through ctypes: no library wraps
    it, and it is one call."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _LIBC = False
    if not _LIBC:
        return False
    _LIBC(0)
    return True
