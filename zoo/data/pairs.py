"""Pairs of images from any factor grid: the "temporally adjacent frames" of the SlowVAE family.

Two samplers (002_7240b1e8d13f6586.txt, SlowVAE App. D.2; digest a.2):

- **LAP**: the first frame uniform over the grid; each non-categorical factor with K values moves
  to ``v ~ p(v) ∝ Laplace(v; start, ln(K) / rate)`` on ``{0, …, K−1}`` (a truncated Laplace over
  indices, rate 1 by default); categorical factors (shape, object type) never change. A pair
  that did not change has one non-categorical factor resampled with ``p(start) = 0`` (the main
  text's setting; ``lap_nc`` keeps such static pairs, the paper's LAP-NC).
- **UNI** (Locatello et al. 2020): ``k ~ U{1, …, D−1}`` factors, exactly k and any of them,
  each set to a different uniformly drawn value (``k`` fixed if given).

Factors with a single value never change. With a ``region`` (a split of the grid, or the
combinations a partial dataset holds) a pair whose second frame falls outside is redrawn, so the
pair distribution is the sampler's conditioned on the region.

A pair dataset yields ``(pair (2, H, W, C), labels (2, D))`` (first frame, second frame): batched,
``(P, 2, H, W, C)``, so a tf.distribute replica always receives whole pairs.

>>> zoo.data.load("sprites/lap", "train", batch_size=32)     # registered pair variants
>>> pair_dataset("dsprites", mode="uni", batch_size=32)       # or any factor dataset
"""

from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow as tf

from zoo.data.core import LazyExamples
from zoo.data.factors import (
    FactorDataset,
    FactorGrid,
    FactorGridError,
    as_factor_dataset,
    get_factor_dataset,
    split_indices,
    split_of,
)

__all__ = ["PAIR_MODES", "PairSampler", "pair_examples", "pair_dataset", "MODE_DESCRIPTIONS"]

PAIR_MODES = ("lap", "lap_nc", "uni")
MODE_DESCRIPTIONS = {
    "lap": "LAP pairs (truncated Laplace moves of the ordinal factors, rate 1; no static pairs)",
    "lap_nc": "LAP-NC pairs (as LAP, static pairs kept)",
    "uni": "UNI pairs (k ~ U{1..D-1} factors set to new uniform values)",
}
_CHUNK = 1 << 15  # rows per vectorised draw: bounds the (rows, K) probability tables


def check_mode(mode: str) -> str:
    if mode not in PAIR_MODES:
        raise ValueError(
            f"unknown pair mode {mode!r}; choose one of {', '.join(map(repr, PAIR_MODES))} "
            f"(lap: Laplace transitions, lap_nc: the same keeping static pairs, uni: k factors "
            f"changed uniformly)"
        )
    return mode


