"""Fully invertible RevNets (Jacobsen et al., "Excessive invariance causes adversarial
vulnerability", 004_a2e2a3876a23345e.txt) and the bijective i-RevNet-301 they build on.

Read shared/digests/invertible_inn_ae_firevnet.md §2–4. Every model here is a
:class:`FlowClassifier`: a bijection ``z = F(x)`` (``forward`` / ``inverse``) whose first C
coordinates are the logits, ``z_s = z[:, :C]``, and whose other coordinates are the nuisance
variables ``z_n = z[:, C:]`` (``split`` / ``merge``). ``model(x)`` returns the logits, so
``fit``, the zoo's trainer and ``serving_default`` treat it as any classifier. A metamer
``F⁻¹([z_s(x_a), z_n(x_b)])`` has exactly the logits of ``x_a`` (``zoo.eval.metamers``).

Models:

- ``fiRevNet48`` (ImageNet, 224²×3): two squeezes to 56²×48, 4 stages × 4 i-RevNet blocks with
  ActNorm before every block (additive couplings in stages 1–3, affine in stage 4), strided
  blocks opening stages 2–4, 7²×3072 at the end; a per-channel orthonormal DCT-II; z_s = the DC
  coefficients of channels 0…999, z_n = the other 149,528 coordinates (digest §2.4). The branch
  widths are i-RevNet's (out/4): the paper does not give them.
- ``irevnet301``: the bijective i-RevNet-301 (blocks [6, 16, 72, 6], half widths
  [24, 96, 384, 1536], one initial squeeze) with its non-invertible head (BN → ReLU → global
  average pool → linear). 125,120,356 trainable parameters, the count of the released checkpoint.
- ``firevnet_mnist``: the App. B.1 model as the digest reconstructs it: the 28×28 digit is
  zero-padded to 32×32 and squeezed, then 3 levels of [ActNorm → invertible 1×1 conv → additive
  coupling] steps, half the channels factored out after levels 1 and 2 and a squeeze before
  levels 2 and 3; d = 1024, z_s = the DC coefficients of the first 10 channels of the top tensor.
  Its flow works on the padded 32×32 image: ``forward`` takes 28×28 or 32×32 input, ``inverse``
  and metamers return 32×32.
- ``firevnet_spheres``: 4 fully connected additive coupling blocks (ReLU bottlenecks, no BN) on
  R^100; z_s = the first 2 coordinates.

Training: ``loss="ce"`` is cross-entropy on z_s. ``loss="ice"`` is the independence
cross-entropy (paper Def. 7; digest §2.7 and the addendum on the authors' MNIST code):

    CE(z_s, y) + adversarial_weight · L_adv + nll_weight · NLL(z_n; N(β, softplus(γ))) − log|det J|

with a nuisance classifier D_nc trained ``nuisance_steps`` times per step on ``stop_gradient(z_n)``
by ordinary cross-entropy (divided by dim z_n when ``normalize_nuisance_loss``, as the paper does
for MNIST). ``adversarial="shuffled"`` (default; the authors' code) makes
L_adv = CE(D_nc(z_n), labels shuffled within the batch): bounded, it pushes D_nc's output towards
a random label. ``adversarial="paper"`` is the paper's Σ y·log D_nc(z_n) = −CE(D_nc(z_n), y),
guarded against divergence: it is −min(CE, adversarial_cap) (default cap log C, chance level), so
once D_nc is no better than chance the term stops pushing instead of making D_nc confidently
wrong, which would carry label information again. The NLL and log-det are in bits per dimension.

Reversible backprop (``reversible=True``, the default) applies to every invertible stack in
training: activation memory does not grow with depth (``benchmarks/reversible_memory.py``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from zoo.layers.invertible import (
    ActNorm,
    AdditiveCoupling,
    DCTReadout,
    Invertible1x1Conv,
    InvertibleDownsampling,
    InvertibleSequential,
    IRevNetBlock,
    conv_network,
    dense_network,
)
from zoo.layers.priors import LearnedDiagonalGaussian
from zoo.models.base import (
    ZooClassifier,
    apply_scaled_gradients,
    check_image_batch,
    make_optimizer,
    scale_loss_for_replicas,
    track_batch_means,
)
from zoo.precision import inference_scope
from zoo.registry import (
    InvalidConfigError,
    building_name,
    register_model,
    register_variant,
    shared_config,
)

PAPER = "004_a2e2a3876a23345e.txt"
LOSSES = ("ce", "ice")
ADVERSARIAL = ("shuffled", "paper")

__all__ = [
    "FlowClassifier",
    "IRevNet",
    "GlowFlowClassifier",
    "DenseFlowClassifier",
    "fiRevNet48",
    "irevnet301",
    "firevnet_mnist",
    "firevnet_spheres",
    "firevnet_mnist_small",
    "port_irevnet_state_dict",
]


class FlowClassifier(ZooClassifier):
    """A classifier whose logits are the first ``num_classes`` coordinates of a bijection.

    Subclasses build the flow and implement ``_flow(x, training) -> (z, log_det)`` and
    ``_unflow(z, training) -> x`` on flat ``z`` of size ``latent_dim``. See the module docstring
    for the losses and their configuration.
    """

    has_split = True

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int,
        loss: str = "ce",
        reversible: bool = True,
        dequantize: float = 0.0,
        weight_decay: float = 0.0,
        nuisance_hidden: Sequence[int] = (512, 512),
        nuisance_dropout: float = 0.1,
        nuisance_steps: int = 5,
        nuisance_optimizer: str = "adamax",
        nuisance_learning_rate: float = 1e-3,
        normalize_nuisance_loss: bool = True,
        adversarial: str = "shuffled",
        adversarial_weight: float = 0.05,
        adversarial_cap: float | None = None,
        nll_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
        if loss not in LOSSES:
            raise InvalidConfigError(f"loss must be one of {LOSSES}, got {loss!r}")
        if adversarial not in ADVERSARIAL:
            raise InvalidConfigError(
                f"adversarial must be one of {ADVERSARIAL}, got {adversarial!r}"
            )
        if int(nuisance_steps) < 1:
            raise InvalidConfigError(f"nuisance_steps must be ≥ 1, got {nuisance_steps}")
        self.loss_name, self.reversible = loss, bool(reversible)
        self.dequantize, self.weight_decay = float(dequantize), float(weight_decay)
        self.nuisance_hidden = [int(h) for h in nuisance_hidden]
        self.nuisance_dropout, self.nuisance_steps = float(nuisance_dropout), int(nuisance_steps)
        self.nuisance_optimizer_name = str(nuisance_optimizer)
        self.nuisance_learning_rate = float(nuisance_learning_rate)
        self.normalize_nuisance_loss = bool(normalize_nuisance_loss)
        self.adversarial, self.adversarial_weight = adversarial, float(adversarial_weight)
        self.adversarial_cap = (
            float(adversarial_cap) if adversarial_cap is not None else math.log(self.num_classes)
        )
        self.nll_weight = float(nll_weight)
        names = ["loss", "accuracy"]
        if loss == "ice":
            names += ["cross_entropy", "nll_bits_per_dim", "adversarial", "nuisance_accuracy"]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.nuisance_classifier = None
        self.nuisance_optimizer = None

    # -- the bijection ------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        raise NotImplementedError

    def _flow(self, x, training):  # pragma: no cover - abstract
        raise NotImplementedError

    def _unflow(self, z, training):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_and_log_det(self, x, training=False):
        """``(z, log|det ∂z/∂x|)``: z ``(batch, latent_dim)``, log-det ``(batch,)``.

        Under a mixed precision (:mod:`zoo.precision`) only the training pass computes its
        coupling branches in it; inference, like :meth:`inverse`, stays float32, so the
        bijection's round trip stays exact."""
        x = tf.convert_to_tensor(x, self.compute_dtype)
        with inference_scope(self, training):
            return self._flow(x, training)

    def forward(self, x, training=False):
        """z = F(x), flat ``(batch, latent_dim)``; ``z[:, :num_classes]`` are the logits."""
        return self.forward_and_log_det(x, training)[0]

    def inverse(self, z, training=False):
        """x = F⁻¹(z) for z ``(batch, latent_dim)``. BatchNorm runs in the mode ``training``
        says, which must be the mode of the forward pass that produced z (inference by default)."""
        z = tf.convert_to_tensor(z, self.compute_dtype)
        if z.shape.rank != 2 or (z.shape[-1] is not None and z.shape[-1] != self.latent_dim):
            raise ValueError(
                f"{self.zoo_name}.inverse expects z of shape (batch, {self.latent_dim}); got "
                f"{tuple(z.shape)}"
            )
        with inference_scope(self, False):  # every inverse is exact to float32
            return self._unflow(z, training)

    def log_det_jacobian(self, x, training=False):
        return self.forward_and_log_det(x, training)[1]

    def split(self, z):
        """``(z_s, z_n)``: the logits and the nuisance variables."""
        self._check_split()
        return z[:, : self.num_classes], z[:, self.num_classes :]

    def merge(self, z_s, z_n):
        """The inverse of :meth:`split`."""
        self._check_split()
        return tf.concat([z_s, z_n], axis=-1)

    def _check_split(self):
        if not self.has_split:
            raise NotImplementedError(
                f"{self.zoo_name} reads its logits with a non-invertible linear head, so its z has "
                f"no logit/nuisance split; use a fiRevNet (fiRevNet48, firevnet_mnist, ...)"
            )

    def call(self, x, training=False):
        return self.forward(x, training)[:, : self.num_classes]

    # -- precision ----------------------------------------------------------------------------
    def mixed_precision_blocks(self, mode):
        """The coupling branches only (i-RevNet bottlenecks, coupling networks): each is a
        function of the half that passes through unchanged, so the inverse recomputes it from
        the same input, and the coupling's sum, difference, scale and log-det stay float32
        around it (:func:`zoo.layers.invertible.coupling_branches`). Plus the nuisance
        classifier of iCE."""
        from zoo.layers.invertible import coupling_branches

        blocks = coupling_branches(self)
        if self.nuisance_classifier is not None:
            blocks.append(self.nuisance_classifier)
        return blocks

    def float32_reason(self):
        return (
            "the invertible couplings (their sums, scales and log-determinants), the "
            "downsamplings and the head stay float32; only the coupling branches compute in "
            "the mixed precision, and only in the training pass: inference (forward, inverse, "
            "serving) runs in float32 so the round trip stays exact"
        )

    def build_for_inputs(self):
        if self.loss_name == "ice":
            self._build_ice()  # before the first call, which locks the model's state
        return super().build_for_inputs()

    # -- iCE ----------------------------------------------------------------------------------
    def _build_ice(self):
        n = self.latent_dim - self.num_classes
        layers = []
        for h in self.nuisance_hidden:
            layers.append(keras.layers.Dense(h, activation="relu"))
            if self.nuisance_dropout:
                layers.append(keras.layers.Dropout(self.nuisance_dropout))
        layers.append(keras.layers.Dense(self.num_classes))
        self.nuisance_classifier = keras.Sequential(layers, name="nuisance_classifier")
        self.nuisance_classifier.build((None, n))
        self.prior = LearnedDiagonalGaussian(n, name="nuisance_prior")

    def nuisance_prior(self):
        """The learned factorial Gaussian N(β, softplus(γ)) on z_n (iCE's L_MLEn)."""
        return self.prior.distribution()

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        if self.loss_name == "ice":
            self.nuisance_optimizer = self.loss_scaled(
                make_optimizer(self.nuisance_optimizer_name, self.nuisance_learning_rate)
            )
            self.nuisance_optimizer.build(self.nuisance_classifier.trainable_variables)

    def flow_variables(self):
        """Every trainable variable except the nuisance classifier's."""
        skip = (
            {id(v) for v in self.nuisance_classifier.trainable_variables}
            if self.nuisance_classifier is not None
            else set()
        )
        return [v for v in self.trainable_variables if id(v) not in skip]

    def _l2(self):
        if not self.weight_decay:
            return 0.0
        kernels = [v for v in self.flow_variables() if "kernel" in v.path]
        return 0.5 * self.weight_decay * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])

    def _nuisance_step(self, z_n, y):
        with tf.GradientTape() as tape:
            logits = self.nuisance_classifier(z_n, training=True)
            ce = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
            n = float(self.latent_dim - self.num_classes)
            loss = ce / n if self.normalize_nuisance_loss else ce
            loss = scale_loss_for_replicas(loss)
        apply_scaled_gradients(
            self.nuisance_optimizer, tape, loss, self.nuisance_classifier.trainable_variables
        )
        return logits

    def train_step(self, data):
        x, y = data[0], tf.cast(data[1], tf.int32)
        if self.dequantize:
            x = x + tf.random.uniform(tf.shape(x), 0.0, self.dequantize, dtype=x.dtype)
        variables = self.flow_variables()
        with tf.GradientTape() as tape:
            z, log_det = self.forward_and_log_det(x, training=True)
            logits = z[:, : self.num_classes]
            ce = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
            loss = ce
            extra = {}
            if self.loss_name == "ice":
                z_n = z[:, self.num_classes :]
                with tape.stop_recording():
                    frozen = tf.stop_gradient(z_n)
                    for _ in range(self.nuisance_steps):
                        nuisance_logits = self._nuisance_step(frozen, y)
                adv_logits = self.nuisance_classifier(z_n, training=False)
                if self.adversarial == "shuffled":
                    target = tf.random.shuffle(y)
                    adv = tf.reduce_mean(
                        tf.nn.sparse_softmax_cross_entropy_with_logits(
                            labels=target, logits=adv_logits
                        )
                    )
                else:
                    ce_nc = tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels=y, logits=adv_logits
                    )
                    adv = -tf.reduce_mean(tf.minimum(ce_nc, self.adversarial_cap))
                d = float(self.latent_dim)
                nll = -(self.nuisance_prior().log_prob(z_n) + log_det) / (d * math.log(2.0))
                nll = tf.reduce_mean(nll)
                loss = ce + self.adversarial_weight * adv + self.nll_weight * nll
                extra = {
                    "cross_entropy": ce,
                    "nll_bits_per_dim": nll,
                    "adversarial": adv,
                    "nuisance_accuracy": _accuracy(nuisance_logits, y),
                }
            total = loss + self._l2()
            scaled = scale_loss_for_replicas(total)
        apply_scaled_gradients(self.optimizer, tape, scaled, variables)
        return self._track(x, loss=loss, accuracy=_accuracy(logits, y), **extra)

    def test_step(self, data):
        x, y = data[0], tf.cast(data[1], tf.int32)
        logits = self(x, training=False)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return self._track(x, loss=tf.reduce_mean(ce), accuracy=_accuracy(logits, y))

    def _track(self, batch, **values):
        return track_batch_means(self.trackers, values, batch)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def get_metrics_result(self):
        # Validation measures loss and accuracy only: leave iCE's training terms out of its logs.
        return self.updated_metrics_result()

    def default_loss(self):
        return None  # train_step / test_step compute it

    def default_metrics(self):
        return None

    # -- serving ------------------------------------------------------------------------------
    @property
    def flow_input_shape(self) -> tuple[int, ...]:
        """The shape ``inverse`` returns (the flow's domain; ``image_shape`` unless padded)."""
        return self.image_shape

    def serving_signatures(self):
        signatures = super().serving_signatures()
        image = tf.TensorSpec((None, *self.image_shape), tf.float32, name="images")
        latent = tf.TensorSpec((None, self.latent_dim), tf.float32, name="z")

        def forward(images):
            z, log_det = self.forward_and_log_det(images, training=False)
            return {"z": z, "logits": z[:, : self.num_classes], "log_det": log_det}

        def inverse(z):
            return {"images": self.inverse(z, training=False)}

        signatures["forward"] = (forward, [image])
        signatures["inverse"] = (inverse, [latent])
        if self.has_split:

            def metamer(semantic, nuisance, alpha):
                from zoo.eval.metamers import metameric_sample

                images = metameric_sample(self, semantic, nuisance, alpha=alpha)
                return {"images": images, "logits": self.forward(semantic)[:, : self.num_classes]}

            signatures["metamer"] = (
                metamer,
                [
                    tf.TensorSpec((None, *self.image_shape), tf.float32, name="semantic"),
                    tf.TensorSpec((None, *self.image_shape), tf.float32, name="nuisance"),
                    tf.TensorSpec((None,), tf.float32, name="alpha"),
                ],
            )
        return signatures

    def get_config(self):
        return {
            **super().get_config(),
            "loss": self.loss_name,
            "reversible": self.reversible,
            "dequantize": self.dequantize,
            "weight_decay": self.weight_decay,
            "nuisance_hidden": self.nuisance_hidden,
            "nuisance_dropout": self.nuisance_dropout,
            "nuisance_steps": self.nuisance_steps,
            "nuisance_optimizer": self.nuisance_optimizer_name,
            "nuisance_learning_rate": self.nuisance_learning_rate,
            "normalize_nuisance_loss": self.normalize_nuisance_loss,
            "adversarial": self.adversarial,
            "adversarial_weight": self.adversarial_weight,
            "adversarial_cap": self.adversarial_cap,
            "nll_weight": self.nll_weight,
        }


