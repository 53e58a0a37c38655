"""HF Lab against the two HF peers, in one run, one core each: ``hessianfree`` 0.4.0
(D. Rasmussen; NumPy) and PyTorchHessianFree (L. Tatzel; PyTorch + BackPACK).

The problem all three solve: the digits autoencoder 64-32-16-32-64 (logistic hidden units, linear
output), the full batch of all 1,797 images / 16, squared error ½·Σ‖y − x‖² averaged over cases,
λ₀ = 1, at most 250 CG iterations, float32, the peers with the same batch for gradient and
curvature (ours in two variants: its defaults' quarter batch and the whole batch).  All three
use Martens' CG stop, warm start, CG backtracking, Levenberg–Marquardt λ and an Armijo line search.
Every side starts **from the same weights** (our sparse initialisation for the round's seed, handed
to the peers), so the traces differ only by the algorithms and their constants; the peer
``hessianfree`` also runs once from its own initialisation, to measure what the draw alone does.

Each side runs in its own process pinned to one core (``sched_setaffinity``) with one thread
(OpenMP/BLAS/MKL variables, XLA's Eigen pool off, ``torch.set_num_threads(1)``); the sides
alternate within each round.  Timed: the update calls only (ours compiled before timing; its compile
time is reported apart); the loss after each update is evaluated outside the timing.  Two figures:

* **milliseconds per CG iteration** over the first 60 updates (the cost of the inner loop);
* **seconds to a training-loss target** — the loss ``hessianfree`` reaches after 60 updates, the
  figure a user feels: every side runs until it reaches the target (at most ``MAX_UPDATES``).

Our side runs in four variants (``OUR_VARIANTS``): the lab's defaults for the digits autoencoder,
which take the Gauss-Newton products of update u on chunk u mod 4 of the cases (Martens 2010 §4.5,
as the lab's data stream cuts a full batch; the CURVES and MNIST presets do the same) and measure
ρ's actual reduction on the whole batch, whose loss CG-backtracking has already evaluated — the
peers, as run here, use every case for both, so this variant's milliseconds per CG iteration are of
a quarter-batch product and only its time to the target compares; the same with ρ measured on the
curvature chunk, as Martens' code does (the defaults until this comparison measured the whole
batch's ρ reaching the target sooner: a quarter of the cases judges a step made for the whole
batch's objective, and costs one more forward pass); the whole batch for the curvature (the lab's
default until the quarter batch — a quarter of the cost per update, though each update gains less —
was measured here ahead of it on the way down and as fast to the target), whose milliseconds per CG
iteration compare with the peers'; and, on the whole batch, the λ floor of 10⁻⁸ the lab had before
this comparison found that float32 CG then runs below its noise floor (λ falls to 10⁻⁸, CG runs to
its 250-iteration cap every update and the model stops improving; the floor is now √ε of the
dtype).  Two other differences from the peers were measured once and changed nothing: Martens' CG
stop with ``hessianfree``'s ε = 5·10⁻⁶ instead of 5·10⁻⁴ (from the 20th update every side runs to
the cap anyway) and ρ from the damped model (both peers) instead of the undamped one (Martens).
Per-update traces (loss, seconds, CG iterations, λ) are recorded for each side and seed
(``peer_trace``) so the sides can be compared update by update.

Environments: ``hessianfree`` is installed from PyPI into ``HFLAB_PEER_ENV`` (default
``.peer-env``); PyTorchHessianFree is not on PyPI — set ``HFLAB_PYTORCH_HF_SOURCE`` to a checkout
of ltatzel/PyTorchHessianFree (the one measured: commit f430d81), and its environment
(``HFLAB_PYTORCH_HF_ENV``, default ``.peer-torch-env``) gets the CPU build of torch and
``backpack-for-pytorch``.  Without the source that peer is left out and the record says so.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hflab.optimizers import HF_PRESETS

SIZES = (64, 32, 16, 32, 64)
CASES = 1797                 # the digits: every case is in the full batch
UPDATES = 60
MAX_UPDATES = 400
MAX_CG = 250
# our variants: name → (label, HFConfig fields changed)
PRESET = HF_PRESETS["digits-ae"]
DEFAULT_CHUNKS = PRESET.get("n_chunks", 1)
DEFAULT_RHO = PRESET.get("rho_batch", "curvature")
OUR_VARIANTS = {"hflab": (f"HF Lab (defaults: curvature on 1/{DEFAULT_CHUNKS} of the cases, "
                          f"cycled; ρ on the {DEFAULT_RHO} batch; λ ≥ √ε)",
                          {"curvature_chunks": DEFAULT_CHUNKS, "rho_batch": DEFAULT_RHO}),
                "hflab_rho_on_chunk": (f"HF Lab, curvature on 1/{DEFAULT_CHUNKS}, ρ on that chunk "
                                       "(the defaults before)",
                                       {"curvature_chunks": DEFAULT_CHUNKS,
                                        "rho_batch": "curvature"}),
                "hflab_whole_batch": ("HF Lab, curvature on the whole batch",
                                      {"curvature_chunks": 1}),
                "hflab_floor_1e-8": ("HF Lab, whole batch, λ ≥ 1e-8 (its floor before)",
                                     {"curvature_chunks": 1, "min_damping": 1e-8})}
ROOT = Path(__file__).resolve().parent.parent
SIDES_DIR = Path(__file__).resolve().parent / "peer_sides"
PEER_ENV = Path(os.environ.get("HFLAB_PEER_ENV") or ROOT / ".peer-env")
TORCH_ENV = Path(os.environ.get("HFLAB_PYTORCH_HF_ENV") or ROOT / ".peer-torch-env")
TORCH_WHEEL = "torch==2.13.0+cpu"     # the CPU build (the default wheel pulls GBs of CUDA)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
              "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"}


def _venv(path: Path, packages: list[str]) -> Path:
    python = path / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *packages], check=True)
    return python


def ensure_peer_env() -> Path:
    """``hessianfree``'s interpreter, creating its environment on first use."""
    return _venv(PEER_ENV, ["hessianfree==0.4.0", "numpy", "matplotlib"])


