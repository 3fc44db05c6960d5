"""zoo.weights: loading by file, directory and manifest tag; cache downloads; refusing bad files."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import zoo
import zoo.weights as zw


@pytest.fixture(autouse=True)
def fresh_manifest(monkeypatch):
    """Manifest entries registered by a test disappear with it."""
    monkeypatch.setattr(zw, "_MANIFEST", {})
    return zw._MANIFEST


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)


@pytest.fixture
def linear_weights(tmp_path):
    """A linear_mnist model and its weights file."""
    model = zoo.load("linear_mnist")
    path = tmp_path / "src" / "linear.weights.h5"
    path.parent.mkdir()
    model.save_weights(path)
    return model, path


def _cache_path(model: str, filename: str) -> Path:
    return Path(os.environ["ZOO_HOME"]) / "weights" / model / filename


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _assert_same_outputs(a, b, x):
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_cache_dir_is_zoo_home(tmp_path):
    assert zw.cache_dir() == tmp_path / "zoo_home"


def test_weights_file_round_trip_gives_identical_outputs(tmp_path, images):
    model = zoo.load("cnn_mnist")
    path = tmp_path / "x.weights.h5"
    model.save_weights(path)
    fresh = zoo.load("cnn_mnist")
    assert np.abs(fresh(images).numpy() - model(images).numpy()).max() > 1e-4  # other init
    loaded = zoo.load("cnn_mnist", weights=path)
    _assert_same_outputs(loaded, model, images)
    loaded = zoo.load("cnn_mnist", weights=str(path))  # str and PathLike alike
    _assert_same_outputs(loaded, model, images)


def test_directory_holding_weights_file_loads(tmp_path, images):
    model = zoo.load("linear_mnist")
    model.save_weights(tmp_path / "weights.weights.h5")
    _assert_same_outputs(zoo.load("linear_mnist", weights=tmp_path), model, images)


def test_directory_without_weights_file_is_refused(tmp_path):
    (tmp_path / "other.weights.h5").write_bytes(b"")
    with pytest.raises(zoo.WeightsError, match=f"weights directory {re.escape(str(tmp_path))} "):
        zoo.load("linear_mnist", weights=tmp_path)


def test_keras_archive_loads_as_weights(tmp_path, images):
    model = zoo.load("linear_mnist")
    model.save(tmp_path / "m.keras")
    _assert_same_outputs(zoo.load("linear_mnist", weights=tmp_path / "m.keras"), model, images)


def test_manifest_tag_loads_from_cache(linear_weights, images):
    model, source = linear_weights
    target = _cache_path("linear_mnist", "lin-v1.weights.h5")
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)
    entry = zw.register_weights(
        "Linear_MNIST", "v1", filename="lin-v1.weights.h5", sha256=_sha256(source).upper()
    )
    assert entry.sha256 == _sha256(source) and entry.model == "linear_mnist"
    assert zoo.get_spec("linear_mnist").weights == {"v1": entry}
    assert zw.resolve("linear_mnist", "v1") == (target, entry)
    _assert_same_outputs(zoo.load("linear_mnist", weights="v1"), model, images)


def test_manifest_tag_missing_from_cache_without_url_says_where_to_put_it(linear_weights):
    _, source = linear_weights
    digest = _sha256(source)
    zw.register_weights("linear_mnist", "v1", filename="lin.weights.h5", sha256=digest)
    target = _cache_path("linear_mnist", "lin.weights.h5")
    with pytest.raises(zoo.WeightsError) as info:
        zoo.load("linear_mnist", weights="v1")
    assert f"Place the file at {target} (sha256 {digest})" in str(info.value)


def test_file_url_is_downloaded_into_cache_and_verified(linear_weights, images):
    model, source = linear_weights
    digest = _sha256(source)
    zw.register_weights(
        "linear_mnist",
        "v1",
        filename="lin.weights.h5",
        sha256=digest,
        url=source.as_uri(),
        size=source.stat().st_size,
    )
    target = _cache_path("linear_mnist", "lin.weights.h5")
    assert not target.exists()
    _assert_same_outputs(zoo.load("linear_mnist", weights="v1"), model, images)
    assert target.is_file() and _sha256(target) == digest
    assert os.listdir(target.parent) == ["lin.weights.h5"]  # no partial downloads left behind
    # the second load uses the cache: the source may go away
    source.unlink()
    _assert_same_outputs(zoo.load("linear_mnist", weights="v1"), model, images)


def test_file_url_keras_archive_is_downloaded(tmp_path, images):
    model = zoo.load("linear_mnist")
    source = tmp_path / "lin.keras"
    model.save(source)
    zw.register_weights(
        "linear_mnist", "k", filename="lin.keras", sha256=_sha256(source), url=source.as_uri()
    )
    _assert_same_outputs(zoo.load("linear_mnist", weights="k"), model, images)
    assert _cache_path("linear_mnist", "lin.keras").is_file()


def test_download_with_wrong_sha256_leaves_nothing_in_cache(linear_weights):
    _, source = linear_weights
    zw.register_weights(
        "linear_mnist", "v1", filename="lin.weights.h5", sha256="0" * 64, url=source.as_uri()
    )
    with pytest.raises(zoo.WeightsError, match="sha256 mismatch"):
        zoo.load("linear_mnist", weights="v1")
    target_dir = _cache_path("linear_mnist", "x").parent
    assert list(target_dir.iterdir()) == []


def test_unreachable_url_is_weights_error_naming_url_and_cache_path(tmp_path):
    missing = tmp_path / "nowhere.weights.h5"
    zw.register_weights(
        "linear_mnist", "v1", filename="lin.weights.h5", sha256="a" * 64, url=missing.as_uri()
    )
    with pytest.raises(zoo.WeightsError) as info:
        zoo.load("linear_mnist", weights="v1")
    message = str(info.value)
    assert f"from {missing.as_uri()}" in message
    assert f"place the file at {_cache_path('linear_mnist', 'lin.weights.h5')}" in message


def test_sha256_mismatch_names_file_and_both_hashes(linear_weights):
    _, source = linear_weights
    target = _cache_path("linear_mnist", "lin.weights.h5")
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)
    wrong = "ab" * 32
    zw.register_weights("linear_mnist", "v1", filename="lin.weights.h5", sha256=wrong)
    with pytest.raises(zoo.WeightsError) as info:
        zoo.load("linear_mnist", weights="v1")
    message = str(info.value)
    assert f"sha256 mismatch for weights file {target}" in message
    assert f"expected {wrong}, got {_sha256(source)}" in message


def test_truncated_file_without_manifest_is_weights_error_naming_file(linear_weights, tmp_path):
    _, source = linear_weights
    data = source.read_bytes()
    truncated = tmp_path / "half.weights.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(zoo.WeightsError, match=f"weights file {re.escape(str(truncated))} "):
        zoo.load("linear_mnist", weights=truncated)


def test_truncated_file_with_manifest_size_reports_both_sizes(linear_weights):
    _, source = linear_weights
    data = source.read_bytes()
    target = _cache_path("linear_mnist", "lin.weights.h5")
    target.parent.mkdir(parents=True)
    target.write_bytes(data[: len(data) // 2])
    zw.register_weights(
        "linear_mnist", "v1", filename="lin.weights.h5", sha256=_sha256(source), size=len(data)
    )
    with pytest.raises(zoo.WeightsError) as info:
        zoo.load("linear_mnist", weights="v1")
    assert (
        f"weights file {target} has {len(data) // 2} bytes but the manifest says {len(data)}"
        in str(info.value)
    )


def test_truncated_file_with_manifest_without_size_fails_sha256(linear_weights):
    _, source = linear_weights
    data = source.read_bytes()
    target = _cache_path("linear_mnist", "lin.weights.h5")
    target.parent.mkdir(parents=True)
    target.write_bytes(data[: len(data) // 2])
    zw.register_weights("linear_mnist", "v1", filename="lin.weights.h5", sha256=_sha256(source))
    with pytest.raises(zoo.WeightsError, match=f"sha256 mismatch for weights file {target}"):
        zoo.load("linear_mnist", weights="v1")


class _Payload:
    """Unpickling this runs os.mkdir(flag): evidence that a file was unpickled."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (os.mkdir, (str(self.flag),))


