"""HF Lab — Streamlit entry point: navigation over the pages in pages/."""
import jax  # noqa: F401  (import numeric libraries before any worker thread starts)
import numpy  # noqa: F401
import streamlit as st

import hflab  # noqa: F401

st.set_page_config(page_title="HF Lab", page_icon="∇", layout="wide")

PAGES = [
    st.Page("pages/train.py", title="Train & compare", icon="📈", default=True),
    st.Page("pages/curvature.py", title="Curvature", icon="🧮"),
    st.Page("pages/cg_inspector.py", title="CG inspector", icon="🔍"),
    st.Page("pages/derivations.py", title="Derivations", icon="✍️"),
    st.Page("pages/runs.py", title="Runs", icon="🗂️"),
]
st.navigation(PAGES).run()
