"""FID (zoo/eval/fid.py): the Fréchet distance against Gaussian closed forms, and the extractors."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.eval.fid import (
    INCEPTION_WEIGHTS_FILE,
    classifier_features,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_v3_features,
    trace_sqrt_product,
)


def _random_spd(d, rng, scale=1.0):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T) / d + 0.1 * np.eye(d)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=16), _random_spd(16, rng)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    f = rng.normal(size=(200, 8))
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-9)


def test_commuting_gaussians_match_the_closed_form():
    # Diagonal covariances: W₂² = ‖μ₁ − μ₂‖² + Σ (√s₁ − √s₂)².
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(
        expected, rel=1e-10
    )
    # One dimension: (μ₁ − μ₂)² + (σ₁ − σ₂)².
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9.0 + 1.0)


def test_general_gaussians_match_the_eigenvalues_of_the_product():
    """tr((Σ₁Σ₂)^½) is Σ √λ(Σ₁Σ₂) (the non-symmetric product's eigenvalues, real and ≥ 0);
    computed here independently with np.linalg.eigvals, the zoo uses Σ₁^½ Σ₂ Σ₁^½."""
    rng = np.random.default_rng(2)
    for d in (2, 7, 30):
        s1, s2 = _random_spd(d, rng), _random_spd(d, rng, scale=3.0)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        lam = np.linalg.eigvals(s1 @ s2)
        assert np.abs(lam.imag).max() < 1e-8 and lam.real.min() > 0
        expected = (
            np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam.real).sum()
        )
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
            frechet_distance(mu2, s2, mu1, s1), rel=1e-9
        )


def test_samples_of_two_gaussians_approach_the_closed_form():
    rng = np.random.default_rng(3)
    d, n = 4, 200_000
    mu2 = np.array([1.0, 0.0, -0.5, 0.25])
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) * np.array([2.0, 1.0, 0.5, 1.0]) + mu2
    expected = np.sum(mu2**2) + (2 - 1) ** 2 + (0.5 - 1) ** 2
    assert fid_from_features(a, b) == pytest.approx(expected, rel=0.02)
    mu, sigma = feature_statistics(b)
    np.testing.assert_allclose(mu, mu2, atol=0.02)


def test_rank_deficient_covariances_stay_finite_and_nonnegative():
    """Fewer samples than dimensions (the usual case for 2048-d features on small sets): the
    covariances are singular; a naive sqrtm of Σ₁Σ₂ goes complex or NaN, the PSD route does not."""
    rng = np.random.default_rng(4)
    f1, f2 = rng.normal(size=(10, 64)), rng.normal(size=(10, 64)) + 0.1
    value = fid_from_features(f1, f2)
    assert np.isfinite(value) and value > 0
    s = np.cov(f1, rowvar=False)
    # The null space's eigenvalues are round-off (~1e-15); their square roots add ~1e-7 each.
    assert trace_sqrt_product(s, s) == pytest.approx(np.trace(s), rel=1e-6)


def test_bad_statistics_get_clear_errors():
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"\(d, d\)"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 5)))


def test_inception_weights_are_read_from_a_path_and_never_downloaded(tmp_path):
    missing = tmp_path / INCEPTION_WEIGHTS_FILE
    with pytest.raises(FileNotFoundError, match="downloads nothing") as info:
        inception_v3_features(missing)
    assert str(missing) in str(info.value) and "storage.googleapis.com" in str(info.value)
    with pytest.raises(ValueError, match="at least 75"):
        inception_v3_features(None, image_size=32)


def test_inception_extractor_builds_keras_inception_v3_with_the_given_weights_path(
    tmp_path, monkeypatch
):
    import keras

    seen = {}

    def fake_inception(**kwargs):
        seen.update(kwargs)
        return lambda x, training=False: keras.ops.mean(x, axis=(1, 2))

    monkeypatch.setattr(keras.applications, "InceptionV3", fake_inception)
    path = tmp_path / INCEPTION_WEIGHTS_FILE
    path.write_bytes(b"weights")
    extract = inception_v3_features(path)
    assert seen == {
        "include_top": False, "weights": str(path), "pooling": "avg", "input_shape": (299, 299, 3)
    }  # fmt: skip
    grey = np.full((2, 28, 28, 1), 0.75, np.float32)
    # Grey repeated to RGB, resized, scaled to [−1, 1] (0.75 → 0.5).
    np.testing.assert_allclose(extract(grey), np.full((2, 3), 0.5), atol=1e-6)
    with pytest.raises(ValueError, match="1 or 3"):
        extract(np.zeros((2, 28, 28, 2), np.float32))


@pytest.mark.slow
def test_inception_features_load_a_weights_file_and_take_grey_images(tmp_path):
    import keras

    net = keras.applications.InceptionV3(
        include_top=False, weights=None, pooling="avg", input_shape=(75, 75, 3)
    )
    path = tmp_path / "inception.weights.h5"
    net.save_weights(path)
    extract = inception_v3_features(path, image_size=75)
    for a, b in zip(extract.model.weights, net.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    grey = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    feats = extract(grey)
    assert feats.shape == (3, 2048)
    np.testing.assert_allclose(feats, extract(np.repeat(grey, 3, axis=-1)), rtol=1e-5, atol=1e-6)


def test_classifier_features_are_cnn_mnist_penultimate_channels():
    import tensorflow as tf

    import zoo

    model = zoo.load("cnn_mnist")
    x = np.random.default_rng(0).uniform(size=(5, 28, 28, 1)).astype(np.float32)
    feats = classifier_features(model)(x)
    assert feats.shape == (5, 256)
    h = tf.constant(x)
    for block in model.blocks[:-1]:
        for layer in block:
            h = layer(h, training=False) if "bn" in layer.name else layer(h)
    np.testing.assert_allclose(feats, h.numpy().mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="extractor"):
        classifier_features(object())
