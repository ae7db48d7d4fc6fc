"""Start here: a guided path from "pick a digit" to "see it forgotten" in two clicks.

Runs inside the app's navigation or on its own: `streamlit run pages/home.py`.
"""

from __future__ import annotations


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
"""


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

    st.subheader("2 · Forget it")
    st.caption("Runs SalUn with its default settings on the shipped model (5,000 MNIST digits, small CNN). "
               "About 10 seconds on a laptop CPU; longer while the machine is busy.")
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

    shown = ui.links.follow_batch("home", "Forgetting")
    if shown is not None:
        show_result(shown["target"], shown["results"][0][1])


def show_result(target: ui.Target, result) -> None:
    from core.classification.attribution import predicted_labels
    from core.classification.metrics import METRIC_DEFINITIONS, per_class_accuracy
    from core.classification.plots import per_class_accuracy_figure

    exp = target.experiment()
    names = exp.dataset.class_names
    k = target.forget_class
    before, after = exp.original_metrics(0), result.metrics
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

    test_x, test_y = exp.dataset.test_x, exp.dataset.test_y
    per_class = {"Before": per_class_accuracy(exp.original, test_x, test_y, exp.dataset.num_classes),
                 "After SalUn": per_class_accuracy(result.model, test_x, test_y, exp.dataset.num_classes)}
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
