import pytest
import streamlit as st


@pytest.fixture(autouse=True)
def _fresh_lab():
    """st.cache_resource survives between AppTests in one process: give each test its own lab."""
    st.cache_resource.clear()
    yield
    from hflab import lab as lab_module
    for lab in list(lab_module._LABS.values()):
        lab.stop_all()
        for run_id in lab.active():
            lab.wait(run_id, timeout=60)
    lab_module._LABS.clear()
    st.cache_resource.clear()
    from hflab.view import worker
    worker.close_all()
