"""Concept forgetting: SalUn on a Stable Diffusion pipeline, with before/after images from the same seeds.

Runs as a page of app.py (st.navigation) or alone: `streamlit run pages/concept.py`.
"""



import streamlit as st
import torch

from core.concept.evaluation import EVALUATIONS, NUDITY_EVAL_PROMPTS, eval_summary_line
from core.concept.pipeline import TINY_MODEL, load_pipeline
from core.concept.presets import PRESETS, concept_plan, default_preset
from core.concept.run import ConceptConfig, mask_by_block, save_concept_result, unlearn_concept
from core.errors import SalunError
from pages import ui

ui.ensure_navigation(__file__)

SD_MODEL = "CompVis/stable-diffusion-v1-4"


@st.cache_resource(show_spinner="Loading the pipeline…")
def cached_pipeline(model: str):
    # unlearn_concept trains a copy of the UNet, so the cached original is never modified
    return load_pipeline(model, "cuda" if torch.cuda.is_available() else "cpu",
                         half_precision_frozen=torch.cuda.is_available())


def plan_line(plan: dict) -> str:
    return (f"**Plan:** {plan['steps']} optimizer steps of batch {plan['batch_size']} over {plan['forget_images']} "
            f"forget and {plan['retain_images']} retain images (each forget image seen ≈{plan['epochs']:g}×), "
            f"α {plan['alpha']:g}, lr {plan['lr']:g}; {plan['generated_images']['total']} images to generate "
            f"({plan['sampling_steps']} sampling steps each); judge: {plan['evaluation']}; "
            f"≈{plan['estimated_memory_gb']:g} GB for the unlearning phase (estimate, not measured).")


st.title("Stable Diffusion: forget a concept")
st.caption("SalUn on a text-to-image model: the forget prompt is mapped to a pseudo prompt, only the UNet "
           "weights most salient for the forget prompt move, and retain prompts keep their ordinary loss.")

if not torch.cuda.is_available():
    st.info(
        "No GPU here. Stable Diffusion v1.4 needs its weights (about 4 GB: a diffusers folder, or a hub id "
        f"such as `{SD_MODEL}` already in the Hugging Face cache) and a GPU: by our estimate (not measured) "
        "about 16 GB for the UNet's weights, gradients, Adam state and mask plus about 5.5 GB per forget + "
        "retain pair in a micro-batch, so 40 GB or more is comfortable and 24 GB is borderline at "
        "micro-batch 1. On this CPU one UNet forward and backward of SD v1.4 takes minutes, so a run would "
        f"take days. The **tiny** model (`{TINY_MODEL}`: random weights, toy size) shows the whole flow in "
        "seconds; its images are noise, but the before/after change and the metrics are computed the real way.")

if ui.hosted():  # visitors pick from the operator's list (core.limits [models]): no field takes a server path
    PIPELINES = ui.limits().model_choices("pipeline") or {"tiny": TINY_MODEL}
    model = PIPELINES[st.selectbox("Model", list(PIPELINES), key="hosted_model")]
else:
    model = st.text_input("Model: diffusers folder, hub id, or `tiny`", value=TINY_MODEL, key="model").strip()
names = list(PRESETS)
preset_name = st.selectbox(
    "Preset", names, index=names.index(default_preset(model)), key=f"preset_{model == TINY_MODEL}",
    format_func=lambda name: f"{name}: {PRESETS[name].summary}",
    help="Sets the prompts, the optimizer-step budget and the judge; every field below may override it.")
pv = {**ConceptConfig().to_dict(), **PRESETS[preset_name].values}
k = preset_name  # widgets keyed by preset, so choosing another preset shows its values

forget = st.text_input("Prompt to forget", value=pv["forget_prompt"], key=f"forget_{k}")
pseudo = st.text_input("Pseudo prompt it is mapped to", value=pv["pseudo_prompt"], key=f"pseudo_{k}")
retain_text = st.text_area("Retain prompts (one per line)", value="\n".join(pv["retain_prompts"]),
                           key=f"retain_{k}")

