"""Invertible blocks: Keras layers with a forward map, its inverse and its log-determinant.

Every block is an :class:`InvertibleLayer`:

- ``layer(x, training=...)`` is the forward map y = f(x);
- ``layer.inverse(y, training=...)`` is x = f⁻¹(y);
- ``layer.log_det_jacobian(x, training=...)`` is log|det ∂f/∂x| per example, shape ``(batch,)``
  (zero for the volume-preserving blocks);
- ``layer.forward_and_log_det(x, training=...)`` gives both at the cost of one forward pass.

Blocks act on one tensor whose last axis is channels (NHWC images, or ``(batch, features)``). A
coupling splits the channels into halves ``x1 = x[..., :c1]`` and ``x2 = x[..., c1:]`` with
``c1 = C // 2``. :class:`InvertibleSequential` chains blocks and inverts them in reverse order;
with ``reversible=True`` its training gradient recomputes each block's input from its output
through the inverse instead of keeping activations (memory that does not grow with depth).

**BatchNorm inside a coupling's network must run in the same mode in the forward and the
inverse** (shared/digests/invertible_inn_ae_firevnet.md §4.4): both default to inference mode,
and a training-mode forward followed by a training-mode inverse on the same batch is also exact.

Where TFP has the bijector the block wraps it: ActNorm is ``tfb.Shift`` then ``tfb.Scale``, the
1×1 convolution ``tfb.ScaleMatvecLU`` and the DCT readout ``tfb.DiscreteCosineTransform``.
Keras owns the variables; the bijectors are rebuilt from them on every call (they are cheap
views), as ``tfp.layers`` cannot be used with Keras 3 (shared/ARCHITECTURE.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

__all__ = [
    "InvertibleLayer",
    "InvertibleSequential",
    "InvertibleDownsampling",
    "HaarDownsampling",
    "InjectivePad",
    "ActNorm",
    "Invertible1x1Conv",
    "AdditiveCoupling",
    "AffineCoupling",
    "TwoSidedAffineCoupling",
    "Concatenated",
    "HaarUpsampling",
    "FlattenNCHW",
    "UnflattenNCHW",
    "IRevNetBlock",
    "DCTReadout",
    "conv_network",
    "dense_network",
    "soft_clamp",
]


def soft_clamp(s: tf.Tensor, clamp: float) -> tf.Tensor:
    """``clamp · (2/π) · atan(s / clamp)``: the log-scale bounded to ±clamp (FrEIA's "ATAN")."""
    return clamp * (2.0 / math.pi) * tf.atan(s / clamp)


def _positions(x: tf.Tensor) -> tf.Tensor:
    """The number of positions a per-channel parameter is applied at (H·W for NHWC, 1 for FC)."""
    shape = tf.shape(x)
    return tf.cast(tf.reduce_prod(shape[1:-1]), x.dtype)


def _zeros_per_example(x: tf.Tensor) -> tf.Tensor:
    return tf.zeros(tf.shape(x)[:1], x.dtype)


def _sum_per_example(t: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.reshape(t, (tf.shape(t)[0], -1)), axis=-1)


class InvertibleLayer(keras.layers.Layer):
    """Base class. Subclasses implement ``_forward(x, training) -> (y, log_det)`` and
    ``_inverse(y, training) -> x``; ``volume_preserving`` blocks may return a zero log-det."""

    volume_preserving = False

    def call(self, x, training=False):
        return self._forward(x, training)[0]

    def forward_and_log_det(self, x, training=False):
        """``(f(x), log|det J_f(x)|)`` with the log-det per example, shape ``(batch,)``."""
        if not self.built:
            self(x, training=training)  # builds, creating the variables
        return self._forward(tf.convert_to_tensor(x, self.compute_dtype), training)

    def log_det_jacobian(self, x, training=False):
        """log|det ∂f/∂x| per example, shape ``(batch,)``."""
        return self.forward_and_log_det(x, training)[1]

    def inverse(self, y, training=False):
        """f⁻¹(y). The layer must have been built (called forward once, or ``build``)."""
        if not self.built:
            raise RuntimeError(
                f"{self.name}: call the layer forward once (or build it) before inverting it; "
                f"its variables do not exist yet"
            )
        return self._inverse(tf.convert_to_tensor(y, self.compute_dtype), training)

    def _forward(self, x, training):  # pragma: no cover - abstract
        raise NotImplementedError

    def _inverse(self, y, training):  # pragma: no cover - abstract
        raise NotImplementedError


# -- shape-only blocks --------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class InvertibleDownsampling(InvertibleLayer):
    """Space-to-depth ("psi" in i-RevNet, "squeeze" in Glow): H×W×C → H/b×W/b×b²C.

    ``tf.nn.space_to_depth`` orders the new channels (dy, dx, c) with c fastest, which is exactly
    i-RevNet's psi (digest §2.2), so its checkpoints port without a permutation. A permutation:
    log-det 0.
    """

    volume_preserving = True

    def __init__(self, block_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)

    def _forward(self, x, training):
        return tf.nn.space_to_depth(x, self.block_size), _zeros_per_example(x)

    def _inverse(self, y, training):
        return tf.nn.depth_to_space(y, self.block_size)

    def compute_output_shape(self, shape):
        b = self.block_size
        return (shape[0], *(None if d is None else d // b for d in shape[1:3]), shape[3] * b * b)

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


_HAAR = 0.5 * np.array(
    [[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=np.float64
)  # rows: LL, horizontal detail, vertical detail, diagonal; orthonormal and symmetric


@keras.saving.register_keras_serializable(package="zoo")
class HaarDownsampling(InvertibleLayer):
    """Orthonormal 2×2 Haar transform per channel: H×W×C → H/2×W/2×4C.

    The output is channel-major: channel c's four coefficients [LL, D1, D2, D3] sit at
    ``4c … 4c+3`` (FrEIA's ``HaarDownsampling`` order, used by the INN autoencoders). Orthonormal:
    log-det 0.
    """

    volume_preserving = True

    def _mix(self, x, transpose_out: bool):
        h = tf.constant(_HAAR, x.dtype)
        return tf.einsum("ij,...jc->...ci" if transpose_out else "ij,...cj->...ic", h, x)

    def _forward(self, x, training):
        s = tf.shape(x)
        c = x.shape[-1]
        blocks = tf.reshape(tf.nn.space_to_depth(x, 2), (s[0], s[1] // 2, s[2] // 2, 4, c))
        y = self._mix(blocks, transpose_out=True)  # (..., c, 4)
        return tf.reshape(y, (s[0], s[1] // 2, s[2] // 2, 4 * c)), _zeros_per_example(x)

    def _inverse(self, y, training):
        s = tf.shape(y)
        c = y.shape[-1] // 4
        coeffs = tf.reshape(y, (s[0], s[1], s[2], c, 4))
        x = self._mix(coeffs, transpose_out=False)  # (..., 4, c): H is its own inverse
        return tf.nn.depth_to_space(tf.reshape(x, (s[0], s[1], s[2], 4 * c)), 2)


@keras.saving.register_keras_serializable(package="zoo")
class HaarUpsampling(HaarDownsampling):
    """The inverse Haar transform as a forward block (FrEIA's ``haar_restore_layer``):
    H×W×4C → 2H×2W×C, the exact inverse of :class:`HaarDownsampling`."""

    def _forward(self, x, training):
        return HaarDownsampling._inverse(self, x, training), _zeros_per_example(x)

    def _inverse(self, y, training):
        return HaarDownsampling._forward(self, y, training)[0]


@keras.saving.register_keras_serializable(package="zoo")
class FlattenNCHW(InvertibleLayer):
    """``(B, H, W, C) → (B, C·H·W)`` in PyTorch's NCHW order (channel-major), and back.

    Reference flows written in PyTorch flatten channel-major, and what a coupling on the flat
    vector conditions on, or which coordinates a bottleneck keeps, depends on that order."""

    volume_preserving = True

    def build(self, input_shape):
        if len(input_shape) != 4 or any(d is None for d in input_shape[1:]):
            raise ValueError(f"{self.name}: needs a fully known (H, W, C) shape, got {input_shape}")
        self.image_shape = tuple(int(d) for d in input_shape[1:])

    def _forward(self, x, training):
        flat = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), (tf.shape(x)[0], -1))
        return flat, _zeros_per_example(x)

    def _inverse(self, y, training):
        h, w, c = self.image_shape
        return tf.transpose(tf.reshape(y, (tf.shape(y)[0], c, h, w)), [0, 2, 3, 1])

    def compute_output_shape(self, shape):
        return (shape[0], int(np.prod(shape[1:])))


@keras.saving.register_keras_serializable(package="zoo")
class UnflattenNCHW(FlattenNCHW):
    """``(B, C·H·W) → (B, H, W, C)`` from NCHW order: the inverse of :class:`FlattenNCHW`."""

    def __init__(self, image_shape: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)

    def build(self, input_shape):
        if int(input_shape[-1]) != int(np.prod(self.image_shape)):
            raise ValueError(
                f"{self.name}: {input_shape[-1]} features do not fill an image of shape "
                f"{self.image_shape}"
            )

    def _forward(self, x, training):
        return FlattenNCHW._inverse(self, x, training), _zeros_per_example(x)

    def _inverse(self, y, training):
        return FlattenNCHW._forward(self, y, training)[0]

    def compute_output_shape(self, shape):
        return (shape[0], *self.image_shape)

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self.image_shape)}


@keras.saving.register_keras_serializable(package="zoo")
class InjectivePad(InvertibleLayer):
    """Append ``pad`` zero channels; the inverse keeps the first C − pad channels.

    i-RevNet's injective padding. The reference code's inverse kept the first ``pad`` channels
    (``[:pad]``), a bug fixed upstream (digest §2.2); this one slices ``[:C - pad]``. An isometric
    embedding, so its log-volume change is 0.
    """

    volume_preserving = True

    def __init__(self, pad: int, **kwargs):
        super().__init__(**kwargs)
        if int(pad) < 0:
            raise ValueError(f"pad must be ≥ 0, got {pad}")
        self.pad = int(pad)

    def _forward(self, x, training):
        zeros = tf.zeros(tf.concat([tf.shape(x)[:-1], [self.pad]], 0), x.dtype)
        return tf.concat([x, zeros], axis=-1), _zeros_per_example(x)

    def _inverse(self, y, training):
        return y[..., : y.shape[-1] - self.pad]

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


@keras.saving.register_keras_serializable(package="zoo")
class DCTReadout(InvertibleLayer):
    """Per-channel orthonormal 2-D DCT-II over H and W (NHWC → NHWC).

    The DC coefficient of each channel is √(H·W) × its mean: "an invertible global average
    pooling" (digest §2.3). Flattened in NHWC order, the DC coefficients of channels 0…C−1 are
    the first C entries, which is how the fiRevNets read their logits. Orthonormal: log-det 0.
    Wraps ``tfb.DiscreteCosineTransform`` (1-D, last axis), applied along W, then along H.
    """

    volume_preserving = True

    def _bijector(self):
        return tfb.DiscreteCosineTransform(dct_type=2)

    def _along(self, fn, x):
        # NHWC → NCHW: W last for the first pass, then swap H and W for the second.
        t = fn(tf.transpose(x, (0, 3, 1, 2)))
        t = fn(tf.transpose(t, (0, 1, 3, 2)))  # (N, C, W, H)
        return tf.transpose(t, (0, 3, 2, 1))

    def _forward(self, x, training):
        return self._along(self._bijector().forward, x), _zeros_per_example(x)

    def _inverse(self, y, training):
        return self._along(self._bijector().inverse, y)


# -- ActNorm and the invertible 1×1 convolution ------------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class ActNorm(InvertibleLayer):
    """Per-channel affine ``y = (x + loc) · exp(log_scale)`` (Glow), with data-dependent init.

    The first training-mode call sets ``loc`` and ``log_scale`` so that that batch comes out with
    zero mean and unit variance per channel, and records it in ``initialized`` (saved with the
    weights, so a loaded model is never re-initialised). Inference before any training uses the
    identity. Under tf.distribute the variables are ``only_first_replica``: the first replica's
    batch initialises every copy. log-det = positions · Σ log_scale.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        c = input_shape[-1]
        agg = "only_first_replica"
        self.loc = self.add_weight(shape=(c,), initializer="zeros", name="loc", aggregation=agg)
        self.log_scale = self.add_weight(
            shape=(c,), initializer="zeros", name="log_scale", aggregation=agg
        )
        self.initialized = self.add_weight(
            shape=(), initializer="zeros", name="initialized", trainable=False, aggregation=agg
        )

    def _bijector(self, loc, log_scale):
        return tfb.Chain([tfb.Scale(log_scale=log_scale), tfb.Shift(loc)])

    def _params(self, x, training):
        loc, log_scale = self.loc.value, self.log_scale.value
        if not training:
            return loc, log_scale
        # Data-dependent init without control flow (a tf.cond around the assignments cannot
        # synchronise them across replicas): every training call writes back
        # keep·current + (1 − keep)·fresh, with keep = 1 once initialised.
        axes = list(range(len(x.shape) - 1))
        mean, var = tf.nn.moments(tf.stop_gradient(x), axes)
        fresh_loc = tf.cast(-mean, loc.dtype)
        fresh_log_scale = tf.cast(-0.5 * tf.math.log(var + self.epsilon), loc.dtype)
        keep = tf.cast(self.initialized.value > 0, loc.dtype)
        new_loc = keep * loc + (1.0 - keep) * fresh_loc
        new_log_scale = keep * log_scale + (1.0 - keep) * fresh_log_scale
        with tf.control_dependencies(
            [
                self.loc.assign(new_loc),
                self.log_scale.assign(new_log_scale),
                self.initialized.assign(tf.ones_like(self.initialized)),
            ]
        ):
            # Gradients reach the variables through `keep · current` (keep is 1 after the first
            # step, so they are exact from then on).
            return tf.identity(new_loc), tf.identity(new_log_scale)

    def _forward(self, x, training):
        loc, log_scale = self._params(x, training)
        y = self._bijector(loc, log_scale).forward(x)
        log_det = _positions(x) * tf.reduce_sum(log_scale)
        return y, tf.fill(tf.shape(x)[:1], log_det)

    def _inverse(self, y, training):
        return self._bijector(self.loc.value, self.log_scale.value).inverse(y)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="zoo")
class Invertible1x1Conv(InvertibleLayer):
    """Invertible 1×1 convolution (Glow) in LU form: ``y = W x`` per position, W = P·L·U.

    Wraps ``tfb.ScaleMatvecLU``: ``lower_upper`` (trainable) packs L's strict lower triangle (unit
    diagonal implied) and U; the permutation P is fixed. Initialised from the LU decomposition of
    a random orthogonal matrix. log-det = positions · Σ log|diag U|. Also an invertible linear
    layer on ``(batch, features)``.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed

    def build(self, input_shape):
        c = int(input_shape[-1])
        rng = np.random.default_rng(self.seed)
        q, _ = np.linalg.qr(rng.standard_normal((c, c)))
        lu, perm = tf.linalg.lu(tf.constant(q, tf.float64))
        self.lower_upper = self.add_weight(
            shape=(c, c),
            initializer=keras.initializers.Constant(lu.numpy()),
            name="lower_upper",
        )
        self.permutation = self.add_weight(
            shape=(c,),
            initializer=keras.initializers.Constant(perm.numpy()),
            dtype="int32",
            trainable=False,
            name="permutation",
        )

    def _bijector(self):
        return tfb.ScaleMatvecLU(self.lower_upper.value, self.permutation.value)

    def _forward(self, x, training):
        y = self._bijector().forward(x)
        diag = tf.linalg.diag_part(self.lower_upper.value)
        log_det = _positions(x) * tf.reduce_sum(tf.math.log(tf.abs(diag)))
        return y, tf.fill(tf.shape(x)[:1], log_det)

    def _inverse(self, y, training):
        return self._bijector().inverse(y)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


# -- couplings ---------------------------------------------------------------------------------
def conv_network(
    hidden: int,
    out_channels: int,
    depth: int = 3,
    kernel_size: int = 3,
    batchnorm: bool = True,
    batchnorm_momentum: float = 0.9,
    name: str | None = None,
    activation: str | keras.layers.Layer = "relu",
    last_kernel_size: int | None = None,
    initializer: str | keras.initializers.Initializer = "glorot_uniform",
) -> keras.Sequential:
    """A coupling network: (conv k×k → [BN] → activation) × (depth − 1) → conv, zero-initialised
    last layer (the coupling starts as the identity).

    BatchNorm momentum 0.9 is PyTorch's default (0.1 there), as in the reference flows. Keras'
    0.99 lets the moving statistics lag the weights: a briefly trained flow then classifies well
    with batch statistics and badly in inference mode (83 % vs 99 % for a small iCE fiRevNet).

    ``activation`` (a name, or a layer factory such as ``lambda: LeakyReLU(0.1)``),
    ``last_kernel_size`` (default ``kernel_size``) and ``initializer`` (kernels, and biases when
    it is not the Glorot default) describe other flows' subnets, e.g. FrEIA's ``F_conv``."""
    layers = []
    bias_init = "zeros" if initializer == "glorot_uniform" else initializer
    for _ in range(depth - 1):
        layers.append(
            keras.layers.Conv2D(
                hidden, kernel_size, padding="same", use_bias=not batchnorm,
                kernel_initializer=initializer, bias_initializer=bias_init,
            )
        )  # fmt: skip
        if batchnorm:
            layers.append(keras.layers.BatchNormalization(momentum=batchnorm_momentum))
        layers.append(_activation_layer(activation))
    layers.append(
        keras.layers.Conv2D(
            out_channels, last_kernel_size or kernel_size, padding="same",
            kernel_initializer="zeros",
        )
    )  # fmt: skip
    return keras.Sequential(layers, name=name)


def _activation_layer(activation):
    if activation == "relu":
        return keras.layers.ReLU()
    if callable(activation) and not isinstance(activation, str):
        return activation()
    return keras.layers.Activation(activation)


def dense_network(
    hidden: int,
    out_features: int,
    depth: int = 3,
    name: str | None = None,
    initializer: str | keras.initializers.Initializer = "glorot_uniform",
) -> keras.Sequential:
    """A fully connected coupling network: (Dense → ReLU) × (depth − 1) → Dense, zero-initialised
    last layer. ``initializer`` as in :func:`conv_network`."""
    bias_init = "zeros" if initializer == "glorot_uniform" else initializer
    layers = [
        keras.layers.Dense(
            hidden, activation="relu", kernel_initializer=initializer, bias_initializer=bias_init
        )
        for _ in range(depth - 1)
    ]
    layers.append(keras.layers.Dense(out_features, kernel_initializer="zeros"))
    return keras.Sequential(layers, name=name)


@keras.saving.register_keras_serializable(package="zoo")
class Concatenated(keras.layers.Layer):
    """Runs each network on the same input and concatenates their outputs on the last axis: a
    coupling network made of separate scale and shift subnets (FrEIA's ``rev_multiplicative``
    layer has one per coefficient)."""

    def __init__(self, networks: Sequence[keras.layers.Layer], **kwargs):
        super().__init__(**kwargs)
        self.networks = list(networks)

    def build(self, input_shape):
        for net in self.networks:
            net.build(input_shape)

    def call(self, x, training=False):
        return tf.concat([net(x, training=training) for net in self.networks], axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "networks": [keras.saving.serialize_keras_object(n) for n in self.networks],
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["networks"] = [keras.saving.deserialize_keras_object(n) for n in config["networks"]]
        return cls(**config)


def _first_half(layer, input_shape) -> int:
    """The size of a coupling's first half, ``C // 2``; a coupling needs two channels."""
    c = int(input_shape[-1])
    if c < 2:
        raise ValueError(f"{layer.name}: a coupling needs at least 2 channels, got {c}")
    return c // 2


def _halves(h):
    """A coupling network's output split into (raw log-scale, shift) on the last axis."""
    half = h.shape[-1] // 2
    return h[..., :half], h[..., half:]


class _Coupling(InvertibleLayer):
    """Split channels into (x1, x2); transform x2 conditioned on x1; output (x1, y2), or with
    ``swap`` the RevNet order (y2, x1) so the next block transforms the other half."""

    def __init__(self, network: keras.layers.Layer, swap: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.swap = bool(swap)

    def build(self, input_shape):
        self.c1 = _first_half(self, input_shape)
        self.network.build((*input_shape[:-1], self.c1))

    def _split(self, x):
        return x[..., : self.c1], x[..., self.c1 :]

    def _forward(self, x, training):
        x1, x2 = self._split(x)
        y2, log_det = self._couple(x1, x2, training)
        return tf.concat([y2, x1] if self.swap else [x1, y2], -1), log_det

    def _inverse(self, y, training):
        if self.swap:
            c2 = y.shape[-1] - self.c1
            y2, x1 = y[..., :c2], y[..., c2:]
        else:
            x1, y2 = self._split(y)
        return tf.concat([x1, self._uncouple(x1, y2, training)], -1)

    def get_config(self):
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "swap": self.swap,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)


def coupling_branches(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The coupling branches inside ``layer``: each coupling's network (``t(x1)``,
    ``(h, t)(x1)``) and each i-RevNet bottleneck. They are the parts of an invertible model
    that may compute in a mixed precision: a branch is a function of the half the coupling
    leaves unchanged, so the inverse recomputes the same value from the same input."""
    out = []
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(sub, _Coupling):
            out.append(sub.network)
        elif isinstance(sub, TwoSidedAffineCoupling):
            out += [sub.network1, sub.network2]
        elif isinstance(sub, IRevNetBlock):
            out.append(sub.bottleneck)
    return out


@keras.saving.register_keras_serializable(package="zoo")
class AdditiveCoupling(_Coupling):
    """``y2 = x2 + t(x1)`` (NICE / RevNet). ``network`` maps x1 to x2's shape. log-det 0."""

    volume_preserving = True

    def _couple(self, x1, x2, training):
        return x2 + self.network(x1, training=training), _zeros_per_example(x1)

    def _uncouple(self, x1, y2, training):
        return y2 - self.network(x1, training=training)


@keras.saving.register_keras_serializable(package="zoo")
class AffineCoupling(_Coupling):
    """``y2 = x2 · scale(h) + t`` with ``(h, t) = network(x1)`` split on the last axis.

    ``scale="sigmoid"``: Glow's ``sigmoid(h + 2)`` (in (0, 1), identity-like at h = 0 only up to
    the factor 0.88); ``scale="atan"``: ``exp(soft_clamp(h, clamp))`` (FrEIA's ATAN clamp, exactly
    the identity at h = 0). Both keep the inverse's ``1/scale`` bounded. log-det = Σ log scale.
    """

    def __init__(self, network, swap=False, scale: str = "atan", clamp: float = 1.0, **kwargs):
        super().__init__(network, swap=swap, **kwargs)
        if scale not in ("sigmoid", "atan"):
            raise ValueError(f"scale must be 'sigmoid' or 'atan', got {scale!r}")
        self.scale, self.clamp = scale, float(clamp)

    def _log_scale_shift(self, x1, training):
        raw, shift = _halves(self.network(x1, training=training))
        if self.scale == "sigmoid":
            return tf.math.log_sigmoid(raw + 2.0), shift
        return soft_clamp(raw, self.clamp), shift

    def _couple(self, x1, x2, training):
        log_s, t = self._log_scale_shift(x1, training)
        return x2 * tf.exp(log_s) + t, _sum_per_example(log_s)

    def _uncouple(self, x1, y2, training):
        log_s, t = self._log_scale_shift(x1, training)
        return (y2 - t) * tf.exp(-log_s)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "clamp": self.clamp}


@keras.saving.register_keras_serializable(package="zoo")
class TwoSidedAffineCoupling(InvertibleLayer):
    """Both halves transformed (Ardizzone et al. 2018; FrEIA's ``glow_coupling_layer``; the INN
    autoencoder's coupling, 003_2c9ba5de01816b66.txt eqs. 1–4)::

        y1 = x1 · exp(s2(x2)) + t2(x2)        x2 = (y2 − t1(y1)) · exp(−s1(y1))
        y2 = x2 · exp(s1(y1)) + t1(y1)        x1 = (y1 − t2(x2)) · exp(−s2(x2))

    ``network2`` maps x2 to ``[s2, t2]`` (twice x1's channels) and ``network1`` maps y1 to
    ``[s1, t1]``. The log-scales go through the soft clamp ``clamp·(2/π)·atan(s/clamp)``. The
    split is fixed: x1 is the first ``C // 2`` channels. log-det = Σ s1 + Σ s2.
    """

    def __init__(self, network1, network2, clamp: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.network1, self.network2 = network1, network2
        self.clamp = float(clamp)

    def build(self, input_shape):
        self.c1 = _first_half(self, input_shape)
        self.network2.build((*input_shape[:-1], int(input_shape[-1]) - self.c1))
        self.network1.build((*input_shape[:-1], self.c1))

    def _coefficients(self, network, x, training):
        raw, shift = _halves(network(x, training=training))
        return soft_clamp(raw, self.clamp), shift

    def _forward(self, x, training):
        x1, x2 = x[..., : self.c1], x[..., self.c1 :]
        s2, t2 = self._coefficients(self.network2, x2, training)
        y1 = x1 * tf.exp(s2) + t2
        s1, t1 = self._coefficients(self.network1, y1, training)
        y2 = x2 * tf.exp(s1) + t1
        return tf.concat([y1, y2], -1), _sum_per_example(s1) + _sum_per_example(s2)

    def _inverse(self, y, training):
        y1, y2 = y[..., : self.c1], y[..., self.c1 :]
        s1, t1 = self._coefficients(self.network1, y1, training)
        x2 = (y2 - t1) * tf.exp(-s1)
        s2, t2 = self._coefficients(self.network2, x2, training)
        x1 = (y1 - t2) * tf.exp(-s2)
        return tf.concat([x1, x2], -1)

    def get_config(self):
        return {
            **super().get_config(),
            "network1": keras.saving.serialize_keras_object(self.network1),
            "network2": keras.saving.serialize_keras_object(self.network2),
            "clamp": self.clamp,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("network1", "network2"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


@keras.saving.register_keras_serializable(package="zoo")
class IRevNetBlock(InvertibleLayer):
    """The i-RevNet bottleneck block (Jacobsen et al. 2018; digest §2.2), on ``[x1, x2]``.

    Forward: ``F`` runs on the full-resolution x2 (its first convolution has the block's stride);
    if ``stride == 2`` both halves are then squeezed with psi (space-to-depth); ``y1 = x1 + F(x2)``
    (additive) or ``y1 = x1 · σ(h + 2) + t`` with ``(h, t) = F(x2)`` (affine, fiRevNet48's last
    stage); the output is ``[x2, y1]``: the halves swap roles every block. The inverse unsqueezes
    x2 before recomputing F.

    ``F`` = [BN → ReLU] (omitted in the very first block) → conv3×3(C/2 → out/mult, stride) → BN →
    ReLU → conv3×3 → [Dropout] → BN → ReLU → conv3×3(→ out, or 2·out for affine). No biases,
    affine BatchNorm. ``out_channels`` is the width of one half after the block and must equal
    ``C/2 · stride²``: the bijective i-RevNet; pad with :class:`InjectivePad` first for an
    injective one. Dropout (off by default) draws a new mask when the inverse recomputes F, so the
    inverse is exact only with ``dropout=0``.
    """

    def __init__(
        self,
        out_channels: int,
        stride: int = 1,
        first: bool = False,
        mult: int = 4,
        coupling: str = "additive",
        dropout: float = 0.0,
        batchnorm_momentum: float = 0.9,
        batchnorm_epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if coupling not in ("additive", "affine"):
            raise ValueError(f"coupling must be 'additive' or 'affine', got {coupling!r}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.out_channels, self.stride, self.first = int(out_channels), int(stride), bool(first)
        self.mult, self.coupling, self.dropout = int(mult), coupling, float(dropout)
        self.batchnorm_momentum, self.batchnorm_epsilon = batchnorm_momentum, batchnorm_epsilon
        self.volume_preserving = coupling == "additive"

    def build(self, input_shape):
        c = int(input_shape[-1])
        half = c // 2
        if c % 2 or half * self.stride**2 != self.out_channels:
            raise ValueError(
                f"{self.name}: a bijective i-RevNet block maps halves of C/2 channels to "
                f"C/2·stride² = out_channels; got C={c}, stride={self.stride}, "
                f"out_channels={self.out_channels}"
            )
        width = self.out_channels // self.mult
        if width < 1:
            raise ValueError(
                f"{self.name}: the bottleneck width out_channels // mult = "
                f"{self.out_channels} // {self.mult} is 0; lower mult"
            )
        bn = dict(momentum=self.batchnorm_momentum, epsilon=self.batchnorm_epsilon)
        conv = dict(kernel_size=3, padding="same", use_bias=False)
        layers = []
        if not self.first:
            layers += [keras.layers.BatchNormalization(**bn), keras.layers.ReLU()]
        out = self.out_channels * (2 if self.coupling == "affine" else 1)
        if self.stride > 1:
            # PyTorch's Conv2d(padding=1), as the authors' i-RevNet: one pixel on every side.
            # Keras' "same" pads (0, 1) at stride 2 on an even size, which samples the grid one
            # pixel off (outputs read rows 2i..2i+2, not 2i-1..2i+1).
            layers += [
                keras.layers.ZeroPadding2D(1),
                keras.layers.Conv2D(width, strides=self.stride, **{**conv, "padding": "valid"}),
            ]
        else:
            layers.append(keras.layers.Conv2D(width, **conv))
        layers += [
            keras.layers.BatchNormalization(**bn),
            keras.layers.ReLU(),
            keras.layers.Conv2D(width, **conv),
        ]
        if self.dropout:
            layers.append(keras.layers.Dropout(self.dropout))
        layers += [
            keras.layers.BatchNormalization(**bn),
            keras.layers.ReLU(),
            keras.layers.Conv2D(
                out,
                **conv,
                kernel_initializer="zeros" if self.coupling == "affine" else "glorot_uniform",
            ),
        ]
        self.bottleneck = keras.Sequential(layers, name="bottleneck")
        self.bottleneck.build((*input_shape[:-1], half))
        self.half = half

    def _squeeze(self, t):
        return tf.nn.space_to_depth(t, 2) if self.stride == 2 else t

    def _unsqueeze(self, t):
        return tf.nn.depth_to_space(t, 2) if self.stride == 2 else t

    def _branch(self, x2, training):
        f = self.bottleneck(x2, training=training)
        if self.coupling == "additive":
            return None, f
        h, t = f[..., : self.out_channels], f[..., self.out_channels :]
        return tf.math.log_sigmoid(h + 2.0), t

    def _forward(self, x, training):
        x1, x2 = x[..., : self.half], x[..., self.half :]
        log_s, t = self._branch(x2, training)
        x1, x2s = self._squeeze(x1), self._squeeze(x2)
        if log_s is None:
            return tf.concat([x2s, x1 + t], -1), _zeros_per_example(x)
        y1 = x1 * tf.exp(log_s) + t
        return tf.concat([x2s, y1], -1), _sum_per_example(log_s)

    def _inverse(self, y, training):
        x2s, y1 = y[..., : self.out_channels], y[..., self.out_channels :]
        x2 = self._unsqueeze(x2s)
        log_s, t = self._branch(x2, training)
        x1 = y1 - t if log_s is None else (y1 - t) * tf.exp(-log_s)
        return tf.concat([self._unsqueeze(x1), x2], -1)

    def get_config(self):
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "stride": self.stride,
            "first": self.first,
            "mult": self.mult,
            "coupling": self.coupling,
            "dropout": self.dropout,
            "batchnorm_momentum": self.batchnorm_momentum,
            "batchnorm_epsilon": self.batchnorm_epsilon,
        }


# -- chaining and reversible backprop ----------------------------------------------------------
def _stop_recording():
    # The same context tf.recompute_grad uses: the forward pass inside the custom gradient must
    # not be recorded by an enclosing GradientTape, or the tape would keep every activation.
    from tensorflow.python.eager import record

    return record.stop_recording()


@keras.saving.register_keras_serializable(package="zoo")
class InvertibleSequential(InvertibleLayer):
    """A chain of invertible blocks; ``inverse`` runs them in reverse order, log-dets add up.

    ``reversible=True`` (the default) makes training-mode calls use reversible backprop
    (Gomez et al. 2017; the idea of memcnn / revlib): the forward pass keeps no activations, and
    the gradient walks the chain backwards, recovering each block's input from its output with
    ``inverse`` and recomputing that block alone under a ``GradientTape``. Peak activation memory
    is then that of one block, whatever the depth. BatchNorm moving statistics are restored after
    the recomputation, so they are updated exactly once per step, as in standard backprop. The
    gradients equal standard backprop's up to the round-trip error of the inverse.
    """

    def __init__(self, layers: Sequence[InvertibleLayer] = (), reversible: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.blocks = list(layers)
        self.reversible = bool(reversible)
        self.volume_preserving = all(b.volume_preserving for b in self.blocks)

    def _plain_forward(self, x, training):
        log_det = _zeros_per_example(x)
        for block in self.blocks:
            x, ld = block.forward_and_log_det(x, training=training)
            log_det = log_det + ld
        return x, log_det

    def _forward(self, x, training):
        if training and self.reversible and self._all_built():
            return self._reversible_forward(x, training)
        return self._plain_forward(x, training)

    def _inverse(self, y, training):
        for block in reversed(self.blocks):
            y = block.inverse(y, training=training)
        return y

    def _all_built(self):
        return all(b.built for b in self.blocks)

    def _reversible_forward(self, x, training):
        blocks = self.blocks

        @tf.custom_gradient
        def run(x):
            with _stop_recording():
                y, log_det = self._plain_forward(x, training)

            def grad(dy, dlog_det, variables=None):
                variables = list(variables or [])
                index = {v.ref(): i for i, v in enumerate(variables)}
                var_grads = [None] * len(variables)
                if dlog_det is None:
                    dlog_det = tf.zeros(tf.shape(y)[:1], y.dtype)
                if dy is None:
                    dy = tf.zeros_like(y)
                out = tf.stop_gradient(y)
                for block in reversed(blocks):
                    state = block.non_trainable_variables
                    saved = [tf.identity(v.value) for v in state]
                    # Depending on dy keeps the inverse chain in step with the gradient chain:
                    # otherwise the executor may run every inverse ahead of the gradients and
                    # hold all the recovered activations at once.
                    with tf.control_dependencies([*saved, dy]):
                        inp = tf.stop_gradient(block.inverse(tf.identity(out), training=training))
                    with tf.GradientTape() as tape:
                        tape.watch(inp)
                        out_re, ld = block.forward_and_log_det(inp, training=training)
                    watched = [v for v in tape.watched_variables() if v.ref() in index]
                    grads = tape.gradient(
                        [out_re, ld],
                        [inp, *watched],
                        output_gradients=[dy, dlog_det],
                        unconnected_gradients=tf.UnconnectedGradients.ZERO,
                    )
                    with tf.control_dependencies([g for g in grads if g is not None]):
                        restores = [v.assign(s) for v, s in zip(state, saved, strict=True)]
                    with tf.control_dependencies(restores):
                        dy = tf.identity(grads[0])
                    for v, g in zip(watched, grads[1:], strict=True):
                        i = index[v.ref()]
                        var_grads[i] = g if var_grads[i] is None else var_grads[i] + g
                    out = inp
                var_grads = [
                    tf.zeros_like(v) if g is None else g
                    for v, g in zip(variables, var_grads, strict=True)
                ]
                return dy, var_grads

            return (y, log_det), grad

        return run(x)

    def get_config(self):
        return {
            **super().get_config(),
            "layers": [keras.saving.serialize_keras_object(b) for b in self.blocks],
            "reversible": self.reversible,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layers"] = [keras.saving.deserialize_keras_object(b) for b in config["layers"]]
        return cls(**config)
