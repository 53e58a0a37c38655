"""The peer comparison's arithmetic and our side of its protocol (the peers' own sides need their
environments and run in ``make bench-peers``)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import peer, summary

ROOT = Path(__file__).resolve().parents[2]


def _trace(losses, ms_per_update=10.0, cg=5):
    return [{"seconds": (i + 1) * ms_per_update / 1e3, "loss": l, "cg_iters": cg, "damping": 1.0}
            for i, l in enumerate(losses)]


def test_seconds_to_target_is_the_first_update_at_or_below_it():
    tr = _trace([5.0, 3.0, 2.0, 2.5, 1.0])
    assert peer.seconds_to(tr, 2.0) == pytest.approx(0.03)
    assert peer.seconds_to(tr, 0.5) is None


def test_summary_speed_ups_divide_the_peer_by_ours():
    losses = list(np.linspace(10, 1, peer.UPDATES))
    slow = _trace(losses, ms_per_update=40.0, cg=10)                  # 4 ms per CG iteration
    fast = _trace(losses[:30] + [0.5] * 30, ms_per_update=10.0, cg=10)  # 1 ms; target at 31
    quarter = _trace(losses[:10] + [0.5] * 50, ms_per_update=5.0, cg=10)   # target at 11
    results = {"hessianfree": [{"trace": slow, "target": 1.0, "runtime": "np"}],
               "hflab": [{"trace": quarter, "target": 1.0, "runtime": "jax", "compile_seconds": 2}],
               "hflab_whole_batch": [{"trace": fast, "target": 1.0, "runtime": "jax",
                                      "compile_seconds": 2}],
               "hflab_floor_1e-8": [{"trace": slow, "target": 1.0, "runtime": "jax",
                                     "compile_seconds": 2}],
               "hessianfree_own_init": [{"trace": slow, "runtime": "np"}]}
    sides = {"hflab": "", "hflab_whole_batch": "", "hflab_floor_1e-8": "", "hessianfree": ""}
    row = peer.summarise(results, sides, core=1)
    assert row["hflab_whole_batch_per_cg_speedup_over_hessianfree"] == pytest.approx(4.0)
    assert row["hessianfree_seconds_to_target"] == pytest.approx(2.4)
    assert row["hflab_whole_batch_seconds_to_target"] == pytest.approx(0.31)
    assert row["hflab_whole_batch_to_target_speedup_over_hessianfree"] == pytest.approx(2.4 / 0.31)
    assert row["hflab_updates_to_target"] == 11
    assert row["hflab_to_target_speedup_over_hessianfree"] == pytest.approx(2.4 / 0.055)
    row["time"] = "2026-12-05T00:00:00"
    table = peer.sides_table(pd.DataFrame([{"benchmark": "peer_comparison", "device": "cpu", **row}]))
    assert list(table["seeds_reaching_target"]) == ["1/1", "1/1", "1/1", "1/1", "—"]
    # the throughput of the defaults' CG counts the quarter-batch product it runs
    ours = table.set_index("side").loc[peer.OUR_VARIANTS["hflab"][0]]
    assert ours["gflop_per_s_in_cg"] == pytest.approx(
        peer.gv_flops(peer.CASES // peer.DEFAULT_CHUNKS) / (0.5 * 1e6))
    (what, figure, section), = summary._speed_rows(
        pd.DataFrame([{"benchmark": "peer_comparison", "device": "cpu", **row}]))
    assert figure == ("43.6× faster than hessianfree; per CG iteration of the whole-batch "
                      "product 4.0×; whole-batch curvature 7.7×")
    assert section == "HF against its peers" and "one core each" in what


def test_our_side_starts_from_the_weights_it_is_given(tmp_path):
    """Its initial loss equals ½·Σ‖y − x‖²/N of the handed weights computed here in NumPy, and it
    stops at the first update past ``min_updates`` whose loss reaches the target."""
    rng = np.random.default_rng(0)
    x = rng.random((50, 64)).astype(np.float32)
    sizes = peer.SIZES
    weights = {f"W{i}": (rng.standard_normal((a, b)) * 0.3).astype(np.float32)
               for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}
    weights.update({f"b{i}": (rng.standard_normal(b) * 0.1).astype(np.float32)
                    for i, b in enumerate(sizes[1:])})
    np.savez(tmp_path / "p.npz", x=x, **weights)
    a = x
    for i in range(len(sizes) - 1):
        a = a @ weights[f"W{i}"] + weights[f"b{i}"]
        a = 1 / (1 + np.exp(-a)) if i < len(sizes) - 2 else a
    expected = 0.5 * ((a - x) ** 2).sum() / len(x)
    out = subprocess.run([sys.executable, "-m", "benchmarks.peer", "ours", str(tmp_path / "p.npz"),
                          "2", "50", "1e9", "20", '{"min_damping": 1e-3}'], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["initial_loss"] == pytest.approx(expected, rel=1e-5)
    assert len(r["trace"]) == 2                         # the huge target is met at once
    assert r["trace"][1]["loss"] < r["trace"][0]["loss"] < expected
    assert 1 <= r["trace"][0]["cg_iters"] <= 20
    assert all(t["damping"] >= 1e-3 for t in r["trace"])  # the settings it was handed
    # Martens' curvature mini-batch: the same start, its own (different) steps on half-batches
    out = subprocess.run([sys.executable, "-m", "benchmarks.peer", "ours", str(tmp_path / "p.npz"),
                          "2", "50", "1e9", "20", '{"min_damping": 1e-3, "curvature_chunks": 2}'],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    half = json.loads(out.stdout.strip().splitlines()[-1])
    assert half["initial_loss"] == r["initial_loss"] and len(half["trace"]) == 2
    assert half["trace"][0]["loss"] < expected
    assert half["trace"][0]["loss"] != pytest.approx(r["trace"][0]["loss"], rel=1e-6)


def test_the_noise_floor_benchmark_applies_each_floor():
    """λ starts at the preset's value and can only fall to the floor each variant names."""
    from benchmarks import cg_floor
    high = cg_floor.run_variant(None, seed=0, steps=40)
    low = cg_floor.run_variant(1e-8, seed=0, steps=40)
    assert min(high["damping"]) >= 3.45e-4 * (1 - 1e-6)
    assert min(low["damping"]) < 3.45e-4           # without the floor λ falls past it
    assert len(high["train_loss"]) == 40 and high["train_loss"][-1] < high["train_loss"][0]
    # the chosen iterate is one CG reached: at most the iterations it ran
    assert all(0 <= c <= i for c, i in zip(high["chosen"], high["cg_iters"]))


