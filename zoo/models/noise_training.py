"""Gaussian and adversarial noise training (GNT, Speckle, ANT) for any zoo classifier.

Rusak*, Schott*, Zimmermann* et al., "A simple way to make neural networks robust against diverse
image corruptions", ECCV 2020: lines 2827–3376 of 002_7240b1e8d13f6586.txt;
shared/digests/slowvae_benchmark_noise.md part (c).

**Noise training is an objective, not an architecture.** :class:`NoiseTraining` wraps any zoo
classifier (:mod:`zoo.models.objectives`) and is registered as the ``noise`` objective, so

    python training/train.py --model cnn_mnist --set noise=ant
    zoo.load("cnn_mnist", noise="gnt", noise_sigma=0.5)

train cnn_mnist with it; the registered ``gnt_mnist`` / ``ant_mnist`` (the paper's MNIST CNN,
:func:`madry_cnn_mnist`) and ``gnt_resnet50_imagenet`` / ``ant_resnet50_imagenet``
(``keras.applications`` ResNet50 on [0, 1] input, :func:`resnet50_imagenet`) are the paper's
configurations. Noise is added in [0, 1] pixel space, clipped, and only then does the
classifier normalise its input (digest c.5, pitfall 1).

Per training step, on a batch of B images (per replica):

- ``gnt``: ``round(B/2)`` images get ``clip(x + σz)``; σ is fixed or drawn per image from a set
  (GNT_mult: the five ImageNet-C Gaussian-noise severities). Eq. 1.
- ``speckle``: the same images get ``clip(x + x·c·z)``, c drawn per image from ImageNet-C's five
  speckle severities (the paper's Speckle baseline).
- ``ant`` (Eq. 3): (1) a generator step: δ = NG(z) for the whole batch, projected to
  ``‖clip(x + ηδ) − x‖₂ = ε``, the classifier in inference mode (BatchNorm frozen; pitfall 6),
  Adam on −CE; (2) a classifier step, through the classifier's own ``train_step``, on the mixed
  batch: 50 % clean, 30 % noise from the current generator, 20 % from earlier generators
  (experience replay: two slices of 10 %, each from a snapshot drawn at random; until the first
  snapshot exists the current generator fills them, as the authors' epoch 0 does).

The generator step never changes the classifier and the classifier step never changes the
generator (each applies its own gradients to its own variables).

**Resets and snapshots** (``training_callbacks()``, which the zoo's trainer adds; pass them to
``model.fit`` yourself): every ``noise_reset_every`` epochs (paper: 0.33) the current generator
is stored in the replay buffer (a ring of ``noise_replay_capacity`` snapshots) and replaced by a
fresh one (N(0, 0.01²) weights, zero biases, fresh Adam state), which then trains at
``noise_reset_learning_rate`` for ``noise_reset_steps`` steps before returning to
``noise_generator_learning_rate``. Deviation: the paper and the authors' code train the new
generator against a *frozen* classifier for up to 1,000 iterations before the classifier trains
on it again; here the classifier keeps taking its steps while the new generator warms up,
because skipping the classifier's update on some steps is control flow around a gradient
all-reduce, which MirroredStrategy refuses ("merge_call called while defining a new graph",
checked with Keras 3.15 / TF 2.21).

Under tf.distribute the generator, its optimizer and the replay buffer are created in the
strategy scope (mirrored); every replica draws its own z (a ``tf.random.Generator`` created in
the scope gives each replica its own stream).

Signatures: the classifier's (``serving_default``, ``classify``) plus ``sample_noise``: images
in [0, 1] → ``noise`` (the raw draw δ), ``noisy_images`` (clipped; for ANT projected to ε) and
``l2`` (their distance to the images).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from zoo.layers.noise import (
    KERNELS,
    NoiseGenerator,
    gaussian_noise_images,
    per_image_scale,
    project_to_epsilon,
    speckle_noise_images,
)
from zoo.models.base import (
    ZooClassifier,
    apply_scaled_gradients,
    check_image_batch,
    make_optimizer,
    scale_loss_for_replicas,
    track_batch_means,
)
from zoo.models.objectives import ClassifierObjective, check_wrappable
from zoo.registry import InvalidConfigError, register_model, register_objective

__all__ = [
    "NoiseTraining",
    "GeneratorResets",
    "MadryCNN",
    "ApplicationClassifier",
    "NOISE_DEFAULTS",
    "MODES",
    "GNT_MULT_SIGMAS",
    "SPECKLE_C",
    "default_epsilon",
    "normalize_images",
    "madry_cnn_mnist",
    "resnet50_imagenet",
]

PAPER = "002_7240b1e8d13f6586.txt"
MODES = ("gnt", "speckle", "ant")
# ImageNet-C's Gaussian-noise severities (GNT_mult) and speckle severities (the Speckle baseline).
GNT_MULT_SIGMAS = (0.08, 0.12, 0.18, 0.26, 0.38)
SPECKLE_C = (0.15, 0.2, 0.35, 0.45, 0.6)
# ε of ANT ≈ the mean ℓ₂ of clipped N(0, 0.5²) noise (digest c.2; pitfall 4: tied to image size):
# 0.5·√(N/2) gives 9.9 for 28×28 (the paper's 10) and 137 for 224×224×3 (the paper's 135).
EPSILON_SIGMA = 0.5

# The noise objective's config keys (the registry adds them to any classifier's config when
# ``noise`` is set). Defaults are the paper's (digest c.1, c.2).
NOISE_DEFAULTS: dict[str, Any] = {
    "noise": None,  # "gnt" | "speckle" | "ant"
    "noise_sigma": 0.5,  # GNT: one σ, or a list to draw from per image
    "noise_speckle": SPECKLE_C,  # Speckle: c drawn per image from these
    "noise_clean_fraction": 0.5,  # of every batch (pitfall 2)
    "noise_epsilon": None,  # ANT: ℓ₂ after clipping; None: 0.5·√(H·W·C/2)
    "noise_generator": "1x1",  # "1x1" (ANT¹ˣ¹) or "3x3" (ANT³ˣ³)
    "noise_generator_width": 20,
    "noise_generator_depth": 4,  # NG₄: 983 parameters for C = 3
    "noise_generator_learning_rate": 1e-4,  # Adam
    "noise_current_fraction": 0.3,  # current generator; the rest of the noisy part is replay
    "noise_replay_slices": 2,  # replay slices per batch, each from one random snapshot
    "noise_replay_capacity": 128,  # snapshots kept (a ring)
    "noise_reset_every": 1 / 3,  # epochs between generator resets (paper: 0.33; code: 1)
    "noise_reset_steps": 50,  # warm-up steps of a new generator at the reset learning rate
    "noise_reset_learning_rate": 5e-4,  # the authors' lr_generator_retrain
    "noise_seed": None,  # the objective's random streams (None: from the global seed)
}


def default_epsilon(image_shape: Sequence[int]) -> float:
    """ANT's ε for images of ``image_shape`` when none is given: ``0.5·√(H·W·C / 2)``."""
    return EPSILON_SIGMA * math.sqrt(float(np.prod(image_shape)) / 2.0)


