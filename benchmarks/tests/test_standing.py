"""HF's standing on the autoencoders at equal updates, passes and seconds (benchmarks/standing.py):
synthetic records whose answers are known by construction."""
import math

import pandas as pd
import pytest

from benchmarks import report, standing, summary


def _run(opt, seed, updates, passes, seconds, train, case_n=None, time="2026-12-06T10"):
    return {"benchmark": "autoencoder", "mode": "papers", "task": "curves", "optimizer": opt,
            "seed": seed, "budget_seconds": 600.0, "n_train": case_n, "device": "cpu",
            "curve_updates": updates, "curve_passes": passes, "curve_seconds": seconds,
            "curve_train_error": train, "curve_test_error": train,
            "train_error": train[-1], "test_error": train[-1], "time": time}


def _records(hf_scale=1.0):
    """HF: few expensive updates (100 passes, 10 s each) that each gain much; Adam: many cheap
    ones (2 passes, 0.01 s each) that each gain little.  By construction HF leads at equal
    updates and trails at equal passes and at equal seconds."""
    rows = []
    for seed in range(3):
        hf_u = [0, 1, 2, 3, 4, 5]
        rows.append(_run("hf", seed, hf_u, [100 * u for u in hf_u], [10.0 * u for u in hf_u],
                         [hf_scale * e for e in (100.0, 20, 10, 5, 4, 3 + seed)]))
        ad_u = list(range(0, 5001, 50))
        rows.append(_run("adam", seed, ad_u, [2 * u for u in ad_u], [0.01 * u for u in ad_u],
                         [100.0 / (1 + u / 10) for u in ad_u]))
    return rows


def _flat(run, optimizer, error):
    """``run``'s costs as ``optimizer`` at a constant training error ``error``."""
    return {**run, "optimizer": optimizer, "train_error": error,
            "curve_train_error": [error] * len(run["curve_train_error"])}


def test_error_at_takes_the_last_evaluation_at_or_before_the_cost_unless_it_is_stale():
    assert standing.error_at([0, 1, 5, 10], [9.0, 8.0, 7.0, 6.0], 7) == 7.0
    assert standing.error_at([0, 1, 5, 10], [9.0, 8.0, 7.0, 6.0], 10) == 6.0
    # the last evaluation at or before 54 is at 1: older than half of 54 → no figure
    assert standing.error_at([0, 1, 1000], [9.0, 8.0, 1.0], 54) is None
    assert standing.error_at([5, 10], [1.0, 2.0], 3) is None


def test_hf_leads_at_equal_updates_and_trails_at_equal_passes_and_seconds():
    eq = standing.equal_costs(pd.DataFrame(_records())).set_index("at equal")
    assert list(eq.index) == ["updates", "passes", "seconds"]
    # the comparison point is the largest cost every run reached
    assert eq.loc["updates", "cost"] == 5 and eq.loc["passes", "cost"] == 500
    assert eq.loc["seconds", "cost"] == 50.0
    # at 5 updates: HF's median of 3, 4, 5 against Adam's curve at update 0 → stale (no figure)
    assert eq.loc["updates", "hf"] == 4.0 and math.isnan(eq.loc["updates", "adam"])
    # at 500 passes Adam has made 250 updates (its evaluation at 250): 100 / 26
    assert eq.loc["passes", "adam"] == pytest.approx(100 / 26)
    assert eq.loc["passes", "hf"] == 4.0
    assert eq.loc["passes", "hf ÷ adam"] == pytest.approx(4.0 / (100 / 26))
    # at 50 s Adam has made 5,000 updates
    assert eq.loc["seconds", "adam"] == pytest.approx(100 / 501)
    assert eq.loc["seconds", "hf ÷ adam"] > 1


def test_equal_updates_compares_where_both_have_evaluations():
    rows = _records()
    for r in rows:
        if r["optimizer"] == "adam":     # evaluated every update early on
            r["curve_updates"] = [0, 1, 2, 3, 4, 5, 50]
            r["curve_passes"] = [2 * u for u in r["curve_updates"]]
            r["curve_seconds"] = [0.01 * u for u in r["curve_updates"]]
            r["curve_train_error"] = [100.0, 99, 98, 97, 96, 95, 80]
    eq = standing.equal_costs(pd.DataFrame(rows)).set_index("at equal")
    assert eq.loc["updates", "adam"] == 95.0
    assert eq.loc["updates", "hf ÷ adam"] == pytest.approx(4.0 / 95.0)   # HF ahead: < 1


