"""Reusable Keras layers, one file per kind."""

from zoo.layers.preprocessing import Binarize

__all__ = ["Binarize"]
