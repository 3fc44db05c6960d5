"""Fréchet distance between feature statistics (FID), with the paper's Inception-V3 features and an
offline proxy from a zoo classifier.

``FID = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{½})`` (001_4315bda1330034cd.txt, eq. 8; Heusel et al.
2017). The trace of the matrix square root is computed as ``Σᵢ √λᵢ`` over the eigenvalues of the
symmetric positive semi-definite ``Σ₁^{½} Σ₂ Σ₁^{½}``, which has the eigenvalues of ``Σ₁Σ₂``:
no square root of a non-symmetric matrix, no complex round-off to discard, and rank-deficient
covariances (fewer samples than feature dimensions) stay finite. Statistics are float64.

Feature extractors map images ``(n, H, W, C)`` in [0, 1] to features ``(n, d)``:

- :func:`inception_v3_features`: ``keras.applications.InceptionV3`` without its top, global
  average pool (2048-d), weights from a local file (nothing is downloaded). The paper used
  pytorch-fid v0.1.1, whose Inception weights are the TF 2015 FID graph's, not Keras' ImageNet
  weights, so figures from this extractor are FIDs in the usual sense but not digit-for-digit
  comparable with Table 1.
- :func:`classifier_features`: a zoo classifier's penultimate layer (spatially averaged), for the
  offline "proxy FID" on digits (digest §3.3 check 7).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "trace_sqrt_product",
    "fid_from_features",
    "fid",
    "compute_features",
    "inception_v3_features",
    "classifier_features",
    "INCEPTION_WEIGHTS_FILE",
]

# The file keras.applications.InceptionV3(include_top=False) would fetch; pass its local path.
INCEPTION_WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
    + INCEPTION_WEIGHTS_FILE
)

Extractor = Callable[[np.ndarray], np.ndarray]


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` of ``features`` ``(n, d)``, n ≥ 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be (n, d); got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors; got {f.shape[0]}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1, sigma2) -> float:
    """``tr((Σ₁Σ₂)^{½})`` for symmetric PSD ``Σ₁``, ``Σ₂``, as ``Σᵢ √λᵢ(Σ₁^{½} Σ₂ Σ₁^{½})``."""
    s1 = _sqrt_psd(np.asarray(sigma1, np.float64))
    inner = s1 @ np.asarray(sigma2, np.float64) @ s1
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def _check_stats(mu, sigma, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise ValueError(
            f"statistics {which}: the mean must be (d,) and the covariance (d, d); got "
            f"{mu.shape} and {sigma.shape}"
        )
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"statistics {which} contain NaN or infinite values")
    return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``‖μ₁ − μ₂‖² + tr(Σ₁) + tr(Σ₂) − 2 tr((Σ₁Σ₂)^{½})``: the Fréchet (2-Wasserstein²)
    distance between N(μ₁, Σ₁) and N(μ₂, Σ₂); eq. 8 of 001_4315bda1330034cd.txt. ≥ 0 up to
    round-off (clipped at 0)."""
    mu1, sigma1 = _check_stats(mu1, sigma1, "1")
    mu2, sigma2 = _check_stats(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.size} vs {mu2.size}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2)
    value -= 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))


def fid_from_features(features1, features2) -> float:
    """The Fréchet distance between the Gaussian fits of two feature sets ``(n, d)``."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def compute_features(extractor: Extractor, images, batch_size: int = 250) -> np.ndarray:
    """``extractor`` over ``images`` ``(n, H, W, C)`` (an array or a ``tf.data`` dataset of image
    batches or ``(images, labels)`` batches) in batches; ``(n, d)`` float64."""
    out = []
    if hasattr(images, "as_numpy_iterator"):
        for batch in images.as_numpy_iterator():
            x = batch[0] if isinstance(batch, tuple | list) else batch
            out.append(np.asarray(extractor(x), np.float64))
    else:
        images = np.asarray(images, np.float32)
        for i in range(0, len(images), batch_size):
            out.append(np.asarray(extractor(images[i : i + batch_size]), np.float64))
    return np.concatenate(out, axis=0)


def fid(real_images, generated_images, extractor: Extractor, batch_size: int = 250) -> float:
    """FID between two image sets under ``extractor`` (e.g. :func:`inception_v3_features`)."""
    return fid_from_features(
        compute_features(extractor, real_images, batch_size),
        compute_features(extractor, generated_images, batch_size),
    )


def inception_v3_features(weights: str | os.PathLike | None, image_size: int = 299) -> Extractor:
    """Inception-V3 pool features (2048-d) of images in [0, 1], from local weights.

    Args:
        weights: the path of ``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5`` (from
            ``INCEPTION_WEIGHTS_URL``) or any weights file of the top-less model; None gives
            random weights (smoke tests only: such "FIDs" mean nothing).
        image_size: the side images are resized to (bilinear); 299 as in FID, at least 75.

    Grey images are repeated to three channels; pixels are scaled to [−1, 1] as Inception's
    preprocessing does."""
    import keras
    import tensorflow as tf

    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"Inception-V3 weights not found at {path}. The zoo downloads nothing: fetch "
                f"{INCEPTION_WEIGHTS_URL} once and pass its path (or use classifier_features for "
                f"the offline proxy FID)."
            )
        weights = str(path)
    if image_size < 75:
        raise ValueError(f"Inception-V3 needs images of at least 75×75; got {image_size}")
    net = keras.applications.InceptionV3(
        include_top=False, weights=weights, pooling="avg", input_shape=(image_size, image_size, 3)
    )

    def extract(images):
        x = tf.convert_to_tensor(np.asarray(images, np.float32))
        if x.shape.rank != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"images must be (n, H, W, 1 or 3); got shape {tuple(x.shape)}")
        if x.shape[-1] == 1:
            x = tf.repeat(x, 3, axis=-1)
        x = tf.image.resize(x, (image_size, image_size), method="bilinear")
        # Called eagerly: tracing a 300-layer graph costs more than it saves per batch.
        return net(x * 2.0 - 1.0, training=False).numpy()

    extract.model = net
    return extract


def classifier_features(model) -> Extractor:
    """The penultimate layer of a zoo classifier, averaged over space if it is a feature map.

    Works for the zoo's ``ConvClassifier`` (``cnn_mnist``: the 256 channels before the last
    convolution) and for any functional or sequential Keras classifier (its second-to-last
    layer's output). ``(n, H, W, C)`` images → ``(n, d)``."""
    import keras
    import tensorflow as tf

    blocks = getattr(model, "blocks", None)
    if blocks is not None and len(blocks) > 1:

        def penultimate(x):
            if getattr(model, "binarizer", None) is not None:
                x = model.binarizer(x)
            for block in blocks[:-1]:
                for layer in block:
                    x = layer(x, training=False) if _is_bn(layer) else layer(x)
            return x

    elif isinstance(model, keras.Model) and getattr(model, "_is_graph_network", False):
        inner = keras.Model(model.inputs, model.layers[-2].output)

        def penultimate(x):
            return inner(x, training=False)

    else:
        raise TypeError(
            f"classifier_features needs a zoo ConvClassifier or a functional/sequential Keras "
            f"model; got {type(model).__name__}. Pass your own extractor (images → (n, d)) to fid()."
        )

    @tf.function(reduce_retracing=True)
    def run(x):
        h = penultimate(x)
        return (
            tf.reduce_mean(h, axis=[1, 2])
            if h.shape.rank == 4
            else tf.reshape(h, [tf.shape(h)[0], -1])
        )

    def extract(images):
        return run(tf.convert_to_tensor(np.asarray(images, np.float32))).numpy()

    return extract


def _is_bn(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)
