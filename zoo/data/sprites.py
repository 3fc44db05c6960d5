"""``sprites``: a procedural dSprites-like dataset with known factors (no files, no network).

Binary 64×64 (or 32×32) images of one white shape on black, for every combination of

====================  =====================================================================
shape                 square, ellipse, heart (dSprites' three; a triangle is available too),
                      categorical
scale                 6 values, 0.5 … 1.0 (dSprites' linspace)
orientation           40 values k·9° in [0°, 360°); ``rotation="quarter"``: the 10 in
                      [0°, 90°), the benchmark paper's ablation; ``rotation="none"``: no factor
x_position            32 values, centres 1.5 px apart (64×64), the sprite centre moving over
y_position            the middle 73 % of the image
====================  =====================================================================

so the default grid is dSprites' [3, 6, 40, 32, 32] = 737,280 images. As dSprites, each image is
rendered anti-aliased and then thresholded: the coverage of every pixel is measured with
``supersample²`` sub-pixel samples and the pixel is on iff at least half is covered.

Images are rendered on demand (nothing is stored): a pixel-exact patch per (shape, scale,
orientation, sub-pixel offset) is rasterised once and pasted at the integer part of the centre,
which is the same image as rasterising in place. Rendering is deterministic: the image of a grid
index is a pure function of it.

The square has a 90° symmetry, the ellipse 180° and the triangle 120°, as in dSprites: their
orientation is not recoverable from the image over the full circle (pitfall 6 of the benchmark
digest); ``sprites/no_rotation`` and ``sprites/quarter_rotation`` avoid that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from zoo.data.factors import FactorDataset, FactorGrid, FactorGridError, register_factor_dataset

__all__ = ["Sprites", "SHAPES", "DSPRITES_SHAPES", "ROTATIONS"]

SHAPES = ("square", "ellipse", "heart", "triangle")
DSPRITES_SHAPES = ("square", "ellipse", "heart")
ROTATIONS = ("full", "quarter", "none")
NUM_SCALES, NUM_ORIENTATIONS, NUM_POSITIONS = 6, 40, 32


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u, v) of the sprite's own frame (v up, unit half-size) are inside."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 1.0
    if shape == "ellipse":
        return u * u + (v / 0.5) ** 2 <= 1.0
    if shape == "heart":
        # The implicit heart (x² + y² − 1)³ ≤ x² y³, scaled and centred into the unit box.
        x, y = 1.15 * u, 1.15 * v + 0.12
        return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0
    if shape == "triangle":  # equilateral, pointing up, centroid at the origin
        return (v >= -0.65) & (v <= 1.3 - math.sqrt(3.0) * np.abs(u))
    raise ValueError(shape)


class Sprites(FactorDataset):
    """The procedural sprites grid. ``images(indices)`` renders any grid indices.

    Args:
        image_size: 64 (dSprites' size) or 32 (or another multiple of 32).
        shapes: which shapes, in this order (the shape factor's values).
        rotation: ``"full"`` (40 orientations over 360°), ``"quarter"`` (the 10 in [0°, 90°)) or
            ``"none"`` (no orientation factor).
        supersample: sub-pixel samples per axis for the anti-aliased coverage.
        name: the dataset name it is registered under.
    """

    def __init__(
        self,
        image_size: int = 64,
        shapes: Sequence[str] = DSPRITES_SHAPES,
        rotation: str = "full",
        supersample: int = 4,
        name: str = "sprites",
    ):
        if int(image_size) < 32 or int(image_size) % 32:
            raise FactorGridError(f"sprites are 32×32, 64×64, …; image_size {image_size}")
        unknown = [s for s in shapes if s not in SHAPES]
        if unknown or not shapes or len(set(shapes)) != len(shapes):
            raise FactorGridError(f"shapes must be distinct names from {SHAPES}; got {shapes}")
        if rotation not in ROTATIONS:
            raise FactorGridError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
        self.name = name
        self.size = int(image_size)
        self.shapes = tuple(shapes)
        self.rotation = rotation
        self.supersample = int(supersample)
        self.image_shape = (self.size, self.size, 1)
        self.scales = np.linspace(0.5, 1.0, NUM_SCALES)
        n_orient = {"full": NUM_ORIENTATIONS, "quarter": NUM_ORIENTATIONS // 4, "none": 0}[rotation]
        self.orientations = 2 * np.pi * np.arange(n_orient) / NUM_ORIENTATIONS
        step = 1.5 * self.size / 64
        self.centres = self.size / 2 + (np.arange(NUM_POSITIONS) - (NUM_POSITIONS - 1) / 2) * step
        self.base_radius = self.size / 8  # half-size of a scale-1 sprite, in pixels
        positions = tuple(np.linspace(0.0, 1.0, NUM_POSITIONS))
        names = ["shape", "scale", "orientation", "x_position", "y_position"]
        sizes = [len(self.shapes), NUM_SCALES, n_orient, NUM_POSITIONS, NUM_POSITIONS]
        values = [tuple(range(len(self.shapes))), tuple(self.scales), tuple(self.orientations),
                  positions, positions]  # fmt: skip
        if rotation == "none":
            del names[2], sizes[2], values[2]
        self.grid = FactorGrid(
            tuple(names), tuple(sizes), (True,) + (False,) * (len(names) - 1), tuple(values)
        )
        # Sub-pixel offsets of the centres: a patch is rasterised for each.
        self._fractions = np.unique(np.round(self.centres % 1.0, 9))
        self._half = int(math.ceil(1.5 * self.base_radius)) + 2
        self._patches: dict[tuple[int, int, int], np.ndarray] = {}

    # -- rasterisation -----------------------------------------------------------------------
    def _patch_set(self, shape: int, scale: int, orientation: int) -> np.ndarray:
        """Binary patches ``(F, F, 2h, 2h)`` of one sprite, for each (y, x) sub-pixel offset."""
        key = (shape, scale, orientation)
        patches = self._patches.get(key)
        if patches is not None:
            return patches
        h, n = self._half, self.supersample
        sub = (np.arange(2 * h)[:, None] + (np.arange(n)[None, :] + 0.5) / n).reshape(-1)
        d = sub[None, :] - (h + self._fractions[:, None])  # (F, 2h·n): offset from the centre
        theta = self.orientations[orientation] if self.rotation != "none" else 0.0
        r = self.base_radius * self.scales[scale]
        dx = d[None, :, None, :]  # (1, Fx, 1, X): columns
        dy = -d[:, None, :, None]  # (Fy, 1, Y, 1): rows grow downwards, the sprite's v upwards
        c, s = math.cos(theta), math.sin(theta)
        u, v = (c * dx + s * dy) / r, (-s * dx + c * dy) / r
        inside = _inside(self.shapes[shape], u, v)
        f = len(self._fractions)
        coverage = inside.reshape(f, f, 2 * h, n, 2 * h, n).mean(axis=(3, 5))
        patches = coverage >= 0.5  # anti-aliased coverage, thresholded (as dSprites)
        self._patches[key] = patches
        return patches

    def render(self, factors: np.ndarray) -> np.ndarray:
        factors = np.asarray(factors, np.int64).reshape(-1, self.grid.num_factors)
        if self.rotation == "none":
            shape, scale, x, y = factors.T
            orient = np.zeros_like(shape)
        else:
            shape, scale, orient, x, y = factors.T
        h, size = self._half, self.size
        pad = h + 1
        canvas = np.zeros((len(factors), size + 2 * pad, size + 2 * pad), bool)
        cx, cy = self.centres[x], self.centres[y]
        ix, iy = np.floor(cx).astype(np.int64), np.floor(cy).astype(np.int64)
        fx = np.searchsorted(self._fractions, np.round(cx - ix, 9))
        fy = np.searchsorted(self._fractions, np.round(cy - iy, 9))
        for i in range(len(factors)):
            patch = self._patch_set(int(shape[i]), int(scale[i]), int(orient[i]))[fy[i], fx[i]]
            r0, c0 = iy[i] - h + pad, ix[i] - h + pad
            canvas[i, r0 : r0 + 2 * h, c0 : c0 + 2 * h] |= patch
        images = canvas[:, pad : pad + size, pad : pad + size]
        return images[..., None].astype(np.float32)

    def precompute(self) -> Sprites:
        """Rasterise every patch now (otherwise each is made on first use)."""
        for key in np.ndindex(len(self.shapes), NUM_SCALES, max(len(self.orientations), 1)):
            self._patch_set(*map(int, key))
        return self


def _factory(**kwargs):
    def factory(data_dir, download):
        return Sprites(**kwargs)

    return factory


_SPRITES_CONFIGS = {
    "sprites": ({}, "shape 3 x scale 6 x orientation 40 x x 32 x y 32 (dSprites' grid), 64x64"),
    "sprites/no_rotation": (
        {"rotation": "none"},
        "shape 3 x scale 6 x x 32 x y 32, no rotation, 64x64",
    ),
    "sprites/quarter_rotation": (
        {"rotation": "quarter"},
        "orientations in [0, 90 deg) only (10 values), 64x64",
    ),
    "sprites/32x32": ({"image_size": 32}, "the sprites grid at 32x32"),
    "sprites/no_rotation_32x32": ({"rotation": "none", "image_size": 32}, "no rotation, 32x32"),
}
for _name, (_kwargs, _what) in _SPRITES_CONFIGS.items():
    register_factor_dataset(
        _name,
        _factory(name=_name, **_kwargs),
        description=f"procedural binary sprites with known factors: {_what}; labels = "
        f"factors / (K-1); offline",
        procedural=True,
    )
