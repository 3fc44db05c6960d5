"""SlowVAE and its baselines on one encoder: β-VAE, PM-VAE, Ada-GVAE and PCL.

Klindt*, Schott*, Sharma* et al., "Towards nonlinear disentanglement in natural data with temporal
sparse coding" (ICLR 2021), 002_7240b1e8d13f6586.txt lines 1043-2066; shared/digests/
slowvae_benchmark_noise.md part (a).

**Data.** Pairs of temporally adjacent frames ``(x_{t−1}, x_t)``, batched as ``(P, 2, H, W, C)``
(``zoo.data`` pair datasets such as ``sprites/lap``), so a tf.distribute replica always holds
whole pairs; the authors' interleaved layout ``(2P, H, W, C)`` = ``[x¹_{t−1}, x¹_t, x²_{t−1}, …]``
is accepted too. The encoder is applied frame by frame (eq. 3), so a trained model encodes
single images.

**SlowVAE loss, as the authors' code weights it** (eq. 4 and ``solver.py``; digest a.1), per
batch of P pairs with one shared Gaussian encoder q(z|x) = N(μ, e^logvar) and a Bernoulli
decoder::

    rec   = mean over the 2P images of Σ_pixels BCE(x, decoder(μ + σ ε))
    H̄     = mean over images of Σ_d ½(logvar + log 2πe)
    CE_N̄  = mean over images of Σ_d ½(μ² + e^logvar) + ½ log 2π
    CE_L̄  = mean over pairs of Σ_d CE_L(μ_{t−1} − μ_t, logvar_{t−1}) + CE_L(μ_t − μ_{t−1}, logvar_t)
    loss  = 2·rec + β·(CE_N̄ − H̄) + γ·(CE_L̄ − H̄)

CE_L is the closed-form cross-entropy of a Normal against the Laplace transition prior of rate λ
centred on the other frame's *mean* (App. A.2, :func:`zoo.layers.priors.cross_entropy_normal_laplace`);
both temporal directions, one entropy subtracted, no stop-gradient — as the reference code does.
Defaults: z 10, β 1, γ 10, λ 6, Adam 1e-4 (β1 0.9, β2 0.999), 32 pairs per step.

- ``betavae_*``: the same code path with β = 8, γ = 0 (the authors' β-VAE baseline).
- PM-VAE (App. F.3): ``--set transition=posterior`` replaces the Laplace prior by the posterior of
  the other frame, ``p(z_t|z_{t−1}) = q(z_{t−1}|x_{t−1})`` (a Gaussian, α = 2), same bookkeeping.
- ``transition_power`` α ≠ 1: a generalized-normal transition prior (Table 6 fits α ≈ 0.5), its
  cross-entropy estimated by Monte Carlo (no closed form exists).
- ``ada_gvae_*`` (Locatello et al. 2020, as disentanglement_lib's ``GroupVAEArgmax``): per pair,
  dimensions whose KL between the two posteriors is below the midpoint of its range are replaced
  by the pair's average posterior; loss ``½(rec₁ + rec₂) + β·½(KL₁ + KL₂)``.
- ``pcl_*`` (Hyvärinen & Morioka 2017): the same encoder with ``z_dim`` outputs and no decoder,
  trained by logistic regression of true pairs against pairs with a shuffled first frame,
  ``r = −Σ_d |w1_d h_t,d + w2_d h_{t−1},d + b_d| + Σ_d h_t,d² + c`` (w1 = 1, w2 = −1, b = c = 0).

**Architecture** (App. E; the DisLib conv VAE, the code's ``BetaVAE_H``): 4×4 stride-2 convs
32-32-64-64, a 4×4 valid conv to 256, a linear layer to 2·z; the decoder mirrors it with
transposed convs; logits out. Kaiming-normal weights and zero biases for convs and linear layers,
PyTorch's default for the transposed convs (as the reference). 763,285 parameters at 64×64×1.
32×32 inputs drop one stride-2 layer on each side. ``architecture="mlp"`` (App. B's toy) uses
ReLU MLPs and a Gaussian likelihood on vectors.

**Serving.** ``encode`` (``images`` → ``mu``, ``logvar``; also ``serving_default``), ``decode``
(``z`` → ``probabilities``, or ``mean`` for a Gaussian likelihood) and ``reconstruct``. The
representation for metrics is μ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from zoo.layers.priors import (
    cross_entropy_normal_standard,
    cross_entropy_normals,
    normal_entropy,
    transition_cross_entropy,
)
from zoo.models.base import (
    ZooModel,
    apply_scaled_gradients,
    check_image_batch,
    scale_loss_for_replicas,
    track_batch_means,
)
from zoo.registry import InvalidConfigError, building_name, register_model, register_variant

__all__ = [
    "SlowVAE",
    "PCL",
    "dislib_encoder",
    "dislib_decoder",
    "OBJECTIVES",
    "TRANSITIONS",
    "split_pairs",
]

PAPER = "002_7240b1e8d13f6586.txt"
OBJECTIVES = ("slowvae", "ada_gvae")
TRANSITIONS = ("laplace", "posterior")
ARCHITECTURES = ("dislib", "mlp")
LIKELIHOODS = ("bernoulli", "gaussian")


# -- the DisLib encoder and decoder ----------------------------------------------------------------
def _kaiming():
    # PyTorch's init.kaiming_normal: N(0, 2 / fan_in), not truncated (the authors' weight_init).
    return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def _torch_transpose_default(fan_in: int):
    """PyTorch's default ConvTranspose2d init: kernel and bias U(±1/√fan_in), fan_in = out·k²
    (Keras computes the same fan_in for a Conv2DTranspose kernel)."""
    bound = 1.0 / math.sqrt(fan_in)
    return (
        keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
        keras.initializers.RandomUniform(-bound, bound),
    )


def _strided_channels(image_size: int) -> list[int]:
    n = int(round(math.log2(image_size / 4)))
    if image_size < 16 or 4 * 2**n != image_size:
        raise InvalidConfigError(
            f"the DisLib conv VAE takes square images of side 4·2^n ≥ 16 (32, 64, …); got {image_size}"
        )
    return ([32, 32, 64, 64] + [64] * n)[:n]


def dislib_encoder(image_shape: Sequence[int], outputs: int, name: str = "encoder") -> keras.Model:
    """``(B, S, S, C)`` → ``(B, outputs)``: 4×4 stride-2 convs, a 4×4 valid conv to 256 at 1×1,
    a linear layer (App. E). PyTorch's padding 1 on even sizes equals Keras' ``"same"``."""
    h, w, _ = image_shape
    if h != w:
        raise InvalidConfigError(
            f"the DisLib conv VAE takes square images, got {tuple(image_shape)}"
        )
    layers = [keras.Input(tuple(image_shape))]
    for ch in _strided_channels(h):
        layers.append(keras.layers.Conv2D(ch, 4, 2, "same", activation="relu",
                                          kernel_initializer=_kaiming()))  # fmt: skip
    layers += [
        keras.layers.Conv2D(256, 4, 1, "valid", activation="relu", kernel_initializer=_kaiming()),
        keras.layers.Flatten(),
        keras.layers.Dense(outputs, kernel_initializer=_kaiming()),
    ]
    return keras.Sequential(layers, name=name)


def dislib_decoder(image_shape: Sequence[int], z_dim: int, name: str = "decoder") -> keras.Model:
    """``(B, z)`` → logits ``(B, S, S, C)``: linear to 256 at 1×1, a 4×4 transposed conv to 4×4,
    then 4×4 stride-2 transposed convs up to S (App. E)."""
    h, _, c = image_shape
    channels = _strided_channels(h)
    outs = [*reversed(channels[:-1]), c]
    ins = [channels[-1], *outs[:-1]]
    k, b = _torch_transpose_default(channels[-1] * 16)
    layers = [
        keras.Input((z_dim,)),
        keras.layers.Dense(256, kernel_initializer=_kaiming()),
        keras.layers.Reshape((1, 1, 256)),
        keras.layers.ReLU(),
        keras.layers.Conv2DTranspose(channels[-1], 4, 1, "valid", activation="relu",
                                     kernel_initializer=k, bias_initializer=b),
    ]  # fmt: skip
    for i, (cin, cout) in enumerate(zip(ins, outs, strict=True)):
        del cin
        k, b = _torch_transpose_default(cout * 16)
        last = i == len(outs) - 1
        layers.append(keras.layers.Conv2DTranspose(
            cout, 4, 2, "same", activation=None if last else "relu",
            kernel_initializer=k, bias_initializer=b,
        ))  # fmt: skip
    return keras.Sequential(layers, name=name)


def _mlp(inputs: int, hidden: Sequence[int], outputs: int, name: str) -> keras.Model:
    layers = [keras.Input((inputs,))]
    layers += [
        keras.layers.Dense(u, activation="relu", kernel_initializer=_kaiming()) for u in hidden
    ]
    layers.append(keras.layers.Dense(outputs, kernel_initializer=_kaiming()))
    return keras.Sequential(layers, name=name)


def split_pairs(data, image_shape: Sequence[int], model_name: str):
    """The two frames ``(x_{t−1}, x_t)``, each ``(P, *image_shape)``, of a batch of pairs:
    ``(P, 2, *image_shape)``, or the authors' interleaved ``(2P, *image_shape)``. A ``(x, y)``
    tuple is unpacked (labels are ignored)."""
    x = data[0] if isinstance(data, tuple | list) else data
    x = tf.convert_to_tensor(x)
    rank = len(image_shape)
    shape = tuple(x.shape)
    if x.shape.rank == rank + 2:
        if shape[1] is not None and shape[1] != 2:
            raise ValueError(
                f"{model_name} trains on pairs of frames: a batch of shape (P, 2, "
                f"{', '.join(map(str, image_shape))}); got {shape}"
            )
        check_image_batch(x[:, 0], image_shape, model_name)
        return x[:, 0], x[:, 1]
    if x.shape.rank == rank + 1:
        check_image_batch(x, image_shape, model_name)
        if shape[0] is not None and shape[0] % 2:
            raise ValueError(
                f"{model_name} reads a batch of {shape[0]} images as interleaved pairs "
                f"[x1_(t-1), x1_t, x2_(t-1), ...], which needs an even number of images; pass pairs "
                f"as (P, 2, {', '.join(map(str, image_shape))}) or an even batch"
            )
        with tf.control_dependencies([
            tf.debugging.assert_equal(
                tf.shape(x)[0] % 2, 0,
                message=f"{model_name}: an odd batch of images cannot be read as interleaved pairs",
            )
        ]):  # fmt: skip
            x = tf.identity(x)
        return x[0::2], x[1::2]
    raise ValueError(
        f"{model_name} expects pairs (P, 2, {', '.join(map(str, image_shape))}) or interleaved "
        f"frames (2P, {', '.join(map(str, image_shape))}); got shape {shape}"
    )


class _PairModel(ZooModel):
    """What SlowVAE and PCL share: config checks, Adam, metrics, pair batches, the steps."""

    TERMS: tuple[str, ...] = ("loss",)

    def _init_common(self, image_shape, z_dim, learning_rate, adam_beta_1, adam_beta_2):
        self.image_shape = tuple(int(d) for d in image_shape)
        if not self.image_shape or any(d < 1 for d in self.image_shape):
            raise InvalidConfigError(f"image_shape must be positive sizes, got {image_shape}")
        self.z_dim = int(z_dim)
        if self.z_dim < 1:
            raise InvalidConfigError(f"z_dim must be positive, got {z_dim}")
        self.learning_rate = float(learning_rate)
        self.adam_beta_1, self.adam_beta_2 = float(adam_beta_1), float(adam_beta_2)
        self.trackers = {n: keras.metrics.Mean(name=n) for n in self.TERMS}

    def default_optimizer(self):
        return keras.optimizers.Adam(
            self.learning_rate, beta_1=self.adam_beta_1, beta_2=self.adam_beta_2
        )

    @property
    def metrics(self):
        return list(self.trackers.values())

    def get_metrics_result(self):
        return self.updated_metrics_result()

    def frames(self, data):
        """``(x_{t−1}, x_t)`` of a batch of pairs; see :func:`split_pairs`."""
        return split_pairs(data, self.image_shape, self.zoo_name)

    def train_step(self, data):
        x0, x1 = self.frames(data)
        with tf.GradientTape() as tape:
            terms = self.objective(x0, x1, training=True)
            total = scale_loss_for_replicas(terms["loss"])
        apply_scaled_gradients(self.optimizer, tape, total, self.trainable_variables)
        return track_batch_means(self.trackers, terms, x0)

    def test_step(self, data):
        x0, x1 = self.frames(data)
        return track_batch_means(self.trackers, self.objective(x0, x1, training=False), x0)

    def _check_images(self, images):
        images = tf.convert_to_tensor(images)
        check_image_batch(images, self.image_shape, self.zoo_name)
        return images

    def representation(self, images) -> np.ndarray:
        """μ of ``images`` as numpy ``(N, z_dim)``: the function disentanglement metrics take."""
        return self.encode(images)["mu"].numpy()

    def build_for_inputs(self):
        self(tf.zeros((1, *self.image_shape)), training=False)
        return self


@keras.saving.register_keras_serializable(package="zoo")
class SlowVAE(_PairModel):
    """A VAE on pairs of frames with SlowVAE's Laplace transition prior (β-VAE at γ = 0, PM-VAE,
    Ada-GVAE by config). See the module docstring for the loss.

    Args:
        image_shape: one frame, e.g. ``(64, 64, 1)``; ``(200,)`` for the MLP toy.
        z_dim: latent dimensions.
        objective: ``"slowvae"`` (the SlowVAE / β-VAE / PM-VAE loss) or ``"ada_gvae"``.
        beta, gamma: weights of the KL to N(0, I) and of the transition term.
        rate_prior: λ, the Laplace transition prior's rate (scale 1/λ).
        transition: ``"laplace"`` (SlowVAE) or ``"posterior"`` (PM-VAE).
        transition_power: α of a generalized-normal transition prior (1: the Laplace, in closed
            form); ``prior_samples`` Monte-Carlo draws estimate its cross-entropy otherwise.
        architecture: ``"dislib"`` (conv) or ``"mlp"`` with ``hidden`` widths.
        likelihood: ``"bernoulli"`` (logits out) or ``"gaussian"`` (mean out, scale
            ``gaussian_scale``).
    """

    TERMS = ("loss", "reconstruction", "kl_normal", "kl_transition")

    def __init__(
        self,
        image_shape: Sequence[int] = (64, 64, 1),
        z_dim: int = 10,
        objective: str = "slowvae",
        beta: float = 1.0,
        gamma: float = 10.0,
        rate_prior: float = 6.0,
        transition: str = "laplace",
        transition_power: float = 1.0,
        prior_samples: int = 1,
        architecture: str = "dislib",
        hidden: Sequence[int] = (256, 256),
        likelihood: str = "bernoulli",
        gaussian_scale: float = 1.0,
        learning_rate: float = 1e-4,
        adam_beta_1: float = 0.9,
        adam_beta_2: float = 0.999,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_common(image_shape, z_dim, learning_rate, adam_beta_1, adam_beta_2)
        for key, value, allowed in (
            ("objective", objective, OBJECTIVES), ("transition", transition, TRANSITIONS),
            ("architecture", architecture, ARCHITECTURES), ("likelihood", likelihood, LIKELIHOODS),
        ):  # fmt: skip
            if value not in allowed:
                raise InvalidConfigError(f"{key} must be one of {allowed}, got {value!r}")
        if rate_prior <= 0 or transition_power <= 0 or gaussian_scale <= 0 or beta < 0 or gamma < 0:
            raise InvalidConfigError(
                "rate_prior, transition_power and gaussian_scale must be positive and beta, gamma "
                f"non-negative; got {rate_prior}, {transition_power}, {gaussian_scale}, {beta}, "
                f"{gamma}"
            )
        self.objective_name, self.transition = objective, transition
        self.beta, self.gamma = float(beta), float(gamma)
        self.rate_prior, self.transition_power = float(rate_prior), float(transition_power)
        self.prior_samples = int(prior_samples)
        self.architecture, self.hidden = architecture, [int(u) for u in hidden]
        self.likelihood, self.gaussian_scale = likelihood, float(gaussian_scale)
        if architecture == "dislib":
            if len(self.image_shape) != 3:
                raise InvalidConfigError(
                    f"the DisLib conv VAE takes (H, W, C) images, got {image_shape}"
                )
            self.encoder = dislib_encoder(self.image_shape, 2 * self.z_dim)
            self.decoder = dislib_decoder(self.image_shape, self.z_dim)
        else:
            dim = int(np.prod(self.image_shape))
            self.encoder = keras.Sequential(
                [keras.Input(self.image_shape), keras.layers.Flatten(),
                 _mlp(dim, self.hidden, 2 * self.z_dim, "encoder_mlp")], name="encoder",
            )  # fmt: skip
            self.decoder = keras.Sequential(
                [keras.Input((self.z_dim,)), _mlp(self.z_dim, self.hidden[::-1], dim, "decoder_mlp"),
                 keras.layers.Reshape(self.image_shape)], name="decoder",
            )  # fmt: skip

    def get_config(self):
        return {
            "name": self.name,
            "image_shape": list(self.image_shape),
            "z_dim": self.z_dim,
            "objective": self.objective_name,
            "beta": self.beta,
            "gamma": self.gamma,
            "rate_prior": self.rate_prior,
            "transition": self.transition,
            "transition_power": self.transition_power,
            "prior_samples": self.prior_samples,
            "architecture": self.architecture,
            "hidden": self.hidden,
            "likelihood": self.likelihood,
            "gaussian_scale": self.gaussian_scale,
            "learning_rate": self.learning_rate,
            "adam_beta_1": self.adam_beta_1,
            "adam_beta_2": self.adam_beta_2,
            **self._identity_config(),
        }

    # -- the VAE -------------------------------------------------------------------------------
    def moments(self, images, training=False):
        """``(mu, logvar)``, each ``(B, z_dim)``: the posterior q(z|x) of each frame."""
        out = self.encoder(images, training=training)
        return out[:, : self.z_dim], out[:, self.z_dim :]

    def encode(self, images, training=False) -> dict[str, tf.Tensor]:
        """``images (B, *image_shape)`` → ``{"mu", "logvar"}``, each ``(B, z_dim)``."""
        mu, logvar = self.moments(self._check_images(images), training=training)
        return {"mu": mu, "logvar": logvar}

    def decode_logits(self, z, training=False):
        """``z (B, z_dim)`` → decoder output (Bernoulli logits, or the Gaussian mean)."""
        z = tf.convert_to_tensor(z)
        if z.shape.rank is not None and (
            z.shape.rank != 2 or z.shape[-1] not in (None, self.z_dim)
        ):
            raise ValueError(
                f"{self.zoo_name} decodes latents of shape (batch, {self.z_dim}); got {tuple(z.shape)}"
            )
        return self.decoder(z, training=training)

    def decode(self, z, training=False) -> dict[str, tf.Tensor]:
        """``z (B, z_dim)`` → ``{"probabilities"}`` (Bernoulli) or ``{"mean"}`` (Gaussian)."""
        out = self.decode_logits(z, training=training)
        if self.likelihood == "bernoulli":
            return {"probabilities": tf.sigmoid(out)}
        return {"mean": out}

    def reconstruct(self, images, training=False) -> dict[str, tf.Tensor]:
        """Decode the posterior mean: ``{"probabilities" | "mean", "mu", "logvar"}``."""
        code = self.encode(images, training=training)
        return {**self.decode(code["mu"], training=training), **code}

    def call(self, x, training=False):
        """The reconstruction (probabilities or mean) of images, or of pairs ``(P, 2, ...)``."""
        x = tf.convert_to_tensor(x)
        if x.shape.rank == len(self.image_shape) + 2:
            flat = tf.reshape(x, (-1, *self.image_shape))
            out = next(iter(self.reconstruct(flat, training=training).values()))
            return tf.reshape(out, tf.shape(x))
        return next(iter(self.reconstruct(x, training=training).values()))

    # -- the losses ------------------------------------------------------------------------------
    def _reconstruction(self, x, out):
        """Σ over pixels of −log p(x|z), per image ``(B,)`` (summed, not averaged: pitfall 1)."""
        axes = list(range(1, len(self.image_shape) + 1))
        x = tf.cast(x, out.dtype)
        if self.likelihood == "bernoulli":
            nll = tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=out)
        else:
            nll = 0.5 * tf.square((x - out) / self.gaussian_scale)
        return tf.reduce_sum(nll, axis=axes)

    def objective(self, x0, x1, training=False, noise=None) -> dict[str, tf.Tensor]:
        """The loss and its terms on the frames ``x0 = x_{t−1}``, ``x1 = x_t`` (P each).

        ``noise``: the reparameterisation ε, ``(2P, z_dim)`` for ``[x0; x1]`` (drawn if None)."""
        if self.objective_name == "ada_gvae":
            return self._ada_gvae(x0, x1, training, noise)
        p = tf.shape(x0)[0]
        x = tf.concat([x0, x1], axis=0)
        mu, logvar = self.moments(x, training=training)
        if noise is None:
            noise = tf.random.normal(tf.shape(mu), dtype=mu.dtype)
        out = self.decoder(mu + tf.exp(0.5 * logvar) * noise, training=training)
        rec = tf.reduce_mean(self._reconstruction(x, out))
        entropy = tf.reduce_mean(tf.reduce_sum(normal_entropy(logvar), axis=1))
        ce_normal = tf.reduce_mean(tf.reduce_sum(cross_entropy_normal_standard(mu, logvar), axis=1))
        mu0, mu1 = mu[:p], mu[p:]
        lv0, lv1 = logvar[:p], logvar[p:]
        # 002_7240b1e8d13f6586.txt, SlowVAE eq. 4 with the code's bookkeeping (digest a.1): the
        # prior of each frame is centred on the other frame's mean; both directions.
        if self.transition == "laplace":
            ce_t = transition_cross_entropy(
                mu0, lv0, mu1, self.rate_prior, self.transition_power, self.prior_samples
            ) + transition_cross_entropy(
                mu1, lv1, mu0, self.rate_prior, self.transition_power, self.prior_samples
            )
        else:  # PM-VAE, App. F.3: the other frame's posterior is the prior
            ce_t = cross_entropy_normals(mu0, lv0, mu1, lv1) + cross_entropy_normals(
                mu1, lv1, mu0, lv0
            )
        ce_transition = tf.reduce_mean(tf.reduce_sum(ce_t, axis=1))
        kl_normal = ce_normal - entropy
        kl_transition = ce_transition - entropy
        loss = 2.0 * rec
        # A term with weight 0 is reported but kept out of the loss: 0 · NaN (a collapsed
        # posterior variance overflows m/σ in CE_L) would otherwise poison the gradient.
        if self.beta:
            loss += self.beta * kl_normal
        if self.gamma:
            loss += self.gamma * kl_transition
        return {"loss": loss, "reconstruction": rec, "kl_normal": kl_normal,
                "kl_transition": kl_transition}  # fmt: skip

    def _ada_gvae(self, x0, x1, training, noise):
        """disentanglement_lib's GroupVAEArgmax (Locatello et al. 2020, adaptive k)."""
        p = tf.shape(x0)[0]
        mu, logvar = self.moments(tf.concat([x0, x1], axis=0), training=training)
        mu0, mu1, lv0, lv1 = mu[:p], mu[p:], logvar[:p], logvar[p:]
        v0, v1 = tf.exp(lv0), tf.exp(lv1)
        # 2·KL(q0 ‖ q1) per dimension (the library's form; the factor 2 leaves the split as is).
        kl = v0 / v1 + tf.square(mu1 - mu0) / v1 - 1.0 + lv1 - lv0
        lo = tf.reduce_min(kl, axis=1, keepdims=True)
        hi = tf.reduce_max(kl, axis=1, keepdims=True)
        keep = (kl >= 0.5 * (lo + hi)) & (hi > lo)  # the upper of two equal-width bins
        avg_mu, avg_lv = 0.5 * (mu0 + mu1), tf.math.log(0.5 * (v0 + v1))
        m = tf.concat([tf.where(keep, mu0, avg_mu), tf.where(keep, mu1, avg_mu)], axis=0)
        lv = tf.concat([tf.where(keep, lv0, avg_lv), tf.where(keep, lv1, avg_lv)], axis=0)
        if noise is None:
            noise = tf.random.normal(tf.shape(m), dtype=m.dtype)
        out = self.decoder(m + tf.exp(0.5 * lv) * noise, training=training)
        rec_images = self._reconstruction(tf.concat([x0, x1], axis=0), out)
        rec = 0.5 * tf.reduce_mean(rec_images[:p]) + 0.5 * tf.reduce_mean(rec_images[p:])
        kl_images = 0.5 * tf.reduce_sum(tf.square(m) + tf.exp(lv) - lv - 1.0, axis=1)
        kl_normal = 0.5 * tf.reduce_mean(kl_images[:p]) + 0.5 * tf.reduce_mean(kl_images[p:])
        shared = tf.reduce_mean(1.0 - tf.cast(keep, tf.float32)) * self.z_dim
        return {"loss": rec + self.beta * kl_normal, "reconstruction": rec,
                "kl_normal": kl_normal, "kl_transition": shared}  # fmt: skip

    # -- serving -------------------------------------------------------------------------------
    def serving_signatures(self):
        images = tf.TensorSpec((None, *self.image_shape), tf.float32, name="images")
        z = tf.TensorSpec((None, self.z_dim), tf.float32, name="z")

        def encode(images):
            return self.encode(images)

        return {
            "serving_default": (encode, [images]),
            "encode": (encode, [images]),
            "decode": (lambda z: self.decode(z), [z]),
            "reconstruct": (lambda images: self.reconstruct(images), [images]),
        }


