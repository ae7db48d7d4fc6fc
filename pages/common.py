"""What the classification pages share: cached core objects, the forget-target picker, job polling.

Not a page itself: app.py lists its pages explicitly. Process-wide objects (datasets, experiments,
gradients, the job runner, finished runs) sit behind st.cache_resource; a visitor's choices and
current jobs sit in st.session_state.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import streamlit as st

from core.errors import SalunError  # no torch: core.data and the rest load on first use, after the page shows

SHIPPED_DATASET = "mnist5k"

UPLOADS = ROOT / "runs" / "uploads"
KINDS = {"class": "One class", "random": "A random share", "indices": "A list of indices"}

# Widget keys of the shared picker; app.py keeps them alive while a visitor moves between pages.
PICKER_KEYS = ("pick_dataset", "pick_checkpoint", "pick_data_root", "pick_kind", "pick_class",
               "pick_share", "pick_indices_text", "pick_seed")


_routing = threading.local()  # set by app.py while it runs the chosen page in this script thread


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


# --- process-wide, cached ------------------------------------------------------------------------

@st.cache_resource
def limits():
    from core.limits import load_limits

    return load_limits()


@st.cache_resource
def job_runner():
    from core.jobs import JobRunner

    return JobRunner(max_concurrent=limits().max_concurrent_jobs)


@st.cache_resource(max_entries=8, show_spinner="Loading the dataset and the trained model…")
def experiment(dataset: str, forget: str, checkpoint: str | None, data_root: str | None, split_seed: int):
    from core.classification.experiment import Experiment, RunConfig

    return Experiment.from_config(RunConfig(dataset=dataset, forget=forget, checkpoint=checkpoint,
                                            data_root=data_root, seed=split_seed))


@st.cache_resource(max_entries=4, show_spinner="Loading example images…")
def example_images(dataset: str, data_root: str | None):
    from core.classification.analysis import example_images as examples
    from core.data import load_dataset

    data = load_dataset(dataset, data_root)
    return examples(data, per_class=1), data.class_names, len(data.train_y)


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


# --- the forget target ---------------------------------------------------------------------------

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
        seed = int(col_seed.number_input("Seed", min_value=0, max_value=10_000, value=0, step=1, key="pick_seed",
                                         help="Seeds the run (random labels, batch order) and draws a random share."))
        info = DATASETS[dataset]
        own_model = st.session_state.get("pick_model_file") is not None  # keep the upload in sight
        with st.expander("Model checkpoint and data folder", expanded=not info.offline or own_model):
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
            st.error(f"Cannot load {dataset}: {exc}")
            return None
        if model_file is not None:
            try:
                checkpoint = store_uploaded_model(model_file.getvalue(), model_file.name, architecture, dataset, data_root)
            except SalunError as exc:
                st.error(str(exc))
                return None
            st.caption(f"Using your uploaded model {model_file.name!r} as {architecture}.")
        if kind == "class":
            chosen = class_picker(examples, class_names, "pick_class")
            forget = f"class:{chosen}"
        elif kind == "random":
            share = st.slider("Share of the training set to forget (%)", 1, 50, 10, key="pick_share",
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
                st.error(str(exc))
                return None
            st.caption(f"{len(indices):,} training images selected.")
            forget = f"indices:{save_index_list(' '.join(map(str, indices))).relative_to(ROOT)}"
    target = Target(dataset, forget, checkpoint, data_root, seed)
    try:
        exp = target.experiment()
        limits().check("forget_size", len(exp.split.forget_idx))
    except SalunError as exc:
        st.error(str(exc))
        return None
    return target


# --- runs ----------------------------------------------------------------------------------------

def default_settings(exp, method: str) -> dict:
    """A method's epochs / lr / alpha for this kind of target (Retrain: the original model's recipe)."""
    from core.classification.methods import METHODS

    defaults = METHODS[method].params_for(exp.split.target.kind)
    if method == "retrain":
        t = exp.data.original_training
        defaults = {**defaults, "epochs": t.epochs, "lr": t.lr}
    out = {}
    if "epochs" in defaults:
        out["epochs"] = int(defaults["epochs"])
    for key in ("lr", "alpha"):
        if key in defaults:
            out[key] = float(defaults[key])
    return out


def method_settings(exp, method: str, key: str) -> dict:
    """Widgets for a method's epochs / lr / alpha, defaulting to its settings for this kind of target."""
    from core.classification.methods import METHODS

    spec = METHODS[method]
    defaults = default_settings(exp, method)
    # the key names the model too: a widget keeps its value under its key, so another model's
    # defaults would otherwise never show
    model_id = hashlib.sha1(json.dumps([exp.dataset.name, exp.meta.get("training")], default=str).encode()).hexdigest()[:8]
    kind = f"{exp.split.target.kind}_{model_id}"
    values = {}
    columns = st.columns(3)
    if "epochs" in defaults:
        values["epochs"] = int(columns[0].number_input(
            "Epochs", min_value=1, max_value=limits().max_epochs, value=min(defaults["epochs"], limits().max_epochs),
            step=1, key=f"{key}_{method}_{kind}_epochs",
            help="Passes over the forget set (SalUn, RL, GA) or the retain set (FT, ℓ1-sparse, Retrain)."))
    if "lr" in defaults:
        values["lr"] = float(columns[1].number_input(
            "Learning rate", min_value=1e-6, max_value=1.0, value=defaults["lr"], format="%.5f",
            step=1e-4, key=f"{key}_{method}_{kind}_lr",
            help="Too small and the forget accuracy will not drop; too large and the kept classes suffer."))
    if "alpha" in defaults:
        meaning = {"salun": "weight of the retain loss", "rl": "weight of the retain loss",
                   "l1_sparse": "ℓ1 penalty weight", "ssd": "selection threshold (importance ratio)"}
        values["alpha"] = float(columns[2].number_input(
            "α", min_value=0.0, value=defaults["alpha"], format="%g", key=f"{key}_{method}_{kind}_alpha",
            help=f"α for {spec.label}: {meaning.get(method, 'method weight')}."))
    return values