def _fraction(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidConfigError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise InvalidConfigError(f"{name} must be in [0, 1], got {value}")
    return v


def _positive_values(name: str, value) -> tuple[float, ...]:
    values = tuple(float(v) for v in (value if isinstance(value, list | tuple) else [value]))
    if not values or any(not v > 0 for v in values):
        raise InvalidConfigError(f"{name} must be a positive number or a list of them, got {value}")
    return values


def _random_stream(seed: int | None) -> tf.random.Generator:
    # In a tf.distribute scope every replica draws its own numbers from it.
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    return tf.random.Generator.from_seed(int(seed))


@keras.saving.register_keras_serializable(package="zoo")
class NoiseTraining(ClassifierObjective):
    """GNT, Speckle or ANT around ``classifier``; see the module docstring.

    Args:
        classifier: a zoo classifier on (H, W, C) images in [0, 1].
        noise: ``"gnt"``, ``"speckle"`` or ``"ant"``.
        The ``noise_*`` arguments: :data:`NOISE_DEFAULTS`.
    """

    objective = "noise"
    objective_keys = tuple(NOISE_DEFAULTS)

    def __init__(
        self,
        classifier: ZooClassifier,
        noise: str = "ant",
        noise_sigma=0.5,
        noise_speckle=SPECKLE_C,
        noise_clean_fraction: float = 0.5,
        noise_epsilon: float | None = None,
        noise_generator: str = "1x1",
        noise_generator_width: int = 20,
        noise_generator_depth: int = 4,
        noise_generator_learning_rate: float = 1e-4,
        noise_current_fraction: float = 0.3,
        noise_replay_slices: int = 2,
        noise_replay_capacity: int = 128,
        noise_reset_every: float | None = 1 / 3,
        noise_reset_steps: int = 50,
        noise_reset_learning_rate: float = 5e-4,
        noise_seed: int | None = None,
        **kwargs,
    ):
        check_wrappable(classifier, "noise")
        super().__init__(classifier, **kwargs)
        if noise not in MODES:
            raise InvalidConfigError(
                f"noise must be one of {', '.join(MODES)} (or none), got {noise!r}"
            )
        if noise_generator not in KERNELS:
            raise InvalidConfigError(
                f"noise_generator must be one of {', '.join(KERNELS)}, got {noise_generator!r}"
            )
        self.noise = noise
        self.sigma = _positive_values("noise_sigma", noise_sigma)
        self.speckle = _positive_values("noise_speckle", noise_speckle)
        self.clean_fraction = _fraction("noise_clean_fraction", noise_clean_fraction)
        self.current_fraction = _fraction("noise_current_fraction", noise_current_fraction)
        if self.current_fraction > 1.0 - self.clean_fraction + 1e-9:
            raise InvalidConfigError(
                f"noise_current_fraction ({noise_current_fraction}) cannot exceed the noisy part of "
                f"the batch, 1 - noise_clean_fraction = {1 - self.clean_fraction:g}"
            )
        self.epsilon_config = None if noise_epsilon is None else float(noise_epsilon)
        if self.epsilon_config is not None and not self.epsilon_config > 0:
            raise InvalidConfigError(f"noise_epsilon must be positive, got {noise_epsilon}")
        self.epsilon = self.epsilon_config or default_epsilon(self.image_shape)
        largest = math.sqrt(float(np.prod(self.image_shape)))
        if noise == "ant" and self.epsilon > largest:
            raise InvalidConfigError(
                f"noise_epsilon={self.epsilon:g} cannot be reached by any image of shape "
                f"{self.image_shape}: the largest ℓ₂ distance within [0, 1]^"
                f"{int(np.prod(self.image_shape))} is {largest:.3g} (ε is tied to the image size; "
                f"the default for this size is {default_epsilon(self.image_shape):.3g})"
            )
        self.generator_kernel = noise_generator
        self.generator_width = int(noise_generator_width)
        self.generator_depth = int(noise_generator_depth)
        self.generator_learning_rate = float(noise_generator_learning_rate)
        self.replay_slices = int(noise_replay_slices)
        self.replay_capacity = int(noise_replay_capacity)
        if self.replay_slices < 0 or self.replay_capacity < 1:
            raise InvalidConfigError(
                f"noise_replay_slices must be >= 0 and noise_replay_capacity >= 1, got "
                f"{noise_replay_slices} and {noise_replay_capacity}"
            )
        self.reset_every = None if not noise_reset_every else float(noise_reset_every)
        self.reset_steps = int(noise_reset_steps)
        self.reset_learning_rate = float(noise_reset_learning_rate)
        self.seed = noise_seed
        self.rng = _random_stream(noise_seed)
        # Drawn from NumPy's global state when unseeded (as keras.utils.set_random_seed sets it),
        # so a seeded run re-initialises its generators identically.
        reset_seed = noise_seed if noise_seed is not None else np.random.randint(0, 2**31 - 1)
        self._reset_rng = np.random.default_rng(int(reset_seed))
        self.trackers = {"noisy_accuracy": keras.metrics.Mean(name="noisy_accuracy")}
        self.generator = None
        if noise == "ant":
            channels = self.image_shape[-1]
            try:
                self.generator = NoiseGenerator(
                    channels, noise_generator, self.generator_width, self.generator_depth,
                    seed=None if noise_seed is None else int(noise_seed) + 1,
                    name="noise_generator",
                )  # fmt: skip
            except ValueError as e:
                raise InvalidConfigError(str(e)) from e
            size = self.generator.num_parameters
            self.replay_buffer = self.add_weight(
                shape=(self.replay_capacity, size), initializer="zeros", trainable=False,
                name="replay_buffer",
            )  # fmt: skip
            self.snapshot_count = self.add_weight(
                shape=(), initializer="zeros", dtype="int32", trainable=False,
                name="snapshot_count",
            )  # fmt: skip
            self.trackers["generator_loss"] = keras.metrics.Mean(name="generator_loss")
        self.generator_optimizer = None
        self.built = True  # the classifier and the generator are built

    # -- configuration ------------------------------------------------------------------------
    def objective_config(self) -> dict[str, Any]:
        return {
            "noise": self.noise,
            "noise_sigma": list(self.sigma) if len(self.sigma) > 1 else self.sigma[0],
            "noise_speckle": list(self.speckle),
            "noise_clean_fraction": self.clean_fraction,
            "noise_epsilon": self.epsilon_config,
            "noise_generator": self.generator_kernel,
            "noise_generator_width": self.generator_width,
            "noise_generator_depth": self.generator_depth,
            "noise_generator_learning_rate": self.generator_learning_rate,
            "noise_current_fraction": self.current_fraction,
            "noise_replay_slices": self.replay_slices,
            "noise_replay_capacity": self.replay_capacity,
            "noise_reset_every": self.reset_every,
            "noise_reset_steps": self.reset_steps,
            "noise_reset_learning_rate": self.reset_learning_rate,
            "noise_seed": self.seed,
        }

    def compile_objective(self):
        if self.generator is not None and self.generator_optimizer is None:
            self.generator_optimizer = self.loss_scaled(
                keras.optimizers.Adam(self.generator_learning_rate)
            )
            self.generator_optimizer.build(self.generator.trainable_variables)

    @property
    def objective_metrics(self):
        return list(self.trackers.values())

    # -- the noise ------------------------------------------------------------------------------
    def _check_range(self, x):
        return tf.debugging.assert_less_equal(
            tf.reduce_max(tf.abs(x - 0.5)), tf.constant(0.5, x.dtype),
            message=f"noise training expects images in [0, 1] (noise is added in pixel space, "
            f"then clipped, then {self.classifier.name} normalises them); rescale the data",
        )  # fmt: skip

    def split_sizes(self, batch) -> list[tf.Tensor]:
        """Sizes of the batch's parts: ``[clean, noisy]`` (GNT, Speckle) or ``[clean, current,
        replay_1, …]`` (ANT), in that order along the batch."""
        b = tf.convert_to_tensor(batch, tf.int32)
        bf = tf.cast(b, tf.float32)
        noisy = tf.cast(tf.round(bf * (1.0 - self.clean_fraction)), tf.int32)
        clean = b - noisy
        if self.noise != "ant" or self.replay_slices == 0:
            return [clean, noisy]
        current = tf.minimum(tf.cast(tf.round(bf * self.current_fraction), tf.int32), noisy)
        replay = noisy - current
        k = self.replay_slices
        slices = [replay // k + tf.cast(i < replay % k, tf.int32) for i in range(k)]
        return [clean, current, *slices]

    def noisy_images(self, x, sigma=None) -> tf.Tensor:
        """Every image of ``x`` under the objective's noise (ANT: the current generator's)."""
        b = tf.shape(x)[0]
        if self.noise == "gnt":
            s = per_image_scale(self.sigma if sigma is None else sigma, b, self.rng)
            return gaussian_noise_images(x, s, self.rng)
        if self.noise == "speckle":
            return speckle_noise_images(x, per_image_scale(self.speckle, b, self.rng), self.rng)
        return project_to_epsilon(x, self.generator(x), self.epsilon)

    def _replay_noise(self, x):
        """Noise for ``x`` from one snapshot drawn at random (the current generator while the
        buffer is empty)."""
        filled = tf.minimum(self.snapshot_count, self.replay_capacity)
        index = self.rng.uniform([], 0, tf.maximum(filled, 1), dtype=tf.int32)
        params = self.generator.unflatten(self.replay_buffer[index])
        z = self.generator.sample_z(tf.shape(x))
        old = self.generator.transform(z, params)
        new = self.generator.transform(z)
        return tf.where(filled > 0, old, new)

    def mix_batch(self, x) -> tuple[tf.Tensor, tf.Tensor]:
        """The batch the classifier trains on and, per image, where it came from: 0 clean, 1 the
        noise (ANT: the current generator), 2 + k replay slice k."""
        x = tf.convert_to_tensor(x)
        sizes = self.split_sizes(tf.shape(x)[0])
        parts = tf.split(x, tf.stack(sizes), axis=0, num=len(sizes))
        out = [parts[0]]
        if self.noise == "ant":
            out.append(project_to_epsilon(parts[1], self.generator(parts[1]), self.epsilon))
            out += [project_to_epsilon(p, self._replay_noise(p), self.epsilon) for p in parts[2:]]
        else:
            out.append(self.noisy_images(parts[1]))
        source = tf.concat([tf.fill([n], i) for i, n in enumerate(sizes)], axis=0)
        return tf.concat(out, axis=0), source

    # -- training -------------------------------------------------------------------------------
    def generator_step(self, x, y) -> tf.Tensor:
        """One Adam step of the generator maximising the classifier's cross-entropy on
        ``project(x, NG(z), ε)``, the classifier in inference mode; returns that cross-entropy."""
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        variables = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            adversarial = project_to_epsilon(x, self.generator(x), self.epsilon)
            logits = self.classifier(adversarial, training=False)
            ce = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.cast(logits, tf.float32))
            )
            loss = scale_loss_for_replicas(-ce)
        apply_scaled_gradients(self.generator_optimizer, tape, loss, variables)
        return ce

    def objective_train_step(self, x, y):
        x = tf.convert_to_tensor(x)
        with tf.control_dependencies([self._check_range(x)]):
            x = tf.identity(x)
        own = {}
        if self.noise == "ant":
            own["generator_loss"] = self.generator_step(x, y)
        mixed, _ = self.mix_batch(x)
        logs = dict(self.classifier_train_step(tf.stop_gradient(mixed), y))
        if own:
            logs.update(track_batch_means(self.trackers, own, x))
        return logs

    def objective_test_logs(self, x, y):
        logits = self.classifier(self.noisy_images(tf.convert_to_tensor(x)), training=False)
        y = tf.cast(tf.reshape(y, [-1]), tf.int64)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1), y), tf.float32)
        return track_batch_means(self.trackers, {"noisy_accuracy": tf.reduce_mean(correct)}, x)

    def objective_callbacks(self):
        return [GeneratorResets()] if self.noise == "ant" and self.reset_every else []

    # -- resets and snapshots (called eagerly, in cross-replica context) ------------------------
    def snapshot_generator(self) -> int:
        """Store the current generator in the replay buffer; returns the snapshot's index."""
        count = int(self.snapshot_count.numpy())
        slot = count % self.replay_capacity
        flat = self.generator.flat_parameters()
        self.replay_buffer.assign(
            tf.tensor_scatter_nd_update(self.replay_buffer.value, [[slot]], flat[None])
        )
        self.snapshot_count.assign(count + 1)
        return slot

    def reset_generator(self, learning_rate: float | None = None) -> None:
        """Snapshot the generator, then replace it by a fresh one with a fresh Adam state."""
        self.snapshot_generator()
        for k in self.generator.kernels:
            k.assign(self._reset_rng.normal(0.0, 0.01, k.shape).astype(np.float32))
        for b in self.generator.biases:
            b.assign(np.zeros(b.shape, np.float32))
        opt = self.generator_optimizer
        if opt is not None:
            # The Adam state only: a loss-scaling wrapper's scale carries on.
            opt = getattr(opt, "inner_optimizer", opt)
            lr = opt.learning_rate
            for v in opt.variables:
                if v is not lr:
                    v.assign(tf.zeros(v.shape, v.dtype))
            lr.assign(self.generator_learning_rate if learning_rate is None else learning_rate)

    # -- serving ----------------------------------------------------------------------------------
    def objective_signatures(self):
        spec = tf.TensorSpec((None, *self.image_shape), tf.float32, name="images")

        def sample_noise(images):
            check_image_batch(images, self.image_shape, self.zoo_name)
            with tf.control_dependencies([self._check_range(images)]):
                images = tf.identity(images)
            b = tf.shape(images)[0]
            if self.noise == "ant":
                noise = self.generator(images)
                noisy = project_to_epsilon(images, noise, self.epsilon)
            else:
                z = self.rng.normal(tf.shape(images))
                if self.noise == "gnt":
                    scale = per_image_scale(self.sigma, b, self.rng)[:, None, None, None]
                    noise = scale * z
                else:
                    scale = per_image_scale(self.speckle, b, self.rng)[:, None, None, None]
                    noise = images * scale * z
                noisy = tf.clip_by_value(images + noise, 0.0, 1.0)
            l2 = tf.norm(tf.reshape(noisy - images, [b, -1]), axis=1)
            return {"noise": noise, "noisy_images": noisy, "l2": l2}

        return {"sample_noise": (sample_noise, [spec])}


