"""SalUn Lab: `streamlit run app.py`.

The router only: it lists the pages and keeps the shared forget-target choices alive while a visitor
moves between them. Each page lays out widgets and calls core/.
"""

import streamlit as st

from pages.common import routed

st.set_page_config(page_title="SalUn Lab", page_icon=":material/psychology_alt:", layout="wide")

# Streamlit forgets a widget's value when a page without that widget runs; re-assigning keeps the
# choice (dataset, class, seed, ...) when the visitor comes back or opens another page.
_KEPT = ("pick_dataset", "pick_checkpoint", "pick_data_root", "pick_kind", "pick_class", "pick_share",
         "pick_indices_text", "pick_seed", "home_class", "un_methods", "un_sparsity", "un_masked", "sal_sparsity",
         "sal_view")
for _key in _KEPT:
    if _key in st.session_state:
        st.session_state[_key] = st.session_state[_key]

pages = {
    "Classification": [
        st.Page("pages/home.py", title="Start here", icon=":material/school:", default=True),
        st.Page("pages/unlearn.py", title="Unlearn & compare", icon=":material/compare:"),
        st.Page("pages/saliency.py", title="Saliency explorer", icon=":material/grid_on:"),
        st.Page("pages/sweep.py", title="Sparsity sweep", icon=":material/show_chart:"),
    ],
    "Generation": [
        st.Page("pages/generation.py", title="Diffusion: forget a class", icon=":material/image:"),
        st.Page("pages/concept.py", title="Stable Diffusion: forget a concept", icon=":material/palette:"),
    ],
}
with routed():
    st.navigation(pages).run()
