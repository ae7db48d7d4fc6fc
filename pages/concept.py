"""Concept forgetting: SalUn on a Stable Diffusion pipeline, with before/after images from the same seeds.

Runs as a page of app.py (st.navigation) or alone: `streamlit run pages/concept.py`.
"""



import streamlit as st
import torch

from core.concept.run import ConceptConfig, mask_by_block, save_concept_result, unlearn_concept
from core.cli.concept import SD_DEFAULTS, TINY_DEFAULTS
from core.concept.pipeline import TINY_MODEL, load_pipeline
from core.errors import SalunError

SD_MODEL = "CompVis/stable-diffusion-v1-4"


@st.cache_resource(show_spinner="Loading the pipeline…")
def cached_pipeline(model: str):
    # unlearn_concept trains a copy of the UNet, so the cached original is never modified
    return load_pipeline(model, "cuda" if torch.cuda.is_available() else "cpu",
                         half_precision_frozen=torch.cuda.is_available())


class PhaseBars:
    """One progress bar per phase inside the status box; `phase(name)` is the core's progress factory."""

    def __init__(self, box):
        self.box, self.bars = box, {}

    def phase(self, name):
        def progress(done, total, loss):
            if name not in self.bars:
                self.bars[name] = self.box.progress(0.0, text=name)
            text = f"{name}: {done}/{total}" + (f" · loss {loss:.4f}" if loss else "")
            self.bars[name].progress(min(1.0, done / max(total, 1)), text=text)
        return progress


st.title("Concept forgetting (Stable Diffusion)")
st.caption("SalUn on a text-to-image model: the forget prompt is mapped to a pseudo prompt, only the UNet "
           "weights most salient for the forget prompt move, and retain prompts keep their ordinary loss.")

if not torch.cuda.is_available():
    st.info(
        "No GPU here. Stable Diffusion v1.4 needs its weights (about 4 GB: a diffusers folder, or a hub id "
        f"such as `{SD_MODEL}` already in the Hugging Face cache) and a GPU: by our estimate (not measured) "
        "about 18 GB for the UNet's weights, gradients, Adam state and mask plus 5–6 GB per image in a "
        "micro-batch, so 40 GB or more is comfortable and 24 GB is borderline at micro-batch 1. On this "
        "CPU one UNet forward and backward of SD v1.4 takes minutes, so a run would take days. "
        f"The **tiny** model (`{TINY_MODEL}`: random weights, toy size) shows the whole flow in seconds; "
        "its images are noise, but the before/after change and the metrics are computed the real way.")

model = st.text_input("Model: diffusers folder, hub id, or `tiny`", value=TINY_MODEL, key="model").strip()
defaults = TINY_DEFAULTS if model == TINY_MODEL else SD_DEFAULTS
kind = "tiny" if model == TINY_MODEL else "sd"

forget = st.text_input("Prompt to forget", value="a photo of a nude person", key="forget")
pseudo = st.text_input("Pseudo prompt it is mapped to", value="a photo of a person wearing clothes", key="pseudo")
retain_text = st.text_area("Retain prompts (one per line)", value="a photo of a person wearing clothes",
                           key="retain")

with st.expander("Hyperparameters (upstream: α 0.1–0.5, lr 1e-5, batch 8, 1–5 epochs, mask at guidance 7.5)"):
    c1, c2, c3 = st.columns(3)
    sparsity = c1.number_input("mask sparsity", 0.01, 1.0, 0.5, 0.05, key="sparsity")
    alpha = c2.number_input("α (retain loss weight)", 0.0, 10.0, 0.1, 0.05, key="alpha")
    lr = c3.number_input("learning rate", 1e-7, 1e-1, float(defaults["lr"]), format="%.1e", key=f"lr_{kind}")
    epochs = c1.number_input("epochs", 1, 100, int(defaults["epochs"]), key=f"epochs_{kind}")
    batch = c2.number_input("batch size", 1, 64, int(defaults["batch_size"]), key=f"batch_{kind}")
    images = c3.number_input("images per prompt", 1, 512, int(defaults["images_per_prompt"]), key=f"images_{kind}")
    steps = c1.number_input("sampling steps", 1, 200, int(defaults["steps"]), key=f"steps_{kind}")
    guidance = c2.number_input("guidance scale", 0.0, 30.0, 7.5, 0.5, key="guidance")
    seeds_text = c3.text_input("before/after seeds", value="0 1", key="seeds")
