"""Where HF stands on the deep autoencoders, read from the long runs' curves (``make
bench-autoencoders``): training error at **equal updates, equal forward+backward passes and equal
optimisation seconds**, and what one update of each optimiser costs — the measured reason behind
the ranking at equal seconds.

The comparison point of an axis is the largest cost every shown run reached (the smallest final
cost among them: HF's update count, the cheapest optimiser's passes, the first-order runs'
optimisation seconds, which stop short of the budget because the budget also pays their
evaluations).  A run's training error there is its value at its last evaluation at or before
that cost; where that evaluation is older than half the cost (the first-order runs on the
20,000-image set are evaluated every 1,000 updates, so they have nothing near HF's ~60 updates)
the cell stays empty rather than report a stale figure.  Medians over seeds; each optimiser at
its defaults, and HF's, Nesterov momentum's and K-FAC's best labelled settings where they were
recorded ("best HF tried", "best Nesterov tried": Sutskever et al.'s momentum schedule, say;
"best K-FAC tried": a minibatch on the 20,000-image set, say).

A pass is one forward+backward over the batch the optimiser used — HF's gradient batch or
curvature chunk, K-FAC's batch, the first-order methods' 200 cases — so equal passes is not equal
arithmetic: the milliseconds per pass say by how much.  CPU runs only.  Seconds compare only
between runs timed on one machine: :func:`same_machine` makes that comparison from the records
that carry a machine instance; the other tables take each optimiser's newest runs, which may come
from different sessions' machines.
"""
from __future__ import annotations

import math

import pandas as pd

DEFAULTS = ("hf", "kfac", "adam", "momentum", "sophia", "muon")
AXES = ("updates", "passes", "seconds")
BEST_HF = "best HF tried"
BEST_NESTEROV = "best Nesterov tried"
BEST_KFAC = "best K-FAC tried"
# an optimiser whose labelled settings (records "hf (…)", "momentum (…)") compete for a column
TRIED = {"hf": BEST_HF, "momentum": BEST_NESTEROV, "kfac": BEST_KFAC}


def long_runs(df: pd.DataFrame, per_machine: bool = False,
              unrecorded: bool = False) -> pd.DataFrame:
    """The long autoencoder runs on the CPU with curves, newest per (case, optimizer, seed) — per
    machine instance too with ``per_machine`` (only runs that record one; with ``unrecorded``
    the older runs too, as one more machine ``"unrecorded"``) — each case at its standing budget
    (:func:`standing_budgets`); the optimisers at their defaults and the labelled settings of
    :data:`TRIED`."""
    from .summary import autoencoder_cases
    a = df[(df["benchmark"] == "autoencoder") & (df["mode"] == "papers")]
    a = a[a["device"] == "cpu"] if "device" in a else a     # the reference machine
    if a.empty or "curve_seconds" not in a:
        return a.iloc[0:0].assign(case=[])
    curved = a["curve_seconds"].apply(lambda v: isinstance(v, list) and len(v) > 0)
    a = autoencoder_cases(a[curved])
    a = a[a["budget_seconds"] == a["case"].map(standing_budgets(a))]
    keys = ["case", "optimizer", "seed", "budget_seconds"]
    if per_machine:
        if unrecorded:
            a = a.assign(boot=(a["boot"] if "boot" in a else pd.Series(index=a.index,
                                                                         dtype=object))
                         .fillna("unrecorded"))
        if "boot" not in a:
            return a.iloc[0:0]
        a, keys = a[a["boot"].notna()], keys + ["boot"]
    a = a.sort_values("time").groupby(keys).tail(1)
    return a[a["optimizer"].isin(DEFAULTS) | a["optimizer"].str.startswith(tried_prefixes())]


