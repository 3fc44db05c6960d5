"""The in-domain generalization benchmark's metrics: R², its OOD/ID split, and the ratio r.

Schott et al. (ICLR 2022), 002_7240b1e8d13f6586.txt lines 2068-2826; digest part (b.1).

- :class:`RSquared`: a ``keras.metrics.Metric``, ``R²_j = 1 − MSE_j / σ²_j`` per factor and
  their mean, where σ²_j is the variance of the normalised factor over the **full** factor grid
  (never the test split; pitfall 1). On a full grid every factor is uniform on
  ``{0, 1/(K−1), …, 1}``, so σ² = (K + 1) / (12 (K − 1)) (:func:`full_grid_variance`).
- :func:`one_ood_analysis`: on the test images with exactly one factor value never seen in
  training, the R² of that OOD factor and of the other (ID) factors, and the
  extrapolation-towards-the-mean ratio ``r = |f(x)_j − ȳ_j| / |y_j − ȳ_j|`` (ȳ_j: the training
  mean of factor j); r < 1 means the prediction lies closer to the training mean than the truth.
- :func:`evaluate_model`: all of them for any model on a benchmark split, as the authors'
  ``evaluate_model(model_fn, dataloader)``: ``model`` may be a numpy function of images.
- :func:`pass_criterion`: the scaled-down reproduction's pass logic (digest b.4), a pure
  function of the figures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "RSquared",
    "full_grid_variance",
    "r_squared",
    "one_ood_analysis",
    "evaluate_model",
    "predict_factors",
    "pass_criterion",
    "PASS_THRESHOLDS",
]


def full_grid_variance(factor_sizes: Sequence[int]) -> np.ndarray:
    """Variance of each normalised factor (index / (K − 1)) over the full grid, ``(D,)``.

    Each factor is uniform on its K values on a full grid: σ² = (K + 1) / (12 (K − 1)), the
    variance the authors' ``RSquared`` takes over all normalised targets. 0 for K = 1."""
    k = np.asarray(factor_sizes, np.float64)
    if k.ndim != 1 or k.size == 0 or np.any(k < 1):
        raise ValueError(f"factor_sizes must be positive sizes, got {factor_sizes}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(k > 1, (k + 1) / (12 * np.maximum(k - 1, 1)), 0.0)


def r_squared(predictions, targets, variances) -> np.ndarray:
    """Per-factor ``1 − MSE_j / σ²_j`` of ``(N, D)`` arrays (numpy); NaN where σ² = 0."""
    p, t = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"predictions and targets must both be (N, D); got {p.shape}, {t.shape}")
    v = np.asarray(variances, np.float64)
    mse = np.mean((p - t) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, 1.0 - mse / np.where(v > 0, v, 1.0), np.nan)


@keras.saving.register_keras_serializable(package="zoo")
class RSquared(keras.metrics.Metric):
    """R² per factor against the full-grid variance; ``result()`` is the mean over factors.

    Give the variances one of three ways: ``factor_sizes`` (a full grid, closed form),
    ``variances`` (σ²_j directly), or ``targets`` (all normalised targets of the full dataset,
    ``(N, D)``; the authors' form). ``factor``: report that one factor's R² instead of the mean.

    ``update_state(y_true (B, D), y_pred (B, D), sample_weight (B,) optional)``;
    :meth:`per_factor` gives the ``(D,)`` vector. Sums are kept, so the figure over a split is
    exact whatever the batching (and sums across tf.distribute replicas).
    """

    def __init__(
        self,
        factor_sizes: Sequence[int] | None = None,
        variances: Sequence[float] | None = None,
        targets=None,
        factor: int | None = None,
        name: str = "r_squared",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        given = [x is not None for x in (factor_sizes, variances, targets)]
        if sum(given) != 1:
            raise ValueError(
                "RSquared needs exactly one of factor_sizes (a full grid), variances, or targets "
                "(all normalised targets of the dataset): σ² comes from the full grid, never "
                "from the split being scored"
            )
        if factor_sizes is not None:
            v = full_grid_variance(factor_sizes)
        elif variances is not None:
            v = np.asarray(variances, np.float64)
        else:
            t = np.asarray(targets, np.float64)
            if t.ndim != 2:
                raise ValueError(f"targets must be (N, D), got {t.shape}")
            v = t.var(axis=0)
        if v.ndim != 1 or np.any(v < 0):
            raise ValueError(f"variances must be a non-negative (D,) vector, got {v}")
        self._variances = [float(x) for x in v]
        self.factor = None if factor is None else int(factor)
        if self.factor is not None and not 0 <= self.factor < len(v):
            raise ValueError(f"factor {factor} out of range 0..{len(v) - 1}")
        d = len(v)
        # Sums in float64: over a whole split (10^5-10^6 images) float32 sums drift by ~1e-5.
        self.sse = self.add_variable(shape=(d,), initializer="zeros", dtype="float64", name="sse")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")

    @property
    def num_factors(self) -> int:
        return len(self._variances)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, self.dtype)
        y_pred = tf.cast(y_pred, self.dtype)
        d = self.num_factors
        if y_pred.shape.rank is not None and y_pred.shape[-1] not in (None, d):
            raise ValueError(
                f"RSquared was given variances for {d} factors; predictions have "
                f"{y_pred.shape[-1]} (shape {tuple(y_pred.shape)})"
            )
        y_true = tf.reshape(y_true, (-1, d))
        y_pred = tf.reshape(y_pred, (-1, d))
        sq = tf.cast(tf.square(y_pred - y_true), tf.float64)
        if sample_weight is None:
            w = tf.ones((tf.shape(sq)[0],), tf.float64)
        else:
            w = tf.reshape(tf.cast(sample_weight, tf.float64), (-1,))
        self.sse.assign_add(tf.reduce_sum(sq * w[:, None], axis=0))
        self.count.assign_add(tf.reduce_sum(w))

    def per_factor(self) -> tf.Tensor:
        """``(D,)`` R² of each factor (NaN for a factor with one value)."""
        v = tf.constant(self._variances, tf.float64)
        mse = self.sse / tf.maximum(self.count, 1e-12)
        r2 = tf.where(v > 0, 1.0 - mse / tf.where(v > 0, v, 1.0), tf.constant(np.nan, tf.float64))
        return tf.cast(r2, self.dtype)

    def result(self):
        r2 = self.per_factor()
        if self.factor is not None:
            return r2[self.factor]
        finite = tf.math.is_finite(r2)
        return tf.reduce_sum(tf.where(finite, r2, 0.0)) / tf.maximum(
            tf.reduce_sum(tf.cast(finite, self.dtype)), 1.0
        )

    def reset_state(self):
        self.sse.assign(tf.zeros_like(self.sse))
        self.count.assign(tf.zeros((), tf.float64))

    def get_config(self):
        return {
            "variances": self._variances,
            "factor": self.factor,
            "name": self.name,
            "dtype": self.dtype,
        }


