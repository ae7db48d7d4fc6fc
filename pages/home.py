"""Start here: a guided path from "pick a digit" to "see it forgotten" in two clicks.

Runs inside the app's navigation or on its own: `streamlit run pages/home.py`.
"""

from __future__ import annotations

import threading
import weakref

import streamlit as st

from core.errors import SalunError
from pages import ui

INTRO = """
A trained network remembers its training data. **Machine unlearning** makes it forget part of that data —
here, every training image of one digit — as if it had never seen it, without training again from scratch.

**SalUn** (saliency unlearning, ICLR 2024) does it in two moves:
1. **Find the weights that matter for the forgotten images.** It measures how strongly their loss pulls on
   each weight (the gradient — the weight's *saliency*) and keeps the top half as a *mask*.
2. **Change only those weights.** It teaches the model to give the forgotten images wrong labels while it
   keeps practising on the rest of the data, so the other digits stay recognised.

On this small digit classifier the mask itself is not what makes it work: the same training with every
weight free (RL) forgets as well and keeps as much. On the digit *generator* (the Diffusion page) the mask
does help: the digits it keeps lose about 1.7 points less recognition than with RL (better in 8 of 9 runs
over three digits and three seeds). Both are measured on the *Why the mask?* page.
"""


# Only what bench/bench_app.py measured (README, "Instant demos"): a stored run is shown at once; a run
# computed on the click takes seconds on a quiet machine and many more on a busy one.
WAIT_NOTE = ("Runs SalUn with its default settings on the shipped model (5,000 MNIST digits, small CNN). "
             "If this server has the run stored already (the warm store, `make warm`), it is shown without running "
             "it and marked *cached*; otherwise SalUn runs now (about 1.5 s of training on a quiet 2-core CPU, plus "
             "loading and evaluation). Measured from a click the moment this page appears to the result, run "
             "stored: 3.5–4.3 s on a quiet 2-core CPU; the model loads in the background while you read, so a later "
             "click waits less.")


def main() -> None:
    ui.ensure_navigation(__file__)
    st.title("SalUn Lab: make a network forget")
    st.markdown(INTRO)

    ui.links.restore_batch("home", lambda method: "SalUn")  # a reload or a shared link: the run it names
    st.subheader("1 · Pick a digit to forget")
    # the choices and the button come first; the example digits are filled in above them once the
    # data has loaded, so a first visit can click within seconds
    images = st.container()
    class_names = ui.shipped_class_names()
    chosen = ui.class_picker(None, class_names, "pick_class")  # the class every page opens with
    target = ui.Target(ui.SHIPPED_DATASET, f"class:{chosen}", None, None, 0)
    # the head start begins before the rest of the page is drawn: a click the moment the page appears
    # then waits for less of it (torch's import alone is ~2.5 s)
    preload(target.dataset, target.forget, target.checkpoint, target.data_root, target.seed)

    st.subheader("2 · Forget it")
    st.caption(WAIT_NOTE)
    if st.button(f"Forget digit {class_names[chosen]} with SalUn", type="primary", key="home_run",
                 icon=":material/auto_fix_high:"):
        try:
            exp = target.experiment()
            config = ui.make_config(target, "salun", 0, 0.5, **ui.default_settings(exp, "salun"))
            entries = ui.submit_runs(exp, [config], ["SalUn"])
            ui.cancel_entries(st.session_state.get("home_batch"), keep=entries)
            st.session_state["home_batch"] = {"target": target, "seed": 0, "entries": entries}
        except SalunError as exc:
            st.error(ui.public(exc))

    try:
        examples, _, _ = ui.example_images(ui.SHIPPED_DATASET, None)
        with images:
            ui.show_examples(examples, class_names)
    except SalunError as exc:
        images.error(f"Cannot load the example digits: {exc}")

    ui.prefetch_chart_code()  # the result's chart draws at once after the click
    shown = ui.links.follow_batch("home", "Forgetting")
    if shown is not None:
        show_result(shown["target"], shown["results"][0][1])