class GeneratorResets(keras.callbacks.Callback):
    """ANT's generator resets and replay snapshots, every ``noise_reset_every`` epochs.

    At each reset the generator is snapshotted into the replay buffer and re-initialised; the new
    one trains at ``noise_reset_learning_rate`` for ``noise_reset_steps`` steps. Needs the number
    of steps per epoch (``params["steps"]``, which the zoo's trainer and ``model.fit`` with a sized
    dataset or ``steps_per_epoch`` give).
    """

    def __init__(self):
        super().__init__()
        self.step = 0
        self.warmup_left = 0
        self.interval = None
        self.resets = 0

    def on_train_begin(self, logs=None):
        steps = (self.params or {}).get("steps")
        if not steps:
            raise ValueError(
                "ANT's generator resets happen every noise_reset_every epochs, which needs the "
                "number of steps per epoch: pass steps_per_epoch to fit (or set "
                "noise_reset_every=None to train without resets and replay)"
            )
        self.steps_per_epoch = int(steps)
        self.interval = max(1, int(round(self.model.reset_every * self.steps_per_epoch)))

    def on_epoch_begin(self, epoch, logs=None):
        self.step = epoch * self.steps_per_epoch

    def on_train_batch_end(self, batch, logs=None):
        model = self.model
        self.step += 1
        if self.warmup_left > 0:
            self.warmup_left -= 1
            if self.warmup_left == 0:
                model.generator_optimizer.learning_rate.assign(model.generator_learning_rate)
        if self.step % self.interval == 0:
            warm = model.reset_steps > 0
            model.reset_generator(model.reset_learning_rate if warm else None)
            self.warmup_left = model.reset_steps
            self.resets += 1


