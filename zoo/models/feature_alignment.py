"""Feature alignment: de Souza Farias & Maziero, "Feature alignment as a generative process"
(``001_4315bda1330034cd.txt``; engineering digest ``shared/digests/feature_alignment.md``).

**One network.** There is an encoder E and no decoder: the reverse map ("feature extraction")
starts from an image-shaped ``r⁰`` and takes T steps of gradient descent on the *input* of the same
E, ``rᵗ = rᵗ⁻¹ − τ ∂ℒ/∂r`` with ``ℒ = ½‖z − E(r)‖²`` (§3.1, eqs. 1–2); the feature is
``r̂ = sigmoid(r^T)``. E is trained on ``½‖x − r̂‖²`` *through* those inner steps: the inner
``tape.gradient`` runs inside the outer training tape, so the update is a second-order ("double
backprop") gradient. With the settings of the authors' code (T = 1, τ = 1, r⁰ = 0) the reverse map
is ``r̂ = σ(J_E(0)ᵀ(z − E(0)))``: a single Dense layer gives ``σ(x W Wᵀ)`` and a convolution
``σ(conv_transpose(conv(x)))``, biases cancelling (digest §1.1; tested).

**Variants** (all one class, :class:`FeatureAlignment`):

- ``fa_*``: the plain encoder (§3.1); the latent is the linear head ``μ(x)``.
- ``vfa_*``: variational (§3.2): heads μ and log-variance, ``z_x = μ + σ·ε`` and, in the inner
  cost, ``z_r = μ(r) + σ(r)`` (ε ≡ 1, as the code does); loss ``Σ_b β_b·KL_b + ½Σ(x − r̂)²`` with
  ``β_b ~ U(0, 1)`` per example (eq. 4; eq. 3's "−β" is a typo).
- a label head C (10 outputs, MNIST and CIFAR-10) enters only the inner cost,
  ``+ ½‖onehot(y) − C(r)‖²``; there is no cross-entropy on C(x) (digest §1.3). Decoding with
  ``labels=None`` drops that term (the unconditional reverse map).
- ``fa_gan_*``: the VFA with a label-conditioned refiner G (image → image) and an LSGAN
  discriminator D (§3.3, eqs. 5–6); three optimizers in one ``train_step``.

**As the authors' code does it** (digest §2.3, §4.2): inputs clamped to [0.01, 0.99]; E's conv and
dense *kernels* (not biases, not G or D) clipped to ±√2 (eq. 7; after each update here, the code
clips before each forward: the same weights from the second step on); orthogonal kernels (gain 1)
for E, G and D with PyTorch's default bias init ``U(±1/√fan_in)``; LeakyReLU slope 0.01; PyTorch
``padding=1`` as symmetric zero padding (Keras' ``"same"`` pads stride-2 convolutions on one side
only); BatchNorm momentum 0.9 and ε 1e-5 in G; Adam lr 1e-4, β₁ 0.5, ε 1e-8; λ = 0 for the
perceptual term. Every loss of the code is a ½-sum over the batch; ``loss_reduction="sum"`` keeps
that (under tf.distribute each replica's sum is all-reduced into the global batch's sum) and
``"mean"`` divides by the batch. The inner cost is always the per-example ½-sum: its scale is the
step size τ.

**Local feature alignment** (§3.4, Algorithms 2–3): :class:`LocalFeatureAlignment`, asinh
activations, one loss per module with stop-gradient between modules, one update per batch, and a
layer-by-layer reconstruction that applies sinh after each asinh. Biases get zero gradient there
(they cancel in ``f(x) − f(0)``), as in the reference.

Images are ``(batch, H, W, C)`` float32 in [0, 1]; latents ``(batch, latent_dim)``; labels int
class ids ``(batch,)`` or label vectors ``(batch, num_classes)`` (one-hot, scaled one-hot to
emphasise a class, or mixtures).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from zoo.models.base import (
    ZooModel,
    apply_scaled_gradients,
    check_image_batch,
    scale_loss_for_replicas,
    track_batch_means,
)
from zoo.registry import InvalidConfigError, building_name, register_model, register_variant

__all__ = [
    "FeatureAlignment",
    "LocalFeatureAlignment",
    "ElementwiseClip",
    "align_features",
    "alignment_cost",
    "torch_bias_initializer",
    "conv_trunk",
    "LabelConditionedGenerator",
]

PAPER = "001_4315bda1330034cd.txt"
SQRT2 = math.sqrt(2.0)
R0_KINDS = ("zeros", "normal", "uniform")
REDUCTIONS = ("sum", "mean")
# Salts of the per-step noise streams (see FeatureAlignment._seed).
_EPS, _BETA, _PRIOR, _R0, _R0_FAKE = range(5)


# -- the reverse map ---------------------------------------------------------------------------------
def alignment_cost(targets, outputs) -> tf.Tensor:
    """The inner cost ``½ Σ (target − output)²`` summed over every entry of every tensor of the
    (matching) nests ``targets`` and ``outputs``; a scalar. A sum over the batch gives each
    example's ``r`` its own gradient, so the batch never mixes."""
    terms = [
        0.5 * tf.reduce_sum(tf.square(tf.cast(t, o.dtype) - o))
        for t, o in zip(tf.nest.flatten(targets), tf.nest.flatten(outputs), strict=True)
    ]
    return tf.add_n(terms)


def align_features(
    encoder: Callable[[tf.Tensor], Any],
    targets,
    initial: tf.Tensor,
    steps: int = 1,
    step_size: float = 1.0,
) -> tf.Tensor:
    """The reverse map before its squashing: ``r^T`` from ``r⁰ = initial``.

    001_4315bda1330034cd.txt, §3.1 eq. 2: ``rᵗ = rᵗ⁻¹ − τ ∂ℒ/∂r`` with ``ℒ = ½‖targets −
    encoder(r)‖²`` (:func:`alignment_cost`), T = ``steps`` times. Each inner gradient is taken by a
    tape nested in whatever tape is recording, so the result is differentiable in the encoder's
    variables and in ``targets`` (the second-order path training needs).

    Args:
        encoder: ``r → outputs``, a tensor or a nest matching ``targets``.
        targets: the latent (and label) values to align with.
        initial: ``r⁰``, shaped like the encoder's input.
    """
    r = tf.convert_to_tensor(initial)
    for _ in range(int(steps)):
        with tf.GradientTape() as tape:
            tape.watch(r)
            cost = alignment_cost(targets, encoder(r))
        r = r - tf.cast(step_size, r.dtype) * tape.gradient(cost, r)
    return r


# -- layers ------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class ElementwiseClip(keras.constraints.Constraint):
    """Clip every weight to ``[−limit, limit]`` (001_4315bda1330034cd.txt, eq. 7: ±√2, from the
    scalar convergence condition 0 < w² < 2 of app. A.1)."""

    def __init__(self, limit: float = SQRT2):
        self.limit = float(limit)

    def __call__(self, w):
        return keras.ops.clip(w, -self.limit, self.limit)

    def get_config(self):
        return {"limit": self.limit}


