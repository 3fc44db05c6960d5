"""``laplace_transitions``: SlowVAE's theory check (002_7240b1e8d13f6586.txt, SlowVAE App. B,
Fig. 7; digest a.4): pairs generated exactly as the model assumes.

``z_{t−1} ~ N(0, I_20)``, ``z_t = z_{t−1} + Laplace(0, 1/rate)`` per dimension (sparse moves),
``x = g(z)`` with a fixed random two-layer leaky-ReLU MLP mixing 20 → 200 → 200 (dim x ≫ dim z,
which App. B finds a VAE needs), standardised per coordinate. Examples are ``(pair (2, 200),
latents (2, 20))``; the latents are continuous, so MCC is the metric (not the DisLib six).
Deterministic per seed; the mixing depends only on ``mixing_seed``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["laplace_transition_arrays", "mixing", "SPLIT_SIZES", "LATENT_DIM", "DATA_DIM"]

LATENT_DIM, DATA_DIM = 20, 200
SPLIT_SIZES = {"train": 40_000, "test": 5_000}
_SPLIT_IDS = {"train": 0, "test": 1}


def mixing(mixing_seed: int = 0, latent_dim: int = LATENT_DIM, data_dim: int = DATA_DIM):
    """The fixed mixing ``g``: ``z (..., latent_dim)`` → ``x (..., data_dim)`` float32."""
    rng = np.random.default_rng([mixing_seed, 1234])
    w1 = rng.standard_normal((latent_dim, data_dim)) / np.sqrt(latent_dim)
    w2 = rng.standard_normal((data_dim, data_dim)) / np.sqrt(data_dim)
    # Standardise with the statistics of the N(0, I) marginal, estimated once.
    probe = rng.standard_normal((20_000, latent_dim))

    def raw(z):
        h = z @ w1
        h = np.where(h > 0, h, 0.2 * h)
        return h @ w2

    r = raw(probe)
    mean, std = r.mean(0), r.std(0)
    return lambda z: ((raw(np.asarray(z, np.float64)) - mean) / std).astype(np.float32)


def laplace_transition_arrays(
    split: str,
    num_examples: int | None = None,
    seed: int = 0,
    rate: float = 1.0,
    mixing_seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(x (n, 2, 200), z (n, 2, 20))`` float32: mixed pairs and their latents."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"laplace_transitions has splits {sorted(SPLIT_SIZES)}, not {split!r}")
    n = SPLIT_SIZES[split] if num_examples is None else int(num_examples)
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], 99])
    z0 = rng.standard_normal((n, LATENT_DIM))
    z1 = z0 + rng.laplace(0.0, 1.0 / rate, (n, LATENT_DIM))
    z = np.stack([z0, z1], axis=1)
    return mixing(mixing_seed)(z), z.astype(np.float32)
