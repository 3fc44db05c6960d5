"""The in-domain generalization benchmark's splits as dataset variants.

Schott et al., "Visual representation learning does not generalize strongly within the same
domain" (ICLR 2022), 002_7240b1e8d13f6586.txt lines 2068-2826 (App. Tables 2-4);
shared/digests/slowvae_benchmark_noise.md part (b.1).

Every factor dataset ``NAME`` in :data:`BENCHMARK_BASES` gets four variants
``NAME/random``, ``NAME/composition``, ``NAME/interpolation`` and ``NAME/extrapolation``, each
with a ``train`` and a ``test`` split of its factor grid (:mod:`zoo.data.factors`):

>>> zoo.data.load("sprites/extrapolation", "train", batch_size=64)   # (images, labels)
>>> zoo.data.load("sprites/no_rotation/composition", "test")          # the rotation-free grid
>>> zoo.data.load("shapes3d/interpolation", "train", data_dir=DIR)    # TFDS shapes3d
>>> zoo.data.load("mpi3d/extrapolation", "train", data_dir=DIR)       # the authors' npz files

Rules (digest b.1): **interpolation / extrapolation**: an image is in the *test* split if ANY of
its factor values is one of the variant's exclusive test values; **composition**: an image is in
the *train* split if ANY of its factor values is one of the exclusive *train* values (the corner
of the factor hypercube where no factor takes one is the test split; the mirror rule would give
a different, much larger training set); **random**: an i.i.d. split of the grid with the train
fraction of the same grid's extrapolation split (as the paper matches them). Categorical factors
(shape, object type) are never split. Labels are the factor indices divided by K − 1.

Train fractions (the paper's Table 4 labels its columns the other way round; the products of
the value sets are the train fractions): dSprites / sprites interpolation and extrapolation
(4/6)(32/40)(25/32)² = 0.3255, composition 1 − (36/40)(29/32)² = 0.2608; Shapes3D 0.3072 /
0.3196; MPI3D 0.3000 / 0.2775; rotation-free sprites 0.4069 / 0.3156.

Splits are index-based and deterministic: a function of the grid only (and of ``data_seed`` for
``random``). ``sprites/quarter_rotation`` (10 orientations in [0°, 90°), the paper's App. I
ablation) uses the dSprites value sets with the orientation sets mapped to its 10 values
({2, 7} interpolation, {8, 9} extrapolation, {0} composition), which keeps the fractions of
dSprites; the paper lists no value sets for the ablation. ``sprites/no_rotation`` has no
orientation factor; its composition split uses scale {0} in place of the orientation values
(digest b.4).

MPI3D is not in TFDS: ``mpi3d/VARIANT`` reads the authors' released split files
``mpi3d_{variant}_{train|test}_{images|labels}.npz`` (zenodo record 4899346) from
``data_dir``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from zoo.data.core import LazyExamples, register_dataset
from zoo.data.errors import DatasetError, DatasetNotAvailableError
from zoo.data.factors import (
    PAIR_SUFFIXES,
    FactorDataset,
    FactorGrid,
    FactorGridError,
    FactorSplit,
    get_factor_dataset,
    register_factor_dataset,
    split_indices,
)

__all__ = [
    "VARIANTS",
    "BENCHMARK_BASES",
    "SPLIT_VALUES",
    "MPI3D_GRID",
    "split_masks",
    "train_fraction",
    "benchmark_variant",
    "benchmark_grid",
    "benchmark_layout",
    "split_factors",
    "load_mpi3d_split",
    "mpi3d_filenames",
]

VARIANTS = ("random", "composition", "interpolation", "extrapolation")
# Which split the exclusive values send an image to: "test" if ANY factor value is listed
# (interpolation, extrapolation); "train" if ANY is listed (composition).
_SIDE = {"interpolation": "test", "extrapolation": "test", "composition": "train"}
MPI3D_ZENODO = "https://zenodo.org/record/4899346"

_XY_INTERP = (2, 7, 11, 15, 20, 24, 29)
_XY_EXTRAP = tuple(range(25, 32))
_DSPRITES = {
    "interpolation": {"scale": (1, 4), "orientation": (2, 7, 12, 17, 22, 27, 32, 37),
                      "x_position": _XY_INTERP, "y_position": _XY_INTERP},
    "extrapolation": {"scale": (4, 5), "orientation": tuple(range(32, 40)),
                      "x_position": _XY_EXTRAP, "y_position": _XY_EXTRAP},
    "composition": {"orientation": (0, 1, 2, 3), "x_position": (0, 1, 2),
                    "y_position": (0, 1, 2)},
}  # fmt: skip
_NO_ROTATION = {
    "interpolation": {k: v for k, v in _DSPRITES["interpolation"].items() if k != "orientation"},
    "extrapolation": {k: v for k, v in _DSPRITES["extrapolation"].items() if k != "orientation"},
    # digest b.4: without an orientation factor, scale {0} takes the orientation values' place
    "composition": {"scale": (0,), "x_position": (0, 1, 2), "y_position": (0, 1, 2)},
}
_QUARTER_ROTATION = {
    "interpolation": {**_DSPRITES["interpolation"], "orientation": (2, 7)},
    "extrapolation": {**_DSPRITES["extrapolation"], "orientation": (8, 9)},
    "composition": {**_DSPRITES["composition"], "orientation": (0,)},
}
_HUES = ("floor_hue", "wall_hue", "object_hue")
_SHAPES3D = {
    "interpolation": {**{h: (2, 7) for h in _HUES}, "scale": (2, 5), "orientation": (2, 7, 12)},
    "extrapolation": {**{h: (8, 9) for h in _HUES}, "scale": (6, 7),
                      "orientation": (12, 13, 14)},
    "composition": {**{h: (0,) for h in _HUES}, "orientation": (0,)},
}  # fmt: skip
_MPI_X = (5, 15, 24, 34)
_MPI3D = {
    "interpolation": {"color": (3,), "height": (1,), "background": (1,), "x_axis": _MPI_X,
                      "y_axis": _MPI_X},
    "extrapolation": {"color": (5,), "height": (2,), "background": (2,),
                      "x_axis": tuple(range(36, 40)), "y_axis": tuple(range(36, 40))},
    "composition": {"x_axis": tuple(range(6)), "y_axis": tuple(range(6))},
}  # fmt: skip

# The exclusive value sets of each base dataset (002_7240b1e8d13f6586.txt, App. Tables 2-3).
SPLIT_VALUES: dict[str, dict[str, dict[str, tuple[int, ...]]]] = {
    "sprites": _DSPRITES,
    "sprites/no_rotation": _NO_ROTATION,
    "sprites/quarter_rotation": _QUARTER_ROTATION,
    "dsprites": _DSPRITES,
    "shapes3d": _SHAPES3D,
    "mpi3d": _MPI3D,
}
# Factor datasets that get the four variants (mpi3d is registered from its split files).
BENCHMARK_BASES = ("sprites", "sprites/no_rotation", "sprites/quarter_rotation", "dsprites",
                   "shapes3d")  # fmt: skip

# MPI3D-real's grid, in the authors' order (load_dataset.py); its images are 64×64×3.
MPI3D_GRID = FactorGrid(
    ("color", "shape", "size", "height", "background", "x_axis", "y_axis"),
    (6, 6, 2, 3, 3, 40, 40),
    (False, True, False, False, False, False, False),
)
# Image shapes of the bases that are known without reading any data.
_TFDS_LAYOUTS = {
    "dsprites": ((64, 64, 1), FactorGrid(
        ("shape", "scale", "orientation", "x_position", "y_position"), (3, 6, 40, 32, 32),
        (True, False, False, False, False))),
    "shapes3d": ((64, 64, 3), FactorGrid(
        ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
        (10, 10, 10, 8, 4, 15), (False, False, False, False, True, False))),
    "mpi3d": ((64, 64, 3), MPI3D_GRID),
}  # fmt: skip


# -- the split rules ---------------------------------------------------------------------------
def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        import difflib

        close = difflib.get_close_matches(str(variant), VARIANTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DatasetError(
            f"unknown benchmark split {variant!r}{hint}; the splits are {', '.join(VARIANTS)}"
        )
    return variant


def _values_for(grid: FactorGrid, values: Mapping[str, Sequence[int]]) -> dict[int, np.ndarray]:
    out = {}
    for name, vs in values.items():
        j = grid.position(name)
        vs = np.asarray(vs, np.int64)
        if vs.size and (vs.min() < 0 or vs.max() >= grid.sizes[j]):
            raise FactorGridError(
                f"value set {vs.tolist()} of factor {name!r} is outside 0..{grid.sizes[j] - 1}"
            )
        out[j] = vs
    return out


def split_masks(
    grid: FactorGrid, variant: str, values: Mapping[str, Sequence[int]] | None = None, seed=0
) -> np.ndarray:
    """Boolean ``(ΠK,)`` mask of the grid's *train* indices for a benchmark variant.

    ``values``: the variant's exclusive value sets by factor name (the rule side follows the
    variant: test-if-ANY for interpolation/extrapolation, train-if-ANY for composition). For
    ``random``, ``values`` are the extrapolation sets whose train fraction it matches.
    """
    _check_variant(variant)
    if variant == "random":
        fraction = _rule_fraction(grid, "extrapolation", values or {})
        n_train = int(round(fraction * grid.size))
        order = np.random.default_rng([int(seed), 0x5EED]).permutation(grid.size)
        mask = np.zeros(grid.size, bool)
        mask[order[:n_train]] = True
        return mask
    factors = grid.factors_of(grid.all_indices())
    hit = np.zeros(grid.size, bool)
    for j, vs in _values_for(grid, values or {}).items():
        hit |= np.isin(factors[:, j], vs)
    return ~hit if _SIDE[variant] == "test" else hit


def _rule_fraction(grid: FactorGrid, variant: str, values) -> float:
    """The train fraction of a rule, from the value-set sizes alone (a product)."""
    missing = 1.0
    for j, vs in _values_for(grid, values).items():
        missing *= 1.0 - len(np.unique(vs)) / grid.sizes[j]
    return missing if _SIDE[variant] == "test" else 1.0 - missing


def train_fraction(base: str, variant: str) -> float:
    """The train fraction the value sets of ``base`` imply (e.g. 0.3255 for dSprites
    extrapolation), computed as a product, independently of any mask."""
    _check_variant(variant)
    grid = benchmark_grid(base)
    rule = "extrapolation" if variant == "random" else variant
    return _rule_fraction(grid, rule, SPLIT_VALUES[_base_key(base)][rule])


def _base_key(base: str) -> str:
    key = base.lower()
    if key not in SPLIT_VALUES:
        raise FactorGridError(
            f"{base!r} has no benchmark value sets; the bases are {', '.join(SPLIT_VALUES)}"
        )
    return key


# -- names -------------------------------------------------------------------------------------
def benchmark_variant(name: str) -> tuple[str, str]:
    """``"sprites/no_rotation/extrapolation"`` → ``("sprites/no_rotation", "extrapolation")``.

    Raises DatasetError naming the valid splits for an unknown split of a known base, and
    FactorGridError for a base without benchmark splits (e.g. ``mnist``)."""
    base, _, variant = str(name).lower().rpartition("/")
    if str(name).lower() in SPLIT_VALUES:
        raise DatasetError(
            f"{name!r} is a benchmark base; name a split: "
            f"{', '.join(f'{name}/{v}' for v in VARIANTS)}"
        )
    if base in SPLIT_VALUES:
        return base, _check_variant(variant)
    key = str(name).lower()
    for b in sorted(SPLIT_VALUES, key=len, reverse=True):
        if key.startswith(b + "/"):
            return b, _check_variant(key[len(b) + 1 :])
    raise FactorGridError(
        f"{name!r} has no factor grid with benchmark splits: the benchmark regresses known "
        f"factors of variation, so it needs one of {', '.join(SPLIT_VALUES)} "
        f"(as BASE/{'|'.join(VARIANTS)})"
    )


def benchmark_layout(name: str) -> tuple[tuple[int, ...], FactorGrid]:
    """``(image_shape, grid)`` of a base or a variant, without reading any data."""
    key = str(name).lower()
    if key not in SPLIT_VALUES:
        key = benchmark_variant(key)[0]
    if key in _TFDS_LAYOUTS:
        return _TFDS_LAYOUTS[key]
    dataset = get_factor_dataset(key)  # a procedural sprites grid: cheap, no data
    return tuple(dataset.image_shape), dataset.grid


def benchmark_grid(name: str) -> FactorGrid:
    return benchmark_layout(name)[1]


# -- the factor-dataset variants ---------------------------------------------------------------
def _variant_split(base: str, variant: str, side: str) -> FactorSplit:
    def indices(dataset: FactorDataset, seed: int) -> np.ndarray:
        train = split_masks(dataset.grid, variant, _split_values(base, variant), seed)
        mask = train if side == "train" else ~train
        held = dataset.available_indices()
        # A seeded order, as factors.all_indices: a shuffle buffer smaller than the split then
        # still mixes it, and num_examples keeps a random subset (grid order is by shape first).
        rng = np.random.default_rng([int(seed), 1 if side == "train" else 2])
        return rng.permutation(held[mask[held]])

    return FactorSplit(indices, region=True)


def _split_values(base: str, variant: str):
    return SPLIT_VALUES[base]["extrapolation" if variant == "random" else variant]


def _base_factory(base: str):
    def factory(data_dir, download):
        return get_factor_dataset(base, data_dir, download=download)

    return factory


def _register_variants() -> None:
    for base in BENCHMARK_BASES:
        procedural = base.startswith("sprites")
        for variant in VARIANTS:
            name = f"{base}/{variant}"
            rule = {
                "random": "an i.i.d. split with the extrapolation split's train fraction",
                "composition": "train iff ANY factor takes an exclusive train value",
                "interpolation": "test iff ANY factor takes an interior exclusive test value",
                "extrapolation": "test iff ANY factor takes an exclusive value at its top end",
            }[variant]
            register_factor_dataset(
                name,
                _base_factory(base),
                splits={s: _variant_split(base, variant, s) for s in ("train", "test")},
                description=f"in-domain generalization benchmark, {variant} split of {base} "
                f"({rule}; train fraction {train_fraction(base, variant):.4f}); labels = "
                f"factors / (K-1)",
                procedural=procedural,
                alternative=None if procedural else f"sprites/{variant}",
                pair_suffixes=PAIR_SUFFIXES,
            )


# -- MPI3D from the authors' split files --------------------------------------------------------
def mpi3d_filenames(variant: str, split: str) -> tuple[str, str]:
    """The authors' file names: ``mpi3d_{variant}_{split}_{images|labels}.npz``."""
    return (f"mpi3d_{variant}_{split}_images.npz", f"mpi3d_{variant}_{split}_labels.npz")


