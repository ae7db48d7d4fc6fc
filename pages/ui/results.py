"""Finished runs shared by every visitor. Engineer C moves ResultStore into core/store.py (an MLflow
store with this one in front of it as a cache); the pages only use `result_store()` and the methods
below."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

import streamlit as st


class ResultStore:
    """Finished runs by their config (seed included), shared by all visitors: a repeated demo is instant."""

    def __init__(self, capacity: int = 48):
        self.capacity, self._items, self._lock = capacity, OrderedDict(), threading.Lock()
        self._running = {}  # config key -> Job not finished yet: visitors asking for the same run share it

    def job_for(self, config, submit):
        """The unfinished job computing `config`, or a new one from `submit()`."""
        key = self.key(config)
        with self._lock:
            job = self._running.get(key)
            if job is None or job.finished:
                job = self._running[key] = submit()
            return job

    @staticmethod
    def key(config) -> str:
        return json.dumps(config.to_dict(), sort_keys=True, default=str)

    def get(self, config, on_damaged=None):
        """The stored result, or None. A result whose weights no longer match the checksum taken when
        it was stored (something modified a shared model) is dropped, `on_damaged()` is called, and
        the run is done again rather than shown wrong."""
        from core.checkpoint import state_checksum

        with self._lock:
            key = self.key(config)
            if key not in self._items:
                return None
            result, checksum = self._items[key]
            if state_checksum(result.model) != checksum:
                del self._items[key]
                damaged = True
            else:
                self._items.move_to_end(key)
                return result
        if damaged and on_damaged is not None:
            on_damaged()
        return None

    def put(self, result) -> None:
        from core.checkpoint import state_checksum

        checksum = state_checksum(result.model)
        with self._lock:
            self._items[self.key(result.config)] = (result, checksum)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


@st.cache_resource
def result_store() -> ResultStore:
    return ResultStore()
