"""The model registry, the cnn/linear families, calibrated_softmax and .keras round trips."""

from __future__ import annotations

import dataclasses
import inspect
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import registry
from zoo.models.base import calibrated_softmax

PAPER_ABS = "002_7240b1e8d13f6586.txt"


def _images(n=4, seed=0, shape=(28, 28, 1)):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _conv_params(filters, kernel_sizes, in_channels=1):
    """Conv kernels + biases, plus 4 BatchNorm variables per channel after every conv but the last."""
    total, channels = 0, in_channels
    for i, (f, k) in enumerate(zip(filters, kernel_sizes, strict=True)):
        total += k * k * channels * f + f
        if i < len(filters) - 1:
            total += 4 * f  # gamma, beta, moving mean, moving variance
        channels = f
    return total


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that test registrations cannot leak out of."""
    zoo.list_models()  # import the families first
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry._REGISTRY


# -- list_models ----------------------------------------------------------------------------


def test_list_models_is_sorted_and_the_union_of_its_families():
    names = zoo.list_models()
    assert names == sorted(names)
    assert {"cnn_mnist", "binary_cnn_mnist", "linear_mnist"} <= set(names)
    families = {zoo.get_spec(n).family for n in names}
    assert sorted(n for f in families for n in zoo.list_models(family=f)) == names


def test_list_models_glob_is_case_insensitive():
    cnns = ["binary_cnn_mnist", "cnn_mnist", "gen_cnn", "madry_cnn_mnist", "racecar_mnist_cnn"]
    assert zoo.list_models("*CNN*") == cnns
    assert zoo.list_models("*cnn*") == cnns
    assert zoo.list_models("CNN_*") == ["cnn_mnist"]  # a glob, not a substring search
    assert zoo.list_models("?inear_MNIST") == ["linear_mnist"]
    assert zoo.list_models("no_such_*") == []


def test_list_models_filters_by_family_and_pattern_together():
    assert zoo.list_models(family="cnn") == ["binary_cnn_mnist", "cnn_mnist"]
    assert zoo.list_models(family="linear") == ["linear_mnist"]
    assert zoo.list_models("*mnist", family="linear") == ["linear_mnist"]
    assert zoo.list_models("binary*", family="linear") == []
    assert zoo.list_models(family="no_such_family") == []


# -- lookup and overrides -------------------------------------------------------------------


def test_load_is_case_insensitive():
    model = zoo.load("CNN_MNIST")
    assert model.zoo_name == "cnn_mnist"
    assert zoo.get_spec("Cnn_Mnist") is zoo.get_spec("cnn_mnist")
    assert model.count_params() == 249_920


def test_unknown_name_lists_close_matches():
    with pytest.raises(zoo.UnknownModelError) as info:
        zoo.load("cnn_mnsit")
    message = str(info.value)
    assert message.startswith("Unknown model 'cnn_mnsit'.")  # not KeyError's quoted repr
    assert "Did you mean: cnn_mnist" in message
    assert isinstance(info.value, KeyError)


def test_unknown_name_without_close_match_gives_no_suggestion():
    with pytest.raises(zoo.UnknownModelError) as info:
        zoo.get_spec("qqqqqqqqqq")
    assert "Did you mean" not in str(info.value)
    assert f"lists all {len(zoo.list_models())} registered models" in str(info.value)


def test_non_string_name_is_a_type_error():
    with pytest.raises(TypeError, match="model name must be a string, got int"):
        zoo.get_spec(3)


def test_override_of_unknown_key_lists_valid_keys():
    valid = ", ".join(sorted(zoo.get_spec("cnn_mnist").default_config))
    assert "filters" in valid and "learning_rate" in valid
    with pytest.raises(zoo.InvalidConfigError) as info:
        zoo.load("cnn_mnist", filter=[8, 16, 32, 10])
    assert str(info.value) == f"cnn_mnist has no config key(s) 'filter'. Valid keys: {valid}"


def test_filters_override_changes_parameter_count():
    filters = [8, 16, 32, 10]
    # by hand: conv 5*5*1*8+8=208, bn 32, conv 4*4*8*16+16=2064, bn 64,
    # conv 3*3*16*32+32=4640, bn 128, conv 5*5*32*10+10=8010
    assert _conv_params(filters, [5, 4, 3, 5]) == 15_146
    model = zoo.load("cnn_mnist", filters=filters)
    assert model.count_params() == 15_146
    assert model.zoo_config["filters"] == filters
    assert zoo.get_spec("cnn_mnist").default_config["filters"] == (20, 70, 256, 10)


def test_last_filter_count_sets_number_of_classes():
    model = zoo.load("cnn_mnist", filters=[4, 4, 4, 7])
    assert model.num_classes == 7
    assert model(_images(3)).shape == (3, 7)


def test_inconsistent_layer_config_is_refused():
    with pytest.raises(zoo.InvalidConfigError, match="one entry per layer; got 3, 4 and 4"):
        zoo.load("cnn_mnist", filters=[8, 16, 10])
    with pytest.raises(zoo.InvalidConfigError, match=re.escape("give 2×2")):
        zoo.load("cnn_mnist", kernel_sizes=[5, 4, 3, 4])


# -- specs ----------------------------------------------------------------------------------


def test_spec_metadata_of_cnn_mnist():
    spec = zoo.get_spec("cnn_mnist")
    assert spec.name == "cnn_mnist"
    assert spec.family == "cnn"
    assert spec.dataset == "mnist"
    assert spec.paper == PAPER_ABS
    assert spec.description.startswith("Vanilla CNN baseline of the ABS paper")
    assert dict(spec.training) == {
        "epochs": 5,
        "batch_size": 128,
        "eval_split": "test",
        "train_split": "train",
        "class_balanced": False,
    }
    paper_config = {
        "filters": (20, 70, 256, 10),
        "kernel_sizes": (5, 4, 3, 5),
        "strides": (1, 2, 2, 1),
        "image_shape": (28, 28, 1),
        "binarize": False,
        "sync_batchnorm": False,
        "batchnorm_momentum": 0.9,
        "batchnorm_epsilon": 1e-5,
        "learning_rate": 1e-3,
        "alpha": 1.0,
        "eta": 0.0,
    }
    assert {k: spec.default_config[k] for k in paper_config} == paper_config
    # the builder's signature is the config, exactly
    assert list(spec.default_config) == list(inspect.signature(spec.builder).parameters)
    assert zoo.get_spec("binary_cnn_mnist").default_config["binarize"] is True


def test_linear_spec_gets_default_training_settings_it_does_not_override():
    spec = zoo.get_spec("linear_mnist")
    assert (spec.family, spec.dataset, spec.paper) == ("linear", "mnist", None)
    assert dict(spec.training) == {
        **registry.DEFAULT_TRAINING,
        "epochs": 15,
        "batch_size": 128,
    }
    assert spec.default_config["learning_rate"] == 3e-3


def test_default_config_and_training_are_read_only():
    spec = zoo.get_spec("cnn_mnist")
    with pytest.raises(TypeError):
        spec.default_config["filters"] = (1, 2, 3, 10)
    with pytest.raises(TypeError):
        spec.training["epochs"] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.family = "other"
    config = spec.config(alpha=2.0)
    config["filters"] = None  # a copy: the spec is unaffected
    assert spec.default_config["filters"] == (20, 70, 256, 10)
    assert spec.default_config["alpha"] == 1.0


# -- register_model -------------------------------------------------------------------------


def test_register_model_refuses_builder_without_defaults(scratch_registry):
    def needs_width(width, depth=2):
        return None

    with pytest.raises(TypeError, match=r"no default for \['width'\]"):
        zoo.register_model("needs_width", family="test")(needs_width)
    assert "needs_width" not in scratch_registry


def test_register_model_records_defaults_and_lowercases_key(scratch_registry):
    @zoo.register_model("My_Model", family="test", training={"epochs": 2})
    def my_model(width=3, *, depth=4):
        """One line.

        More text."""
        return None

    spec = zoo.get_spec("my_model")
    assert spec.name == "My_Model"
    assert dict(spec.default_config) == {"width": 3, "depth": 4}
    assert spec.description == "One line."
    assert spec.training["epochs"] == 2 and spec.training["batch_size"] == 128
    assert zoo.list_models("my_*", family="test") == ["My_Model"]


def test_registering_another_builder_under_existing_name_raises(scratch_registry):
    original = scratch_registry["cnn_mnist"]

    def other_builder(width=1):
        return None

    with pytest.raises(ValueError, match="'CNN_MNIST' is already registered"):
        zoo.register_model("CNN_MNIST", family="other")(other_builder)
    assert scratch_registry["cnn_mnist"] is original


def test_registering_same_named_builder_from_another_module_raises(scratch_registry):
    # A second family file defining its own ``def cnn_mnist`` must not silently replace the first.
    def cnn_mnist(width=1):
        return None

    cnn_mnist.__qualname__ = "cnn_mnist"
    cnn_mnist.__module__ = "zoo.models.some_other_family"
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model("cnn_mnist", family="other")(cnn_mnist)
    assert scratch_registry["cnn_mnist"].family == "cnn"


# -- the ABS paper CNN ----------------------------------------------------------------------


def test_cnn_mnist_has_249920_parameters_including_batchnorm_statistics():
    model = zoo.load("cnn_mnist")
    assert _conv_params([20, 70, 256, 10], [5, 4, 3, 5]) == 249_920
    assert model.count_params() == 249_920
    assert sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == 2 * (20 + 70 + 256)


def test_cnn_mnist_layer_output_shapes_follow_the_paper():
    model = zoo.load("cnn_mnist")
    x = tf.constant(_images(2))
    shapes, h = {}, x
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            h = layer(h, training=False)
        else:
            h = layer(h)
        shapes[layer.name] = tuple(h.shape[1:])
    assert [shapes[f"conv{i}"] for i in (1, 2, 3, 4)] == [
        (24, 24, 20),
        (11, 11, 70),
        (5, 5, 256),
        (1, 1, 10),
    ]
    # the layers, applied in the listed order, are the whole model
    np.testing.assert_allclose(h.numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)


def test_binary_cnn_equals_cnn_on_prebinarized_input():
    binary = zoo.load("binary_cnn_mnist")
    plain = zoo.load("cnn_mnist")
    plain.set_weights(binary.get_weights())
    x = _images(4, seed=1)
    x[0, 0, 0, 0] = 0.5  # the threshold itself counts as ink
    x_bin = (x >= 0.5).astype(np.float32)
    np.testing.assert_allclose(binary(x).numpy(), plain(x_bin).numpy(), rtol=1e-5, atol=1e-5)
    # and binarization does happen: on the raw input the two differ
    assert np.abs(binary(x).numpy() - plain(x).numpy()).max() > 1e-3


def test_binary_cnn_input_gradient_is_straight_through():
    binary = zoo.load("binary_cnn_mnist")
    plain = zoo.load("cnn_mnist")
    plain.set_weights(binary.get_weights())
    x = tf.constant(_images(2, seed=2))
    x_bin = tf.cast(x >= 0.5, tf.float32)
    w = tf.constant(np.random.default_rng(3).normal(size=(1, 10)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        tape.watch(x_bin)
        loss_binary = tf.reduce_sum(binary(x) * w)
        loss_plain = tf.reduce_sum(plain(x_bin) * w)
    g_binary = tape.gradient(loss_binary, x).numpy()
    g_plain = tape.gradient(loss_plain, x_bin).numpy()
    assert np.count_nonzero(g_binary) > 0.5 * g_binary.size
    # identity backward pass: the gradient w.r.t. x is the plain CNN's at the binarized input
    np.testing.assert_allclose(g_binary, g_plain, rtol=1e-4, atol=1e-6)


# -- calibrated_softmax ---------------------------------------------------------------------


def test_calibrated_softmax_without_eta_is_scaled_softmax():
    logits = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32) * 3
    got = calibrated_softmax(logits, alpha=2.5, eta=0.0).numpy()
    np.testing.assert_allclose(got, tf.nn.softmax(2.5 * logits).numpy(), rtol=1e-6, atol=1e-7)


def test_calibrated_softmax_falls_back_to_uniform_for_hopeless_logits():
    logits = tf.constant(-1000.0 + 10.0 * np.arange(10), tf.float32)[None]
    got = calibrated_softmax(logits, alpha=1.0, eta=1.0).numpy()
    np.testing.assert_allclose(got, np.full((1, 10), 0.1), atol=1e-6)
    # whereas the plain softmax puts (almost) all mass on the largest logit
    assert calibrated_softmax(logits).numpy()[0, -1] == pytest.approx(
        1 / (1 + np.exp(-10)), rel=1e-5
    )


@pytest.mark.parametrize("alpha, eta", [(1.0, 0.7), (1.3, 0.05), (0.5, 143_900.0)])
def test_calibrated_softmax_matches_direct_formula_in_float64(alpha, eta):
    logits = np.random.default_rng(1).normal(size=(6, 10)) * 4
    numerator = np.exp(alpha * logits) + eta
    expected = numerator / numerator.sum(axis=-1, keepdims=True)
    got = calibrated_softmax(tf.constant(logits, tf.float64), alpha=alpha, eta=eta).numpy()
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def test_calibrated_softmax_does_not_overflow_for_large_logits():
    logits = tf.constant([1000.0 - np.arange(10), 990.0 + np.arange(10)], tf.float32)
    got = calibrated_softmax(logits, alpha=1.0, eta=5.0).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got.sum(axis=-1), [1.0, 1.0], rtol=1e-6)
    # eta is negligible next to exp(1000): the result is the plain softmax
    np.testing.assert_allclose(got, tf.nn.softmax(logits).numpy(), rtol=1e-5, atol=1e-7)
    with np.errstate(over="ignore", invalid="ignore"):  # the naive formula cannot do this
        naive = np.exp(logits.numpy().astype(np.float64)) + 5.0
        assert np.isnan(naive / naive.sum(axis=-1, keepdims=True)).all()


def test_model_probabilities_use_its_calibration():
    model = zoo.load("linear_mnist", alpha=2.0, eta=0.5)
    logits = tf.constant([[0.0, 1.0, 2.0, 0, 0, 0, 0, 0, 0, 0]], tf.float32)
    numerator = np.exp(2.0 * logits.numpy().astype(np.float64)) + 0.5
    np.testing.assert_allclose(
        model.probabilities(logits).numpy(), numerator / numerator.sum(), rtol=1e-6
    )


# -- input checks ---------------------------------------------------------------------------


def test_uint8_images_are_a_type_error_naming_the_expected_input():
    model = zoo.load("cnn_mnist")
    with pytest.raises(TypeError) as info:
        model(tf.zeros((2, 28, 28, 1), tf.uint8))
    message = str(info.value)
    assert "cnn_mnist expects float images in [0, 1] of shape (batch, 28, 28, 1)" in message
    assert "got dtype uint8" in message


@pytest.mark.parametrize("shape", [(2, 32, 32, 1), (32, 32), (2, 28, 28)])
def test_wrong_image_shape_is_a_value_error_naming_the_expected_shape(shape):
    model = zoo.load("linear_mnist")
    with pytest.raises(ValueError) as info:
        model(tf.zeros(shape, tf.float32))
    assert f"linear_mnist expects images of shape (batch, 28, 28, 1); got shape {shape}" in str(
        info.value
    )


# -- .keras round trip ----------------------------------------------------------------------


def test_keras_archive_round_trip_gives_identical_outputs(tmp_path):
    model = zoo.load("cnn_mnist", alpha=2.0, eta=3.0)
    x = _images(3, seed=4)
    # move the BatchNorm statistics away from their initial values, so they must be saved too
    model.compile()
    model.fit(x, np.array([1, 2, 3]), epochs=1, verbose=0)
    path = tmp_path / "cnn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    assert (loaded.alpha, loaded.eta) == (2.0, 3.0)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    np.testing.assert_array_equal(
        loaded.probabilities(loaded(x)).numpy(), model.probabilities(model(x)).numpy()
    )
    assert loaded.count_params() == 249_920


def test_keras_archive_round_trip_keeps_zoo_config(tmp_path):
    model = zoo.load("cnn_mnist", filters=[4, 4, 4, 10])
    model.save(tmp_path / "cnn.keras")
    loaded = keras.saving.load_model(tmp_path / "cnn.keras")
    assert loaded.zoo_name == "cnn_mnist"
    assert loaded.zoo_config == model.zoo_config


def test_readme_model_table_lists_every_registered_model():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    listed = {line.split("`")[1] for line in rows}
    missing = set(zoo.list_models()) - listed
    assert not missing, f"README's model table lacks {sorted(missing)}"
    for name in zoo.list_models():
        spec = zoo.get_spec(name)
        row = next(line for line in rows if line.startswith(f"| `{name}`"))
        assert f"| {spec.family} |" in row and f"| {spec.dataset} |" in row, row


def test_console_scripts_point_at_the_clis():
    """setup.cfg's zoo-train / zoo-export / zoo-serve are the same code as the repo scripts;
    zoo-port is ``python -m zoo.port``."""
    import configparser
    import importlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    scripts = dict(
        line.replace(" ", "").split("=")
        for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    )
    assert set(scripts) == {"zoo-train", "zoo-export", "zoo-serve", "zoo-port"}
    for script, target in scripts.items():
        module, func = target.split(":")
        main = getattr(importlib.import_module(module), func)
        assert callable(main), script
        if script == "zoo-port":  # no repository script: python -m zoo.port
            source = (root / "zoo" / "port.py").read_text()
            assert 'if __name__ == "__main__":\n    sys.exit(main())' in source
            continue
        folder = {"zoo-train": "training", "zoo-export": "export", "zoo-serve": "serving"}[script]
        assert f"from {module} import {func}" in "".join(
            p.read_text() for p in (root / folder).glob("*.py")
        )


def test_shared_config_adds_family_keys_the_builder_does_not_declare():
    from zoo.registry import _builder_defaults, shared_config

    @shared_config({"a": 1, "b": 2})
    def builder(b=20, c=30, **common):
        return {"b": b, "c": c, **common}

    assert _builder_defaults(builder) == {"b": 20, "c": 30, "a": 1}  # its own default wins
    assert builder(a=5, b=6, c=7) == {"a": 5, "b": 6, "c": 7}
    # The racecar family declares its regularizer keys once; every model has them.
    for name in zoo.list_models("racecar*"):
        assert {"regularizer", "phase", "ort_beta"} <= set(zoo.get_spec(name).default_config)
