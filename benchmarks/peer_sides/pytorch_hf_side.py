"""PyTorchHessianFree (L. Tatzel; PyTorch + BackPACK's Gauss-Newton products) on the protocol of
``benchmarks.peer``.  Run with the peer's source folder on ``PYTHONPATH`` (it is not on PyPI).

The network is the same sigmoid MLP with a linear output, started from the shared weights; the
loss is ½·Σ‖y − x‖² averaged over cases, as in the other two; the optimiser keeps the peer's
defaults (GGN, λ adapted by Levenberg–Marquardt, warm start ×0.95, Martens' CG stop, CG
backtracking, Armijo line search) with λ₀ = 1 and at most ``max_cg`` CG iterations.  Timed:
``step`` (forward, gradient, CG, backtracking, λ, line search); the loss after each update is
evaluated outside the timing."""
import json
import sys
import time

import numpy as np
import torch
from hessianfree.optimizer import HessianFree

path, min_updates, max_updates, target, max_cg = sys.argv[1:6]
min_updates, max_updates, max_cg, target = int(min_updates), int(max_updates), int(max_cg), float(target)
torch.set_num_threads(1)
data = np.load(path)
x = torch.from_numpy(data["x"].astype(np.float32))
n_layers = sum(1 for k in data.files if k.startswith("W"))
layers = []
for i in range(n_layers):
    w = data[f"W{i}"]
    lin = torch.nn.Linear(*w.shape)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w.T.astype(np.float32)))
        lin.bias.copy_(torch.from_numpy(data[f"b{i}"].astype(np.float32)))
    layers += [lin, torch.nn.Sigmoid()] if i < n_layers - 1 else [lin]
model = torch.nn.Sequential(*layers)


def loss_of(out):
    return 0.5 * ((out - x) ** 2).sum() / x.shape[0]


def forward():
    out = model(x)
    return loss_of(out), out


opt = HessianFree(model.parameters(), curvature_opt="ggn", damping=1.0, cg_max_iter=max_cg)
with torch.no_grad():
    loss0 = float(loss_of(model(x)))
trace, seconds = [], 0.0
for u in range(max_updates):
    t0 = time.perf_counter()
    opt.step(forward=forward)
    seconds += time.perf_counter() - t0
    with torch.no_grad():
        loss = float(loss_of(model(x)))
    trace.append({"seconds": seconds, "loss": loss, "cg_iters": opt.state["num_cg_iters"][-1],
                  "damping": float(opt.state["dampings"][-1])})
    if u + 1 >= min_updates and loss <= target:
        break
threads = torch.__config__.parallel_info().splitlines()
print(json.dumps({"initial_loss": loss0, "trace": trace,
                  "runtime": f"PyTorch {torch.__version__}, {torch.get_num_threads()} thread(s), "
                             + next((t.strip() for t in threads if "Math Kernel" in t), "")}))
