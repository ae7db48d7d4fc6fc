"""Generation: make the class-conditional diffusion model stop generating one class.

Runs inside the app's navigation or on its own: `streamlit run pages/generation.py`.
The work lives in core/ (diffusion*, saliency); this page only lays out widgets and calls it.
"""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from core.data import load_dataset
from core.diffusion.model import DEFAULT_SAMPLE_STEPS, SHIPPED_GENERATORS, default_guidance, generate
from core.diffusion.metrics import GENERATION_METRIC_DEFINITIONS, GENERATION_METRIC_LABELS, generation_metrics
from core.classification.plots import per_class_accuracy_figure
from core.diffusion.plots import grid_image, layer_saliency_figure
from core.diffusion.run import GenerationRunConfig, GenerationRunResult, load_models
from core.diffusion.methods import MASK_DRAWS as DEFAULT_MASK_DRAWS, generation_split, substitute_class, unlearn_generator
from core.methods import widget_specs
from pages.ui.settings import methods as registered_methods, widget
from core.errors import SalunError
from core.checkpoint import DEFAULT_CHECKPOINT
from core.saliency import layer_statistics
from pages import ui

ui.ensure_navigation(__file__)

GENERATOR_LABELS = {"mnist5k": "Digits (MNIST, 5,000 images)", "fashion_mnist": "Clothing (Fashion-MNIST, 60,000 images)"}
PER_CLASS = int(os.environ.get("SALUN_GEN_PER_CLASS", "10"))
SAMPLE_STEPS = int(os.environ.get("SALUN_GEN_SAMPLE_STEPS", str(DEFAULT_SAMPLE_STEPS)))
# draws behind the saliency mask: the method's stable default unless an operator (or a test) asks for fewer
MASK_DRAWS = int(os.environ.get("SALUN_GEN_MASK_DRAWS") or DEFAULT_MASK_DRAWS)
SEED = 0


def generator_choices() -> dict[str, tuple[str, str]]:
    """Dataset -> (generator, the classifier that judges it): every shipped generator that is present, or
    only the one $SALUN_GENERATOR names (judged by $SALUN_CLASSIFIER)."""
    if os.environ.get("SALUN_GENERATOR"):
        return {"custom": (os.environ["SALUN_GENERATOR"], os.environ.get("SALUN_CLASSIFIER", str(DEFAULT_CHECKPOINT)))}
    from core.classification.experiment import default_checkpoint

    return {name: (str(path), str(default_checkpoint(name))) for name, path in SHIPPED_GENERATORS.items()
            if path.is_file()}


def forget_previous_choices() -> None:
    """Another generator: the last result belongs to the old one (its settings are keyed by generator)."""
    st.session_state.pop("gen_shown", None)


def setting_key(name: str, method: str | None, choice: str) -> str:
    """A method setting's widget key names the generator too: each generator has its own tuned defaults, and
    a widget keeps its value under its key, so after a switch the other generator's values would stay (and
    be sent: a Fashion-MNIST run with the digit generator's α)."""
    return f"gen_{name}_{choice}" if method is None else f"gen_{name}_{method}_{choice}"


def restore_choices(config) -> None:
    """A reload or a shared link names a run (?run=, ?job=): open with the choices that made it."""
    st.session_state.setdefault("pick_class", config.forget_class())
    st.session_state.setdefault("gen_method", config.method)
    choices = generator_choices()
    choice = next((name for name, (generator, _) in choices.items() if generator == config.generator),
                  next(iter(choices), ""))
    st.session_state.setdefault("gen_dataset", choice)
    settings = {setting_key("steps", None, choice): (int, config.steps), setting_key("guidance", None, choice): (float, config.guidance),
                "gen_sparsity": (float, config.sparsity), "gen_per_class": (int, config.per_class),
                "gen_sample_steps": (int, config.sample_steps),
                setting_key("lr", config.method, choice): (float, config.lr),
                setting_key("alpha", config.method, choice): (float, config.alpha), "gen_masked": (bool, config.masked)}
    settings.update({setting_key(name, config.method, choice): (type(value), value)
                     for name, value in (config.options or {}).items()})
    for key, (kind, value) in settings.items():  # the run's settings, not the defaults, beside its progress or result
        if value is not None:
            st.session_state.setdefault(key, kind(value))


