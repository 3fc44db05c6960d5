"""zoo: research models for TensorFlow/Keras, loadable by name.

>>> import zoo
>>> zoo.list_models("*mnist*")
>>> model = zoo.load("cnn_mnist")                      # random initialisation
>>> model = zoo.load("runs/cnn")                        # a preset: a zoo-train --output directory
>>> model = zoo.load("abs_mnist", weights="authors")   # a manifest tag (zoo-port converts it once)
>>> zoo.save_preset(model, "presets/abs")               # config.json, weights, metadata.json
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
    "save_preset",
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
    {"data", "eval", "export", "layers", "models", "port", "presets", "registry", "repro",
     "runtime", "serving", "training", "weights"}
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


def load(name: str | os.PathLike, weights: str | os.PathLike | None = None, **overrides):
    """Build the model registered as ``name`` (case-insensitive) and optionally load weights;
    or rebuild a preset: ``zoo.load(DIR)``.

    Args:
        name: a registered name (``zoo.list_models()`` lists them), or a preset directory
            (``config.json``, ``weights.weights.h5``, ``metadata.json``; a ``zoo-train
            --output`` directory is one), which is rebuilt with its own config.
        weights: None for random initialisation; a manifest tag (``zoo.get_spec(name).weights``);
            a preset directory, whose config the model is built with; a ``.weights.h5`` /
            ``.keras`` file or a directory holding ``weights.weights.h5``, loaded into the
            model as configured.
        **overrides: config keys to change (``zoo.get_spec(name).default_config`` lists them).
            With a preset they apply on top of its config; a key that changes the shape of the
            weights is refused, except a class count, which re-initialises the head (warning).

    Raises:
        UnknownModelError: no such model; the message names the closest registered ones.
        InvalidConfigError: an override the model's config does not have, or one that changes
            the architecture of the preset.
        WeightsError: weights that are missing, corrupt, truncated or do not fit; names the file.
    """
    from zoo.presets import load as _load

    return _load(name, weights, **overrides)


def save_preset(model, directory: str | os.PathLike, **metadata):
    """Write ``model`` as a preset directory that ``zoo.load(directory)`` rebuilds; see
    :func:`zoo.presets.save_preset` for the metadata keywords."""
    from zoo.presets import save_preset as _save

    return _save(model, directory, **metadata)
