"""Dynamic loss scaling under a 2-replica MirroredStrategy, with an overflow on one replica only.

Run in a fresh interpreter (the CPU is split into two logical devices before TensorFlow
initialises). For the zoo's ``LossScaleOptimizer`` and, as the negative control, Keras' own:
build cnn_mnist under float16, take one step whose second replica's images hold an inf, then one
clean step. Prints ``{"zoo": {...}, "keras": {...}}`` with the loss scale after each step, whether
the weights moved, whether they are finite, and whether the two replicas' copies agree.
"""

import json

import keras
import numpy as np
import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import zoo  # noqa: E402
from zoo.precision import LossScaleOptimizer, apply_mixed_precision  # noqa: E402
from zoo.training import _build_training_state  # noqa: E402


def run(strategy, optimizer_class):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 8).astype(np.int64)
    with strategy.scope():
        model = zoo.build("cnn_mnist", optimizer="sgd", learning_rate=0.1)
        apply_mixed_precision(model, "float16")
        model.compile(optimizer=optimizer_class(keras.optimizers.SGD(0.1)))
        _build_training_state(model, (images, labels))

    def batches(poison):
        def fn(ctx):
            x = images[ctx.replica_id_in_sync_group * 4 :][:4].copy()
            if poison and ctx.replica_id_in_sync_group == 1:
                x[0, 0, 0, 0] = np.inf  # the second replica only
            y = labels[ctx.replica_id_in_sync_group * 4 :][:4]
            return tf.constant(x), tf.constant(y)

        return strategy.experimental_distribute_values_from_function(fn)

    @tf.function
    def step(batch):
        strategy.run(model.train_step, args=(batch,))

    def weights():
        return [
            np.stack([np.asarray(c) for c in strategy.experimental_local_results(v.value)])
            for v in model.trainable_variables
        ]

    before = weights()
    out = {"initial_scale": float(model.optimizer.dynamic_scale.numpy())}
    for name, poison in (("overflow", True), ("clean", False)):
        step(batches(poison))
        now = weights()
        out[name] = {
            "scale": float(model.optimizer.dynamic_scale.numpy()),
            "moved": bool(any(np.any(a != b) for a, b in zip(now, before, strict=True))),
            "finite": bool(all(np.all(np.isfinite(w)) for w in now)),
            "replicas_agree": bool(all(np.array_equal(w[0], w[1]) for w in now)),
        }
        before = now
    return out


def main():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    print(json.dumps({
        "zoo": run(strategy, LossScaleOptimizer),
        "keras": run(strategy, keras.optimizers.LossScaleOptimizer),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
