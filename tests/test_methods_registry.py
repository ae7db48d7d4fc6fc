"""The method registry: a method's declaration drives its validation, its CLI flags and its app widgets,
and a method from outside core/ (examples/custom_method.py) runs through the CLI and the app."""

import json
import math
from pathlib import Path

import pytest

from core.errors import SalunError
from core.methods import Method, Param, get_method, load_plugin, methods, register, unregister, widget_specs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "examples" / "custom_method.py")


def no_op(model, data, params, mask=None, progress=None):
    return []


def toy(name="toy_method", **changes) -> Method:
    fields = dict(
        name=name, label="Toy", summary="A method that changes nothing.", family="classification", run=no_op,
        params=(Param("epochs", int, 3, low=0, low_open=True, high=50, meaning="passes"),
                Param("lr", float, 0.1, low=0, low_open=True, meaning="step size"),
                Param("share", float, 0.5, low=0, high=1, meaning="a share"),
                Param("nesterov", bool, False, meaning="Nesterov momentum")),
        overrides={("*", "random"): {"epochs": 5}, ("digits", "*"): {"lr": 0.2},
                   ("digits", "random"): {"epochs": 7}})
    fields.update(changes)
    return Method(**fields)


@pytest.fixture
def registered_toy():
    method = register(toy())
    yield method
    unregister(method.name)


@pytest.fixture
def plugin_cleanup():
    """The example plugin registers `neggrad_plus` process-wide: remove it after the test."""
    from core.methods import plugins

    yield
    unregister("neggrad_plus")
    for key in [k for k in plugins._loaded if k.endswith("custom_method.py")]:
        del plugins._loaded[key]


# --- the declaration drives validation ------------------------------------------------------------

@pytest.mark.parametrize("setting, value, message", [
    ("epochs", 0, "epochs must be > 0 and <= 50, got 0"),
    ("epochs", 51, "epochs must be > 0 and <= 50, got 51"),
    ("epochs", 2.5, "epochs must be a whole number > 0 and <= 50, got 2.5"),
    ("epochs", "three", "epochs must be a whole number > 0 and <= 50, got 'three'"),
    ("lr", float("nan"), "lr must be a finite number > 0, got nan"),
    ("lr", math.inf, "lr must be a finite number > 0, got inf"),
    ("lr", -1e-3, "lr must be > 0, got -0.001"),
    ("lr", True, "lr must be a number > 0, got True"),
    ("share", 1.5, "share must be from 0 to 1, got 1.5"),
    ("nesterov", 2, "nesterov must be true or false, got 2"),
])
def test_out_of_range_and_non_numbers_are_refused_naming_value_and_range(setting, value, message):
    with pytest.raises(SalunError) as caught:
        toy().resolve(seed=0, **{setting: value})
    assert str(caught.value) == message


def test_values_are_converted_to_their_declared_type_and_seed_is_added():
    params = toy().resolve(seed=4, epochs="4", lr=1, share=0, nesterov="true")
    assert params == {"epochs": 4, "lr": 1.0, "share": 0.0, "nesterov": True, "seed": 4}
    assert type(params["epochs"]) is int and type(params["lr"]) is float


def test_an_unknown_setting_names_the_ones_the_method_takes():
    with pytest.raises(SalunError, match=r"Toy has no setting 'momentum'; it takes: epochs, lr, nesterov, share"):
        toy().resolve(seed=0, momentum=0.9)


def test_the_most_specific_override_wins():
    method = toy()
    assert method.defaults()["epochs"] == 3
    assert method.defaults("mnist5k", "random")["epochs"] == 5
    assert method.defaults("digits", "class") == {"epochs": 3, "lr": 0.2, "share": 0.5, "nesterov": False}
    assert method.defaults("digits", "random")["epochs"] == 7
    assert method.resolve(0, "digits", "random", epochs=9)["epochs"] == 9  # what the user says wins over all


