"""Datasets with known factors of variation: the factor grid, index ↔ factor lookup, images
for any grid index, subsets of indices, and their registry.

A *factor dataset* (disentanglement_lib's "ground-truth data") holds one image for every
combination of D discrete factors with K_1, …, K_D values. Its :class:`FactorGrid` numbers the
combinations 0 … ΠK−1 in C order (the last factor varies fastest), the order of
disentanglement_lib's and the SlowVAE authors' ``IndexManager``, so

>>> ds = zoo.data.factors.get_factor_dataset("sprites")
>>> ds.grid.names                       # ('shape', 'scale', 'orientation', 'x_position', 'y_position')
>>> ds.grid.factors_of([0, 1])          # [[0 0 0 0 0] [0 0 0 0 1]]
>>> ds.grid.index_of([[2, 5, 39, 31, 31]])
>>> ds.images([0, 1])                   # (2, 64, 64, 1) float32 in [0, 1]
>>> ds.grid.select(lambda f: f["scale"] >= 4)      # grid indices where a condition holds
>>> ds.subset(indices).as_dataset(batch_size=64)   # (images, labels) over some indices only

Labels are the factor indices divided by K − 1 (0 for a factor with one value), the targets of
the in-domain generalization benchmark (002_7240b1e8d13f6586.txt, Schott et al. §3; digest b.1).

Registered factor datasets (:func:`register_factor_dataset`) are ``zoo.data.load`` datasets too:
``load("sprites", "train")`` yields ``(image, labels)``, and every one gets pair variants
``NAME/lap`` and ``NAME/uni`` (:mod:`zoo.data.pairs`) that yield ``(pair of images (2, H, W, C),
labels (2, D))`` for the SlowVAE family. A variant with its own splits, such as
``sprites/extrapolation``, is registered with the same factory and a ``splits`` mapping.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from zoo.data.core import LazyExamples, get_dataset_spec, register_dataset
from zoo.data.errors import DatasetError

__all__ = [
    "FactorGrid",
    "FactorDataset",
    "FactorSplit",
    "FactorGridError",
    "register_factor_dataset",
    "get_factor_dataset",
    "as_factor_dataset",
    "list_factor_datasets",
    "split_indices",
    "all_indices",
    "random_draw",
    "PAIR_SUFFIXES",
]

# Pair variants every registered factor dataset gets (mode names of zoo.data.pairs).
PAIR_SUFFIXES = ("lap", "uni")
# Size of the random evaluation draw a factor dataset's "test" split holds by default.
DEFAULT_TEST_SIZE = 4096


class FactorGridError(DatasetError):
    """A dataset without a factor grid where one is needed, or factors outside the grid."""


@dataclass(frozen=True)
class FactorGrid:
    """D discrete factors with ``sizes`` K_1 … K_D values; combinations numbered in C order.

    Attributes:
        names: factor names, e.g. ``("shape", "scale", "orientation", "x_position", ...)``.
        sizes: number of values of each factor.
        categorical: factors without an order (shape, object type); pair samplers keep them
            fixed within a LAP pair (002_7240b1e8d13f6586.txt, SlowVAE App. D.2).
        values: the physical value of each index of each factor (e.g. radians), if known.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    categorical: tuple[bool, ...] = ()
    values: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self):
        names = tuple(str(n) for n in self.names)
        sizes = tuple(int(k) for k in self.sizes)
        categorical = tuple(bool(c) for c in self.categorical) or (False,) * len(sizes)
        if len(names) != len(sizes) or len(categorical) != len(sizes) or not sizes:
            raise ValueError(
                f"a factor grid needs one name, size and categorical flag per factor; got "
                f"{len(names)} names, {len(sizes)} sizes, {len(categorical)} flags"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"factor names must be unique, got {names}")
        if any(k < 1 for k in sizes):
            raise ValueError(f"every factor needs at least one value, got sizes {sizes}")
        values = tuple(tuple(float(v) for v in vs) for vs in self.values)
        if values and [len(v) for v in values] != list(sizes):
            raise ValueError(f"values must list {sizes} values per factor")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "categorical", categorical)
        object.__setattr__(self, "values", values)

    @property
    def num_factors(self) -> int:
        return len(self.sizes)

    @property
    def size(self) -> int:
        """Number of factor combinations, ΠK."""
        return math.prod(self.sizes)

    def position(self, name: str | int) -> int:
        """The position of factor ``name`` (an int is checked and returned)."""
        if isinstance(name, int | np.integer):
            if not 0 <= int(name) < self.num_factors:
                raise FactorGridError(f"factor {name} out of range 0..{self.num_factors - 1}")
            return int(name)
        if name in self.names:
            return self.names.index(name)
        close = difflib.get_close_matches(str(name), self.names, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise FactorGridError(f"no factor {name!r}.{hint} Factors: {', '.join(self.names)}")

    def index_of(self, factors) -> np.ndarray:
        """Grid indices of factor combinations: ``factors (..., D)`` int → ``(...)`` int64."""
        f = np.asarray(factors)
        if f.ndim == 0 or f.shape[-1] != self.num_factors:
            raise FactorGridError(
                f"factor combinations have shape (..., {self.num_factors}) for factors "
                f"{self.names}; got shape {f.shape}"
            )
        if not np.issubdtype(f.dtype, np.integer):
            if not np.all(np.equal(np.mod(f, 1), 0)):
                raise FactorGridError("factor combinations are integer indices, got fractions")
            f = f.astype(np.int64)
        for j, k in enumerate(self.sizes):
            col = f[..., j]
            if col.size and (col.min() < 0 or col.max() >= k):
                raise FactorGridError(
                    f"factor {self.names[j]!r} has {k} values (0..{k - 1}); got "
                    f"{int(col.min())}..{int(col.max())}"
                )
        flat = f.reshape(-1, self.num_factors)
        return (
            np.ravel_multi_index(tuple(flat.T), self.sizes).astype(np.int64).reshape(f.shape[:-1])
        )

    def factors_of(self, indices) -> np.ndarray:
        """Factor combinations of grid indices: ``(...)`` → ``(..., D)`` int64."""
        i = np.asarray(indices)
        if not np.issubdtype(i.dtype, np.integer):
            raise FactorGridError(f"grid indices are integers, got dtype {i.dtype}")
        if i.size and (i.min() < 0 or i.max() >= self.size):
            raise FactorGridError(
                f"grid index out of range 0..{self.size - 1}: got {int(i.min())}..{int(i.max())}"
            )
        return np.stack(np.unravel_index(i.astype(np.int64), self.sizes), axis=-1).astype(np.int64)

    def normalize(self, factors) -> np.ndarray:
        """Factor indices divided by K − 1 (0 for a one-valued factor): float32 in [0, 1]."""
        denominator = np.maximum(np.asarray(self.sizes, np.float64) - 1, 1)
        return (np.asarray(factors, np.float64) / denominator).astype(np.float32)

    def all_indices(self) -> np.ndarray:
        return np.arange(self.size, dtype=np.int64)

    def select(self, predicate: Callable[[dict[str, np.ndarray]], np.ndarray]) -> np.ndarray:
        """Grid indices where ``predicate(factors)`` holds; ``factors`` maps each name to the
        ``(ΠK,)`` factor indices of the whole grid. E.g. ``grid.select(lambda f: f["scale"] < 4)``.
        """
        factors = self.factors_of(self.all_indices())
        mask = np.asarray(predicate({n: factors[:, j] for j, n in enumerate(self.names)}))
        if mask.shape != (self.size,) or mask.dtype != bool:
            raise FactorGridError(
                f"select's predicate must return a boolean array of shape ({self.size},), got "
                f"{mask.dtype} {mask.shape}"
            )
        return np.flatnonzero(mask).astype(np.int64)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` factor combinations drawn uniformly from the grid, ``(n, D)`` int64."""
        return np.stack([rng.integers(0, k, n) for k in self.sizes], axis=1).astype(np.int64)


class FactorDataset:
    """Images for every combination of a :class:`FactorGrid` (or of a subset of it).

    Subclasses set ``name``, ``grid`` and ``image_shape`` and implement :meth:`render`.
    ``observed_factors`` are the factors metrics score (disentanglement_lib's
    ``latent_factor_indices``: SmallNORB's instance is a nuisance, drawn at random). A subset
    (:meth:`subset`) shares the renderer and restricts which indices exist.
    """

    name: str = "factor_dataset"
    grid: FactorGrid
    image_shape: tuple[int, ...]
    observed_factors: tuple[int, ...] | None = None
    _available: np.ndarray | None = None  # sorted unique grid indices; None = the whole grid

    # -- what subclasses implement ---------------------------------------------------------
    def render(self, factors: np.ndarray) -> np.ndarray:
        """Images of factor combinations ``(N, D)`` int: ``(N, *image_shape)`` float32 in [0, 1]."""
        raise NotImplementedError

    # -- lookup ----------------------------------------------------------------------------
    @property
    def observed(self) -> tuple[int, ...]:
        obs = self.observed_factors
        return tuple(range(self.grid.num_factors)) if obs is None else tuple(obs)

    def available_indices(self) -> np.ndarray:
        """The grid indices this dataset holds, sorted (the whole grid unless a subset)."""
        return self.grid.all_indices() if self._available is None else self._available

    def __len__(self) -> int:
        return self.grid.size if self._available is None else len(self._available)

    def contains(self, indices) -> np.ndarray:
        """Whether each grid index is held by this dataset (a boolean array)."""
        i = np.asarray(indices, np.int64)
        inside = (i >= 0) & (i < self.grid.size)
        if self._available is None:
            return inside
        pos = np.clip(np.searchsorted(self._available, i), 0, len(self._available) - 1)
        return inside & (self._available[pos] == i)

    def images(self, indices) -> np.ndarray:
        """Images of grid indices ``(...)`` → ``(..., *image_shape)`` float32."""
        i = np.asarray(indices)
        factors = self.grid.factors_of(i)  # validates range and dtype
        if self._available is not None and not np.all(self.contains(i)):
            missing = np.asarray(i).reshape(-1)[~self.contains(i).reshape(-1)][:5]
            raise FactorGridError(
                f"{self.name} holds {len(self)} of the {self.grid.size} grid indices; "
                f"not {missing.tolist()}"
            )
        flat = factors.reshape(-1, self.grid.num_factors)
        return self.render(flat).reshape(*i.shape, *self.image_shape)

    def labels(self, indices) -> np.ndarray:
        """Normalised factors of grid indices: ``(..., D)`` float32 in [0, 1]."""
        return self.grid.normalize(self.grid.factors_of(np.asarray(indices)))

    def subset(self, indices) -> FactorDataset:
        """A view holding only ``indices`` (sampling, pairs and pipelines stay inside them)."""
        i = np.unique(np.asarray(indices, np.int64))
        if i.size == 0:
            raise FactorGridError(f"a subset of {self.name} needs at least one index")
        self.grid.factors_of(i)
        if self._available is not None and not np.all(self.contains(i)):
            raise FactorGridError(f"indices outside {self.name}'s {len(self)} indices")
        view = copy.copy(self)
        view._available = i
        view._by_value = {}
        return view

    # -- sampling (what disentanglement metrics draw) ---------------------------------------
    def sample_indices(
        self, n: int, rng: np.random.Generator, fixed: tuple[int, np.ndarray] | None = None
    ) -> np.ndarray:
        """``n`` grid indices drawn uniformly from the dataset. ``fixed = (factor, values)``
        draws the i-th index among those whose ``factor`` equals ``values[i]``."""
        if fixed is None:
            if self._available is None:
                return rng.integers(0, self.grid.size, n, dtype=np.int64)
            return self._available[rng.integers(0, len(self._available), n)]
        j, values = int(fixed[0]), np.broadcast_to(np.asarray(fixed[1], np.int64), (n,))
        if self._available is None:
            factors = self.grid.sample(n, rng)
            factors[:, j] = values
            return self.grid.index_of(factors)
        groups = self._groups(j)
        out = np.empty(n, np.int64)
        for v in np.unique(values):
            rows = np.flatnonzero(values == v)
            group = groups.get(int(v))
            if group is None:
                raise FactorGridError(f"{self.name} holds no image with {self.grid.names[j]} = {v}")
            out[rows] = group[rng.integers(0, len(group), len(rows))]
        return out

    def _groups(self, j: int) -> dict[int, np.ndarray]:
        cache = self.__dict__.setdefault("_by_value", {})
        if j not in cache:
            idx = self.available_indices()
            col = self.grid.factors_of(idx)[:, j]
            cache[j] = {int(v): idx[col == v] for v in np.unique(col)}
        return cache[j]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(factors (n, D) int64, images (n, *image_shape))`` drawn uniformly."""
        idx = self.sample_indices(n, rng)
        return self.grid.factors_of(idx), self.images(idx)

    # -- pipelines --------------------------------------------------------------------------
    def decoder(self) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
        """A TensorFlow function: grid indices of any shape ``S`` → ``(images S + image_shape,
        labels S + (D,))``, rendered by this dataset (runs as a ``tf.numpy_function``)."""
        image_shape, d = tuple(self.image_shape), self.grid.num_factors

        def numpy_decode(keys):
            keys = np.asarray(keys)
            return self.images(keys).astype(np.float32), self.labels(keys)

        def decode(keys):
            images, labels = tf.numpy_function(
                numpy_decode, [keys], [tf.float32, tf.float32], stateful=False
            )
            images.set_shape(keys.shape.concatenate(image_shape))
            labels.set_shape(keys.shape.concatenate([d]))
            return images, labels

        return decode

    def lazy_examples(self, indices=None) -> LazyExamples:
        """``zoo.data`` examples ``(image, labels)`` for ``indices`` (default: all held)."""
        keys = self.available_indices() if indices is None else np.asarray(indices, np.int64)
        if keys.size and not np.all(self.contains(keys)):
            raise FactorGridError(f"indices outside {self.name}'s {len(self)} indices")
        return LazyExamples(keys=keys, decode=self.decoder())

    def as_dataset(
        self,
        indices=None,
        batch_size: int | None = None,
        *,
        shuffle: bool = False,
        seed: int = 0,
        repeat: bool = False,
        drop_remainder: bool = False,
    ) -> tf.data.Dataset:
        """A ``tf.data.Dataset`` of ``(image, labels)`` over ``indices`` (default: all held),
        shuffled with ``seed`` if asked, rendered batch by batch."""
        lazy = self.lazy_examples(indices)
        return lazy.as_dataset(
            batch_size, shuffle=shuffle, seed=seed, repeat=repeat, drop_remainder=drop_remainder
        )

    def __repr__(self) -> str:
        held = "" if self._available is None else f", {len(self)} held"
        factors = ", ".join(
            f"{n}={k}" for n, k in zip(self.grid.names, self.grid.sizes, strict=True)
        )
        return f"<{type(self).__name__} {self.name}: {factors}{held}; images {self.image_shape}>"


# -- splits -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FactorSplit:
    """One split of a registered factor dataset.

    ``indices(dataset, seed) -> grid indices`` (any order; the pipeline shuffles). ``region``:
    the split is a region of the grid (a benchmark's train or test set): pairs drawn from it
    keep both frames inside it. Otherwise it is a draw of evaluation points, and the second
    frame of a pair may lie anywhere on the grid.
    """

    indices: Callable[[FactorDataset, int], np.ndarray]
    region: bool = True


def all_indices() -> FactorSplit:
    """Every index the dataset holds, in a seeded random order (so ``num_examples`` keeps a
    random subset, and a shuffle buffer smaller than the grid still mixes it)."""

    def indices(dataset: FactorDataset, seed: int) -> np.ndarray:
        return np.random.default_rng([seed, 0]).permutation(dataset.available_indices())

    return FactorSplit(indices, region=True)


def random_draw(n: int = DEFAULT_TEST_SIZE, split_id: int = 1) -> FactorSplit:
    """``n`` indices drawn without replacement (fewer if the dataset holds fewer): an
    evaluation draw from the same grid, as disentanglement_lib has no held-out images."""

    def indices(dataset: FactorDataset, seed: int) -> np.ndarray:
        held = dataset.available_indices()
        rng = np.random.default_rng([seed, split_id])
        return rng.choice(held, size=min(n, len(held)), replace=False)

    return FactorSplit(indices, region=False)


def default_splits() -> dict[str, FactorSplit]:
    return {"train": all_indices(), "test": random_draw()}


# -- registry -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    name: str
    factory: Callable[..., FactorDataset]
    splits: Mapping[str, FactorSplit]
    description: str
    procedural: bool
    alternative: str | None
    pair_suffixes: tuple[str, ...] = field(default=PAIR_SUFFIXES)


_FACTOR_DATASETS: dict[str, _Entry] = {}
_INSTANCES: dict[tuple[str, str | None], FactorDataset] = {}


def register_factor_dataset(
    name: str,
    factory: Callable[..., FactorDataset],
    *,
    splits: Mapping[str, FactorSplit] | None = None,
    description: str = "",
    procedural: bool = False,
    alternative: str | None = None,
    pair_suffixes: Sequence[str] = PAIR_SUFFIXES,
) -> None:
    """Register a factor dataset as ``zoo.data`` dataset ``name`` plus ``name/lap``, ``name/uni``.

    ``factory(data_dir, download) -> FactorDataset`` builds it (called once per data_dir).
    ``splits`` (default: ``train`` = every index, ``test`` = a random draw of 4,096) maps split
    names to :class:`FactorSplit`. ``load(name, split)`` yields ``(image, labels)``;
    ``load(f"{name}/lap", split)`` yields LAP pairs whose first frames are the split's indices.
    """
    splits = dict(splits) if splits is not None else default_splits()
    entry = _Entry(
        name, factory, splits, description, procedural, alternative, tuple(pair_suffixes)
    )
    _FACTOR_DATASETS[name.lower()] = entry

    def source(split, data_dir, num_examples, seed, download):
        dataset = get_factor_dataset(name, data_dir, download=download)
        return dataset.lazy_examples(split_indices(name, split, seed, data_dir, download))

    register_dataset(
        name,
        splits=tuple(splits),
        description=description,
        procedural=procedural,
        alternative=alternative,
    )(source)
    for suffix in entry.pair_suffixes:
        _register_pairs(entry, suffix)


def _register_pairs(entry: _Entry, mode: str) -> None:
    from zoo.data import pairs

    def source(split, data_dir, num_examples, seed, download):
        return pairs.pair_examples_for_split(entry.name, split, mode, seed, data_dir, download)

    register_dataset(
        f"{entry.name}/{mode}",
        splits=tuple(entry.splits),
        description=f"{pairs.MODE_DESCRIPTIONS[mode]} of {entry.name}: (pair (2, H, W, C), "
        f"labels (2, D))",
        procedural=entry.procedural,
        alternative=f"sprites/{mode}" if entry.alternative else None,
    )(source)


def list_factor_datasets() -> list[str]:
    """Names of the registered factor datasets (each also has ``/lap`` and ``/uni`` pairs)."""
    return sorted(e.name for e in _FACTOR_DATASETS.values())


def _entry(name: str) -> _Entry:
    key = name.lower()
    if key in _FACTOR_DATASETS:
        return _FACTOR_DATASETS[key]
    base, _, suffix = key.rpartition("/")
    if base in _FACTOR_DATASETS and suffix in _FACTOR_DATASETS[base].pair_suffixes:
        return _FACTOR_DATASETS[base]
    known = list_factor_datasets()
    if _is_known_dataset(name):
        why = f"{name!r} has no factor grid"
    else:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
        why = f"no factor dataset {name!r}" + (
            f" (did you mean {', '.join(close)}?)" if close else ""
        )
    raise FactorGridError(
        f"{why}. Disentanglement metrics and pair samplers need a dataset with known factors of "
        f"variation: {', '.join(known)} (zoo.data.factors.list_factor_datasets()), or a "
        f"zoo.data.factors.FactorDataset of your own."
    )


def _is_known_dataset(name: str) -> bool:
    from zoo.data.core import check_dataset_name
    from zoo.data.errors import UnknownDatasetError

    if get_dataset_spec(name) is not None:
        return True
    try:
        check_dataset_name(name)
    except UnknownDatasetError:
        return False
    return True


def get_factor_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> FactorDataset:
    """The registered factor dataset ``name`` (a pair variant ``name/lap`` gives its grid's
    dataset), built once per ``data_dir`` and shared."""
    entry = _entry(name)
    # A procedural dataset is the same whatever the data_dir: one instance (and patch cache).
    where = None if entry.procedural or data_dir is None else os.fspath(data_dir)
    key = (entry.name.lower(), where)
    if key not in _INSTANCES:
        dataset = entry.factory(Path(data_dir) if data_dir is not None else None, download)
        if not isinstance(dataset, FactorDataset):
            raise TypeError(f"the factory of {entry.name} returned {type(dataset).__name__}")
        _INSTANCES[key] = dataset
    return _INSTANCES[key]


def split_of(name: str, split: str) -> FactorSplit:
    entry = _entry(name)
    if split not in entry.splits:
        raise DatasetError(
            f"Dataset {entry.name!r} has no split {split!r}; it has {list(entry.splits)}"
        )
    return entry.splits[split]


@functools.lru_cache(maxsize=32)
def _split_indices_cached(name, split, seed, data_dir, download) -> np.ndarray:
    dataset = get_factor_dataset(name, data_dir, download=download)
    indices = np.asarray(split_of(name, split).indices(dataset, seed), np.int64)
    indices.setflags(write=False)
    return indices


def split_indices(
    name: str, split: str, seed: int = 0, data_dir=None, download: bool = True
) -> np.ndarray:
    """The grid indices of split ``split`` of factor dataset ``name`` (read-only array)."""
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    return _split_indices_cached(_entry(name).name, split, int(seed), data_dir, download)


def as_factor_dataset(dataset: Any, data_dir=None) -> FactorDataset:
    """A :class:`FactorDataset` from a name (``"sprites"``, ``"dsprites/lap"``) or an instance.

    Raises:
        FactorGridError: anything else (a dataset without known factors), with the names of
            the datasets that have them.
    """
    if isinstance(dataset, FactorDataset):
        return dataset
    if isinstance(dataset, str):
        return get_factor_dataset(dataset, data_dir)
    what = type(dataset).__name__
    if isinstance(dataset, tf.data.Dataset):
        what = "a tf.data.Dataset"
    raise FactorGridError(
        f"{what} has no factor grid. Disentanglement metrics need a dataset with known "
        f"factors of variation, to draw images with chosen factors: pass a name "
        f"({', '.join(list_factor_datasets())}) or a zoo.data.factors.FactorDataset."
    )