def test_pickle_disguised_as_weights_is_refused_without_unpickling(tmp_path):
    flag = tmp_path / "unpickled"
    payload = pickle.dumps(_Payload(flag))
    pickle.loads(payload)  # the payload is live: unpickling it creates the flag
    assert flag.is_dir()
    flag.rmdir()
    path = tmp_path / "x.weights.h5"
    path.write_bytes(payload)
    with pytest.raises(zoo.WeightsError, match=f"{re.escape(str(path))} is not an HDF5 file"):
        zoo.load("linear_mnist", weights=path)
    assert not flag.exists()


def test_pickle_disguised_as_keras_archive_is_refused(tmp_path):
    flag = tmp_path / "unpickled"
    path = tmp_path / "x.keras"
    with open(path, "wb") as f:
        pickle.dump(_Payload(flag), f)
    with pytest.raises(zoo.WeightsError, match=f"{re.escape(str(path))} is not a .keras archive"):
        zoo.load("linear_mnist", weights=path)
    assert not flag.exists()


@pytest.mark.parametrize("suffix", [".pkl", ".pt", ".h5", ".npz"])
def test_other_file_formats_are_refused(tmp_path, linear_weights, suffix):
    _, source = linear_weights
    path = tmp_path / f"x{suffix}"
    shutil.copyfile(source, path)  # even with valid HDF5 content
    with pytest.raises(zoo.WeightsError) as info:
        zoo.load("linear_mnist", weights=path)
    assert f"weights file {path}: the zoo loads .weights.h5 and .keras files only" in str(
        info.value
    )


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_linear_weights_do_not_fit_cnn(linear_weights):
    _, source = linear_weights
    with pytest.raises(zoo.WeightsError) as info:
        zoo.load("cnn_mnist", weights=source)
    assert f"weights file {source} does not fit cnn_mnist as configured" in str(info.value)