def torch_peer() -> tuple[Path, str] | None:
    """(interpreter, source folder) of PyTorchHessianFree, or None when no source is given."""
    source = os.environ.get("HFLAB_PYTORCH_HF_SOURCE")
    if not source:
        return None
    if not (Path(source) / "hessianfree" / "optimizer.py").exists():
        raise SystemExit(f"HFLAB_PYTORCH_HF_SOURCE={source!r} holds no hessianfree/optimizer.py; "
                         "point it at a checkout of ltatzel/PyTorchHessianFree")
    return _venv(TORCH_ENV, [TORCH_WHEEL, "backpack-for-pytorch", "numpy"]), source


def pinned_core() -> int:
    """The core every side is pinned to (``HFLAB_PEER_CORE``; default the last allowed one)."""
    return int(os.environ.get("HFLAB_PEER_CORE", max(os.sched_getaffinity(0))))


def run_side(cmd: list[str], core: int, extra_env: dict | None = None) -> dict:
    """Run one side pinned to ``core`` with one thread; its last stdout line is its JSON.  The
    pinning happens in a small launcher that then ``exec``s the side (a ``preexec_fn`` would run
    in a fork of this multithreaded process, which can deadlock)."""
    pin = ("import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); "
           "os.execv(sys.argv[2], sys.argv[2:])")
    out = subprocess.run([sys.executable, "-c", pin, str(core), *cmd], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, **ONE_THREAD, **(extra_env or {})})
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[1]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ours_main(argv: list[str]) -> None:
    """Our side (``python -m benchmarks.peer ours …``), in a process of its own so that its
    thread settings take effect before JAX starts."""
    import jax
    import jax.numpy as jnp

    from hflab.core import hf
    from hflab.core.losses import Batch, get_loss
    from hflab.core.models import Model

    path, min_u, max_u, target, max_cg, overrides = argv
    min_u, max_u, max_cg, target = int(min_u), int(max_u), int(max_cg), float(target)
    data = np.load(path)
    xb = jnp.asarray(data["x"], jnp.float32)
    batch = Batch(xb, xb, jnp.ones((xb.shape[0],), jnp.float32))
    model, loss = Model("mlp", SIZES, ("logistic",) * 3), get_loss("squared")
    params = [{"W": jnp.asarray(data[f"W{i}"]), "b": jnp.asarray(data[f"b{i}"])}
              for i in range(len(SIZES) - 1)]
    overrides = json.loads(overrides)
    # Martens (2010) §4.5: the curvature products on chunk u mod k of the gradient batch, as the
    # lab's data stream cuts it (contiguous chunks, hflab.datastream)
    k = overrides.pop("curvature_chunks", 1)
    size = xb.shape[0] // k
    chunks = [Batch(xb[c * size:(c + 1) * size], xb[c * size:(c + 1) * size],
                    jnp.ones((size,), jnp.float32)) for c in range(k)] if k > 1 else [batch]
    opt = hf.hessian_free(model, loss, damping=1.0, max_cg_iters=max_cg, **overrides)
    state = opt.init(params)
    value = jax.jit(lambda p: loss.value(model.apply(p, xb), xb, batch.mask))
    t0 = time.perf_counter()
    compiled = jax.jit(opt._update).lower(params, state, batch, chunks[0]).compile()
    compile_s = time.perf_counter() - t0
    loss0, trace, seconds = float(value(params)), [], 0.0
    for u in range(max_u):
        t0 = time.perf_counter()
        params, state, info = compiled(params, state, batch, chunks[u % k])
        jax.block_until_ready(params)
        seconds += time.perf_counter() - t0
        now = float(value(params))
        trace.append({"seconds": seconds, "loss": now, "cg_iters": int(info.cg_iters),
                      "damping": float(info.damping)})
        if u + 1 >= min_u and now <= target:
            break
    print(json.dumps({"initial_loss": loss0, "trace": trace, "compile_seconds": compile_s,
                      "runtime": f"JAX {jax.__version__} (XLA CPU, one thread)"}))


