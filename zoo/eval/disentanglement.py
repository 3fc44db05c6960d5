"""Disentanglement metrics on any encoder and any dataset with a factor grid, ×100 as papers print
them: MCC and disentanglement_lib's BetaVAE, FactorVAE, MIG, DCI, Modularity and SAP, plus the
latent-traversal grid and the factor × latent correlation heatmap as PNGs.

Definitions and defaults are disentanglement_lib's with the SlowVAE authors' metric configs
(002_7240b1e8d13f6586.txt, SlowVAE App. C; ``bethgelab/slow_disentanglement/metric_configs``;
digest a.2, pitfalls 7-8): representations are encoder **means**; 10,000 points (100,000 for MIG
and Modularity); scikit-learn estimators with their defaults; 20-bin histograms; a FactorVAE
variance threshold of 0.05 on the standard deviation. ``num_*`` arguments scale a run down.

- ``encoder``: a function ``images (N, H, W, C) float32 → representation (N, d)`` (numpy in and
  out), a zoo model with ``encode`` (its ``mu`` is used), or a SavedModel signature whose output
  has ``mu``; see :func:`representation_function`.
- ``dataset``: a :class:`zoo.data.factors.FactorDataset` or a registered name (``"sprites"``,
  ``"dsprites"``, ``"shapes3d/lap"``, …). A dataset without a factor grid is refused.
- ``factors``: the factors scored (names or positions; default the dataset's observed factors,
  e.g. SmallNORB without its instance).

>>> from zoo.eval import disentanglement as dis
>>> dis.compute_mcc(model, "sprites")["mcc"]
>>> dis.evaluate(model, "sprites", scale=0.1)        # all seven at a tenth of the samples
>>> dis.mcc(latents, factors)                         # on arrays (continuous factors, KITTI)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from zoo.data.factors import FactorDataset, FactorGridError, as_factor_dataset

__all__ = [
    "representation_function",
    "mcc",
    "compute_mcc",
    "compute_beta_vae",
    "compute_factor_vae",
    "compute_mig",
    "compute_dci",
    "compute_modularity",
    "compute_sap",
    "evaluate",
    "METRICS",
    "correlation_matrix",
    "plot_correlation_heatmap",
    "traversal_grid",
    "plot_traversals",
]

Encoder = Callable[[np.ndarray], np.ndarray]


# -- encoders ------------------------------------------------------------------------------------
def representation_function(encoder, batch_size: int = 256) -> Encoder:
    """A numpy function ``images → (N, d)`` float64 from a zoo model (``encode(...)["mu"]``), a
    SavedModel signature or function returning a dict with ``mu``, or any callable returning an
    array; applied in batches of ``batch_size``."""
    import tensorflow as tf

    if getattr(encoder, "_zoo_representation", False):
        return encoder
    if hasattr(encoder, "encode") and callable(encoder.encode):
        raw = tf.function(lambda x: encoder.encode(x, training=False)["mu"], reduce_retracing=True)
    elif hasattr(encoder, "structured_input_signature"):  # a SavedModel signature: keywords only
        (name,) = encoder.structured_input_signature[1]

        def raw(x):
            return encoder(**{name: tf.constant(x, tf.float32)})

    elif callable(encoder):
        raw = encoder
    else:
        raise TypeError(
            f"an encoder is a function images → representations or a model with encode(); got "
            f"{type(encoder).__name__}"
        )

    def call(x):
        out = raw(x)
        if isinstance(out, dict):
            if "mu" not in out:
                raise ValueError(f"the encoder returned a dict without 'mu': {sorted(out)}")
            out = out["mu"]
        return np.asarray(out)

    def apply(images):
        images = np.asarray(images, np.float32)
        parts = [call(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        codes = np.concatenate(parts) if parts else np.zeros((0, 0))
        if codes.ndim != 2 or len(codes) != len(images):
            raise ValueError(
                f"the encoder must map N images to an (N, d) representation; got {codes.shape} "
                f"for {len(images)} images"
            )
        return codes.astype(np.float64)

    apply._zoo_representation = True
    return apply


def _factor_positions(dataset: FactorDataset, factors) -> list[int]:
    if factors is None:
        return list(dataset.observed)
    positions = [dataset.grid.position(f) for f in factors]
    if not positions or len(set(positions)) != len(positions):
        raise FactorGridError(f"factors must be distinct factors of {dataset.name}, got {factors}")
    return positions


def _setup(encoder, dataset, factors, seed):
    dataset = as_factor_dataset(dataset)
    return (
        representation_function(encoder),
        dataset,
        _factor_positions(dataset, factors),
        np.random.default_rng(seed),
    )


def _codes_of(encode: Encoder, dataset: FactorDataset, indices: np.ndarray, chunk: int = 2048):
    """Representations of grid indices (any shape S) → ``S + (d,)``, rendered in chunks."""
    flat = np.asarray(indices).reshape(-1)
    parts = [encode(dataset.images(flat[i : i + chunk])) for i in range(0, len(flat), chunk)]
    codes = np.concatenate(parts)
    return codes.reshape(*np.shape(indices), codes.shape[-1])


def _sample_codes(encode, dataset, positions, n, rng):
    """``(codes (n, d), factors (n, D))`` of ``n`` uniform draws: DisLib's
    ``generate_batch_factor_code`` (transposed)."""
    idx = dataset.sample_indices(n, rng)
    return _codes_of(encode, dataset, idx), dataset.grid.factors_of(idx)[:, positions]


# -- MCC -------------------------------------------------------------------------------------------
def correlation_matrix(latents, factors, method: str = "spearman") -> np.ndarray:
    """``|corr|`` between every factor (rows) and every latent (columns), ``(D, d)``; a constant
    column correlates 0."""
    latents, factors = np.asarray(latents, np.float64), np.asarray(factors, np.float64)
    if latents.ndim != 2 or factors.ndim != 2 or len(latents) != len(factors):
        raise ValueError(
            f"latents (N, d) and factors (N, D) must have the same N; got {latents.shape} and "
            f"{factors.shape}"
        )
    if method == "spearman":
        from scipy.stats import rankdata

        latents, factors = rankdata(latents, axis=0), rankdata(factors, axis=0)
    elif method != "pearson":
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    a = factors - factors.mean(0)
    b = latents - latents.mean(0)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (a.T @ b) / np.outer(na, nb)
    return np.abs(np.nan_to_num(corr, nan=0.0))


def mcc(latents, factors, method: str = "spearman", seed: int = 0) -> dict:
    """Mean correlation coefficient ×100 between latents ``(N, d)`` and factors ``(N, D)``.

    As the SlowVAE code's ``mcc_metric`` (App. C; pitfall 7): the D factors are padded with
    ``d − D`` N(0, 1) noise columns to d, the ``|Spearman|`` matrix is matched one-to-one by the
    Hungarian algorithm (``scipy.optimize.linear_sum_assignment``), and the score is the mean
    ``|ρ|`` of the D factors' matches. (With fewer latents than factors the unmatched factors
    count 0.) Returns ``mcc``, ``per_factor`` (×100), ``assignment`` (the latent of each factor,
    −1 if none) and ``correlation`` (the D × d matrix of |ρ|).
    """
    from scipy.optimize import linear_sum_assignment

    latents, factors = np.asarray(latents, np.float64), np.asarray(factors, np.float64)
    if factors.ndim == 1:
        factors = factors[:, None]
    if latents.ndim != 2 or factors.ndim != 2 or len(latents) != len(factors) or len(latents) < 3:
        raise ValueError(
            f"mcc needs latents (N, d) and factors (N, D) with the same N ≥ 3; got "
            f"{latents.shape} and {factors.shape}"
        )
    n, d = latents.shape
    big_d = factors.shape[1]
    padded = factors
    if d > big_d:
        # A stream of its own: noise drawn as default_rng(seed) would repeat a user's factors.
        noise = np.random.default_rng([seed, 0x5EED]).standard_normal((n, d - big_d))
        padded = np.concatenate([factors, noise], axis=1)
    corr = correlation_matrix(latents, padded, method)
    rows, cols = linear_sum_assignment(-corr)
    assignment = np.full(big_d, -1)
    per_factor = np.zeros(big_d)
    for r, c in zip(rows, cols, strict=True):
        if r < big_d:
            assignment[r], per_factor[r] = c, corr[r, c]
    return {
        "mcc": 100.0 * float(per_factor.mean()),
        "per_factor": (100.0 * per_factor).tolist(),
        "assignment": assignment.tolist(),
        "correlation": corr[:big_d],
    }


def compute_mcc(
    encoder, dataset, *, num_points: int = 10_000, method: str = "spearman", factors=None,
    seed: int = 0,
) -> dict:  # fmt: skip
    """MCC ×100 of ``num_points`` uniform draws (``mcc.gin``: 10,000, Spearman)."""
    encode, dataset, positions, rng = _setup(encoder, dataset, factors, seed)
    codes, ys = _sample_codes(encode, dataset, positions, num_points, rng)
    out = mcc(codes, ys, method=method, seed=seed)
    out["factors"] = [dataset.grid.names[p] for p in positions]
    return out


# -- BetaVAE and FactorVAE ---------------------------------------------------------------------------
def _fixed_factor_batches(dataset, positions, num_points, batch_size, rng, pairs: bool):
    """Indices of ``num_points`` batches that share one factor: ``(labels, idx)`` with ``idx``
    of shape ``(num_points, [2,] batch_size)``. BetaVAE draws two batches whose i-th items agree
    on the factor (DisLib: ``factors2[:, k] = factors1[:, k]``); FactorVAE one batch where the
    factor is fixed to one value."""
    labels = rng.integers(0, len(positions), num_points)
    shape = (num_points, 2, batch_size) if pairs else (num_points, batch_size)
    idx = np.empty(shape, np.int64)
    for k in range(len(positions)):
        rows = np.flatnonzero(labels == k)
        if not rows.size:
            continue
        j = positions[k]
        m = rows.size * batch_size
        if pairs:
            first = dataset.sample_indices(m, rng)
            value = dataset.grid.factors_of(first)[:, j]
            idx[rows, 0] = first.reshape(rows.size, batch_size)
            idx[rows, 1] = dataset.sample_indices(m, rng, fixed=(j, value)).reshape(
                rows.size, batch_size
            )
        else:
            value = dataset.grid.factors_of(dataset.sample_indices(rows.size, rng))[:, j]
            idx[rows] = dataset.sample_indices(
                m, rng, fixed=(j, np.repeat(value, batch_size))
            ).reshape(rows.size, batch_size)
    return labels, idx


def compute_beta_vae(
    encoder, dataset, *, batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
    factors=None, seed: int = 0,
) -> dict:  # fmt: skip
    """The β-VAE metric (Higgins et al. 2017) ×100, disentanglement_lib's ``beta_vae_sklearn``.

    Each point fixes one factor across two batches of ``batch_size`` draws; its feature is the
    mean ``|z₁ − z₂|``, its label the factor; a scikit-learn ``LogisticRegression`` (defaults)
    is fit on ``num_train`` points and scored on ``num_eval`` more: ``beta_vae`` is the eval
    accuracy."""
    from sklearn.linear_model import LogisticRegression

    encode, dataset, positions, rng = _setup(encoder, dataset, factors, seed)

    def points(n):
        labels, idx = _fixed_factor_batches(dataset, positions, n, batch_size, rng, pairs=True)
        codes = _codes_of(encode, dataset, idx)
        return np.mean(np.abs(codes[:, 0] - codes[:, 1]), axis=1), labels

    x_train, y_train = points(num_train)
    model = LogisticRegression(random_state=int(rng.integers(2**31)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence warnings, as DisLib leaves them
        model.fit(x_train, y_train)
    x_eval, y_eval = points(num_eval)
    return {
        "beta_vae": 100.0 * float(model.score(x_eval, y_eval)),
        "train_accuracy": 100.0 * float(model.score(x_train, y_train)),
    }


def compute_factor_vae(
    encoder, dataset, *, batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
    num_variance_estimate: int = 10_000, threshold: float = 0.05, factors=None, seed: int = 0,
) -> dict:  # fmt: skip
    """The FactorVAE metric (Kim & Mnih 2018) ×100, disentanglement_lib's ``factor_vae_score``.

    Latents are divided by their global standard deviation (from ``num_variance_estimate``
    draws); those with a std below ``threshold`` are dropped. Each point fixes one factor over a
    batch and votes for the latent of least normalised variance; the majority-vote classifier
    of the ``num_train`` votes is scored on ``num_eval`` more: ``factor_vae``."""
    encode, dataset, positions, rng = _setup(encoder, dataset, factors, seed)
    codes = _codes_of(encode, dataset, dataset.sample_indices(num_variance_estimate, rng))
    global_var = np.var(codes, axis=0, ddof=1)
    active = np.flatnonzero(np.sqrt(global_var) >= threshold)
    if not active.size:
        return {"factor_vae": 0.0, "train_accuracy": 0.0, "num_active_dims": 0}

    def votes(n):
        labels, idx = _fixed_factor_batches(dataset, positions, n, batch_size, rng, pairs=False)
        local = np.var(_codes_of(encode, dataset, idx), axis=1, ddof=1)
        argmin = np.argmin(local[:, active] / global_var[active], axis=1)
        table = np.zeros((len(positions), len(active)), np.int64)
        np.add.at(table, (labels, argmin), 1)
        return table

    train = votes(num_train)
    classifier = np.argmax(train, axis=0)
    columns = np.arange(train.shape[1])
    evaluation = votes(num_eval)
    return {
        "factor_vae": 100.0 * evaluation[classifier, columns].sum() / evaluation.sum(),
        "train_accuracy": 100.0 * train[classifier, columns].sum() / train.sum(),
        "num_active_dims": int(active.size),
    }


# -- information-based metrics ------------------------------------------------------------------------
def _discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """disentanglement_lib's histogram discretizer, per latent: bin ids 1..num_bins."""
    out = np.zeros(codes.shape, np.int64)
    for i in range(codes.shape[1]):
        edges = np.histogram(codes[:, i], num_bins)[1][:-1]
        out[:, i] = np.digitize(codes[:, i], edges)
    return out


