"""``var_u``: the 12-bit task of Shwartz-Ziv & Tishby's information-plane experiments, used by the
racecar paper's mutual-information test (000_7daca03a93eb4fe1.txt, sec. 4, App. B.1;
shared/digests/racecar.md §2.2), regenerated procedurally.

X is 12 binary inputs placed on the 12 vertices of an icosahedron (12 evenly spread points on a
sphere): 4096 patterns. ``p(y=1|x) = sigmoid(γ(f(x) − θ))``, with f a rotation-invariant function
of the pattern's spherical-harmonics power spectrum (so f is constant on the patterns' orbits
under rotations of the sphere), θ the median of f (p(y=1) ≈ 0.5) and γ chosen so that
I(X;Y) = 0.99 bit, the original's value. Labels are drawn once from p(y|x) with a fixed seed. The
split is the paper's 80/20: 3277 training and 819 test patterns.

The original file (``ravidziv/IDNNs``, ``var_u.mat``) uses the same construction with its own f;
this is an equivalent task, not the same file. ``var_u_swapped`` is the paper's task B: the same
inputs with the two labels exchanged.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["var_u_arrays", "var_u_patterns", "icosahedron", "SPLIT_SIZES", "MI_XY_BITS"]

SPLIT_SIZES = {"train": 3277, "test": 819}
MI_XY_BITS = 0.99
_LABEL_SEED = 20170
# f = Σ_l w_l P_l over degrees 0..6: distinct on each of the 64 orbits.
_SPECTRUM_WEIGHTS = (0.0, -0.6, 1.0, 0.3, -0.2, 0.15, 0.1)


def icosahedron() -> np.ndarray:
    """The 12 unit vertices of an icosahedron, ``(12, 3)``."""
    phi = (1 + 5**0.5) / 2
    v = []
    for a in (-1, 1):
        for b in (-phi, phi):
            v += [(0, a, b), (a, b, 0), (b, 0, a)]
    v = np.array(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _legendre(degree: int, t: np.ndarray) -> np.ndarray:
    p0, p1 = np.ones_like(t), t
    if degree == 0:
        return p0
    for k in range(1, degree):
        p0, p1 = p1, ((2 * k + 1) * t * p1 - k * p0) / (k + 1)
    return p1


def _power_spectrum(x: np.ndarray, lmax: int = 4) -> np.ndarray:
    """``P_l(x) = (2l+1)/(4π) Σ_ij x_i x_j P_l(v_i·v_j)`` for l = 0..lmax (addition theorem):
    the rotation-invariant energy of the pattern in each spherical-harmonic degree."""
    v = icosahedron()
    cos = np.clip(v @ v.T, -1, 1)
    return np.stack(
        [(2 * d + 1) / (4 * np.pi) * np.einsum("ni,ij,nj->n", x, _legendre(d, cos), x)
         for d in range(lmax + 1)], axis=1,
    )  # fmt: skip


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


@functools.lru_cache(maxsize=1)
def var_u_patterns() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 4096 patterns: ``(x, p, y)``: x float32 ``(4096, 12)`` in {0, 1}, p = p(y=1|x), and the
    fixed labels y drawn from p."""
    x = ((np.arange(4096)[:, None] >> np.arange(12)[None]) & 1).astype(np.float64)
    f = _power_spectrum(x, lmax=len(_SPECTRUM_WEIGHTS) - 1) @ np.array(_SPECTRUM_WEIGHTS)
    f = f.round(9)  # equal on an orbit up to float round-off
    # θ halfway between the two values of f that split the patterns closest to 50/50 (f takes
    # one value per orbit, so the median itself would sit inside an orbit).
    values = np.unique(f)
    below = np.array([np.mean(f <= v) for v in values])
    k = int(np.argmin(np.abs(below - 0.5)))
    f = (f - (values[k] + values[k + 1]) / 2) / np.std(f)
    lo, hi = 0.1, 1000.0
    for _ in range(100):  # I(X;Y) = H(Y) − E_x H(p(y|x)) grows with the gain γ
        gamma = np.sqrt(lo * hi)
        p = 0.5 * (1 + np.tanh(0.5 * gamma * f))  # the sigmoid, without overflow
        mi = _entropy(np.array([p.mean()]))[0] - _entropy(p).mean()
        lo, hi = (gamma, hi) if mi < MI_XY_BITS else (lo, gamma)
    y = (np.random.default_rng(_LABEL_SEED).uniform(size=len(p)) < p).astype(np.int64)
    return x.astype(np.float32), p, y


def var_u_arrays(
    split: str, num_examples: int | None = None, seed: int = 0, swapped: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of the 80/20 split (the permutation is fixed by ``seed``); ``swapped`` exchanges
    the labels (task B)."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"var_u has splits {sorted(SPLIT_SIZES)}, not {split!r}")
    x, _, y = var_u_patterns()
    order = np.random.default_rng([seed, 4096]).permutation(len(x))
    idx = order[: SPLIT_SIZES["train"]] if split == "train" else order[SPLIT_SIZES["train"] :]
    if num_examples is not None:
        idx = idx[: int(num_examples)]
    labels = 1 - y[idx] if swapped else y[idx]
    return x[idx], labels