def test_update_costs_and_best_setting_per_case():
    rows = _records()
    # a labelled HF setting that beats HF's defaults on the 2,000-image case only, and one on a
    # second case that does not: each case picks its own
    rows += [{**r, "optimizer": "hf (n_chunks 4)", "train_error": 1.0,
              "curve_train_error": [e / 2 for e in r["curve_train_error"]]}
             for r in _records() if r["optimizer"] == "hf"]
    rows += [{**r, "n_train": 20000} for r in _records()]
    rows += [{**r, "n_train": 20000, "optimizer": "hf (n_chunks 4)", "train_error": 99.0}
             for r in _records() if r["optimizer"] == "hf"]
    df = pd.DataFrame(rows)
    cost = standing.update_costs(df).set_index(["case", "optimizer"])
    assert cost.loc[("curves", "hf"), "passes_per_update"] == 100
    assert cost.loc[("curves", "hf"), "seconds_per_update"] == 10.0
    assert cost.loc[("curves", "adam"), "ms_per_pass"] == pytest.approx(5.0)
    assert ("curves", standing.BEST_HF) in cost.index
    assert ("curves (20,000 images)", standing.BEST_HF) not in cost.index
    eq = standing.equal_costs(df)
    small = eq[eq["case"] == "curves"].set_index("at equal")
    assert small.loc["passes", standing.BEST_HF] == 2.0
    texts = standing.summary_texts(df)
    assert list(texts) == ["curves", "curves (20,000 images)"]
    assert texts["curves"].startswith("— / 1.0 / "), texts
    assert "(best " in texts["curves"] and "(best " not in texts["curves (20,000 images)"]
    assert not any("machines" in t for t in texts.values())   # no record names a machine


def test_the_report_and_the_readme_carry_the_standing():
    df = pd.DataFrame(_records())
    rows = summary.summary_rows(df)
    (row,) = [r for r in rows if r[2] == "Deep autoencoders at equal cost"]
    assert "at equal updates / passes / seconds" in row[0] and "HF ÷ Adam" in row[0]
    assert row[1].startswith("curves — / ")
    # one row for every case, each case's figures after its name
    big = [{**r, "n_train": 20000} for r in _records()]
    (row,) = [r for r in summary.summary_rows(pd.DataFrame(_records() + big))
              if r[2] == "Deep autoencoders at equal cost"]
    assert [part.split(" —")[0] for part in row[1].split("; ")] == ["curves",
                                                                    "curves (20,000 images)"]
    titles = [t for t, *_ in standing.REPORT_SECTIONS]
    assert summary.anchor(titles[0]) == summary.anchor(row[2])
    # the sections' anchors differ from each other and from the autoencoder table's
    assert len({summary.anchor(t) for t in [*titles, "Deep autoencoders"]}) == len(titles) + 1
    d = report.latest(standing.equal_costs(df), ["case", "order"])
    assert list(d["at equal"]) == ["updates", "passes", "seconds"]


def test_no_long_runs_no_standing():
    quick = [{**r, "mode": "quick"} for r in _records()]
    assert standing.equal_costs(pd.DataFrame(quick)).empty
    assert standing.summary_texts(pd.DataFrame(quick)) == {}


def test_rankings_say_whether_the_order_settled_over_the_last_quarter():
    r = standing.rankings(pd.DataFrame(_records())).iloc[0]
    # the comparison point is 50 s; at 25, 37.5 and 50 s Adam (100 / 2501 … 100 / 5001) is ahead
    # of HF (its evaluation at 20 s → 5; at 30 s → 4; at 50 s → median 4)
    assert r["seconds"] == 50.0
    assert [r[f"order at {f:g}×"] for f in standing.FRACTIONS] == ["adam < hf"] * 3
    assert r["settled"]
    rows = _records()
    for row in rows:                 # HF overtakes Adam in the last quarter of the budget
        if row["optimizer"] == "hf":
            row["curve_train_error"] = row["curve_train_error"][:-1] + [0.01]
    r = standing.rankings(pd.DataFrame(rows)).iloc[0]
    assert r["order at 0.75×"] == "adam < hf" and r["order at 1×"] == "hf < adam"
    assert not r["settled"]