@register_objective(
    "noise",
    defaults=NOISE_DEFAULTS,
    choices=MODES,
    description="Gaussian (gnt), speckle or adversarial (ant) noise training "
    "(Rusak, Schott, Zimmermann et al., ECCV 2020)",
)
def noise_objective(model, noise=None, **config):
    """Wrap ``model`` (a zoo classifier on images in [0, 1]) in :class:`NoiseTraining`."""
    return NoiseTraining(model, noise=noise, **config)


# -- the paper's classifiers ------------------------------------------------------------------------
class _MomentumMixin:
    """``optimizer="sgd"`` means SGD with ``momentum`` (the paper's classifier optimiser)."""

    def default_optimizer(self):
        if self.optimizer_name.lower() == "sgd":
            return keras.optimizers.SGD(self.learning_rate, momentum=self.momentum)
        return make_optimizer(self.optimizer_name, self.learning_rate)


@keras.saving.register_keras_serializable(package="zoo")
class MadryCNN(_MomentumMixin, ZooClassifier):
    """The MNIST CNN of Madry et al. (2018) that the paper noise-trains (digest c.2).

    Conv 5×5 32 ReLU → MaxPool 2 → Conv 5×5 64 ReLU → MaxPool 2 → Dense 1024 ReLU → Dense
    classes ("same" padding, as in Madry et al.'s code): 3,274,634 parameters on 28×28×1.
    Input ``(batch, 28, 28, 1)`` in [0, 1] → logits ``(batch, 10)``.
    """

    def __init__(self, image_shape=(28, 28, 1), num_classes=10, filters=(32, 64), units=1024,
                 momentum=0.9, **kwargs):  # fmt: skip
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
        self.filters, self.units, self.momentum = (
            [int(f) for f in filters],
            int(units),
            float(momentum),
        )
        self.convs = [
            keras.layers.Conv2D(f, 5, padding="same", activation="relu", name=f"conv{i + 1}")
            for i, f in enumerate(self.filters)
        ]
        self.pools = [
            keras.layers.MaxPooling2D(2, name=f"pool{i + 1}") for i in range(len(self.filters))
        ]
        self.flatten = keras.layers.Flatten(name="flatten")
        self.hidden = keras.layers.Dense(self.units, activation="relu", name="fc1")
        self.logits = keras.layers.Dense(self.num_classes, name="logits")

    def call(self, x, training=False):
        check_image_batch(x, self.image_shape, self.zoo_name)
        for conv, pool in zip(self.convs, self.pools, strict=True):
            x = pool(conv(x))
        return self.logits(self.hidden(self.flatten(x)))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "units": self.units,
                "momentum": self.momentum}  # fmt: skip


