"""zoo.data.load: TFDS pass-through, offline failures, name/split checks, shuffling and batching."""

from __future__ import annotations

import socket
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import zoo.data
import zoo.data.core
from zoo.data import DatasetError, DatasetNotAvailableError, UnknownDatasetError

N = 24  # examples in the synthetic mnist.npz


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, size=(N, 28, 28), dtype=np.uint8)
    x[:, 0, 0] = np.arange(N)  # pixel (0, 0) identifies the example
    y = rng.integers(0, 10, size=N, dtype=np.uint8)
    return x, y


@pytest.fixture
def npz_dir(tmp_path, arrays):
    """A data_dir with an mnist.npz whose source ignores the seed: only the shuffle uses it."""
    x, y = arrays
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    return tmp_path


def _ids(ds):
    """Example ids (pixel (0, 0)) in the order ``ds`` yields them, batched or not."""
    out = []
    for x, _ in ds:
        pixel = x.numpy()[..., 0, 0, 0] * 255
        out.extend(np.atleast_1d(np.rint(pixel).astype(int)).tolist())
    return out


@pytest.fixture
def mock_tfds():
    """Plain ``tfds.testing.mock_data``: what a TFDS user's own tests would use."""
    with tfds.testing.mock_data(num_examples=10):
        yield


# -- TFDS pass-through ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_tfds_dataset_passes_through_as_float_images(mock_tfds, name, tmp_path):
    ds = zoo.data.load(name, "train", batch_size=4, shuffle=False, data_dir=tmp_path)
    assert ds.element_spec == (
        tf.TensorSpec((None, 28, 28, 1), tf.float32),
        tf.TensorSpec((None,), tf.int64),
    )
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.max() > 0.5  # uint8 scaled by 1/255, not clipped or left at 0..255
    np.testing.assert_allclose(x * 255, np.rint(x * 255), atol=1e-3)  # exactly k/255
    assert y.min() >= 0 and y.max() <= 9
    # unshuffled reads are reproducible
    again = np.concatenate([b.numpy() for b, _ in zoo.data.load(name, "train", batch_size=4)])
    assert sorted(map(bytes, again)) == sorted(map(bytes, x))


def test_tfds_pass_through_respects_num_examples(mock_tfds):
    ds = zoo.data.load("fashion_mnist", "test", batch_size=3, num_examples=7)
    assert [int(tf.shape(y)[0]) for _, y in ds] == [3, 3, 1]
    assert zoo.data.num_examples_of("fashion_mnist", "test", num_examples=7) == 7


def test_mock_data_alone_serves_zoo_mnist_without_files():
    """zoo reads before it asks, so mock_data's patched reader is used (is_prepared() is False
    under mock_data, which a check-first design would have taken for missing data)."""
    with tfds.testing.mock_data(num_examples=3):
        assert not tfds.builder("mnist").is_prepared()
        (x, y), *_ = zoo.data.load("mnist", batch_size=3, shuffle=False)
        assert x.shape == (3, 28, 28, 1) and x.dtype == tf.float32
        assert y.dtype == tf.int64


# -- not available offline ------------------------------------------------------------------


def _assert_offline_error(info, name="mnist"):
    message = str(info.value)
    assert f"Dataset {name!r} is not available offline" in message
    assert "--data-dir" in message
    # digits stands in for MNIST only; other datasets get no misleading suggestion.
    assert ("--dataset digits" in message) == (name == "mnist")
    return message


def test_missing_mnist_offline_fails_fast_naming_data_dir_and_digits(tmp_path):
    start = time.monotonic()
    with pytest.raises(DatasetNotAvailableError) as info:
        zoo.data.load("mnist", data_dir=tmp_path)
    assert time.monotonic() - start < 5
    message = _assert_offline_error(info)
    assert f"no mnist.npz or IDX files (train-images-idx3-ubyte.gz, ...) in {tmp_path}" in message
    assert "$ZOO_OFFLINE is set" in message


def test_missing_tfds_dataset_offline_fails_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(DatasetNotAvailableError) as info:
        zoo.data.load("fashion_mnist", "test", data_dir=tmp_path)
    assert time.monotonic() - start < 5
    assert f"no prepared TFDS data in {tmp_path / 'fashion_mnist'}" in _assert_offline_error(
        info, "fashion_mnist"
    )