def test_the_share_of_capped_updates_that_kept_the_last_iterate():
    from benchmarks.cg_floor import last_chosen_at_cap as share
    # updates 2 and 3 hit the cap; of them only update 2 kept its last (250th) iterate
    assert share([10, 250, 250, 80], [10, 250, 197, 80]) == 0.5
    assert share([10, 80], [10, 54]) is None            # no update at the cap: no figure
    assert share([300], [250], cap=300) == 0.0         # the cap is a parameter


def test_the_flop_count_of_a_gauss_newton_product_is_xlas():
    """``gv_flops`` (matrix products counted by hand) against XLA's own count of the compiled
    product — the lab's Gauss-Newton operator on the comparison's net and batch: the elementwise
    work XLA also counts is a few per cent; a layer's product left out or counted twice is ≥ 5 %."""
    import jax
    import jax.numpy as jnp

    from hflab.core import curvature
    from hflab.core.losses import Batch, BoundLoss, get_loss
    from hflab.core.models import Model
    model, loss = Model("mlp", peer.SIZES, ("logistic",) * 3), get_loss("squared")
    params = model.init_params(jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    x = jnp.ones((peer.CASES, peer.SIZES[0]), jnp.float32)
    b = Batch(x, x, jnp.ones((peer.CASES,), jnp.float32))
    # linearised once, as HF does per update: what a CG iteration repeats is the product alone
    op = curvature.for_function(lambda q: model.apply(q, b.x), BoundLoss(loss, b.y, b.mask),
                                params)
    cost = jax.jit(op.multiply_tree).lower(params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    ours = peer.gv_flops(peer.CASES)
    assert ours == 2 * 1797 * (2 * 64 * 32 + 4 * (32 * 16 + 16 * 32 + 32 * 64))
    assert 1.0 <= cost["flops"] / ours < 1.05, (cost["flops"], ours)


def test_the_figure_draws_the_newest_comparison_only():
    """A side an older comparison ran (or ran under another meaning) is not drawn beside the
    newest comparison's sides."""
    def trace(side, time, loss0):
        return {"benchmark": "peer_trace", "side": side, "seed": 0, "time": time, "target": 0.5,
                "loss": [loss0, 0.6, 0.4], "seconds": [0.1, 0.2, 0.3]}
    old, new = "2026-12-06T10:00:00", "2026-12-07T10:00:00"
    df = pd.DataFrame([trace("hflab_chunks4", old, 9.0), trace("hflab", old, 8.0),
                       {"benchmark": "peer_comparison", "time": old},
                       trace("hessianfree", new, 3.0), trace("hflab", new, 2.0),
                       # a round's records written across a second boundary: still one round
                       trace("hflab_whole_batch", "2026-12-07T10:00:01", 1.0),
                       {"benchmark": "peer_comparison", "time": "2026-12-07T10:00:02"}])
    fig = peer.figures(df)["peers"]
    drawn = [(t.legendgroup, t.y[0]) for t in fig.data if t.xaxis == "x"]
    assert drawn == [("hflab", 2.0), ("hflab_whole_batch", 1.0), ("hessianfree", 3.0)]


def test_the_way_down_takes_the_newest_comparison_s_traces_and_blanks_a_level_not_reached():
    def trace(side, seed, losses, time, ms=100.0):
        tr = _trace(losses, ms_per_update=ms)
        return {"benchmark": "peer_trace", "side": side, "seed": seed, "target": losses[-1],
                "time": time, "loss": [t["loss"] for t in tr],
                "seconds": [t["seconds"] for t in tr]}
    old = [trace("hflab", 0, [0.2, 0.1], "2026-12-01T00"),
           {"benchmark": "peer_comparison", "time": "2026-12-01T01"}]
    new = [trace("hflab", 0, [0.6, 0.4, 0.29, 0.2], "2026-12-08T00"),          # 0.3 at 0.3 s
           trace("hessianfree", 0, [0.6, 0.4, 0.29, 0.2], "2026-12-08T00", ms=400.0),
           trace("hflab", 1, [0.45, 0.32, 0.26, 0.25], "2026-12-08T01"),        # 0.3 at 0.3 s
           trace("hessianfree", 1, [0.6, 0.45, 0.4, 0.36], "2026-12-08T01", ms=400.0),
           {"benchmark": "peer_comparison", "time": "2026-12-08T02"}]
    table = peer.levels_table(pd.DataFrame(old + new)).set_index("side")
    ours, theirs = (table.loc[peer.SIDE_LABELS[k]] for k in ("hflab", "hessianfree"))
    assert ours["seeds"] == 2 and theirs["seeds"] == 2       # not the older comparison's trace
    assert ours["to 0.5"] == pytest.approx(0.15)             # seeds: 0.2 s and 0.1 s
    assert ours["to 0.3"] == pytest.approx(0.3)
    assert ours["to target"] == pytest.approx(0.4)
    assert theirs["to 0.5"] == pytest.approx(0.8)            # 0.8 s on both seeds
    assert np.isnan(theirs["to 0.35"])                       # 1.2 s and, on seed 1, never
    assert theirs["to target"] == pytest.approx(1.6)         # each seed's own target
