"""Metameric sampling for fully invertible classifiers (004_a2e2a3876a23345e.txt §2.2, Fig. 4,
Fig. 6; shared/digests/invertible_inn_ae_firevnet.md §2.6), and the post-hoc nuisance classifier
of Table 2.

A *logit metamer* of ``x_a`` with the nuisance of ``x_b`` is ``F⁻¹([z_s(x_a), z_n(x_b)])``: its
logits are exactly ``x_a``'s (up to the round-trip error of the flow), whatever it looks like.
Everything runs in inference mode (BatchNorm moving statistics). Metamers may leave the data
range; nothing here clips them (clipping would change their logits), only the PNG display does.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "metameric_sample",
    "nuisance_interpolation",
    "metamer_grid",
    "nuisance_features",
    "posthoc_nuisance_error",
]


def _check_flow(model):
    if not all(hasattr(model, m) for m in ("forward", "inverse", "split", "merge")):
        raise TypeError(
            f"{type(model).__name__} is not an invertible classifier (it needs forward, inverse, "
            f"split and merge; see zoo.models.firevnet)"
        )


def metameric_sample(model, x_semantic, x_nuisance, alpha=1.0):
    """``F⁻¹([z_s(x_semantic), (1 − α)·z_n(x_semantic) + α·z_n(x_nuisance)])``.

    ``alpha`` is a scalar or one value per example; α = 1 (default) is the paper's metamer, α in
    [0, 1] the interpolation of Fig. 6. ``x_semantic`` and ``x_nuisance`` have the same batch
    size. Returns images in the flow's domain (``model.flow_input_shape``).
    """
    _check_flow(model)
    z_a = model.forward(x_semantic, training=False)
    z_b = model.forward(x_nuisance, training=False)
    s_a, n_a = model.split(z_a)
    _, n_b = model.split(z_b)
    alpha = tf.convert_to_tensor(alpha, n_a.dtype)
    if alpha.shape.rank == 1:
        alpha = alpha[:, None]
    return model.inverse(model.merge(s_a, (1.0 - alpha) * n_a + alpha * n_b), training=False)


def nuisance_interpolation(model, x_semantic, x_nuisance, steps: int = 8):
    """The metamers for α = 0, 1/(steps−1), …, 1: an array ``(steps, batch, *flow_input_shape)``.
    Row 0 reconstructs ``x_semantic``; every row has its logits."""
    alphas = np.linspace(0.0, 1.0, int(steps), dtype=np.float32)
    return np.stack(
        [np.asarray(metameric_sample(model, x_semantic, x_nuisance, a)) for a in alphas]
    )


def metamer_grid(model, x_semantic, x_nuisance, path, steps: int = 8) -> Path:
    """A PNG: one row per pair, the semantic source, the interpolation to the metamer (α = 0…1),
    then the nuisance source; the predicted class above each image. Images are clipped to
    [0, 1] for display only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = nuisance_interpolation(model, x_semantic, x_nuisance, steps)  # (steps, n, ...)
    n = rows.shape[1]
    size = model.flow_input_shape

    def show(ax, img, title):
        img = np.clip(np.asarray(img, np.float32).reshape(size), 0, 1)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=7)
        ax.axis("off")

    def label(x):
        return int(np.argmax(model.forward(x, training=False)[:, : model.num_classes], -1)[0])

    fig, axes = plt.subplots(n, steps + 2, figsize=(1.1 * (steps + 2), 1.2 * n), squeeze=False)
    for i in range(n):
        a, b = x_semantic[i : i + 1], x_nuisance[i : i + 1]
        show(axes[i, 0], model.inverse(model.forward(a)), f"x_a: {label(a)}")
        for j in range(steps):
            show(
                axes[i, j + 1],
                rows[j, i],
                f"α={j / max(steps - 1, 1):.2f}: {label(rows[j, i : i + 1])}",
            )
        show(axes[i, -1], model.inverse(model.forward(b)), f"x_b: {label(b)}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def nuisance_features(model, data, max_batches: int | None = None):
    """``(z_n, labels)`` as numpy arrays for a dataset of ``(x, y)`` batches (inference mode)."""
    _check_flow(model)
    feats, labels = [], []
    for i, (x, y) in enumerate(data):
        if max_batches is not None and i >= max_batches:
            break
        feats.append(np.asarray(model.split(model.forward(x, training=False))[1]))
        labels.append(np.asarray(y))
    return np.concatenate(feats), np.concatenate(labels)


def posthoc_nuisance_error(
    model,
    train_data,
    test_data,
    hidden=(512, 512),
    epochs: int = 5,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Table 2's "Nuisance" column: train a fresh ReLU MLP on the frozen z_n of ``train_data``
    and report its error (%) on ``train_data`` and ``test_data``.

    This is a classifier trained independently after the fact, not the adversarial nuisance
    classifier iCE trains alongside the network (digest §4.5 item 10). The features are
    standardised with the training set's mean and standard deviation.
    """
    num_classes = model.num_classes
    x_train, y_train = nuisance_features(model, train_data)
    x_test, y_test = nuisance_features(model, test_data)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Dense(h, activation="relu") for h in hidden]
    clf = keras.Sequential(
        [keras.Input((x_train.shape[1],)), *layers, keras.layers.Dense(num_classes)]
    )
    clf.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    clf.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)

    def error(x, y):
        pred = np.argmax(clf.predict(x, batch_size=1024, verbose=0), -1)
        return float(100.0 * np.mean(pred != y))

    return {"train_error": error(x_train, y_train), "test_error": error(x_test, y_test)}
