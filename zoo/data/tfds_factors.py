"""TFDS ``dsprites``, ``shapes3d`` and ``smallnorb`` as factor datasets, through their label
fields, so the pair samplers and the disentanglement metrics use them as they use ``sprites``.

The whole dataset is read into memory once (as disentanglement_lib and the SlowVAE authors'
code do): the factor-grid index of every example is computed from its ``label_*`` fields, and
an image is looked up by index. Memory: dSprites 0.38 GB (binary images packed to bits),
Shapes3D 5.9 GB, SmallNORB 0.2 GB (resized to 64×64 as disentanglement_lib does).

The grid is the one the TFDS feature spec declares (``ClassLabel(num_classes=K)``); a copy that
holds only some combinations (a TFDS split slice, a mock) is a subset of that grid, and pairs
stay inside the combinations it holds. Two examples with the same combination are an error.

Factor order and the categorical factors follow disentanglement_lib and the SlowVAE code:
dSprites [shape*, scale, orientation, x, y]; Shapes3D [floor hue, wall hue, object hue, scale,
shape*, orientation]; SmallNORB [category*, instance*, elevation, azimuth, lighting] over train
and test together (24,300 + 24,300 = 48,600 = the full grid), with the instance unobserved by
the metrics (* = categorical).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.data.core import network_available, not_available
from zoo.data.errors import DatasetError, UnknownDatasetError
from zoo.data.factors import FactorDataset, FactorGrid, register_factor_dataset

__all__ = ["TFDSFactorDataset", "TFDSFactorSpec", "TFDS_FACTOR_SPECS"]


@dataclass(frozen=True)
class TFDSFactorSpec:
    tfds_name: str
    factors: tuple[tuple[str, str, bool], ...]  # (factor name, TFDS feature, categorical)
    splits: tuple[str, ...] = ("train",)
    image_size: int = 64
    binary: bool = False  # dSprites stores 0/1 in uint8
    observed: tuple[int, ...] | None = None


TFDS_FACTOR_SPECS = {
    "dsprites": TFDSFactorSpec(
        "dsprites",
        (
            ("shape", "label_shape", True),
            ("scale", "label_scale", False),
            ("orientation", "label_orientation", False),
            ("x_position", "label_x_position", False),
            ("y_position", "label_y_position", False),
        ),
        binary=True,
    ),  # fmt: skip
    "shapes3d": TFDSFactorSpec(
        "shapes3d",
        (
            ("floor_hue", "label_floor_hue", False),
            ("wall_hue", "label_wall_hue", False),
            ("object_hue", "label_object_hue", False),
            ("scale", "label_scale", False),
            ("shape", "label_shape", True),
            ("orientation", "label_orientation", False),
        ),
    ),  # fmt: skip
    "smallnorb": TFDSFactorSpec(
        "smallnorb",
        (
            ("category", "label_category", True),
            ("instance", "instance", True),
            ("elevation", "label_elevation", False),
            ("azimuth", "label_azimuth", False),
            ("lighting", "label_lighting", False),
        ),
        splits=("train", "test"),
        observed=(0, 2, 3, 4),
    ),  # fmt: skip
}
_READ_BATCH = 4096


class TFDSFactorDataset(FactorDataset):
    """A TFDS dataset with ``label_*`` fields held in memory, indexed by its factor grid."""

    def __init__(self, spec: TFDSFactorSpec, data_dir: Path | None = None, download: bool = True):
        import tensorflow_datasets as tfds

        self.name = spec.tfds_name
        self.spec = spec
        try:
            builder = tfds.builder(
                spec.tfds_name, data_dir=str(data_dir) if data_dir else None, try_gcs=False
            )
        except tfds.core.registered.DatasetNotFoundError as e:  # pragma: no cover - catalog
            raise UnknownDatasetError(f"Unknown dataset {spec.tfds_name!r}: {e}") from e
        features = builder.info.features
        sizes = []
        for _, key, _ in spec.factors:
            if key not in features:
                raise DatasetError(f"{spec.tfds_name} has no label field {key!r}")
            sizes.append(int(features[key].num_classes))
        self.grid = FactorGrid(
            tuple(f[0] for f in spec.factors), tuple(sizes), tuple(f[2] for f in spec.factors)
        )
        channels = int(features["image"].shape[-1])
        self.image_shape = (spec.image_size, spec.image_size, channels)
        self.observed_factors = spec.observed
        images, labels = [], []
        for split in spec.splits:
            x, y = self._read(builder, split, download)
            images.append(x)
            labels.append(y)
        images, labels = np.concatenate(images), np.concatenate(labels)
        index = self.grid.index_of(labels)
        order = np.argsort(index, kind="stable")
        index = index[order]
        duplicate = np.flatnonzero(np.diff(index) == 0)
        if duplicate.size:
            example = self.grid.factors_of(index[duplicate[0]]).tolist()
            raise DatasetError(
                f"{spec.tfds_name}: {duplicate.size} examples repeat a factor combination (e.g. "
                f"{dict(zip(self.grid.names, example, strict=True))}); its label fields do not "
                f"index a factor grid"
            )
        self._images = images[order]
        if len(index) < self.grid.size:
            self._available = index
        self._rows = index  # sorted grid indices of the stored rows

    def _read(self, builder, split: str, download: bool):
        import tensorflow as tf

        keys = [key for _, key, _ in self.spec.factors]
        size, binary = self.spec.image_size, self.spec.binary

        def read():
            ds = builder.as_dataset(split=split, shuffle_files=False)

            def prepare(f):
                image = f["image"]
                if binary:
                    image = tf.cast(image > 0, tf.uint8)
                if image.shape[0] != size:
                    image = tf.image.resize(image, (size, size), antialias=True)
                    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
                return image, tf.stack([tf.cast(f[k], tf.int64) for k in keys])

            return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(_READ_BATCH)

        # Read first: is_prepared() would bypass tfds.testing.mock_data (see tfds_source).
        try:
            batches = list(read().as_numpy_iterator())
        except AssertionError:
            where = builder.data_dir
            if not download or not network_available():
                raise not_available(
                    self.spec.tfds_name, f"no prepared TFDS data in {where}", "sprites"
                ) from None
            try:
                builder.download_and_prepare()
            except Exception as e:  # network, checksum or manual-download failures
                raise not_available(
                    self.spec.tfds_name, f"the TFDS download failed: {e}", "sprites"
                ) from e
            batches = list(read().as_numpy_iterator())
        except (ValueError, KeyError) as e:
            raise DatasetError(
                f"Dataset {self.spec.tfds_name!r} has no split {split!r}: {e}"
            ) from e
        if not batches:
            raise DatasetError(f"{self.spec.tfds_name} split {split!r} is empty")
        if binary:  # one bit per pixel: dSprites in 0.38 GB instead of 3 GB
            images = [np.packbits(b[0].reshape(len(b[0]), -1), axis=1) for b in batches]
        else:
            images = [b[0] for b in batches]
        return np.concatenate(images), np.concatenate([b[1] for b in batches])

    def render(self, factors: np.ndarray) -> np.ndarray:
        index = self.grid.index_of(factors)
        rows = np.searchsorted(self._rows, index)
        if self.spec.binary:
            pixels = int(np.prod(self.image_shape))
            bits = np.unpackbits(self._images[rows], axis=1, count=pixels)
            return bits.reshape(len(rows), *self.image_shape).astype(np.float32)
        return self._images[rows].astype(np.float32) / 255.0


def _factory(spec: TFDSFactorSpec):
    def factory(data_dir, download):
        return TFDSFactorDataset(spec, data_dir, download)

    return factory


_DESCRIPTIONS = {
    "dsprites": "TFDS dsprites with its factor grid [shape 3, scale 6, orientation 40, x 32, "
    "y 32]; labels = factors / (K-1)",
    "shapes3d": "TFDS shapes3d with its factor grid [floor 10, wall 10, object 10, scale 8, "
    "shape 4, orientation 15]; labels = factors / (K-1)",
    "smallnorb": "TFDS smallnorb (train + test, 64x64) with its factor grid [category 5, "
    "instance 10, elevation 9, azimuth 18, lighting 6]; labels = factors / (K-1)",
}
for _name, _spec in TFDS_FACTOR_SPECS.items():
    register_factor_dataset(
        _name, _factory(_spec), description=_DESCRIPTIONS[_name], alternative="sprites"
    )
