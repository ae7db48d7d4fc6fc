"""The app's navigation guard and the choices kept while a visitor moves between pages."""

from __future__ import annotations

import threading
from pathlib import Path

import streamlit as st

from pages.ui.resources import ROOT

_routing = threading.local()  # set by app.py while it runs the chosen page in this script thread
_KEPT: set[str] = set()  # widget keys whose value outlives the pages that show them


def kept(*keys: str) -> tuple[str, ...]:
    """Declare widget keys whose choice is kept when the visitor opens a page without that widget
    (Streamlit forgets a widget's value then); app.py re-assigns them on every run."""
    _KEPT.update(keys)
    return keys


def keep_choices() -> None:
    """Called by app.py before the page runs: re-assigning a widget's value keeps it alive."""
    for key in sorted(_KEPT):
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def route(pages: dict[str, list]) -> None:
    """Run the page the visitor asked for, inside the app's own navigation: a menu drawn in the
    sidebar from `pages` (section -> st.Page list). Streamlit's own menu stays hidden
    (.streamlit/config.toml: client.showSidebarNavigation = false), so the folder menu of pages/ can
    never show, not even for the moment before a deep link is rerouted."""
    page = st.navigation(pages, position="hidden")
    with st.sidebar:
        for section, section_pages in pages.items():
            st.caption(section)
            for entry in section_pages:
                st.page_link(entry)
    wanted = st.session_state.pop("_salun_wanted", None)
    if wanted is not None:  # a deep link rerouted by ensure_navigation: open what it asked for
        target = next((p for group in pages.values() for p in group if p.url_path == wanted["page"]), None)
        if target is not None and target.url_path != page.url_path:
            st.switch_page(target, query_params=wanted["query"])
        st.query_params.from_dict(wanted["query"])
    _routing.active = True
    try:
        page.run()
    finally:
        _routing.active = False


def ensure_navigation(page_file: str) -> None:
    """First thing every page does (`ui.ensure_navigation(__file__)`).

    Opened by its address (/unlearn?run=...) on a freshly started server, Streamlit runs a page
    straight from the pages/ folder, outside app.py, until app.py has called st.navigation once. Then
    hand over to app.py, remembering the page and its query parameters; `route` opens them again
    inside the app's navigation. Run on its own (`streamlit run pages/unlearn.py`, AppTest), the page
    is the whole app and app.py is no page of it: nothing to do."""
    first_run = "_salun_seen" not in st.session_state  # a reroute later would drop the click that started it
    st.session_state["_salun_seen"] = True
    if getattr(_routing, "active", False) or not first_run:
        return
    from streamlit.errors import StreamlitAPIException

    st.session_state["_salun_wanted"] = {"page": Path(page_file).stem, "query": st.query_params.to_dict()}
    try:
        st.switch_page(ROOT / "app.py")
    except StreamlitAPIException:
        del st.session_state["_salun_wanted"]