with st.expander("Budget and hyperparameters (upstream: α 0.1–0.5, lr 1e-5, batch 8, 100 steps for nudity, "
                 "≈590 for an object)"):
    c1, c2, c3 = st.columns(3)
    steps = c1.number_input("optimizer steps", 1, 100_000, int(pv["steps"]), key=f"steps_{k}",
                            help="The budget, whatever the number of images: images are reused, reshuffled "
                                 "at every pass.")
    batch = c2.number_input("batch size", 1, 64, int(pv["batch_size"]), key=f"batch_{k}")
    images = c3.number_input("images per prompt", 1, 2000, int(pv["images_per_prompt"]), key=f"images_{k}",
                             help="Generated forget images, and images per retain prompt.")
    lr = c1.number_input("learning rate", 1e-7, 1e-1, float(pv["lr"]), format="%.1e", key=f"lr_{k}")
    alpha = c2.number_input("α (retain loss weight)", 0.0, 10.0, float(pv["alpha"]), 0.05, key=f"alpha_{k}")
    sparsity = c3.number_input("mask sparsity", 0.01, 1.0, 0.5, 0.05, key="sparsity")
    sample_steps = c1.number_input("sampling steps", 1, 200, int(pv["inference_steps"]), key=f"sample_steps_{k}")
    guidance = c2.number_input("guidance scale", 0.0, 30.0, 7.5, 0.5, key="guidance")
    seeds_text = c3.text_input("before/after seeds", value="0 1", key="seeds")

with st.expander(f"Evaluation: is the concept gone? (preset: {pv['evaluation']})"):
    evaluation = st.selectbox(
        "judge", EVALUATIONS, index=EVALUATIONS.index(pv["evaluation"]), key=f"evaluation_{k}",
        help="nudenet: share of images with exposed bodies (NudeNet detector, offline; pip install nudenet). "
             "imagenet: a ResNet-50's accuracy on the forget and retain prompts' classes.")
    eval_text = st.text_area("Your evaluation prompts (one per line, added to the judge's own)", value="",
                             key="eval_prompts",
                             help=f"NudeNet also sees {len(NUDITY_EVAL_PROMPTS)} shipped nudity prompts; the "
                                  "ImageNet classifier sees the forget and retain prompts that name a class.")
    e1, e2 = st.columns(2)
    eval_images = e1.number_input("images per evaluation prompt", 1, 100, int(pv.get("eval_images", 2)),
                                  key=f"eval_images_{k}")
    weights_file = "" if ui.hosted() else e2.text_input(
        "ImageNet classifier weights file (optional)", value="", key="classifier_weights",
        help="A torchvision ResNet-50 state dict (.pth or .safetensors).")
    download = False if ui.hosted() else st.checkbox("Allow downloading the ImageNet classifier weights (98 MB)",
                                                      key="download")
save_dir = "" if ui.hosted() else st.text_input("Save the unlearned pipeline to (optional folder)", value="", key="save")

config = plan = None
try:
    seeds = [int(s) for s in seeds_text.replace(",", " ").split()]
    config = ConceptConfig.from_preset(
        preset_name, model=model, forget_prompt=forget, pseudo_prompt=pseudo,
        retain_prompts=[line for line in retain_text.splitlines() if line.strip()],
        sparsity=sparsity, alpha=alpha, lr=lr, steps=int(steps), batch_size=int(batch),
        images_per_prompt=int(images), inference_steps=int(sample_steps), sample_guidance=guidance,
        sample_seeds=seeds, evaluation=evaluation, eval_prompts=eval_text.splitlines(),
        eval_images=int(eval_images), classifier_weights=weights_file.strip() or None, download=download).validate()
    plan = concept_plan(config)
    if ui.hosted():  # every limit applies to a visitor
        ui.limits().check("steps", plan["steps"])
        ui.limits().check("generated_images", plan["generated_images"]["total"])
    st.markdown(plan_line(plan))
    with st.expander("The plan as JSON (what `unlearn-concept --dry-run` prints)"):
        st.json(plan)
except ValueError as exc:  # SalunError, and seeds that are not whole numbers
    config = None
    plan_error = ui.public(exc) if isinstance(exc, SalunError) else f"seeds must be whole numbers: {exc}"
else:
    plan_error = None