# Caffe mode: keras.applications' ResNet50 weights (BGR, mean-subtracted, 0–255); torch mode: the
# torchvision statistics the paper's ResNet50 was trained with; tf: [-1, 1] (Inception, MobileNet).
PREPROCESSING = ("caffe", "torch", "tf")
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_DEFAULT_PREPROCESSING = {"ResNet50": "caffe", "InceptionV3": "tf", "DenseNet121": "torch"}


def normalize_images(x, mode: str):
    """[0, 1] RGB images → ``"caffe"`` (BGR, 0–255, ImageNet means subtracted), ``"torch"``
    ((x − mean) / std) or ``"tf"`` ([−1, 1]) input."""
    x = tf.convert_to_tensor(x)
    if mode == "caffe":
        return x[..., ::-1] * 255.0 - tf.constant(_CAFFE_BGR_MEAN, x.dtype)
    if mode == "torch":
        return (x - tf.constant(_TORCH_MEAN, x.dtype)) / tf.constant(_TORCH_STD, x.dtype)
    if mode == "tf":
        return x * 2.0 - 1.0
    raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSING)}, got {mode!r}")


@keras.saving.register_keras_serializable(package="zoo")
class ApplicationClassifier(_MomentumMixin, ZooClassifier):
    """A ``keras.applications`` network on images in [0, 1], its normalisation in the graph.

    Input ``(batch, H, W, 3)`` float in [0, 1] → logits ``(batch, classes)``. The input is
    normalised inside ``call`` (``preprocessing``: ``"caffe"`` = keras.applications' ResNet50
    convention, ``"torch"``, ``"tf"``), so noise and corruptions are applied to [0, 1] images
    by whoever calls it (digest c.5).

    Args:
        architecture: a ``keras.applications`` constructor name: ``ResNet50`` (the paper's),
            ``InceptionV3`` (App. H) or ``DenseNet121`` (App. K).
        backbone_weights: a local weights file for the backbone (e.g. keras.applications'
            ``resnet50_weights_tf_dim_ordering_tf_kernels.h5``); nothing is downloaded.
    """

    def __init__(self, architecture="ResNet50", image_shape=(224, 224, 3), num_classes=1000,
                 preprocessing=None, backbone_weights=None, momentum=0.9, **kwargs):  # fmt: skip
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
        if architecture not in _DEFAULT_PREPROCESSING:
            raise InvalidConfigError(
                f"architecture must be one of {', '.join(_DEFAULT_PREPROCESSING)}, got {architecture!r}"
            )
        preprocessing = preprocessing or _DEFAULT_PREPROCESSING[architecture]
        if preprocessing not in PREPROCESSING:
            raise InvalidConfigError(
                f"preprocessing must be one of {', '.join(PREPROCESSING)}, got {preprocessing!r}"
            )
        if self.image_shape[-1] != 3:
            raise InvalidConfigError(
                f"{architecture} takes RGB images; got image_shape {self.image_shape}"
            )
        self.architecture, self.preprocessing = architecture, preprocessing
        self.backbone_weights = None if backbone_weights is None else str(backbone_weights)
        self.momentum = float(momentum)
        if self.backbone_weights is not None and not Path(self.backbone_weights).is_file():
            raise InvalidConfigError(
                f"backbone_weights {self.backbone_weights!r} is not a file; pass the path of a "
                f"downloaded {architecture} weights file (nothing is downloaded at run time)"
            )
        self.backbone = getattr(keras.applications, architecture)(
            include_top=True, weights=None, input_shape=self.image_shape,
            classes=self.num_classes, classifier_activation=None,
        )  # fmt: skip
        if self.backbone_weights is not None:
            self.backbone.load_weights(self.backbone_weights)

    def normalize(self, x):
        """[0, 1] RGB → the backbone's input convention."""
        return normalize_images(x, self.preprocessing)

    def call(self, x, training=False):
        check_image_batch(x, self.image_shape, self.zoo_name)
        return self.backbone(self.normalize(x), training=training)

    def get_config(self):
        return {**super().get_config(), "architecture": self.architecture,
                "preprocessing": self.preprocessing, "backbone_weights": self.backbone_weights,
                "momentum": self.momentum}  # fmt: skip