# -- OOD / ID analysis --------------------------------------------------------------------------
def one_ood_analysis(
    predictions,
    test_factors,
    train_factors,
    factor_sizes: Sequence[int],
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """R² on the single-OOD-factor subset, OOD factor and ID factors apart, and the ratio r.

    Args:
        predictions: ``(N, D)`` normalised predictions for the test images.
        test_factors: ``(N, D)`` factor indices of the test images.
        train_factors: ``(M, D)`` factor indices of the training split (its value sets and its
            mean ȳ define "OOD" and r).
        factor_sizes: the grid's K per factor (normalisation and the full-grid variance).

    Returns a dict: ``count`` (subset size), ``r2_ood`` / ``r2_id`` (pooled: 1 − the mean of
    squared errors divided by each factor's σ², over the OOD resp. ID entries), per factor
    ``r2_ood_per_factor`` (on the images where that factor is the OOD one) and
    ``r_median_per_factor``, and ``r_median`` over all OOD entries. Empty splits give NaN
    (composition and random have no value unseen in training).
    """
    p = np.asarray(predictions, np.float64)
    test = np.asarray(test_factors, np.int64)
    train = np.asarray(train_factors, np.int64)
    sizes = np.asarray(factor_sizes, np.int64)
    d = len(sizes)
    names = list(names) if names is not None else [f"factor_{j}" for j in range(d)]
    if p.shape != test.shape or test.shape[1:] != (d,) or train.shape[1:] != (d,):
        raise ValueError(
            f"predictions {p.shape}, test factors {test.shape} and train factors {train.shape} "
            f"must all have {d} factors"
        )
    denominator = np.maximum(sizes - 1, 1).astype(np.float64)
    y = test / denominator
    train_mean = (train / denominator).mean(axis=0)
    seen = np.zeros((d, int(sizes.max())), bool)
    for j in range(d):
        seen[j, np.unique(train[:, j])] = True
    unseen = ~seen[np.arange(d)[None, :], test]  # (N, D): the value never occurs in training
    one = unseen.sum(axis=1) == 1
    var = full_grid_variance(sizes)
    safe_var = np.where(var > 0, var, np.nan)
    normalised_sq = (p - y) ** 2 / safe_var  # (N, D)
    ood = unseen & one[:, None]
    id_ = ~unseen & one[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(p - train_mean) / np.abs(y - train_mean)
    ratio = np.where(np.abs(y - train_mean) > 1e-12, ratio, np.nan)

    def pooled(mask):
        vals = normalised_sq[mask]
        vals = vals[np.isfinite(vals)]
        return float(1.0 - vals.mean()) if vals.size else float("nan")

    def median(vals):
        vals = vals[np.isfinite(vals)]
        return float(np.median(vals)) if vals.size else float("nan")

    per_r2, per_r = {}, {}
    for j, n in enumerate(names):
        rows = ood[:, j]
        if rows.any():
            per_r2[n] = pooled(ood & (np.arange(d) == j)[None, :])
            per_r[n] = median(ratio[rows, j])
    return {
        "count": int(one.sum()),
        "r2_ood": pooled(ood),
        "r2_id": pooled(id_),
        "r2_ood_per_factor": per_r2,
        "r_median": median(ratio[ood]),
        "r_median_per_factor": per_r,
    }


# -- running a model ------------------------------------------------------------------------------
def predict_factors(model, images: np.ndarray) -> np.ndarray:
    """Predictions ``(N, D)`` of ``model`` on a batch: a zoo regressor / Keras model (its
    ``factors`` output if it returns a dict) or any numpy function of images."""
    if isinstance(model, keras.Model):
        out = model(tf.convert_to_tensor(images), training=False)
    else:
        out = model(images)
    if isinstance(out, Mapping):
        if "factors" not in out:
            raise ValueError(f"the model returned {sorted(out)}; expected a 'factors' output")
        out = out["factors"]
    out = np.asarray(out, np.float64)
    if out.ndim != 2 or len(out) != len(images):
        raise ValueError(f"a model must map {len(images)} images to (N, D); got {out.shape}")
    return out


def evaluate_model(
    model: Callable | keras.Model,
    dataset: str,
    *,
    data_dir=None,
    max_examples: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores of ``model`` on the test split of benchmark variant ``dataset``.

    ``max_examples``: score a seeded uniform draw of that many test images (None: all). R² uses
    the full-grid variance whatever the draw. Returns ``r2`` (mean over factors),
    ``r2_per_factor``, ``mse``, ``one_ood`` (:func:`one_ood_analysis`) and ``count``.
    """
    from zoo.data import generalization as gen
    from zoo.data.factors import get_factor_dataset

    base, variant = gen.benchmark_variant(dataset)
    grid = gen.benchmark_grid(base)
    test = gen.split_factors(dataset, "test", data_dir)
    train = gen.split_factors(dataset, "train", data_dir)
    rows = np.arange(len(test))
    if max_examples is not None and max_examples < len(rows):
        rows = np.sort(np.random.default_rng([seed, 3]).choice(rows, max_examples, replace=False))
    if base == "mpi3d":
        images_all = gen.load_mpi3d_split(variant, "test", data_dir)[0]
        scale = 255.0 if images_all.dtype == np.uint8 else 1.0

        def images_of(r):
            return images_all[r].astype(np.float32) / scale
    else:
        source = get_factor_dataset(dataset, data_dir)

        def images_of(r):
            return source.images(grid.index_of(test[r]))

    predictions = np.concatenate(
        [
            predict_factors(model, images_of(rows[i : i + batch_size]))
            for i in range(0, len(rows), batch_size)
        ]
    )
    factors = test[rows]
    targets = grid.normalize(factors)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"the model predicts {predictions.shape[1]} factors; {dataset} has "
            f"{grid.num_factors} ({', '.join(grid.names)})"
        )
    per = r_squared(predictions, targets, full_grid_variance(grid.sizes))
    return {
        "r2": float(np.nanmean(per)),
        "r2_per_factor": {n: float(v) for n, v in zip(grid.names, per, strict=True)},
        "mse": float(np.mean((predictions - targets) ** 2)),
        "one_ood": one_ood_analysis(predictions, factors, train, grid.sizes, grid.names),
        "count": int(len(rows)),
    }


# -- the reproduction's pass criterion (digest b.4, calibrated by b.6) ----------------------------
PASS_THRESHOLDS = {
    "random_r2_min": 0.95,
    "random_minus_composition_min": 0.3,
    "extrapolation_scale_r2_max": 0.8,
    "extrapolation_median_r_max": 1.0,
}


def pass_criterion(
    r2: Mapping[str, float],
    extrapolation_scale_r2: float,
    extrapolation_median_r: float,
    thresholds: Mapping[str, float] = PASS_THRESHOLDS,
) -> dict[str, bool]:
    """The DisLib CNN's pass flags on rotation-free sprites, from its figures alone.

    ``r2``: mean R² per split (``random``, ``composition``); ``extrapolation_scale_r2``: the
    scale factor's R² on the extrapolation test split; ``extrapolation_median_r``: median r over
    the OOD entries of the extrapolation split's single-OOD-factor subset. A NaN fails."""
    t = dict(thresholds)
    random, composition = float(r2["random"]), float(r2["composition"])
    flags = {
        "random_r2_at_least_0.95": random >= t["random_r2_min"],
        "random_minus_composition_at_least_0.3": random - composition
        >= t["random_minus_composition_min"],
        "extrapolation_scale_r2_at_most_0.8": float(extrapolation_scale_r2)
        <= t["extrapolation_scale_r2_max"],
        "extrapolation_median_r_below_1": float(extrapolation_median_r)
        < t["extrapolation_median_r_max"],
    }
    flags["passed"] = all(flags.values())
    return flags