def _accuracy(logits, y):
    return tf.reduce_mean(
        tf.cast(tf.equal(tf.argmax(logits, -1, output_type=y.dtype), y), tf.float32)
    )


# -- i-RevNet / fiRevNet48 ---------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class IRevNet(FlowClassifier):
    """An i-RevNet-style flow: ``init_squeezes`` squeezes, then stages of :class:`IRevNetBlock`.

    ``channels`` are the half widths per stage, ``strides`` the stride of each stage's first
    block, ``couplings`` ``"additive"`` or ``"affine"`` per stage. ``head="dct"`` (fiRevNet): a
    per-channel orthonormal DCT-II, logits = the DC coefficients of channels 0…C−1.
    ``head="linear"`` (i-RevNet): BN → ReLU → global average pool → Dense on the bijective
    output, which ``forward`` returns flat.
    """

    def __init__(
        self,
        image_shape=(224, 224, 3),
        num_classes=1000,
        init_squeezes=2,
        blocks=(4, 4, 4, 4),
        channels=(24, 96, 384, 1536),
        strides=(1, 2, 2, 2),
        couplings=("additive", "additive", "additive", "affine"),
        actnorm=True,
        mult=4,
        head="dct",
        batchnorm_momentum=0.9,
        batchnorm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
        blocks, channels, strides = list(blocks), list(channels), list(strides)
        couplings = list(couplings)
        if not len(blocks) == len(channels) == len(strides) == len(couplings):
            raise InvalidConfigError(
                "blocks, channels, strides and couplings need one entry per stage; got "
                f"{len(blocks)}, {len(channels)}, {len(strides)}, {len(couplings)}"
            )
        if head not in ("dct", "linear"):
            raise InvalidConfigError(f"head must be 'dct' or 'linear', got {head!r}")
        h, w, c = self.image_shape
        down = 2 ** (int(init_squeezes) + sum(1 for s in strides if s == 2))
        if h % down or w % down:
            raise InvalidConfigError(
                f"{h}×{w} images cannot be halved {int(math.log2(down))} times "
                f"(init_squeezes={init_squeezes}, strides={strides})"
            )
        half = c * 4 ** int(init_squeezes) // 2
        for ch, s in zip(channels, strides, strict=True):
            if half * s * s != ch:
                raise InvalidConfigError(
                    f"bijective i-RevNet: stage half width {ch} must be {half}·stride² "
                    f"(channels={channels}, strides={strides})"
                )
            half = ch
        self.out_shape = (h // down, w // down, 2 * channels[-1])
        if head == "dct" and self.out_shape[2] < self.num_classes:
            raise InvalidConfigError(
                f"the DCT readout needs ≥ {self.num_classes} channels, has {self.out_shape[2]}"
            )
        self.init_squeezes, self.blocks, self.channels = int(init_squeezes), blocks, channels
        self.strides, self.couplings, self.actnorm = strides, couplings, bool(actnorm)
        self.mult, self.head = int(mult), head
        self.batchnorm_momentum, self.batchnorm_epsilon = batchnorm_momentum, batchnorm_epsilon
        self.has_split = head == "dct"

        layers = [InvertibleDownsampling(2) for _ in range(self.init_squeezes)]
        first = True
        for n, ch, stride, coupling in zip(blocks, channels, strides, couplings, strict=True):
            for i in range(n):
                if self.actnorm:
                    layers.append(ActNorm())
                layers.append(
                    IRevNetBlock(
                        ch,
                        stride=stride if i == 0 else 1,
                        first=first,
                        mult=self.mult,
                        coupling=coupling,
                        batchnorm_momentum=batchnorm_momentum,
                        batchnorm_epsilon=batchnorm_epsilon,
                    )
                )
                first = False
        if head == "dct":
            layers.append(DCTReadout())
        self.stack = InvertibleSequential(layers, reversible=self.reversible, name="stack")
        if head == "linear":
            # PyTorch BatchNorm2d(momentum=0.9) keeps 0.1 of the old average: Keras momentum 0.1.
            self.head_bn = keras.layers.BatchNormalization(momentum=0.1, epsilon=1e-5)
            self.head_pool = keras.layers.GlobalAveragePooling2D()
            self.head_linear = keras.layers.Dense(self.num_classes, name="linear")

    @property
    def latent_dim(self):
        return int(np.prod(self.out_shape))

    def _flow(self, x, training):
        check_image_batch(x, self.image_shape, self.zoo_name)
        y, log_det = self.stack.forward_and_log_det(x, training=training)
        return tf.reshape(y, (-1, self.latent_dim)), log_det

    def _unflow(self, z, training):
        return self.stack.inverse(tf.reshape(z, (-1, *self.out_shape)), training=training)

    def call(self, x, training=False):
        if self.head == "dct":
            return super().call(x, training)
        features = tf.reshape(self.forward(x, training), (-1, *self.out_shape))
        h = tf.nn.relu(self.head_bn(features, training=training))
        return self.head_linear(self.head_pool(h))

    def head_layers(self):
        # The DCT readout's logits are coordinates of the bijection: no weights hold the classes.
        return [self.head_linear] if self.head == "linear" else []

    def get_config(self):
        return {
            **super().get_config(),
            "init_squeezes": self.init_squeezes,
            "blocks": self.blocks,
            "channels": self.channels,
            "strides": self.strides,
            "couplings": self.couplings,
            "actnorm": self.actnorm,
            "mult": self.mult,
            "head": self.head,
            "batchnorm_momentum": self.batchnorm_momentum,
            "batchnorm_epsilon": self.batchnorm_epsilon,
        }


# -- Glow-style multi-scale flow (firevnet_mnist) ----------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class GlowFlowClassifier(FlowClassifier):
    """Multi-scale flow: pad → squeeze → [level → factor out half → squeeze] … → level → DCT.

    A level is ``steps`` × [ActNorm → invertible 1×1 conv → additive coupling], the coupling
    network conv3×3(hidden)-BN-ReLU-conv3×3(hidden)-BN-ReLU-conv3×3 (zero-initialised last layer).
    z = [DCT(top) flattened, factored-out tensors from the last level to the first]; logits = the
    DC coefficients of the top tensor's first C channels. The zero padding of ``pad`` pixels makes
    the flow's domain the padded image: ``inverse`` returns it, and a metamer is a padded image.
    """

    def __init__(
        self,
        image_shape=(28, 28, 1),
        num_classes=10,
        pad=2,
        levels=3,
        steps=16,
        hidden=128,
        **kwargs,
    ):
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
        h, w, c = self.image_shape
        self.pad, self.levels, self.steps, self.hidden = (
            int(pad),
            int(levels),
            int(steps),
            int(hidden),
        )
        size = (h + 2 * self.pad, w + 2 * self.pad)
        if size[0] % 2**self.levels or size[1] % 2**self.levels:
            raise InvalidConfigError(
                f"a {size[0]}×{size[1]} (padded) image cannot be squeezed {self.levels} times"
            )
        self.padded_shape = (*size, c)
        self.level_stacks, self.factor_shapes = [], []
        ch, hh, ww = c, *size
        for level in range(self.levels):
            ch, hh, ww = ch * 4, hh // 2, ww // 2
            layers = []
            for _ in range(self.steps):
                layers += [
                    ActNorm(),
                    Invertible1x1Conv(seed=len(layers)),
                    AdditiveCoupling(conv_network(self.hidden, ch - ch // 2)),
                ]
            self.level_stacks.append(
                InvertibleSequential(layers, reversible=self.reversible, name=f"level{level + 1}")
            )
            if level < self.levels - 1:
                self.factor_shapes.append((hh, ww, ch - ch // 2))
                ch = ch // 2
        self.top_shape = (hh, ww, ch)
        if ch < self.num_classes:
            raise InvalidConfigError(
                f"the top tensor has {ch} channels, fewer than {self.num_classes} classes"
            )
        self.readout = DCTReadout()

    @property
    def latent_dim(self):
        return int(np.prod(self.padded_shape))

    @property
    def flow_input_shape(self):
        return self.padded_shape

    def _pad(self, x):
        shape = tuple(x.shape[1:])
        if shape == self.padded_shape:
            return x
        if shape != self.image_shape:
            raise ValueError(
                f"{self.zoo_name} expects images of shape (batch, {self.image_shape}) or the "
                f"padded (batch, {self.padded_shape}); got {tuple(x.shape)}"
            )
        p = self.pad
        return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])

    def _flow(self, x, training):
        if not x.dtype.is_floating:
            raise TypeError(f"{self.zoo_name} expects float images, got {x.dtype.name}")
        h = self._pad(x)
        log_det = tf.zeros(tf.shape(h)[:1], h.dtype)
        factored = []
        for level, stack in enumerate(self.level_stacks):
            h = tf.nn.space_to_depth(h, 2)
            h, ld = stack.forward_and_log_det(h, training=training)
            log_det += ld
            if level < self.levels - 1:
                keep = h.shape[-1] // 2
                factored.append(
                    tf.reshape(
                        h[..., keep:], (-1, int(np.prod(h.shape[1:-1])) * (h.shape[-1] - keep))
                    )
                )
                h = h[..., :keep]
        top = tf.reshape(self.readout(h), (-1, int(np.prod(self.top_shape))))
        return tf.concat([top, *reversed(factored)], axis=-1), log_det

    def _unflow(self, z, training):
        sizes = [int(np.prod(self.top_shape))] + [
            int(np.prod(s)) for s in reversed(self.factor_shapes)
        ]
        parts = tf.split(z, sizes, axis=-1)
        h = self.readout.inverse(tf.reshape(parts[0], (-1, *self.top_shape)))
        factored = list(reversed(parts[1:]))
        for level in reversed(range(self.levels)):
            if level < self.levels - 1:
                f = tf.reshape(factored[level], (-1, *self.factor_shapes[level]))
                h = tf.concat([h, f], axis=-1)
            h = self.level_stacks[level].inverse(h, training=training)
            h = tf.nn.depth_to_space(h, 2)
        return h

    def get_config(self):
        return {
            **super().get_config(),
            "pad": self.pad,
            "levels": self.levels,
            "steps": self.steps,
            "hidden": self.hidden,
        }


# -- fully connected flow (spheres) ------------------------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class DenseFlowClassifier(FlowClassifier):
    """``blocks`` fully connected additive couplings (RevNet order: the halves swap every block),
    each network Dense(hidden)-ReLU-Dense(hidden)-ReLU-Dense, no BatchNorm. z_s = z[:, :C]."""

    def __init__(self, image_shape=(100,), num_classes=2, blocks=4, hidden=256, **kwargs):
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
        if len(self.image_shape) != 1:
            raise InvalidConfigError(f"image_shape must be (features,), got {self.image_shape}")
        self.num_blocks, self.hidden = int(blocks), int(hidden)
        d = self.image_shape[0]
        layers = []
        for i in range(self.num_blocks):
            # With swap, block i transforms the half that block i-1 left alone.
            out = d - d // 2 if i % 2 == 0 else d // 2
            layers.append(AdditiveCoupling(dense_network(self.hidden, out), swap=True))
        self.stack = InvertibleSequential(layers, reversible=self.reversible, name="stack")

    @property
    def latent_dim(self):
        return self.image_shape[0]

    def _flow(self, x, training):
        check_image_batch(x, self.image_shape, self.zoo_name)
        return self.stack.forward_and_log_det(x, training=training)

    def _unflow(self, z, training):
        return self.stack.inverse(z, training=training)

    def get_config(self):
        return {**super().get_config(), "blocks": self.num_blocks, "hidden": self.hidden}


# -- registered models --------------------------------------------------------------------------
# The training-objective keys every fiRevNet shares; defaults follow the authors' MNIST code.
_LOSS_DEFAULTS = {
    "loss": "ce",
    "reversible": True,
    "dequantize": 0.0,
    "weight_decay": 0.0,
    "nuisance_hidden": (512, 512),
    "nuisance_dropout": 0.1,
    "nuisance_steps": 5,
    "nuisance_optimizer": "adamax",
    "nuisance_learning_rate": 1e-3,
    "normalize_nuisance_loss": True,
    "adversarial": "shuffled",
    "adversarial_weight": 0.05,
    "adversarial_cap": None,
    "nll_weight": 1.0,
    "alpha": 1.0,
    "eta": 0.0,
}


def _flow_model(name: str, cls: type, fixed: dict | None = None, **registration):
    """Register ``name``: the decorated function's signature (with its defaults, overriding the
    shared loss keys) and docstring describe the model; it is built as ``cls(**fixed, **config)``."""

    def decorator(spec_fn):
        @functools.wraps(spec_fn)  # its signature (the model's own keys) and docstring
        def builder(**config):
            return cls(name=building_name(name), **(fixed or {}), **config).build_for_inputs()

        builder = shared_config(_LOSS_DEFAULTS)(builder)
        return register_model(name, family="firevnet", paper=PAPER, **registration)(builder)

    return decorator


@_flow_model(
    "fiRevNet48",
    IRevNet,
    {"head": "dct"},
    dataset="imagenet2012",
    training={"epochs": 128, "batch_size": 480, "eval_split": "validation"},
)
def fiRevNet48(
    image_shape=(224, 224, 3),
    num_classes=1000,
    init_squeezes=2,
    blocks=(4, 4, 4, 4),
    channels=(24, 96, 384, 1536),
    strides=(1, 2, 2, 2),
    couplings=("additive", "additive", "additive", "affine"),
    actnorm=True,
    mult=4,
    batchnorm_momentum=0.9,
    batchnorm_epsilon=1e-5,
    optimizer="sgd",
    learning_rate=0.1,
    weight_decay=1e-4,
):
    """fiRevNet48: the fully invertible ImageNet RevNet of the excessive-invariance paper.

    224²×3 → 2 squeezes → 4 stages × 4 i-RevNet blocks (ActNorm before each; stages 1–3
    additive, 4 affine) → 7²×3072 → per-channel orthonormal DCT-II; logits = the DC coefficients
    of channels 0…999, nuisance = the other 149,528 coordinates. Paper training: momentum SGD
    0.9, lr 0.1 ×0.1 every 32 epochs, 128 epochs, batch 480, weight decay 1e-4 (GPU only).
    """


@_flow_model(
    "irevnet301",
    IRevNet,
    {"head": "linear", "actnorm": False},
    dataset="imagenet2012",
    training={"epochs": 160, "batch_size": 256, "eval_split": "validation"},
)
def irevnet301(
    image_shape=(224, 224, 3),
    num_classes=1000,
    init_squeezes=1,
    blocks=(6, 16, 72, 6),
    channels=(24, 96, 384, 1536),
    strides=(2, 2, 2, 2),
    couplings=("additive", "additive", "additive", "additive"),
    mult=4,
    batchnorm_momentum=0.9,
    batchnorm_epsilon=1e-5,
    optimizer="sgd",
    learning_rate=0.1,
    weight_decay=1e-4,
):
    """The bijective i-RevNet-301 (Jacobsen et al. 2018) with its linear classifier head.

    Blocks [6, 16, 72, 6], half widths [24, 96, 384, 1536], one initial squeeze, every stage
    strided: 224²×3 → 7²×3072 → BN → ReLU → average pool → linear. 125,120,356 trainable
    parameters, as the released checkpoint. ``forward`` returns the bijective features; the
    head is not invertible, so it has no logit/nuisance split. Paper training: SGD 0.9,
    weight decay 1e-4, lr 0.1 ÷10 every 160k iterations, batch 256.
    """


@_flow_model(
    "firevnet_mnist",
    GlowFlowClassifier,
    dataset="mnist",
    training={"epochs": 100, "batch_size": 64},
)
def firevnet_mnist(
    image_shape=(28, 28, 1),
    num_classes=10,
    pad=2,
    levels=3,
    steps=16,
    hidden=128,
    optimizer="adamax",
    learning_rate=1e-3,
    weight_decay=1e-4,
    dequantize=1 / 256,
):
    """MNIST fiRevNet (App. B.1 as the digest reconstructs it): pad to 32², 3 levels of 16 ×
    [ActNorm → 1×1 conv → additive coupling (128 filters, BN)], factor-out and squeeze, DCT
    readout; d = 1024. ``--set steps=4 hidden=32`` is the small config that trains on 2 cores.
    Paper training: Adamax 1e-3 (×0.2 every 30 epochs), 100 epochs, batch 64, L2 1e-4,
    dequantized input."""


@_flow_model(
    "firevnet_spheres",
    DenseFlowClassifier,
    dataset="spheres",
    training={"epochs": 10, "batch_size": 256},
)
def firevnet_spheres(
    image_shape=(100,),
    num_classes=2,
    blocks=4,
    hidden=256,
    optimizer="adam",
    learning_rate=1e-4,
    nuisance_hidden=(1000, 1000),
    nuisance_dropout=0.0,
):
    """The spheres fiRevNet (App. B.2): 4 fully connected additive couplings with ReLU
    bottlenecks, no BatchNorm, on R^100; logits = the first 2 coordinates. Adam 1e-4; the
    nuisance classifier is a 3-layer ReLU MLP with 1000 units."""


firevnet_mnist_small = register_variant(
    "firevnet_mnist_small",
    of=firevnet_mnist,
    steps=4,
    hidden=32,
    training={"epochs": 3, "batch_size": 64},
    description="firevnet_mnist at the scale a 2-core CPU trains: 3 levels × 4 steps, 32 filters "
    "(the digest's small config)",
)


# -- porting the released i-RevNet-301 checkpoint ----------------------------------------------
def port_irevnet_state_dict(model: IRevNet, state_dict) -> list[str]:
    """Load the authors' PyTorch i-RevNet weights (jhjacobsen/pytorch-i-revnet) into ``model``.

    ``state_dict`` maps the checkpoint's names to arrays. For the released i-RevNet-301 use
    ``zoo-port irevnet301 --from i-revnet-301.pth.tar``, which reads the file with
    ``torch.load(..., weights_only=True)`` only, checks its layout and calls this::

        sd = zoo.port.read_torch_file("i-revnet-301.pth.tar")["state_dict"]
        port_irevnet_state_dict(zoo.load("irevnet301"), {k: v.numpy() for k, v in sd.items()})

    Names are ``[module.]stack.{i}.bottleneck_block.{j}.{weight,bias,running_mean,running_var}``
    for block i and ``bn1.*``, ``linear.*`` for the head. Conv kernels go from OIHW to HWIO, the
    linear kernel is transposed, BatchNorm maps weight/bias/running_mean/running_var to
    gamma/beta/moving_mean/moving_variance (eps 1e-5 as in PyTorch, which the model uses), and psi
    needs no permutation (``tf.nn.space_to_depth`` has i-RevNet's channel order). Returns the
    checkpoint entries it did not use (``num_batches_tracked`` counters, ...); raises on a
    missing entry or a shape mismatch, naming it.
    """
    if not isinstance(model, IRevNet) or model.head != "linear" or model.actnorm:
        raise TypeError(
            "port_irevnet_state_dict needs an i-RevNet with its linear head (irevnet301)"
        )
    sd = {k.removeprefix("module."): np.asarray(v) for k, v in state_dict.items()}
    used = set()

    def take(name, target, transform=lambda a: a):
        if name not in sd:
            raise KeyError(f"the checkpoint has no {name!r}")
        value = transform(sd[name])
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(
                f"{name}: shape {tuple(value.shape)} does not fit {target.path} {tuple(target.shape)}"
            )
        target.assign(value.astype(np.float32))
        used.add(name)

    def bn(prefix, layer):
        take(f"{prefix}.weight", layer.gamma)
        take(f"{prefix}.bias", layer.beta)
        take(f"{prefix}.running_mean", layer.moving_mean)
        take(f"{prefix}.running_var", layer.moving_variance)

    blocks = [b for b in model.stack.blocks if isinstance(b, IRevNetBlock)]
    for i, block in enumerate(blocks):
        # PyTorch's Sequential also numbers the ReLUs and the Dropout (kept at p=0 in the
        # checkpoint): index j counts every module, in the order IRevNetBlock builds them.
        torch_index = 0
        for layer in block.bottleneck.layers:
            if isinstance(layer, keras.layers.ZeroPadding2D):
                continue  # part of PyTorch's Conv2d(padding=1)
            prefix = f"stack.{i}.bottleneck_block.{torch_index}"
            if isinstance(layer, keras.layers.Conv2D):
                take(f"{prefix}.weight", layer.kernel, lambda a: a.transpose(2, 3, 1, 0))
            elif isinstance(layer, keras.layers.BatchNormalization):
                bn(prefix, layer)
            torch_index += 1
            if isinstance(layer, keras.layers.Conv2D) and torch_index == (4 if block.first else 6):
                torch_index += 1  # nn.Dropout after the second conv
    bn("bn1", model.head_bn)
    take("linear.weight", model.head_linear.kernel, lambda a: a.T)
    take("linear.bias", model.head_linear.bias)
    return sorted(set(sd) - used)
