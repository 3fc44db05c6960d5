"""TFP-based priors as Keras layers: the layer owns the parameters, ``distribution()`` builds the
``tfd`` object from them on every call (``tfp.layers`` is tied to Keras 2; shared/ARCHITECTURE.md).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = ["LearnedDiagonalGaussian"]


@keras.saving.register_keras_serializable(package="zoo")
class LearnedDiagonalGaussian(keras.layers.Layer):
    """A factorial Gaussian N(β, softplus(γ)) over ``dim`` coordinates with learned β and γ.

    Starts as N(0, 1). ``layer(z)`` is the log-density of each row of z, shape ``(batch,)``.
    Used for the nuisance variables of iCE (004_a2e2a3876a23345e.txt, Def. 7: p_k = N(β_k, γ_k)).
    """

    def __init__(self, dim: int, min_scale: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.min_scale = int(dim), float(min_scale)
        self.loc = self.add_weight(shape=(self.dim,), initializer="zeros", name="loc")
        self.raw_scale = self.add_weight(
            shape=(self.dim,),
            initializer=keras.initializers.Constant(math.log(math.e - 1.0)),  # softplus → 1
            name="raw_scale",
        )
        self.built = True  # every variable exists; nothing depends on the input shape

    def distribution(self) -> tfd.Distribution:
        scale = tf.nn.softplus(self.raw_scale.value) + self.min_scale
        return tfd.Independent(tfd.Normal(self.loc.value, scale), reinterpreted_batch_ndims=1)

    def call(self, z):
        return self.distribution().log_prob(z)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "min_scale": self.min_scale}
