"""Reusable Keras layers, one file per kind.

- :mod:`zoo.layers.preprocessing`: ``Binarize``.
- :mod:`zoo.layers.grouped`: grouped convolutions (one network per group, as one op).
- :mod:`zoo.layers.invertible`: invertible blocks with inverse and log-determinant.
- :mod:`zoo.layers.priors`: TFP priors with learned parameters, and SlowVAE's Laplace transition
  prior with the Normal-Laplace cross-entropy (registered as ``tfd.kl_divergence``).
"""

from zoo.layers.preprocessing import Binarize

__all__ = ["Binarize"]