@st.cache_resource(max_entries=16, show_spinner=False)
def preload(dataset: str, forget: str, checkpoint: str | None, data_root: str | None, seed: int) -> threading.Thread:
    """Once per target and server, as the page is drawn: load in the background what the click on the
    button needs (the experiment, the original model's metrics, the stored SalUn run), so the first
    visitor's click waits for none of it; then the code the Diffusion page needs (diffusers)."""
    from core.warm import default_run_config, original_metrics

    target = ui.Target(dataset, forget, checkpoint, data_root, seed)
    result_store = ui.result_store()

    def work():
        try:
            exp = target.experiment()
            original_metrics(exp, 0, target.checkpoint)
            per_class_accuracy_of(exp.original, exp)
            stored = result_store.get(default_run_config(exp, "salun", target.seed, checkpoint=target.checkpoint,
                                                         data_root=target.data_root))
            if stored is not None:
                per_class_accuracy_of(stored.model, exp)
            # then the Diffusion page's code: diffusers takes 3-7 s to import, which its first visit waited for
            import core.diffusion.run  # noqa: F401
            from diffusers import DDIMScheduler, UNet2DModel  # noqa: F401
        except Exception:  # only a head start: the click does the same work and reports what fails
            pass

    thread = threading.Thread(target=work, name="salun-home-preload", daemon=True)
    thread.start()
    return thread


_PER_CLASS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> its per-class test accuracy
_PER_CLASS_LOCK = threading.Lock()


def per_class_accuracy_of(model, exp) -> list[float]:
    """The model's test accuracy per class, computed once per model object (the preload computes it for
    the original and the stored SalUn run, so the click only reads it)."""
    from core.classification.metrics import per_class_accuracy

    with _PER_CLASS_LOCK:
        if model not in _PER_CLASS:
            _PER_CLASS[model] = per_class_accuracy(model, exp.dataset.test_x, exp.dataset.test_y,
                                                   exp.dataset.num_classes)
        return _PER_CLASS[model]


def show_result(target: ui.Target, result) -> None:
    from core.classification.attribution import predicted_labels
    from core.classification.metrics import METRIC_DEFINITIONS
    from core.classification.plots import per_class_accuracy_figure
    from core.warm import original_metrics  # kept on disk: a restarted server does not evaluate it again

    exp = target.experiment()
    names = exp.dataset.class_names
    k = target.forget_class
    before, after = original_metrics(exp, 0, target.checkpoint), result.metrics
    st.subheader(f"3 · Digit {names[k]} is forgotten")
    c1, c2, c3 = st.columns(3)
    c1.metric(f"Test images of {names[k]} recognised", f"{after['forget_test_accuracy']:.1f}%",
              delta=f"{after['forget_test_accuracy'] - before['forget_test_accuracy']:+.1f} (was "
                    f"{before['forget_test_accuracy']:.1f}%)", delta_color="inverse",
              help=METRIC_DEFINITIONS["forget_test_accuracy"])
    c2.metric("Other digits recognised (TA)", f"{after['ta']:.1f}%",
              delta=f"{after['ta'] - before['ta']:+.1f} (was {before['ta']:.1f}%)", help=METRIC_DEFINITIONS["ta"])
    c3.metric("Forgotten training images (UA)", f"{after['ua']:.1f}%",
              delta=f"{after['ua'] - before['ua']:+.1f} (was {before['ua']:.1f}%)", help=METRIC_DEFINITIONS["ua"])
    st.caption(f"SalUn ran {result.params.get('epochs')} epochs in "
               f"{result.metrics['rte_seconds']:.1f} s, changing only the {result.config.sparsity * 100:.0f}% most "
               "salient weights.")

    test_x = exp.dataset.test_x
    per_class = {"Before": per_class_accuracy_of(exp.original, exp), "After SalUn": per_class_accuracy_of(result.model, exp)}
    st.plotly_chart(per_class_accuracy_figure(per_class, names, k), key="home_per_class")

    idx = exp.split.forget_test_idx[:8]
    images = test_x[idx]
    said_before = predicted_labels(exp.original, images)
    said_after = predicted_labels(result.model, images)
    st.markdown(f"**Test images of {names[k]} — what the model says before → after**")
    for column, image, b, a in zip(st.columns(len(idx)), images.numpy(), said_before, said_after):
        column.image(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0), clamp=True, width="stretch",
                     caption=f"{names[b]} → {names[a]}")

    st.subheader("Next")
    n1, n2, n3 = st.columns(3)
    n1.page_link("pages/saliency.py", label="See which weights the mask picked", icon=":material/grid_on:")
    n2.page_link("pages/unlearn.py", label="Compare with Retrain and other methods", icon=":material/compare:")
    n3.page_link("pages/sweep.py", label="Sweep the mask's sparsity", icon=":material/show_chart:")


main()
