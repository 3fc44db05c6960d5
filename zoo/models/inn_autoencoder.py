"""INN autoencoders and their classical baselines (Nguyen, Ardizzone & Köthe, "Training invertible
neural networks as autoencoders", 003_2c9ba5de01816b66.txt; shared/digests/invertible_inn_ae_firevnet.md §1).

**INN autoencoder.** An invertible network F maps an image to a latent of the same dimension d.
The encoder keeps the first ``k`` latent coordinates (the artificial bottleneck); the decoder sets
the other d − k to zero and inverts: ``x̂ = F⁻¹([F(x)[:k], 0])`` (§2.2). One network serves one k.
Architecture, as the authors' code builds it (FrEIA graph, no permutations): Haar downsampling →
3 two-sided affine "glow" couplings with conv subnets → (for CelebA a second Haar level with 3
more) → one two-sided coupling on the flattened vector with four fully connected subnets → Haar
restore. Subnets: conv3×3 → LeakyReLU(0.1) → conv3×3 → LeakyReLU(0.1) → conv1×1 (no BatchNorm),
and Linear → ReLU → Linear; log-scales soft-clamped at 1; every parameter drawn from N(0, 0.1²)
and the last layer of every subnet zeroed, so each coupling starts as the identity. The latent
and the flat coupling's input are flattened in PyTorch's channel-major (NCHW) order, so the k
kept coordinates are the reference's.

**Loss** (eqs. 5–6): ``a_rec · mean|x − x̂| + a_spar · mean(z_rest²)``, per-element means; one
``train_step`` runs the encoder and the decoder and gradients flow through both. The INN-VAE adds
``mmd_weight · MMD(code, ε)``, ε ~ N(0, I_k), with the inverse multiquadric kernels of the
authors' code (:func:`mmd_multiscale`), and can ``sample``.

**Optimisation, as the authors' code runs it** (digest §1.7, §1.9): Adam with betas (0.8, 0.8)
and eps 1e-4 for the INN (PyTorch defaults for the classical AEs), learning rate divided by 10 at
*epoch* milestones (the refactored reference steps its scheduler per batch, a bug), and weight
decay as PyTorch's Adam applies it: coupled L2, ``½·wd·Σθ²`` added to the loss
(``weight_decay_mode: "coupled_l2"`` in the config), not Keras' decoupled AdamW-style decay.

**Classical baselines** (§3.1, the authors' ``MNIST_autoencoder.py`` etc.): MLPs 784-512-256-128-k,
784-1024×3-k, 784-2048×3-k and 784-1024×4-k with ReLU, no activation at the code and tanh at the
output; conv AEs for CIFAR-10 and CelebA. Xavier-uniform kernels, biases 0.01.

Every model has ``encode(x)`` → ``(batch, k)``, ``decode(code)`` → images, ``reconstruct(x)``
and exports the signatures of the same names; ``model(x)`` is the reconstruction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from zoo.layers.invertible import (
    Concatenated,
    FlattenNCHW,
    HaarDownsampling,
    HaarUpsampling,
    InvertibleSequential,
    TwoSidedAffineCoupling,
    UnflattenNCHW,
    conv_network,
    coupling_branches,
    dense_network,
)
from zoo.models.base import (
    ZooModel,
    apply_scaled_gradients,
    check_image_batch,
    scale_loss_for_replicas,
    track_batch_means,
)
from zoo.precision import inference_scope
from zoo.registry import InvalidConfigError, building_name, register_model, register_variant

__all__ = [
    "AutoencoderModel",
    "INNAutoencoder",
    "ClassicAutoencoder",
    "mmd_multiscale",
    "MMD_WIDTHS",
]

PAPER = "003_2c9ba5de01816b66.txt"
MMD_WIDTHS = (0.2, 0.5, 0.9, 1.3)


def mmd_multiscale(x, y, widths: Sequence[float] = MMD_WIDTHS) -> tf.Tensor:
    """The biased MMD estimate ``mean(Kxx + Kyy − 2Kxy)`` with the inverse multiquadric kernels
    ``K(a, b) = Σ_h h² / (h² + ‖a − b‖²)`` over ``widths`` (the INN-VAE's, eq. 6 and the authors'
    ``MMD_multiscale``). ``x`` and ``y``: ``(n, k)``; 0 for identical samples."""
    x = tf.cast(x, tf.float32)
    y = tf.cast(y, tf.float32)

    def sq_dist(a, b):
        return (
            tf.reduce_sum(a * a, 1)[:, None]
            + tf.reduce_sum(b * b, 1)[None, :]
            - 2.0 * tf.matmul(a, b, transpose_b=True)
        )

    def kernel(d):
        d = tf.maximum(d, 0.0)
        return tf.add_n([h * h / (h * h + d) for h in widths])

    return tf.reduce_mean(
        kernel(sq_dist(x, x)) + kernel(sq_dist(y, y)) - 2.0 * kernel(sq_dist(x, y))
    )


class LearningRateMilestones(keras.callbacks.Callback):
    """Sets the learning rate at each epoch's start: ``base · gamma^(number of milestones ≤
    epoch)`` (PyTorch's ``MultiStepLR`` stepped once per epoch). Epochs count from 0, so a
    milestone of 8 lowers the rate from the 9th epoch on; a resumed run gets the right rate."""

    def __init__(self, base: float, milestones: Sequence[int], gamma: float = 0.1):
        super().__init__()
        self.base, self.milestones, self.gamma = float(base), sorted(milestones), float(gamma)

    def rate(self, epoch: int) -> float:
        return self.base * self.gamma ** sum(epoch >= m for m in self.milestones)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rate(epoch))


class AutoencoderModel(ZooModel):
    """What the INN and the classical autoencoders share: the config, the optimizer with the
    authors' Adam settings and coupled L2, the epoch milestones, metrics and signatures.

    Subclasses implement ``encode(x, training)``, ``decode(code, training)`` and
    ``_objective(x, training) -> dict`` (whose ``"loss"`` is the objective without weight decay).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        k: int,
        learning_rate: float = 1e-3,
        adam_beta_1: float = 0.9,
        adam_beta_2: float = 0.999,
        adam_epsilon: float = 1e-8,
        weight_decay: float = 0.0,
        weight_decay_mode: str = "coupled_l2",
        lr_milestones: Sequence[int] = (),
        lr_gamma: float = 0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.dim = int(np.prod(self.image_shape))
        if not 1 <= int(k) <= self.dim:
            raise InvalidConfigError(f"k (the bottleneck size) must be in 1..{self.dim}, got {k}")
        if weight_decay_mode != "coupled_l2":
            raise InvalidConfigError(
                "weight_decay_mode must be 'coupled_l2' (½·wd·Σθ² added to the loss, as PyTorch's "
                f"Adam weight_decay in the reference); got {weight_decay_mode!r}"
            )
        self.k = int(k)
        self.learning_rate = float(learning_rate)
        self.adam_beta_1, self.adam_beta_2 = float(adam_beta_1), float(adam_beta_2)
        self.adam_epsilon = float(adam_epsilon)
        self.weight_decay = float(weight_decay)
        self.weight_decay_mode = weight_decay_mode
        self.lr_milestones = [int(m) for m in lr_milestones]
        self.lr_gamma = float(lr_gamma)
        self.trackers = {
            n: keras.metrics.Mean(name=n) for n in ("loss", "reconstruction", "sparsity", "mmd")
        }

    def get_config(self):
        return {
            "name": self.name,
            "image_shape": list(self.image_shape),
            "k": self.k,
            "learning_rate": self.learning_rate,
            "adam_beta_1": self.adam_beta_1,
            "adam_beta_2": self.adam_beta_2,
            "adam_epsilon": self.adam_epsilon,
            "weight_decay": self.weight_decay,
            "weight_decay_mode": self.weight_decay_mode,
            "lr_milestones": self.lr_milestones,
            "lr_gamma": self.lr_gamma,
            **self._identity_config(),
        }

    # -- training -------------------------------------------------------------------------------
    def default_optimizer(self):
        return keras.optimizers.Adam(
            self.learning_rate, beta_1=self.adam_beta_1, beta_2=self.adam_beta_2,
            epsilon=self.adam_epsilon,
        )  # fmt: skip

    def training_callbacks(self):
        if not self.lr_milestones:
            return []
        return [LearningRateMilestones(self.learning_rate, self.lr_milestones, self.lr_gamma)]

    @property
    def metrics(self):
        return list(self.trackers.values())

    def get_metrics_result(self):
        return self.updated_metrics_result()

    def _l2(self):
        if not self.weight_decay:
            return tf.constant(0.0)
        return (
            0.5
            * self.weight_decay
            * tf.add_n(
                [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in self.trainable_variables]
            )
        )

    @staticmethod
    def _images(data):
        return data[0] if isinstance(data, tuple | list) else data

    def train_step(self, data):
        x = self._images(data)
        with tf.GradientTape() as tape:
            terms = self._objective(x, training=True)
            total = scale_loss_for_replicas(terms["loss"] + self._l2())
        apply_scaled_gradients(self.optimizer, tape, total, self.trainable_variables)
        return track_batch_means(self.trackers, terms, x)

    def test_step(self, data):
        x = self._images(data)
        return track_batch_means(self.trackers, self._objective(x, training=False), x)

    # -- the autoencoder ------------------------------------------------------------------------
    def call(self, x, training=False):
        return self.reconstruct(x, training=training)

    def reconstruct(self, x, training=False):
        """``decode(encode(x))``: images of the input's shape."""
        return self.decode(self.encode(x, training=training), training=training)

    def _check_images(self, x):
        x = tf.convert_to_tensor(x)
        check_image_batch(x, self.image_shape, self.zoo_name)
        return x

    def _check_code(self, code):
        code = tf.convert_to_tensor(code)
        if code.shape.rank is not None and (
            code.shape.rank != 2 or code.shape[-1] not in (None, self.k)
        ):
            raise ValueError(
                f"{self.zoo_name} decodes codes of shape (batch, {self.k}); got {tuple(code.shape)}"
            )
        return code

    def build_for_inputs(self):
        self(tf.zeros((1, *self.image_shape)), training=False)
        return self

    def serving_signatures(self):
        images = tf.TensorSpec((None, *self.image_shape), tf.float32, name="images")
        code = tf.TensorSpec((None, self.k), tf.float32, name="code")

        def reconstruct(images):
            c = self.encode(images, training=False)
            return {"reconstruction": self.decode(c, training=False), "code": c}

        return {
            "serving_default": (reconstruct, [images]),
            "reconstruct": (reconstruct, [images]),
            "encode": (lambda images: {"code": self.encode(images, training=False)}, [images]),
            "decode": (lambda code: {"images": self.decode(code, training=False)}, [code]),
        }


# -- the INN autoencoder --------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class INNAutoencoder(AutoencoderModel):
    """An invertible network with an artificial bottleneck of ``k`` coordinates.

    Args:
        levels: the number of conv couplings after each Haar downsampling (``[3]`` for MNIST and
            CIFAR-10, ``[3, 3]`` for CelebA).
        conv_hidden, fc_hidden: subnet widths. clamp: soft clamp of the log-scales.
        init_std: std of the N(0, σ²) initialisation of every subnet parameter but the last
            layer's (zero).
        reconstruction_weight, sparsity_weight: a_rec and a_spar of the loss.
        variational, mmd_weight: the INN-VAE (adds ``mmd_weight · MMD(code, N(0, I_k))`` and the
            ``sample`` signature).
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        k: int = 12,
        levels: Sequence[int] = (3,),
        conv_hidden: int = 100,
        fc_hidden: int = 180,
        clamp: float = 1.0,
        init_std: float = 0.1,
        reconstruction_weight: float = 1.0,
        sparsity_weight: float = 1.0,
        variational: bool = False,
        mmd_weight: float = 0.0,
        **kwargs,
    ):
        super().__init__(image_shape=image_shape, k=k, **kwargs)
        self.levels = [int(n) for n in levels]
        self.conv_hidden, self.fc_hidden = int(conv_hidden), int(fc_hidden)
        self.clamp, self.init_std = float(clamp), float(init_std)
        self.reconstruction_weight = float(reconstruction_weight)
        self.sparsity_weight = float(sparsity_weight)
        self.variational, self.mmd_weight = bool(variational), float(mmd_weight)
        h, w, c = self.image_shape
        if h % 2 ** len(self.levels) or w % 2 ** len(self.levels):
            raise InvalidConfigError(
                f"{len(self.levels)} Haar level(s) need H and W divisible by {2 ** len(self.levels)}; "
                f"got {self.image_shape}"
            )

        def init():
            return keras.initializers.RandomNormal(stddev=self.init_std)

        blocks = []
        for level, couplings in enumerate(self.levels):
            blocks.append(HaarDownsampling(name=f"haar{level + 1}"))
            h, w, c = h // 2, w // 2, 4 * c
            for i in range(couplings):
                c1, c2 = c // 2, c - c // 2

                def subnet(out, name):
                    return conv_network(
                        self.conv_hidden, out, depth=3, batchnorm=False, name=name,
                        activation=lambda: keras.layers.LeakyReLU(0.1), last_kernel_size=1,
                        initializer=init(),
                    )  # fmt: skip

                tag = f"conv{level + 1}{i + 1}"
                blocks.append(
                    TwoSidedAffineCoupling(
                        subnet(2 * c2, f"{tag}_net1"), subnet(2 * c1, f"{tag}_net2"),
                        clamp=self.clamp, name=tag,
                    )
                )  # fmt: skip
        d = h * w * c
        blocks.append(FlattenNCHW(name="flatten"))

        def fc_subnet(out, name):
            return Concatenated(
                [dense_network(self.fc_hidden, out, depth=2, initializer=init(), name=f"{name}_{p}")
                 for p in ("s", "t")], name=name,
            )  # fmt: skip

        c1 = d // 2
        blocks.append(
            TwoSidedAffineCoupling(
                fc_subnet(d - c1, "fc_net1"), fc_subnet(c1, "fc_net2"), clamp=self.clamp, name="fc"
            )
        )
        blocks.append(UnflattenNCHW((h, w, c), name="unflatten"))
        for level in reversed(range(len(self.levels))):
            blocks.append(HaarUpsampling(name=f"haar_restore{level + 1}"))
        blocks.append(FlattenNCHW(name="latent"))
        self.flow = InvertibleSequential(blocks, reversible=False, name="inn")

    def get_config(self):
        return {
            **super().get_config(),
            "levels": self.levels,
            "conv_hidden": self.conv_hidden,
            "fc_hidden": self.fc_hidden,
            "clamp": self.clamp,
            "init_std": self.init_std,
            "reconstruction_weight": self.reconstruction_weight,
            "sparsity_weight": self.sparsity_weight,
            "variational": self.variational,
            "mmd_weight": self.mmd_weight,
        }

    def forward(self, x, training=False):
        """The full latent ``F(x)``, ``(batch, d)`` in NCHW order."""
        x = self._check_images(x)
        with inference_scope(self, training):  # inference is exact to float32 (zoo.precision)
            return self.flow(x, training=training)

    def inverse(self, z, training=False):
        """``F⁻¹(z)`` for a full latent ``(batch, d)``: images."""
        z = tf.convert_to_tensor(z)
        with inference_scope(self, training):
            return self.flow.inverse(z, training=training)

    def mixed_precision_blocks(self, mode):
        """The coupling branches, in the training pass only (as the flow classifiers)."""
        return coupling_branches(self)

    def float32_reason(self):
        return (
            "the couplings' sums and scales stay float32; the coupling branches compute in the "
            "mixed precision in the training pass only, inference runs in float32"
        )

    def encode(self, x, training=False):
        return self.forward(x, training=training)[:, : self.k]

    def decoder_input(self, code):
        """``[code, 0]``: the full latent the decoder inverts (exactly d − k zeros)."""
        code = self._check_code(code)
        return tf.concat([code, tf.zeros((tf.shape(code)[0], self.dim - self.k), code.dtype)], -1)

    def decode(self, code, training=False):
        return self.inverse(self.decoder_input(code), training=training)

    def sample(self, n: int, seed=None):
        """``n`` images decoded from codes drawn from N(0, I_k) (meaningful for the INN-VAE).

        ``n = 0`` gives an empty batch (Keras convolutions fail on empty batches on CPU, so at
        least one code is decoded and the result sliced)."""
        n = tf.convert_to_tensor(n, tf.int32)
        code = tf.random.normal((tf.maximum(n, 1), self.k), seed=seed)
        return self.decode(code)[:n]

    def _objective(self, x, training):
        z = self.flow(x, training=training)
        code, rest = z[:, : self.k], z[:, self.k :]
        x_hat = self.flow.inverse(self.decoder_input(code), training=training)
        rec = tf.reduce_mean(tf.abs(tf.cast(x, tf.float32) - tf.cast(x_hat, tf.float32)))
        spar = tf.reduce_mean(tf.square(rest)) if self.k < self.dim else tf.constant(0.0)
        loss = self.reconstruction_weight * rec + self.sparsity_weight * spar
        terms = {"reconstruction": rec, "sparsity": spar}
        if self.variational:
            mmd = mmd_multiscale(code, tf.random.normal(tf.shape(code)))
            loss += self.mmd_weight * mmd
            terms["mmd"] = mmd
        return {"loss": loss, **terms}

    def serving_signatures(self):
        signatures = super().serving_signatures()
        if self.variational:
            n = tf.TensorSpec((), tf.int32, name="n")
            signatures["sample"] = (lambda n: {"images": self.sample(n)}, [n])
        return signatures


# -- classical autoencoders -------------------------------------------------------------------------
def _dense(units, activation=None):
    return keras.layers.Dense(
        units, activation=activation, kernel_initializer="glorot_uniform",
        bias_initializer=keras.initializers.Constant(0.01),
    )  # fmt: skip


def _conv(filters, k, stride=1, transpose=False, activation="relu"):
    cls = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    return cls(
        filters, k, strides=stride, padding="valid", activation=activation,
        kernel_initializer="glorot_uniform", bias_initializer=keras.initializers.Constant(0.01),
    )  # fmt: skip


ARCHITECTURES = ("mlp", "cifar_conv", "celeba_conv")


@keras.saving.register_keras_serializable(package="zoo")
class ClassicAutoencoder(AutoencoderModel):
    """A classical encoder/decoder with a ``k``-dimensional code, trained on mean L1.

    ``architecture``:
    - ``"mlp"``: ``widths`` hidden ReLU layers down to k (no activation), mirrored up to the
      image with tanh (the MNIST baselines);
    - ``"cifar_conv"``: the authors' CIFAR-10 AE (convs 64-128, max-pool, 256-512, max-pool,
      1024 to 3×3, FC to k; mirrored with transposed convs and up-sampling; tanh);
    - ``"celeba_conv"``: the authors' CelebA AE (5 stride-2 4×4 convs 128-256-512-1024-1024 on
      218×178 to 5×4, FC to k, mirrored).
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        k: int = 12,
        architecture: str = "mlp",
        widths: Sequence[int] = (512, 256, 128),
        **kwargs,
    ):
        super().__init__(image_shape=image_shape, k=k, **kwargs)
        if architecture not in ARCHITECTURES:
            raise InvalidConfigError(
                f"architecture must be one of {ARCHITECTURES}, got {architecture!r}"
            )
        self.architecture = architecture
        self.widths = [int(w) for w in widths]
        expected = {"cifar_conv": (32, 32, 3), "celeba_conv": (218, 178, 3)}.get(architecture)
        if expected is not None and self.image_shape != expected:
            raise InvalidConfigError(
                f"architecture {architecture!r} takes images of shape {expected}"
            )
        self.encoder, self.decoder = self._build_networks()

    def _build_networks(self):
        h, w, c = self.image_shape
        enc, dec = [keras.Input(self.image_shape)], [keras.Input((self.k,))]
        if self.architecture == "mlp":
            enc += [
                keras.layers.Flatten(),
                *[_dense(u, "relu") for u in self.widths],
                _dense(self.k),
            ]
            dec += [*[_dense(u, "relu") for u in reversed(self.widths)], _dense(h * w * c, "tanh"),
                    keras.layers.Reshape(self.image_shape)]  # fmt: skip
        elif self.architecture == "cifar_conv":
            pool = keras.layers.MaxPool2D(2)
            enc += [_conv(64, 3), _conv(128, 3), pool, _conv(256, 3), _conv(512, 3),
                    keras.layers.MaxPool2D(2), _conv(1024, 3), keras.layers.Flatten(), _dense(self.k)]  # fmt: skip
            dec += [_dense(3 * 3 * 1024, "relu"), keras.layers.Reshape((3, 3, 1024)),
                    _conv(512, 3, transpose=True), keras.layers.UpSampling2D(2),
                    _conv(256, 3, transpose=True), _conv(128, 3, transpose=True),
                    keras.layers.UpSampling2D(2), _conv(64, 3, transpose=True),
                    _conv(3, 3, transpose=True, activation="tanh")]  # fmt: skip
        else:  # celeba_conv; PyTorch paddings as explicit zero-padding / cropping
            enc += [_conv(128, 4, 2), keras.layers.ZeroPadding2D(1), _conv(256, 4, 2),
                    keras.layers.ZeroPadding2D((0, 1)), _conv(512, 4, 2), _conv(1024, 4, 2),
                    _conv(1024, 4, 2), keras.layers.Flatten(), _dense(self.k)]  # fmt: skip
            dec += [_dense(5 * 4 * 1024, "relu"), keras.layers.Reshape((5, 4, 1024)),
                    _conv(1024, 4, 2, transpose=True), _conv(512, 4, 2, transpose=True),
                    _conv(256, 4, 2, transpose=True), keras.layers.Cropping2D((0, 1)),
                    _conv(128, 4, 2, transpose=True), keras.layers.Cropping2D(1),
                    _conv(3, 4, 2, transpose=True, activation="tanh")]  # fmt: skip
        encoder = keras.Sequential(enc, name="encoder")
        decoder = keras.Sequential(dec, name="decoder")
        if tuple(decoder.output_shape[1:]) != self.image_shape:  # pragma: no cover - a bug guard
            raise InvalidConfigError(f"decoder output {decoder.output_shape} != {self.image_shape}")
        return encoder, decoder

    def get_config(self):
        return {**super().get_config(), "architecture": self.architecture, "widths": self.widths}

    def encode(self, x, training=False):
        return self.encoder(self._check_images(x), training=training)

    def decode(self, code, training=False):
        return self.decoder(self._check_code(code), training=training)

    def _objective(self, x, training):
        x_hat = self.decode(self.encode(x, training=training), training=training)
        rec = tf.reduce_mean(tf.abs(tf.cast(x, tf.float32) - tf.cast(x_hat, tf.float32)))
        return {"loss": rec, "reconstruction": rec}


