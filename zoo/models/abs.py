"""Analysis by synthesis (ABS): Schott et al., "Towards the first adversarially robust neural
network model on MNIST", ICLR 2019 (``002_7240b1e8d13f6586.txt``; engineering digest ``abs.md``).

One VAE per class (latent 8). At test time the encoders are dropped: for each class the decoder's
latent is fitted to the input (the best of a fixed bank of 8,000 codes, then 49 Adam steps), and
the class score is the fitted per-pixel loss ``E_c = (‖x − G_c(z)‖² + ½‖z‖²)/784``;
``logits = −γ·E`` go through the calibrated softmax (α = 440, η = 3.9e-5).

The ten VAEs are one network: the class axis is folded into the channels and every layer is a
grouped convolution (:mod:`zoo.layers.grouped`), so training, the bank decode and the latent search
run each layer once for all classes, and BatchNorm statistics (per channel) never mix classes.
Training takes class-balanced batches, interleaved as ``y = 0, 1, …, 9, 0, 1, …`` (the trainer asks
``zoo.data.load`` for them through the model's ``class_balanced`` training default); each VAE sees
only its own class's images.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.layers.grouped import GroupedConv2D, GroupedConv2DTranspose, grouped_conv2d_transpose
from zoo.layers.preprocessing import Binarize
from zoo.models.base import (
    ZooClassifier,
    apply_scaled_gradients,
    check_image_batch,
    scale_loss_for_replicas,
    track_batch_means,
)
from zoo.registry import InvalidConfigError, building_name, register_model, register_variant

tfd = tfp.distributions

__all__ = ["ABS", "abs_mnist", "binary_abs_mnist", "latent_bank", "KLAnnealing"]

PAPER = "002_7240b1e8d13f6586.txt"
# (filters, kernel, stride) per layer; digest §1.2. The decoder's last kernel is 4, as in the
# authors' code and released weights; the paper's 3 would give 27×27.
ENCODER = ((32, 5, 1), (32, 4, 2), (64, 3, 2))
DECODER = ((32, 4, 1), (16, 5, 2), (16, 5, 2))
DECODER_OUT_KERNEL = 4
# Binary ABS per-class loss scale γ (paper A.7, authors' code); plain ABS uses γ = 1.
BINARY_GAMMA = (1.0, 0.96, 1.001, 1.06, 0.98, 0.96, 1.03, 1.0, 1.0, 1.0)
# The paper gives Adam, latent 8 and KL 10 → 1 over 50 epochs, but no lr, batch or epoch count.
# Chosen (digest §2): Adam 1e-3, batch 120 (12 per class), 50 epochs; linear annealing per epoch.
ABS_TRAINING = {"epochs": 50, "batch_size": 120, "class_balanced": True}
# Images per concurrent latent search (ABS.search_parallelism); measured best on 2 cores.
SEARCH_CHUNK = 16


def latent_bank(size: int = 8000, dim: int = 8, seed: int = 1234, dismiss: float = 0.1):
    """The fixed latent bank (digest §1.4): ⌊size/(1−dismiss)⌋ draws from N(0, I) under ``seed``,
    keeping the ``size`` of highest density (smallest norm), in draw order."""
    n = int(size / (1.0 - dismiss))
    draws = np.random.RandomState(seed).multivariate_normal(np.zeros(dim), np.eye(dim), n)
    keep = np.sort(np.argsort(np.linalg.norm(draws, axis=1), kind="stable")[:size])
    return draws[keep].astype(np.float32)


class KLAnnealing(keras.callbacks.Callback):
    """Sets the model's KL weight for each epoch: linear from ``start`` to ``end`` over
    ``epochs`` epochs, then ``end`` (paper: 10 → 1 over 50 epochs). Epoch-indexed, so a resumed
    run continues the schedule where it stopped."""

    def __init__(self, start: float, end: float, epochs: int):
        super().__init__()
        self.start, self.end, self.epochs = float(start), float(end), int(epochs)

    def value(self, epoch: int) -> float:
        if self.epochs <= 0:
            return self.end
        return self.start + (self.end - self.start) * min(epoch, self.epochs) / self.epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(self.value(epoch))


@keras.saving.register_keras_serializable(package="zoo")
class ABS(ZooClassifier):
    """Ten class-conditional VAEs classified by latent search. See the module docstring.

    ``call(x)`` returns the logits ``−γ·E`` (batch, 10). :meth:`fit_latents` gives the per-class
    losses, latents and reconstructions as well; :meth:`elbo` the amortized (encoder) losses.

    Args:
        latent_dim: size of each VAE's latent (8).
        kl_start, kl_end, kl_anneal_epochs: the training KL weight schedule (10 → 1 over 50).
        bank_size, bank_seed, bank_dismiss: the latent bank (8,000 of 8,888 draws, seed 1234).
        search_steps: latent-search passes; ``search_steps − 1`` Adam updates, then the final
            evaluation (the authors' ``n_iter = 50``).
        search_lr, latent_clip: Adam learning rate (0.05) and the latent norm bound (5).
        gamma: per-class loss scale (``None``: 1 for every class).
        binarize: threshold the input at 0.5 (Binary ABS; the same weights).
        batchnorm_momentum, batchnorm_epsilon: PyTorch's BatchNorm2d defaults, as the authors'.
        search_parallelism: at most this many latent searches run side by side over slices of
            the batch (one per ``SEARCH_CHUNK`` = 16 images, at least 2 for 2 images or more).
            Speed only: each image's search is independent of the others. 4 measured best on
            2 cores (1.3× batch 64's images/s over a single search); 1 turns it off.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        num_classes: int = 10,
        latent_dim: int = 8,
        kl_start: float = 10.0,
        kl_end: float = 1.0,
        kl_anneal_epochs: int = 50,
        bank_size: int = 8000,
        bank_seed: int = 1234,
        bank_dismiss: float = 0.1,
        search_steps: int = 50,
        search_lr: float = 0.05,
        latent_clip: float = 5.0,
        gamma: Sequence[float] | None = None,
        binarize: bool = False,
        batchnorm_momentum: float = 0.9,
        batchnorm_epsilon: float = 1e-5,
        search_parallelism: int = 4,
        **kwargs,
    ):
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
        if tuple(self.image_shape) != (28, 28, 1):
            raise InvalidConfigError(
                f"ABS's encoder and decoder are fixed to 28×28×1 images; got {self.image_shape}"
            )
        if search_steps < 1 or bank_size < 1 or search_parallelism < 1:
            raise InvalidConfigError(
                "search_steps, bank_size and search_parallelism must be at least 1"
            )
        if gamma is not None and len(gamma) != self.num_classes:
            raise InvalidConfigError(f"gamma needs {self.num_classes} values, got {len(gamma)}")
        self.latent_dim = int(latent_dim)
        self.kl_start, self.kl_end = float(kl_start), float(kl_end)
        self.kl_anneal_epochs = int(kl_anneal_epochs)
        self.bank_size, self.bank_seed = int(bank_size), int(bank_seed)
        self.bank_dismiss = float(bank_dismiss)
        self.search_steps, self.search_lr = int(search_steps), float(search_lr)
        self.latent_clip = float(latent_clip)
        self.gamma = None if gamma is None else [float(g) for g in gamma]
        self.binarize = bool(binarize)
        self.batchnorm_momentum = float(batchnorm_momentum)
        self.batchnorm_epsilon = float(batchnorm_epsilon)
        self.search_parallelism = int(search_parallelism)
        self.pixels = int(np.prod(self.image_shape))

        C, L = self.num_classes, self.latent_dim
        bn = dict(momentum=self.batchnorm_momentum, epsilon=self.batchnorm_epsilon)
        self.encoder_layers = []
        for i, (f, k, s) in enumerate(ENCODER):
            self.encoder_layers += [
                GroupedConv2D(C, f, k, s, name=f"enc_conv{i + 1}"),
                keras.layers.BatchNormalization(**bn, name=f"enc_bn{i + 1}"),
                keras.layers.ELU(name=f"enc_elu{i + 1}"),
            ]
        self.encoder_head = GroupedConv2D(C, 2 * L, 5, 1, name="enc_head")
        self.decoder_layers = []
        for i, (f, k, s) in enumerate(DECODER):
            self.decoder_layers += [
                GroupedConv2DTranspose(C, f, k, s, name=f"dec_convt{i + 1}"),
                keras.layers.BatchNormalization(**bn, name=f"dec_bn{i + 1}"),
                keras.layers.ELU(name=f"dec_elu{i + 1}"),
            ]
        self.decoder_out = GroupedConv2DTranspose(
            C, self.image_shape[-1], DECODER_OUT_KERNEL, 1, name="dec_out"
        )
        self.binarizer = Binarize(0.5, name="binarize") if self.binarize else None
        self.kl_weight = self.add_weight(
            name="kl_weight",
            shape=(),
            initializer=keras.initializers.Constant(self.kl_start),
            trainable=False,
        )
        self.noise = keras.random.SeedGenerator(0, name="noise")
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "reconstruction", "kl", "kl_weight", "elbo_accuracy")
        }
        self._compiled_fit = None
        self._chunk_search = None
        self.attack_batch_size = 64  # images per latent-search call in zoo.eval's attacks
        self._gamma = tf.constant(self.gamma or [1.0] * C, tf.float32)
        self.prior = tfd.MultivariateNormalDiag(loc=tf.zeros(L))
        # The decoded bank: 10 × 8000 × 784 floats (251 MB) are recomputed from the decoders
        # (3 s on 2 cores) rather than stored. It lives in a plain tf.Variable with an open
        # leading dimension, so Keras' weight files and the export skip it (it is empty there),
        # and it is rebuilt whenever the decoder weights change (a checksum of them is kept).
        with tf.init_scope():
            self._bank = tf.constant(
                latent_bank(self.bank_size, L, self.bank_seed, self.bank_dismiss)
            )
            self._prototypes = tf.Variable(
                tf.zeros([0, self.bank_size, self.pixels]),
                shape=tf.TensorShape([None, self.bank_size, self.pixels]),
                trainable=False,
                name="prototypes",
            )
            self._prototypes_key = tf.Variable(np.nan, trainable=False, name="prototypes_key")

    # -- precision ------------------------------------------------------------------------------
    def float32_layers(self):
        return [*self.decoder_layers, self.decoder_out]

    def float32_reason(self):
        return (
            "the decoders run the latent search (Adam on each class's reconstruction error, "
            "whose differences decide the class) and stay float32; the encoders compute in "
            "the mixed precision"
        )

    # -- the networks (class axis folded into channels) ------------------------------------------
    def encode(self, x_folded, training=False):
        """``x_folded`` (n, 28, 28, C), class c's input in channel c → μ, log σ² (n, C, L)."""
        h = x_folded
        for layer in self.encoder_layers:
            h = layer(h, training=training) if _is_bn(layer) else layer(h)
        h = tf.reshape(self.encoder_head(h), [-1, self.num_classes, 2 * self.latent_dim])
        return h[..., : self.latent_dim], h[..., self.latent_dim :]

    def decode(self, z, training=False):
        """Latents (n, C, L), one per class → reconstructions (n, 28, 28, C) in [0, 1].

        In inference each BatchNorm is folded into the transposed convolution before it
        (:meth:`inference_decoder`); in training, and before the layers are built, the layers
        run as they are."""
        if training or not self.built:
            h = tf.reshape(z, [-1, 1, 1, self.num_classes * self.latent_dim])
            for layer in self.decoder_layers:
                h = layer(h, training=training) if _is_bn(layer) else layer(h)
            return tf.sigmoid(self.decoder_out(h))
        return self._decode_folded(z, self.inference_decoder())

    def inference_decoder(self):
        """The decoder as inference runs it: ``(kernel, bias, strides)`` per transposed
        convolution, each followed by ELU except the last (then a sigmoid). BatchNorm, with its
        moving statistics, is folded into the convolution before it: output channel ``o`` of the
        kernel is scaled by ``s_o = γ_o/√(var_o + ε)`` and the bias becomes
        ``(b_o − mean_o)·s_o + β_o``. That saves two passes over every activation in each step
        of the latent search. Computed from the weights on each call (a few small ops)."""
        C = self.num_classes
        params = []
        for i in range(0, len(self.decoder_layers), 3):
            conv, bn = self.decoder_layers[i], self.decoder_layers[i + 1]
            k, f = conv.kernel_size, conv.filters
            scale = tf.convert_to_tensor(bn.gamma) * tf.math.rsqrt(
                tf.convert_to_tensor(bn.moving_variance) + bn.epsilon
            )
            kernel = tf.reshape(conv.kernel, [k, k, f, C, -1])
            per_out = tf.reshape(tf.transpose(tf.reshape(scale, [C, f])), [1, 1, f, C, 1])
            kernel = tf.reshape(kernel * per_out, conv.kernel.shape)
            bias = (conv.bias - bn.moving_mean) * scale + bn.beta
            params.append((kernel, bias, conv.strides))
        out = self.decoder_out
        params.append((tf.convert_to_tensor(out.kernel), tf.convert_to_tensor(out.bias), 1))
        return params

    def _decode_folded(self, z, params):
        h = tf.reshape(z, [-1, 1, 1, self.num_classes * self.latent_dim])
        for i, (kernel, bias, strides) in enumerate(params):
            h = grouped_conv2d_transpose(h, kernel, self.num_classes, strides) + bias
            h = tf.nn.elu(h) if i < len(params) - 1 else tf.sigmoid(h)
        return h

    # -- training ---------------------------------------------------------------------------------
    def _class_major(self, x, y):
        """A balanced interleaved batch (labels 0..C−1 repeating) → images folded (n, H, W, C)."""
        C = self.num_classes
        tf.debugging.assert_equal(
            tf.shape(y)[0] % C,
            0,
            message=f"ABS trains on class-balanced batches of a multiple of {C} images "
            "(labels 0..9 repeating); load them with zoo.data.load(..., class_balanced=True)",
        )
        expected = tf.tile(tf.range(C, dtype=tf.int64), [tf.shape(y)[0] // C])
        tf.debugging.assert_equal(
            tf.cast(y, tf.int64),
            expected,
            message="ABS trains on class-balanced batches interleaved as labels 0..9, 0..9, ...; "
            "load them with zoo.data.load(..., class_balanced=True)",
        )
        x = tf.reshape(x, [-1, C, *self.image_shape[:2]])
        return tf.transpose(x, [0, 2, 3, 1])

    def _vae_losses(self, x_folded, training):
        """Per image and class: squared error, KL to the prior, both summed over dims (n, C)."""
        mu, logvar = self.encode(x_folded, training=training)
        if training:
            eps = keras.random.normal(tf.shape(mu), seed=self.noise)
            z = mu + tf.exp(0.5 * logvar) * eps
        else:
            z = mu
        rec = self.decode(z, training=training)
        sq = tf.reduce_sum(tf.square(x_folded - rec), axis=[1, 2])  # σ = 1/√2: SSE, weight 1
        posterior = tfd.MultivariateNormalDiag(loc=mu, scale_diag=tf.exp(0.5 * logvar))
        kl = posterior.kl_divergence(self.prior)
        return sq, kl

    def train_step(self, data):
        x, y = data[0], data[1]
        x_folded = self._class_major(x, y)
        with tf.GradientTape() as tape:
            sq, kl = self._vae_losses(x_folded, training=True)
            per_image = sq + self.kl_weight * kl
            # Each VAE minimises the mean loss over its own class's images; parameters are
            # disjoint, so summing the ten means trains each one on its own loss.
            loss = tf.reduce_sum(tf.reduce_mean(per_image, axis=0))
            # Inside the tape: divided outside it, the loss would have no gradient at all (under
            # MirroredStrategy ABS trained with None gradients before this was moved).
            scaled = scale_loss_for_replicas(loss)
        apply_scaled_gradients(self.optimizer, tape, scaled, self.trainable_variables)
        return self._track(
            x,
            loss=tf.reduce_mean(per_image),
            reconstruction=tf.reduce_mean(sq),
            kl=tf.reduce_mean(kl),
            kl_weight=self.kl_weight,
        )

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _track(self, batch, **values):
        return track_batch_means(self.trackers, values, batch)

    def _amortized(self, x):
        x = self._prepare(x)
        folded = tf.tile(x, [1, 1, 1, self.num_classes])
        mu, logvar = self.encode(folded, training=False)
        return folded, mu, logvar, self.decode(mu, training=False)

    def amortized(self, x):
        """The encoders' answer, without latent search: per class the encoder mean ``latents``
        (batch, C, L), its ``reconstructions`` (batch, C, 28, 28, 1) and their per-pixel
        ``losses`` (batch, C) scored as in :meth:`fit_latents`. Used by the Latent Descent attack."""
        folded, mu, _, rec = self._amortized(x)
        return {
            "losses": self._score(folded, rec, mu),
            "latents": mu,
            "reconstructions": tf.transpose(rec, [0, 3, 1, 2])[..., None],
        }

    def elbo(self, x):
        """Amortized per-class losses (batch, C): each class's encoder mean decoded, scored as the
        test-time ELBO ``(‖x − G_c(μ_c)‖² + ½‖μ_c‖²)/784``. Cheap; the latent search improves it."""
        folded, mu, _, rec = self._amortized(x)
        return self._score(folded, rec, mu)

    def test_step(self, data):
        # Validation uses the encoders (the full latent search over a validation set would cost
        # minutes per epoch): each image's own-class VAE loss at the encoder mean, and the class
        # whose amortized ELBO is best.
        x, y = data[0], tf.cast(data[1], tf.int64)
        folded, mu, logvar, rec = self._amortized(x)
        own = lambda t: tf.gather(t, y, batch_dims=1)  # noqa: E731
        sq = own(tf.reduce_sum(tf.square(folded - rec), axis=[1, 2]))
        posterior = tfd.MultivariateNormalDiag(loc=mu, scale_diag=tf.exp(0.5 * logvar))
        kl = own(posterior.kl_divergence(self.prior))
        hit = tf.equal(tf.argmin(self._score(folded, rec, mu), axis=-1), y)
        return self._track(
            x,
            loss=tf.reduce_mean(sq + self.kl_weight * kl),
            reconstruction=tf.reduce_mean(sq),
            kl=tf.reduce_mean(kl),
            kl_weight=self.kl_weight,
            elbo_accuracy=tf.reduce_mean(tf.cast(hit, tf.float32)),
        )

    def get_metrics_result(self):
        # elbo_accuracy is measured on validation only: leave it out of the training logs.
        return self.updated_metrics_result()

    def training_callbacks(self) -> list[keras.callbacks.Callback]:
        return [KLAnnealing(self.kl_start, self.kl_end, self.kl_anneal_epochs)]

    # -- inference --------------------------------------------------------------------------------
    def _prepare(self, x):
        check_image_batch(x, self.image_shape, self.zoo_name)
        x = tf.convert_to_tensor(x, tf.float32)
        return self.binarizer(x) if self.binarizer is not None else x

    def _score(self, x_folded, rec, z, kl: float = 1.0):
        """Per-pixel test-time ELBO (batch, C): (‖x − G(z)‖² + kl·½‖z‖²)/784."""
        sq = tf.reduce_sum(tf.square(x_folded - rec), axis=[1, 2])
        return (sq + kl * 0.5 * tf.reduce_sum(tf.square(z), axis=-1)) / self.pixels

    def _decoder_key(self):
        return tf.add_n([tf.reduce_sum(w) for w in self._decoder_weights()])

    def _decoder_weights(self):
        layers = [*self.decoder_layers, self.decoder_out]
        return [w for layer in layers for w in layer.weights]

    def prototypes(self):
        """The decoded bank (C, S, 784), rebuilt when the decoder weights have changed."""
        key = self._decoder_key()

        def rebuild():
            # In chunks: one pass over all 8,000 codes would hold 3 GB of activations.
            chunk = next(
                c for c in range(min(self.bank_size, 500), 0, -1) if self.bank_size % c == 0
            )
            codes = tf.reshape(self._bank, [-1, chunk, 1, self.latent_dim])
            params = self.inference_decoder()  # folded once, not per chunk
            protos = tf.map_fn(
                lambda z: self._decode_folded(tf.tile(z, [1, self.num_classes, 1]), params),
                codes,
                fn_output_signature=tf.float32,
            )  # (S / chunk, chunk, 28, 28, C)
            protos = tf.transpose(tf.reshape(protos, [self.bank_size, self.pixels, -1]), [2, 0, 1])
            self._prototypes.assign(protos)
            self._prototypes_key.assign(key)
            return tf.identity(protos)

        fresh = tf.logical_and(
            tf.equal(tf.shape(self._prototypes)[0], self.num_classes),
            tf.equal(self._prototypes_key, key),
        )
        protos = tf.cond(fresh, lambda: tf.identity(self._prototypes), rebuild)
        return tf.ensure_shape(protos, [self.num_classes, self.bank_size, self.pixels])

    def clear_prototypes(self) -> None:
        """Drop the cached decoded bank (251 MB at the default size); rebuilt on the next call."""
        self._prototypes.assign(tf.zeros([0, self.bank_size, self.pixels]))
        self._prototypes_key.assign(np.nan)

    def initial_latents(self, x, kl: float = 1.0):
        """The best bank code per image and class (batch, C, L): argmin over the bank of the
        per-pixel ELBO (its KL term weighted by ``kl``), from ‖x‖² + ‖P‖² − 2x·P as one matrix
        product."""
        protos = self.prototypes()
        xf = tf.reshape(x, [-1, self.pixels])
        cross = tf.einsum("bp,csp->bcs", xf, protos)
        prior = kl * 0.5 * tf.reduce_sum(tf.square(self._bank), axis=-1)
        loss = (
            tf.reduce_sum(tf.square(xf), axis=-1)[:, None, None]
            + tf.reduce_sum(tf.square(protos), axis=-1)[None]
            - 2.0 * cross
            + prior[None, None]
        )
        return tf.gather(self._bank, tf.argmin(loss, axis=-1))

    def _clip(self, z):
        norm = tf.norm(z, axis=-1, keepdims=True)
        return tf.where(norm > self.latent_clip, z * (self.latent_clip / norm), z)

    def fit_latents(self, x, steps: int | None = None, kl: float = 1.0, init=None):
        """The latent search; see :meth:`_fit_latents`. Eager calls run a compiled version."""
        if tf.executing_eagerly():
            if self._compiled_fit is None:
                self._compiled_fit = tf.function(self._fit_latents, reduce_retracing=True)
            if init is not None:
                init = tf.convert_to_tensor(init, tf.float32)
            return self._compiled_fit(tf.convert_to_tensor(x, tf.float32), steps, float(kl), init)
        return self._fit_latents(x, steps, kl, init)

    def _fit_latents(self, x, steps: int | None = None, kl: float = 1.0, init=None):
        """The latent search. Returns ``losses`` (batch, C) per pixel, ``latents`` (batch, C, L)
        and ``reconstructions`` (batch, C, 28, 28, 1).

        ``steps`` passes (default ``search_steps``): ``steps − 1`` Adam updates (lr
        ``search_lr``, β = 0.9/0.999, ε = 1e-8, as PyTorch's), each followed by projecting every
        latent onto the ball of radius ``latent_clip``, then the final evaluation. ``kl = 0``
        fits the reconstruction alone (the lower bound's distances). ``init`` (batch, C, L)
        replaces the bank start (restarts)."""
        x = self._prepare(x)
        steps = self.search_steps if steps is None else int(steps)
        z = self.initial_latents(x, kl) if init is None else self._clip(init)
        params = self.inference_decoder()
        if self._chunk_search is None:
            self._chunk_search = tf.function(self._search, reduce_retracing=True)
        n = tf.shape(x)[0]

        def side_by_side(parts):
            # Independent searches over consecutive slices of the batch, run concurrently by
            # TensorFlow's inter-op pool: the small serial ops of one fill the gaps of another.
            def run():
                if parts == 1:
                    return self._chunk_search(x, z, params, steps, kl)
                sizes = n // parts + tf.cast(tf.range(parts) < n % parts, tf.int32)
                xs, zs = tf.split(x, sizes, num=parts), tf.split(z, sizes, num=parts)
                outs = [
                    self._chunk_search(a, b, params, steps, kl) for a, b in zip(xs, zs, strict=True)
                ]
                return {key: tf.concat([o[key] for o in outs], 0) for key in outs[0]}

            return run

        most = self.search_parallelism
        if most == 1:
            return side_by_side(1)()
        # One search for one image; else one per SEARCH_CHUNK images, at least 2, at most `most`.
        parts = tf.where(n < 2, 1, tf.clip_by_value(n // SEARCH_CHUNK, 2, most))
        return tf.switch_case(parts - 1, [side_by_side(p) for p in range(1, most + 1)])

    def _search(self, x, z, params, steps: int, kl: float):
        """The search for one slice of the batch: ``x`` prepared (n, 28, 28, 1), ``z`` the
        starting latents, ``params`` the folded decoder (:meth:`inference_decoder`)."""
        folded = tf.tile(x, [1, 1, 1, self.num_classes])
        b1, b2, eps, lr = 0.9, 0.999, 1e-8, self.search_lr

        def loss_of(z):
            rec = self._decode_folded(z, params)
            return self._score(folded, rec, z, kl), rec

        def update(t, z, m, v):
            with tf.GradientTape() as tape:
                tape.watch(z)
                total = tf.reduce_sum(loss_of(z)[0])
            g = tape.gradient(total, z)
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * tf.square(g)
            tf_t = tf.cast(t, tf.float32)
            m_hat = m / (1.0 - tf.pow(b1, tf_t))
            v_hat = v / (1.0 - tf.pow(b2, tf_t))
            return t + 1, self._clip(z - lr * m_hat / (tf.sqrt(v_hat) + eps)), m, v

        # An explicit while_loop: the search also runs where AutoGraph does not (Keras' tracing).
        _, z, _, _ = tf.while_loop(
            lambda t, *_: t < steps,
            update,
            (tf.constant(1), z, tf.zeros_like(z), tf.zeros_like(z)),
        )
        loss, rec = loss_of(z)
        rec = tf.transpose(rec, [0, 3, 1, 2])[..., None]
        return {"losses": loss, "latents": z, "reconstructions": rec}

    def logits_from_losses(self, losses):
        return -self._gamma * losses

    def gradient_logits(self, x):
        """The logits with Danskin's gradient, for gradient attacks: the latent search's optimum
        ``z*`` is held fixed and ``−γ·E(x, G(z*))`` is differentiated through the decoder and the
        pixel loss. At an exact optimum this is the gradient of the logits (the latents' own
        gradient vanishes there); the latent search itself is never differentiated."""
        z = tf.stop_gradient(self.fit_latents(x)["latents"])
        prepared = self._prepare(x)
        folded = tf.tile(prepared, [1, 1, 1, self.num_classes])
        return self.logits_from_losses(self._score(folded, self.decode(z, training=False), z))

    def call(self, x, training=False):
        return self.logits_from_losses(self.fit_latents(x)["losses"])

    def default_loss(self):
        return None  # train_step computes the ELBO itself

    def default_metrics(self):
        return None

    def build_for_inputs(self) -> ABS:
        x = tf.zeros((1, *self.image_shape))
        if self.binarizer is not None:
            self.binarizer(x)
        self.encode(tf.tile(x, [1, 1, 1, self.num_classes]))
        self.decode(tf.zeros((1, self.num_classes, self.latent_dim)))
        self.built = True
        return self

    # -- serving ----------------------------------------------------------------------------------
    def serving_signatures(self):
        self.clear_prototypes()  # an export holds the weights, not the 251 MB decoded bank
        signatures = super().serving_signatures()  # serving_default and classify call self

        def reconstruct(images):
            fit = self.fit_latents(images)
            return {"reconstructions": fit["reconstructions"], "latents": fit["latents"]}

        spec = signatures["serving_default"][1]
        signatures["reconstruct"] = (reconstruct, spec)
        return signatures

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "kl_start": self.kl_start,
            "kl_end": self.kl_end,
            "kl_anneal_epochs": self.kl_anneal_epochs,
            "bank_size": self.bank_size,
            "bank_seed": self.bank_seed,
            "bank_dismiss": self.bank_dismiss,
            "search_steps": self.search_steps,
            "search_lr": self.search_lr,
            "latent_clip": self.latent_clip,
            "gamma": self.gamma,
            "binarize": self.binarize,
            "batchnorm_momentum": self.batchnorm_momentum,
            "batchnorm_epsilon": self.batchnorm_epsilon,
            "search_parallelism": self.search_parallelism,
        }


def _is_bn(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


@register_model(
    "abs_mnist",
    family="abs",
    dataset="mnist",
    paper=PAPER,
    training=ABS_TRAINING,
    description="Analysis by synthesis: 10 class VAEs (latent 8), latent-search inference",
)
def abs_mnist(
    latent_dim: int = 8,
    kl_start: float = 10.0,
    kl_end: float = 1.0,
    kl_anneal_epochs: int = 50,
    bank_size: int = 8000,
    bank_seed: int = 1234,
    search_steps: int = 50,
    search_lr: float = 0.05,
    latent_clip: float = 5.0,
    gamma: Sequence[float] | None = None,
    binarize: bool = False,
    alpha: float = 440.0,
    eta: float = 3.9e-5,
    learning_rate: float = 1e-3,
    optimizer: str = "adam",
    search_parallelism: int = 4,
) -> ABS:
    """ABS on MNIST (paper A.7; digest §1). α applies to the per-pixel loss."""
    return ABS(
        name=building_name("abs_mnist"),
        latent_dim=latent_dim,
        kl_start=kl_start,
        kl_end=kl_end,
        kl_anneal_epochs=kl_anneal_epochs,
        bank_size=bank_size,
        bank_seed=bank_seed,
        search_steps=search_steps,
        search_lr=search_lr,
        latent_clip=latent_clip,
        gamma=gamma,
        binarize=binarize,
        alpha=alpha,
        eta=eta,
        learning_rate=learning_rate,
        optimizer=optimizer,
        search_parallelism=search_parallelism,
    ).build_for_inputs()


binary_abs_mnist = register_variant(
    "binary_abs_mnist",
    of=abs_mnist,
    description="Binary ABS: ABS weights, input binarized at 0.5, per-class γ",
    binarize=True,
    gamma=BINARY_GAMMA,
)