@keras.saving.register_keras_serializable(package="zoo")
class PCL(_PairModel):
    """Permutation contrastive learning (Hyvärinen & Morioka 2017) on the DisLib encoder.

    ``encode(images)`` → ``{"mu"}``: the ``(B, z_dim)`` features h(x) (no variance, no decoder).
    Trained by logistic regression of ``(h_t, h_{t−1})`` (label 1) against ``(h_t, h_{t−1}[π])``
    with π a random permutation of the batch (label 0)."""

    TERMS = ("loss", "accuracy")

    def __init__(
        self,
        image_shape: Sequence[int] = (64, 64, 1),
        z_dim: int = 10,
        learning_rate: float = 1e-4,
        adam_beta_1: float = 0.9,
        adam_beta_2: float = 0.999,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_common(image_shape, z_dim, learning_rate, adam_beta_1, adam_beta_2)
        if len(self.image_shape) != 3:
            raise InvalidConfigError(f"PCL's encoder takes (H, W, C) images, got {image_shape}")
        self.encoder = dislib_encoder(self.image_shape, self.z_dim)
        self.w1 = self.add_weight(shape=(self.z_dim,), initializer="ones", name="w1")
        self.w2 = self.add_weight(
            shape=(self.z_dim,), initializer=keras.initializers.Constant(-1.0), name="w2"
        )
        self.b = self.add_weight(shape=(self.z_dim,), initializer="zeros", name="b")
        self.c = self.add_weight(shape=(), initializer="zeros", name="c")

    def get_config(self):
        return {
            "name": self.name,
            "image_shape": list(self.image_shape),
            "z_dim": self.z_dim,
            "learning_rate": self.learning_rate,
            "adam_beta_1": self.adam_beta_1,
            "adam_beta_2": self.adam_beta_2,
            **self._identity_config(),
        }

    def encode(self, images, training=False) -> dict[str, tf.Tensor]:
        return {"mu": self.encoder(self._check_images(images), training=training)}

    def call(self, x, training=False):
        return self.encode(x, training=training)["mu"]

    def logits(self, h_t, h_previous):
        """``r(h_t, h_{t−1}) = −Σ_d |w1 h_t + w2 h_{t−1} + b| + Σ_d h_t² + c``, ``(B,)``."""
        return (
            -tf.reduce_sum(tf.abs(self.w1 * h_t + self.w2 * h_previous + self.b), axis=1)
            + tf.reduce_sum(tf.square(h_t), axis=1)
            + self.c
        )

    def objective(self, x0, x1, training=False, permutation=None) -> dict[str, tf.Tensor]:
        p = tf.shape(x0)[0]
        h = self.encoder(tf.concat([x0, x1], axis=0), training=training)
        h0, h1 = h[:p], h[p:]
        if permutation is None:
            permutation = tf.random.shuffle(tf.range(p))
        logits = tf.concat([self.logits(h1, h0), self.logits(h1, tf.gather(h0, permutation))], 0)
        labels = tf.concat([tf.ones((p,)), tf.zeros((p,))], 0)
        loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
        accuracy = tf.reduce_mean(tf.cast((logits > 0) == (labels > 0.5), tf.float32))
        return {"loss": loss, "accuracy": accuracy}

    def serving_signatures(self):
        images = tf.TensorSpec((None, *self.image_shape), tf.float32, name="images")

        def encode(images):
            return self.encode(images)

        return {"serving_default": (encode, [images]), "encode": (encode, [images])}


# -- registered models -----------------------------------------------------------------------------
# One frame of each dataset, and its pair dataset (LAP by default, as the paper's Laplace rows).
_DATASETS = {
    "sprites": ((64, 64, 1), "sprites/lap"),
    "dsprites": ((64, 64, 1), "dsprites/lap"),
    "shapes3d": ((64, 64, 3), "shapes3d/lap"),
    "smallnorb": ((64, 64, 1), "smallnorb/lap"),
    "kitti": ((64, 64, 1), "kitti_masks"),
}
# 13 epochs of the 737,280-pair sprites/dsprites epoch ≈ the authors' 300,000 steps of 32 pairs.
_TRAINING = {"epochs": 13, "batch_size": 32, "eval_split": "test"}


def _slowvae(name: str, config: dict[str, Any]) -> SlowVAE:
    return SlowVAE(name=building_name(name), **config).build_for_inputs()


@register_model(
    "slowvae_sprites", family="slowvae", dataset="sprites/lap", paper=PAPER, training=_TRAINING,
    description="SlowVAE (β 1, γ 10, λ 6) on LAP pairs of the procedural sprites (the offline "
    "default), DisLib conv VAE; 763,285 parameters",
)  # fmt: skip
def slowvae_sprites(
    image_shape=(64, 64, 1), z_dim=10, objective="slowvae", beta=1.0, gamma=10.0, rate_prior=6.0,
    transition="laplace", transition_power=1.0, prior_samples=1, architecture="dislib",
    hidden=(256, 256), likelihood="bernoulli", gaussian_scale=1.0, learning_rate=1e-4,
    adam_beta_1=0.9, adam_beta_2=0.999,
):  # fmt: skip
    """SlowVAE on LAP pairs of the procedural sprites (the offline default): DisLib conv VAE,
    z 10, β 1, γ 10, λ 6, Adam 1e-4, 32 pairs per step; 763,285 parameters."""
    return _slowvae("slowvae_sprites", dict(locals()))


def _describe(model: str, data: str) -> str:
    what = {
        "slowvae": "SlowVAE (β 1, γ 10, λ 6)",
        "betavae": "β-VAE baseline (β 8, γ 0; the SlowVAE code path without the transition term)",
        "ada_gvae": "Ada-GVAE (adaptive averaging of shared latents, β 1)",
    }[model]
    return f"{what} on {data} pairs, DisLib conv VAE"


for _data, (_shape, _dataset) in _DATASETS.items():
    for _model, _changes in (
        ("slowvae", {}), ("betavae", {"beta": 8.0, "gamma": 0.0}),
        ("ada_gvae", {"objective": "ada_gvae", "beta": 1.0, "gamma": 0.0}),
    ):  # fmt: skip
        _name = f"{_model}_{_data}"
        if _name == "slowvae_sprites":
            continue
        globals()[_name] = register_variant(
            _name, of=slowvae_sprites, image_shape=_shape, dataset=_dataset,
            description=_describe(_model, _dataset.split("/")[0]), **_changes,
        )  # fmt: skip


def _pcl(name: str, config: dict[str, Any]) -> PCL:
    return PCL(name=building_name(name), **config).build_for_inputs()


@register_model(
    "pcl_sprites", family="slowvae", dataset="sprites/lap", paper=PAPER, training=_TRAINING,
    description="PCL (permutation contrastive learning) on sprites pairs, DisLib encoder",
)  # fmt: skip
def pcl_sprites(image_shape=(64, 64, 1), z_dim=10, learning_rate=1e-4, adam_beta_1=0.9,
                adam_beta_2=0.999):  # fmt: skip
    """PCL (permutation contrastive learning) on LAP pairs of sprites: the DisLib encoder with
    z_dim outputs, logistic regression of true vs shuffled pairs."""
    return _pcl("pcl_sprites", dict(locals()))


for _data, (_shape, _dataset) in _DATASETS.items():
    if _data != "sprites":
        globals()[f"pcl_{_data}"] = register_variant(
            f"pcl_{_data}", of=pcl_sprites, image_shape=_shape, dataset=_dataset,
            description=f"PCL on {_dataset.split('/')[0]} pairs, DisLib encoder",
        )  # fmt: skip


@register_model(
    "slowvae_toy", family="slowvae", dataset="laplace_transitions", paper=PAPER,
    training={"epochs": 4, "batch_size": 64, "eval_split": "test"},
    description="App. B's theory check: MLP SlowVAE on 200-D mixtures of 20-D latents with "
    "Laplace transitions",
)  # fmt: skip
def slowvae_toy(
    image_shape=(200,), z_dim=20, objective="slowvae", beta=1.0, gamma=10.0, rate_prior=1.0,
    transition="laplace", transition_power=1.0, prior_samples=1, architecture="mlp",
    hidden=(256, 256), likelihood="gaussian", gaussian_scale=0.1, learning_rate=1e-3,
    adam_beta_1=0.9, adam_beta_2=0.999,
):  # fmt: skip
    """App. B's theory check: an MLP SlowVAE (Gaussian likelihood, scale 0.1) on 200-D nonlinear
    mixtures of 20-D latents with Laplace transitions of rate 1 (dataset laplace_transitions),
    with the prior's rate matched to the data's (λ = 1)."""
    return _slowvae("slowvae_toy", dict(locals()))
