"""The app's navigation guard and the choices kept while a visitor moves between pages."""

from __future__ import annotations

import threading
from contextlib import contextmanager

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


@contextmanager
def routed():
    _routing.active = True
    try:
        yield
    finally:
        _routing.active = False


def ensure_navigation() -> None:
    """Opened by a deep link (/unlearn) on a freshly started server, Streamlit runs a page straight
    from the pages/ folder with a menu of file names, until app.py has called st.navigation once.
    Rerun through app.py instead, so the visitor gets the real menu and the page they asked for."""
    first_run = "_salun_seen" not in st.session_state  # rerunning later would drop the click that started it
    st.session_state["_salun_seen"] = True
    if getattr(_routing, "active", False) or not first_run:
        return
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a future Streamlit without the folder mode: nothing to do
        return
    if PagesManager.uses_pages_directory and (ROOT / "app.py").exists():
        PagesManager.uses_pages_directory = False
        st.rerun()