def test_cnn_weights_do_not_fit_cnn_with_other_filters(tmp_path):
    path = tmp_path / "cnn.weights.h5"
    zoo.load("cnn_mnist").save_weights(path)
    with pytest.raises(zoo.WeightsError) as info:
        zoo.load("cnn_mnist", weights=path, filters=[4, 4, 4, 10])
    assert f"weights file {path} does not fit cnn_mnist as configured" in str(info.value)


def test_cnn_weights_do_not_fit_linear(tmp_path):
    path = tmp_path / "cnn.weights.h5"
    zoo.load("cnn_mnist", filters=[4, 4, 4, 10]).save_weights(path)
    with pytest.raises(zoo.WeightsError, match="does not fit linear_mnist"):
        zoo.load("linear_mnist", weights=path)


def test_unknown_tag_lists_known_tags():
    for tag in ("digits", "mnist"):
        zw.register_weights("linear_mnist", tag, filename=f"{tag}.weights.h5", sha256="c" * 64)
    with pytest.raises(zoo.WeightsError) as info:
        zoo.load("linear_mnist", weights="imagenet")
    assert (
        "weights 'imagenet' for linear_mnist are neither a manifest tag (known tags: digits, "
        "mnist) nor an existing file or directory" in str(info.value)
    )


def test_unknown_tag_without_manifest_says_none():
    with pytest.raises(zoo.WeightsError, match=r"\(known tags: none\)"):
        zoo.load("linear_mnist", weights="v1")


@pytest.mark.parametrize(
    "sha256", ["abc", "g" * 64, "0" * 63, "0" * 65, "sha256:" + "0" * 57, " " + "0" * 63]
)
def test_register_weights_validates_sha256(sha256, fresh_manifest):
    with pytest.raises(ValueError, match="must be 64 hex digits"):
        zw.register_weights("linear_mnist", "v1", filename="a.weights.h5", sha256=sha256)
    assert fresh_manifest == {}


def test_register_weights_validates_filename(fresh_manifest):
    with pytest.raises(ValueError, match="must end in .weights.h5 or .keras"):
        zw.register_weights("linear_mnist", "v1", filename="a.pkl", sha256="0" * 64)
    assert fresh_manifest == {}
