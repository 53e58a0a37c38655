"""HF Lab — Streamlit entry point."""
import streamlit as st

st.set_page_config(page_title="HF Lab", layout="wide")
st.title("HF Lab")
st.write("Hessian-free optimisation of neural networks in JAX, with every inner working visible.")