# -- registered models -------------------------------------------------------------------------------
def _inn(name: str, config: dict[str, Any]) -> INNAutoencoder:
    return INNAutoencoder(name=building_name(name), **config).build_for_inputs()


@register_model(
    "inn_ae_mnist", family="inn_autoencoder", dataset="mnist", paper=PAPER,
    training={"epochs": 10, "batch_size": 128},
)  # fmt: skip
def inn_ae_mnist(
    k=12, image_shape=(28, 28, 1), levels=(3,), conv_hidden=100, fc_hidden=180, clamp=1.0,
    init_std=0.1, reconstruction_weight=1.0, sparsity_weight=1.0, variational=False,
    mmd_weight=0.0, learning_rate=1e-3, adam_beta_1=0.8, adam_beta_2=0.8, adam_epsilon=1e-4,
    weight_decay=1e-6, weight_decay_mode="coupled_l2", lr_milestones=(8, 10), lr_gamma=0.1,
):  # fmt: skip
    """The MNIST INN autoencoder: Haar → 3 glow conv couplings (hidden 100) → FC coupling (hidden
    180) → Haar restore; 1,121,192 parameters. As the authors' code trains it: Adam lr 1e-3 ÷10
    at epochs 8 and 10, betas (0.8, 0.8), eps 1e-4, coupled L2 weight decay 1e-6; 10 epochs at
    batch 128. ``k`` is the bottleneck size (the paper tunes at 12)."""
    return _inn("inn_ae_mnist", dict(locals()))