def test_an_override_is_a_one_line_declaration_and_is_checked():
    method = toy()
    method.add_override("fashion_mnist", "*", epochs=11)
    assert method.defaults("fashion_mnist", "class")["epochs"] == 11
    with pytest.raises(SalunError, match="epochs must be > 0"):
        method.add_override("fashion_mnist", "class", epochs=0)
    with pytest.raises(SalunError, match="no setting 'gamma'"):
        toy(overrides={("*", "*"): {"gamma": 1}})
    with pytest.raises(SalunError, match="forget kind 'everything'"):
        method.add_override("*", "everything", epochs=2)


def test_builtin_defaults_by_forget_kind_match_the_tuned_recipes():
    salun = get_method("salun")
    assert salun.resolve(0, "mnist5k", "class")["epochs"] == 2 and salun.resolve(0, "mnist5k", "class")["alpha"] == 16
    assert salun.resolve(0, "digits", "class")["epochs"] == 5  # the declared default elsewhere
    assert get_method("rl").defaults("mnist5k", "class") == salun.defaults("mnist5k", "class")  # the ablation's pair
    for kind in ("random", "indices"):
        assert {k: salun.defaults("mnist5k", kind)[k] for k in ("epochs", "alpha", "retain_batch_size")} == \
            {"epochs": 2, "alpha": 8.0, "retain_batch_size": 256}
    assert get_method("salun", "generation").defaults()["steps"] == 60
    assert get_method("salun").mask == "required" and get_method("retrain").mask == "none"


def test_bad_declarations_and_taken_names_are_refused(registered_toy):
    with pytest.raises(SalunError, match="already registered"):
        register(toy(label="Another toy"))
    register(toy())  # the same declaration again (a plugin imported twice) is fine
    with pytest.raises(SalunError, match="'seed' is reserved"):
        toy(name="x", params=(Param("seed", int, 0),))
    with pytest.raises(SalunError, match="family must be one of"):
        toy(name="x", family="audio")
    with pytest.raises(SalunError, match="mask must be one of"):
        toy(name="x", mask="sometimes")
    with pytest.raises(SalunError, match="epochs must be > 0"):
        Param("epochs", int, 0, low=0, low_open=True)  # a default outside its own range
    with pytest.raises(SalunError, match=r"unknown generation method 'toy_method'; choose one of: salun, rl, ga, ft"):
        get_method("toy_method", "generation")


# --- CLI flags and widgets come from the declaration ---------------------------------------------

def subparser(name):
    from core.cli import build_parser

    parser = build_parser()
    return next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == name)[1]


def test_cli_flags_are_derived_from_every_declaration(registered_toy):
    unlearn = subparser("unlearn")
    flags = unlearn._option_string_actions
    for name in ("--epochs", "--lr", "--alpha", "--retain-batch-size", "--momentum", "--dampening", "--share",
                 "--nesterov", "--no-nesterov"):
        assert name in flags, name
    assert flags["--retain-batch-size"].type is int and flags["--share"].type is float
    assert "retain images paired with every forget batch" in flags["--retain-batch-size"].help
    assert "salun 128 (random 256, indices 256)" in flags["--retain-batch-size"].help
    assert "toy_method" in unlearn._option_string_actions["--method"].help
    gen = subparser("unlearn-gen")._option_string_actions
    assert gen["--grad-clip"].type is float and "--dampening" not in gen and "--share" not in gen