def _read_npz(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as f:
        key = "arr_0" if "arr_0" in f.files else (f.files[0] if f.files else None)
        if key is None:
            raise DatasetError(f"{path} holds no array")
        return f[key]


def load_mpi3d_split(
    variant: str, split: str, data_dir: str | os.PathLike | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 64, 64, 3) uint8 or float, factor indices (N, 7) int64)`` of one split.

    The authors' images are stored channels first ``(N, 3, 64, 64)``; they are transposed to
    channels last. Raises DatasetNotAvailableError naming the missing file."""
    _check_variant(variant)
    if split not in ("train", "test"):
        raise DatasetError(f"mpi3d/{variant} has no split {split!r}; it has ['train', 'test']")
    names = mpi3d_filenames(variant, split)
    if data_dir is None:
        raise DatasetNotAvailableError(
            f"mpi3d/{variant} is read from the authors' split files {names[0]} and {names[1]} "
            f"({MPI3D_ZENODO}); pass --data-dir DIR (data_dir= in Python) pointing at the "
            f"directory that holds them, or use the procedural sprites/{variant}"
        )
    paths = [Path(data_dir) / n for n in names]
    for p in paths:
        if not p.is_file():
            raise DatasetNotAvailableError(
                f"mpi3d/{variant} {split}: no file {p}. Download {p.name} from {MPI3D_ZENODO} "
                f"into --data-dir {data_dir}, or use the procedural sprites/{variant}"
            )
    images, labels = _read_npz(paths[0]), _read_npz(paths[1])
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = np.transpose(images, (0, 2, 3, 1))
    if images.ndim != 4 or images.shape[1:] != (64, 64, 3):
        raise DatasetError(f"{paths[0]}: expected images (N, 64, 64, 3), got {images.shape}")
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape != (len(images), MPI3D_GRID.num_factors):
        raise DatasetError(
            f"{paths[1]}: expected factor indices ({len(images)}, 7), got {labels.shape}"
        )
    if not np.all(np.equal(np.mod(labels, 1), 0)):
        raise DatasetError(f"{paths[1]}: labels must be factor indices (integers)")
    labels = labels.astype(np.int64)
    MPI3D_GRID.index_of(labels)  # range check, with a message naming the factor
    return images, labels


def _mpi3d_source(variant: str):
    def source(split, data_dir, num_examples, seed, download):
        images, factors = load_mpi3d_split(variant, split, data_dir)
        labels = MPI3D_GRID.normalize(factors)
        scale = 255.0 if images.dtype == np.uint8 else 1.0

        def numpy_decode(rows):
            rows = np.asarray(rows)
            return images[rows].astype(np.float32) / scale, labels[rows]

        def decode(rows):
            x, y = tf.numpy_function(numpy_decode, [rows], [tf.float32, tf.float32], stateful=False)
            x.set_shape(rows.shape.concatenate((64, 64, 3)))
            y.set_shape(rows.shape.concatenate([MPI3D_GRID.num_factors]))
            return x, y

        keys = np.arange(len(images), dtype=np.int64)
        return LazyExamples(keys=keys, decode=decode)

    return source


def _register_mpi3d() -> None:
    for variant in VARIANTS:
        register_dataset(
            f"mpi3d/{variant}",
            splits=("train", "test"),
            description=f"MPI3D-real {variant} split of the benchmark, from the authors' files "
            f"mpi3d_{variant}_{{train,test}}_{{images,labels}}.npz in --data-dir; labels = "
            f"factors / (K-1)",
            alternative=f"sprites/{variant}",
        )(_mpi3d_source(variant))


# -- the factors of a split (for the metrics) ---------------------------------------------------
def split_factors(name: str, split: str, data_dir=None, seed: int = 0) -> np.ndarray:
    """Factor indices ``(N, D)`` int64 of a benchmark split, in the order ``zoo.data.load``
    yields it unshuffled."""
    base, variant = benchmark_variant(name)
    if base == "mpi3d":
        return load_mpi3d_split(variant, split, data_dir)[1]
    dataset = get_factor_dataset(f"{base}/{variant}", data_dir)
    return dataset.grid.factors_of(split_indices(f"{base}/{variant}", split, seed, data_dir))


def _check_products() -> None:
    # The value sets are the paper's; a typo in one would change a fraction silently.
    for base in BENCHMARK_BASES:
        for variant in ("composition", "interpolation", "extrapolation"):
            if not 0.0 < train_fraction(base, variant) < 1.0:  # pragma: no cover
                raise AssertionError((base, variant))
    assert math.isclose(train_fraction("dsprites", "extrapolation"), 0.3255, abs_tol=5e-5)


_register_variants()
_register_mpi3d()
_check_products()
