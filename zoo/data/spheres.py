"""``spheres``: the concentric-spheres task of the fiRevNet paper (004_a2e2a3876a23345e.txt §2,
Example 6 and App. B.2; shared/digests/invertible_inn_ae_firevnet.md §2.5, §3).

Points uniform on two spheres in R^d centred at the origin: label 0 on the inner sphere of radius
``R1`` and label 1 on the outer of radius ``R2`` (d = 100, R1 = 1, R2 = 10 in the paper). The
oracle is ``sign(‖x‖ − (R1 + R2)/2)``. The paper trains on 500,000 points and holds out 100,000.
"""

from __future__ import annotations

import numpy as np

__all__ = ["spheres_arrays", "oracle", "SPLIT_SIZES", "DIM", "R1", "R2"]

DIM, R1, R2 = 100, 1.0, 10.0
SPLIT_SIZES = {"train": 500_000, "test": 100_000}
_SPLIT_IDS = {"train": 0, "test": 1}


def spheres_arrays(
    split: str,
    num_examples: int | None = None,
    seed: int = 0,
    dim: int = DIM,
    r1: float = R1,
    r2: float = R2,
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: x float32 ``(n, dim)`` uniform on the sphere of radius r1 (y = 0) or r2
    (y = 1), labels alternating 0, 1, 0, … (shuffle when batching). Deterministic per
    ``(split, seed)``; a smaller ``num_examples`` gives a prefix of a larger one."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"spheres has splits {sorted(SPLIT_SIZES)}, not {split!r}")
    n = SPLIT_SIZES[split] if num_examples is None else int(num_examples)
    if n <= 0 or seed < 0 or dim < 2 or not 0 < r1 < r2:
        raise ValueError(
            f"need num_examples > 0, seed ≥ 0, dim ≥ 2 and 0 < r1 < r2; got {n}, {seed}, {dim}, "
            f"{r1}, {r2}"
        )
    rng = np.random.default_rng([seed, _SPLIT_IDS[split]])
    directions = rng.standard_normal((n, dim))  # row-major draws: prefixes agree
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    y = (np.arange(n) % 2).astype(np.int64)
    radius = np.where(y == 0, r1, r2)[:, None]
    return (directions * radius).astype(np.float32), y


def oracle(x, r1: float = R1, r2: float = R2) -> np.ndarray:
    """The true label of any point: 1 iff ‖x‖ > (r1 + r2)/2."""
    return (np.linalg.norm(np.asarray(x, np.float64), axis=-1) > (r1 + r2) / 2).astype(np.int64)
