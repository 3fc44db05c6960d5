"""nn_mnist, the ABS paper's nearest-neighbour baseline: its logits, its memory, its training
through the zoo's trainer (also mirrored over two devices) and its export."""

from __future__ import annotations

import json

import numpy as np
import pytest

import zoo
from zoo.data.digits import digits_arrays


def _brute_force(x, memory, labels, classes=10):
    d = np.sqrt(((x.reshape(len(x), 1, -1) - memory.reshape(1, len(memory), -1)) ** 2).sum(-1))
    return np.stack(
        [d[:, labels == c].min(axis=1) if (labels == c).any() else np.full(len(x), np.inf)
         for c in range(classes)], axis=1)  # fmt: skip


def test_logits_are_minus_the_distance_to_the_nearest_image_of_each_class():
    x, y = digits_arrays("train", 300)
    xt, _ = digits_arrays("test", 7)
    model = zoo.load("nn_mnist", memory_size=300, chunk_size=128)  # chunks cross the data
    model.memorize(x, y)
    stored = np.round(x * 255) / 255  # uint8 memory
    np.testing.assert_allclose(model(xt).numpy(), -_brute_force(xt, stored, y), atol=2e-4)
    # A stored image is at distance exactly 0 from itself and classified as its label.
    assert (model(stored[:50]).numpy().max(axis=1) == 0.0).all()
    assert (np.argmax(model(stored[:50]).numpy(), -1) == y[:50]).all()


def test_memory_is_a_ring_buffer_and_unwritten_rows_are_ignored():
    x, y = digits_arrays("train", 50)
    model = zoo.load("nn_mnist", memory_size=30)
    model.memorize(x[:20], y[:20])
    # Ten rows are still zeros (black images of "class 0"): they must not count.
    black = np.zeros((1, 28, 28, 1), np.float32)
    expected = -_brute_force(black, np.round(x[:20] * 255) / 255, y[:20])
    np.testing.assert_allclose(model(black).numpy(), expected, atol=2e-4)
    model.memorize(x[20:50], y[20:50])  # 50 into 30 rows: the first 20 are overwritten
    assert int(model.stored.numpy()) == 50
    kept = np.round(x[20:50] * 255) / 255
    np.testing.assert_allclose(
        model(x[:3]).numpy(), -_brute_force(x[:3], kept, y[20:50]), atol=2e-4
    )


def test_an_empty_memory_fails_with_what_to_do():
    model = zoo.load("nn_mnist", memory_size=10)
    with pytest.raises(Exception, match="stored no training images: train it"):
        model(np.zeros((1, 28, 28, 1), np.float32))


def test_training_stores_the_set_and_the_export_serves_it(tmp_path):
    import tensorflow as tf

    from zoo.training import TrainConfig, train

    result = train(TrainConfig(
        model="nn_mnist", dataset="digits", train_examples=2000, batch_size=250,
        overrides={"memory_size": 2000}, output=str(tmp_path / "run"),
        export_dir=str(tmp_path / "export"), verbose=0,
    ))  # fmt: skip
    assert result.metrics["stored"] == 2000
    assert result.metrics["val_accuracy"] > 0.75
    model = zoo.load("nn_mnist", weights=tmp_path / "run", memory_size=2000)
    x, _ = digits_arrays("train", 2000)
    # Every training image is in memory (order shuffled): each is at its uint8 rounding error
    # (at most 1/510 per pixel, about 0.03 in L2) from itself, far below any other image.
    nearest = model(x[::97]).numpy().max(axis=1)
    assert np.all(nearest > -0.04), nearest
    served = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
    xt, _ = digits_arrays("test", 4)
    np.testing.assert_allclose(served(images=xt)["logits"].numpy(), model(xt).numpy(), atol=1e-5)


@pytest.mark.slow
def test_mirrored_training_over_two_devices_stores_the_same_set(cli, tmp_path):
    runs = {}
    for strategy, devices in (("one_device", []), ("mirrored", ["--cpu-devices", "2"])):
        out = tmp_path / strategy
        proc = cli(["training/train.py", "--model", "nn_mnist", "--dataset", "digits",
                    "--train-examples", "400", "--batch-size", "100", "--set", "memory_size=400",
                    "--strategy", strategy, *devices, "--output", str(out),
                    "--verbose", "0"])  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[strategy] = json.loads(proc.stdout.strip().splitlines()[-1])
        model = zoo.load("nn_mnist", weights=out, memory_size=400)
        runs[strategy]["memory"] = np.sort(model.memory.numpy().astype(np.int64).sum(axis=1))
    assert runs["mirrored"]["stored"] == runs["one_device"]["stored"] == 400
    np.testing.assert_array_equal(runs["mirrored"]["memory"], runs["one_device"]["memory"])
