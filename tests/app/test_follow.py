"""A live view's duty cycle (:func:`hflab.view.ui.followed_step`): it follows the newest
checkpoint, but after a view that took c seconds it keeps showing that view for FOLLOW_DUTY × c."""
from hflab.view import ui


def test_a_live_view_rests_for_its_duty_cycle_then_follows_the_newest(monkeypatch):
    clock = {"now": 100.0}
    monkeypatch.setattr(ui.st, "session_state", {})
    monkeypatch.setattr(ui.time, "time", lambda: clock["now"])
    key = "follow-1"
    assert ui.followed_step(key, 5, live=True) == 5             # nothing shown yet
    ui.followed_cost(key, 5, 30.0)          # the first view took 30 s: compiling, mostly …
    clock["now"] = 99.0
    assert ui.followed_step(key, 10, live=True) == 10           # … so it does not rest
    clock["now"] = 100.0
    ui.followed_cost(key, 10, 2.0)                              # that view took 2 s
    rest = ui.FOLLOW_DUTY * 2.0
    clock["now"] = 100.0 + rest - 0.5
    assert ui.followed_step(key, 20, live=True) == 10           # still resting
    assert ui.followed_step(key, 20, live=False) == 20          # a finished run: no rest
    ui.followed_cost(key, 10, 0.001)        # showing the cached view again costs nothing …
    assert ui.st.session_state[key] == (10, 100.0, 2.0, 2)      # … and does not restart the rest
    clock["now"] = 100.0 + rest + 0.5
    assert ui.followed_step(key, 20, live=True) == 20           # rested: the newest
    ui.followed_cost(key, 20, 0.1)                              # a cheap view …
    clock["now"] += 0.5
    assert ui.followed_step(key, 30, live=True) == 30           # … rests only 4 × 0.1 s