class PairSampler:
    """Draws the second frame of a pair given the first, on a :class:`FactorGrid`.

    Args:
        grid: the factor grid.
        mode: ``"lap"``, ``"lap_nc"`` or ``"uni"``.
        rate: LAP's data rate (the Laplace scale over indices is ``ln(K) / rate``).
        k: UNI's number of changed factors (None: ``k ~ U{1, …, D−1}`` per pair).
        within: ``within(indices) -> bool array``, the region both frames must stay in
            (None: the whole grid).
        max_rounds: redraws of pairs that left the region before giving up.
    """

    def __init__(
        self,
        grid: FactorGrid,
        mode: str = "lap",
        rate: float = 1.0,
        k: int | None = None,
        within=None,
        max_rounds: int = 2000,
    ):
        self.grid, self.mode = grid, check_mode(mode)
        self.rate, self.k, self.within, self.max_rounds = float(rate), k, within, int(max_rounds)
        sizes = np.asarray(grid.sizes)
        self.movable = np.flatnonzero(sizes > 1)
        self.ordinal = np.flatnonzero((sizes > 1) & ~np.asarray(grid.categorical))
        if self.mode.startswith("lap"):
            if self.rate <= 0:
                raise ValueError(f"the LAP rate must be positive, got {rate}")
            if not self.ordinal.size:
                raise FactorGridError(
                    f"LAP pairs move non-categorical factors, and {grid.names} has none with "
                    f"more than one value"
                )
        elif not self.movable.size:
            raise FactorGridError(f"no factor of {grid.names} has more than one value")
        if k is not None and not 1 <= int(k) <= len(self.movable):
            raise ValueError(f"UNI's k must be in 1..{len(self.movable)}, got {k}")

    # -- the two transition kernels --------------------------------------------------------
    def _laplace(self, start: np.ndarray, size: int, rng, exclude_start=False) -> np.ndarray:
        """Truncated Laplace over {0..K−1} around each start (SlowVAE code, truncated_laplace)."""
        values = np.arange(size)
        scale = np.log(size) / self.rate
        logits = -np.abs(values[None, :] - start[:, None]) / scale
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        if exclude_start:
            p[np.arange(len(start)), start] = 0.0
        cdf = np.cumsum(p, axis=1)
        u = rng.random(len(start)) * cdf[:, -1]
        return np.minimum((cdf < u[:, None]).sum(axis=1), size - 1)

    def _lap(self, first: np.ndarray, rng) -> np.ndarray:
        second = first.copy()
        for j in self.ordinal:
            second[:, j] = self._laplace(first[:, j], self.grid.sizes[j], rng)
        if self.mode == "lap":
            static = np.flatnonzero(np.all(second == first, axis=1))
            if static.size:
                pick = self.ordinal[rng.integers(0, len(self.ordinal), static.size)]
                for j in np.unique(pick):
                    rows = static[pick == j]
                    second[rows, j] = self._laplace(
                        first[rows, j], self.grid.sizes[j], rng, exclude_start=True
                    )
        return second

    def _uni(self, first: np.ndarray, rng) -> np.ndarray:
        n, m = len(first), len(self.movable)
        if self.k is not None:
            k = np.full(n, int(self.k))
        else:
            k = rng.integers(1, m, n) if m > 1 else np.ones(n, np.int64)
        ranks = rng.random((n, m)).argsort(axis=1).argsort(axis=1)
        change = ranks < k[:, None]
        second = first.copy()
        sizes = np.asarray(self.grid.sizes)[self.movable]
        shift = rng.integers(1, sizes, size=(n, m))  # a different value: start + 1..K−1
        moved = (first[:, self.movable] + shift) % sizes[None, :]
        second[:, self.movable] = np.where(change, moved, first[:, self.movable])
        return second

    def _draw(self, first: np.ndarray, rng) -> np.ndarray:
        return self._lap(first, rng) if self.mode.startswith("lap") else self._uni(first, rng)

    # -- public ----------------------------------------------------------------------------
    def second_frames(self, first: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The second frames ``(n, D)`` of pairs starting at factor combinations ``first``."""
        first = np.asarray(first, np.int64)
        self.grid.index_of(first)  # validates
        out = np.empty_like(first)
        for lo in range(0, len(first), _CHUNK):
            out[lo : lo + _CHUNK] = self._draw(first[lo : lo + _CHUNK], rng)
        if self.within is None:
            return out
        todo = np.flatnonzero(~self.within(self.grid.index_of(out)))
        for _ in range(self.max_rounds):
            if not todo.size:
                return out
            out[todo] = self._draw(first[todo], rng)
            todo = todo[~self.within(self.grid.index_of(out[todo]))]
        raise FactorGridError(
            f"{todo.size} of {len(first)} {self.mode.upper()} pairs still left the region after "
            f"{self.max_rounds} redraws: the region holds too few neighbouring factor "
            f"combinations for this sampler"
        )

    def sample_pairs(self, first_indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Pairs of grid indices ``(n, 2)`` starting at ``first_indices``."""
        first_indices = np.asarray(first_indices, np.int64)
        second = self.second_frames(self.grid.factors_of(first_indices), rng)
        return np.stack([first_indices, self.grid.index_of(second)], axis=1)


def _membership(grid: FactorGrid, indices: np.ndarray):
    mask = np.zeros(grid.size, bool)
    mask[indices] = True
    return lambda i: mask[np.asarray(i)]


def pair_examples(
    dataset: FactorDataset,
    first_indices=None,
    *,
    mode: str = "lap",
    rate: float = 1.0,
    k: int | None = None,
    region=None,
    seed: int = 0,
) -> LazyExamples:
    """``zoo.data`` examples ``(pair (2, *image_shape), labels (2, D))``: one pair starting at
    each of ``first_indices`` (default: every index the dataset holds). ``region``: grid indices
    the second frames must stay in (default: those the dataset holds)."""
    if first_indices is None:
        first_indices = dataset.available_indices()
    first_indices = np.asarray(first_indices, np.int64)
    if region is not None:
        within = _membership(dataset.grid, np.asarray(region, np.int64))
    elif len(dataset) < dataset.grid.size:
        within = dataset.contains
    else:
        within = None
    sampler = PairSampler(dataset.grid, mode, rate=rate, k=k, within=within)
    rng = np.random.default_rng([seed, PAIR_MODES.index(mode), 17])
    keys = sampler.sample_pairs(first_indices, rng)
    return LazyExamples(keys=keys, decode=dataset.decoder())


@functools.lru_cache(maxsize=16)
def _split_pairs(name, split, mode, seed, data_dir, download) -> np.ndarray:
    dataset = get_factor_dataset(name, data_dir, download=download)
    first = split_indices(name, split, seed, data_dir, download)
    region = first if split_of(name, split).region else None
    keys = pair_examples(dataset, first, mode=mode, region=region, seed=seed).keys
    keys.setflags(write=False)
    return keys


def pair_examples_for_split(name, split, mode, seed, data_dir, download) -> LazyExamples:
    """The source of a registered pair variant ``NAME/MODE`` (pairs cached per split/seed)."""
    check_mode(mode)
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    split_of(name, split)
    keys = _split_pairs(name, split, mode, int(seed), data_dir, download)
    dataset = get_factor_dataset(name, data_dir, download=download)
    return LazyExamples(keys=keys, decode=dataset.decoder())


def pair_dataset(
    dataset,
    mode: str = "lap",
    *,
    indices=None,
    rate: float = 1.0,
    k: int | None = None,
    batch_size: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    repeat: bool = False,
    drop_remainder: bool = False,
    data_dir=None,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of pairs from any factor dataset (a name or an instance): one pair
    starting at each of ``indices`` (default: all held), second frames inside ``indices``."""
    check_mode(mode)
    dataset = as_factor_dataset(dataset, data_dir)
    region = None if indices is None else np.asarray(indices, np.int64)
    lazy = pair_examples(dataset, region, mode=mode, rate=rate, k=k, region=region, seed=seed)
    return lazy.as_dataset(
        batch_size, shuffle=shuffle, seed=seed, repeat=repeat, drop_remainder=drop_remainder
    )
