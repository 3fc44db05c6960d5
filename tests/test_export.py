"""Versioned SavedModel export: layout, atomic write, signatures, parity with the Keras model."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.export import ExportError, export_model, main


@pytest.fixture(scope="module")
def model():
    m = zoo.load("cnn_mnist")
    # Non-trivial BatchNorm statistics, so inference mode is really exercised.
    for layer in m._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.linspace(-0.5, 0.5, layer.moving_mean.shape[0]))
            layer.moving_variance.assign(np.linspace(0.5, 2.0, layer.moving_variance.shape[0]))
    return m


def _images(n=8, seed=0):
    return np.random.default_rng(seed).random((n, 28, 28, 1), dtype=np.float32)


def test_reloaded_serving_default_matches_keras_to_1e_5(model, tmp_path):
    path = export_model(model, tmp_path)
    assert path == tmp_path / "cnn_mnist" / "1"
    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    x = _images()
    out = serve(images=tf.constant(x))
    assert set(out) == {"logits", "probabilities", "classes"}
    logits = model(x, training=False).numpy()
    np.testing.assert_allclose(out["logits"].numpy(), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        out["probabilities"].numpy(), tf.nn.softmax(logits).numpy(), rtol=1e-5, atol=1e-6
    )
    assert out["classes"].dtype == tf.int64
    np.testing.assert_array_equal(out["classes"].numpy(), logits.argmax(-1))


def test_signature_declares_named_float_input_and_dynamic_batch(model, tmp_path):
    path = export_model(model, tmp_path)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    (_, kwargs) = serve.structured_input_signature
    assert list(kwargs) == ["images"]
    assert kwargs["images"].dtype == tf.float32
    assert kwargs["images"].shape.as_list() == [None, 28, 28, 1]
    for n in (1, 3):  # any batch size
        assert serve(images=tf.constant(_images(n)))["logits"].shape == (n, 10)


def test_export_loads_as_keras_tfsmlayer(model, tmp_path):
    path = export_model(model, tmp_path)
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    out = layer(_images(2))
    np.testing.assert_allclose(out["logits"], model(_images(2), training=False), atol=1e-5)


def test_versions_increase_and_existing_version_is_never_overwritten(model, tmp_path):
    assert export_model(model, tmp_path).name == "1"
    assert export_model(model, tmp_path).name == "2"
    assert export_model(model, tmp_path, version=7).name == "7"
    assert export_model(model, tmp_path).name == "8"
    before = (tmp_path / "cnn_mnist" / "7" / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(ExportError, match="already exists"):
        export_model(model, tmp_path, version=7)
    assert (tmp_path / "cnn_mnist" / "7" / "saved_model.pb").stat().st_mtime_ns == before
    # Only integer version directories remain: no temporary directory is left behind.
    assert sorted(p.name for p in (tmp_path / "cnn_mnist").iterdir()) == ["1", "2", "7", "8"]


def test_failed_export_leaves_no_version_and_no_temp_dir(model, tmp_path, monkeypatch):
    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", broken_save)  # what ExportArchive.write_out calls
    with pytest.raises(OSError, match="disk full"):
        export_model(model, tmp_path)
    assert list((tmp_path / "cnn_mnist").iterdir()) == []


def test_model_json_describes_the_export(model, tmp_path):
    path = export_model(model, tmp_path, metadata={"metrics": {"val_accuracy": 0.5}})
    info = json.loads((path / "assets.extra" / "model.json").read_text())
    assert info["name"] == "cnn_mnist" and info["family"] == "cnn"
    assert info["config"]["filters"] == [20, 70, 256, 10]
    assert info["metrics"] == {"val_accuracy": 0.5}
    assert info["signatures"]["serving_default"] == [
        {"name": "images", "dtype": "float32", "shape": [None, 28, 28, 1]}
    ]


def test_unsafe_served_name_is_refused(model, tmp_path):
    with pytest.raises(ExportError, match="safe directory name"):
        export_model(model, tmp_path, name="../evil")


def test_cli_exports_a_training_run_with_its_metrics(trained_run, tmp_path, capsys):
    assert main(["--model", "cnn_mnist", "--weights", str(trained_run.output),
                 "--base-dir", str(tmp_path)]) == 0  # fmt: skip
    path = tmp_path / "cnn_mnist" / "1"
    assert f"Exported cnn_mnist to {path}" in capsys.readouterr().out
    info = json.loads((path / "assets.extra" / "model.json").read_text())
    assert info["metrics"]["val_accuracy"] == pytest.approx(trained_run.metrics["val_accuracy"])
    x = _images(4)
    out = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(
        out["logits"].numpy(), trained_run.model(x, training=False).numpy(), atol=1e-5
    )


def test_cli_unknown_model_exits_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--model", "cnn_mnsit", "--base-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "cnn_mnist" in capsys.readouterr().err


def test_cli_corrupt_weights_exit_1_naming_the_file(capsys, tmp_path):
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert main(["--model", "cnn_mnist", "--weights", str(bad), "--base-dir", str(tmp_path)]) == 1
    assert str(bad) in capsys.readouterr().err
