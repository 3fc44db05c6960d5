"""zoo: research models for TensorFlow/Keras, loadable by name.

>>> import zoo
>>> zoo.list_models("*mnist*")
>>> model = zoo.load("cnn_mnist")                      # random initialisation
>>> model = zoo.load("cnn_mnist", weights="runs/cnn")  # a zoo-train --output directory
>>> zoo.get_spec("cnn_mnist").default_config
"""

from __future__ import annotations

import os

# The zoo is written for Keras 3 on the TensorFlow backend (tf.distribute, SavedModel export).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from zoo.registry import (  # noqa: E402
    InvalidConfigError,
    ModelSpec,
    UnknownModelError,
    build_model,
    get_spec,
    list_models,
    register_model,
)
from zoo.weights import WeightsError  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "load",
    "build",
    "list_models",
    "get_spec",
    "register_model",
    "ModelSpec",
    "UnknownModelError",
    "InvalidConfigError",
    "WeightsError",
    "__version__",
]


# Subpackages a user reaches as ``zoo.<name>`` after ``import zoo`` (``zoo.data.load(...)``),
# imported on first access so that ``import zoo`` stays light.
_SUBMODULES = frozenset(
    {"data", "eval", "export", "layers", "models", "registry", "repro", "runtime", "serving",
     "training", "weights"}
)  # fmt: skip


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"zoo.{name}")
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_SUBMODULES})


def build(name: str, **overrides):
    """Build the model registered as ``name`` with random weights; see :func:`load`."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"zoo needs the TensorFlow backend of Keras, but KERAS_BACKEND is "
            f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow before importing keras"
        )
    spec = get_spec(name)
    config = spec.config(**overrides)
    model = build_model(spec, config)
    model.set_zoo_identity(spec.name, config)
    return model


def load(name: str, weights: str | os.PathLike | None = None, **overrides):
    """Build the model registered as ``name`` (case-insensitive) and optionally load weights.

    Args:
        name: a registered name; ``zoo.list_models()`` lists them.
        weights: None for random initialisation; a manifest tag (``zoo.get_spec(name).weights``);
            a ``.weights.h5``/``.keras`` file; or a directory holding ``weights.weights.h5``,
            such as a ``zoo-train --output`` directory.
        **overrides: config keys to change (``zoo.get_spec(name).default_config`` lists them).

    Raises:
        UnknownModelError: no such model; the message names the closest registered ones.
        InvalidConfigError: an override the model's config does not have.
        WeightsError: weights that are missing, corrupt, truncated or do not fit; names the file.
    """
    model = build(name, **overrides)
    if weights is not None:
        from zoo.weights import load_weights

        load_weights(model, model.zoo_name, weights)
    return model
