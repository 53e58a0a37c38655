"""The appending chart's browser side (hflab/view/live_chart.py) in chromium, without a server:
the component's function is handed figures one after another, as Streamlit would on each
refresh, and the drawn graph is read back."""
import json

import plotly.graph_objects as go
import pytest

from browser import needs_chromium
from hflab.view import live_chart

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def plotly_page(chromium_browser):
    """One page with plotly.js and the component loaded (parsing plotly.js takes seconds)."""
    page = chromium_browser.new_page()
    page.set_content('<div id="parent"></div>')
    page.add_script_tag(path=str(live_chart.plotly_source()))
    # the module's default export, reachable from the test
    page.add_script_tag(content=live_chart.JS.replace("export default function",
                                                      "window.drawLive = function"),
                        type="module")
    page.wait_for_function("() => window.drawLive && window.Plotly")
    yield page
    page.close()


@pytest.fixture
def chart(plotly_page):
    # a fresh graph element per test: the component keeps what it drew on the element
    page = plotly_page
    page.evaluate("""() => { document.getElementById("parent").innerHTML =
                               '<div class="hflab-live-chart"></div>'; }""")

    def draw(fig):
        page.evaluate("""async (data) => {
            window.drawLive({ parentElement: document.getElementById("parent"), data });
            await new Promise((r) => setTimeout(r, 50)); }""", live_chart.payload(fig))
        return page.evaluate("""() => { const g = document.querySelector('.hflab-live-chart');
            return { appends: g.__hflabAppends || 0, redraws: g.__hflabRedraws || 0,
                     data: g.data.map((t) => ({ x: t.x ? Array.from(t.x) : null,
                                                y: t.y ? Array.from(t.y) : null,
                                                custom: t.customdata ? Array.from(t.customdata)
                                                                     : null })) }; }""")
    yield draw


def _fig(n_a, n_b, dash="solid", shift=0.0):
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(range(n_a)), y=[1.0 / (1 + i) + shift for i in range(n_a)],
                             customdata=[10 * i for i in range(n_a)], name="a"))
    fig.add_trace(go.Scatter(x=list(range(n_b)), y=[2.0 + i for i in range(n_b)], name="b",
                             line=dict(dash=dash)))
    return fig.update_layout(title="live")


def test_new_points_are_appended_to_the_drawn_traces(chart):
    first = chart(_fig(3, 2))
    assert (first["appends"], first["redraws"]) == (0, 1)
    grown = chart(_fig(5, 2))
    # the same graph, appended to: every point once, in order, hover data alongside
    assert (grown["appends"], grown["redraws"]) == (1, 1)
    assert grown["data"][0]["x"] == [0, 1, 2, 3, 4]
    assert grown["data"][0]["y"] == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert grown["data"][0]["custom"] == [0, 10, 20, 30, 40]
    assert grown["data"][1]["x"] == [0, 1]
    again = chart(_fig(5, 4))
    assert (again["appends"], again["redraws"]) == (2, 1)
    assert again["data"][1]["y"] == [2, 3, 4, 5]
    same = chart(_fig(5, 4))                    # nothing new: nothing drawn twice
    assert same["data"][0]["x"] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("change", ["shrunk", "moved", "restyled", "retitled", "trace added"])
def test_anything_but_new_points_redraws_the_whole_figure(chart, change):
    chart(_fig(4, 3))
    fig = {"shrunk": _fig(2, 3),                # a resume rewrote the rows past its checkpoint
           "moved": _fig(5, 3, shift=1.0),      # same lengths and more, but the old points moved
           "restyled": _fig(5, 3, dash="dash"),
           "retitled": _fig(5, 3).update_layout(title="other"),
           "trace added": _fig(5, 3).add_trace(go.Scatter(x=[0], y=[0], name="c"))}[change]
    after = chart(fig)
    assert (after["appends"], after["redraws"]) == (0, 2), change
    want = json.loads(live_chart.payload(fig))["data"]
    assert [t["x"] for t in after["data"]] == [t["x"] for t in want]
    for drawn, wanted in zip(after["data"], want):
        assert drawn["y"] == pytest.approx(wanted["y"])


def test_the_payload_has_the_points_as_plain_lists_with_null_for_nan():
    import numpy as np
    fig = go.Figure(go.Scatter(x=np.arange(3), y=np.array([1.0, np.nan, 3.0]),
                               customdata=np.array([[1, 2], [3, 4], [5, 6]])))
    fig.add_trace(go.Heatmap(z=np.arange(6.0).reshape(2, 3)))
    data = json.loads(live_chart.payload(fig))["data"]
    assert data[0]["x"] == [0, 1, 2] and data[0]["y"] == [1.0, None, 3.0]
    assert data[0]["customdata"] == [[1, 2], [3, 4], [5, 6]]
    # a heatmap's matrix stays a typed array (plotly.js reads it; a list is ~3× the bytes)
    z = data[1]["z"]
    assert np.frombuffer(__import__("base64").b64decode(z["bdata"]), z["dtype"]).tolist() == \
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_heatmap_is_redrawn_in_place(chart):
    import numpy as np
    first = chart(go.Figure(go.Heatmap(z=np.eye(3))))
    again = chart(go.Figure(go.Heatmap(z=2 * np.eye(3))))
    assert (first["redraws"], again["redraws"], again["appends"]) == (1, 2, 0)


def test_plotly_is_served_from_the_lab_once_per_version(tmp_path):
    static = tmp_path / "static"
    assert live_chart.serve_plotly(static)
    copy = static / live_chart.PLOTLY_FILE
    assert copy.read_bytes()[:2000] == live_chart.plotly_source().read_bytes()[:2000]
    mtime = copy.stat().st_mtime_ns
    assert live_chart.serve_plotly(static) and copy.stat().st_mtime_ns == mtime
    copy.write_bytes(b"truncated")                 # a different size: written again
    assert live_chart.serve_plotly(static) and copy.stat().st_size > 1_000_000
    assert [p.name for p in static.iterdir()] == [live_chart.PLOTLY_FILE]   # no temporary left
    blocked = tmp_path / "file"
    blocked.write_text("")                         # the static folder cannot be made
    assert not live_chart.serve_plotly(blocked / "static")