def test_cli_flag_values_reach_the_run_and_bad_ones_exit_2(digits_checkpoint, tmp_path, capsys):
    from core.cli import main

    base = ["unlearn", "--dataset", "digits", "--checkpoint", str(digits_checkpoint), "--forget", "class:2",
            "--quiet", "--json", "--no-store"]
    code = main(base + ["--method", "ft", "--epochs", "1", "--weight-decay", "0", "--save", str(tmp_path / "ft")])
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert (config["epochs"], config["options"]) == (1, {"weight_decay": 0.0})
    capsys.readouterr()
    for argv, message in ((["--method", "ft", "--momentum", "1.5"], "momentum must be from 0 to 1, got 1.5"),
                          (["--method", "ssd", "--epochs", "2"], "SSD has no setting 'epochs'")):
        assert main(base + argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_widget_specs_follow_the_declaration():
    specs = {s.name: s for s in widget_specs(get_method("salun"), get_method("salun").defaults("digits", "random"))}
    assert [s.name for s in widget_specs(get_method("salun"))][:3] == ["epochs", "lr", "alpha"]  # primary first
    assert (specs["epochs"].kind, specs["epochs"].value, specs["epochs"].min_value) == ("int", 2, 1)
    assert specs["momentum"].min_value == 0.0 and specs["momentum"].max_value == 1.0
    assert specs["lr"].min_value is None  # an open bound: the run refuses 0 with a clear line
    assert "weight of the cross-entropy on the retain set" in specs["alpha"].help and "Default 8" in specs["alpha"].help


# --- plugins ---------------------------------------------------------------------------------------

def test_plugin_errors_are_one_line(tmp_path):
    with pytest.raises(SalunError, match="plugin file 'nowhere.py' does not exist"):
        load_plugin("nowhere.py")
    with pytest.raises(SalunError, match="plugin module 'no_such_salun_plugin' cannot be found"):
        load_plugin("no_such_salun_plugin")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(SalunError, match="failed to load: RuntimeError: boom"):
        load_plugin(str(broken))
    bad = tmp_path / "bad_param.py"
    bad.write_text("from core.methods import Param\nParam('lr', float, -1.0, low=0)\n")
    with pytest.raises(SalunError, match=r"bad_param.py': lr must be >= 0, got -1.0"):
        load_plugin(str(bad))


def test_example_plugin_runs_through_the_cli(digits_checkpoint, tmp_path, capsys, plugin_cleanup):
    from core.cli import main

    argv = ["unlearn", "--plugin", EXAMPLE, "--method", "neggrad_plus", "--dataset", "digits",
            "--checkpoint", str(digits_checkpoint), "--forget", "class:2", "--epochs", "1", "--beta", "0.5",
            "--masked", "--quiet", "--json", "--no-store", "--save", str(tmp_path / "run")]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["method"] == "neggrad_plus" and 0 <= summary["ua"] <= 100
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["options"] == {"beta": 0.5} and config["masked"] is True
    assert (tmp_path / "run" / "mask.safetensors").exists()

    # the run's settings were checked against the plugin's declaration, and the same seed repeats it
    assert main(argv[:-1] + [str(tmp_path / "again")]) == 0
    from safetensors.torch import load_file

    first, again = load_file(tmp_path / "run" / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert all(bool((first[k] == again[k]).all()) for k in first)
    capsys.readouterr()
    assert main(argv[:11] + ["--beta", "1.5", "--quiet"]) == 2
    assert "beta must be from 0 to 1, got 1.5" in capsys.readouterr().err


def test_example_plugin_runs_through_the_app(digits_checkpoint, monkeypatch, plugin_cleanup):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from pages.ui import job_runner
    import time

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("SALUN_PLUGINS", f"examples/custom_method.py,{EXAMPLE}")  # the same file twice: loaded once
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "pages" / "unlearn.py"), default_timeout=180).run()
    at.selectbox(key="pick_dataset").set_value("digits")
    at.text_input(key="pick_checkpoint").set_value(str(digits_checkpoint))
    at.run()
    at.radio(key="pick_class").set_value(2).run()
    assert "NegGrad+" in at.multiselect(key="un_methods").options  # shown by its label
    at.multiselect(key="un_methods").set_value(["neggrad_plus"]).run()
    beta = next(w for w in at.number_input if w.label == "β")  # the plugin's own setting, with its help
    assert beta.value == 0.7 and "weight of the retain loss" in beta.help
    next(w for w in at.number_input if w.label == "Epochs" and "neggrad_plus" in w.key).set_value(1)
    beta.set_value(0.5)
    at.button(key="un_run").click().run()
    deadline = time.monotonic() + 180
    while any(job_runner().stats()[k] for k in ("running", "waiting")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    result = at.session_state["un_shown"]["results"][0][1]
    assert result.method == "neggrad_plus" and result.params["beta"] == 0.5 and result.params["epochs"] == 1
    assert "NegGrad+" in list(at.dataframe[0].value.columns)
