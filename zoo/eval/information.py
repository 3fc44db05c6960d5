"""Binned mutual-information estimates, as in the information-plane experiments the racecar
paper's MI test follows (000_7daca03a93eb4fe1.txt sec. 4, Tab. 26; Shwartz-Ziv & Tishby's IDNNs;
shared/digests/racecar.md §2.2).

The inputs are the task's *whole* pattern set, each pattern equally likely, and a layer's state
T is a deterministic function of X. Discretising T into equal bins then gives
``I(X;T) = H(T)`` and ``I(T;Y) = H(Y) − H(Y|T)``, with ``p(y|t)`` the average of ``p(y|x)`` over
the patterns that fall into the same cell. IDNNs' default is 30 bins over [−1, 1] (tanh units).
"""

from __future__ import annotations

import numpy as np

__all__ = ["binned_mutual_information", "discretize", "plot_information_plane"]


def discretize(activations, bins: int = 30, value_range=(-1.0, 1.0)) -> np.ndarray:
    """One integer id per row: the cell of its activations in an equal-width grid."""
    a = np.asarray(activations, np.float64).reshape(len(activations), -1)
    lo, hi = value_range
    edges = np.linspace(lo, hi, bins + 1)[1:-1]
    codes = np.digitize(np.clip(a, lo, hi), edges)
    return np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)


def _entropy_bits(p) -> np.ndarray:
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(p > 0, p * np.log2(p), 0.0), axis=-1)


def binned_mutual_information(
    activations, p_y, bins: int = 30, value_range=(-1.0, 1.0)
) -> tuple[float, float]:
    """``(I(X;T), I(T;Y))`` in bits for the states ``activations`` (one row per pattern).

    ``p_y``: per pattern, ``p(y|x)`` as ``(n, classes)`` probabilities, a ``(n,)`` vector of
    p(y=1|x) for a binary task, or ``(n,)`` integer labels (a deterministic p(y|x)).
    """
    a = np.asarray(activations)
    n = len(a)
    py = np.asarray(p_y)
    if py.ndim == 1:
        if np.issubdtype(py.dtype, np.integer):
            py = np.eye(int(py.max()) + 1)[py]
        else:
            py = np.stack([1 - py, py], axis=1).astype(np.float64)
    if len(py) != n:
        raise ValueError(f"{n} states but {len(py)} label distributions")
    cells = discretize(a, bins, value_range)
    counts = np.bincount(cells).astype(np.float64)
    p_t = counts / n
    h_t = float(_entropy_bits(p_t))
    p_y_given_t = np.zeros((len(counts), py.shape[1]))
    np.add.at(p_y_given_t, cells, py)
    p_y_given_t /= counts[:, None]
    h_y = float(_entropy_bits(py.mean(axis=0)))
    h_y_given_t = float(np.sum(p_t * _entropy_bits(p_y_given_t)))
    return h_t, h_y - h_y_given_t


def plot_information_plane(curves: dict, path, max_bits: float = 12.0):
    """A PNG of the information plane: per label, the layers' ``(I(X;D), I(D;Y))`` joined in
    layer order (the paper's Fig. 5). ``curves``: label → ``[[I_XD, I_DY], ...]``."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for label, points in curves.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, "o-", label=label)
        for i, (px, py) in enumerate(points):
            ax.annotate(
                f"D{i + 2}", (px, py), fontsize=6, xytext=(2, 2), textcoords="offset points"
            )
    ax.set_xlim(0, max_bits + 0.5)
    ax.set_xlabel("I(X;D) [bits]")
    ax.set_ylabel("I(D;Y) [bits]")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
