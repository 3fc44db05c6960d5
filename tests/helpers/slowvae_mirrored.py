"""One SlowVAE step on one device and under MirroredStrategy over two CPU devices, same batch.

Prints a JSON line: each replica's local batch shape, whether every replica's pairs are whole
(its frames are the batch's pairs, in order), and the largest weight difference between the two
runs after one SGD step (the reparameterisation noise is zero in both, so the two compute the
same function). Run in a fresh interpreter: logical devices must be set before TensorFlow starts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import zoo  # noqa: E402
import zoo.data  # noqa: E402
from zoo.models.slowvae import SlowVAE  # noqa: E402


def build(weights=None):
    keras.utils.set_random_seed(0)
    model = zoo.load("slowvae_sprites", image_shape=(32, 32, 1))
    if weights is not None:
        model.set_weights(weights)

    def objective(x0, x1, training=False, noise=None):  # ε = 0: a deterministic step
        zero = tf.zeros((2 * tf.shape(x0)[0], model.z_dim))
        return SlowVAE.objective(model, x0, x1, training=training, noise=zero)

    model.objective = objective
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    model.optimizer.build(model.trainable_variables)
    return model


def main() -> None:
    x, _ = next(
        iter(zoo.data.load("sprites/no_rotation_32x32/lap", "test", batch_size=8, shuffle=False))
    )
    single = build()
    start = [w.copy() for w in single.get_weights()]
    single.train_step((x,))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build(start)
    dist = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x))
    batch = next(iter(dist))
    local = [t.numpy() for t in strategy.experimental_local_results(batch)]
    whole = bool(np.array_equal(np.concatenate(local), x.numpy()))

    @tf.function
    def step(b):
        return strategy.run(mirrored.train_step, args=((b,),))

    step(batch)
    diff = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(single.get_weights(), mirrored.get_weights(), strict=True)
    )
    moved = max(
        float(np.max(np.abs(a - b))) for a, b in zip(start, single.get_weights(), strict=True)
    )
    print(json.dumps({"local_shapes": [list(t.shape) for t in local], "whole_pairs": whole,
                      "max_weight_difference": diff, "max_update": moved,
                      "replicas": strategy.num_replicas_in_sync}))  # fmt: skip


if __name__ == "__main__":
    main()
