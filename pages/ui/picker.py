"""The forget-target picker: dataset, model and what to forget, the same on every page."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.errors import SalunError  # no torch: core.data and the rest load on first use, after the page shows
from pages.ui.resources import ROOT, example_images, experiment, hosted, limits, public
from pages.ui.routing import kept

SHIPPED_DATASET = "mnist5k"

UPLOADS = ROOT / "runs" / "uploads"
KINDS = {"class": "One class", "random": "A random share", "indices": "A list of indices"}

# Widget keys of the shared picker, kept while a visitor moves between pages (file uploaders cannot be
# re-assigned, so they are not among them).
PICKER_KEYS = kept("pick_dataset", "pick_checkpoint", "pick_data_root", "pick_kind", "pick_class",
                   "pick_share", "pick_indices_text", "pick_seed")


@dataclass(frozen=True)
class Target:
    dataset: str
    forget: str
    checkpoint: str | None
    data_root: str | None
    seed: int  # draws a random share; also the default run seed

    @property
    def kind(self) -> str:
        return self.forget.split(":", 1)[0]

    @property
    def forget_class(self) -> int | None:
        return int(self.forget.split(":", 1)[1]) if self.kind == "class" else None

    def experiment(self):
        # the split of a class or an index list does not depend on the seed: share one experiment
        return experiment(self.dataset, self.forget, self.checkpoint, self.data_root,
                          self.seed if self.kind == "random" else 0)


def shipped_class_names() -> list[str]:
    """The shipped model's class names, read from its sidecar JSON without importing torch."""
    return json.loads((ROOT / "assets" / f"{SHIPPED_DATASET}_small_cnn.json").read_text())["class_names"]


def describe_dataset(name: str) -> str:
    from core.data import DATASETS

    info = DATASETS[name]
    need = "" if info.offline else " — needs local files and a trained checkpoint"
    return f"{name}: {info.description} · model {info.default_model}{need}"


def save_index_list(text: str) -> Path:
    """Keep an uploaded index list as a file, so the CLI command can reproduce the run."""
    UPLOADS.mkdir(parents=True, exist_ok=True)
    path = UPLOADS / f"indices_{hashlib.sha256(text.encode()).hexdigest()[:12]}.txt"
    if not path.exists():
        path.write_text(text)
    return path


def store_uploaded_model(data: bytes, filename: str, architecture: str, dataset: str, data_root: str | None) -> str:
    """Check an uploaded classifier (safetensors only, fits `architecture`, size-capped) and keep it
    with a sidecar as a checkpoint of this server; returns its path. Refusals are SalunErrors."""
    from dataclasses import asdict

    from core.checkpoint import save_checkpoint
    from core.data import load_dataset
    from core.classification.training import TrainConfig
    from core.uploads import load_uploaded_classifier

    data_set = load_dataset(dataset, data_root)
    model = load_uploaded_classifier(data, filename, architecture, data_set, limits())
    path = UPLOADS / f"model_{hashlib.sha256(data).hexdigest()[:12]}_{architecture}_{dataset}.safetensors"
    if not path.exists():
        save_checkpoint(model, path, {"architecture": architecture, "dataset": dataset,
                                      "class_names": data_set.class_names, "image_shape": list(data_set.image_shape),
                                      "training": asdict(TrainConfig(architecture=architecture)),
                                      "uploaded_as": filename})
    return str(path)


def show_examples(examples: dict, class_names: list[str]) -> None:
    for c, column in enumerate(st.columns(len(class_names))):
        column.image(examples[c][0], caption=str(class_names[c]), clamp=True, width="stretch")


def class_picker(examples: dict | None, class_names: list[str], key: str, default: int = 3) -> int:
    """One example image per class above a row of choices; returns the chosen class index. Without
    `examples`, only the choices (the caller fills in the images later)."""
    if examples is not None:
        show_examples(examples, class_names)
    if key not in st.session_state:
        st.session_state[key] = min(default, len(class_names) - 1)
    return st.radio("Class to forget", list(range(len(class_names))), key=key, horizontal=True,
                    format_func=lambda c: str(class_names[c]), label_visibility="collapsed")


SHIPPED_CHOICE = "The shipped model for this dataset"


def hosted_model_choice() -> str | None:
    """Hosted mode: a classifier from the operator's list (core.limits `[models]`; the shipped ones by default)."""
    choices = limits().model_choices("classifier")
    options = ([] if limits().models else [SHIPPED_CHOICE]) + list(choices)
    if not options:
        st.error("This server offers no classifier to pick; upload your own below.")
        return None
    name = st.selectbox("Classifier", options, key="pick_hosted_model",
                        help="The models this server offers; or upload your own below.")
    return None if name == SHIPPED_CHOICE else choices[name]


