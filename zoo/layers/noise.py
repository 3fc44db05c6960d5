"""Noise for noise training: the adversarial noise generator and the ε-projection.

Rusak*, Schott*, Zimmermann* et al., "A simple way to make neural networks robust against diverse
image corruptions" (ECCV 2020), the chapter at lines 2827–3376 of 002_7240b1e8d13f6586.txt;
shared/digests/slowvae_benchmark_noise.md part (c).

- :class:`NoiseGenerator`: the implicit noise distribution ``δ = g_φ(z)``, ``z ~ N(0, I)`` of the
  image's shape (App. A, "NG"): 1×1 convolutions (i.i.d. pixels, channels may correlate) or a 3×3
  second layer (correlation length 3 px), ReLU between, a residual ``+ z``, and N(0, 0.01²)
  weights with zero biases, so that at initialisation δ ≈ z. The image content is never an input;
  z is drawn fresh on every call (digest c.5, pitfall 5).
- :func:`project_to_epsilon`: η ≥ 0 with ``‖clip(x + ηδ, 0, 1) − x‖₂ = ε`` per image, a pure TF
  function (sort, cumulative sums, one linear solve per row; footnote 3 of the paper).
- :func:`gaussian_noise_images` and :func:`speckle_noise_images`: the GNT and Speckle noise, added
  in [0, 1] pixel space and clipped (Eq. 1; digest c.5, pitfall 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "NoiseGenerator",
    "project_to_epsilon",
    "reachable_norm",
    "gaussian_noise_images",
    "speckle_noise_images",
    "per_image_scale",
    "KERNELS",
]

KERNELS = ("1x1", "3x3")
# 002_7240b1e8d13f6586.txt, ANT App. A: NG weights ~ N(0, 0.01²), biases 0.
INIT_STDDEV = 0.01


def _random_generator(seed: int | None) -> tf.random.Generator:
    # Created where the layer is created: inside a tf.distribute scope every replica then draws its
    # own stream (a Keras SeedGenerator would give every replica the same z).
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))  # follows keras.utils.set_random_seed
    return tf.random.Generator.from_seed(int(seed))


@keras.saving.register_keras_serializable(package="zoo")
class NoiseGenerator(keras.layers.Layer):
    """The noise generator NG of adversarial noise training.

    ``layer(images)`` returns noise δ of the images' shape ``(batch, H, W, C)``; the images only
    give the shape. ``depth`` convolutions of ``width`` channels (``C → width → … → C``; with
    ``depth=1`` a single ``C → C`` convolution), ReLU between them and a residual ``+ z``. With
    ``kernel="3x3"`` the second convolution is 3×3 "valid": z is drawn at ``(H+2, W+2)`` and its
    centre crop is the residual (digest c.5, pitfall 8), so δ is correlated within a 3×3
    neighbourhood (lags ≤ 2 between pixels).

    Parameters for C = 3 (Table 11): depth 1: 12, 2: 143, 3: 563, 4 (the paper's NG): 983,
    5: 1403.

    Args:
        channels: C, the images' channels.
        kernel: ``"1x1"`` or ``"3x3"``.
        width: hidden channels (20 in the paper).
        depth: number of convolutions (4 in the paper).
        seed: seed of the generator's own random stream (None: drawn from NumPy's global state,
            which ``keras.utils.set_random_seed`` sets).
    """

    def __init__(
        self,
        channels: int,
        kernel: str = "1x1",
        width: int = 20,
        depth: int = 4,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if int(depth) < 1 or (kernel == "3x3" and int(depth) < 2):
            raise ValueError(
                f"depth must be >= 1 (>= 2 for the 3x3 generator, whose second convolution is "
                f"3x3), got {depth}"
            )
        self.channels, self.kernel, self.width, self.depth = (
            int(channels),
            kernel,
            int(width),
            int(depth),
        )
        self.seed = seed
        self.margin = 1 if kernel == "3x3" else 0  # z is drawn this much larger on every side
        sizes = [self.channels] + [self.width] * (self.depth - 1) + [self.channels]
        init = keras.initializers.RandomNormal(0.0, INIT_STDDEV, seed=seed)
        self.kernels, self.biases = [], []
        for i in range(self.depth):
            k = 3 if (kernel == "3x3" and i == 1) else 1
            self.kernels.append(
                self.add_weight(shape=(k, k, sizes[i], sizes[i + 1]), initializer=init,
                                name=f"kernel{i + 1}")
            )  # fmt: skip
            self.biases.append(
                self.add_weight(shape=(sizes[i + 1],), initializer="zeros", name=f"bias{i + 1}")
            )
        self.rng = _random_generator(seed)
        self.built = True

    # -- the function ---------------------------------------------------------------------------
    def sample_z(self, shape) -> tf.Tensor:
        """Fresh z ~ N(0, I) for noise of ``shape`` = (batch, H, W, C) (with the 3×3 margin)."""
        shape = tf.convert_to_tensor(shape, tf.int32)
        pad = tf.constant([0, 2 * self.margin, 2 * self.margin, 0], tf.int32)
        return self.rng.normal(shape + pad)

    def transform(self, z: tf.Tensor, params: Sequence[tf.Tensor] | None = None) -> tf.Tensor:
        """δ = g(z) for given z (``(batch, H + 2m, W + 2m, C)``); ``params`` = ``[k1, b1, k2, b2,
        …]`` evaluates another generator of the same architecture (a replay snapshot)."""
        if params is None:
            params = [p for pair in zip(self.kernels, self.biases, strict=True) for p in pair]
        h = z
        for i in range(self.depth):
            k, b = params[2 * i], params[2 * i + 1]
            h = tf.nn.conv2d(h, tf.cast(k, h.dtype), strides=1, padding="VALID") + b
            if i < self.depth - 1:
                h = tf.nn.relu(h)
        m = self.margin
        residual = z[:, m : tf.shape(z)[1] - m, m : tf.shape(z)[2] - m, :] if m else z
        return h + residual

    def call(self, images, params=None):
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4 or (images.shape[-1] not in (None, self.channels)):
            raise ValueError(
                f"NoiseGenerator({self.channels} channels) needs images of shape (batch, H, W, "
                f"{self.channels}); got {tuple(images.shape)}"
            )
        z = tf.cast(self.sample_z(tf.shape(images)), images.dtype)
        return self.transform(z, params)

    # -- snapshots --------------------------------------------------------------------------------
    @property
    def parameters(self) -> list:
        """``[kernel1, bias1, kernel2, bias2, …]``, the order :meth:`transform` takes."""
        return [p for pair in zip(self.kernels, self.biases, strict=True) for p in pair]

    @property
    def num_parameters(self) -> int:
        return int(sum(np.prod(p.shape) for p in self.parameters))

    def flat_parameters(self) -> tf.Tensor:
        """Every parameter in one vector ``(num_parameters,)`` (a replay-buffer row)."""
        return tf.concat([tf.reshape(p, [-1]) for p in self.parameters], axis=0)

    def unflatten(self, flat: tf.Tensor) -> list[tf.Tensor]:
        """The inverse of :meth:`flat_parameters`: the ``params`` list :meth:`transform` takes."""
        out, start = [], 0
        for p in self.parameters:
            size = int(np.prod(p.shape))
            out.append(tf.reshape(flat[start : start + size], p.shape))
            start += size
        return out

    def reinitialize(self) -> None:
        """Fresh N(0, 0.01²) weights and zero biases (a generator reset)."""
        for k in self.kernels:
            k.assign(self.rng.normal(k.shape, stddev=INIT_STDDEV))
        for b in self.biases:
            b.assign(tf.zeros(b.shape))

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "kernel": self.kernel,
            "width": self.width,
            "depth": self.depth,
            "seed": self.seed,
        }


# -- the ε-projection ------------------------------------------------------------------------------
def _rows(t: tf.Tensor) -> tf.Tensor:
    return tf.reshape(t, [tf.shape(t)[0], -1])


def _headroom(x, delta):
    # How far each pixel can move in δ's direction before clipping stops it; pixels with δ = 0
    # never move and get none (else they would count as reachable without moving).
    space = tf.where(delta >= 0, 1.0 - x, x)
    return tf.where(tf.equal(delta, 0), tf.zeros_like(space), space)


def reachable_norm(x: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
    """The largest ``‖clip(x + ηδ, 0, 1) − x‖₂`` over η ≥ 0, per image ``(batch,)``: every pixel
    that δ moves driven to 0 or 1."""
    x, delta = tf.convert_to_tensor(x), tf.convert_to_tensor(delta)
    return tf.norm(_rows(_headroom(x, delta)), axis=1)


def project_to_epsilon(x: tf.Tensor, delta: tf.Tensor, epsilon) -> tf.Tensor:
    """``clip(x + η δ, 0, 1)`` with η ≥ 0 chosen per image so that its ℓ₂ distance to x is ε.

    002_7240b1e8d13f6586.txt, ANT footnote 3 (the authors' ``fix_perturbation_size``). Pixel k
    stops moving once ``η² ≥ t_k = s_k² / δ_k²``, where s_k is its headroom towards 0 or 1, so

        ‖clip(x + ηδ) − x‖² = Σ_k min(η² δ_k², s_k²)

    is piecewise linear in η². With the t_k sorted, on the segment ``t_{j−1} ≤ η² ≤ t_j`` it is
    ``S_j + η² M_j`` (S_j: the squared headroom of the pixels already saturated, M_j: Σ δ_k² of
    the others); the first segment whose right end reaches ε² holds the solution
    ``η² = (ε² − S_j) / M_j``.

    Args:
        x: images in [0, 1], ``(batch, ...)``.
        delta: directions of x's shape.
        epsilon: a scalar or one value per image ``(batch,)``.

    Returns:
        Images of x's shape in [0, 1]. An ε an image cannot reach (larger than
        :func:`reachable_norm`) gives that image's largest reachable perturbation: every pixel
        δ moves is saturated. A δ of zeros leaves the image unchanged.
    """
    x = tf.convert_to_tensor(x)
    delta = tf.cast(tf.convert_to_tensor(delta), x.dtype)
    eps = tf.cast(tf.convert_to_tensor(epsilon), x.dtype)
    eps2 = tf.broadcast_to(tf.reshape(tf.square(eps), [-1]), [tf.shape(x)[0]])[:, None]
    d2 = _rows(tf.square(delta))
    s2 = _rows(tf.square(_headroom(x, delta)))
    # Saturation thresholds t_k; pixels with δ_k = 0 have s_k = 0 and sort first, contributing
    # nothing to either sum.
    t = tf.math.divide_no_nan(s2, d2)
    order = tf.argsort(t, axis=1, stable=True)
    t_sorted = tf.gather(t, order, batch_dims=1)
    d2_sorted = tf.gather(d2, order, batch_dims=1)
    s2_sorted = tf.gather(s2, order, batch_dims=1)
    saturated = tf.cumsum(s2_sorted, axis=1, exclusive=True)  # S_j
    moving = tf.cumsum(d2_sorted, axis=1, reverse=True)  # M_j
    at_right_end = saturated + t_sorted * moving  # ‖·‖² at η² = t_j
    reached = at_right_end >= eps2
    j = tf.argmax(tf.cast(reached, tf.int32), axis=1, output_type=tf.int32)
    s_j = tf.gather(saturated, j, batch_dims=1)
    m_j = tf.gather(moving, j, batch_dims=1)
    eta2 = tf.math.divide_no_nan(eps2[:, 0] - s_j, m_j)
    eta2 = tf.where(tf.reduce_any(reached, axis=1), eta2, t_sorted[:, -1])
    eta = tf.sqrt(tf.maximum(eta2, 0.0))
    eta = tf.reshape(eta, tf.concat([[-1], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0))
    return tf.clip_by_value(x + eta * delta, 0.0, 1.0)


# -- Gaussian and speckle noise ---------------------------------------------------------------------
def per_image_scale(values, batch: tf.Tensor, rng: tf.random.Generator | None = None) -> tf.Tensor:
    """One value per image ``(batch,)``: ``values`` if a scalar, else drawn uniformly from it (σ
    "sampled per image from a set", GNT_mult)."""
    v = tf.reshape(tf.constant(values, tf.float32), [-1])
    if v.shape[0] == 1:
        return tf.fill([batch], v[0])
    if rng is None:
        idx = tf.random.uniform([batch], 0, v.shape[0], dtype=tf.int32)
    else:
        idx = rng.uniform([batch], 0, v.shape[0], dtype=tf.int32)
    return tf.gather(v, idx)


def _z(shape, dtype, rng):
    return tf.cast(rng.normal(shape) if rng is not None else tf.random.normal(shape), dtype)


def gaussian_noise_images(x, sigma, rng: tf.random.Generator | None = None) -> tf.Tensor:
    """``clip(x + σ z, 0, 1)``, z ~ N(0, I); σ a scalar or ``(batch,)`` (Eq. 1 of the paper)."""
    x = tf.convert_to_tensor(x)
    s = tf.reshape(tf.cast(sigma, x.dtype), [-1] + [1] * (x.shape.rank - 1))
    return tf.clip_by_value(x + s * _z(tf.shape(x), x.dtype, rng), 0.0, 1.0)


def speckle_noise_images(x, c, rng: tf.random.Generator | None = None) -> tf.Tensor:
    """``clip(x + x·c·z, 0, 1)``: multiplicative noise, ImageNet-C's held-out speckle
    corruption (the paper's Speckle baseline, c ∈ {0.15, 0.2, 0.35, 0.45, 0.6})."""
    x = tf.convert_to_tensor(x)
    s = tf.reshape(tf.cast(c, x.dtype), [-1] + [1] * (x.shape.rank - 1))
    return tf.clip_by_value(x + x * s * _z(tf.shape(x), x.dtype, rng), 0.0, 1.0)