def _mutual_information(discrete_codes: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``(d, D)`` discrete mutual information (nats) between latents and factors."""
    from sklearn.metrics import mutual_info_score

    return np.array(
        [[mutual_info_score(ys[:, j], discrete_codes[:, i]) for j in range(ys.shape[1])]
         for i in range(discrete_codes.shape[1])]
    )  # fmt: skip


def compute_mig(
    encoder, dataset, *, num_points: int = 100_000, num_bins: int = 20, factors=None,
    seed: int = 0,
) -> dict:  # fmt: skip
    """The mutual information gap (Chen et al. 2018) ×100: per factor, the gap between the two
    latents that carry most information about it, over its entropy; averaged over factors.
    Latents are discretised into ``num_bins`` histogram bins (``mig.gin``)."""
    encode, dataset, positions, rng = _setup(encoder, dataset, factors, seed)
    codes, ys = _sample_codes(encode, dataset, positions, num_points, rng)
    if codes.shape[1] < 2:
        raise ValueError("MIG needs a representation with at least 2 dimensions")
    from sklearn.metrics import mutual_info_score

    m = _mutual_information(_discretize(codes, num_bins), ys)
    entropy = np.array([mutual_info_score(ys[:, j], ys[:, j]) for j in range(ys.shape[1])])
    top = np.sort(m, axis=0)[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = np.where(entropy > 0, (top[0] - top[1]) / entropy, 0.0)
    return {"mig": 100.0 * float(np.mean(gaps)), "per_factor": (100.0 * gaps).tolist()}


def compute_dci(
    encoder, dataset, *, num_train: int = 10_000, num_test: int = 5_000, factors=None,
    seed: int = 0,
) -> dict:  # fmt: skip
    """DCI (Eastwood & Williams 2018) ×100 with disentanglement_lib's gradient-boosted trees
    (``GradientBoostingClassifier()`` per factor): ``dci`` is the disentanglement score
    (importance-weighted ``1 − H_D(p_i)`` over latents); also completeness and the train / test
    accuracy ("informativeness")."""
    from scipy.stats import entropy
    from sklearn.ensemble import GradientBoostingClassifier

    encode, dataset, positions, rng = _setup(encoder, dataset, factors, seed)
    x_train, y_train = _sample_codes(encode, dataset, positions, num_train, rng)
    x_test, y_test = _sample_codes(encode, dataset, positions, num_test, rng)
    d, big_d = x_train.shape[1], y_train.shape[1]
    importance = np.zeros((d, big_d))
    train_acc, test_acc = [], []
    for j in range(big_d):
        if len(np.unique(y_train[:, j])) < 2:  # a constant factor: nothing to predict
            train_acc.append(1.0)
            test_acc.append(1.0)
            continue
        model = GradientBoostingClassifier(random_state=int(rng.integers(2**31)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "more classes than half the samples" at small counts
            model.fit(x_train, y_train[:, j])
        importance[:, j] = np.abs(model.feature_importances_)
        train_acc.append(float(np.mean(model.predict(x_train) == y_train[:, j])))
        test_acc.append(float(np.mean(model.predict(x_test) == y_test[:, j])))
    per_code = 1.0 - entropy(importance.T + 1e-11, base=max(big_d, 2))
    per_factor = 1.0 - entropy(importance + 1e-11, base=max(d, 2))
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    code_w = weights.sum(axis=1) / weights.sum()
    factor_w = weights.sum(axis=0) / weights.sum()
    return {
        "dci": 100.0 * float(np.sum(per_code * code_w)),
        "completeness": 100.0 * float(np.sum(per_factor * factor_w)),
        "informativeness_train": 100.0 * float(np.mean(train_acc)),
        "informativeness_test": 100.0 * float(np.mean(test_acc)),
        "importance": importance,
    }


def compute_modularity(
    encoder, dataset, *, num_train: int = 100_000, num_test: int = 5_000, num_bins: int = 20,
    factors=None, seed: int = 0,
) -> dict:  # fmt: skip
    """Modularity and explicitness (Ridgeway & Mozer 2018) ×100, disentanglement_lib's
    ``modularity_explicitness``: ``modularity`` is the mean over latents of
    ``1 − (Σ_j m_ij² − max_j m_ij²) / (max_j m_ij² (D − 1))`` on 20-bin mutual information; the
    explicitness is the ROC-AUC of a logistic regression per factor on standardised latents."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import MultiLabelBinarizer

    encode, dataset, positions, rng = _setup(encoder, dataset, factors, seed)
    x_train, y_train = _sample_codes(encode, dataset, positions, num_train, rng)
    x_test, y_test = _sample_codes(encode, dataset, positions, num_test, rng)
    m = _mutual_information(_discretize(x_train, num_bins), y_train)
    squared = np.square(m)
    top = squared.max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = (squared.sum(axis=1) - top) / (top * max(squared.shape[1] - 1, 1))
    per_code = np.where(top > 0, 1.0 - delta, 0.0)
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 0, std, 1.0)
    xn_train, xn_test = (x_train - mean) / std, (x_test - mean) / std
    explicit_train, explicit_test = [], []
    for j in range(y_train.shape[1]):
        classes = np.unique(y_train[:, j])
        if len(classes) < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression().fit(xn_train, y_train[:, j])
        mlb = MultiLabelBinarizer(classes=clf.classes_)
        keep = np.isin(y_test[:, j], clf.classes_)

        def auc(x, y, clf=clf, mlb=mlb):
            target = mlb.fit_transform(y[:, None])
            proba = clf.predict_proba(x)
            if target.shape[1] == 1:  # binary: scikit-learn's single column
                target, proba = target[:, 0], proba[:, 1]
            else:
                present = target.sum(axis=0) > 0
                target, proba = target[:, present], proba[:, present]
            return roc_auc_score(target, proba)

        explicit_train.append(auc(xn_train, y_train[:, j]))
        explicit_test.append(auc(xn_test[keep], y_test[keep, j]))
    return {
        "modularity": 100.0 * float(np.mean(per_code)),
        "explicitness_train": 100.0 * float(np.mean(explicit_train)) if explicit_train else 0.0,
        "explicitness_test": 100.0 * float(np.mean(explicit_test)) if explicit_test else 0.0,
    }


