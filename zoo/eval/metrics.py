"""Adversarial-robustness metrics with the ABS paper's conventions (digest §4.4).

Every attack returns an :class:`AttackResult`: one adversarial per image and a status. Distances
are measured in [0, 1] pixel units:

- ``l2``: ``‖x_adv − x‖₂`` (Foolbox's ``√(784·MSE)`` on MNIST);
- ``linf``: ``max |x_adv − x|``;
- ``l0``: the number of pixels (positions, over all channels) that changed.

A clean image the model already misclassifies counts as distance **0**; an image the attack could
not flip counts as **∞**. "All attacks" is the per-image minimum over attacks
(:func:`best_over`); a model's figures are the **median** distance (the ε at which its accuracy
falls to 50 %) and the **accuracy at ε** (the share of images whose distance exceeds ε).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "NORMS",
    "PAPER_EPSILONS",
    "AttackResult",
    "distances",
    "best_over",
    "median_distance",
    "accuracy_at",
    "summarize",
    "robustness_curves",
]

NORMS = ("l2", "linf", "l0")
# The ε at which Table 1 reports accuracy.
PAPER_EPSILONS = {"l2": 1.5, "linf": 0.3, "l0": 12.0}

# Status codes of an AttackResult.
MISCLASSIFIED, FOUND, FAILED = 0, 1, 2


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    return norm


def distances(x: np.ndarray, x_adv: np.ndarray, norm: str) -> np.ndarray:
    """Per-image distance between two batches (n, H, W, C) in the given norm."""
    _check_norm(norm)
    x, x_adv = np.asarray(x, np.float64), np.asarray(x_adv, np.float64)
    if x.shape != x_adv.shape:
        raise ValueError(f"shapes differ: {x.shape} and {x_adv.shape}")
    delta = (x_adv - x).reshape(len(x), -1) if x.ndim > 1 else (x_adv - x)[:, None]
    if norm == "l2":
        return np.sqrt(np.sum(delta**2, axis=1))
    if norm == "linf":
        return np.max(np.abs(delta), axis=1)
    changed = np.abs(x_adv - x) > 0
    if x.ndim == 4:  # (n, H, W, C): a pixel counts once whatever its channels
        changed = changed.any(axis=-1)
    return changed.reshape(len(x), -1).sum(axis=1).astype(np.float64)


@dataclass
class AttackResult:
    """What one attack found on a batch.

    Attributes:
        name: the attack (``"pointwise"``, ``"transfer_fgm"``, ...).
        norm: the norm the attack minimises; :meth:`distances` can score any norm.
        originals: the clean images (n, H, W, C).
        adversarials: per image, the adversarial found (the clean image where none was).
        status: per image 0 (clean image already misclassified), 1 (adversarial found) or
            2 (attack failed).
        queries: model evaluations (images) the attack used.
        seconds: wall time.
    """

    name: str
    norm: str
    originals: np.ndarray
    adversarials: np.ndarray
    status: np.ndarray
    queries: int = 0
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def distances(self, norm: str | None = None) -> np.ndarray:
        """Per-image minimal perturbation: 0 if misclassified clean, ∞ if the attack failed."""
        d = distances(self.originals, self.adversarials, norm or self.norm)
        d[self.status == MISCLASSIFIED] = 0.0
        d[self.status == FAILED] = np.inf
        return d

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.status != FAILED))


def best_over(results: Sequence[AttackResult], norm: str) -> np.ndarray:
    """Per-image minimum distance over several attacks on the same images ("all attacks")."""
    if not results:
        raise ValueError("best_over needs at least one AttackResult")
    n = {len(r.status) for r in results}
    if len(n) != 1:
        raise ValueError(f"the results cover different numbers of images: {sorted(n)}")
    return np.min(np.stack([r.distances(norm) for r in results]), axis=0)


def median_distance(d: np.ndarray) -> float:
    """The median with the 0 / ∞ conventions (∞ if more than half the attacks failed)."""
    d = np.sort(np.asarray(d, np.float64))
    if d.size == 0:
        raise ValueError("no distances")
    mid = d.size // 2
    return float(d[mid]) if d.size % 2 else float(0.5 * (d[mid - 1] + d[mid]))


def accuracy_at(d: np.ndarray, epsilon: float) -> float:
    """The share of images no attack flips within ``epsilon`` (distance strictly above it)."""
    return float(np.mean(np.asarray(d) > epsilon))


def summarize(d: np.ndarray, norm: str) -> dict:
    """``{"median": ..., "accuracy_at_eps": ..., "eps": ...}`` at the paper's ε for ``norm``."""
    eps = PAPER_EPSILONS[_check_norm(norm)]
    median = median_distance(d)
    return {
        "median": median if np.isfinite(median) else "inf",
        "accuracy_at_eps": round(accuracy_at(d, eps), 4),
        "eps": eps,
    }


def _grid(norm: str, values: Sequence[np.ndarray]) -> np.ndarray:
    finite = np.concatenate([np.asarray(v)[np.isfinite(v)] for v in values] + [np.zeros(1)])
    top = max(2.0 * PAPER_EPSILONS[norm], float(np.max(finite)) * 1.05)
    if norm == "l0":
        return np.arange(0.0, np.ceil(top) + 1.0)
    return np.linspace(0.0, top, 201)


def robustness_curves(
    distances_by_model: Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path | None = None,
    epsilons: Mapping[str, Sequence[float]] | None = None,
    title: str | None = None,
) -> dict:
    """Accuracy against ε, per norm, for several models (the paper's Fig. 2).

    Args:
        distances_by_model: ``{model: {norm: per-image minimal distances}}``.
        path: if given, writes ``PATH.json`` (the curves) and ``PATH.png`` (one panel per norm);
            ``path`` may end in ``.json`` or ``.png`` or have no suffix.
        epsilons: the ε grid per norm (default: 0 to past the largest finite distance).

    Returns:
        ``{norm: {"epsilons": [...], "accuracy": {model: [...]}}}``.
    """
    norms = [n for n in NORMS if any(n in per for per in distances_by_model.values())]
    curves = {}
    for norm in norms:
        per_model = {m: np.asarray(d[norm]) for m, d in distances_by_model.items() if norm in d}
        grid = np.asarray(epsilons[norm]) if epsilons and norm in epsilons else None
        if grid is None:
            grid = _grid(norm, list(per_model.values()))
        curves[norm] = {
            "epsilons": [float(e) for e in grid],
            "accuracy": {m: [accuracy_at(d, float(e)) for e in grid] for m, d in per_model.items()},
        }
    if path is not None:
        path = Path(path)
        base = path.with_suffix("") if path.suffix in (".json", ".png") else path
        base.parent.mkdir(parents=True, exist_ok=True)
        base.with_suffix(".json").write_text(json.dumps(curves, indent=1))
        _plot(curves, base.with_suffix(".png"), title)
    return curves


def _plot(curves: dict, path: Path, title: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"l2": "L2", "linf": "L∞", "l0": "L0 (pixels)"}
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, (norm, c) in zip(axes[0], curves.items(), strict=True):
        for model, acc in c["accuracy"].items():
            ax.plot(c["epsilons"], acc, label=model)
        ax.axvline(PAPER_EPSILONS[norm], color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"{labels[norm]} perturbation ε")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
