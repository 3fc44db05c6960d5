"""``mnist`` from files a user already has: mnist.npz and the IDX files, read and validated."""

from __future__ import annotations

import gzip
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest

import zoo.data
from zoo.data import DatasetError
from zoo.data.mnist_files import write_idx

N_TRAIN, N_TEST = 13, 7
IDX = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _arrays(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the range
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    labels[:2] = (0, 9)
    return images, labels


@pytest.fixture(scope="module")
def mnist():
    """Synthetic MNIST-shaped uint8 arrays: {split: (images, labels)}."""
    return {"train": _arrays(N_TRAIN, 1), "test": _arrays(N_TEST, 2)}


def _write_npz(directory: Path, mnist, **replace):
    arrays = {
        "x_train": mnist["train"][0],
        "y_train": mnist["train"][1],
        "x_test": mnist["test"][0],
        "y_test": mnist["test"][1],
    }
    arrays.update(replace)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(directory / "mnist.npz", **arrays)
    return directory / "mnist.npz"


def _write_idx_files(directory: Path, mnist, suffix=".gz", dotted=False):
    paths = {}
    for split, (images, labels) in mnist.items():
        names = IDX[split]
        if dotted:
            names = tuple(n.replace("-idx", ".idx") for n in names)
        image_path, label_path = (directory / f"{n}{suffix}" for n in names)
        write_idx(image_path, images)
        write_idx(label_path, labels)
        paths[split] = (image_path, label_path)
    return paths


def _read_all(directory, split, batch_size=4, **kwargs):
    ds = zoo.data.load("mnist", split, batch_size=batch_size, data_dir=directory, **kwargs)
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds), strict=True)
    return np.concatenate(xs), np.concatenate(ys), [len(y) for y in ys]