def compute_sap(
    encoder, dataset, *, num_train: int = 10_000, num_test: int = 5_000,
    continuous_factors: bool = False, factors=None, seed: int = 0,
) -> dict:  # fmt: skip
    """The separated attribute predictability (Kumar et al. 2018) ×100: per factor, the gap in
    accuracy between the two latents that predict it best alone (a ``LinearSVC(C=0.01,
    class_weight="balanced")`` per latent and factor; R² of a linear fit if
    ``continuous_factors``), averaged over factors."""
    from sklearn.svm import LinearSVC

    encode, dataset, positions, rng = _setup(encoder, dataset, factors, seed)
    x_train, y_train = _sample_codes(encode, dataset, positions, num_train, rng)
    x_test, y_test = _sample_codes(encode, dataset, positions, num_test, rng)
    d, big_d = x_train.shape[1], y_train.shape[1]
    if d < 2:
        raise ValueError("SAP needs a representation with at least 2 dimensions")
    score = np.zeros((d, big_d))
    for i in range(d):
        for j in range(big_d):
            if continuous_factors:
                cov = np.cov(x_train[:, i], y_train[:, j], ddof=1)
                score[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
            elif len(np.unique(y_train[:, j])) < 2:
                score[i, j] = 1.0
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    clf = LinearSVC(C=0.01, class_weight="balanced")
                    clf.fit(x_train[:, i : i + 1], y_train[:, j])
                score[i, j] = float(np.mean(clf.predict(x_test[:, i : i + 1]) == y_test[:, j]))
    top = np.sort(score, axis=0)
    return {"sap": 100.0 * float(np.mean(top[-1] - top[-2])), "score_matrix": score}


METRICS: dict[str, tuple[Callable[..., dict], str, dict[str, int]]] = {
    # name: (function, headline key, its sample-count arguments and defaults)
    "mcc": (compute_mcc, "mcc", {"num_points": 10_000}),
    "beta_vae": (compute_beta_vae, "beta_vae", {"num_train": 10_000, "num_eval": 5_000}),
    "factor_vae": (
        compute_factor_vae,
        "factor_vae",
        {"num_train": 10_000, "num_eval": 5_000, "num_variance_estimate": 10_000},
    ),  # fmt: skip
    "mig": (compute_mig, "mig", {"num_points": 100_000}),
    "dci": (compute_dci, "dci", {"num_train": 10_000, "num_test": 5_000}),
    "modularity": (compute_modularity, "modularity", {"num_train": 100_000, "num_test": 5_000}),
    "sap": (compute_sap, "sap", {"num_train": 10_000, "num_test": 5_000}),
}


def evaluate(
    encoder, dataset, metrics: Sequence[str] = tuple(METRICS), *, scale: float = 1.0,
    factors=None, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Headline figures ×100 of ``metrics`` (default all seven, Table 1's columns) with every
    sample count multiplied by ``scale`` (1: the papers' settings; at least 100 each)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    encode = representation_function(encoder)
    dataset = as_factor_dataset(dataset)
    out = {}
    for name in metrics:
        fn, key, counts = METRICS[name]
        sizes = {k: max(int(math.ceil(v * scale)), 100) for k, v in counts.items()}
        out[name] = round(float(fn(encode, dataset, factors=factors, seed=seed, **sizes)[key]), 2)
    return out


# -- plots -----------------------------------------------------------------------------------------
def plot_correlation_heatmap(
    latents, factors, path, *, factor_names: Sequence[str] | None = None,
    method: str = "spearman", title: str | None = None,
) -> Path:  # fmt: skip
    """The factor × latent ``|ρ|`` matrix as a heatmap PNG, each factor's Hungarian match
    outlined and the MCC in the title. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = mcc(latents, factors, method=method)
    corr = result["correlation"]
    names = (
        list(factor_names)
        if factor_names is not None
        else [f"factor {j}" for j in range(len(corr))]
    )
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * corr.shape[1], 1.0 + 0.5 * corr.shape[0]))
    image = ax.imshow(corr, vmin=0.0, vmax=1.0, cmap="viridis")
    for j, i in enumerate(result["assignment"]):
        if i >= 0:
            ax.add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, ec="red", lw=2))
    for (j, i), v in np.ndenumerate(corr):
        ax.text(i, j, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="black" if v > 0.6 else "white")  # fmt: skip
    ax.set_xticks(range(corr.shape[1]), [f"z{i}" for i in range(corr.shape[1])])
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("latent")
    ax.set_title(title or f"|{method} ρ|, MCC {result['mcc']:.1f}")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def traversal_grid(
    model, image, *, num_steps: int = 10, reference_images=None, lowest_prob: float = 0.05
) -> np.ndarray:
    """Decoded latent traversals ``(z_dim, num_steps, H, W, C)`` of one image: each latent in
    turn is set to the ``lowest_prob … 1 − lowest_prob`` quantiles of a Normal fitted to its
    values over ``reference_images`` (default: N(0, 1)), as the SlowVAE code's ``traverse``."""
    from scipy.stats import norm

    image = np.asarray(image, np.float32)
    if image.ndim == len(model.image_shape):
        image = image[None]
    mu = model.encode(image)["mu"].numpy()[0]
    if reference_images is not None:
        codes = representation_function(model)(reference_images)
        loc, scale = codes.mean(0), codes.std(0) + 1e-8
    else:
        loc, scale = np.zeros_like(mu), np.ones_like(mu)
    q = norm.ppf(np.linspace(lowest_prob, 1 - lowest_prob, num_steps))
    z = np.repeat(mu[None, None], mu.size, 0).repeat(num_steps, 1)  # (d, steps, d)
    for i in range(mu.size):
        z[i, :, i] = loc[i] + scale[i] * q
    decoded = next(iter(model.decode(z.reshape(-1, mu.size).astype(np.float32)).values()))
    return np.asarray(decoded).reshape(mu.size, num_steps, *model.image_shape)


def plot_traversals(model, images, path, *, num_steps: int = 10, reference_images=None) -> Path:
    """A PNG of latent traversals: for each image a block of rows (one per latent) by
    ``num_steps`` columns, the input at the left. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images, np.float32)
    grids = [traversal_grid(model, x, num_steps=num_steps, reference_images=reference_images)
             for x in images]  # fmt: skip
    d = grids[0].shape[0]
    rows, cols = len(images) * d, num_steps + 1
    fig, axes = plt.subplots(rows, cols, figsize=(0.7 * cols, 0.7 * rows), squeeze=False)
    for b, grid in enumerate(grids):
        for i in range(d):
            ax_row = axes[b * d + i]
            ax_row[0].imshow(np.squeeze(images[b]), cmap="gray", vmin=0, vmax=1)
            for s in range(num_steps):
                ax_row[s + 1].imshow(np.squeeze(grid[i, s]), cmap="gray", vmin=0, vmax=1)
            ax_row[0].set_ylabel(f"z{i}", rotation=0, labelpad=12, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
