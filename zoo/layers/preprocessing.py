"""Input preprocessing layers."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="zoo")
class Binarize(keras.layers.Layer):
    """Threshold inputs to {0, 1}, with a straight-through gradient.

    ``y = 1[x >= threshold]`` in the forward pass; the backward pass is the identity, so
    gradient-based attacks still see a useful gradient through binarized models
    (002_7240b1e8d13f6586.txt, ABS sec. 4.3: Binary CNN / Binary ABS attacked with the
    straight-through estimator).

    Input shape: any. Output shape: the same, same dtype.
    """

    def __init__(self, threshold: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def call(self, x):
        hard = tf.cast(x >= self.threshold, x.dtype)
        return x + tf.stop_gradient(hard - x)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}