inn_ae_cifar10 = register_variant(
    "inn_ae_cifar10", of=inn_ae_mnist, image_shape=(32, 32, 3), conv_hidden=128, fc_hidden=1000,
    lr_milestones=(10, 15), k=300, dataset="cifar10", training={"epochs": 15, "batch_size": 128},
    description="The CIFAR-10 INN autoencoder: Haar → 3 glow conv couplings (hidden 128) → FC "
    "coupling (hidden 1000) → Haar restore; 13,235,176 parameters; 15 epochs, lr ÷10 at 10 and 15.",
)  # fmt: skip
inn_ae_celeba = register_variant(
    "inn_ae_celeba", of=inn_ae_mnist, image_shape=(156, 128, 3), levels=(3, 3), conv_hidden=128,
    fc_hidden=200, lr_milestones=(6, 7, 8), k=300, dataset="celeba_156x128",
    training={"epochs": 8, "batch_size": 32},
    description="The CelebA INN autoencoder on 156×128 centre crops (the authors' legacy size; "
    "dataset celeba_156x128): two Haar "
    "levels with 3 glow conv couplings each (hidden 128), FC coupling (hidden 200); 50,070,152 "
    "parameters; 8 epochs at batch 32, lr ÷10 at 6, 7 and 8.",
)  # fmt: skip