def test_same_machine_compares_seconds_only_among_runs_of_one_machine_instance():
    rows = _records()                                   # no boot id: left out
    fast = [{**r, "boot": "aaaaaaaa-1", "time": "2026-12-07T02"} for r in _records()
            if r["optimizer"] == "adam"]
    for r in fast:                                      # this machine runs Adam twice as fast
        r["curve_seconds"] = [s / 2 for s in r["curve_seconds"]]
    hf_here = [{**r, "boot": "aaaaaaaa-1", "optimizer": "hf (max_cg_iters 50)",
                "time": "2026-12-07T02"} for r in _records() if r["optimizer"] == "hf"]
    elsewhere = [{**r, "boot": "bbbbbbbb-2"} for r in _records() if r["optimizer"] == "hf"]
    one = standing.same_machine(pd.DataFrame(rows + fast + hf_here + elsewhere))
    # one comparison: the labelled HF setting against Adam on machine aaaaaaaa; machine
    # bbbbbbbb has no Adam, and the records without a boot id have no machine to share
    assert len(one) == 1
    r = one.iloc[0]
    assert (r["machine"], r["hf setting"], r["hf seeds"], r["adam seeds"]) == (
        "aaaaaaaa", "hf (max_cg_iters 50)", 3, 3)
    # Adam's runs end at 25 s here (5,000 updates: 100 / 501); HF's last evaluation by then is
    # at 20 s (update 2: 10 on every seed)
    assert r["seconds"] == 25.0
    assert r["adam"] == pytest.approx(100 / 501)
    assert r["hf"] == 10.0 and r["hf ÷ adam"] == pytest.approx(10.0 / (100 / 501))
    (text,) = standing.summary_texts(pd.DataFrame(rows + fast + hf_here + elsewhere)).values()
    # the equal-seconds table pairs this machine's Adam with HF timed elsewhere: the text gives
    # the one machine's figure instead of that pairing's count of machines
    assert f"one machine {standing.times(10.0 / (100 / 501))})" in text
    assert "machines" not in text
    # a second machine timing both, HF there half as far behind: the range over the machines
    there = [{**run, "boot": "dddddddd-4", "time": "2026-12-07T03"} for run in fast + hf_here]
    for run in there:
        if run["optimizer"] != "adam":
            run["curve_train_error"] = [e / 2 for e in run["curve_train_error"]]
    (text,) = standing.summary_texts(
        pd.DataFrame(rows + fast + hf_here + elsewhere + there)).values()
    low, high = standing.times(5.0 / (100 / 501)), standing.times(10.0 / (100 / 501))
    assert f"one machine {low[:-1]}–{high})" in text
    eq = standing.equal_costs(pd.DataFrame(rows + fast + hf_here + elsewhere))
    assert set(eq["machines"]) == {2}     # Adam and HF's best on aaaaaaaa, HF's newest on bbbbbbbb
    here = pd.DataFrame(fast + hf_here + [{**r, "boot": "aaaaaaaa-1", "time": "2026-12-07T02"}
                                          for r in _records() if r["optimizer"] == "hf"])
    assert set(standing.equal_costs(here)["machines"]) == {1}
    assert "machines" not in standing.summary_texts(here)["curves"]
    # all on one machine: no second, one-machine figure repeating the first
    assert "one machine" not in standing.summary_texts(here)["curves"]
    assert standing.same_machine(pd.DataFrame(rows)).empty
    # Adam run again later on a third machine replaces the older runs in the other tables, not
    # here: machine aaaaaaaa keeps its pair, machine cccccccc has no HF to pair with
    later = [{**r, "boot": "cccccccc-3", "time": "2026-12-08T02"} for r in fast]
    again = standing.same_machine(pd.DataFrame(rows + fast + hf_here + elsewhere + later))
    assert list(again["machine"]) == ["aaaaaaaa"] and again.iloc[0]["adam"] == r["adam"]


