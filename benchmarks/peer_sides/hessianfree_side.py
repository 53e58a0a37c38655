"""``hessianfree`` 0.4.0 (D. Rasmussen, NumPy) on the protocol of ``benchmarks.peer``.

Timed: ``compute_update`` (its forward pass, gradient, CG, backtracking, λ and line search) and
the weight update; the loss after each update is evaluated outside the timing.  ``--own-init``
keeps the peer's own sparse initialisation (seeded NumPy) instead of the shared weights."""
import json
import sys
import time

import numpy as np
import hessianfree as hf

path, min_updates, max_updates, target, max_cg, seed, own = sys.argv[1:8]
min_updates, max_updates, max_cg, seed = int(min_updates), int(max_updates), int(max_cg), int(seed)
target = float(target)
data = np.load(path)
x = data["x"].astype(np.float32)
n_layers = sum(1 for k in data.files if k.startswith("W"))
sizes = [data["W0"].shape[0]] + [data[f"W{i}"].shape[1] for i in range(n_layers)]
init = None if own == "own" else np.concatenate(
    [np.concatenate([data[f"W{i}"].ravel(), data[f"b{i}"].ravel()]) for i in range(n_layers)]
).astype(np.float32)
net = hf.FFNet(sizes, layers=[hf.nl.Linear()] + [hf.nl.Logistic()] * (n_layers - 1) + [hf.nl.Linear()],
               loss_type=hf.loss_funcs.SquaredError(), rng=np.random.RandomState(seed),
               load_weights=init)
opt = hf.opt.HessianFree(CG_iter=max_cg, init_damping=1.0, plotting=False)
net.optimizer = opt
cg_iters = []
cg = opt.conjugate_gradient


def counted_cg(*a, **k):
    out = cg(*a, **k)
    cg_iters.append(int(out[-1][0]) + 1)          # the loop index of the last iteration, from 0
    return out


opt.conjugate_gradient = counted_cg
everything = np.arange(x.shape[0])
trace, seconds = [], 0.0
loss0 = float(net.error(net.W, x, x))
for u in range(max_updates):
    damping = float(opt.damping)                  # λ this update uses
    t0 = time.perf_counter()
    net.cache_minibatch(x, x, everything)
    net.W += opt.compute_update(False)
    seconds += time.perf_counter() - t0
    net.activations = net.d_activations = None
    loss = float(net.error(net.W, x, x))
    trace.append({"seconds": seconds, "loss": loss, "cg_iters": cg_iters[-1],
                  "damping": damping})
    if u + 1 >= min_updates and loss <= target:
        break
blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
blas = blas.get("openblas configuration") or f"{blas.get('name')} {blas.get('version')}"
print(json.dumps({"initial_loss": loss0, "trace": trace,
                  "runtime": f"NumPy {np.__version__} ({blas})"}))
