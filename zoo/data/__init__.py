"""Datasets as ``tf.data`` pipelines: ``zoo.data.load(name, split, batch_size, data_dir=None)``.

Zoo datasets:

- ``digits``: procedural, MNIST-shaped handwritten-style digits (28×28×1, 10 classes); no files,
  no network, deterministic per seed. See :mod:`zoo.data.digits`.
- ``mnist``: TFDS ``mnist``, or, with ``data_dir``, ``mnist.npz`` in the ``keras.datasets`` layout
  or the four original IDX files.

- ``spheres``: the fiRevNet paper's two concentric spheres in R^100 (radii 1 and 10, label =
  which sphere); procedural. See :mod:`zoo.data.spheres`.
- ``peak``: the racecar paper's SVD-test images (a disk top left or bottom right on random
  strokes; 100 train, 10 test); procedural. See :mod:`zoo.data.peak`.
- ``celeba`` and ``celeba_156x128``: TFDS ``celeb_a`` images (218×178, or centre-cropped to
  156×128 for the INN autoencoder), label 0.
- ``var_u`` and ``var_u_swapped``: the 12-bit task of the racecar paper's mutual-information test
  (3277 train, 819 test) and its task B with the labels exchanged; procedural. See
  :mod:`zoo.data.var_u`.
- ``sprites`` (and ``sprites/no_rotation``, ``sprites/quarter_rotation``, ``sprites/32x32``,
  ``sprites/no_rotation_32x32``): procedural dSprites-like images with known factors, labels =
  factors / (K − 1). See :mod:`zoo.data.sprites`; the factor-grid API is :mod:`zoo.data.factors`.
- ``dsprites``, ``shapes3d``, ``smallnorb``: the TFDS datasets as factor datasets (their label
  fields index the grid). See :mod:`zoo.data.tfds_factors`.
- ``NAME/lap``, ``NAME/uni`` for each factor dataset: pairs of images for the SlowVAE family
  (``(pair (2, H, W, C), labels (2, D))``). See :mod:`zoo.data.pairs`.
- ``BASE/random``, ``BASE/composition``, ``BASE/interpolation``, ``BASE/extrapolation`` for
  ``sprites``, ``sprites/no_rotation``, ``sprites/quarter_rotation``, ``dsprites``, ``shapes3d``,
  and ``mpi3d/VARIANT`` from the authors' npz files: the in-domain generalization benchmark's
  splits. See :mod:`zoo.data.generalization`.
- ``laplace_transitions``: SlowVAE's theory check, 200-D mixtures of 20-D latents with Laplace
  transitions, as pairs; procedural. ``kitti_masks``: KITTI Masks pairs from ``--data-dir``.
- ``imagenet``: TFDS ``imagenet2012`` (manual download) as 224×224 crops, streamed; and
  ``zoo.data.imagenet.imagenet_c_folder`` for the released ImageNet-C files.
  See :mod:`zoo.data.imagenet`.

Any other name goes to ``tfds.load``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from zoo.data import imagenet, kitti_masks, mnist_files, sprites, tfds_factors  # noqa: F401  (register)
from zoo.data.core import (
    DatasetSpec,
    check_dataset_name,
    get_dataset_spec,
    list_datasets,
    load,
    network_available,
    num_examples_of,
    register_dataset,
    tfds_source,
)
from zoo.data.errors import DatasetError, DatasetNotAvailableError, UnknownDatasetError

__all__ = [
    "load",
    "list_datasets",
    "register_dataset",
    "get_dataset_spec",
    "check_dataset_name",
    "num_examples_of",
    "network_available",
    "DatasetSpec",
    "DatasetError",
    "DatasetNotAvailableError",
    "UnknownDatasetError",
]


@register_dataset(
    "digits",
    splits=("train", "test"),
    description="procedural MNIST-shaped digits (28x28x1, 10 classes); offline, seeded",
    procedural=True,
)
def _digits(split, data_dir, num_examples, seed, download):
    from zoo.data.digits import digits_arrays

    return digits_arrays(split, num_examples=num_examples, seed=seed)


@register_dataset(
    "spheres",
    splits=("train", "test"),
    description="two concentric spheres in R^100, radii 1 and 10 (fiRevNet paper); offline, seeded",
    procedural=True,
)
def _spheres(split, data_dir, num_examples, seed, download):
    from zoo.data.spheres import spheres_arrays

    return spheres_arrays(split, num_examples=num_examples, seed=seed)


@register_dataset(
    "peak",
    splits=("train", "test"),
    description="racecar SVD test: a disk top left (0) or bottom right (1) on random strokes "
    "(28x28x1; 100 train, 10 test); offline, seeded",
    procedural=True,
)
def _peak(split, data_dir, num_examples, seed, download):
    from zoo.data.peak import peak_arrays

    return peak_arrays(split, num_examples=num_examples, seed=seed)


@register_dataset(
    "var_u",
    splits=("train", "test"),
    description="12-bit information-plane task (Shwartz-Ziv & Tishby), regenerated; 3277 train, "
    "819 test; offline",
    procedural=True,
)
def _var_u(split, data_dir, num_examples, seed, download):
    from zoo.data.var_u import var_u_arrays

    return var_u_arrays(split, num_examples=num_examples)


@register_dataset(
    "var_u_swapped",
    splits=("train", "test"),
    description="var_u with its two labels exchanged (the racecar MI test's transfer task B)",
    procedural=True,
)
def _var_u_swapped(split, data_dir, num_examples, seed, download):
    from zoo.data.var_u import var_u_arrays

    return var_u_arrays(split, num_examples=num_examples, swapped=True)


@register_dataset(
    "laplace_transitions",
    splits=("train", "test"),
    description="SlowVAE App. B toy: pairs of 200-D MLP mixtures of 20-D latents with Laplace "
    "transitions (x (2, 200), latents (2, 20)); 40,000 train, 5,000 test; offline, seeded",
    procedural=True,
)
def _laplace_transitions(split, data_dir, num_examples, seed, download):
    from zoo.data.laplace_transitions import laplace_transition_arrays

    return laplace_transition_arrays(split, num_examples=num_examples, seed=seed)


@register_dataset(
    "celeba",
    splits=("train", "validation", "test"),
    description="CelebA faces via TFDS celeb_a, 218x178x3 in [0, 1] (label 0)",
)
def _celeba(split, data_dir, num_examples, seed, download):
    return tfds_source("celeb_a", split, data_dir, download, image_key="image")


@register_dataset(
    "celeba_156x128",
    splits=("train", "validation", "test"),
    description="CelebA faces via TFDS celeb_a, centre-cropped to 156x128x3 (the INN "
    "autoencoder's input, divisible by 4 for two Haar levels)",
)
def _celeba_156x128(split, data_dir, num_examples, seed, download):
    ds = tfds_source("celeb_a", split, data_dir, download, image_key="image")
    return ds.map(lambda x, y: (tf.image.crop_to_bounding_box(x, 31, 25, 156, 128), y))


@register_dataset(
    "celeba_64x64",
    splits=("train", "validation", "test"),
    description="CelebA faces via TFDS celeb_a, the central 178x178 square resized to 64x64x3 "
    "(feature alignment's CelebA input, 001_4315bda1330034cd.txt §5.2)",
)
def _celeba_64x64(split, data_dir, num_examples, seed, download):
    ds = tfds_source("celeb_a", split, data_dir, download, image_key="image")
    square = lambda x: tf.image.crop_to_bounding_box(x, 20, 0, 178, 178)  # noqa: E731
    return ds.map(lambda x, y: (tf.image.resize(square(x), (64, 64), antialias=True), y))


def _as_float_images(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0)[..., None]


@register_dataset(
    "mnist",
    splits=("train", "test"),
    description="MNIST via TFDS, or mnist.npz / IDX files in --data-dir",
    alternative="digits",
)
def _mnist(split, data_dir: Path | None, num_examples, seed, download):
    if mnist_files.has_mnist_files(data_dir):
        images, labels = mnist_files.load_mnist_arrays(data_dir, split)
        if num_examples is not None:
            images, labels = images[:num_examples], labels[:num_examples]
        return _as_float_images(images), labels
    hint = (
        f" and no {mnist_files.NPZ_NAME} or IDX files (train-images-idx3-ubyte.gz, ...) in "
        f"{data_dir}"
        if data_dir is not None
        else ""
    )
    return tfds_source("mnist", split, data_dir, download, alternative="digits", extra_hint=hint)


# The benchmark's splits are registered over the factor datasets above, so they come last.
from zoo.data import generalization  # noqa: E402,F401
