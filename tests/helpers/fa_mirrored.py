"""Feature alignment under MirroredStrategy over two logical CPUs (run in a fresh interpreter:
logical devices must be set before TensorFlow initialises).

1. ``fa_mnist`` (no noise in its step) takes one SGD step on the same global batch on one device
   (eagerly, no strategy) and on two replicas, for ``loss_reduction`` "sum" and "mean": the
   weights must agree, so each replica's loss is scaled to the global batch's sum (or mean), not
   to its own half.
2. ``fa_gan_mnist`` takes a step on the two replicas (``strategy.run(model.train_step)``, the
   trainer's loop): three optimizers all-reduce in one ``train_step``.

One MirroredStrategy object serves every model: TensorFlow reuses collective instance keys across
MirroredStrategy objects created in one process, so a second one fails with a "shape mismatch in
the collective instance" (``train.py --strategy mirrored`` creates one per process, and works).

Prints one JSON line: ``{"max_weight_gap": {...}, "update_size": {...}, "gan": {...}}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(2)]
)

import keras  # noqa: E402

import zoo  # noqa: E402

TINY = {"conv_filters": [4, 8], "conv_strides": [1, 2], "hidden_units": 32, "latent_dim": 8}


def steps(strategy, model, x, y, n=1):
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x)).repeat()
    )
    step = tf.function(lambda batch: strategy.run(model.train_step, args=(batch,)))
    it = iter(data)
    for _ in range(n):
        logs = step(next(it))
    return {k: float(strategy.reduce("MEAN", v, axis=None)) for k, v in logs.items()}


def one_step(strategy, reduction, x, y):
    """One SGD step on the whole batch: under ``strategy``, or (None) the plain eager
    ``train_step`` on one device, which needs no trace."""
    keras.utils.set_random_seed(0)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = zoo.load("fa_mnist", **TINY, loss_reduction=reduction)
        model.compile(optimizer=keras.optimizers.SGD(1e-3 if reduction == "sum" else 1e-1))
    before = [v.numpy() for v in model.encoder_variables]
    if strategy is None:
        model.train_step((tf.constant(x), tf.constant(y)))
    else:
        steps(strategy, model, x, y)
    return before, [v.numpy() for v in model.encoder_variables]


def main():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 16).astype(np.int64)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    mirrored = tf.distribute.MirroredStrategy(devices)
    gap, size = {}, {}
    for reduction in ("sum", "mean"):
        b1, a1 = one_step(None, reduction, x, y)
        b2, a2 = one_step(mirrored, reduction, x, y)
        assert all(np.array_equal(p, q) for p, q in zip(b1, b2, strict=True))
        gap[reduction] = max(float(np.abs(p - q).max()) for p, q in zip(a1, a2, strict=True))
        size[reduction] = max(float(np.abs(p - q).max()) for p, q in zip(a1, b1, strict=True))
    with mirrored.scope():
        gan = zoo.load("fa_gan_mnist", **TINY, generator_filters=4)
        gan.compile()
    logs = steps(mirrored, gan, x, y, n=1)
    iterations = {k: int(o.iterations.numpy()) for k, o in gan.optimizers().items()}
    print(json.dumps({
        "max_weight_gap": gap, "update_size": size, "replicas": mirrored.num_replicas_in_sync,
        "gan": {"logs": logs, "iterations": iterations},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
