"""Every task preset starts and finishes a tiny comparison from the Train page, and a length
curriculum runs from the form."""
import pytest

from hflab.lab import get_lab
from hflab.tasks import SPECS

from apptest import SMALL_LAYERS, page, wait_idle


@pytest.mark.parametrize("task", list(SPECS))
def test_each_preset_starts_and_finishes_a_tiny_run(task):
    query = {"task": task, "optimizers": "hf,adam", "steps": "1", "max_cg_iters": "3"}
    if task in SMALL_LAYERS:
        query["layers"] = SMALL_LAYERS[task]
    if SPECS[task].kind == "rnn" and SPECS[task].default_seq_len > 5:
        query["seq_len"] = "5"                       # a short unrolled scan compiles quickly
    at = page("train", query).run()
    assert not at.exception
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    wait_idle()
    at.run()
    runs = get_lab().store.runs()
    assert list(runs["status"]) == ["finished", "finished"], runs[["status", "error"]]
    assert set(runs["optimizer"]) == {"hf", "adam"} and set(runs["task"]) == {task}
    # the curvature instrument measured each run's checkpoints (update 0 and the last) without
    # a failure (a failing measurement is noted in the run's status text, the run still ends)
    assert not any("curvature at update" in str(e) for e in runs["error"]), list(runs["error"])
    for run_id in runs["id"]:
        m = get_lab().store.metrics(int(run_id))
        assert m["spectrum_G_max"].notna().any() and m["spectrum_H_max"].notna().any(), task
    # loss and error curves; with a squared-error loss the error is twice the loss: one chart
    twice = SPECS[task].loss == "squared" and SPECS[task].metric in ("mse", "reconstruction")
    assert len(at.get("plotly_chart")) == (1 if twice else 2)
    if twice:
        assert any("twice this loss" in c.value for c in at.caption)
    # each optimiser keeps its colour wherever it is drawn
    import json
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    by_name = {t["name"].split(" · ")[1]: t["line"]["color"] for t in fig["data"]
               if " · " in t["name"]}
    assert by_name["hf"] != by_name["adam"]
    from hflab.view.plots import optimizer_colour
    assert by_name == {"hf": optimizer_colour("hf"), "adam": optimizer_colour("adam")}


def test_a_curriculum_run_starts_from_the_form_and_records_its_stage():
    at = page("train", {"task": "addition", "optimizers": "hf", "steps": "2",
                        "max_cg_iters": "3", "curriculum": "4,5", "layers": "8"}).run()
    assert not at.exception and not at.warning
    assert any("each stage trains at its own length" in c.value for c in at.caption)
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    wait_idle()
    (run,) = get_lab().store.runs().itertuples()
    config = get_lab().store.get_run(run.id)["config"]
    assert config["curriculum"] == "4,5" and config["seq_len"] == 5      # T stored, resolved
    m = get_lab().store.metrics(run.id)
    assert list(m["stage"]) == [1, 1, 1] and list(m["seq_len"]) == [4, 4, 4]
    assert run.status == "finished" and "T = 4 (stage 1 of 2)" in run.error
