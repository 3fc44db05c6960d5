"""ANT under MirroredStrategy on two logical CPUs (run in a fresh interpreter).

Prints one JSON line: whether the generator's variables are mirrored, whether the two replicas
drew different z, and, after full ANT steps through ``strategy.run(model.train_step)`` (the zoo
trainer's loop: generator step, then the classifier's own step on the 50/30/20 batch), whether
the generator and the classifier moved and are identical on both replicas.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import zoo  # noqa: E402

keras.utils.set_random_seed(0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
tiny = {"filters": [4, 8, 16, 10]}
with strategy.scope():
    model = zoo.load("cnn_mnist", noise="ant", noise_generator_learning_rate=1e-2, **tiny)
    model.compile()
x = tf.random.uniform((16, 28, 28, 1), seed=1)
y = tf.random.uniform((16,), 0, 10, tf.int64, seed=2)
with strategy.scope():
    model._symbolic_build(data_batch=(x, y))
ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)).repeat(2))


@tf.function
def draw():
    return strategy.run(lambda: model.generator.sample_z(tf.constant([2, 28, 28, 1])))


@tf.function
def step(batch):
    # Both updates (Adam on the generator, the classifier's optimizer on the classifier) must
    # all-reduce their gradients, leaving both replicas with the same weights.
    return strategy.run(model.train_step, args=(batch,))


z = [t.numpy() for t in strategy.experimental_local_results(draw())]
generator = model.generator.kernels[0].value  # the MirroredVariable
classifier = model.classifier.trainable_variables[0].value
before = [generator.numpy().copy(), classifier.numpy().copy()]
for batch in ds:
    step(batch)
replicas = [[v.numpy() for v in var.values] for var in (generator, classifier)]
print(
    json.dumps(
        {
            "mirrored": type(generator).__name__,
            "z_differ_across_replicas": bool(np.abs(z[0] - z[1]).max() > 1e-3),
            "generator_moved": bool(np.abs(replicas[0][0] - before[0]).max() > 1e-6),
            "classifier_moved": bool(np.abs(replicas[1][0] - before[1]).max() > 1e-6),
            "replicas_equal": all(np.array_equal(*r) for r in replicas),
        }
    )
)