def make_config(target: Target, method: str, seed: int, sparsity: float, masked: bool = False, **settings):
    """A complete RunConfig: every setting filled in, and sparsity only where a mask is used, so equal
    runs get equal cache keys whichever page asks."""
    from core.classification.experiment import RunConfig
    from core.saliency import DEFAULT_SPARSITY
    from core.classification.methods import METHODS

    spec = METHODS[method]
    uses_mask = spec.mask == "required" or (masked and spec.mask == "optional")
    return RunConfig(dataset=target.dataset, forget=target.forget, method=method,
                     sparsity=float(sparsity) if uses_mask else DEFAULT_SPARSITY, seed=int(seed),
                     epochs=settings.get("epochs"), lr=settings.get("lr"), alpha=settings.get("alpha"),
                     masked=bool(masked and spec.mask == "optional"), checkpoint=target.checkpoint,
                     data_root=target.data_root)


def run_config(exp, config, progress=None):
    """Run one config on its experiment (the job's work function)."""
    return exp.unlearn(config.method, seed=config.seed, sparsity=config.sparsity, masked=config.masked,
                       progress=progress, config=config, **config.overrides())


def cancel_entries(batch: dict | None) -> None:
    """Stop the jobs of a batch the visitor has replaced with a new one."""
    for e in (batch or {}).get("entries", []):
        if e.get("job") is not None and not e["job"].finished:
            e["job"].cancel()


def check_queue(new_jobs: int) -> None:
    waiting = job_runner().stats()["waiting"]
    if waiting + new_jobs > limits().max_queue:
        raise SalunError(f"the server is busy: {waiting} runs are already waiting (limit {limits().max_queue}); "
                         "try again in a minute")


def submit_runs(exp, configs: list, labels: list[str]) -> list[dict]:
    """Queue every config that has no stored result; return one entry per config."""
    store, runner, entries = result_store(), job_runner(), []
    stored = [store.get(config, on_damaged=lambda label=label: st.warning(
        f"The stored result of {label} failed its integrity check (its weights changed after it was "
        "stored), so it is being computed again.")) for config, label in zip(configs, labels)]
    check_queue(sum(s is None for s in stored))
    for config, label, cached in zip(configs, labels, stored):
        job = None
        if cached is None:
            def work(progress, c=config):
                result = run_config(exp, c, progress)
                store.put(result)  # kept even if the visitor has left
                return result

            job = store.job_for(config, lambda work=work, label=label: runner.submit(work, label=label))
        entries.append({"label": label, "config": config, "job": job, "cached": cached is not None})
    return entries


def poll_jobs(entries: list[dict], cancel_key: str, title: str = "Running") -> bool:
    """Draw progress bars and a live loss curve until every job has finished; returns False if the
    visitor cancelled. The Cancel button reruns the page; the jobs keep running in their threads, and
    this rerun cancels them."""
    from core.classification.plots import loss_curve_figure

    jobs = [e["job"] for e in entries if e["job"] is not None]
    holder = st.empty()  # everything drawn here disappears once the jobs are done
    with holder.container():
        if st.button("Cancel", key=cancel_key, type="secondary", icon=":material/cancel:"):
            for job in jobs:
                job.cancel()
            for job in jobs:  # a run stops at its next step; wait for that so the page can say so at once
                job.wait(10)
            holder.empty()
            return False
        with st.status(title, expanded=True):
            bars = {id(e): st.progress(0.0, text=e["label"]) for e in entries if e["job"] is not None}
            chart = st.empty()
            last_drawn = 0.0
            while True:
                for e in entries:
                    job = e["job"]
                    if job is None:
                        continue
                    done, total, loss = job.progress
                    if job.status == "queued":
                        text = f"{e['label']}: waiting (position {job.queue_position()} in the queue)"
                    elif job.finished:
                        text = f"{e['label']}: {job.status}"
                    elif total == 0:
                        text = f"{e['label']}: starting…"
                    else:
                        text = f"{e['label']}: step {done}/{total}, loss {loss:.3f}"
                    bars[id(e)].progress(1.0 if job.finished else job.fraction_done, text=text)
                if all(j.finished for j in jobs):
                    break
                if time.monotonic() - last_drawn > 0.8:
                    chart.plotly_chart(loss_curve_figure({e["label"]: list(e["job"].losses) for e in entries
                                                          if e["job"] is not None}),
                                       key=f"{cancel_key}_loss_{time.monotonic()}")
                    last_drawn = time.monotonic()
                time.sleep(0.25)
    holder.empty()
    return True


def collect_results(entries: list[dict]) -> tuple[list[tuple[str, object]], list[str]]:
    """(label, RunResult) for each finished entry; and what to say about each that did not finish
    (shown by `report_problems`)."""
    store, results, problems = result_store(), [], []
    for e in entries:
        job = e["job"]
        if job is None:
            result = store.get(e["config"])
            if result is not None:
                results.append((e["label"], result))
            continue
        if job.status == "done":
            store.put(job.result)
            results.append((e["label"], job.result))
        else:
            problems.append((job.status, job.message or f"{e['label']} did not finish ({job.status})"))
    return results, problems


def report_problems(problems: list[tuple[str, str]]) -> None:
    """A cancelled run is the visitor's choice (a note); a failed one is explained as an error."""
    for status, message in problems:
        (st.info if status == "cancelled" else st.error)(message)