def _assert_yields(directory, mnist, split, **kwargs):
    images, labels = mnist[split]
    x, y, sizes = _read_all(directory, split, shuffle=False, **kwargs)
    assert x.dtype == np.float32 and x.shape == (len(images), 28, 28, 1)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(x, images[..., None].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(y, labels.astype(np.int64))
    assert x.min() == 0.0 and x.max() == 1.0
    return sizes


# -- reading ------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
def test_npz_yields_exactly_its_arrays_in_order(tmp_path, mnist, split):
    _write_npz(tmp_path, mnist)
    sizes = _assert_yields(tmp_path, mnist, split)
    n = len(mnist[split][1])
    assert sizes == [4] * (n // 4) + [n % 4]


@pytest.mark.parametrize(
    "suffix, dotted",
    [(".gz", False), ("", False), (".gz", True), ("", True)],
    ids=["gz", "plain", "dotted-gz", "dotted-plain"],
)
@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_files_yield_exactly_their_arrays_in_order(tmp_path, mnist, split, suffix, dotted):
    _write_idx_files(tmp_path, mnist, suffix=suffix, dotted=dotted)
    _assert_yields(tmp_path, mnist, split)


def test_write_idx_uses_big_endian_header_and_gzip_by_suffix(tmp_path, mnist):
    images, labels = mnist["train"]
    write_idx(tmp_path / "i.gz", images)
    write_idx(tmp_path / "l", labels)
    raw = gzip.decompress((tmp_path / "i.gz").read_bytes())
    assert raw[:16] == struct.pack(">IIII", 0x803, N_TRAIN, 28, 28)
    assert raw[16:] == images.tobytes()
    assert (tmp_path / "l").read_bytes() == struct.pack(">II", 0x801, N_TRAIN) + labels.tobytes()


def test_npz_is_preferred_over_idx_files(tmp_path, mnist):
    _write_npz(tmp_path, mnist)
    other = {"train": _arrays(N_TRAIN, 5), "test": _arrays(N_TEST, 6)}
    _write_idx_files(tmp_path, other)
    _assert_yields(tmp_path, mnist, "train")


def test_num_examples_takes_a_prefix_of_file_data(tmp_path, mnist):
    _write_npz(tmp_path, mnist)
    x, y, sizes = _read_all(tmp_path, "train", batch_size=3, shuffle=False, num_examples=5)
    assert sizes == [3, 2]
    np.testing.assert_array_equal(y, mnist["train"][1][:5])
    np.testing.assert_array_equal(x[..., 0], mnist["train"][0][:5] / np.float32(255))


def test_shuffled_train_split_is_a_permutation_of_the_file(tmp_path, mnist):
    _write_idx_files(tmp_path, mnist)
    x, y, _ = _read_all(tmp_path, "train", seed=3)  # shuffled by default for train
    images, labels = mnist["train"]
    order = [
        int(np.flatnonzero((images == np.rint(img[..., 0] * 255)).all(axis=(1, 2)))[0]) for img in x
    ]
    assert sorted(order) == list(range(N_TRAIN))
    assert order != list(range(N_TRAIN))
    np.testing.assert_array_equal(y, labels[order])


# -- malformed files ------------------------------------------------------------------------


def _assert_dataset_error(directory, split, *fragments):
    with pytest.raises(DatasetError) as info:
        zoo.data.load("mnist", split, batch_size=4, data_dir=directory)
    message = str(info.value)
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in {message!r}"
    return message


def test_npz_missing_key_names_file_and_keys(tmp_path, mnist):
    npz = _write_npz(tmp_path, mnist, y_test=None)
    _assert_dataset_error(tmp_path, "test", f"{npz} lacks ['y_test']", "x_train, y_train")
    _assert_yields(tmp_path, mnist, "train")  # the other split is fine


def test_npz_with_wrong_image_shape_names_file(tmp_path, mnist):
    x = np.zeros((N_TRAIN, 32, 32), np.uint8)
    npz = _write_npz(tmp_path, mnist, x_train=x)
    _assert_dataset_error(tmp_path, "train", npz, "(n, 28, 28)", "(13, 32, 32)")


def test_npz_with_float_images_is_refused(tmp_path, mnist):
    npz = _write_npz(tmp_path, mnist, x_train=mnist["train"][0].astype(np.float32))
    _assert_dataset_error(tmp_path, "train", npz, "images must be uint8", "float32")


@pytest.mark.parametrize("bad", [10, 255, -1])
def test_labels_out_of_range_name_file_and_range(tmp_path, mnist, bad):
    labels = mnist["train"][1].astype(np.int16)
    labels[4] = bad
    npz = _write_npz(tmp_path, mnist, y_train=labels)
    lo, hi = min(0, bad), max(9, bad)
    _assert_dataset_error(tmp_path, "train", npz, f"labels must lie in 0..9; found {lo}..{hi}")


def test_idx_labels_out_of_range_name_both_files(tmp_path, mnist):
    paths = _write_idx_files(tmp_path, mnist)
    labels = mnist["train"][1].copy()
    labels[-1] = 10
    write_idx(paths["train"][1], labels)
    _assert_dataset_error(tmp_path, "train", paths["train"][1], "found 0..10")


def test_idx_with_bad_magic_names_file(tmp_path, mnist):
    paths = _write_idx_files(tmp_path, mnist, suffix="")
    path = paths["train"][0]
    data = bytearray(path.read_bytes())
    data[2:4] = b"\x08\x02"  # 0x0802: signed bytes
    path.write_bytes(bytes(data))
    _assert_dataset_error(tmp_path, "train", f"IDX file {path} has magic number 0x00000802")


def test_truncated_idx_names_file_and_sizes(tmp_path, mnist):
    paths = _write_idx_files(tmp_path, mnist, suffix="")
    path = paths["test"][0]
    path.write_bytes(path.read_bytes()[:-100])
    expected = N_TEST * 28 * 28
    _assert_dataset_error(
        tmp_path,
        "test",
        f"IDX file {path} declares shape ({N_TEST}, 28, 28) ({expected} bytes) but holds "
        f"{expected - 100} bytes",
    )


def test_idx_shorter_than_its_header_names_file(tmp_path, mnist):
    paths = _write_idx_files(tmp_path, mnist, suffix="")
    path = paths["train"][1]
    path.write_bytes(b"\x00\x00\x08")
    _assert_dataset_error(tmp_path, "train", f"IDX file {path} is too short")


def test_truncated_gzip_names_file(tmp_path, mnist):
    paths = _write_idx_files(tmp_path, mnist)
    path = paths["train"][0]
    path.write_bytes(path.read_bytes()[:-40])
    _assert_dataset_error(tmp_path, "train", f"IDX file {path} cannot be read")


def test_corrupt_gzip_names_file(tmp_path, mnist):
    paths = _write_idx_files(tmp_path, mnist)
    path = paths["train"][1]
    path.write_bytes(b"this is not gzip data at all")
    _assert_dataset_error(tmp_path, "train", f"IDX file {path} cannot be read")


def test_idx_label_and_image_count_mismatch_names_files(tmp_path, mnist):
    paths = _write_idx_files(tmp_path, mnist)
    write_idx(paths["train"][1], mnist["train"][1][:-1])
    _assert_dataset_error(
        tmp_path,
        "train",
        f"{paths['train'][0]} / {paths['train'][1]}",
        f"{N_TRAIN} images but labels of shape ({N_TRAIN - 1},)",
    )


def test_npz_label_and_image_count_mismatch_names_file(tmp_path, mnist):
    npz = _write_npz(tmp_path, mnist, y_test=mnist["test"][1][:3])
    _assert_dataset_error(tmp_path, "test", f"{npz}: {N_TEST} images but labels of shape (3,)")


def test_swapped_idx_files_are_reported(tmp_path, mnist):
    paths = _write_idx_files(tmp_path, mnist)
    images, labels = paths["train"]
    tmp = images.with_name("swap")
    images.rename(tmp)
    labels.rename(images)
    tmp.rename(labels)
    _assert_dataset_error(tmp_path, "train", "are the two swapped?")


def test_npz_that_is_not_a_zip_names_file(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 broken")
    _assert_dataset_error(tmp_path, "train", f"{tmp_path / 'mnist.npz'} is not a readable")


class _Payload:
    """Unpickling this runs os.mkdir(flag): evidence that a file was unpickled."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (os.mkdir, (str(self.flag),))


def test_npz_with_object_array_is_refused_without_unpickling(tmp_path, mnist):
    flag = tmp_path / "unpickled"
    labels = np.empty(N_TRAIN, dtype=object)
    labels[:] = [_Payload(flag)] * N_TRAIN
    npz = _write_npz(tmp_path, mnist, y_train=labels)
    with np.load(npz, allow_pickle=True) as archive:  # the payload is live...
        archive["y_train"]
    assert flag.is_dir()
    flag.rmdir()
    message = _assert_dataset_error(tmp_path, "train", f"{npz} is not a readable .npz archive")
    assert re.search("pickle", message, re.IGNORECASE)
    assert not flag.exists()  # ...but the zoo never unpickled it


def test_directory_with_only_unrelated_files_is_not_mnist(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(zoo.data.DatasetNotAvailableError) as info:
        zoo.data.load("mnist", "train", data_dir=tmp_path)
    assert f"no mnist.npz or IDX files (train-images-idx3-ubyte.gz, ...) in {tmp_path}" in str(
        info.value
    )


def test_pickle_dump_payload_is_not_an_npz(tmp_path):
    flag = tmp_path / "unpickled"
    with open(tmp_path / "mnist.npz", "wb") as f:
        pickle.dump(_Payload(flag), f)
    _assert_dataset_error(tmp_path, "train", f"{tmp_path / 'mnist.npz'} is not a readable")
    assert not flag.exists()