def _problem(path: str, seed: int) -> None:
    """The digits (1,797 × 64, /16) and our sparse initial weights for ``seed``, as ``.npz``."""
    import jax

    from hflab import tasks
    from hflab.core.models import Model
    x, _ = tasks._digits_data()
    params = Model("mlp", SIZES, ("logistic",) * 3).init_params(jax.random.PRNGKey(seed))
    np.savez(path, x=np.asarray(x, np.float32),
             **{f"{k}{i}": np.asarray(layer[k], np.float32)
                for i, layer in enumerate(params) for k in ("W", "b")})


def first_at(trace: list[dict], target: float) -> int | None:
    """Index of the first update whose training loss is at most ``target`` (None: never)."""
    return next((i for i, t in enumerate(trace) if t["loss"] <= target), None)


def seconds_to(trace: list[dict], target: float) -> float | None:
    """Update seconds at the first update whose training loss is at most ``target``."""
    i = first_at(trace, target)
    return None if i is None else trace[i]["seconds"]


def ms_per_cg_iteration(trace: list[dict]) -> float:
    first = trace[:UPDATES]
    return 1e3 * first[-1]["seconds"] / max(sum(t["cg_iters"] for t in first), 1)


def gv_flops(cases: int, sizes=SIZES) -> int:
    """Floating-point operations of one Gauss-Newton product on ``cases`` cases, counting the
    matrix products only (two per multiply-add): per dense layer the forward tangent W·ȧ + Ẇ·a and
    the backward pass's products for the gradients of W and of the layer's input — four products of
    the layer's size, two in the first layer, whose input (the data) has no tangent and needs no
    gradient.  The elementwise work (logistic derivatives, the loss Hessian, CG's vector updates)
    is a few per cent on top.  Divided by the milliseconds of a CG iteration it gives the
    arithmetic rate each side reaches — what bounds any speed-up per iteration on one core."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    return 2 * cases * (2 * pairs[0][0] * pairs[0][1] + 4 * sum(a * b for a, b in pairs[1:]))


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run(full: bool):
    core, rounds = pinned_core(), 3
    hf_python, torch_side = ensure_peer_env(), torch_peer()
    sides = {**{k: label for k, (label, _) in OUR_VARIANTS.items()},
             "hessianfree": "hessianfree 0.4.0"}
    if torch_side:
        sides["pytorch_hf"] = "PyTorchHessianFree f430d81"
    results = {name: [] for name in [*sides, "hessianfree_own_init"]}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(rounds):
            path = os.path.join(tmp, f"digits-{seed}.npz")
            _problem(path, seed)
            fixed = [path, str(UPDATES), str(UPDATES), "-inf", str(MAX_CG), str(seed)]
            peer = run_side([str(hf_python), str(SIDES_DIR / "hessianfree_side.py"), *fixed,
                             "shared"], core)
            target = peer["trace"][UPDATES - 1]["loss"]
            long = [path, str(UPDATES), str(MAX_UPDATES), repr(target), str(MAX_CG)]
            runs = {"hessianfree": peer}
            for name, (_, overrides) in OUR_VARIANTS.items():
                runs[name] = run_side([sys.executable, "-m", "benchmarks.peer", "ours", *long,
                                       json.dumps(overrides)], core)
            runs["hessianfree_own_init"] = run_side(
                [str(hf_python), str(SIDES_DIR / "hessianfree_side.py"), *fixed, "own"], core)
            if torch_side:
                runs["pytorch_hf"] = run_side([str(torch_side[0]),
                                               str(SIDES_DIR / "pytorch_hf_side.py"), *long],
                                              core, {"PYTHONPATH": torch_side[1]})
            for name, r in runs.items():
                if name != "hessianfree_own_init" and \
                        abs(r["initial_loss"] - peer["initial_loss"]) > 1e-4 * peer["initial_loss"]:
                    raise RuntimeError(f"{name} starts from loss {r['initial_loss']}, hessianfree "
                                       f"from {peer['initial_loss']}: not the same problem")
                r["target"] = target
                results[name].append(r)
                tr = r["trace"]
                yield {"benchmark": "peer_trace", "side": name, "seed": seed, "target": target,
                       "initial_loss": r["initial_loss"], "runtime": r["runtime"],
                       "loss": [t["loss"] for t in tr], "seconds": [t["seconds"] for t in tr],
                       "cg_iters": [t["cg_iters"] for t in tr],
                       "damping": [t["damping"] for t in tr]}
    yield summarise(results, sides, core)


def summarise(results: dict, sides: dict, core: int) -> dict:
    """One record: per side the medians over seeds, and our speed-ups over each peer."""
    row = {"benchmark": "peer_comparison", "case": f"digits-ae 64-32-16-32-64 full batch {CASES}",
           "core": core, "rounds": len(results["hessianfree"]), "updates": UPDATES,
           "max_updates": MAX_UPDATES, "peers": ", ".join(v for k, v in sides.items()
                                                          if not k.startswith("hflab")),
           "ours_compile_seconds": _median(r["compile_seconds"] for r in results["hflab"])}
    for name, runs in results.items():
        row[f"{name}_runtime"] = runs[0]["runtime"]
        if name in OUR_VARIANTS:
            row[f"{name}_curvature_chunks"] = OUR_VARIANTS[name][1].get("curvature_chunks", 1)
        row[f"{name}_loss_at_60"] = _median(r["trace"][UPDATES - 1]["loss"] for r in runs)
        row[f"{name}_cg_iterations_60"] = _median(sum(t["cg_iters"] for t in r["trace"][:UPDATES])
                                                  for r in runs)
        row[f"{name}_ms_per_cg_iteration"] = _median(ms_per_cg_iteration(r["trace"]) for r in runs)
        if name == "hessianfree_own_init":
            continue
        row[f"{name}_seconds_to_target"] = _median(seconds_to(r["trace"], r["target"])
                                                   for r in runs)
        reached = [first_at(r["trace"], r["target"]) for r in runs]
        row[f"{name}_reached_target"] = sum(i is not None for i in reached)
        row[f"{name}_updates_to_target"] = _median(None if i is None else i + 1 for i in reached)
    row["target_loss"] = _median(r["target"] for r in results["hessianfree"])
    for peer in [k for k in sides if not k.startswith("hflab")]:
        for ours in [v for v in OUR_VARIANTS if results.get(v)]:
            a, b = row[f"{peer}_ms_per_cg_iteration"], row[f"{ours}_ms_per_cg_iteration"]
            row[f"{ours}_per_cg_speedup_over_{peer}"] = a / b
            a, b = row[f"{peer}_seconds_to_target"], row[f"{ours}_seconds_to_target"]
            row[f"{ours}_to_target_speedup_over_{peer}"] = a / b if a and b else None
    return row


if __name__ == "__main__" and sys.argv[1:2] == ["ours"]:
    _ours_main(sys.argv[2:])


# ----------------------------------------------------------------------------- the report
SIDE_LABELS = {**{k: label for k, (label, _) in OUR_VARIANTS.items()},
               "hflab_strict": "HF Lab, CG stop ε 5e-6 (hessianfree's)",
               "hessianfree": "hessianfree 0.4.0", "pytorch_hf": "PyTorchHessianFree",
               "hessianfree_own_init": "hessianfree 0.4.0, its own initial weights"}


def sides_table(df):
    """The newest comparison, one row per side (medians over the seeds)."""
    import pandas as pd
    d = df[df["benchmark"] == "peer_comparison"] if "benchmark" in df else df.iloc[0:0]
    if d.empty:
        return d
    r = d.sort_values("time").iloc[-1]
    rows = []
    for side, label in SIDE_LABELS.items():
        if pd.isna(r.get(f"{side}_loss_at_60", float("nan"))):
            continue
        reached = r.get(f"{side}_reached_target")
        chunks = r.get(f"{side}_curvature_chunks")      # records before 2026-12-07 lack it
        chunks = 1 if pd.isna(chunks) else int(chunks)
        ms = r[f"{side}_ms_per_cg_iteration"]
        rows.append({"side": label, "runtime": r[f"{side}_runtime"], "time": r["time"],
                     "loss_at_60": r[f"{side}_loss_at_60"],
                     "cg_iterations_in_60": r[f"{side}_cg_iterations_60"],
                     "ms_per_cg_iteration": ms,
                     "gflop_per_s_in_cg": gv_flops(CASES // chunks) / (ms * 1e6),
                     "seconds_to_target": r.get(f"{side}_seconds_to_target"),
                     "updates_to_target": r.get(f"{side}_updates_to_target"),
                     "seeds_reaching_target": "—" if pd.isna(reached) else
                     f"{int(reached)}/{int(r['rounds'])}"})
    return pd.DataFrame(rows)


LEVELS = (0.5, 0.35, 0.3, 0.27)      # training losses on the way down to the target


def newest_traces(df):
    """The ``peer_trace`` records of the newest comparison.  A comparison writes its traces round
    by round (each round's stamped with the second it was written), then its summary: the newest
    one's traces are those after the summary before it and up to its own."""
    if "benchmark" not in df:
        return df.iloc[0:0]
    ends = sorted(df.loc[df["benchmark"] == "peer_comparison", "time"])
    t = df[df["benchmark"] == "peer_trace"]
    if not ends:
        return t.iloc[0:0]
    return t[(t["time"] <= ends[-1]) & (t["time"] > (ends[-2] if len(ends) > 1 else ""))]


def levels_table(df):
    """The way down, per side of the newest comparison: the median over its seeds of the update
    seconds to each training loss in :data:`LEVELS` and to the target — blank where a seed never
    got there.  Why beside the target alone: the curves flatten near the target, so the seconds
    to it swing from seed to seed and a ratio read there alone depends on where it sits."""
    import pandas as pd
    t = newest_traces(df)
    if t.empty:
        return t
    rows = []
    for side, d in sorted(t.groupby("side"), key=lambda kv: _side_order(kv[0])):
        traces = [[{"loss": loss, "seconds": sec} for loss, sec in zip(r.loss, r.seconds)]
                  for r in d.itertuples()]
        targets = list(d["target"])
        row = {"side": SIDE_LABELS.get(side, side), "time": d["time"].max(), "seeds": len(d)}
        for name, levels in [*((f"to {v:g}", [v] * len(d)) for v in LEVELS),
                             ("to target", targets)]:
            seconds = [seconds_to(tr, v) for tr, v in zip(traces, levels)]
            row[name] = (float("nan") if None in seconds else statistics.median(seconds))
        rows.append(row)
    return pd.DataFrame(rows)


REPORT_SECTIONS = [
    ("HF against its peers (digits autoencoder, one core each, the same initial weights; the "
     "target is the loss hessianfree reaches after 60 updates)", sides_table, ["side"],
     ["side", "loss_at_60", "cg_iterations_in_60", "ms_per_cg_iteration", "gflop_per_s_in_cg",
      "seconds_to_target", "updates_to_target", "seeds_reaching_target", "runtime"]),
    ("HF against its peers on the way down: median update seconds to each training loss (blank: "
     "a seed never reached it)", levels_table, ["side"],
     ["side", "seeds", *(f"to {v:g}" for v in LEVELS), "to target"]),
]


def _side_order(side: str) -> int:
    order = list(SIDE_LABELS)
    return order.index(side) if side in order else len(order)


def figures(df) -> dict:
    """Training loss against updates and against seconds, every side, seed 0 of the newest
    comparison (the target as a dotted line)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots
    # the newest comparison's sides only (a side an older comparison ran, or ran under another
    # meaning, is not drawn beside them)
    t = newest_traces(df)
    t = t[t["seed"] == 0] if "seed" in t else t
    if t.empty:
        return {}
    t = t.sort_values("side", key=lambda s: s.map(_side_order))
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True)
    for i, r in enumerate(t.itertuples()):
        label = SIDE_LABELS.get(r.side, r.side)
        colour = qualitative.D3[i % len(qualitative.D3)]    # one per side, in both panels
        for col, x in ((1, list(range(1, len(r.loss) + 1))), (2, r.seconds)):
            fig.add_trace(go.Scatter(x=x, y=r.loss, name=label, legendgroup=r.side,
                                     showlegend=col == 1, line={"color": colour}),
                          row=1, col=col)
    for col in (1, 2):
        fig.add_hline(y=t["target"].iloc[0], line_dash="dot", row=1, col=col)
    fig.update_xaxes(title_text="updates", row=1, col=1)
    fig.update_xaxes(title_text="update seconds (one core)", type="log", row=1, col=2)
    # the approach to the target, where the sides differ (every side starts at the same loss)
    low = math.log10(0.85 * t["target"].iloc[0])
    fig.update_yaxes(type="log", range=[low, math.log10(3.0)])
    fig.update_yaxes(title_text="training loss", row=1, col=1)
    fig.update_layout(title="HF against its peers: digits autoencoder, seed 0", width=1000,
                      height=480)
    return {"peers": fig}