def test_the_readme_names_hf_settings_in_few_words_without_mangling_longer_field_names():
    from benchmarks import summary
    label = ("hf (curvature_batch_fixed True, grad_batch 1000, grad_batch_doubling 200, "
             "max_cg_iters 50)")
    assert summary._short(label) == (
        "hf (fixed curvature batch, batch 1000, doubled every 200, CG ≤ 50)")
    assert summary._short("hf (curvature_batch_fixed False, grad_batch 500)") == (
        "hf (growing curvature batch, batch 500)")
    assert summary._short("hf (grad_batch 1000, hf.preconditioner True)") == (
        "hf (batch 1000, diagonal preconditioner)")
    assert summary._short("hf (grad_batch 1000, hf.rho_batch gradient, max_cg_iters 50)") == (
        "hf (batch 1000, ρ on the batch, CG ≤ 50)")


def test_nesterov_s_best_labelled_setting_is_shown_beside_its_defaults():
    """Nesterov momentum at its defaults and two labelled settings (Sutskever's schedule at two
    rates): the better one, if it beats the defaults, is the "best Nesterov tried" column of the
    equal-cost table, the Nesterov figure the paper's Nesterov line is measured against, and
    named in the README's autoencoder row; a worse one never is."""
    from benchmarks import paper_lines
    label = "momentum (momentum.learning_rate {}, momentum.momentum 0.99, momentum.schedule " \
            "sutskever2013)"
    rows = _records()
    for r in _records():
        if r["optimizer"] != "adam":
            continue
        rows += [_flat(r, "momentum", 8.0), _flat(r, label.format(0.001), 0.5 + r["seed"]),
                 _flat(r, label.format(0.01), 50.0)]
    df = pd.DataFrame(rows)
    eq = standing.equal_costs(df).set_index("at equal")
    assert eq.loc["seconds", standing.BEST_NESTEROV] == 1.5       # median of 0.5, 1.5, 2.5
    assert eq.loc["seconds", "momentum"] == 8.0
    assert standing.BEST_NESTEROV in standing.EQUAL_COLUMNS
    lines = paper_lines.distances(standing.long_runs(df)).set_index("method")
    assert lines.loc["Nesterov", "same_here"] == standing.BEST_NESTEROV
    assert lines.loc["Nesterov", "same ÷ paper"] == pytest.approx(1.5 / 0.074)
    (row,) = [r for r in summary.summary_rows(df) if r[2] == "Deep autoencoders"]
    assert "best Nesterov: η 0.001, Sutskever μ ≤ 0.99 → 1.5" in row[1]
    # worse than the defaults: not shown
    worse = df[df["optimizer"] != label.format(0.001)]
    assert standing.BEST_NESTEROV not in standing.equal_costs(worse).columns
    (row,) = [r for r in summary.summary_rows(worse) if r[2] == "Deep autoencoders"]
    assert "best Nesterov" not in row[1]


def test_time_to_hf_s_error_and_its_worth_and_cost():
    """HF's median final error is 4 (finals 3, 4, 5); every HF seed first gets to 4 at update 4
    (40 s), Adam (100 / (1 + u/10), evaluated every 50 updates) at update 250 (2.5 s): an HF
    update is worth 62.5 Adam updates and costs 1,000 — Adam is there 16× sooner."""
    t = standing.to_hf_error(pd.DataFrame(_records())).set_index("hf setting")
    row = t.loc["hf"]
    assert row["machine"] == "unrecorded" and row["target"] == 4.0
    assert (row["hf updates"], row["hf seconds"]) == (4.0, 40.0)
    assert row["adam updates"] == 250.0 and row["adam seconds"] == pytest.approx(2.5)
    assert row["worth (adam updates per hf update)"] == pytest.approx(62.5)
    assert row["cost (adam updates per hf update's seconds)"] == pytest.approx(1000.0)
    assert row["seconds hf ÷ adam"] == pytest.approx(16.0)
    assert row["sooner"] == "adam"
    # HF 100× lower: Adam (never under 100 / 501) does not get there — no ratio, HF sooner
    low = standing.to_hf_error(pd.DataFrame(_records(hf_scale=0.01))).set_index("hf setting")
    assert low.loc["hf", "sooner"] == "hf" and math.isnan(low.loc["hf", "adam seconds"])
    assert math.isnan(low.loc["hf", "seconds hf ÷ adam"])
    # two machines: each HF compared with its own machine's Adam (3× slower on the second)
    slow = [{**r, "boot": "bbbbbbbb-2",
             "curve_seconds": [3 * s for s in r["curve_seconds"]] if r["optimizer"] == "adam"
             else r["curve_seconds"]} for r in _records()]
    fast = [{**r, "boot": "aaaaaaaa-1"} for r in _records()]
    both = standing.to_hf_error(pd.DataFrame(fast + slow)).set_index("machine")
    assert both.loc["aaaaaaaa", "seconds hf ÷ adam"] == pytest.approx(16.0)
    assert both.loc["bbbbbbbb", "seconds hf ÷ adam"] == pytest.approx(16.0 / 3)


