"""The ABS paper's L2 lower bound on the adversarial distance (Sec. 4, App. A.4–A.5; digest §3).

For the true class ``y``, with ``z*`` its fitted latent on the clean image, ``r_y = ‖G_y(z*) − x‖₂``
and ``d_c = min_z ‖G_c(z) − x‖₂`` for every other class (in summed, not per-pixel, units):

    ε_x = min_{c≠y} max{0, (d_c² − r_y² − ½‖z*‖²) / (2(d_c + r_y))}

This is the formula that follows from the paper's eqs. 6 and 7 with σ² = ½ and σ_q = 1; the
printed eq. 8 has ``d_c`` where ``d_c²`` belongs (digest §3). Without the KL term it is
``(d_c − r_y)/2``, half the gap between the two fits.

It is a lower bound *estimate*: it assumes ``d_c`` is the global minimum. ``d_c`` therefore gets
its own search without the KL term (the classification search minimises ``‖·‖² + ½‖z‖²`` and
overestimates it), from the bank's best code plus ``restarts`` random starts; the smallest
distance any search finds is used. γ is ignored, as in the paper's derivation; for Binary ABS the
bound is computed on the binarized input.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["lower_bound_l2", "lower_bound_from_fits"]


def lower_bound_from_fits(
    r_y: np.ndarray, z_norm2: np.ndarray, d: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """The corrected formula on precomputed quantities.

    Args:
        r_y: (n,) ``‖G_y(z*) − x‖₂`` of the true class's classification fit.
        z_norm2: (n,) ``‖z*‖²`` of that fit.
        d: (n, C) ``min_z ‖G_c(z) − x‖₂`` per class (the true class's column is ignored).
        y: (n,) true labels.
    """
    r_y, z_norm2, d = (np.asarray(a, np.float64) for a in (r_y, z_norm2, d))
    eps = np.maximum(0.0, (d**2 - (r_y**2 + 0.5 * z_norm2)[:, None]) / (2.0 * (d + r_y[:, None])))
    eps[np.arange(len(y)), np.asarray(y)] = np.inf
    return eps.min(axis=1)


def lower_bound_l2(
    model, x, y, *, restarts: int = 4, steps: int | None = None, seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:  # fmt: skip
    """Per-image lower-bound estimate of the L2 distance to the nearest adversarial, for an ABS
    model (``abs_mnist`` / ``binary_abs_mnist``). Images the model misclassifies get 0.

    Args:
        model: an ABS model.
        x: images (n, 28, 28, 1) in [0, 1]; y: their true labels.
        restarts: random latent starts (N(0, I), clipped to the latent ball) beside the bank's
            best code for the KL-free search of each ``d_c``.
        steps: search passes for ``d_c`` (default twice the model's ``search_steps``).
    """
    if not hasattr(model, "fit_latents"):
        raise TypeError("lower_bound_l2 needs an ABS model (one with fit_latents)")
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    steps = steps or 2 * model.search_steps
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        n = len(xb)
        fit = model.fit_latents(xb)
        losses = fit["losses"].numpy() * model.pixels  # summed: ‖x − G(z)‖² + ½‖z‖²
        z2 = np.sum(fit["latents"].numpy() ** 2, axis=-1)
        sq = losses - 0.5 * z2  # ‖x − G_c(z_c)‖² of the classification fit
        own = np.arange(n), yb
        r_y, z_norm2 = np.sqrt(np.maximum(sq[own], 0.0)), z2[own]
        d2 = sq.copy()  # every fit found is an upper estimate of min_z ‖G_c(z) − x‖²
        inits = [None] + [
            rng.standard_normal((n, model.num_classes, model.latent_dim)).astype(np.float32)
            for _ in range(restarts)
        ]
        for init in inits:
            free = model.fit_latents(xb, steps=steps, kl=0.0, init=init)
            d2 = np.minimum(d2, free["losses"].numpy() * model.pixels)
        eps = lower_bound_from_fits(r_y, z_norm2, np.sqrt(np.maximum(d2, 0.0)), yb)
        predicted = np.argmax(model.logits_from_losses(tf.constant(fit["losses"])).numpy(), -1)
        eps[predicted != yb] = 0.0
        out.append(eps)
    return np.concatenate(out) if out else np.zeros(0)
