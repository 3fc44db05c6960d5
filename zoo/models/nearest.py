"""Nearest-neighbour baseline of the ABS paper (``002_7240b1e8d13f6586.txt``, Table 1; digest §2).

``logit_c = −min_{x′ ∈ train, y′ = c} ‖x − x′‖₂``: the L2 distance to the nearest stored training
image of each class, in [0, 1] pixel units. "Training" stores the training set: each
``train_step`` writes its batch into a fixed-size memory (a ring buffer, so a second epoch
overwrites rather than grows it). Under ``tf.distribute`` every replica writes the whole global
batch (gathered across replicas), so the copies stay identical.

The memory holds pixels as uint8 (``round(255·x)``): MNIST's pixels are multiples of 1/255, so
this is exact there (47 MB for 60,000 images rather than 188 MB of float32); procedural images
are quantized by at most 1/510 per pixel. It is saved with the weights and in the export.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from zoo.models.base import ZooClassifier, check_image_batch
from zoo.registry import InvalidConfigError, building_name, register_model

__all__ = ["NearestNeighbour", "nn_mnist"]

PAPER = "002_7240b1e8d13f6586.txt"
# One pass stores the training set; batch size only sets the write granularity.
NN_TRAINING = {"epochs": 1, "batch_size": 500}


@keras.saving.register_keras_serializable(package="zoo")
class NearestNeighbour(ZooClassifier):
    """1-nearest-neighbour classifier with a stored (uint8) training set.

    Args:
        memory_size: how many training images the memory holds (60,000: all of MNIST's). Rows
            that were never written are ignored; past ``memory_size`` the oldest are replaced.
        chunk_size: stored images compared per step of the distance computation, which bounds
            the (batch × chunk) distance matrix held at once.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        num_classes: int = 10,
        memory_size: int = 60_000,
        chunk_size: int = 20_000,
        **kwargs,
    ):
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
        if memory_size < 1 or chunk_size < 1:
            raise InvalidConfigError("memory_size and chunk_size must be at least 1")
        self.memory_size, self.chunk_size = int(memory_size), int(chunk_size)
        self.pixels = int(np.prod(self.image_shape))
        state = dict(trainable=False, initializer="zeros", aggregation="only_first_replica")
        self.memory = self.add_weight(
            name="memory", shape=(self.memory_size, self.pixels), dtype="uint8", **state
        )
        self.memory_labels = self.add_weight(
            name="memory_labels", shape=(self.memory_size,), dtype="int32", **state
        )
        self.stored = self.add_weight(name="stored", shape=(), dtype="int64", **state)
        self.trackers = {
            "stored": keras.metrics.Sum(name="stored"),  # images stored this epoch
            "loss": keras.metrics.Mean(name="loss"),
            "accuracy": keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        }
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    def get_metrics_result(self):
        # Training reports "stored", evaluation "loss" and "accuracy": leave out the idle ones.
        def idle(m):
            return tf.executing_eagerly() and all(not np.any(v.numpy()) for v in m.variables)

        return {m.name: m.result() for m in self.metrics if not idle(m)}

    def build_for_inputs(self) -> NearestNeighbour:
        return self  # every variable exists already; an empty memory has nothing to classify

    # -- "training": store the batch -------------------------------------------------------------
    def train_step(self, data):
        x, y = data[0], data[1]
        check_image_batch(x, self.image_shape, self.zoo_name)
        rows = tf.reshape(tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.int32),
                          [-1, self.pixels])  # fmt: skip
        labels = tf.reshape(tf.cast(y, tf.int32), [-1])
        self.trackers["stored"].update_state(tf.cast(tf.shape(labels)[0], tf.float32))
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            rows, labels = ctx.all_gather(rows, axis=0), ctx.all_gather(labels, axis=0)
        n = tf.shape(labels, out_type=tf.int64)[0]
        index = (self.stored + tf.range(n)) % self.memory_size
        self.memory.value.scatter_update(tf.IndexedSlices(tf.cast(rows, tf.uint8), index))
        self.memory_labels.value.scatter_update(tf.IndexedSlices(labels, index))
        self.stored.assign_add(n)
        return {"stored": self.trackers["stored"].result()}

    def test_step(self, data):
        x, y = data[0], data[1]
        logits = self(x, training=False)
        loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        self.trackers["loss"].update_state(loss)
        self.trackers["accuracy"].update_state(y, logits)
        return {
            "loss": self.trackers["loss"].result(),
            "accuracy": self.trackers["accuracy"].result(),
        }

    def memorize(self, images, labels) -> NearestNeighbour:
        """Store ``images`` (n, H, W, C) in [0, 1] with their ``labels`` directly (no trainer)."""
        self.train_step((tf.convert_to_tensor(images, tf.float32), tf.convert_to_tensor(labels)))
        return self

    # -- inference --------------------------------------------------------------------------------
    def nearest_distances(self, x):
        """(batch, classes): the L2 distance to the nearest stored image of each class
        (``inf`` for a class with none stored).

        The search ranks stored images by ‖x‖² + ‖m‖² − 2x·m, one matmul per chunk, which
        cancels in float32 (a stored image came out 0.004 from itself); the winner of each class
        is then re-measured as ‖x − m‖², so the reported distance is exact (0 for a stored
        image) and the clamp at 0 only guards the ranking."""
        check_image_batch(x, self.image_shape, self.zoo_name)
        tf.debugging.assert_positive(
            self.stored,
            message=f"{self.zoo_name} has stored no training images: train it "
            f"(python training/train.py --model {self.zoo_name}), call memorize(images, labels), "
            "or load its weights",
        )
        xf = tf.reshape(tf.convert_to_tensor(x, tf.float32), [-1, self.pixels])
        x2 = tf.reduce_sum(tf.square(xf), axis=-1, keepdims=True)
        filled = tf.minimum(self.stored, self.memory_size)
        best = tf.fill([tf.shape(xf)[0], self.num_classes], np.float32(np.inf))
        winner = tf.zeros([tf.shape(xf)[0], self.num_classes], tf.int64)
        for start in range(0, self.memory_size, self.chunk_size):
            stop = min(start + self.chunk_size, self.memory_size)
            m = tf.cast(self.memory[start:stop], tf.float32) / 255.0
            d2 = (
                x2
                + tf.reduce_sum(tf.square(m), axis=-1)[None]
                - 2.0 * tf.matmul(xf, m, transpose_b=True)
            )
            valid = tf.range(start, stop, dtype=tf.int64) < filled
            d2 = tf.where(valid[None], tf.maximum(d2, 0.0), np.float32(np.inf))
            onehot = tf.one_hot(
                self.memory_labels[start:stop], self.num_classes, on_value=True, off_value=False
            )
            per_class = tf.where(onehot[None], d2[..., None], np.float32(np.inf))  # (b, chunk, C)
            chunk_best = tf.reduce_min(per_class, axis=1)
            better = chunk_best < best
            winner = tf.where(better, tf.argmin(per_class, axis=1) + start, winner)
            best = tf.where(better, chunk_best, best)
        rows = tf.cast(tf.gather(self.memory, winner), tf.float32) / 255.0  # (b, C, pixels)
        exact = tf.reduce_sum(tf.square(xf[:, None] - rows), axis=-1)
        return tf.sqrt(tf.where(tf.math.is_inf(best), best, exact))

    def call(self, x, training=False):
        return -self.nearest_distances(x)

    def default_optimizer(self):
        return None  # nothing is trained by gradient

    def default_metrics(self):
        return None  # test_step tracks loss and accuracy itself

    def get_config(self):
        return {
            **super().get_config(),
            "memory_size": self.memory_size,
            "chunk_size": self.chunk_size,
        }


@register_model(
    "nn_mnist",
    family="abs",
    dataset="mnist",
    paper=PAPER,
    training=NN_TRAINING,
    description="Nearest-neighbour baseline: logits = −L2 to the nearest training image per class",
)
def nn_mnist(
    memory_size: int = 60_000, chunk_size: int = 20_000, alpha: float = 1.0, eta: float = 0.0
) -> NearestNeighbour:
    """The ABS paper's nearest-neighbour baseline (96.9% on MNIST). ``train`` stores the set."""
    return NearestNeighbour(
        name=building_name("nn_mnist"),
        memory_size=memory_size,
        chunk_size=chunk_size,
        alpha=alpha,
        eta=eta,
    ).build_for_inputs()