# -- registrations ------------------------------------------------------------------------------
MNIST_TRAINING = {"epochs": 10, "batch_size": 300}  # the paper's batch 300 (digest c.2)
IMAGENET_TRAINING = {"epochs": 30, "batch_size": 70, "eval_split": "validation"}


@register_model("madry_cnn_mnist", family="noise_training", dataset="mnist", paper=PAPER,
                training=MNIST_TRAINING)  # fmt: skip
def madry_cnn_mnist(
    image_shape=(28, 28, 1),
    num_classes=10,
    filters=(32, 64),
    units=1024,
    learning_rate=1e-3,
    optimizer="adam",
    momentum=0.9,
    alpha=1.0,
    eta=0.0,
):
    """The MNIST CNN of Madry et al. that the noise-training paper trains (3,274,634 parameters).

    ``optimizer="sgd"`` is SGD with ``momentum`` (the paper fine-tunes with SGD-M, lr 1e-3).
    """
    return MadryCNN(name="madry_cnn_mnist", **locals()).build_for_inputs()


@register_model("resnet50_imagenet", family="noise_training", dataset="imagenet", paper=PAPER,
                training=IMAGENET_TRAINING)  # fmt: skip
def resnet50_imagenet(
    image_shape=(224, 224, 3),
    num_classes=1000,
    preprocessing="caffe",
    backbone_weights=None,
    learning_rate=1e-3,
    optimizer="sgd",
    momentum=0.9,
    alpha=1.0,
    eta=0.0,
):
    """keras.applications ResNet50 on [0, 1] images, normalisation in the graph (25,636,712 params).

    ``backbone_weights``: a local keras.applications ResNet50 weights file (caffe preprocessing);
    the paper fine-tunes from ImageNet weights with SGD-M lr 1e-3 (its last torchvision rate).
    """
    return ApplicationClassifier(
        name="resnet50_imagenet", architecture="ResNet50", **locals()
    ).build_for_inputs()