def torch_bias_initializer(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch's default bias init for Conv2d and Linear: ``U(−1/√fan_in, 1/√fan_in)``."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def _bias_init(kind: str, fan_in: int):
    return torch_bias_initializer(fan_in) if kind == "pytorch" else "zeros"


def _conv(filters, kernel_size, stride, in_channels, *, bias_init, constraint=None, name=None):
    """A convolution with PyTorch's ``padding=(k−1)/2``: symmetric zero padding, then "valid".

    For stride 1 that is Keras' "same"; for stride 2 on even sizes "same" would pad bottom/right
    only, a one-pixel shift of every feature map (digest §4.2 item 8)."""
    conv = keras.layers.Conv2D(
        filters, kernel_size, strides=stride, padding="same" if stride == 1 else "valid",
        kernel_initializer=keras.initializers.Orthogonal(gain=1.0),
        bias_initializer=_bias_init(bias_init, kernel_size * kernel_size * in_channels),
        kernel_constraint=constraint, name=name,
    )  # fmt: skip
    if stride == 1:
        return conv
    return keras.Sequential(
        [keras.layers.ZeroPadding2D((kernel_size - 1) // 2), conv], name=f"{name}_padded"
    )


def _dense(units, in_units, *, bias_init, constraint=None, name=None):
    return keras.layers.Dense(
        units, kernel_initializer=keras.initializers.Orthogonal(gain=1.0),
        bias_initializer=_bias_init(bias_init, in_units), kernel_constraint=constraint, name=name,
    )  # fmt: skip


def _activation(kind: str, slope: float, name: str):
    if kind == "asinh":
        return keras.layers.Activation(tf.math.asinh, name=name)
    return keras.layers.LeakyReLU(negative_slope=slope, name=name)


def conv_trunk(
    image_shape: Sequence[int],
    filters: Sequence[int],
    strides: Sequence[int],
    hidden_units: int,
    *,
    activation: str = "leaky_relu",
    leaky_slope: float = 0.01,
    kernel_size: int = 3,
    bias_init: str = "pytorch",
    constraint=None,
    prefix: str = "",
) -> tuple[list[keras.layers.Layer], int]:
    """The paper's trunk (Tables 2–4): ``[conv k3, act] × len(filters) → flatten → dense(hidden)
    → act``, as a list of modules (what local training walks); returns it and the flat size.

    ``activation``: ``"leaky_relu"`` (E and D) or ``"asinh"`` (the local net)."""
    h, w, c = (int(d) for d in image_shape)
    modules: list[keras.layers.Layer] = []
    for i, (f, s) in enumerate(zip(filters, strides, strict=True)):
        modules.append(
            _conv(
                f,
                kernel_size,
                s,
                c,
                bias_init=bias_init,
                constraint=constraint,
                name=f"{prefix}conv{i + 1}",
            )  # fmt: skip
        )
        modules.append(_activation(activation, leaky_slope, f"{prefix}act{i + 1}"))
        pad = (kernel_size - 1) // 2
        h, w, c = (h + 2 * pad - kernel_size) // s + 1, (w + 2 * pad - kernel_size) // s + 1, f
    flat = h * w * c
    modules.append(keras.layers.Flatten(name=f"{prefix}flatten"))
    modules.append(
        _dense(hidden_units, flat, bias_init=bias_init, constraint=constraint, name=f"{prefix}fc")
    )
    modules.append(_activation(activation, leaky_slope, f"{prefix}fc_act"))
    return modules, flat


@keras.saving.register_keras_serializable(package="zoo")
class LabelConditionedGenerator(keras.layers.Layer):
    """The refiner G of §3.3 as the authors' code builds it: the label vector goes through
    ``Dense(H·W)`` (+ LeakyReLU for CIFAR-10), is reshaped to one ``H×W`` channel and concatenated
    with the feature; then ``[conv(filters, k) → BN → LeakyReLU] × 2 → conv(C) → sigmoid``.

    ``call(features (batch, H, W, C), labels (batch, num_classes) or None, training)`` → images
    ``(batch, H, W, C)``. BatchNorm normalises with the batch's statistics when ``training``."""

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int,
        filters: int = 128,
        kernel_size: int = 3,
        label_activation: str | None = None,
        leaky_slope: float = 0.01,
        bias_init: str = "pytorch",
        batchnorm_momentum: float = 0.9,
        batchnorm_epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = int(num_classes)
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.label_activation = label_activation
        self.leaky_slope, self.bias_init = float(leaky_slope), bias_init
        self.batchnorm_momentum = float(batchnorm_momentum)
        self.batchnorm_epsilon = float(batchnorm_epsilon)
        h, w, c = self.image_shape
        self.embedding = None
        in_channels = c
        if self.num_classes:
            self.embedding = _dense(h * w, self.num_classes, bias_init=bias_init, name="label")
            in_channels += 1
        self.convs, self.norms = [], []
        for i, out in enumerate((self.filters, self.filters, c)):
            self.convs.append(_conv(out, self.kernel_size, 1, in_channels, bias_init=bias_init,
                                    name=f"conv{i + 1}"))  # fmt: skip
            in_channels = out
        for i in range(2):
            self.norms.append(
                keras.layers.BatchNormalization(
                    momentum=self.batchnorm_momentum,
                    epsilon=self.batchnorm_epsilon,
                    name=f"bn{i + 1}",
                )  # fmt: skip
            )

    def build(self, input_shape=None):
        h, w, c = self.image_shape
        shape = (None, h, w, c)
        if self.embedding is not None:
            self.embedding.build((None, self.num_classes))
            shape = (None, h, w, c + 1)
        for i, conv in enumerate(self.convs):
            conv.build(shape)
            shape = (None, h, w, conv.filters)
            if i < 2:
                self.norms[i].build(shape)
        self.built = True

    def call(self, features, labels=None, training=False):
        x = features
        if self.embedding is not None:
            e = self.embedding(labels)
            if self.label_activation == "leaky_relu":
                e = tf.nn.leaky_relu(e, self.leaky_slope)
            h, w, _ = self.image_shape
            x = tf.concat([x, tf.reshape(e, (-1, h, w, 1))], axis=-1)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < 2:
                x = tf.nn.leaky_relu(self.norms[i](x, training=training), self.leaky_slope)
        return tf.sigmoid(x)

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "label_activation": self.label_activation,
            "leaky_slope": self.leaky_slope,
            "bias_init": self.bias_init,
            "batchnorm_momentum": self.batchnorm_momentum,
            "batchnorm_epsilon": self.batchnorm_epsilon,
        }


# -- shared model plumbing ------------------------------------------------------------------------------
def _static_python(fn):
    """Keep AutoGraph out: every branch and loop here is on Python values (T, config flags), and
    converting the nested-tape code costs seconds per trace for nothing."""
    return tf.autograph.experimental.do_not_convert(fn)


def _images(data):
    return data[0] if isinstance(data, tuple | list) else data


def _labels(data):
    return data[1] if isinstance(data, tuple | list) and len(data) > 1 else None


def _replica_id() -> tf.Tensor:
    ctx = tf.distribute.get_replica_context()
    rid = ctx.replica_id_in_sync_group if ctx is not None else 0
    return tf.cast(rid, tf.int32)


def _reduce(per_example: tf.Tensor, reduction: str) -> tf.Tensor:
    """The loss a replica differentiates. ``"sum"``: Σ over the local batch (the reference's
    ½-sums); summed across replicas by the optimizer that is the global batch's sum, so the
    per-replica mean is multiplied by the *global* batch before :func:`scale_loss_for_replicas`
    divides it by the replicas. ``"mean"``: the global batch's mean."""
    mean = tf.reduce_mean(per_example)
    if reduction == "sum":
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        mean = mean * tf.cast(tf.shape(per_example)[0] * replicas, mean.dtype)
    return scale_loss_for_replicas(mean)


class _FABase(ZooModel):
    """What both model classes share: image checks, input clamp, metrics plumbing."""

    def _check_images(self, x):
        x = tf.convert_to_tensor(x)
        check_image_batch(x, self.image_shape, self.zoo_name)
        return tf.cast(x, tf.float32)

    def _clip_input(self, x):
        if self.input_clip is None:
            return x
        lo, hi = self.input_clip
        return tf.clip_by_value(x, lo, hi)

    def _check_latent(self, z, width):
        z = tf.convert_to_tensor(z, dtype_hint=tf.float32)
        if z.shape.rank is not None and (z.shape.rank != 2 or z.shape[-1] not in (None, width)):
            raise ValueError(
                f"{self.zoo_name} decodes latents of shape (batch, {width}); got shape "
                f"{tuple(z.shape)}"
            )
        if not z.dtype.is_floating:
            raise TypeError(f"{self.zoo_name}: latents must be floats, got {z.dtype.name}")
        return tf.cast(z, tf.float32)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def get_metrics_result(self):
        return self.updated_metrics_result()

    def build_for_inputs(self):
        self(tf.zeros((1, *self.image_shape)), training=False)
        return self


# -- global feature alignment ------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class FeatureAlignment(_FABase):
    """An encoder that is its own decoder through gradient steps on its input.

    ``call(images, labels=None)`` reconstructs: ``r̂(μ(x), y)`` (``G(r̂)`` for GAN models).

    Args:
        image_shape: ``(H, W, C)``.
        conv_filters, conv_strides: the trunk's 3×3 convolutions (LeakyReLU after each).
        hidden_units: the hidden FC layer after the flatten (LeakyReLU).
        latent_dim: Z, the width of μ (and of the log-variance head).
        num_classes: width of the label head C in the inner cost; 0 for none.
        variational: VFA (μ and log-variance heads, β·KL) instead of plain FA.
        steps, step_size, r0: T, τ and the start of the reverse map (``"zeros"``, or random
            ``"normal"`` / ``"uniform"`` as the paper describes).
        input_clip: ``[lo, hi]`` the inputs are clamped to, or None.
        weight_clip: the element-wise limit of E's kernels (eq. 7), or None.
        leaky_slope: LeakyReLU's negative slope. bias_init: ``"pytorch"`` or ``"zeros"``.
        kl_weight: ``"uniform"`` (β ~ U(0, 1) per example and step, §4) or a fixed β.
        loss_reduction: ``"sum"`` (the reference) or ``"mean"`` over the batch.
        label_value: the one-hot value of the label target in training.
        interpolation_steps: the side of the ``interpolate`` grid (11: α, β ∈ {0, 0.1, …, 1}).
        generator: add the refiner G and the discriminator D (§3.3); needs ``variational``.
        generator_filters, generator_kernel_size, generator_label_activation: G's shape.
        perceptual_weight: λ of eq. 5 (the code's P = 0).
        discriminator_hidden_units: D's hidden FC (D has E's trunk; default E's width).
        learning_rate, adam_beta_1, adam_beta_2, adam_epsilon: Adam for E, G and D.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        conv_filters: Sequence[int] = (32, 32, 64, 64),
        conv_strides: Sequence[int] = (1, 2, 1, 2),
        hidden_units: int = 4096,
        latent_dim: int = 128,
        num_classes: int = 10,
        variational: bool = False,
        steps: int = 1,
        step_size: float = 1.0,
        r0: str = "zeros",
        input_clip: Sequence[float] | None = (0.01, 0.99),
        weight_clip: float | None = SQRT2,
        leaky_slope: float = 0.01,
        bias_init: str = "pytorch",
        kl_weight: str | float = "uniform",
        loss_reduction: str = "sum",
        label_value: float = 1.0,
        interpolation_steps: int = 11,
        generator: bool = False,
        generator_filters: int = 128,
        generator_kernel_size: int = 3,
        generator_label_activation: str | None = None,
        perceptual_weight: float = 0.0,
        discriminator_hidden_units: int | None = None,
        learning_rate: float = 1e-4,
        adam_beta_1: float = 0.5,
        adam_beta_2: float = 0.999,
        adam_epsilon: float = 1e-8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(self.image_shape) != 3:
            raise InvalidConfigError(f"image_shape must be (H, W, C), got {image_shape}")
        self.conv_filters = [int(f) for f in conv_filters]
        self.conv_strides = [int(s) for s in conv_strides]
        if len(self.conv_filters) != len(self.conv_strides):
            raise InvalidConfigError(
                f"conv_filters and conv_strides need one entry per convolution; got "
                f"{len(self.conv_filters)} and {len(self.conv_strides)}"
            )
        self.hidden_units, self.latent_dim = int(hidden_units), int(latent_dim)
        self.num_classes = int(num_classes)
        if self.latent_dim < 1 or self.hidden_units < 1 or self.num_classes < 0:
            raise InvalidConfigError("latent_dim and hidden_units must be ≥ 1, num_classes ≥ 0")
        self.variational = bool(variational)
        self.steps, self.step_size = int(steps), float(step_size)
        if self.steps < 1:
            raise InvalidConfigError(f"steps (T) must be at least 1, got {steps}")
        if r0 not in R0_KINDS:
            raise InvalidConfigError(f"r0 must be one of {R0_KINDS}, got {r0!r}")
        self.r0 = r0
        self.input_clip = None if input_clip is None else [float(v) for v in input_clip]
        if self.input_clip is not None and (
            len(self.input_clip) != 2 or not self.input_clip[0] < self.input_clip[1]
        ):
            raise InvalidConfigError(f"input_clip must be [lo, hi] with lo < hi, got {input_clip}")
        self.weight_clip = None if not weight_clip else float(weight_clip)
        self.leaky_slope = float(leaky_slope)
        if bias_init not in ("pytorch", "zeros"):
            raise InvalidConfigError(f"bias_init must be 'pytorch' or 'zeros', got {bias_init!r}")
        self.bias_init = bias_init
        if not (kl_weight == "uniform" or isinstance(kl_weight, int | float)):
            raise InvalidConfigError(f"kl_weight must be 'uniform' or a number, got {kl_weight!r}")
        self.kl_weight = kl_weight if kl_weight == "uniform" else float(kl_weight)
        if loss_reduction not in REDUCTIONS:
            raise InvalidConfigError(
                f"loss_reduction must be one of {REDUCTIONS}, got {loss_reduction!r}"
            )
        self.loss_reduction = loss_reduction
        self.label_value = float(label_value)
        self.interpolation_steps = int(interpolation_steps)
        if self.interpolation_steps < 2:
            raise InvalidConfigError("interpolation_steps must be at least 2")
        self.has_generator = bool(generator)
        if self.has_generator and not self.variational:
            raise InvalidConfigError(
                "generator=True needs variational=True (G's perceptual term and D's fakes use the "
                "VFA's prior, §3.3)"
            )
        self.generator_filters = int(generator_filters)
        self.generator_kernel_size = int(generator_kernel_size)
        if generator_label_activation not in (None, "leaky_relu"):
            raise InvalidConfigError(
                "generator_label_activation must be None or 'leaky_relu', got "
                f"{generator_label_activation!r}"
            )
        self.generator_label_activation = generator_label_activation
        self.perceptual_weight = float(perceptual_weight)
        self.discriminator_hidden_units = (
            self.hidden_units if discriminator_hidden_units is None
            else int(discriminator_hidden_units)
        )  # fmt: skip
        self.learning_rate = float(learning_rate)
        self.adam_beta_1, self.adam_beta_2 = float(adam_beta_1), float(adam_beta_2)
        self.adam_epsilon = float(adam_epsilon)
        # Noise (ε, β, prior draws) is stateless, seeded by (this, optimizer step, replica), so
        # replicas draw different noise and a resumed run draws what the killed one would have.
        self._noise_seed = int(np.random.randint(0, 2**31 - 1))

        constraint = ElementwiseClip(self.weight_clip) if self.weight_clip else None
        modules, _ = conv_trunk(
            self.image_shape, self.conv_filters, self.conv_strides, self.hidden_units,
            leaky_slope=self.leaky_slope, bias_init=self.bias_init, constraint=constraint,
        )  # fmt: skip
        self.trunk = keras.Sequential(modules, name="trunk")
        head = dict(bias_init=self.bias_init, constraint=constraint)
        self.mean_head = _dense(self.latent_dim, self.hidden_units, name="mean", **head)
        self.log_var_head = (
            _dense(self.latent_dim, self.hidden_units, name="log_variance", **head)
            if self.variational else None
        )  # fmt: skip
        self.class_head = (
            _dense(self.num_classes, self.hidden_units, name="classifier", **head)
            if self.num_classes else None
        )  # fmt: skip
        self.generator = self.discriminator = None
        if self.has_generator:
            self.generator = LabelConditionedGenerator(
                self.image_shape, self.num_classes, filters=self.generator_filters,
                kernel_size=self.generator_kernel_size,
                label_activation=self.generator_label_activation, leaky_slope=self.leaky_slope,
                bias_init=self.bias_init, name="generator",
            )  # fmt: skip
            d_modules, d_flat = conv_trunk(
                self.image_shape, self.conv_filters, self.conv_strides,
                self.discriminator_hidden_units, leaky_slope=self.leaky_slope,
                bias_init=self.bias_init, prefix="d_",
            )  # fmt: skip
            d_modules.append(
                _dense(1, self.discriminator_hidden_units, bias_init=self.bias_init, name="d_out")
            )
            self.discriminator = keras.Sequential(d_modules, name="discriminator")
        names = ["loss", "reconstruction_mse", "kl"]
        if self.has_generator:
            names += [
                "generator_loss", "discriminator_real", "discriminator_fake",
                "generator_reconstruction_mse",
            ]  # fmt: skip
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}

    def build(self, input_shape=None):
        shape = (None, *self.image_shape)
        self.trunk.build(shape)
        for head in (self.mean_head, self.log_var_head, self.class_head):
            if head is not None:
                head.build((None, self.hidden_units))
        if self.has_generator:
            self.generator.build()
            self.discriminator.build(shape)
        self.built = True

    def get_config(self):
        return {
            "name": self.name,
            "image_shape": list(self.image_shape),
            "conv_filters": self.conv_filters,
            "conv_strides": self.conv_strides,
            "hidden_units": self.hidden_units,
            "latent_dim": self.latent_dim,
            "num_classes": self.num_classes,
            "variational": self.variational,
            "steps": self.steps,
            "step_size": self.step_size,
            "r0": self.r0,
            "input_clip": self.input_clip,
            "weight_clip": self.weight_clip,
            "leaky_slope": self.leaky_slope,
            "bias_init": self.bias_init,
            "kl_weight": self.kl_weight,
            "loss_reduction": self.loss_reduction,
            "label_value": self.label_value,
            "interpolation_steps": self.interpolation_steps,
            "generator": self.has_generator,
            "generator_filters": self.generator_filters,
            "generator_kernel_size": self.generator_kernel_size,
            "generator_label_activation": self.generator_label_activation,
            "perceptual_weight": self.perceptual_weight,
            "discriminator_hidden_units": self.discriminator_hidden_units,
            "learning_rate": self.learning_rate,
            "adam_beta_1": self.adam_beta_1,
            "adam_beta_2": self.adam_beta_2,
            "adam_epsilon": self.adam_epsilon,
            **self._identity_config(),
        }

    # -- variables and optimizers -------------------------------------------------------------------
    @property
    def encoder_variables(self) -> list:
        """E's trainable variables: trunk and heads (what E's optimizer updates)."""
        out = list(self.trunk.trainable_variables)
        for head in (self.mean_head, self.log_var_head, self.class_head):
            if head is not None:
                out += head.trainable_variables
        return out

    def _adam(self):
        return keras.optimizers.Adam(
            self.learning_rate, beta_1=self.adam_beta_1, beta_2=self.adam_beta_2,
            epsilon=self.adam_epsilon,
        )  # fmt: skip

    def default_optimizer(self):
        return self._adam()

    def compile(self, optimizer="auto", generator_optimizer="auto",
                discriminator_optimizer="auto", **kwargs):  # fmt: skip
        """``optimizer`` updates E; GAN models also get G's and D's (Adam with the model's
        settings unless given). All three are built here, on their own variables only, so that
        under tf.distribute no optimizer variable is created inside a replica step.

        G's and D's optimizers hang off E's (``model.optimizer.fa_generator`` and
        ``.fa_discriminator``; :meth:`optimizers` names all three): a weights file then keeps their
        state under ``optimizer/``, where Keras restores it on resume and where a weights file's
        optimizer state belongs (loading the weights into an uncompiled model ignores it)."""
        super().compile(optimizer=optimizer, **kwargs)
        if not self.optimizer.built:
            self.optimizer.build(self.encoder_variables)
        if self.has_generator:
            pairs = (
                ("fa_generator", generator_optimizer, self.generator),
                ("fa_discriminator", discriminator_optimizer, self.discriminator),
            )
            for attr, opt, part in pairs:
                opt = self.loss_scaled(self._adam() if opt == "auto" else opt)
                if not opt.built:
                    opt.build(part.trainable_variables)
                setattr(self.optimizer, attr, opt)

    def float32_layers(self):
        heads = (self.trunk, self.mean_head, self.log_var_head, self.class_head)
        return [layer for layer in heads if layer is not None]

    def float32_reason(self):
        return (
            "E (trunk and heads) runs inside the reverse map's inner gradient step (eq. 2), "
            "whose steps on r must not lose bits"
        )

    def mixed_precision_refusal(self, mode):
        if not self.has_generator:
            return (
                "every layer of this model is E, which runs inside the reverse map's inner "
                "gradient step (eq. 2) and stays float32; only a model with a GAN (G and D) has "
                "parts that can compute in a mixed precision"
            )
        return None

    def optimizers(self) -> dict:
        """``{"encoder", "generator", "discriminator"}`` → the compiled optimizers (E's alone for
        models without G)."""
        if self.optimizer is None:
            raise ValueError(f"{self.zoo_name} is not compiled; call model.compile() first")
        out = {"encoder": self.optimizer}
        if self.has_generator:
            out["generator"] = self.optimizer.fa_generator
            out["discriminator"] = self.optimizer.fa_discriminator
        return out

    def build_for_inputs(self):
        x = tf.zeros((1, *self.image_shape))
        self(x, tf.zeros([1], tf.int64) if self.num_classes else None, training=False)
        return self

    # -- the encoder and the reverse map ----------------------------------------------------------
    def _heads(self, x):
        h = self.trunk(x)
        out = {"mean": self.mean_head(h)}
        if self.variational:
            out["log_var"] = self.log_var_head(h)
        if self.class_head is not None:
            out["logits"] = self.class_head(h)
        return out

    def encode(self, images, training=False):
        """``{"mean", "log_var" (VFA), "logits" (label head)}`` of the clamped images; each
        ``(batch, latent_dim)`` or ``(batch, num_classes)``."""
        return self._heads(self._clip_input(self._check_images(images)))

    def _reverse_outputs(self, r, with_labels: bool):
        """What the inner cost compares with its targets: ``z_r = μ(r) + σ(r)`` for the VFA (ε ≡ 1,
        as the authors' code does; digest §1.2), ``μ(r)`` otherwise, and C(r) with labels."""
        out = self._heads(r)
        z = out["mean"]
        if self.variational:
            z = z + tf.exp(0.5 * out["log_var"])
        return {"z": z, "labels": out["logits"]} if with_labels else {"z": z}

    def label_vector(self, labels, value: float = 1.0):
        """Int class ids ``(batch,)`` → ``value``·one-hot ``(batch, num_classes)``; a float
        ``(batch, num_classes)`` vector passes through. Raises for ids out of range."""
        if self.class_head is None:
            raise ValueError(
                f"{self.zoo_name} has no label head (num_classes=0); decode without labels"
            )
        labels = tf.convert_to_tensor(labels)
        k = self.num_classes
        if labels.dtype.is_floating:
            if labels.shape.rank is not None and (
                labels.shape.rank != 2 or labels.shape[-1] not in (None, k)
            ):
                raise ValueError(
                    f"{self.zoo_name}: a label vector has shape (batch, {k}); got "
                    f"{tuple(labels.shape)}"
                )
            return tf.cast(labels, tf.float32)
        if not labels.dtype.is_integer:
            raise TypeError(f"{self.zoo_name}: labels must be int class ids, got {labels.dtype}")
        if labels.shape.rank is not None and labels.shape.rank != 1:
            raise ValueError(
                f"{self.zoo_name}: class ids have shape (batch,); got {tuple(labels.shape)}"
            )
        message = f"{self.zoo_name}: labels must be class ids in [0, {k})"
        if tf.executing_eagerly():
            ids = labels.numpy()
            if ids.size and (ids.min() < 0 or ids.max() >= k):
                bad = sorted(set(ids[(ids < 0) | (ids >= k)].tolist()))
                raise ValueError(f"{message}; got {bad}")
            checks = []
        else:
            checks = [
                tf.debugging.assert_non_negative(labels, message=message),
                tf.debugging.assert_less(labels, tf.cast(k, labels.dtype), message=message),
            ]
        with tf.control_dependencies(checks):
            return tf.one_hot(tf.cast(labels, tf.int32), k) * value

    def _initial_r(self, batch, seed=None):
        shape = tf.stack([batch, *self.image_shape])
        if self.r0 == "zeros":
            return tf.zeros(shape)
        if self.r0 == "normal":
            return (tf.random.stateless_normal(shape, seed) if seed is not None
                    else tf.random.normal(shape))  # fmt: skip
        return (tf.random.stateless_uniform(shape, seed) if seed is not None
                else tf.random.uniform(shape))  # fmt: skip

    def features(self, z, label_vector=None, r0_seed=None):
        """The reverse map ``r̂ = sigmoid(r^T)``: T gradient steps on E's input from r⁰ towards
        the latent ``z`` (and the label vector, if given). ``(batch, latent_dim)`` → images."""
        targets = {"z": z}
        if label_vector is not None:
            targets["labels"] = label_vector
        r0 = self._initial_r(tf.shape(z)[0], r0_seed)
        r = align_features(
            lambda r: self._reverse_outputs(r, label_vector is not None),
            targets, r0, self.steps, self.step_size,
        )  # fmt: skip
        return tf.sigmoid(r)

    def _safe_batch(self, fn, z, label_vector):
        """``fn`` on a batch of at least one row (Keras convolutions fail on empty batches on the
        CPU), sliced back to the real batch."""
        n = tf.shape(z)[0]
        pad = tf.maximum(1 - n, 0)
        z = tf.pad(z, [[0, pad], [0, 0]])
        if label_vector is not None:
            label_vector = tf.pad(label_vector, [[0, pad], [0, 0]])
        return tf.nest.map_structure(lambda t: t[:n], fn(z, label_vector))

    def decode(self, z, labels=None):
        """Images ``r̂`` ``(batch, H, W, C)`` from latents ``(batch, latent_dim)`` and, for a
        label head, class ids or label vectors (None: the unconditional reverse map)."""
        z = self._check_latent(z, self.latent_dim)
        y = None if labels is None else self.label_vector(labels)
        return self._safe_batch(lambda z, y: self.features(z, y), z, y)

    def _require_generator(self):
        if not self.has_generator:
            raise ValueError(
                f"{self.zoo_name} has no generator G: generate() needs a GAN model "
                f"(fa_gan_mnist, fa_gan_cifar10); decode() gives the features r̂"
            )

    def _generator_labels(self, y, batch):
        # Unconditional use of a label-conditioned G: the zero label vector (its channel is then
        # the embedding's bias alone), matching the reverse map without a label term.
        if self.num_classes and y is None:
            return tf.zeros(tf.stack([batch, self.num_classes]))
        return y

    def generate(self, z, labels=None):
        """``{"images": G(r̂), "features": r̂}`` for latents and labels (G in inference mode).
        Without labels, the reverse map has no label term and G gets the zero label vector."""
        self._require_generator()
        z = self._check_latent(z, self.latent_dim)
        y = None if labels is None else self.label_vector(labels)

        def fn(z, y):
            r = self.features(z, y)
            g_labels = self._generator_labels(y, tf.shape(z)[0])
            return {"images": self.generator(r, g_labels, training=False), "features": r}

        return self._safe_batch(fn, z, y)

    def sample(self, n, seed=None, labels=None):
        """``n`` samples: ``z ~ N(0, I)`` and (label head) uniform random classes unless
        ``labels`` are given; ``{"images", "features" (GAN), "z", "label" (label head)}``.
        ``seed`` (an int) makes the draw reproducible."""
        n = tf.convert_to_tensor(n, tf.int32)
        shape = tf.stack([n, self.latent_dim])
        if seed is None:
            z = tf.random.normal(shape)
        else:
            z = tf.random.stateless_normal(shape, tf.constant([int(seed), 0]))
        out = {"z": z}
        if self.num_classes:
            if labels is None:
                labels = (
                    tf.random.uniform([n], 0, self.num_classes, tf.int64) if seed is None
                    else tf.random.stateless_uniform([n], tf.constant([int(seed), 1]), 0,
                                                     self.num_classes, tf.int64)
                )  # fmt: skip
            out["label"] = tf.cast(labels, tf.int64)
        if self.has_generator:
            g = self.generate(z, out.get("label"))
            out["images"], out["features"] = g["images"], g["features"]
        else:
            out["images"] = self.decode(z, out.get("label"))
        return out

    def reconstruct(self, images, labels=None):
        """``{"images", "features" (GAN), "mean"}``: the reverse map of ``μ(x)`` (and the
        labels), refined by G for GAN models."""
        enc = self.encode(images)
        z = enc["mean"]
        if self.has_generator:
            out = self.generate(z, labels)
        else:
            out = {"images": self.decode(z, labels)}
        return {**out, "mean": z}

    def call(self, images, labels=None, training=False):
        return self.reconstruct(images, labels)["images"]

    def interpolate(self, images, labels=None, steps: int | None = None):
        """The 4-corner grid of Figs. 7 and 11: the latents (μ) of four images, and their labels,
        mixed bilinearly, ``(1−α)((1−β)z₀ + βz₁) + α((1−β)z₂ + βz₃)`` for α (rows) and β
        (columns) in ``linspace(0, 1, steps)``. ``images``: ``(4, H, W, C)``; returns
        ``{"images": (steps², H, W, C), "features" (GAN)}``, row-major."""
        x = self._check_images(images)
        if x.shape[0] is not None and x.shape[0] != 4:
            raise ValueError(
                f"{self.zoo_name}: interpolate takes 4 corner images; got {x.shape[0]}"
            )
        s = int(steps or self.interpolation_steps)
        t = tf.linspace(0.0, 1.0, s)
        alpha, beta = tf.reshape(tf.repeat(t, s), (-1, 1)), tf.reshape(tf.tile(t, [s]), (-1, 1))
        weights = tf.concat([(1 - alpha) * (1 - beta), (1 - alpha) * beta,
                             alpha * (1 - beta), alpha * beta], axis=1)  # fmt: skip
        z = weights @ self.encode(x)["mean"]
        y = None
        if labels is not None:
            y = weights @ self.label_vector(labels)
        if self.has_generator:
            return self.generate(z, y)
        return {"images": self.decode(z, y)}

    # -- training --------------------------------------------------------------------------------------
    def _seed(self, salt: int, base=None) -> tf.Tensor:
        step = (
            tf.cast(self.optimizer.iterations, tf.int32) if self.optimizer is not None
            else tf.constant(0)
        )  # fmt: skip
        seed = tf.stack([tf.constant(self._noise_seed + salt, tf.int32), step])
        return tf.random.experimental.stateless_fold_in(seed, _replica_id())

    def encoder_terms(self, images, labels=None, eps=None, beta=None, training=True):
        """Per-example terms of E's objective (eq. 4 in the code's form):
        ``loss = β·KL + ½Σ(x − r̂)²`` with ``r̂`` the reverse map of ``z_x = μ + σ·ε`` (VFA; ε
        drawn unless given) or ``μ`` (FA). ``beta``: ``(batch,)``, drawn unless given.

        Returns ``{"loss", "reconstruction", "kl", "reconstruction_mse"}`` (each ``(batch,)``),
        ``"features"`` r̂ and ``"encoding"``."""
        x = self._check_images(images)
        xc = self._clip_input(x)
        enc = self._heads(xc)
        z = enc["mean"]
        b = tf.shape(z)[0]
        kl = tf.zeros([b])
        if self.variational:
            sigma = tf.exp(0.5 * enc["log_var"])
            if eps is None:
                eps = tf.random.stateless_normal(tf.shape(z), self._seed(_EPS))
            z = z + sigma * eps  # z_x is not detached: E learns through it too (digest §4.2 item 6)
            # The code's KL per example, a sum over latent dims.
            kl = -0.5 * tf.reduce_sum(
                1.0 + enc["log_var"] - tf.square(enc["mean"]) - tf.exp(enc["log_var"]), axis=1
            )
        y = None
        if labels is not None and self.class_head is not None:
            y = self.label_vector(labels, self.label_value)
        r0_seed = self._seed(_R0) if self.r0 != "zeros" else None
        r_hat = self.features(z, y, r0_seed)
        rec = 0.5 * tf.reduce_sum(tf.square(xc - r_hat), axis=[1, 2, 3])
        if self.variational:
            if beta is None:
                if self.kl_weight == "uniform":
                    beta = tf.random.stateless_uniform([b], self._seed(_BETA))
                else:
                    beta = tf.fill([b], self.kl_weight)
            loss = beta * kl + rec
        else:
            loss = rec
        mse = tf.reduce_mean(tf.square(x - r_hat), axis=[1, 2, 3])
        return {
            "loss": loss, "reconstruction": rec, "kl": kl, "reconstruction_mse": mse,
            "features": r_hat, "encoding": enc, "label_vector": y,
        }  # fmt: skip

    def _encoder_step(self, x, y):
        with tf.GradientTape() as tape:
            terms = self.encoder_terms(x, y, training=True)
            loss = _reduce(terms["loss"], self.loss_reduction)
        apply_scaled_gradients(self.optimizer, tape, loss, self.encoder_variables)
        return terms

    @_static_python
    def train_step(self, data):
        x, y = _images(data), _labels(data)
        if not self.has_generator:
            terms = self._encoder_step(x, y)
            values = {k: tf.reduce_mean(terms[k]) for k in ("loss", "reconstruction_mse", "kl")}
            return track_batch_means(self.trackers, values, x)
        return self._gan_step(x, y)

    def _gan_step(self, x, y):
        """One iteration of the authors' loop (digest §1.3, §4.1): (1) E's step; (2) G's step on
        ``G(stop_gradient(r̂), y)``, the features of the real batch; (3) a D step on the real
        batch; (4) a D step on ``G(r̂(z ~ N(0, I), y))``, prior samples decoded with the batch's
        labels by the updated E. G runs with batch statistics in (2) and (4)."""
        prior_seed, fake_r0_seed = self._seed(_PRIOR), self._seed(_R0_FAKE)
        terms = self._encoder_step(x, y)  # (1)
        xc = self._clip_input(self._check_images(x))
        yv = terms["label_vector"]
        features = tf.stop_gradient(terms["features"])
        red = self.loss_reduction

        with tf.GradientTape() as tape:  # (2)
            g = self.generator(features, yv, training=True)
            adversarial = 0.5 * tf.reduce_sum(tf.square(1.0 - self.discriminator(g)), axis=1)
            g_loss = adversarial
            if self.perceptual_weight:
                # Eq. 5's perceptual term with E's own heads; the code compares σ, not σ².
                ex, eg = self._heads(xc), self._heads(g)
                sx, sg = tf.exp(0.5 * ex["log_var"]), tf.exp(0.5 * eg["log_var"])
                perceptual = 0.5 * tf.reduce_sum(
                    tf.square(ex["mean"] - eg["mean"]) + tf.square(sx - sg), axis=1
                )
                g_loss = g_loss + self.perceptual_weight * perceptual
            g_total = _reduce(g_loss, red)
        apply_scaled_gradients(
            self.optimizer.fa_generator, tape, g_total, self.generator.trainable_variables
        )

        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:  # (3)
            d_real = 0.5 * tf.reduce_sum(tf.square(1.0 - self.discriminator(xc)), axis=1)
            d_real_total = _reduce(d_real, red)
        apply_scaled_gradients(self.optimizer.fa_discriminator, tape, d_real_total, d_vars)

        prior = tf.random.stateless_normal(tf.shape(terms["encoding"]["mean"]), prior_seed)  # (4)
        fake_features = self.features(prior, yv, fake_r0_seed if self.r0 != "zeros" else None)
        fake = tf.stop_gradient(self.generator(fake_features, yv, training=True))
        with tf.GradientTape() as tape:
            d_fake = 0.5 * tf.reduce_sum(tf.square(-1.0 - self.discriminator(fake)), axis=1)
            d_fake_total = _reduce(d_fake, red)
        apply_scaled_gradients(self.optimizer.fa_discriminator, tape, d_fake_total, d_vars)
        values = {k: tf.reduce_mean(terms[k]) for k in ("loss", "reconstruction_mse", "kl")}
        values.update(
            generator_loss=tf.reduce_mean(g_loss),
            discriminator_real=tf.reduce_mean(d_real),
            discriminator_fake=tf.reduce_mean(d_fake),
        )
        return track_batch_means(self.trackers, values, x)

    @_static_python
    def test_step(self, data):
        """Held-out figures of the deterministic reverse map ``r̂(μ(x), y)``: the per-pixel MSE
        against x, the KL, and ``loss`` at β's mean (½ for β ~ U(0, 1)); for GAN models also
        the MSE of ``G(r̂)``."""
        x, y = _images(data), _labels(data)
        b = tf.shape(_images(data))[0]
        beta = tf.fill([b], 0.5 if self.kl_weight == "uniform" else float(self.kl_weight))
        terms = self.encoder_terms(
            x, y, eps=tf.zeros([b, self.latent_dim]), beta=beta, training=False
        )
        values = {k: tf.reduce_mean(terms[k]) for k in ("loss", "reconstruction_mse", "kl")}
        if self.has_generator:
            g = self.generator(terms["features"], terms["label_vector"], training=False)
            values["generator_reconstruction_mse"] = tf.reduce_mean(
                tf.square(self._check_images(x) - g)
            )
        return track_batch_means(self.trackers, values, x)

    # -- serving ------------------------------------------------------------------------------------
    def serving_signatures(self):
        images = tf.TensorSpec((None, *self.image_shape), tf.float32, name="images")
        corners = tf.TensorSpec((4, *self.image_shape), tf.float32, name="images")
        z = tf.TensorSpec((None, self.latent_dim), tf.float32, name="z")
        n = tf.TensorSpec((), tf.int32, name="n")
        label = tf.TensorSpec((None,), tf.int64, name="label")
        corner_labels = tf.TensorSpec((4,), tf.int64, name="label")
        conditional = self.num_classes > 0

        def encode(images):
            return self.encode(images)

        def sample(n):
            return self.sample(n)

        if conditional:
            sigs = {
                "reconstruct": (lambda images, label: self.reconstruct(images, label),
                                [images, label]),
                "decode": (lambda z, label: {"images": self.decode(z, label)}, [z, label]),
                "interpolate": (lambda images, label: self.interpolate(images, label),
                                [corners, corner_labels]),
            }  # fmt: skip
            if self.has_generator:
                sigs["generate"] = (lambda z, label: self.generate(z, label), [z, label])
        else:
            sigs = {
                "reconstruct": (lambda images: self.reconstruct(images), [images]),
                "decode": (lambda z: {"images": self.decode(z)}, [z]),
                "interpolate": (lambda images: self.interpolate(images), [corners]),
            }
            if self.has_generator:
                sigs["generate"] = (lambda z: self.generate(z), [z])
        sigs["encode"] = (encode, [images])
        sigs["sample"] = (sample, [n])
        sigs["serving_default"] = sigs["reconstruct"]
        return {k: (_static_python(fn), spec) for k, (fn, spec) in sigs.items()}


# -- local feature alignment ----------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class LocalFeatureAlignment(_FABase):
    """Local (layer-wise) feature alignment (001_4315bda1330034cd.txt, §3.4, Algorithms 2–3).

    The network is a list of modules ``f_l`` (conv, asinh, …, flatten, dense, asinh, dense(Z)),
    each its own encoder: ``r̂_l`` is one reverse step from zeros on ``½‖f_l(x_l) − f_l(r)‖²``,
    the module's loss ``½‖x_l − r̂_l‖²`` updates that module only, and ``x_{l+1} =
    stop_gradient(f_l(x_l))``. Every module is trained (the reference's CIFAR loop skips the last
    four); all gradients come from one forward pass and are applied in one step. ``decode`` walks
    back from the latent: one reverse step per module, then sinh after each asinh. No sigmoid and
    no input clamp at reconstruction (the reference's display-only ``tanh`` is left out).

    Args:
        image_shape, conv_filters, conv_strides, hidden_units, latent_dim: the Memory net.
        steps, step_size: T and τ of each module's reverse step.
        input_clip: the training inputs' clamp (the reference's [0.01, 0.99]).
        bias_init: ``"pytorch"`` or ``"zeros"`` (biases cancel, so this changes nothing learnt).
        loss_reduction: ``"sum"`` (the reference) or ``"mean"``.
        learning_rate, adam_beta_1, adam_beta_2, adam_epsilon: Adam (PyTorch defaults, lr 1e-4).
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        conv_filters: Sequence[int] = (32, 32, 64, 64),
        conv_strides: Sequence[int] = (1, 2, 1, 2),
        hidden_units: int = 4096,
        latent_dim: int = 128,
        steps: int = 1,
        step_size: float = 1.0,
        input_clip: Sequence[float] | None = (0.01, 0.99),
        bias_init: str = "pytorch",
        loss_reduction: str = "sum",
        learning_rate: float = 1e-4,
        adam_beta_1: float = 0.9,
        adam_beta_2: float = 0.999,
        adam_epsilon: float = 1e-8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.conv_filters = [int(f) for f in conv_filters]
        self.conv_strides = [int(s) for s in conv_strides]
        if len(self.conv_filters) != len(self.conv_strides):
            raise InvalidConfigError("conv_filters and conv_strides need one entry per convolution")
        self.hidden_units, self.latent_dim = int(hidden_units), int(latent_dim)
        self.steps, self.step_size = int(steps), float(step_size)
        if self.steps < 1:
            raise InvalidConfigError(f"steps (T) must be at least 1, got {steps}")
        self.input_clip = None if input_clip is None else [float(v) for v in input_clip]
        if bias_init not in ("pytorch", "zeros"):
            raise InvalidConfigError(f"bias_init must be 'pytorch' or 'zeros', got {bias_init!r}")
        self.bias_init = bias_init
        if loss_reduction not in REDUCTIONS:
            raise InvalidConfigError(f"loss_reduction must be one of {REDUCTIONS}")
        self.loss_reduction = loss_reduction
        self.learning_rate = float(learning_rate)
        self.adam_beta_1, self.adam_beta_2 = float(adam_beta_1), float(adam_beta_2)
        self.adam_epsilon = float(adam_epsilon)
        modules, _ = conv_trunk(
            self.image_shape, self.conv_filters, self.conv_strides, self.hidden_units,
            activation="asinh", bias_init=self.bias_init,
        )  # fmt: skip
        modules.append(_dense(self.latent_dim, self.hidden_units, bias_init=bias_init, name="out"))
        self.modules_ = modules
        self.trackers = {n: keras.metrics.Mean(name=n) for n in ("loss", "reconstruction_mse")}
        shapes, shape = [], (None, *self.image_shape)
        for m in modules:
            shapes.append(shape)
            m.build(shape)
            shape = m.compute_output_shape(shape)
        self.input_shapes = [tuple(s[1:]) for s in shapes]

    def get_config(self):
        return {
            "name": self.name,
            "image_shape": list(self.image_shape),
            "conv_filters": self.conv_filters,
            "conv_strides": self.conv_strides,
            "hidden_units": self.hidden_units,
            "latent_dim": self.latent_dim,
            "steps": self.steps,
            "step_size": self.step_size,
            "input_clip": self.input_clip,
            "bias_init": self.bias_init,
            "loss_reduction": self.loss_reduction,
            "learning_rate": self.learning_rate,
            "adam_beta_1": self.adam_beta_1,
            "adam_beta_2": self.adam_beta_2,
            "adam_epsilon": self.adam_epsilon,
            **self._identity_config(),
        }

    def default_optimizer(self):
        return keras.optimizers.Adam(
            self.learning_rate, beta_1=self.adam_beta_1, beta_2=self.adam_beta_2,
            epsilon=self.adam_epsilon,
        )  # fmt: skip

    @staticmethod
    def _is_asinh(module) -> bool:
        return isinstance(module, keras.layers.Activation) and module.activation is tf.math.asinh

    def _reverse_step(self, module, target, shape):
        r0 = tf.zeros(tf.concat([tf.shape(target)[:1], shape], 0))
        return align_features(module, target, r0, self.steps, self.step_size)

    def encode(self, images, training=False):
        """The latent ``(batch, latent_dim)`` of the modules run forward."""
        x = self._check_images(images)
        for m in self.modules_:
            x = m(x)
        return x

    def decode(self, z):
        """Algorithm 3: from the latent back to an image ``(batch, H, W, C)``, one reverse step per
        module from the last to the first, with sinh after each asinh."""
        u = self._check_latent(z, self.latent_dim)
        n = tf.shape(u)[0]
        u = tf.pad(u, [[0, tf.maximum(1 - n, 0)], [0, 0]])  # convolutions fail on empty batches
        for module, shape in zip(reversed(self.modules_), reversed(self.input_shapes),
                                 strict=True):  # fmt: skip
            u = self._reverse_step(module, tf.stop_gradient(u), list(shape))
            if self._is_asinh(module):
                u = tf.sinh(u)
        return u[:n]

    def reconstruct(self, images):
        z = self.encode(images)
        return {"images": self.decode(z), "z": z}

    def call(self, images, training=False):
        return self.decode(self.encode(images))

    def mixed_precision_refusal(self, mode):
        return (
            "every module runs inside its own reverse map's inner gradient step (Algorithm 2), "
            "which stays float32"
        )

    def module_losses(self, images):
        """Algorithm 2 for one batch: ``[(module, loss_l, gradients)]`` for every module with
        parameters, ``loss_l = ½Σ(x_l − r̂_l)²`` (per example, ``(batch,)``), each gradient taken
        on its own tape with respect to that module's variables only."""
        x = self._clip_input(self._check_images(images))
        out = []
        for module, shape in zip(self.modules_, self.input_shapes, strict=True):
            variables = module.trainable_variables
            with tf.GradientTape() as tape:
                z = module(x)
                r_hat = self._reverse_step(module, z, list(shape))
                per_example = 0.5 * tf.reduce_sum(
                    tf.reshape(tf.square(x - r_hat), (tf.shape(x)[0], -1)), axis=1
                )
                loss = _reduce(per_example, self.loss_reduction)
            if variables:
                out.append((module, per_example, tape.gradient(loss, variables)))
            x = tf.stop_gradient(z)
        return out

    @_static_python
    def train_step(self, data):
        x = _images(data)
        pairs, total = [], 0.0
        for module, per_example, grads in self.module_losses(x):
            pairs += list(zip(grads, module.trainable_variables, strict=True))
            total += tf.reduce_mean(per_example)
        self.optimizer.apply_gradients(pairs)
        return track_batch_means(self.trackers, {"loss": total}, x)

    @_static_python
    def test_step(self, data):
        x = self._check_images(_images(data))
        mse = tf.reduce_mean(tf.square(x - self(x)))
        return track_batch_means(self.trackers, {"reconstruction_mse": mse}, x)

    def serving_signatures(self):
        images = tf.TensorSpec((None, *self.image_shape), tf.float32, name="images")
        z = tf.TensorSpec((None, self.latent_dim), tf.float32, name="z")
        sigs = {
            "reconstruct": (lambda images: self.reconstruct(images), [images]),
            "encode": (lambda images: {"z": self.encode(images)}, [images]),
            "decode": (lambda z: {"images": self.decode(z)}, [z]),
        }
        sigs["serving_default"] = sigs["reconstruct"]
        return {k: (_static_python(fn), spec) for k, (fn, spec) in sigs.items()}


# -- registered models ---------------------------------------------------------------------------------
# Paper §4: epochs are not stated; the code runs one epoch per invocation from a checkpoint.
FA_TRAINING = {"epochs": 10, "batch_size": 128}


def _fa(name: str, config: dict[str, Any]) -> FeatureAlignment:
    return FeatureAlignment(name=building_name(name), **config).build_for_inputs()


@register_model("fa_mnist", family="feature_alignment", dataset="mnist", paper=PAPER,
                training=FA_TRAINING)  # fmt: skip
def fa_mnist(
    image_shape=(28, 28, 1), conv_filters=(32, 32, 64, 64), conv_strides=(1, 2, 1, 2),
    hidden_units=4096, latent_dim=128, num_classes=10, variational=False, steps=1, step_size=1.0,
    r0="zeros", input_clip=(0.01, 0.99), weight_clip=SQRT2, leaky_slope=0.01, bias_init="pytorch",
    kl_weight="uniform", loss_reduction="sum", label_value=1.0, interpolation_steps=11,
    learning_rate=1e-4, adam_beta_1=0.5, adam_beta_2=0.999, adam_epsilon=1e-8,
):  # fmt: skip
    """Feature alignment on MNIST (Table 2): convs 32-32-64-64 (strides 1-2-1-2) with LeakyReLU,
    FC 3136→4096, heads μ (Z = 128) and the label head C (10) in the inner cost; T = 1, τ = 1,
    r⁰ = 0, sigmoid on r̂; Adam lr 1e-4, β₁ 0.5 (the authors' code)."""
    return _fa("fa_mnist", dict(locals()))


_CIFAR = {"image_shape": (32, 32, 3), "conv_filters": (32, 32, 64, 64, 128, 128),
          "conv_strides": (1, 2, 1, 2, 1, 2), "hidden_units": 2048}  # fmt: skip
_CELEBA = {"image_shape": (64, 64, 3), "conv_filters": (32, 32, 64, 64, 128, 128, 256, 256),
           "conv_strides": (1, 2, 1, 2, 1, 2, 1, 2), "hidden_units": 4096, "num_classes": 0}  # fmt: skip

fa_cifar10 = register_variant(
    "fa_cifar10", of=fa_mnist, dataset="cifar10", **_CIFAR,
    description="Feature alignment on CIFAR-10 (Table 3): convs 32-32-64-64-128-128, FC "
    "2048→2048, μ (Z = 128) and the label head.",
)  # fmt: skip
fa_celeba = register_variant(
    "fa_celeba", of=fa_mnist, dataset="celeba_64x64", **_CELEBA,
    description="Feature alignment on CelebA at 64×64 (Table 4; §5.2's size): convs "
    "32-32-64-64-128-128-256-256, FC 4096→4096, μ (Z = 128), no label head.",
)  # fmt: skip
_VFA = " Variational (§3.2): μ and log-variance heads, β ~ U(0, 1) per example on the KL."
vfa_mnist = register_variant(
    "vfa_mnist", of=fa_mnist, variational=True, description="fa_mnist, variational." + _VFA
)
vfa_cifar10 = register_variant(
    "vfa_cifar10", of=fa_cifar10, variational=True, description="fa_cifar10, variational." + _VFA
)
vfa_celeba = register_variant(
    "vfa_celeba", of=fa_celeba, variational=True, description="fa_celeba, variational." + _VFA
)


@register_model("fa_gan_mnist", family="feature_alignment", dataset="mnist", paper=PAPER,
                training=FA_TRAINING)  # fmt: skip
def fa_gan_mnist(
    image_shape=(28, 28, 1), conv_filters=(32, 32, 64, 64), conv_strides=(1, 2, 1, 2),
    hidden_units=4096, latent_dim=128, num_classes=10, steps=1, step_size=1.0, r0="zeros",
    input_clip=(0.01, 0.99), weight_clip=SQRT2, leaky_slope=0.01, bias_init="pytorch",
    kl_weight="uniform", loss_reduction="sum", label_value=1.0, interpolation_steps=11,
    generator_filters=128, generator_kernel_size=3, generator_label_activation=None,
    perceptual_weight=0.0, discriminator_hidden_units=None, learning_rate=1e-4, adam_beta_1=0.5,
    adam_beta_2=0.999, adam_epsilon=1e-8,
):  # fmt: skip
    """VFA on MNIST with the GAN refiner (§3.3): G = label Dense(10→784) as a 2nd channel, convs
    128-128 (k3, BN, LeakyReLU) and conv(1) + sigmoid; D = E's trunk + Dense(1), LSGAN (±1);
    G trained on features of real images, D twice per step (real, then prior samples); λ = 0."""
    return _fa("fa_gan_mnist", {**locals(), "variational": True, "generator": True})


fa_gan_cifar10 = register_variant(
    "fa_gan_cifar10", of=fa_gan_mnist, dataset="cifar10", **_CIFAR, generator_kernel_size=9,
    generator_label_activation="leaky_relu",
    description="VFA on CIFAR-10 with the GAN refiner (§3.3, §5.3): the code's G (kernel 9, 128 "
    "filters, LeakyReLU on the label embedding), D = E's trunk + Dense(1); λ = 0.",
)  # fmt: skip


def _local(name: str, config: dict[str, Any]) -> LocalFeatureAlignment:
    return LocalFeatureAlignment(name=building_name(name), **config).build_for_inputs()


@register_model("local_fa_mnist", family="feature_alignment", dataset="mnist", paper=PAPER,
                training=FA_TRAINING)  # fmt: skip
def local_fa_mnist(
    image_shape=(28, 28, 1), conv_filters=(32, 32, 64, 64), conv_strides=(1, 2, 1, 2),
    hidden_units=4096, latent_dim=128, steps=1, step_size=1.0, input_clip=(0.01, 0.99),
    bias_init="pytorch", loss_reduction="sum", learning_rate=1e-4, adam_beta_1=0.9,
    adam_beta_2=0.999, adam_epsilon=1e-8,
):  # fmt: skip
    """Local feature alignment on MNIST (§3.4, the code's Memory net): E's trunk with asinh in
    place of LeakyReLU, FC 3136→4096, asinh, FC→Z (128); one loss per module, one Adam step
    (lr 1e-4, default betas) per batch; no weight clip."""
    return _local("local_fa_mnist", dict(locals()))


local_fa_cifar10 = register_variant(
    "local_fa_cifar10", of=local_fa_mnist, dataset="cifar10",
    **{k: v for k, v in _CIFAR.items()},
    description="Local feature alignment on CIFAR-10 (the code's Memory net: convs "
    "32-32-64-64-128-128, FC 2048→2048, asinh, FC→128); all 16 modules are trained.",
)  # fmt: skip
