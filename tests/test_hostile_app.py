"""Hosted mode in the app (AppTest): no page offers a field that takes a server path, and a hostile
model from the operator's list is answered with one line that shows no server path and no traceback."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["app.py", "pages/unlearn.py", "pages/saliency.py", "pages/sweep.py", "pages/generation.py", "pages/concept.py"]
# the only free-text fields a hosted visitor sees: prompts, seeds and pasted indices — none takes a path
TEXT_FIELDS_ALLOWED = {"Prompt to forget", "Pseudo prompt it is mapped to", "Retain prompts (one per line)",
                       "Your evaluation prompts (one per line, added to the judge's own)", "before/after seeds",
                       "…or paste indices"}


@pytest.fixture
def hosted(monkeypatch, tmp_path):
    """Hosted mode through a limits file; returns a function that adds the operator's [models] table."""
    from pages import ui

    limits_file = tmp_path / "limits.toml"
    limits_file.write_text("hosted = true\n")
    monkeypatch.setenv("SALUN_LIMITS_FILE", str(limits_file))
    ui.limits.clear()

    def with_models(models: dict[str, Path]) -> None:
        table = "".join(f'"{name}" = "{path}"\n' for name, path in models.items())
        limits_file.write_text(f"hosted = true\n[models]\n{table}")
        ui.limits.clear()
    yield with_models
    ui.limits.clear()


def text_fields(at: AppTest) -> list[str]:
    return [w.label for w in list(at.text_input) + list(at.text_area)]


@pytest.fixture
def tiny_generator_env(monkeypatch, tmp_path):
    """The Diffusion page on an untrained 8x8 generator, so it loads in a moment."""
    from core.checkpoint import save_checkpoint
    from core.classification.models import SmallCNN
    from core.diffusion.model import UNetConfig, build_generator, save_generator

    torch.manual_seed(0)
    gen = save_generator(build_generator(UNetConfig(image_size=8, block_out_channels=(8, 16), norm_num_groups=4)),
                         tmp_path / "gen.safetensors", {"dataset": "digits", "seed": 0})
    clf = save_checkpoint(SmallCNN(1, 10, 8), tmp_path / "clf.safetensors",
                          {"architecture": "small_cnn", "dataset": "digits", "class_names": [str(i) for i in range(10)],
                           "image_shape": [1, 8, 8]})
    monkeypatch.setenv("SALUN_GENERATOR", str(gen))
    monkeypatch.setenv("SALUN_CLASSIFIER", str(clf))
    monkeypatch.setenv("SALUN_GEN_PER_CLASS", "1")
    monkeypatch.setenv("SALUN_GEN_SAMPLE_STEPS", "1")
    monkeypatch.setenv("SALUN_GEN_MASK_DRAWS", "64")


def test_without_hosted_mode_the_unlearn_page_does_take_a_server_path():
    """The control: the field the hosted test looks for is really there when not hosted."""
    from pages import ui

    ui.limits.clear()
    at = AppTest.from_file(str(ROOT / "pages/unlearn.py"), default_timeout=180).run()
    assert not at.exception
    assert {"Checkpoint (.safetensors)", "Data folder"} <= set(text_fields(at))


@pytest.mark.parametrize("page", PAGES)
def test_in_hosted_mode_no_page_offers_a_path_field(page, hosted, tiny_generator_env):
    at = AppTest.from_file(str(ROOT / page), default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    fields = text_fields(at)
    assert set(fields) <= TEXT_FIELDS_ALLOWED, f"{page} offers {set(fields) - TEXT_FIELDS_ALLOWED}"
    if page in ("pages/unlearn.py", "pages/saliency.py", "pages/sweep.py", "app.py"):
        picker = at.selectbox(key="pick_hosted_model") if page != "app.py" else None
        assert picker is None or "mnist5k_small_cnn" in picker.options  # models are picked from a list
    if page == "pages/concept.py":
        assert at.selectbox(key="hosted_model").options == ["tiny"]


def _hostile_models(folder: Path, good: Path) -> dict[str, Path]:
    meta = json.loads(good.with_suffix(".json").read_text())
    broken = folder / "secret_dir" / "broken.safetensors"
    broken.parent.mkdir()
    shutil.copy(good, broken)
    broken.with_suffix(".json").write_text(json.dumps({**meta, "image_shape": [1, 4e6, 4e6]}))
    nan = folder / "secret_dir" / "nan.safetensors"
    tensors = {k: torch.full_like(v, math.nan) if v.is_floating_point() else v for k, v in load_file(str(good)).items()}
    save_file(tensors, str(nan))
    nan.with_suffix(".json").write_text(json.dumps(meta))
    return {"Digits": good, "Broken sidecar": broken, "NaN weights": nan}


@pytest.mark.parametrize("choice, words", [("Broken sidecar", "image_shape must be"),
                                           ("NaN weights", "holds NaN or infinite weights")])
def test_a_hostile_model_shows_one_line_without_server_paths(choice, words, hosted, digits_checkpoint, tmp_path):
    hosted(_hostile_models(tmp_path, digits_checkpoint))
    at = AppTest.from_file(str(ROOT / "pages/unlearn.py"), default_timeout=180).run()
    at.selectbox(key="pick_dataset").set_value("digits").run()
    at.selectbox(key="pick_hosted_model").set_value(choice).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and words in errors[0], errors
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    page_text = " ".join(str(getattr(e, "value", "")) for e in list(at.error) + list(at.markdown) + list(at.caption))
    assert str(tmp_path) not in page_text and "secret_dir" not in page_text  # nothing says where it lives


def test_public_messages_strip_every_server_path():
    from core.errors import public_message

    message = "checkpoint '/etc/passwd' has no sidecar 'passwd.json'; see /srv/salun/assets/x.json or C:\\models\\m"
    shown = public_message(message, hosted=True)
    assert "/etc/" not in shown and "/srv/" not in shown and "C:\\" not in shown
    assert "passwd" in shown and "x.json" in shown  # the visitor still learns which input was meant
    assert public_message(message, hosted=False) == message