def test_download_false_never_probes_the_network(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_OFFLINE")
    probe = mock.Mock(side_effect=AssertionError("network probed"))
    monkeypatch.setattr(zoo.data.core, "network_available", probe)
    with pytest.raises(DatasetNotAvailableError) as info:
        zoo.data.load("mnist", data_dir=tmp_path, download=False)
    assert "network" not in _assert_offline_error(info)
    probe.assert_not_called()


@pytest.fixture
def closed_port():
    """A local TCP port nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_network_without_zoo_offline_fails_fast(tmp_path, monkeypatch, closed_port):
    monkeypatch.delenv("ZOO_OFFLINE")
    monkeypatch.setattr(zoo.data.core, "_PROBE_HOST", ("127.0.0.1", closed_port))
    download = mock.Mock(side_effect=AssertionError("download attempted"))
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download)
    assert zoo.data.network_available() is False
    start = time.monotonic()
    with pytest.raises(DatasetNotAvailableError) as info:
        zoo.data.load("mnist", data_dir=tmp_path)
    assert time.monotonic() - start < 5
    assert "the network is unreachable" in _assert_offline_error(info)
    download.assert_not_called()


def test_network_available_honours_zoo_offline_and_probe(monkeypatch, closed_port):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(zoo.data.core, "_PROBE_HOST", server.getsockname())
        for value in ("1", "true", "yes"):
            monkeypatch.setenv("ZOO_OFFLINE", value)
            assert zoo.data.network_available() is False
        for value in ("", "0", "false", "no"):
            monkeypatch.setenv("ZOO_OFFLINE", value)
            assert zoo.data.network_available() is True  # a listening host answers
        monkeypatch.setattr(zoo.data.core, "_PROBE_HOST", ("127.0.0.1", closed_port))
        assert zoo.data.network_available() is False


# -- names and splits -----------------------------------------------------------------------


def test_unknown_dataset_name_lists_close_matches():
    with pytest.raises(UnknownDatasetError) as info:
        zoo.data.load("mnsit")
    message = str(info.value)
    assert message.startswith("Unknown dataset 'mnsit'. Did you mean: mnist")
    assert f"Zoo datasets: {', '.join(zoo.data.list_datasets())};" in message
    assert {"digits", "mnist"} <= set(zoo.data.list_datasets())
    assert isinstance(info.value, DatasetError) and isinstance(info.value, KeyError)


def test_close_matches_are_not_repeated():
    # "mnist" is both a zoo dataset and a TFDS name
    with pytest.raises(UnknownDatasetError) as info:
        zoo.data.check_dataset_name("mnsit")
    suggestions = str(info.value).split("Did you mean: ")[1].split("?")[0].split(", ")
    assert suggestions[0] == "mnist"
    assert len(suggestions) == len(set(suggestions))


def test_unknown_tfds_like_name_suggests_the_tfds_name():
    with pytest.raises(UnknownDatasetError, match="Did you mean: fashion_mnist"):
        zoo.data.load("fashion_mnsit")


def test_known_names_pass_the_name_check():
    for name in ("digits", "MNIST", "fashion_mnist", "mnist:3.0.1", "cifar10/plain"):
        zoo.data.check_dataset_name(name)


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_bad_split_lists_the_splits(name):
    with pytest.raises(DatasetError) as info:
        zoo.data.load(name, "validation")
    assert str(info.value) == (
        f"Dataset {name!r} has no split 'validation'; it has ['train', 'test']"
    )


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"num_examples": 0}, "num_examples must be positive, got 0"),
        ({"batch_size": -2}, "batch_size must be positive, got -2"),
    ],
)
def test_non_positive_sizes_are_refused(kwargs, text):
    with pytest.raises(DatasetError, match=text):
        zoo.data.load("digits", "test", **kwargs)


# -- shuffling ------------------------------------------------------------------------------


def test_train_split_shuffle_is_seeded(npz_dir):
    def first_batch(seed):
        return _ids(zoo.data.load("mnist", "train", 8, npz_dir, seed=seed).take(1))

    assert first_batch(1) == first_batch(1)
    assert first_batch(1) != first_batch(2)
    assert sorted(_ids(zoo.data.load("mnist", "train", 8, npz_dir, seed=1))) == list(range(N))


def test_test_split_is_not_shuffled_by_default(npz_dir):
    assert _ids(zoo.data.load("mnist", "test", 2, npz_dir)) == [0, 1, 2, 3, 4]
    assert _ids(zoo.data.load("mnist", "train", 5, npz_dir, shuffle=False)) == list(range(N))
    assert _ids(zoo.data.load("mnist", "test", 2, npz_dir, shuffle=True, seed=3)) != [0, 1, 2, 3, 4]


def test_repeat_reshuffles_every_epoch_deterministically(npz_dir):
    def two_epochs():
        ds = zoo.data.load("mnist", "train", data_dir=npz_dir, seed=5, repeat=True)
        return _ids(ds.take(2 * N))

    ids = two_epochs()
    epoch1, epoch2 = ids[:N], ids[N:]
    assert sorted(epoch1) == sorted(epoch2) == list(range(N))  # whole epochs, no mixing
    assert epoch1 != epoch2
    assert two_epochs() == ids


def test_iterating_twice_gives_a_new_order(npz_dir):
    ds = zoo.data.load("mnist", "train", 6, npz_dir, seed=0)
    first, second = _ids(ds), _ids(ds)
    assert sorted(first) == sorted(second) == list(range(N))
    assert first != second


# -- batching -------------------------------------------------------------------------------


def test_drop_remainder_and_num_examples(npz_dir):
    def sizes(**kwargs):
        ds = zoo.data.load("mnist", "train", 5, npz_dir, shuffle=False, **kwargs)
        return [int(tf.shape(y)[0]) for _, y in ds]

    assert sizes() == [5, 5, 5, 5, 4]
    assert sizes(drop_remainder=True) == [5, 5, 5, 5]
    assert sizes(num_examples=12) == [5, 5, 2]
    assert sizes(num_examples=12, drop_remainder=True) == [5, 5]
    ds = zoo.data.load("mnist", "train", 5, npz_dir, shuffle=False, num_examples=12)
    assert _ids(ds) == list(range(12))  # the first examples, not any 12
    assert zoo.data.num_examples_of("mnist", "train", data_dir=npz_dir, num_examples=12) == 12


def test_num_examples_shuffles_within_the_prefix(npz_dir):
    ds = zoo.data.load("mnist", "train", data_dir=npz_dir, num_examples=10, seed=4)
    ids = _ids(ds)
    assert sorted(ids) == list(range(10)) and ids != list(range(10))


def test_batch_element_spec(npz_dir):
    ds = zoo.data.load("mnist", "train", 4, npz_dir, drop_remainder=True)
    assert ds.element_spec == (
        tf.TensorSpec((4, 28, 28, 1), tf.float32),
        tf.TensorSpec((4,), tf.int64),
    )
    ds = zoo.data.load("mnist", "train", None, npz_dir)
    assert ds.element_spec == (
        tf.TensorSpec((28, 28, 1), tf.float32),
        tf.TensorSpec((), tf.int64),
    )


def test_digits_batches_are_float_images_and_int_labels():
    ds = zoo.data.load("digits", "test", batch_size=4, num_examples=10)
    assert ds.element_spec == (
        tf.TensorSpec((None, 28, 28, 1), tf.float32),
        tf.TensorSpec((None,), tf.int64),
    )
    batches = list(ds)
    assert [int(tf.shape(y)[0]) for _, y in batches] == [4, 4, 2]
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    assert y.min() >= 0 and y.max() <= 9
    # not shuffled (test split) and deterministic for the seed
    again = np.concatenate(
        [b[0].numpy() for b in zoo.data.load("digits", "test", 4, num_examples=10)]
    )
    np.testing.assert_array_equal(again, x)


def test_seeded_order_is_the_same_in_a_fresh_process(npz_dir, cli):
    code = (
        "import zoo.data\n"
        f"ds = zoo.data.load('mnist', 'train', 6, {str(npz_dir)!r}, seed=11)\n"
        "print([int(round(float(v) * 255)) for x, _ in ds for v in x[:, 0, 0, 0]])\n"
    )
    result = cli(["-c", code], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    here = _ids(zoo.data.load("mnist", "train", 6, npz_dir, seed=11))
    assert result.stdout.strip().splitlines()[-1] == str(here)