def standing_budgets(a: pd.DataFrame) -> pd.Series:
    """Per case (rows carrying ``case``) the budget its standing is read at: the one at which the
    most optimisers ran at their defaults (ties: the longest; a case with none at its defaults:
    its longest).  A longer run of a few of them — does Adam catch HF given more time? — is a
    check on that ranking, reported beside it, not a new standing of two optimisers."""
    d = a[a["optimizer"].isin(DEFAULTS)]
    counts = d.groupby(["case", "budget_seconds"])["optimizer"].nunique().rename("n").reset_index()
    chosen = counts.sort_values(["n", "budget_seconds"]).groupby("case").tail(1)
    longest = a.groupby("case")["budget_seconds"].max()
    return chosen.set_index("case")["budget_seconds"].reindex(longest.index).fillna(longest)


def tried_prefixes() -> tuple[str, ...]:
    return tuple(f"{base} (" for base in TRIED)


def error_at(costs: list, errors: list, cost: float) -> float | None:
    """The training error at the last evaluation at or before ``cost`` (None when that
    evaluation was made before half of ``cost``: too stale to stand for it)."""
    at = [i for i, c in enumerate(costs) if c <= cost]
    if not at or costs[at[-1]] < cost / 2:
        return None
    return float(errors[at[-1]])


def median_at(runs: pd.DataFrame, axis: str, cost: float) -> float:
    """The median over ``runs`` (one optimiser's seeds) of the training error at ``cost`` on
    ``axis`` (:func:`error_at`); NaN when no run has an evaluation recent enough."""
    values = [v for c, e in zip(runs[f"curve_{axis}"], runs["curve_train_error"])
              if (v := error_at(c, e, cost)) is not None]
    return float(pd.Series(values).median()) if values else float("nan")


def best_setting(tried: pd.DataFrame, default_median: float) -> str | None:
    """Of one optimiser's labelled settings (rows ``hf (…)``, say), the one with the lowest
    median final training error, if it beats ``default_median`` (its defaults'); else None."""
    if tried.empty:
        return None
    med = tried.groupby("optimizer")["train_error"].median()
    return med.idxmin() if med.min() < default_median else None


def _shown(a: pd.DataFrame) -> pd.DataFrame:
    """Defaults, plus each :data:`TRIED` optimiser's best labelled setting
    (:func:`best_setting`), relabelled ``best HF tried`` / ``best Nesterov tried`` / ``best
    K-FAC tried``."""
    base = a[a["optimizer"].isin(DEFAULTS)]
    shown = [base]
    for name, column in TRIED.items():
        if name not in set(base["optimizer"]):
            continue
        tried = a[a["optimizer"].str.startswith(f"{name} (")]
        label = best_setting(tried, base[base["optimizer"] == name]["train_error"].median())
        if label is not None:
            shown.append(tried[tried["optimizer"] == label].assign(optimizer=column))
    return pd.concat(shown)


