"""Property-based tests (Hypothesis) of every parser a user's text reaches: forget targets, index lists,
sidecars, numeric options, operator limits and the hosted-mode path filter.

Two properties each: arbitrary input never raises anything but SalunError (so the CLI and the app can
always answer with one line), and valid input round-trips to what it says.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.checkpoint import check_meta, read_meta
from core.cli.checks import check_options
from core.data import ForgetTarget, parse_forget, read_index_list
from core.errors import SalunError, check_fraction, check_number, check_positive, check_seed, strip_paths
from core.limits import load_limits

settings.register_profile("salun", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile("salun")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20)
anything = st.one_of(st.text(), st.binary(), st.integers(), st.floats(), st.none(), st.booleans(),
                     st.lists(st.integers(), max_size=3))


def refused_or(value, call):
    """call(value), or None when it raises SalunError; any other exception fails the test."""
    try:
        return call(value)
    except SalunError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))  # one line
        return None


# --- forget targets ----------------------------------------------------------------------------------

@given(st.one_of(st.text(), st.text(alphabet="classrndomidce:0123456789.-+²٣_ e", max_size=20), anything))
def test_any_forget_target_is_parsed_or_refused_in_one_line(spec):
    target = refused_or(spec, parse_forget)
    assert target is None or target.kind in ("class", "random", "indices")


@given(st.integers(0, 10**9), st.sampled_from(["class", "CLASS", " class"]))
def test_a_class_target_round_trips(k, kind):
    target = parse_forget(f"{kind}:{k}")
    assert target == ForgetTarget("class", k) and parse_forget(str(target)) == target


@given(st.floats(min_value=0, max_value=1, exclude_min=True))
def test_a_random_share_round_trips(share):
    target = parse_forget(f"random:{share!r}")
    assert target.value == share and parse_forget(str(target)) == target


@given(st.floats() | st.text(max_size=12))
def test_a_random_share_outside_0_1_is_refused(value):
    share = refused_or(f"random:{value}", parse_forget)
    if share is not None:
        assert 0 < share.value <= 1 and math.isfinite(share.value)


# --- index lists -------------------------------------------------------------------------------------

@given(st.one_of(st.text(), st.binary(), st.text(alphabet="0123456789 ,\n\t-+²٣x", max_size=40)),
       st.integers(1, 5000))
def test_any_index_text_or_file_content_is_parsed_or_refused(text, n_train):
    indices = refused_or(text, lambda t: read_index_list(t, n_train))
    if indices is not None:
        assert indices.dtype == np.int64 and indices.size >= 1
        assert indices.min() >= 0 and indices.max() < n_train and np.all(np.diff(indices) > 0)


@given(st.lists(st.integers(0, 1436), min_size=1, max_size=60), st.sampled_from([" ", ",", "\n", ", ", "\t"]))
def test_a_valid_index_list_round_trips(indices, separator):
    parsed = read_index_list(separator.join(map(str, indices)), 1437)
    assert parsed.tolist() == sorted(set(indices))
    assert read_index_list(separator.join(map(str, indices)).encode(), 1437).tolist() == parsed.tolist()


# --- sidecars ----------------------------------------------------------------------------------------

SIDECAR_KEYS = ["architecture", "image_shape", "class_names", "training", "dataset", "unet", "evaluation"]


@given(json_values)
def test_any_json_value_as_a_sidecar_is_checked_or_refused(value):
    meta = refused_or(value, lambda v: check_meta(v, "sidecar"))
    assert meta is None or isinstance(meta, dict)


@given(st.dictionaries(st.sampled_from(SIDECAR_KEYS), json_values, max_size=5))
def test_sidecar_fields_of_any_type_are_checked_before_use(meta):
    checked = refused_or(meta, lambda m: check_meta(m, "sidecar"))
    if checked is not None and "image_shape" in checked:  # what load_checkpoint then unpacks and builds
        channels, height, width = checked["image_shape"]
        assert 1 <= channels <= 4 and 1 <= height == width <= 256
    if checked is not None and "class_names" in checked:
        assert 2 <= len(checked["class_names"]) <= 1000


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_sidecar_file_is_read_or_refused(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("sidecar")
    (folder / "m.safetensors").write_bytes(b"weights")
    (folder / "m.json").write_bytes(content)
    refused_or(folder / "m.safetensors", read_meta)


@given(st.integers(1, 4), st.sampled_from([8, 16, 28, 32]), st.lists(st.text(max_size=12), min_size=2, max_size=20),
       st.integers(1, 100), st.floats(1e-6, 1.0))
def test_a_valid_sidecar_round_trips(tmp_path_factory, channels, side, names, epochs, lr):
    meta = {"architecture": "small_cnn", "image_shape": [channels, side, side], "class_names": names,
            "training": {"epochs": epochs, "lr": lr, "batch_size": 64}, "dataset": "digits"}
    folder = tmp_path_factory.mktemp("valid")
    (folder / "m.safetensors").write_bytes(b"weights")
    (folder / "m.json").write_text(json.dumps(meta))
    assert read_meta(folder / "m.safetensors") == meta


# --- numeric options ---------------------------------------------------------------------------------

@given(anything | st.sampled_from(["inf", "-inf", "nan", "1e400", "1_000", "0x10", " 3 ", "٣", ""]))
def test_any_value_for_a_number_is_checked_or_refused(value):
    for check in (lambda v: check_positive("x", v), lambda v: check_positive("x", v, integer=True),
                  lambda v: check_fraction("x", v), check_seed, lambda v: check_number("x", v, -5, 5)):
        number = refused_or(value, check)
        assert number is None or math.isfinite(number)


@given(st.integers(0, 2**32 - 1))
def test_a_valid_seed_round_trips(seed):
    assert check_seed(seed) == seed == check_seed(str(seed))


@given(st.floats(min_value=1e-300, max_value=1e300))
def test_a_positive_finite_number_round_trips(value):
    assert check_positive("lr", value) == value == check_positive("lr", repr(value))


@given(st.fixed_dictionaries({}, optional={
    "seed": st.integers() | st.none(), "sparsity": st.floats() | st.none(), "epochs": st.integers() | st.none(),
    "lr": st.floats() | st.none(), "alpha": st.floats() | st.none(), "steps": st.integers(),
    "guidance": st.floats() | st.lists(st.floats(), max_size=3), "sample_steps": st.integers(),
    "per_class": st.integers(), "threads": st.integers(), "batch_size": st.integers(),
    "sample_seeds": st.lists(st.integers(), max_size=3), "forget": st.text(max_size=20),
    "checkpoint": st.text(max_size=20) | st.none(),
}), st.sampled_from(["unlearn", "mask", "unlearn-gen", "eval-gen", "train", "unlearn-concept"]))
def test_any_option_values_are_checked_or_refused_before_work(options, command):
    args = argparse.Namespace(command=command, **options)
    refused_or(args, check_options)
    if any(isinstance(options.get(k), float) and not math.isfinite(options[k]) for k in ("lr", "alpha", "sparsity")):
        with pytest.raises(SalunError):  # a NaN or infinite setting never gets through
            check_options(args)


# --- operator limits and the hosted-mode path filter ------------------------------------------------

@given(st.dictionaries(st.sampled_from(["SALUN_MAX_EPOCHS", "SALUN_MAX_STEPS", "SALUN_HOSTED", "SALUN_MAX_QUEUE"]),
                       st.text(max_size=12), max_size=3))
def test_any_limits_in_the_environment_are_read_or_refused(environ):
    limits = refused_or(environ, load_limits)
    if limits is not None:
        assert all(getattr(limits, f) >= 1 for f in ("max_epochs", "max_steps", "max_queue"))


segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=2, max_size=10).filter(
    lambda s: s.strip(".") != "")


@given(st.lists(segment, min_size=2, max_size=5), st.text(alphabet=st.characters(blacklist_characters="/\\~"),
                                                          max_size=20), st.sampled_from(["'", '"', " ", "("]))
def test_hosted_messages_never_show_a_server_folder(parts, text, quote):
    path = "/" + "/".join(parts)
    close = {"(": ")"}.get(quote, quote)
    message = strip_paths(f"{text} {quote}{path}{close} {text}")
    folder = "/" + "/".join(parts[:-1]) + "/"
    assert folder not in message
    assume(parts[-1] not in text)
    assert parts[-1] in message  # the file's own name still says which input was meant
