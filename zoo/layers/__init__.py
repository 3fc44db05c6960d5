"""Reusable Keras layers, one file per kind.

- :mod:`zoo.layers.preprocessing`: ``Binarize``.
- :mod:`zoo.layers.grouped`: grouped convolutions (one network per group, as one op).
- :mod:`zoo.layers.invertible`: invertible blocks with inverse and log-determinant.
- :mod:`zoo.layers.priors`: TFP priors with learned parameters.
"""

from zoo.layers.preprocessing import Binarize

__all__ = ["Binarize"]
