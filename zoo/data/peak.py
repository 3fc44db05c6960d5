"""``peak``: the racecar paper's SVD test data (000_7daca03a93eb4fe1.txt, Fig. 3b/4a, Tab. 8;
shared/digests/racecar.md §2.1), generated procedurally.

Each 28×28 image holds the same anti-aliased disk, about 6 px across, top left (rows 5–10,
cols 4–9; label 0) or bottom right (rows 19–24, cols 19–24; label 1), on top of random free-hand
strokes about 1–2 px wide that carry more energy than the disk, as in the authors' PNGs. The
paper trains on 100 images (50 per class) and tests on 10. Pixels are floats in [0, 1]; the
racecar models scale them to the reference's raw 0–255 (``input_scale=255``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["peak_arrays", "peak_template", "SPLIT_SIZES", "CENTERS"]

SPLIT_SIZES = {"train": 100, "test": 10}
_SPLIT_IDS = {"train": 0, "test": 1}
CENTERS = ((7.5, 6.5), (21.5, 21.5))  # (row, col) of the disk for labels 0 and 1
_RADIUS = 3.0
_SUPER = 4  # supersampling per axis for anti-aliasing


def _coverage(center, radius, size=28) -> np.ndarray:
    """Fraction of each pixel inside the disk, by 4×4 supersampling."""
    offsets = (np.arange(_SUPER) + 0.5) / _SUPER
    rows = (np.arange(size)[:, None] + offsets[None]).reshape(-1)
    inside = (rows[:, None] - center[0]) ** 2 + (rows[None, :] - center[1]) ** 2 <= radius**2
    return inside.reshape(size, _SUPER, size, _SUPER).mean(axis=(1, 3))


def peak_template(label: int) -> np.ndarray:
    """The clean disk of class ``label`` (28×28 float in [0, 1]), without strokes."""
    return _coverage(CENTERS[label], _RADIUS).astype(np.float32)


def _strokes(rng: np.random.Generator, size=28) -> np.ndarray:
    img = np.zeros((size, size))
    yy, xx = np.mgrid[:size, :size]
    for _ in range(rng.integers(2, 5)):
        pos = rng.uniform(3, size - 3, 2)
        angle = rng.uniform(0, 2 * np.pi)
        width = rng.uniform(0.45, 0.8)
        intensity = rng.uniform(0.6, 1.0)
        for _ in range(rng.integers(12, 40)):
            angle += rng.normal(0, 0.35)
            pos = np.clip(pos + np.array([np.sin(angle), np.cos(angle)]), 0, size - 1)
            blob = np.exp(-((yy - pos[0]) ** 2 + (xx - pos[1]) ** 2) / (2 * width**2))
            img = np.maximum(img, intensity * blob)
    img[img < 0.05] = 0.0
    return img


def peak_arrays(
    split: str, num_examples: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: float32 ``(n, 28, 28, 1)`` in [0, 1] and int64 labels alternating
    0, 1, … . Deterministic per ``(split, seed)``; a smaller ``num_examples`` is a prefix."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"peak has splits {sorted(SPLIT_SIZES)}, not {split!r}")
    n = SPLIT_SIZES[split] if num_examples is None else int(num_examples)
    if n <= 0 or seed < 0:
        raise ValueError(f"need num_examples > 0 and seed ≥ 0; got {n}, {seed}")
    rng = np.random.default_rng([seed, _SPLIT_IDS[split]])
    labels = (np.arange(n) % 2).astype(np.int64)
    templates = [peak_template(0), peak_template(1)]
    images = np.stack([np.maximum(_strokes(rng), templates[y]) for y in labels])
    return images[..., None].astype(np.float32), labels