def equal_costs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (case, axis): the comparison cost, each optimiser's median training error
    there, and HF's error over Adam's (< 1: HF ahead)."""
    rows = []
    for case, d in long_runs(df).groupby("case"):
        d = _shown(d)
        for axis in AXES:
            cost = min(r[-1] for r in d[f"curve_{axis}"])
            row = {"case": case, "at equal": axis, "order": AXES.index(axis),
                   "cost": float(cost), "time": d["time"].max(), "machines": machines(d)}
            for opt, runs in d.groupby("optimizer"):
                row[opt] = median_at(runs, axis, cost)
            if pd.notna(row.get("hf")) and pd.notna(row.get("adam")):
                row["hf ÷ adam"] = row["hf"] / row["adam"]
            rows.append(row)
    return pd.DataFrame(rows)


def machines(runs: pd.DataFrame) -> int:
    """How many machine instances timed ``runs`` (runs recorded before the boot id count as
    one more, unknown machine): above 1, their seconds do not compare (:func:`same_machine`)."""
    boots = runs["boot"] if "boot" in runs else pd.Series([None] * len(runs), dtype=object)
    return int(boots.fillna("unrecorded").nunique())


def same_machine(df: pd.DataFrame) -> pd.DataFrame:
    """HF against Adam at equal optimisation seconds among runs timed on one machine instance
    (records sharing a ``boot`` id; older records, made before it was recorded, are left out).
    The seconds axis depends on the hardware — Adam's 200-case updates are bound by dispatch,
    HF's large products by arithmetic — so two 2-core machines can put them at different ratios,
    and only runs from one machine compare there.  One row per (case, machine, HF setting): the
    comparison point is the largest optimisation seconds those HF runs and the machine's Adam
    runs all reached."""
    runs = long_runs(df, per_machine=True)
    if runs.empty:
        return pd.DataFrame()
    rows = []
    for case, boot, label, hf, adam in hf_and_adam_by_machine(runs):
        both = pd.concat([adam, hf])
        cost = min(r[-1] for r in both["curve_seconds"])
        med = {"hf": median_at(hf, "seconds", cost), "adam": median_at(adam, "seconds", cost)}
        rows.append({"case": case, "machine": boot[:8], "hf setting": label,
                     "hf seeds": len(hf), "adam seeds": len(adam), "seconds": float(cost),
                     "hf": med["hf"], "adam": med["adam"], "hf ÷ adam": med["hf"] / med["adam"],
                     "time": both["time"].max()})
    return pd.DataFrame(rows)


def hf_and_adam_by_machine(runs: pd.DataFrame):
    """(case, machine, HF setting, its runs, Adam's runs) for every HF setting of ``runs`` (the
    per-machine :func:`long_runs`) timed on a machine that also timed Adam."""
    for (case, boot), d in runs.groupby(["case", "boot"]):
        adam = d[d["optimizer"] == "adam"]
        if adam.empty:
            continue
        for label, hf in d[d["optimizer"].str.startswith("hf")].groupby("optimizer"):
            yield case, boot, label, hf, adam


FRACTIONS = (0.5, 0.75, 1.0)


def rankings(df: pd.DataFrame) -> pd.DataFrame:
    """Whether the budget was long enough for the ranking to settle: per case, the order of the
    optimisers' median training errors at ½, ¾ and all of the equal-seconds comparison point
    (:func:`equal_costs`), and whether the last two orders agree."""
    rows = []
    for case, d in long_runs(df).groupby("case"):
        d = _shown(d)
        cost = min(r[-1] for r in d["curve_seconds"])
        orders = {}
        for fraction in FRACTIONS:
            medians = {opt: median_at(runs, "seconds", fraction * cost)
                       for opt, runs in d.groupby("optimizer")}
            orders[fraction] = sorted((o for o, m in medians.items() if pd.notna(m)),
                                      key=medians.get)
        rows.append({"case": case, "seconds": float(cost), "time": d["time"].max(),
                     **{f"order at {f:g}×": " < ".join(o) for f, o in orders.items()},
                     "settled": orders[FRACTIONS[-2]] == orders[FRACTIONS[-1]]})
    return pd.DataFrame(rows)


def update_costs(df: pd.DataFrame) -> pd.DataFrame:
    """Per (case, optimizer), medians over seeds: updates made, seconds and forward+backward
    passes per update, and seconds per pass — what a unit of progress has to pay for."""
    rows = []
    shown = [_shown(d) for _, d in long_runs(df).groupby("case")]
    for (case, opt), runs in (pd.concat(shown) if shown else pd.DataFrame(
            columns=["case", "optimizer"])).groupby(["case", "optimizer"]):
        per = pd.DataFrame({"updates": [u[-1] for u in runs["curve_updates"]],
                            "seconds": [s[-1] for s in runs["curve_seconds"]],
                            "passes": [p[-1] for p in runs["curve_passes"]]})
        per = per[per["updates"] > 0]
        rows.append({"case": case, "optimizer": opt, "time": runs["time"].max(),
                     "seeds": len(runs), "updates": float(per["updates"].median()),
                     "seconds_per_update": float((per["seconds"] / per["updates"]).median()),
                     "passes_per_update": float((per["passes"] / per["updates"]).median()),
                     "ms_per_pass": float((1e3 * per["seconds"] / per["passes"]).median())})
    return pd.DataFrame(rows)


def first_reach(costs: list, errors: list, target: float) -> float:
    """The cost at a run's first evaluation with training error at or below ``target`` (inf if
    none: it never got there within its budget)."""
    return next((float(c) for c, e in zip(costs, errors) if e <= target), math.inf)


def to_hf_error(df: pd.DataFrame) -> pd.DataFrame:
    """Time to a target, the figure a user feels: per case, machine instance and HF setting, the
    target is that HF setting's median final training error there; each run's updates and
    seconds to its first evaluation at or below it, medians over seeds (a median of never: not
    reached in the budget), for HF and for Adam on the same machine (runs recorded before
    machines were, as one machine "unrecorded").  Its decomposition is the measured reason: an
    HF update is *worth* as many Adam updates as Adam needs per HF update to get there, and
    *costs* as many Adam updates as its seconds would buy — HF gets there sooner exactly when
    its worth exceeds its cost.  The first-order runs are evaluated every 1,000 updates on the
    20,000-image set (every 50 on the others), which bounds their resolution."""
    rows = []
    runs = long_runs(df, per_machine=True, unrecorded=True)
    for case, boot, label, hf, adam in hf_and_adam_by_machine(runs):
        target = float(hf["train_error"].median())
        reach = {(name, axis): float(pd.Series([
            first_reach(c, e, target) for c, e in zip(group[f"curve_{axis}"],
                                                      group["curve_train_error"])]).median())
            for name, group in (("hf", hf), ("adam", adam)) for axis in ("updates", "seconds")}
        hf_u, adam_u = reach["hf", "updates"], reach["adam", "updates"]
        hf_s, adam_s = reach["hf", "seconds"], reach["adam", "seconds"]
        both = math.isfinite(hf_s) and math.isfinite(adam_s)
        sooner = ("neither" if math.isinf(hf_s) and math.isinf(adam_s) else
                  "hf" if hf_s < adam_s else "adam")
        rows.append({"case": case, "machine": boot[:8] if boot != "unrecorded" else boot,
                     "hf setting": label, "hf seeds": len(hf), "adam seeds": len(adam),
                     "target": target, "hf updates": hf_u, "adam updates": adam_u,
                     "hf seconds": hf_s, "adam seconds": adam_s, "sooner": sooner,
                     # seconds ratio = cost ÷ worth, exactly
                     "seconds hf ÷ adam": hf_s / adam_s if both else math.nan,
                     "worth (adam updates per hf update)": adam_u / hf_u if both else math.nan,
                     "cost (adam updates per hf update's seconds)":
                         (hf_s / hf_u) / (adam_s / adam_u) if both else math.nan,
                     "time": pd.concat([hf, adam])["time"].max()})
    # not reached: shown as "—"
    return pd.DataFrame(rows).replace(math.inf, math.nan)


def times(ratio: float) -> str:
    """A ratio to two significant figures, keeping a trailing zero ("1.0×", not "1×": a ratio
    near one is the figure to read closely)."""
    return f"{ratio:#.2g}".rstrip(".") + "×"


def summary_texts(df: pd.DataFrame) -> dict[str, str]:
    """The README's figures, per case: HF's training error over Adam's at equal updates / passes /
    seconds (and HF's best labelled setting's at equal seconds), saying when those seconds pair
    runs of different machines and what HF's best is against Adam on one machine.  What an
    update costs is the report's (:func:`update_costs`): the row has no room for it."""
    eq, one = equal_costs(df), same_machine(df)
    if eq.empty or "hf ÷ adam" not in eq:
        return {}
    texts = {}
    for case, d in eq.groupby("case", sort=True):
        by_axis = d.set_index("at equal").reindex(list(AXES))
        # "0.13 / 2.5 / 30×": one sign for the three ratios (the row is near the line length)
        ratios = [times(r)[:-1] if pd.notna(r) else "—" for r in by_axis["hf ÷ adam"]]
        ratios[-1] += "×" if ratios[-1] != "—" else ""
        best = (by_axis.loc["seconds", BEST_HF] / by_axis.loc["seconds", "adam"]
                if BEST_HF in d else float("nan"))
        notes = [f"best {times(best)}"] if pd.notna(best) else []     # HF's best setting
        machines = by_axis.loc["seconds", "machines"]
        # where the seconds pair runs of several machines: per machine that timed both, HF's best
        # setting with the most seeds against Adam on that machine — the range over machines
        # (on one machine that would repeat the figures before it); else how many machines
        mine = one[one["case"] == case] if len(one) and machines > 1 else one.iloc[0:0]
        if len(mine):
            mine = mine[mine["hf seeds"] == mine["hf seeds"].max()]
            per_machine = mine.groupby("machine")["hf ÷ adam"].min()
            low, high = times(per_machine.min()), times(per_machine.max())
            notes.append(f"one machine {low}" if low == high else
                         f"one machine {low[:-1]}–{high}")
        elif machines > 1:
            notes.append(f"{machines:.0f} machines")
        texts[case] = " / ".join(ratios) + (f" ({', '.join(notes)})" if notes else "")
    return texts


