"""Presets (zoo.presets): a directory that rebuilds its model; overrides; head-aware loading;
train → preset → load → export without passing a config by hand."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import presets
from zoo.weights import sha256_of

# Not the default architecture: a preset that ignored its config.json could not load these.
FILTERS = (6, 8, 12, 10)


def _randomize(model, seed=0):
    """Distinct values in every weight (BatchNorm variances positive): a wrong pairing or a
    weight left at its initialisation cannot pass."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "variance" in w.path:
            value = rng.uniform(0.5, 1.5, w.shape)
        else:
            value = rng.normal(0.0, 0.3, w.shape)
        w.assign(value.astype(w.dtype))
    return model


def _weights(model) -> list[np.ndarray]:
    return [w.numpy() for w in model.weights]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((4, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A cnn_mnist of a non-default architecture with random weights, saved as a preset."""
    model = _randomize(zoo.load("cnn_mnist", filters=FILTERS, learning_rate=3e-4))
    path = zoo.save_preset(model, tmp_path_factory.mktemp("preset") / "cnn")
    return model, path


def test_preset_round_trip_rebuilds_the_model_bit_for_bit(saved, images):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "metadata.json", "weights.weights.h5"]  # fmt: skip
    record = json.loads((path / "config.json").read_text())
    assert record["model"] == "cnn_mnist" and record["config"]["filters"] == list(FILTERS)
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["sha256"] == sha256_of(path / "weights.weights.h5")
    assert meta["paper"] == zoo.get_spec("cnn_mnist").paper and "license" in meta
    for loaded in (zoo.load(path), zoo.load(str(path)), zoo.load("cnn_mnist", weights=path)):
        assert loaded.zoo_config == model.zoo_config
        assert len(loaded.weights) == len(model.weights)
        for a, b in zip(_weights(loaded), _weights(model), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(loaded(images).numpy(), model(images).numpy())


def test_overriding_an_architecture_key_is_refused_naming_it(saved):
    _, path = saved
    with pytest.raises(zoo.InvalidConfigError) as info:
        zoo.load(path, filters=(6, 8, 16, 10))
    message = str(info.value)
    assert "filters=(6, 8, 16, 10) changes the architecture of the preset" in message
    assert "filters=[6, 8, 12, 10]" in message and "conv3/kernel" in message


def test_overriding_a_non_architecture_key_is_accepted(saved, images):
    model, path = saved
    loaded = zoo.load(path, learning_rate=0.125, optimizer="sgd", eta=0.5)
    assert loaded.zoo_config["learning_rate"] == 0.125 and loaded.learning_rate == 0.125
    assert loaded.optimizer_name == "sgd" and loaded.eta == 0.5
    assert loaded.zoo_config["filters"] == list(FILTERS)  # the rest is the preset's
    np.testing.assert_array_equal(loaded(images).numpy(), model(images).numpy())


def test_another_class_count_keeps_every_non_head_weight_and_names_the_head(saved):
    model, path = saved
    with pytest.warns(UserWarning, match=r"cnn_mnist: the head \(conv4\) keeps its fresh") as rec:
        loaded = zoo.load(path, filters=(6, 8, 12, 7))
    assert "conv4/kernel (5, 5, 12, 7) in the model, (5, 5, 12, 10) in the file" in str(rec[0].message)  # fmt: skip
    head = {id(w) for w in loaded.head_layers()[0].weights}
    assert len(head) == 2
    kept = 0
    for new, old in zip(loaded.weights, model.weights, strict=True):
        if id(new) in head:
            assert new.shape != old.shape
        else:
            np.testing.assert_array_equal(new.numpy(), old.numpy(), err_msg=new.path)
            kept += 1
    assert kept == len(model.weights) - 2


def test_load_into_reports_the_head_and_refuses_any_other_mismatch(saved):
    _, path = saved
    other_head = zoo.build("cnn_mnist", filters=(6, 8, 12, 3))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        report = presets.load_into(other_head, path / "weights.weights.h5")
    assert report.head == ["conv4/kernel", "conv4/bias"] and report.head_layers == ["conv4"]
    assert len(report.copied) == len(other_head.weights) - 2 and not report.missing
    wider = zoo.build("cnn_mnist", filters=(6, 9, 12, 10))
    with pytest.raises(zoo.WeightsError, match=r"does not fit cnn_mnist as configured: conv2/kernel \(4, 4, 6, 9\) in the model, \(4, 4, 6, 8\) in the file"):  # fmt: skip
        presets.load_into(wider, path / "weights.weights.h5", partial=True)


def test_a_preset_whose_weights_were_replaced_fails_its_sha256(saved, tmp_path):
    model, path = saved
    import shutil

    copy = shutil.copytree(path, tmp_path / "copy")
    other = _randomize(zoo.load("cnn_mnist", filters=FILTERS), seed=5)
    other.save_weights(copy / "weights.weights.h5")
    with pytest.raises(zoo.WeightsError, match=re.escape(f"sha256 mismatch for weights file {copy / 'weights.weights.h5'}")):  # fmt: skip
        zoo.load(copy)


def test_a_directory_that_is_not_a_preset_says_what_it_lacks(tmp_path):
    with pytest.raises(zoo.WeightsError, match="is not a preset: it has no config.json"):
        zoo.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model": "cnn_mnist", "config": {}}))
    with pytest.raises(zoo.WeightsError, match="has no weights.weights.h5"):
        zoo.load(tmp_path)
    with pytest.raises(zoo.WeightsError, match="does not exist"):
        zoo.load(tmp_path / "nowhere")


def test_init_from_pairs_by_structure_and_refuses_a_non_head_mismatch(saved):
    from zoo.training import UsageError, _initialize_from, _read_init_from

    _, path = saved
    init = _read_init_from(str(path), "cnn_mnist")
    assert init["model"] == "cnn_mnist" and init["config"]["filters"] == list(FILTERS)
    wider = zoo.build("cnn_mnist", filters=(6, 9, 12, 10))
    with pytest.raises(UsageError, match=r"--init-from .*conv2/kernel \(4, 4, 6, 9\) in the model"):
        _initialize_from(wider, init)


def test_train_then_load_and_export_the_run_without_passing_its_config(tmp_path, images):
    from zoo.export import main as export_main
    from zoo.training import TrainConfig, train

    run = tmp_path / "run"
    result = train(TrainConfig(model="cnn_mnist", dataset="digits", epochs=1, steps_per_epoch=2,
                               batch_size=16, train_examples=64, validation_steps=1,
                               output=str(run), overrides={"filters": FILTERS}, verbose=0))  # fmt: skip
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["sha256"] == sha256_of(run / "weights.weights.h5")
    assert meta["source"]["kind"] == "zoo-train" and meta["metrics"] == result.metrics
    loaded = zoo.load(run)  # no name, no config: the preset's
    assert loaded.zoo_config["filters"] == list(FILTERS)
    expected = result.model(images, training=False).numpy()
    np.testing.assert_array_equal(loaded(images).numpy(), expected)
    assert export_main(["--weights", str(run), "--base-dir", str(tmp_path / "export")]) == 0
    exported = tf.saved_model.load(str(tmp_path / "export" / "cnn_mnist" / "1"))
    served = exported.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(served["logits"].numpy(), expected, rtol=1e-5, atol=1e-6)
    info = json.loads((tmp_path / "export/cnn_mnist/1/assets.extra/model.json").read_text())
    assert info["config"]["filters"] == list(FILTERS) and info["preset"]["sha256"] == meta["sha256"]


def test_init_from_moves_weights_between_a_plain_and_an_objective_wrapped_classifier(saved):
    """A training objective holds the classifier as ``model.classifier``: its weights pair with
    a plain run's (and back) through the shared part of the structure."""
    from zoo.registry import list_objectives

    assert "noise" in list_objectives()  # the noise-training objective wraps the classifier
    plain, path = saved
    wrapped = zoo.build("cnn_mnist", filters=FILTERS, noise="gnt")
    report = presets.load_into(wrapped, path / "weights.weights.h5", partial=True)
    assert len(report.copied) == len(plain.weights)
    for a, b in zip(wrapped.classifier.weights, plain.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(zoo.WeightsError, match="does not fit"):  # strict loading pairs as is
        presets.load_into(zoo.build("cnn_mnist", filters=FILTERS, noise="gnt"), path / "weights.weights.h5")  # fmt: skip