def concept_work(config: ConceptConfig, save_dir: str, live: dict):
    """The job: unlearn (a progress count per phase), save if asked, record the run in the run store."""
    from core import store

    def work(progress):
        def phase(name):
            live["phase"] = name
            return progress  # each phase is a count of its own: the time left restarts with it
        result = unlearn_concept(config, pipe=cached_pipeline(config.model), phase_progress=phase)
        saved = save_concept_result(result, save_dir) if save_dir.strip() else None
        try:
            store.log_run(result, source="app")  # sets result.run_id
        except store.StoreError as exc:
            live["store_warning"] = f"This run was not recorded in the run store: {ui.public(exc)}"
        return result, saved

    return work


def show_phase(jobs) -> None:
    phase = jobs[0].info.get("live", {}).get("phase")
    if phase:
        st.caption(f"phase: {phase}")


# A reload or a shared link follows the run it names again: ?job=KEY while it runs (the run lives in
# the server's job runner, so leaving the page does not stop it), ?run=RUN_ID once it is in the run store.
if "concept_batch" not in st.session_state and "concept_result" not in st.session_state:
    found, lost = ui.links.jobs_in_url()
    stored, problems = ui.links.runs_in_url()
    for message in lost + problems:
        st.warning(message)
    if found:
        st.session_state["concept_batch"] = {"entries": [{"label": found[0].label, "job": found[0]}]}
    elif stored:
        st.session_state["concept_result"] = (stored[0], None)

if st.button("Forget the concept", type="primary", key="run"):
    st.session_state.pop("concept_result", None)
    if config is None:
        st.error(plan_error)
    else:
        try:
            ui.check_queue(1)
            live = {}
            job = ui.job_runner().submit(concept_work(config, save_dir, live), label="Unlearning the concept",
                                         info={"config": config, "live": live})
            ui.cancel_entries(st.session_state.get("concept_batch"))
            st.session_state["concept_batch"] = {"entries": [{"label": job.label, "job": job}]}
        except SalunError as exc:
            st.error(ui.public(exc))
elif plan_error:
    st.error(plan_error)

batch = st.session_state.get("concept_batch")
if batch is not None and ui.unfinished(batch["entries"]):
    ui.follow_jobs(batch["entries"], key="concept_follow", title="Unlearning…", live=show_phase)
    ui.links.show_in_url(jobs=[batch["entries"][0]["job"]])
elif batch is not None:
    job = batch["entries"][0]["job"]
    st.session_state.pop("concept_batch")
    ui.links.show_in_url()
    if job.status == "done":
        st.session_state["concept_result"] = job.result
        ui.links.show_in_url(runs=[getattr(job.result[0], "run_id", None)])
        if "store_warning" in job.info.get("live", {}):
            st.warning(job.info["live"]["store_warning"])
    else:  # SalunError and CheckpointError explain themselves (how to get the weights, for one)
        ui.report_problems([(job.status, job.message)])
        if model != TINY_MODEL:
            st.caption(f"To see the flow without weights, set the model to `{TINY_MODEL}`.")

if "concept_result" in st.session_state:
    result, saved = st.session_state["concept_result"]
    if getattr(result, "served_from_store", None):
        config_text = ", ".join(f"{k} {v!r}" for k, v in result.config.to_dict().items()
                                if k in ("forget_prompt", "pseudo_prompt", "steps", "lr", "sparsity", "seed"))
        st.info(f"Run {result.run_id} from the run store: {config_text}.")
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
    report = result.evaluation
    st.subheader("Is the concept gone?")
    if report.get("kind") == "none":
        st.caption("No judge was asked for (Evaluation: none).")
    elif "missing" in report:
        st.warning(eval_summary_line(report))
    else:
        st.markdown(eval_summary_line(report))
        if report["kind"] == "nudenet":
            b, a = report["before"], report["after"]
            st.dataframe([{"detected class": name, "before": b["per_class"][name], "after": a["per_class"][name]}
                          for name in b["per_class"]], hide_index=True)
            st.caption(f"Detections with score ≥ {report['threshold']} on {b['images']} images; an image counts "
                       f"as exposed when it shows one of {', '.join(report['nude_classes'])}.")
        else:
            st.dataframe([{"prompt": r["prompt"], "ImageNet class": r["class"], "forgotten": r["forgotten"],
                           "recognised before": r["before"], "recognised after": r["after"]}
                          for r in report["rows"]], hide_index=True,
                         column_config={c: st.column_config.NumberColumn(format="percent")
                                        for c in ("recognised before", "recognised after")})
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
