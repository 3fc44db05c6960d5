"""``kitti_masks``: KITTI Masks pedestrian-mask pairs (002_7240b1e8d13f6586.txt, SlowVAE §5;
digest a.2) from a file in ``--data-dir``.

The authors release the data (zenodo 3931823) only as a Python pickle, ``kitti_peds_v2.pickle``,
and the zoo never unpickles files. It reads ``kitti_masks.npz`` instead, holding the same
arrays:

- ``images``: ``(N, 64, 64)`` uint8 or bool masks, every frame of every sequence, in order;
- ``latents``: ``(N, 3)`` float, (vertical centre of mass, horizontal centre of mass, area);
- ``sequence_lengths``: ``(S,)`` int, the number of frames of each sequence (sum N).

A pair is a frame and the frame ``k ~ U{1, …, max_delta_t}`` later in its sequence (clipped at
its end), as the authors' ``KittiMasks``: ``max_delta_t`` 5 (mean Δt 0.15 s, ``kitti_masks``) or
1 (0.05 s, ``kitti_masks/max_delta_1``). Examples are ``(pair (2, 64, 64, 1), latents (2, 3))``;
the latents are continuous, so MCC is the metric. ``train`` holds one pair per frame that has a
successor (84,626 − 2,120 = 82,506 starts in the release), ``test`` a seeded draw of 4,096.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from zoo.data.core import LazyExamples, not_available, register_dataset
from zoo.data.errors import DatasetError

__all__ = ["FILENAME", "read_kitti_masks", "kitti_pairs"]

FILENAME = "kitti_masks.npz"
_TEST_PAIRS = 4096


def read_kitti_masks(data_dir: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images (N, 64, 64, 1) uint8 0/1, latents (N, 3) float32, sequence_lengths (S,))``."""
    path = Path(data_dir) / FILENAME if data_dir is not None else None
    if path is None or not path.is_file():
        where = f"no {FILENAME} in {data_dir}" if data_dir is not None else "no --data-dir given"
        raise not_available(
            "kitti_masks",
            f"{where}. The authors release KITTI Masks as a Python pickle, which the zoo does not "
            f"unpickle; {FILENAME} holds the same arrays (images, latents, sequence_lengths: see "
            f"zoo/data/kitti_masks.py)",
            "sprites/lap",
        )
    with np.load(path, allow_pickle=False) as f:
        missing = {"images", "latents", "sequence_lengths"} - set(f.files)
        if missing:
            raise DatasetError(f"{path} lacks the array(s) {sorted(missing)}")
        images, latents, lengths = f["images"], f["latents"], f["sequence_lengths"]
    if images.ndim != 3 or images.shape[1:] != (64, 64):
        raise DatasetError(f"{path}: images must be (N, 64, 64) masks, got {images.shape}")
    if latents.shape != (len(images), 3) or int(np.sum(lengths)) != len(images):
        raise DatasetError(
            f"{path}: latents must be (N, 3) and sequence_lengths sum to N = {len(images)}; got "
            f"{latents.shape} and a sum of {int(np.sum(lengths))}"
        )
    images = (images > 0).astype(np.uint8)[..., None]
    return images, latents.astype(np.float32), np.asarray(lengths, np.int64)


def kitti_pairs(lengths: np.ndarray, max_delta_t: int, rng: np.random.Generator) -> np.ndarray:
    """Frame-index pairs ``(n, 2)``: every frame with a successor, and one ``k`` frames later."""
    ends = np.cumsum(lengths) - 1
    seq_end = np.repeat(ends, lengths)
    starts = np.flatnonzero(np.arange(int(np.sum(lengths))) < seq_end)
    step = rng.integers(1, max_delta_t + 1, len(starts))
    return np.stack([starts, np.minimum(starts + step, seq_end[starts])], axis=1)


def _source(max_delta_t: int):
    def source(split, data_dir, num_examples, seed, download):
        images, latents, lengths = read_kitti_masks(data_dir)
        rng = np.random.default_rng([seed, max_delta_t, 0 if split == "train" else 1])
        keys = kitti_pairs(lengths, max_delta_t, rng)
        if split == "test":
            keys = keys[rng.choice(len(keys), min(_TEST_PAIRS, len(keys)), replace=False)]

        def numpy_decode(k):
            k = np.asarray(k)
            return images[k].astype(np.float32), latents[k]

        def decode(k):
            x, z = tf.numpy_function(numpy_decode, [k], [tf.float32, tf.float32], stateful=False)
            x.set_shape(k.shape.concatenate((64, 64, 1)))
            z.set_shape(k.shape.concatenate([3]))
            return x, z

        return LazyExamples(keys=keys, decode=decode)

    return source


for _name, _dt, _what in (
    ("kitti_masks", 5, "max 5 frames apart, mean dt 0.15 s"),
    ("kitti_masks/max_delta_1", 1, "consecutive frames, mean dt 0.05 s"),
):
    register_dataset(
        _name,
        splits=("train", "test"),
        description=f"KITTI Masks pedestrian-mask pairs ({_what}) from {FILENAME} in --data-dir",
        alternative="sprites/lap",
    )(_source(_dt))