_VAE = {"variational": True, "mmd_weight": 1.0}
_VAE_NOTE = (
    " plus MMD(code, N(0, I_k)) with inverse multiquadric kernels (weight 1; the paper defines "
    "the loss but reports no INN-VAE run) and a sample signature."
)
inn_vae_mnist = register_variant(
    "inn_vae_mnist", of=inn_ae_mnist, **_VAE, description="inn_ae_mnist" + _VAE_NOTE
)
inn_vae_cifar10 = register_variant(
    "inn_vae_cifar10", of=inn_ae_cifar10, **_VAE, description="inn_ae_cifar10" + _VAE_NOTE
)
inn_vae_celeba = register_variant(
    "inn_vae_celeba", of=inn_ae_celeba, **_VAE, description="inn_ae_celeba" + _VAE_NOTE
)


@register_model(
    "ae_mnist", family="inn_autoencoder", dataset="mnist", paper=PAPER,
    training={"epochs": 100, "batch_size": 128},
)  # fmt: skip
def ae_mnist(
    k=12, image_shape=(28, 28, 1), architecture="mlp", widths=(512, 256, 128), learning_rate=1e-3,
    adam_beta_1=0.9, adam_beta_2=0.999, adam_epsilon=1e-8, weight_decay=1e-5,
    weight_decay_mode="coupled_l2", lr_milestones=(10, 20, 30, 40, 50, 60, 70, 80, 90),
    lr_gamma=0.1,
):  # fmt: skip
    """The classical MNIST autoencoder ("classic"): 784-512-256-128-k, ReLU, tanh output; 1,133,329
    parameters at k = 1. Adam lr 1e-3 ÷10 every 10th epoch, coupled L2 1e-5; 100 epochs."""
    return ClassicAutoencoder(name=building_name("ae_mnist"), **locals()).build_for_inputs()


