"""What the pages share, by concern. Not pages: Streamlit's folder menu lists only the top-level
`pages/*.py` files, and app.py lists its pages explicitly, so nothing here ever shows as a page.

    routing    the app's navigation guard, the choices kept across pages, the URL's query parameters
    resources  process-wide cached core objects (limits, job runner, experiments, example images)
    picker     the forget-target picker (dataset, model, what to forget)
    settings   a method's settings widgets and the complete run config (one place: core/methods swaps in here)
    results    finished runs shared by every visitor: the cache in front of the run store (core/store.py)
    jobs       submitting runs to core/jobs.py and following them live
    links      the address carries what a page shows (?run=, ?job=): reload, share, reattach

The pages do `from pages import ui` and call `ui.target_picker()`, `ui.submit_runs(...)`, ...
"""

from pages.ui import links
from pages.ui.jobs import (cancel_entries, check_queue, collect_results, describe, follow_jobs, report_problems,
                           submit_runs, unfinished)
from pages.ui.picker import (KINDS, PICKER_KEYS, SHIPPED_DATASET, Target, class_picker, describe_dataset,
                             save_index_list, shipped_class_names, show_examples, store_uploaded_model, target_picker)
from pages.ui.resources import ROOT, example_images, experiment, hosted, job_runner, limits, prefetch_chart_code, public
from pages.ui.results import ResultStore, result_store
from pages.ui.routing import ensure_navigation, keep_choices, kept, route
from pages.ui.settings import default_settings, make_config, method_settings, methods, run_config