def test_a_longer_run_of_two_optimisers_checks_the_standing_without_replacing_it():
    """Six optimisers at 600 s and HF and Adam again at 6,000 s: the standing stays at the
    budget most optimisers ran (the longest would leave a two-optimiser standing); the longer
    runs are named beside it in the README's row and get panels of their own."""
    base = _records()
    kept = [{**r, "optimizer": o, "train_error": e, "test_error": e + 1}
            for r in base if r["optimizer"] == "adam"
            for o, e in (("kfac", 0.5), ("muon", 0.6), ("sophia", 0.7), ("momentum", 0.8))]
    longer = [{**r, "budget_seconds": 6000.0, "train_error": 0.1 if r["optimizer"] == "adam"
               else 3.0, "test_error": 1.1 if r["optimizer"] == "adam" else 4.0,
               "time": "2026-12-07T10"} for r in base]
    df = pd.DataFrame(base + kept + longer)
    cased = summary.autoencoder_cases(df)
    assert standing.standing_budgets(cased).to_dict() == {"curves": 600.0}
    assert set(standing.long_runs(df)["budget_seconds"]) == {600.0}
    assert standing.equal_costs(df).set_index("at equal").loc["seconds", "cost"] == 50.0
    (measure, figure, _), = summary._autoencoder_rows(df)
    assert measure.startswith("curves, 600 s: ")
    assert figure.endswith("; at 6000 s (3 seeds): adam 0.1 / 1.1, hf 3 / 4"), figure
    fig = report.autoencoder_cost_curves(df)
    titles = {a.text.split(":")[0] for a in fig.layout.annotations}
    assert titles == {"curves", "curves, 6000 s"}
    # without the six at 600 s the longest budget is the standing's, as before
    two = pd.DataFrame(base + longer)
    assert standing.standing_budgets(summary.autoencoder_cases(two)).to_dict() == {"curves": 6000.0}


def test_k_fac_s_best_labelled_setting_is_shown_beside_its_defaults():
    """K-FAC at its defaults (the task's whole batch) and at a labelled minibatch: the better one
    becomes the "best K-FAC tried" column and the README row's "best K-FAC"; a labelled setting
    worse than the defaults is not shown."""
    hf = [r for r in _records() if r["optimizer"] == "hf"]
    rows = _records() + [_flat(r, "kfac", 9.0) for r in hf]
    df = pd.DataFrame(rows + [_flat(r, "kfac (grad_batch 1000)", 1.0 + r["seed"]) for r in hf])
    eq = standing.equal_costs(df).set_index("at equal")
    assert eq.loc["seconds", standing.BEST_KFAC] == 2.0          # median of 1, 2, 3
    assert eq.loc["seconds", "kfac"] == 9.0
    (row,) = [r for r in summary.summary_rows(df) if r[2] == "Deep autoencoders"]
    assert "best K-FAC: batch 1000 → 2" in row[1]
    worse = pd.DataFrame(rows + [_flat(r, "kfac (grad_batch 1000)", 50.0) for r in hf])
    assert standing.BEST_KFAC not in standing.equal_costs(worse).columns
    (row,) = [r for r in summary.summary_rows(worse) if r[2] == "Deep autoencoders"]
    assert "best K-FAC" not in row[1]
