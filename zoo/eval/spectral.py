"""Singular-vector analysis of a layer's kernel (racecar paper sec. 3, Figs. 3/4, App. A.3;
shared/digests/racecar.md §1.2, §4.2 item 12).

Orientation: a Keras kernel K is ``[in, out]`` and computes ``x @ K``, so the paper's layer
matrix is M = Kᵀ. The *right* singular vectors of M, which racecar training aligns with the
dominant features of the data, are the **columns of U** in ``U, S, Vᵀ = svd(K)``, not the rows
(the authors' ``kernel_SVD.py`` takes rows, which the digest shows to be wrong). Racecar drives
the singular values to 1, where they are degenerate, so compare subspaces (energies, principal
angles), not individual vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "kernel_svd",
    "subspace_energy",
    "principal_cosines",
    "pca_basis",
    "max_abs_cosine",
    "save_vector_images",
]


def kernel_svd(kernel) -> tuple[np.ndarray, np.ndarray]:
    """``(singular_values, right_vectors)`` of the layer matrix M = Kᵀ.

    ``kernel``: a dense ``[in, out]`` or conv ``[kh, kw, in, out]`` kernel (a conv is taken as
    the matrix from a ``kh·kw·in`` patch to ``out`` channels). ``right_vectors`` has one row per
    singular value, each of length ``in`` (``kh·kw·in``): the right singular vectors of M.
    """
    k = np.asarray(kernel, np.float64)
    k = k.reshape(-1, k.shape[-1])
    u, s, _ = np.linalg.svd(k, full_matrices=False)
    return s, u.T


def _orthonormal_rows(basis) -> np.ndarray:
    q, _ = np.linalg.qr(np.asarray(basis, np.float64).reshape(len(basis), -1).T)
    return q.T


def subspace_energy(vectors, basis) -> np.ndarray:
    """Per vector, the fraction of its squared norm inside the span of ``basis`` (rows)."""
    v = np.asarray(vectors, np.float64).reshape(len(vectors), -1)
    q = _orthonormal_rows(basis)
    inside = np.sum((v @ q.T) ** 2, axis=1)
    return inside / np.maximum(np.sum(v**2, axis=1), 1e-300)


def principal_cosines(a, b) -> np.ndarray:
    """Cosines of the principal angles between the row spans of ``a`` and ``b`` (descending);
    all 1 when the spans agree."""
    qa, qb = _orthonormal_rows(a), _orthonormal_rows(b)
    return np.clip(np.linalg.svd(qa @ qb.T, compute_uv=False), 0.0, 1.0)


def pca_basis(x, k: int, centered: bool = False) -> np.ndarray:
    """The top-``k`` principal directions of the rows of ``x`` (uncentered by default: for one
    tied linear layer racecar's optimum is the top-k *uncentered* PCA subspace)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    if centered:
        x = x - x.mean(axis=0)
    return np.linalg.svd(x, full_matrices=False)[2][:k]


def max_abs_cosine(vectors, references) -> np.ndarray:
    """Per vector, the largest |cos| with any reference vector (rows)."""
    v = np.asarray(vectors, np.float64).reshape(len(vectors), -1)
    r = np.asarray(references, np.float64).reshape(len(references), -1)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)
    r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-300)
    return np.max(np.abs(v @ r.T), axis=1)


def save_vector_images(
    rows: Sequence[tuple[str, np.ndarray]],
    image_shape: Sequence[int],
    path: str | Path,
    titles: Sequence[Sequence[str]] | None = None,
) -> Path:
    """A PNG grid: one row of images per ``(label, vectors)`` entry, each vector reshaped to
    ``image_shape`` and rescaled to the full grey range on its own (singular vectors have
    arbitrary sign and scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(v) for _, v in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(1.3 * cols + 1.2, 1.4 * len(rows)), squeeze=False
    )
    for r, (label, vectors) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(vectors):
                img = (
                    np.asarray(vectors[c], np.float64).reshape(image_shape)[..., 0]
                    if len(image_shape) == 3
                    else np.asarray(vectors[c]).reshape(image_shape)
                )
                lo, hi = img.min(), img.max()
                ax.imshow(
                    (img - lo) / (hi - lo) if hi > lo else img * 0, cmap="gray", vmin=0, vmax=1
                )
                if titles is not None and c < len(titles[r]):
                    ax.set_title(titles[r][c], fontsize=7)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