EQUAL_COLUMNS = ["case", "at equal", "cost", "hf", BEST_HF, "adam", "momentum", BEST_NESTEROV,
                 "kfac", BEST_KFAC, "sophia", "muon", "hf ÷ adam", "machines"]
REPORT_SECTIONS = [
    ("Deep autoencoders at equal cost: median training error at equal updates, passes and "
     "seconds (the largest cost every run reached; a pass is one forward+backward over the "
     "optimiser's batch — HF's thousands of cases, the first-order methods' 200 — so equal "
     "passes is not equal arithmetic; hf ÷ adam < 1: HF ahead)", equal_costs,
     ["case", "order"], EQUAL_COLUMNS),
    ("HF against Adam on one machine: median training error at equal optimisation seconds among "
     "runs timed on the same machine instance (hf ÷ adam < 1: HF ahead)", same_machine,
     ["case", "machine", "hf setting"],
     ["case", "machine", "hf setting", "hf seeds", "adam seeds", "seconds", "hf", "adam",
      "hf ÷ adam"]),
    ("Does the autoencoder ranking settle? (the order of the median training errors at ½, ¾ "
     "and all of the equal-seconds point; settled: the last two agree)", rankings, ["case"],
     ["case", "seconds", *(f"order at {f:g}×" for f in FRACTIONS), "settled"]),
    ("Time to HF's training error, on one machine: updates and seconds until each run's first "
     "evaluation at or below the HF setting's median final training error, medians over seeds "
     "(— : not reached in the budget; machine 'unrecorded': runs from before machines were "
     "recorded, taken as one); HF gets there sooner exactly when an HF update's worth in Adam "
     "updates exceeds its cost in Adam updates' seconds", to_hf_error,
     ["case", "machine", "hf setting"],
     ["case", "machine", "hf setting", "hf seeds", "adam seeds", "target", "hf updates",
      "adam updates", "hf seconds", "adam seconds", "sooner", "seconds hf ÷ adam",
      "worth (adam updates per hf update)", "cost (adam updates per hf update's seconds)"]),
    ("What one autoencoder update costs (medians over seeds; a pass is over the batch the "
     "optimiser used)", update_costs,
     ["case", "optimizer"], ["case", "optimizer", "seeds", "updates", "seconds_per_update",
                             "passes_per_update", "ms_per_pass"]),
]
