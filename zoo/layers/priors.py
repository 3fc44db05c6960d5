"""TFP-based priors as Keras layers: the layer owns the parameters, ``distribution()`` builds the
``tfd`` object from them on every call (``tfp.layers`` is tied to Keras 2; shared/ARCHITECTURE.md).

The SlowVAE transition prior (002_7240b1e8d13f6586.txt, SlowVAE eq. 2) is here too:
:func:`transition_prior` (Laplace, or generalized normal for a shape α ≠ 1), the closed-form
cross-entropy of a Normal posterior against it (:func:`cross_entropy_normal_laplace`, App. A.2),
and ``KL(Normal ‖ Laplace)`` registered with ``tfd.RegisterKL``, which TFP lacks, so that
``tfd.kl_divergence(tfd.Normal(...), tfd.Laplace(...))`` and ``Normal.cross_entropy(Laplace)``
work once this module is imported.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = [
    "LearnedDiagonalGaussian",
    "LaplaceTransitionPrior",
    "transition_prior",
    "transition_cross_entropy",
    "cross_entropy_normal_laplace",
    "cross_entropy_normal_standard",
    "cross_entropy_normals",
    "normal_entropy",
]

_LOG_2PI = math.log(2.0 * math.pi)


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


# -- the SlowVAE transition prior ----------------------------------------------------------------
def normal_entropy(logvar):
    """``H(N(μ, e^logvar)) = ½(logvar + log 2πe)``, elementwise."""
    return 0.5 * (logvar + _LOG_2PI + 1.0)


def cross_entropy_normal_standard(mu, logvar):
    """``H(N(μ, σ²), N(0, 1)) = ½(μ² + σ²) + ½ log 2π``, elementwise (SlowVAE App. A.2)."""
    return 0.5 * (tf.square(mu) + tf.exp(logvar)) + 0.5 * _LOG_2PI


def cross_entropy_normals(mu_q, logvar_q, mu_p, logvar_p):
    """``H(N(μ_q, σ_q²), N(μ_p, σ_p²)) = ½ log 2πσ_p² + (σ_q² + (μ_q − μ_p)²) / 2σ_p²``,
    elementwise (the PM-VAE ablation's prior, SlowVAE App. F.3)."""
    return 0.5 * (_LOG_2PI + logvar_p) + (tf.exp(logvar_q) + tf.square(mu_q - mu_p)) / (
        2.0 * tf.exp(logvar_p)
    )


def cross_entropy_normal_laplace(mean, logvar, rate):
    """``H(N(m, σ²), Laplace(0, 1/λ))`` in closed form, elementwise and differentiable.

    002_7240b1e8d13f6586.txt, SlowVAE App. A.2, eqs. 18-22: with ``m`` the posterior mean minus
    the Laplace location and ``σ = exp(logvar / 2)``, ``E|z| = σ√(2/π)·exp(−m²/2σ²) + m·erf(m/σ√2)``
    (the mean of a folded normal), so ``H = −log(λ/2) + λ·E|z|``.
    """
    mean = tf.convert_to_tensor(mean)
    # Floored at σ ≈ 2e-9: below it the closed form's gradient is 0·∞ (NaN) in float32, and the
    # value is unchanged to float precision (λσ√(2/π) vanishes either way).
    logvar = tf.maximum(tf.cast(logvar, mean.dtype), -40.0)
    sigma = tf.exp(0.5 * logvar)
    rate = tf.cast(rate, mean.dtype)
    folded_mean = sigma * math.sqrt(2.0 / math.pi) * tf.exp(
        -tf.square(mean) / (2.0 * tf.square(sigma))
    ) + mean * tf.math.erf(mean / (sigma * math.sqrt(2.0)))
    return -tf.math.log(rate / 2.0) + rate * folded_mean


def transition_prior(z_previous, rate: float = 6.0, power: float = 1.0) -> tfd.Distribution:
    """``p(z_t | z_{t−1}) = Π_i αλ^{1/α} / (2Γ(1/α)) · exp(−λ|z_t,i − z_{t−1},i|^α)``.

    002_7240b1e8d13f6586.txt, SlowVAE eq. 2, with the normaliser corrected for α ≠ 1 (the paper's
    αλ/2Γ(1/α) is right only for α = 1): a Laplace of scale 1/λ for α = 1, else TFP's generalized
    normal of scale λ^(−1/α). ``z_previous``: ``(batch, d)``; the event is the last axis."""
    z_previous = tf.convert_to_tensor(z_previous)
    if power == 1.0:
        base = tfd.Laplace(z_previous, tf.cast(1.0 / rate, z_previous.dtype))
    else:
        base = tfd.GeneralizedNormal(
            z_previous, tf.cast(rate ** (-1.0 / power), z_previous.dtype), power
        )
    return tfd.Independent(base, reinterpreted_batch_ndims=1)


def transition_cross_entropy(mu, logvar, z_previous, rate=6.0, power=1.0, num_samples=1):
    """``H(q(z_t|x_t), p(z_t|z_{t−1}))`` per latent dimension, ``(batch, d)``.

    Closed form for the Laplace (α = 1); for another shape α, a reparameterised Monte-Carlo
    estimate with ``num_samples`` draws of ``z_t ~ q`` (no closed form exists)."""
    if power == 1.0:
        return cross_entropy_normal_laplace(mu - z_previous, logvar, rate)
    sigma = tf.exp(0.5 * logvar)
    eps = tf.random.normal(tf.concat([[num_samples], tf.shape(mu)], 0), dtype=mu.dtype)
    z = mu[None] + sigma[None] * eps
    prior = tfd.GeneralizedNormal(
        z_previous, tf.cast(rate ** (-1.0 / power), mu.dtype), tf.cast(power, mu.dtype)
    )
    return -tf.reduce_mean(prior.log_prob(z), axis=0)


def _kl_normal_laplace(q, p, name=None):
    """``KL(Normal ‖ Laplace) = H(q, p) − H(q)``, elementwise, from the closed form above."""
    with tf.name_scope(name or "kl_normal_laplace"):
        dtype = q.loc.dtype
        logvar = 2.0 * tf.math.log(tf.cast(q.scale, dtype))
        rate = 1.0 / tf.cast(p.scale, dtype)
        return cross_entropy_normal_laplace(q.loc - tf.cast(p.loc, dtype), logvar, rate) - (
            q.entropy()
        )


try:
    tfd.RegisterKL(tfd.Normal, tfd.Laplace)(_kl_normal_laplace)
except ValueError:  # already registered (the module was reloaded)
    pass


@keras.saving.register_keras_serializable(package="zoo")
class LaplaceTransitionPrior(keras.layers.Layer):
    """The sparse transition prior ``p(z_t | z_{t−1})`` of SlowVAE (eq. 2), rate λ and shape α.

    ``layer(z_t, z_previous)`` is the log-density of each row, shape ``(batch,)``;
    :meth:`cross_entropy` the cross-entropy of a Normal posterior ``(mu, logvar)`` against it,
    per dimension. No trainable weights (λ and α are hyperparameters, as in the paper)."""

    def __init__(self, rate: float = 6.0, power: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if rate <= 0 or power <= 0:
            raise ValueError(
                f"the transition prior needs rate > 0 and power > 0, got {rate}, {power}"
            )
        self.rate, self.power = float(rate), float(power)
        self.built = True

    def distribution(self, z_previous) -> tfd.Distribution:
        return transition_prior(z_previous, self.rate, self.power)

    def call(self, z, z_previous):
        return self.distribution(z_previous).log_prob(z)

    def cross_entropy(self, mu, logvar, z_previous, num_samples: int = 1):
        return transition_cross_entropy(mu, logvar, z_previous, self.rate, self.power, num_samples)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "power": self.power}