def target_picker() -> Target | None:
    """Dataset, model and what to forget. Returns None (after explaining why in place) when unusable."""
    from core.data import DATASETS, DEFAULT_DATASET, read_index_list
    from core.uploads import load_uploaded_index_list

    with st.container(border=True):
        st.markdown("**What to forget**")
        names = list(DATASETS)
        col_dataset, col_kind, col_seed = st.columns([3, 2, 1])
        dataset = col_dataset.selectbox("Dataset and model", names, index=names.index(DEFAULT_DATASET),
                                        key="pick_dataset", format_func=describe_dataset)
        kind = col_kind.radio("Forget", list(KINDS), key="pick_kind", format_func=KINDS.get, horizontal=True)
        seed = int(col_seed.number_input("Seed", min_value=0, max_value=10_000, step=1, key="pick_seed",
                                         help="Seeds the run (random labels, batch order) and draws a random share."))
        info = DATASETS[dataset]
        own_model = st.session_state.get("pick_model_file") is not None  # keep the upload in sight
        with st.expander("Model checkpoint and data folder" if not hosted() else "Model",
                         expanded=not info.offline or own_model):
            if hosted():  # visitors pick from the operator's list: no field takes a server path
                checkpoint, data_root = hosted_model_choice(), None
            else:
                checkpoint = st.text_input(
                    "Checkpoint (.safetensors)", key="pick_checkpoint", placeholder="blank: the shipped model for this dataset",
                    help=f"Train one with `python -m core.cli train --dataset {dataset}`.").strip() or None
                data_root = st.text_input("Data folder", key="pick_data_root", placeholder="blank: the default folder",
                                          help="Only for torchvision datasets (mnist, fashion_mnist, cifar10, svhn).").strip() or None
            from core.classification.models import ARCHITECTURES

            col_file, col_arch = st.columns([3, 1])
            model_file = col_file.file_uploader(
                "…or upload your own classifier (.safetensors)", key="pick_model_file",
                help="Weights only, as safetensors: safetensors.torch.save_file(model.state_dict(), path). Pickled "
                     ".pt/.pth files are refused: loading them can run code.")
            architecture = col_arch.selectbox("Its architecture", list(ARCHITECTURES), key="pick_model_arch",
                                              index=list(ARCHITECTURES).index(info.default_model))
        try:
            examples, class_names, n_train = example_images(dataset, data_root)
        except SalunError as exc:
            st.error(f"Cannot load {dataset}: {public(exc)}")
            return None
        if model_file is not None:
            try:
                checkpoint = store_uploaded_model(model_file.getvalue(), model_file.name, architecture, dataset, data_root)
            except SalunError as exc:
                st.error(public(exc))
                return None
            st.caption(f"Using your uploaded model {model_file.name!r} as {architecture}.")
        if kind == "class":
            chosen = class_picker(examples, class_names, "pick_class")
            forget = f"class:{chosen}"
        elif kind == "random":
            share = st.slider("Share of the training set to forget (%)", 1, 50,
                              None if "pick_share" in st.session_state else 10, key="pick_share",
                              help="Drawn at random with the seed above.")
            forget = f"random:{share / 100:g}"
        else:
            upload = st.file_uploader("Index list (.txt: training-set indices separated by spaces, commas or lines)",
                                      type=["txt", "csv"], key="pick_indices_file")
            text = st.text_area("…or paste indices", key="pick_indices_text", height=80,
                                placeholder="e.g. 0, 5, 17, 42")
            if upload is None and not text.strip():
                st.info("Upload or paste the training-set indices to forget.")
                return None
            try:
                if upload is not None:
                    indices = load_uploaded_index_list(upload.getvalue(), upload.name, n_train, limits())
                else:
                    indices = read_index_list(text, n_train)
            except SalunError as exc:
                st.error(public(exc))
                return None
            st.caption(f"{len(indices):,} training images selected.")
            forget = f"indices:{save_index_list(' '.join(map(str, indices))).relative_to(ROOT)}"
    target = Target(dataset, forget, checkpoint, data_root, seed)
    try:
        exp = target.experiment()
        limits().check("forget_size", len(exp.split.forget_idx))
    except SalunError as exc:
        st.error(public(exc))
        return None
    return target