def _register_noise_model(name, classifier_builder, classifier_name, *, noise, dataset, training,
                          description, classifier_defaults=None):  # fmt: skip
    """Register ``name``: ``classifier_builder``'s model trained with ``noise`` defaults; its
    config is the classifier's keys followed by the objective's."""
    classifier_params = inspect.signature(classifier_builder).parameters
    classifier_defaults = classifier_defaults or {}
    noise_defaults = {**NOISE_DEFAULTS, **noise}
    params = [
        p.replace(default=classifier_defaults.get(p.name, p.default))
        for p in classifier_params.values()
    ] + [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
        for k, v in noise_defaults.items()
    ]

    def builder(**config):
        own = {k: config[k] for k in classifier_params}
        classifier = classifier_builder(**own)
        classifier.set_zoo_identity(classifier_name, own)
        if config["noise"] is None:
            return classifier
        return NoiseTraining(classifier, **{k: config[k] for k in NOISE_DEFAULTS})

    builder.__signature__ = inspect.Signature(params)
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = description
    register_model(name, family="noise_training", dataset=dataset, paper=PAPER,
                   description=description, training=training)(builder)  # fmt: skip
    return builder


gnt_mnist = _register_noise_model(
    "gnt_mnist", madry_cnn_mnist, "madry_cnn_mnist",
    noise={"noise": "gnt", "noise_sigma": 0.5}, dataset="mnist", training=MNIST_TRAINING,
    description="GNT σ=0.5 on the paper's MNIST CNN: half of every batch gets clip(x + N(0, 0.5²))",
)  # fmt: skip
ant_mnist = _register_noise_model(
    "ant_mnist", madry_cnn_mnist, "madry_cnn_mnist",
    noise={"noise": "ant", "noise_epsilon": 10.0}, dataset="mnist", training=MNIST_TRAINING,
    description="ANT¹ˣ¹ on the paper's MNIST CNN: a noise generator at ε = 10, 50/30/20 batches "
    "with experience replay and generator resets",
)  # fmt: skip
gnt_resnet50_imagenet = _register_noise_model(
    "gnt_resnet50_imagenet", resnet50_imagenet, "resnet50_imagenet",
    noise={"noise": "gnt", "noise_sigma": 0.5}, dataset="imagenet", training=IMAGENET_TRAINING,
    description="GNT σ=0.5 fine-tuning of ResNet50 (GPU scale; backbone_weights= a local file)",
)  # fmt: skip
ant_resnet50_imagenet = _register_noise_model(
    "ant_resnet50_imagenet", resnet50_imagenet, "resnet50_imagenet",
    noise={"noise": "ant", "noise_epsilon": 135.0},
    dataset="imagenet", training={**IMAGENET_TRAINING, "epochs": 80},
    description="ANT¹ˣ¹ fine-tuning of ResNet50 at ε = 135 (GPU scale; backbone_weights= a local "
    "file)",
)  # fmt: skip

__all__ += ["gnt_mnist", "ant_mnist", "gnt_resnet50_imagenet", "ant_resnet50_imagenet"]
