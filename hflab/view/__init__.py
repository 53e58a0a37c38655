"""Presentation: every figure (:mod:`.plots`), what the Curvature and Derivations pages compute
(:mod:`.analysis`), the Train page's form and URL as plain data (:mod:`.formstate`) — all
Streamlit-free and unit-tested — and the few Streamlit helpers the pages share (:mod:`.ui`, the
one module here that imports Streamlit)."""