save_dir = st.text_input("Save the unlearned pipeline to (optional folder)", value="", key="save")

if st.button("Forget the concept", type="primary", key="run"):
    st.session_state.pop("concept_result", None)
    try:
        seeds = [int(s) for s in seeds_text.replace(",", " ").split()]
        if not seeds:
            raise SalunError("give at least one seed for the before/after images")
        config = ConceptConfig(
            model=model, forget_prompt=forget, pseudo_prompt=pseudo,
            retain_prompts=[line for line in retain_text.splitlines() if line.strip()],
            sparsity=sparsity, alpha=alpha, lr=lr, epochs=int(epochs), batch_size=int(batch),
            images_per_prompt=int(images), inference_steps=int(steps), sample_guidance=guidance,
            sample_seeds=seeds).validate()
        with st.status("Unlearning…", expanded=True) as status:
            pipe = cached_pipeline(model)
            result = unlearn_concept(config, pipe=pipe, phase_progress=PhaseBars(status).phase)
            saved = save_concept_result(result, save_dir) if save_dir.strip() else None
            status.update(label=f"Done: {len(result.losses)} steps in {result.timings['total_s']:.1f} s",
                          state="complete", expanded=False)
        st.session_state["concept_result"] = (result, saved)
    except ValueError as exc:  # SalunError and bad seed text; CheckpointError explains how to get weights
        st.error(str(exc) if isinstance(exc, SalunError) else f"seeds must be whole numbers: {exc}")
        if model != TINY_MODEL:
            st.caption(f"To see the flow without weights, set the model to `{TINY_MODEL}`.")

if "concept_result" in st.session_state:
    result, saved = st.session_state["concept_result"]
    m = result.metrics
    c1, c2, c3 = st.columns(3)
    c1.metric("forget → pseudo distance", f"{m['forget_to_pseudo_after']:.4g}",
              delta=f"{m['forget_to_pseudo_after'] - m['forget_to_pseudo_before']:.3g}", delta_color="inverse",
              help="mean squared distance between the noise predictions for the forget and the pseudo prompt "
                   "on the same noisy forget images; lower means the forget prompt now acts like the pseudo")
    c2.metric("retain denoising error", f"{m['retain_error_after']:.4g}",
              delta=f"{m['retain_error_after'] - m['retain_error_before']:.3g}", delta_color="inverse",
              help="the diffusion loss of the retain prompts on their own images; it should not grow")
    c3.metric("prediction shift forget / retain", f"{m['forget_shift']:.3g} / {m['retain_shift']:.3g}",
              help="how far each prompt's noise predictions moved from the original model's")
    with st.expander("Where the mask is: salient share of each UNet block"):
        st.dataframe(mask_by_block(result.mask), hide_index=True,
                     column_config={"salient_fraction": st.column_config.ProgressColumn(
                         "salient share", min_value=0.0, max_value=1.0, format="%.2f")})
    if saved:
        st.success(f"Saved to {saved['path']} (StableDiffusionPipeline.from_pretrained loads it)")
    seeds = result.config.sample_seeds
    for prompt, rows in result.samples.items():
        st.subheader(("Forget: " if prompt == result.config.forget_prompt else "Retain: ") + prompt)
        for when in ("before", "after"):
            cols = st.columns(len(seeds) + 1)
            cols[0].markdown(f"**{when}**")
            for col, seed, image in zip(cols[1:], seeds, rows.get(when, [])):
                col.image(image, caption=f"seed {seed}", width=160)