ae_mnist_1024 = register_variant(
    "ae_mnist_1024", of=ae_mnist, widths=(1024, 1024, 1024),
    description="classic 1024: 784-1024-1024-1024-k (5.81M-5.94M parameters for k = 1-64).",
)  # fmt: skip
ae_mnist_2048 = register_variant(
    "ae_mnist_2048", of=ae_mnist, widths=(2048, 2048, 2048),
    description="classic 2048: 784-2048-2048-2048-k (20.0M-20.3M parameters for k = 1-64).",
)  # fmt: skip
ae_mnist_deep = register_variant(
    "ae_mnist_deep", of=ae_mnist, widths=(1024, 1024, 1024, 1024),
    description="classic deep: 784-1024×4-k, one more layer per side than classic 1024 "
    "(7,908,113 parameters at k = 1, as the authors' code builds it).",
)  # fmt: skip
ae_cifar10 = register_variant(
    "ae_cifar10", of=ae_mnist, architecture="cifar_conv", image_shape=(32, 32, 3), k=300,
    lr_milestones=(60, 85), dataset="cifar10",
    description="The classical CIFAR-10 autoencoder of the authors' code: convs 64-128, max-pool, "
    "256-512, max-pool, 1024 to 3×3, FC to k, mirrored decoder with tanh; 100 epochs, lr ÷10 at "
    "60 and 85.",
)  # fmt: skip
ae_celeba = register_variant(
    "ae_celeba", of=ae_mnist, architecture="celeba_conv", image_shape=(218, 178, 3), k=300,
    lr_milestones=(8, 9), dataset="celeba", training={"epochs": 10, "batch_size": 32},
    description="The classical CelebA autoencoder of the authors' code: five 4×4 stride-2 convs "
    "(128-256-512-1024-1024) on 218×178 images, FC to k, mirrored; 10 epochs, lr ÷10 at 8 and 9.",
)  # fmt: skip
