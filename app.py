"""HF Lab — Streamlit entry point: the shared frame (page set-up, navigation, device badge) and
the pages in pages/, each one concern."""
import jax  # noqa: F401  (import numeric libraries before any worker thread starts)
import numpy  # noqa: F401
import streamlit as st

import hflab  # noqa: F401
from hflab.view import ui

# an emoji icon is drawn in the page (a data: URL); a page's :material: icon as the favicon
# would be fetched from an outside font server, and the lab makes no outside request
st.set_page_config(page_title="HF Lab", page_icon="📉", layout="wide")

PAGES = [
    st.Page("pages/train.py", title="Train & compare", icon=":material/show_chart:", default=True),
    st.Page("pages/curvature.py", title="Curvature", icon=":material/grid_on:"),
    st.Page("pages/cg_inspector.py", title="CG inspector", icon=":material/search:"),
    st.Page("pages/derivations.py", title="Derivations", icon=":material/edit_note:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/folder_open:"),
]
page = st.navigation(PAGES)
ui.device_badge(st.session_state.get("f_devices")
                or st.session_state.get("form", {}).get("devices") or "1")
page.run()
