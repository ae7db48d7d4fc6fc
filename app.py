"""SalUn Lab: `streamlit run app.py`.

The router only: it lists the pages and keeps the shared forget-target choices alive while a visitor
moves between them. Each page lays out widgets and calls core/.
"""

import streamlit as st

from pages import ui

# the icon is a local file: a material icon would be fetched from the internet on every page load
st.set_page_config(page_title="SalUn Lab", page_icon=str(ui.ROOT / "assets" / "favicon.png"), layout="wide")

# Streamlit forgets a widget's value when a page without that widget runs; re-assigning keeps the
# choice (dataset, class, seed, ...) when the visitor comes back or opens another page.
ui.keep_choices()

pages = {  # the app's menu, drawn by ui.route in the sidebar
    "Classification": [
        st.Page("pages/home.py", title="Start here", icon=":material/school:", default=True),
        st.Page("pages/unlearn.py", title="Unlearn & compare", icon=":material/compare:"),
        st.Page("pages/saliency.py", title="Saliency explorer", icon=":material/grid_on:"),
        st.Page("pages/sweep.py", title="Sparsity sweep", icon=":material/show_chart:"),
        st.Page("pages/why.py", title="Why the mask?", icon=":material/help:"),
    ],
    "Generation": [
        st.Page("pages/generation.py", title="Diffusion: forget a class", icon=":material/image:"),
        st.Page("pages/concept.py", title="Stable Diffusion: forget a concept", icon=":material/palette:"),
    ],
}
ui.route(pages)
