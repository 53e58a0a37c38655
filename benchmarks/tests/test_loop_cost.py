"""The run loop's cost benchmark (benchmarks/loop_cost.py): its split of an update's time is
taken from the loop's own clocks, so the update's part can never exceed the whole."""
from benchmarks import loop_cost


def test_the_update_is_a_part_of_the_loops_time_for_every_case(monkeypatch):
    monkeypatch.setattr(loop_cost, "CASES", {k: (o, 3) for k, (o, _) in loop_cost.CASES.items()})
    monkeypatch.setattr(loop_cost, "WARM_UPDATES", 1)
    rows = list(loop_cost.run(False))
    assert [r["case"] for r in rows] == list(loop_cost.CASES)
    for r in rows:
        assert r["updates"] == 3
        assert 0 < r["update_ms"] <= r["loop_ms"]
        assert abs(r["host_ms"] - (r["loop_ms"] - r["update_ms"])) < 1e-9
        assert 0 < r["update_share"] <= 1
        assert abs(r["update_share"] - r["update_ms"] / r["loop_ms"]) < 1e-9