def generation_work(config: GenerationRunConfig, models, dataset, live: dict):
    """The job: the original's images and metrics, the unlearning (with a live preview every few
    steps), the unlearned model's images and metrics; the result is kept in the run store."""
    generator, gen_meta, classifier, _ = models
    forget_class = config.forget_class()
    preview_labels = list(range(len(dataset.class_names)))
    every = max(1, int(config.steps) // 4)  # four previews: each draws 10 images, ~0.6 s of the wait

    def watch(model, done, total, loss):
        if done % every == 0 or done == total:
            images = generate(model, preview_labels, guidance=config.guidance, steps=min(10, config.sample_steps),
                              seed=config.seed)
            live["preview"] = (grid_image(images, len(preview_labels), None, scale=3), done)

    def work(progress):
        live["phase"] = "generating with the original model"
        from core.warm import before_grid  # the page's before-grid when the settings match: generated once

        images = before_grid(config.generator, config.per_class, config.guidance, config.sample_steps, config.seed,
                             load_generator=lambda: generator)
        before = generation_metrics(generator, classifier, forget_class, dataset.test_x, dataset.test_y,
                                    per_class=config.per_class, guidance=config.guidance, steps=config.sample_steps,
                                    seed=config.seed, images=images)
        live["phase"] = "computing the saliency mask, then unlearning"
        from core.warm import mask_gradient_sums  # the forget class's gradients: computed once per class

        data = generation_split(dataset, forget_class)

        def gradient_sums():
            return mask_gradient_sums(config.generator, generator, data.forget_x, forget_class, config.guidance,
                                      MASK_DRAWS, config.seed)

        run = unlearn_generator(generator, data, config.method,
                                sparsity=config.sparsity, seed=config.seed, masked=config.masked,
                                mask_guidance=config.guidance, progress=progress, watch=watch, dataset=dataset.name,
                                steps=config.steps, lr=config.lr, alpha=config.alpha, mask_draws=MASK_DRAWS,
                                gradient_sums=gradient_sums if config.generator else None, **config.options)
        live["phase"] = "generating with the unlearned model"
        after = generation_metrics(run.model, classifier, forget_class, dataset.test_x, dataset.test_y,
                                   per_class=config.per_class, guidance=config.guidance, steps=config.sample_steps,
                                   seed=config.seed, before=before)
        result = GenerationRunResult(config, before, after, run, {"generator": gen_meta})
        ui.result_store().put(result)  # kept, and addressable, even if the visitor has left
        return result

    return work


def show_live(jobs) -> None:
    """Inside the progress box: the job's phase and its latest preview."""
    live = jobs[0].info.get("live", {})
    if "phase" in live:
        st.caption(live["phase"])
    if "preview" in live:
        image, done = live["preview"]
        st.image(image, caption=f"live preview after step {done}: one image per class, {class_names[0]} → "
                                f"{class_names[-1]}", width="stretch")


@st.cache_resource(show_spinner="Loading the generator and the classifier…")
def cached_models(generator_path: str, classifier_path: str):
    return load_models(generator_path, classifier_path)


@st.cache_resource(show_spinner="Generating with the original model…")
def cached_original_grid(generator_path: str, classifier_path: str, per_class: int, guidance: float,
                         sample_steps: int, seed: int):
    # kept on disk per generator file, settings and code (core/warm.py): a restarted server, or one
    # warmed by `python -m core.cli warm`, shows it at once
    from core.warm import before_grid

    return before_grid(generator_path, per_class, guidance, sample_steps, seed,
                       load_generator=lambda: cached_models(generator_path, classifier_path)[0])


def show_grid(images, per_class: int, forget_class: int | None, class_names: list[str], caption: str) -> None:
    st.image(grid_image(images, per_class, forget_class), caption=caption, width="stretch")


st.title("Diffusion: forget a class")
ui.links.restore_batch("gen", lambda method: registered_methods("generation")[method].label, restore=restore_choices)
st.caption("A class-conditional diffusion model (DDPM, classifier-free guidance) learns to stop drawing one "
           "class (a digit, or a piece of clothing) while it keeps drawing the others. SalUn changes only the weights most salient for the "
           "forgotten class and teaches the model to draw another class when asked for it.")

CHOICES = generator_choices()
if not CHOICES:
    st.error("No generator is installed: train one with `python -m core.cli train-gen --dataset mnist5k`.")
    st.stop()
chosen = next(iter(CHOICES))
if len(CHOICES) > 1:
    chosen = st.radio("Generator", list(CHOICES), key="gen_dataset", horizontal=True, on_change=forget_previous_choices,
                      format_func=lambda name: GENERATOR_LABELS.get(name, name),
                      help="Each generator comes with the shipped classifier of its dataset, which judges its images.")
GENERATOR_PATH, CLASSIFIER_PATH = CHOICES[chosen]

try:
    generator, gen_meta, classifier, clf_meta = cached_models(GENERATOR_PATH, CLASSIFIER_PATH)
except SalunError as exc:
    st.error(f"Cannot load the models: {ui.public(exc)}")
    st.stop()
GUIDANCE = default_guidance(gen_meta)  # the guidance this generator was tuned for (its sidecar)

dataset = load_dataset(gen_meta.get("dataset", "mnist5k"))
class_names = dataset.class_names
GENERATION_METHODS = registered_methods("generation")  # the built-in methods and those of $SALUN_PLUGINS
methods = list(GENERATION_METHODS)

with st.container(border=True):
    col1, col2, col3, col4 = st.columns(4)
    st.session_state.setdefault("pick_class", min(3, len(class_names) - 1))  # the class every page opens with
    forget_class = col1.selectbox("Class to forget", range(len(class_names)), key="pick_class",
                                  format_func=lambda c: str(class_names[c]))
    method = col2.selectbox("Method", methods, format_func=lambda m: GENERATION_METHODS[m].label, key="gen_method",
                            help="; ".join(f"{m.label}: {m.summary}" for m in GENERATION_METHODS.values()))
    # every setting's widget, range and help come from the method's declaration in core.methods
    specs = {s.name: s for s in widget_specs(GENERATION_METHODS[method], GENERATION_METHODS[method].defaults(dataset.name, "class"))}
    steps = widget(col3, specs["steps"], setting_key("steps", None, chosen), max_value=2000)
    guidance = col4.number_input("Guidance", min_value=0.0, max_value=10.0, value=float(GUIDANCE), step=0.25,
                                 key=setting_key("guidance", None, chosen),
                                 help="Classifier-free guidance when sampling: 1 = plain conditional model; "
                                      "larger values follow the class more strongly. Must be > 0.")
    with st.expander("More settings"):
        c1, c2, c3, c4 = st.columns(4)
        lr = widget(c1, specs["lr"], setting_key("lr", method, chosen))
        alpha = widget(c2, specs["alpha"], setting_key("alpha", method, chosen)) if "alpha" in specs else None
        sparsity = c3.number_input("Mask sparsity", min_value=0.0, max_value=1.0, value=0.5, step=0.05,
                                   key="gen_sparsity", help="Share of all weights the saliency mask selects")
        per_class = int(c4.number_input("Images per class", min_value=1, max_value=50, value=PER_CLASS,
                                        key="gen_per_class"))
        sample_steps = int(c1.number_input("DDIM steps", min_value=1, max_value=200, value=SAMPLE_STEPS,
                                           key="gen_sample_steps"))
        masked = GENERATION_METHODS[method].mask == "optional" and c2.checkbox("Constrain to the saliency mask too",
                                                                              key="gen_masked")
        others = [s for name, s in specs.items() if name not in ("steps", "lr", "alpha")]
        options = {}
        for row in range(0, len(others), 4):
            for column, spec in zip(st.columns(4), others[row:row + 4]):
                if spec.name == "substitute":  # a class: picked by name
                    value = column.selectbox(spec.label,
                                             [-1, *range(len(class_names))], index=int(spec.value) + 1,
                                             key=setting_key(spec.name, method, chosen), help=spec.help,
                                             format_func=lambda c: "the next class (c+1)" if c < 0 else str(class_names[c]))
                else:
                    value = widget(column, spec, setting_key(spec.name, method, chosen))
                if value != spec.value:  # untouched settings leave the run config as it was
                    options[spec.name] = value
    run_clicked = st.button("Forget", type="primary", key="gen_run")

if run_clicked:
    try:
        config = GenerationRunConfig(forget=f"class:{forget_class}", method=method, seed=SEED, sparsity=sparsity,
                                     masked=bool(masked), steps=int(steps), lr=lr, alpha=alpha, options=options, guidance=guidance,
                                     sample_steps=sample_steps, per_class=per_class,
                                     generator=GENERATOR_PATH, classifier=CLASSIFIER_PATH).validate()
        store = ui.result_store()
        stored = store.get(config, on_damaged=lambda reason="": st.warning(
            f"The stored result of this run failed its integrity check ({reason}); it is being computed again."))
        label = f"Forgetting {class_names[forget_class]} with {GENERATION_METHODS[method].label}"
        job = None
        if stored is None:
            ui.check_queue(1)
            live = {}
            work = generation_work(config, (generator, gen_meta, classifier, clf_meta), dataset, live)
            job = store.job_for(config, lambda: ui.job_runner().submit(work, label=label,
                                                                        info={"config": config, "live": live}))
        entries = [{"label": label, "config": config, "job": job}]
        ui.cancel_entries(st.session_state.get("gen_batch"), keep=entries)
        st.session_state["gen_batch"] = {"target": None, "seed": SEED, "entries": entries}
    except SalunError as exc:
        st.error(ui.public(exc))

shown = ui.links.follow_batch("gen", "Forgetting", live=show_live)  # the job runs on if the visitor leaves
result: GenerationRunResult | None = shown["results"][0][1] if shown else None

if result is None:
    try:
        images, _ = cached_original_grid(GENERATOR_PATH, CLASSIFIER_PATH, PER_CLASS, float(GUIDANCE),
                                         SAMPLE_STEPS, SEED)
    except SalunError as exc:
        st.error(ui.public(exc))
        st.stop()
    st.subheader("What the original model generates")
    show_grid(images, PER_CLASS, None, class_names,
              f"one row per class, {class_names[0]} at the top · guidance {GUIDANCE:g} · seed {SEED}")
    if "gen_batch" not in st.session_state:
        st.info("Choose a class and press **Forget**. The before/after grids use the same seeds, so each image "
                "after unlearning has its twin before it.")
    st.stop()

cfg = result.config
k = cfg.forget_class()
mask_cached = bool(result.unlearning.timings.get("mask_cached"))
substitute = result.unlearning.substitute
if substitute is None and cfg.method in ("salun", "rl"):  # stored before runs recorded it: then always c + 1
    substitute = substitute_class(k, len(class_names))
st.subheader(f"Class {class_names[k]} forgotten with {GENERATION_METHODS[cfg.method].label} "
             f"in {result.rte_seconds:.0f} s")
if mask_cached:
    st.caption(f"The saliency mask's gradients for class {class_names[k]} were computed once before (same generator, "
               "guidance, draws and seed) and read back from the store: the same mask, without computing it again "
               "(for the shipped digit generator that saves about a minute and a half on 2 CPU cores). The time "
               "above is the rest of the run.")
st.caption(f"Same seeds before and after · {cfg.per_class} images per class, one row per class "
           f"({class_names[0]} at the top) · the forgotten row is framed in red · guidance {cfg.guidance:g}, "
           f"{cfg.sample_steps} DDIM steps."
           + (f" {GENERATION_METHODS[cfg.method].label} taught the model to draw class {class_names[substitute]} when "
              f"asked for {class_names[k]}." if substitute is not None else ""))
left, right = st.columns(2)
with left:
    show_grid(result.before["images"], cfg.per_class, k, class_names, "before (original model)")
with right:
    show_grid(result.after["images"], cfg.per_class, k, class_names, "after unlearning")

st.subheader("Metrics")
rows = []
for key in ("ua", "retained_accuracy", "frechet_retained"):
    rows.append({"metric": GENERATION_METRIC_LABELS[key],
                 **{when: None if m[key] is None else round(m[key], 2)  # None: too few images for a Fréchet distance
                    for when, m in (("before", result.before), ("after", result.after))},
                 "definition": GENERATION_METRIC_DEFINITIONS[key]})
if result.after.get("retained_drop") is not None:  # (runs stored before it was measured have none)
    drop, se = result.after["retained_drop"], result.after["retained_drop_se"]
    rows.append({"metric": GENERATION_METRIC_LABELS["retained_drop"] + " (points)", "before": None,
                 "after": round(drop, 2), "definition": f"{drop:.1f} ± {'n/a' if se is None else f'{se:.1f}'}: "
                 + GENERATION_METRIC_DEFINITIONS["retained_drop"]})
rows.append({"metric": "RTE (s)", "before": None, "after": round(result.rte_seconds, 1),
             "definition": "Wall time of the unlearning run, saliency mask included"
                           + (" (its gradients read back from the store)." if mask_cached else ".")})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.markdown(f"Metrics from {cfg.per_class} generated images per class, judged by the shipped classifier; "
            "**Fréchet distance (classifier features)** compares generated and real test images of the retained "
            "classes on the classifier's penultimate features — it is not Inception FID. The benchmark and the "
            "CLI use 30 images per class; below "
            f"{result.after.get('frechet_min_per_class', '?')} per class it is not computed (too few images for "
            "its 64 features).")
if "frechet_note" in result.after:
    st.warning(f"Fréchet distance {result.after['frechet_note']}: raise the images per class to see it.")

st.subheader("Per-class accuracy of generated images")
st.plotly_chart(per_class_accuracy_figure({"Before": result.before["per_class_accuracy"],
                                           "After": result.after["per_class_accuracy"]}, class_names, k,
                                          title="Generated images recognised per class",
                                          axis_title="recognised as the class asked for (%)"), width="stretch")

if result.unlearning.gradients is not None:
    st.subheader("Saliency mask, per layer")
    st.caption("Gradient of the guided noise-prediction error ||ε − εθ(x_t | forgotten class)||² summed over "
               "whole passes through the forgotten class at random timesteps; the mask keeps the top share of all "
               "weights.")
    stability = getattr(result.unlearning, "mask_stability", None)
    if stability:
        st.metric("Mask stability (IoU of two half-draw masks)", f"{stability['half_iou']:.2f}",
                  help=f"The mask comes from {stability['draws']:,} draws (image, timestep, noise). Masks built "
                       f"from its two halves ({stability['half_draws']:,} draws each) overlap this much; the full "
                       "mask is more stable than that (on the shipped generator two seeds' full masks overlap at "
                       "IoU 0.93 from the default 8,000 draws). 1.0 = the same weights whatever the draws.")
    stats = layer_statistics(result.unlearning.gradients, result.unlearning.mask)
    st.plotly_chart(layer_saliency_figure(stats), width="stretch")
    with st.expander("Per-layer table"):
        st.dataframe(pd.DataFrame(stats), hide_index=True, width="stretch")
