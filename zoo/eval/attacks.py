"""Adversarial attacks on any zoo classifier, batched and deterministic under a seed.

The attacks of the ABS paper's evaluation (``002_7240b1e8d13f6586.txt`` §5; digest §4), as
untargeted misclassification attacks on images in [0, 1]:

- :func:`pointwise` (L0, decision-based; Foolbox 1.3's algorithm, digest §4.1), started from
  :func:`salt_and_pepper`. Its phase 2 also shrinks magnitudes, so it is scored under L2 too.
- :func:`latent_descent` (L2; ABS only; the paper's version, digest §4.2).
- :func:`pgd` (L2 or L∞): projected gradient ascent on the margin loss through
  ``tf.GradientTape``, inside a per-image search over ε (grow ×1.5, then bisect; Foolbox's BIM
  search). For ABS the gradient is Danskin's: the latent fit is held fixed and differentiated
  through the decoder only (``ABS.gradient_logits``). The paper did not attack ABS with true
  gradients (it used estimated ones), so that row is outside its protocol.
- :func:`transfer`: FGM, FGSM, L2-BIM and L∞-BIM directions computed on a substitute model,
  then a line search for the smallest scale that fools the target.
- :func:`gaussian_noise` (L2): a line search along a random direction.

Each returns an :class:`~zoo.eval.metrics.AttackResult` (images the model already misclassifies
count as 0, failures as ∞). Query-based attacks run every image's sequential algorithm in
lockstep: each round gathers one query per unfinished image into a single batched model call,
which keeps the per-image algorithm exact while using the model at batch size. Randomness comes
from ``numpy.random.default_rng([seed, i])`` for image ``i``, so results do not depend on the
batch an image was attacked in.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Generator, Sequence

import numpy as np
import tensorflow as tf

from zoo.eval.metrics import FAILED, FOUND, MISCLASSIFIED, AttackResult, distances

__all__ = [
    "Predictor",
    "salt_and_pepper",
    "pointwise",
    "pgd",
    "transfer",
    "gaussian_noise",
    "latent_descent",
    "binary_postprocess",
    "ddn",
]


# -- the model under attack -------------------------------------------------------------------
class Predictor:
    """A classifier seen by an attack: batched, compiled calls that count queries.

    ``model`` is a zoo classifier (or any Keras model / callable returning logits). A model with
    a ``gradient_logits(x)`` method (ABS) is differentiated through it instead of ``call``.
    """

    def __init__(self, model, batch_size: int | None = None):
        if isinstance(model, Predictor):
            model = model.model
        self.model = model
        self.batch_size = int(batch_size or getattr(model, "attack_batch_size", 256))
        self.queries = 0
        spec = tf.TensorSpec([None, *self.image_shape], tf.float32)
        self._logits = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])
        surrogate = getattr(model, "gradient_logits", None)
        forward = surrogate if surrogate is not None else (lambda x: model(x, training=False))

        def value_and_grad(x, y):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = forward(x)
                loss = tf.reduce_sum(margin(logits, y))  # inside the tape: it is recorded
            return logits, tape.gradient(loss, x, unconnected_gradients="zero")

        self._value_and_grad = tf.function(
            value_and_grad, input_signature=[spec, tf.TensorSpec([None], tf.int64)]
        )

    @classmethod
    def of(cls, model, batch_size: int | None = None) -> Predictor:
        """The shared Predictor of ``model`` (compiled once per model and batch size)."""
        return _predictor(model, batch_size)

    @property
    def image_shape(self) -> tuple[int, ...]:
        shape = getattr(self.model, "image_shape", None)
        if shape is None:
            raise TypeError(
                f"{type(self.model).__name__} has no image_shape; attacks need a zoo classifier "
                "(or any model with image_shape and a logits-returning call)"
            )
        return tuple(shape)

    @property
    def binarize(self) -> bool:
        return bool(getattr(self.model, "binarize", False))

    def _chunks(self, x: np.ndarray):
        for start in range(0, len(x), self.batch_size):
            yield x[start : start + self.batch_size]

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if len(x) == 0:
            return np.zeros((0, getattr(self.model, "num_classes", 0)), np.float32)
        self.queries += len(x)
        return np.concatenate([self._logits(tf.constant(c)).numpy() for c in self._chunks(x)])

    def labels(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(x), axis=-1)

    def is_adversarial(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.labels(x) != np.asarray(y)

    def value_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and the gradient of the margin loss (:func:`margin`) at ``x``."""
        x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
        self.queries += len(x)
        out = [
            self._value_and_grad(
                tf.constant(x[s : s + self.batch_size]), tf.constant(y[s : s + self.batch_size])
            )  # fmt: skip
            for s in range(0, len(x), self.batch_size)
        ]
        return (np.concatenate([o[0].numpy() for o in out]),
                np.concatenate([o[1].numpy() for o in out]))  # fmt: skip


def margin(logits, y):
    """``max_{c≠y} logit_c − logit_y``: positive exactly when the image is misclassified. Unlike
    cross-entropy its gradient does not vanish for confident models or tiny logit scales (ABS's
    logits are per-pixel losses, around 0.01)."""
    y = tf.cast(y, tf.int32)
    true = tf.gather(logits, y, batch_dims=1)
    others = tf.where(tf.one_hot(y, tf.shape(logits)[-1]) > 0, -np.inf, logits)
    return tf.reduce_max(others, axis=-1) - true


def _check_batch(predictor: Predictor, x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    shape = predictor.image_shape
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"expected images of shape (n, {', '.join(map(str, shape))}); got {x.shape}"
        )
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    if x.min(initial=0.0) < 0.0 or x.max(initial=1.0) > 1.0:
        raise ValueError("attacks expect images in [0, 1]")
    return x, y


def _result(name, norm, predictor, x, y, adv, status, start, queries0, **info) -> AttackResult:
    adv = np.where((status == FOUND)[:, None, None, None], adv, x).astype(np.float32)
    if predictor.binarize:
        adv = binary_postprocess(predictor, x, y, adv, status)
    return AttackResult(
        name=name,
        norm=norm,
        originals=x,
        adversarials=adv,
        status=status,
        queries=predictor.queries - queries0,
        seconds=time.perf_counter() - start,
        info=info,
    )


_PREDICTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _predictor(model, batch_size=None) -> Predictor:
    """The model's Predictor, kept per model and batch size: tracing ABS's latent search takes
    seconds, so attacks on the same model share the compiled functions."""
    if isinstance(model, Predictor):
        return model
    try:
        per_model = _PREDICTORS.setdefault(model, {})
    except TypeError:  # not weak-referenceable
        return Predictor(model, batch_size)
    if batch_size not in per_model:
        per_model[batch_size] = Predictor(model, batch_size)
    return per_model[batch_size]


def _start(model, x, y, batch_size=None):
    predictor = _predictor(model, batch_size)
    x, y = _check_batch(predictor, x, y)
    queries0 = predictor.queries
    clean_wrong = predictor.is_adversarial(x, y)
    status = np.where(clean_wrong, MISCLASSIFIED, FAILED).astype(np.int8)
    return predictor, x, y, status, queries0, time.perf_counter()


def binary_postprocess(predictor, x, y, adv, status) -> np.ndarray:
    """For a model that binarizes its input at 0.5: move every adversarial pixel back to its
    clean value where that leaves the binarized pixel unchanged, and otherwise to just across the
    threshold (0.5, or the largest float below it). The model sees the same binary image, so the
    decision holds, at a smaller perturbation (the paper's post-processing). Kept only where the
    model confirms it."""
    predictor = _predictor(predictor)
    found = status == FOUND
    if not found.any():
        return adv
    below = np.nextafter(np.float32(0.5), np.float32(0.0))
    same = (x >= 0.5) == (adv >= 0.5)
    tight = np.where(same, x, np.where(adv >= 0.5, np.float32(0.5), below)).astype(np.float32)
    keep = np.zeros(len(x), bool)
    keep[found] = predictor.is_adversarial(tight[found], y[found])
    return np.where(keep[:, None, None, None], tight, adv)


# -- lockstep driver for sequential, query-based attacks --------------------------------------
Search = Generator[np.ndarray, bool, np.ndarray]


def _lockstep(
    predictor: Predictor,
    y: np.ndarray,
    searches: dict[int, tuple[Search, dict]],
    budget: int | None,
) -> dict[int, np.ndarray | None]:
    """Run per-image searches together. Each search yields a candidate image, receives whether
    it is adversarial, and returns its final adversarial (or None). It keeps its best so far in
    its state dict (``state["best"]``): a search that reaches ``budget`` queries is closed and
    that is its result."""
    pending, done, used = {}, {}, dict.fromkeys(searches, 0)
    for i, (search, _) in searches.items():
        try:
            pending[i] = next(search)
        except StopIteration as stop:
            done[i] = stop.value
    while pending:
        ids = list(pending)
        verdicts = predictor.is_adversarial(np.stack([pending[i] for i in ids]), y[ids])
        for i, verdict in zip(ids, verdicts, strict=True):
            search, state = searches[i]
            used[i] += 1
            if budget is not None and used[i] >= budget:
                search.close()
                done[i] = state.get("best")
                del pending[i]
                continue
            try:
                pending[i] = search.send(bool(verdict))
            except StopIteration as stop:
                done[i] = stop.value
                del pending[i]
    return done


def _salt_and_pepper_search(x0, rng, steps, repetitions, norm, state) -> Search:
    """Foolbox 1.3's SaltAndPepperNoiseAttack for one image (digest §4.1)."""
    best_d, max_p = np.inf, 1.0
    for _ in range(repetitions):
        for p in np.linspace(0.0, max_p, steps + 1)[1:]:
            u = rng.random(x0.shape[:-1] + (1,))
            candidate = np.where(u < p / 2, 0.0, x0)
            candidate = np.where(u >= 1 - p / 2, 1.0, candidate).astype(np.float32)
            d = distances(x0[None], candidate[None], norm)[0]
            if d >= best_d:
                continue  # cannot improve: no query
            if (yield candidate):
                state["best"], best_d, max_p = candidate, d, min(1.0, 1.2 * p)
                break
    return state.get("best")


def _pointwise_search(x0, rng, sp_steps, sp_repetitions, search_steps, max_passes, state) -> Search:
    """Foolbox 1.3's PointwiseAttack for one image (digest §4.1), on flattened pixels."""
    start = yield from _salt_and_pepper_search(x0, rng, sp_steps, sp_repetitions, "l0", state)
    if start is None:
        return None
    shape, orig = x0.shape, x0.reshape(-1)
    adv = start.reshape(-1).copy()
    # Phase 1: reset pixels to their original value while the image stays adversarial,
    # restarting with a fresh shuffle after every success.
    while True:
        for i in rng.permutation(adv.size):
            if adv[i] == orig[i]:
                continue
            candidate = adv.copy()
            candidate[i] = orig[i]
            if (yield candidate.reshape(shape)):
                adv = candidate
                state["best"] = adv.reshape(shape).copy()
                break
        else:
            break
    # Phase 2: for each perturbed pixel, bisect between its adversarial and original value.
    for _ in range(max_passes):
        improved = False
        for i in rng.permutation(adv.size):
            if adv[i] == orig[i]:
                continue
            candidate = adv.copy()
            candidate[i] = orig[i]
            if (yield candidate.reshape(shape)):
                adv, improved = candidate, True
                state["best"] = adv.reshape(shape).copy()
                continue
            lo, hi = float(orig[i]), float(adv[i])  # lo: not adversarial; hi: adversarial
            for _ in range(search_steps):
                candidate[i] = np.float32(0.5 * (lo + hi))
                if (yield candidate.reshape(shape)):
                    hi = float(candidate[i])
                else:
                    lo = float(candidate[i])
            # An improvement must beat the search's resolution, or passes never end.
            if abs(hi - orig[i]) < abs(adv[i] - orig[i]) - 1e-3:
                adv[i], improved = np.float32(hi), True
                state["best"] = adv.reshape(shape).copy()
        if not improved:
            break
    return adv.reshape(shape)


def salt_and_pepper(
    model, x, y, *, seed: int = 0, steps: int = 100, repetitions: int = 10,
    budget: int | None = None, batch_size: int | None = None,
) -> AttackResult:  # fmt: skip
    """Salt-and-pepper noise of growing density (L0); the smallest adversarial of
    ``repetitions`` runs. Foolbox 1.3's ``SaltAndPepperNoiseAttack(epsilons=100, repetitions=10)``."""
    predictor, x, y, status, q0, t0 = _start(model, x, y, batch_size)
    todo = np.flatnonzero(status == FAILED)
    searches = {}
    for i in (int(i) for i in todo):
        state = {}
        rng = np.random.default_rng([seed, i])
        searches[i] = (_salt_and_pepper_search(x[i], rng, steps, repetitions, "l0", state), state)
    found = _lockstep(predictor, y, searches, budget)
    adv = x.copy()
    for i, a in found.items():
        if a is not None:
            adv[i], status[i] = a, FOUND
    return _result("salt_and_pepper", "l0", predictor, x, y, adv, status, t0, q0)


def pointwise(
    model, x, y, *, seed: int = 0, repetitions: int = 1, sp_steps: int = 100,
    sp_repetitions: int = 10, search_steps: int = 10, max_passes: int = 10,
    budget: int | None = None, batch_size: int | None = None,
) -> AttackResult:  # fmt: skip
    """The Pointwise Attack (L0; Schott et al. §5, Foolbox 1.3). Decision-based: it needs only
    the model's labels.

    From a salt-and-pepper start, phase 1 resets pixels to their clean values while the image
    stays adversarial (a new shuffle after every success) until a full pass resets none; phase 2
    bisects each remaining pixel's value towards the clean one (``search_steps`` steps) until a
    pass improves nothing (at most ``max_passes``). ``repetitions`` independent runs (the paper's
    "Pointwise Attack 10x" is 10) keep the smallest L0 per image, then the smallest L2.
    ``budget`` caps the queries of one run per image; the run then keeps what it has.

    It costs about 1,000–2,500 sequential queries per image and run; images run in lockstep.
    """
    predictor, x, y, status, q0, t0 = _start(model, x, y, batch_size)
    adv = x.copy()
    best_l0 = np.full(len(x), np.inf)
    best_l2 = np.full(len(x), np.inf)
    todo = np.flatnonzero(status == FAILED)
    for r in range(repetitions):
        searches = {}
        for i in (int(i) for i in todo):
            state = {}
            rng = np.random.default_rng([seed, r, i])
            search = _pointwise_search(x[i], rng, sp_steps, sp_repetitions, search_steps,
                                       max_passes, state)  # fmt: skip
            searches[i] = (search, state)
        found = _lockstep(predictor, y, searches, budget)
        for i, a in found.items():
            if a is None:
                continue
            l0 = distances(x[i][None], a[None], "l0")[0]
            l2 = distances(x[i][None], a[None], "l2")[0]
            if (l0, l2) < (best_l0[i], best_l2[i]):
                adv[i], best_l0[i], best_l2[i], status[i] = a, l0, l2, FOUND
    return _result("pointwise", "l0", predictor, x, y, adv, status, t0, q0,
                   repetitions=repetitions)  # fmt: skip


# -- gradient attacks ---------------------------------------------------------------------------
def _project(delta: np.ndarray, eps: np.ndarray, norm: str) -> np.ndarray:
    if norm == "linf":
        return np.clip(delta, -eps[:, None, None, None], eps[:, None, None, None])
    n = np.sqrt(np.sum(delta.reshape(len(delta), -1) ** 2, axis=1))
    scale = np.minimum(1.0, eps / np.maximum(n, 1e-12))
    return delta * scale[:, None, None, None]


def _direction(g: np.ndarray, norm: str) -> np.ndarray:
    if norm == "linf":
        return np.sign(g)
    n = np.sqrt(np.sum(g.reshape(len(g), int(np.prod(g.shape[1:]))) ** 2, axis=1))
    return g / np.maximum(n, 1e-12)[:, None, None, None]


def _pgd_at(predictor, x, y, eps, norm, steps, step_ratio, rng_start):
    """PGD at a per-image ε; returns the closest adversarial iterate and whether one was found."""
    x_adv = x.copy()
    if rng_start is not None:
        noise = rng_start(x.shape)
        x_adv = np.clip(x + _project(noise * eps[:, None, None, None], eps, norm), 0, 1)
    best = x.copy()
    best_d = np.full(len(x), np.inf)
    for step in range(steps + 1):
        if step < steps:
            logits, g = predictor.value_and_grad(x_adv, y)
        else:
            logits = predictor.logits(x_adv)
        hit = np.argmax(logits, axis=-1) != y
        d = distances(x, x_adv, norm)
        better = hit & (d < best_d)
        best[better], best_d[better] = x_adv[better], d[better]
        if step < steps:
            alpha = (step_ratio * eps)[:, None, None, None]
            delta = x_adv + alpha * _direction(g, norm) - x
            x_adv = np.clip(x + _project(delta, eps, norm), 0.0, 1.0).astype(np.float32)
    return best, np.isfinite(best_d)


def pgd(
    model, x, y, *, norm: str = "l2", steps: int = 10, step_ratio: float = 0.25,
    epsilon: float | None = None, grow: float = 1.5, grow_steps: int = 20,
    bisect_steps: int = 10, random_start: bool = False, seed: int = 0,
    batch_size: int | None = None,
) -> AttackResult:  # fmt: skip
    """Projected gradient ascent of the margin loss (BIM / PGD), L2 or L∞, with a per-image
    search for the smallest ε: starting at ``epsilon`` (L2 1.0, L∞ 0.1), ε grows ×``grow`` until
    PGD succeeds (at most ``grow_steps`` times), then ``bisect_steps`` bisections. Each PGD run
    takes ``steps`` steps of ``step_ratio·ε``. The result is the closest adversarial iterate seen.
    """
    if norm not in ("l2", "linf"):
        raise ValueError(f"pgd supports norm 'l2' or 'linf', got {norm!r}")
    predictor, x, y, status, q0, t0 = _start(model, x, y, batch_size)
    eps0 = epsilon if epsilon is not None else (1.0 if norm == "l2" else 0.1)
    rng = np.random.default_rng(seed)
    sampler = (lambda shape: rng.uniform(-1, 1, shape).astype(np.float32)) if random_start else None
    adv = x.copy()
    best_d = np.full(len(x), np.inf)
    todo = status == FAILED
    lo = np.zeros(len(x))
    hi = np.full(len(x), np.inf)
    eps = np.full(len(x), eps0)

    def run(mask):
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return np.zeros(0, bool), idx
        found, ok = _pgd_at(predictor, x[idx], y[idx], eps[idx], norm, steps, step_ratio, sampler)
        d = distances(x[idx], found, norm)
        better = ok & (d < best_d[idx])
        adv[idx[better]], best_d[idx[better]] = found[better], d[better]
        return ok, idx

    searching = todo.copy()
    for _ in range(grow_steps + 1):
        ok, idx = run(searching)
        hi[idx[ok]] = eps[idx[ok]]
        lo[idx[~ok]] = eps[idx[~ok]]
        searching[idx[ok]] = False
        eps[searching] *= grow
        if not searching.any():
            break
    solved = np.isfinite(hi)
    for _ in range(bisect_steps):
        eps[solved] = 0.5 * (lo[solved] + hi[solved])
        ok, idx = run(solved)
        hi[idx[ok]] = eps[idx[ok]]
        lo[idx[~ok]] = eps[idx[~ok]]
    status[todo & np.isfinite(best_d)] = FOUND
    return _result(f"pgd_{norm}", norm, predictor, x, y, adv, status, t0, q0, steps=steps)


# -- line searches: transfer and noise ----------------------------------------------------------
def _line_search(predictor, x, y, direction, scales, refine, name, norm, status, q0, t0, **info):
    """Smallest scale ``s`` on the grid ``scales`` (then ``refine`` bisections) such that
    ``clip(x + s·direction)`` is adversarial; the whole grid is one batched call."""
    todo = np.flatnonzero(status == FAILED)
    adv = x.copy()
    if todo.size:
        xs, ds, ys = x[todo], direction[todo], y[todo]
        g = len(scales)
        grid = np.clip(xs[:, None] + scales[None, :, None, None, None] * ds[:, None], 0, 1)
        hits = predictor.is_adversarial(
            grid.reshape(-1, *x.shape[1:]).astype(np.float32), np.repeat(ys, g)
        ).reshape(len(todo), g)
        first = np.where(hits.any(axis=1), hits.argmax(axis=1), -1)
        ok = first >= 0
        hi = np.where(ok, scales[np.maximum(first, 0)], np.inf)
        lo = np.where(first > 0, scales[np.maximum(first - 1, 0)], 0.0)
        for _ in range(refine):
            sub = np.flatnonzero(ok)
            if sub.size == 0:
                break
            mid = 0.5 * (lo[sub] + hi[sub])
            cand = np.clip(xs[sub] + mid[:, None, None, None] * ds[sub], 0, 1).astype(np.float32)
            hit = predictor.is_adversarial(cand, ys[sub])
            hi[sub[hit]], lo[sub[~hit]] = mid[hit], mid[~hit]
        final = np.clip(xs + np.where(ok, hi, 0)[:, None, None, None] * ds, 0, 1)
        adv[todo[ok]] = final[ok]
        status[todo[ok]] = FOUND
    return _result(name, norm, predictor, x, y, adv, status, t0, q0, **info)


def _scales(n: int, top: float) -> np.ndarray:
    return np.concatenate([[0.0], np.geomspace(top / 300.0, top, n - 1)]).astype(np.float32)


def transfer(
    model, substitute, x, y, *, directions: Sequence[str] = ("fgm", "fgsm", "l2_bim", "linf_bim"),
    grid: int = 24, refine: int = 8, bim_steps: int = 10, batch_size: int | None = None,
) -> list[AttackResult]:  # fmt: skip
    """Transfer attacks (digest §4.3): perturbation directions from ``substitute`` (a model with
    gradients, e.g. a CNN trained on the same data), then for the target a line search for the
    smallest scale that fools it. Directions: ``fgm`` (the L2-normalised gradient), ``fgsm`` (its
    sign), ``l2_bim`` / ``linf_bim`` (the substitute's own minimal PGD adversarial). One result
    per direction; score them together with :func:`~zoo.eval.metrics.best_over`."""
    sub = _predictor(substitute)
    predictor, x, y, status0, _, _ = _start(model, x, y, batch_size)
    _, g = sub.value_and_grad(x, y)
    out = []
    for name in directions:
        if name == "fgm":
            d, norm = _direction(g, "l2"), "l2"
        elif name == "fgsm":
            d, norm = np.sign(g), "linf"
        elif name in ("l2_bim", "linf_bim"):
            norm = name.split("_")[0]
            found = pgd(sub, x, y, norm=norm, steps=bim_steps, bisect_steps=6)
            d = found.adversarials - x
            fallback = np.all(d.reshape(len(x), -1) == 0, axis=1)  # substitute not fooled
            # (an empty selection is fine: _direction handles zero images)
            d[fallback] = _direction(g[fallback], norm)
        else:
            raise ValueError(f"unknown transfer direction {name!r}")
        # Scale every direction to a largest pixel change of 1: scales in [0, 1] then span
        # everything from no change to the full [0, 1] range along it.
        peak = np.max(np.abs(d.reshape(len(d), -1)), axis=1)
        d = (d / np.maximum(peak, 1e-12)[:, None, None, None]).astype(np.float32)
        out.append(
            _line_search(
                predictor,
                x,
                y,
                d,
                _scales(grid, 1.0),
                refine,
                f"transfer_{name}",
                norm,
                status0.copy(),
                predictor.queries,
                time.perf_counter(),
            )  # fmt: skip
        )
    return out


def gaussian_noise(
    model, x, y, *, seed: int = 0, grid: int = 24, refine: int = 8, max_l2: float = 30.0,
    batch_size: int | None = None,
) -> AttackResult:  # fmt: skip
    """Additive Gaussian noise (L2): a line search along one seeded random direction per image,
    up to an L2 norm of ``max_l2`` before clipping."""
    predictor, x, y, status, q0, t0 = _start(model, x, y, batch_size)
    noise = np.stack(
        [np.random.default_rng([seed, i]).standard_normal(x.shape[1:]) for i in range(len(x))]
    )
    noise = _direction(noise.astype(np.float32), "l2")
    return _line_search(predictor, x, y, noise, _scales(grid, max_l2), refine, "gaussian_noise",
                        "l2", status, q0, t0)  # fmt: skip


# -- Latent Descent (ABS) -------------------------------------------------------------------------
def latent_descent(
    model, x, y, *, step: float = 0.01, max_steps: int = 300, check_every: int = 1,
    search_steps: int = 10, batch_size: int | None = None,
) -> AttackResult:  # fmt: skip
    """The Latent Descent attack on ABS (paper §5; digest §4.2), L2.

    Repeatedly: the encoders give each class's reconstruction of the current image ``x_t``
    (``model.amortized``); the best class other than the true one, by its amortized ELBO, gives
    ``x̃``; ``x_t ← (1 − step)·x_t + step·x̃``; until ABS misclassifies ``x_t`` (checked every
    ``check_every`` updates; the paper checks every one). Then ``search_steps`` bisections inside
    the last interval, and ``search_steps`` more along the line from ``x`` to the adversarial.
    """
    if not hasattr(model, "amortized"):
        raise TypeError("latent_descent needs an ABS model (it uses the class encoders)")
    predictor, x, y, status, q0, t0 = _start(model, x, y, batch_size)
    amortized_fn = tf.function(model.amortized, reduce_retracing=True)
    active = np.flatnonzero(status == FAILED)
    x_t, prev = x.copy(), x.copy()
    adv = x.copy()
    for k in range(1, max_steps + 1):
        if active.size == 0:
            break
        amortized = amortized_fn(tf.constant(x_t[active]))
        scores = amortized["losses"].numpy()
        scores[np.arange(active.size), y[active]] = np.inf
        target = np.argmin(scores, axis=1)
        rec = amortized["reconstructions"].numpy()[np.arange(active.size), target]
        x_t[active] = ((1.0 - step) * x_t[active] + step * rec).astype(np.float32)
        if k % check_every and k != max_steps:
            continue
        hit = predictor.is_adversarial(x_t[active], y[active])
        done = active[hit]
        # Bisect between the last checked clean point and the first adversarial one.
        lo, hi = prev[done].copy(), x_t[done].copy()
        for _ in range(search_steps):
            mid = (0.5 * (lo + hi)).astype(np.float32)
            h = predictor.is_adversarial(mid, y[done])
            hi[h], lo[~h] = mid[h], mid[~h]
        adv[done], status[done] = hi, FOUND
        prev[active[~hit]] = x_t[active[~hit]]
        active = active[~hit]
    found = np.flatnonzero(status == FOUND)
    if found.size:  # shrink along the line from the clean image
        lo, hi = np.zeros(found.size), np.ones(found.size)
        delta = adv[found] - x[found]
        for _ in range(search_steps):
            mid = 0.5 * (lo + hi)
            cand = (x[found] + mid[:, None, None, None] * delta).astype(np.float32)
            h = predictor.is_adversarial(cand, y[found])
            hi[h], lo[~h] = mid[h], mid[~h]
        adv[found] = x[found] + hi[:, None, None, None] * delta
    return _result("latent_descent", "l2", predictor, x, y, adv, status, t0, q0)


# -- DDN (L2) ---------------------------------------------------------------------------------------
_CE_GRADIENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _ce_value_and_grad(model, image_shape):
    """``(logits, ∇_x Σ CE(model(x), y))``, compiled once per model."""
    fn = _CE_GRADIENTS.get(model)
    if fn is None:
        spec = [tf.TensorSpec([None, *image_shape], tf.float32), tf.TensorSpec([None], tf.int64)]

        @tf.function(input_signature=spec)
        def fn(x, y):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = model(x, training=False)
                loss = tf.reduce_sum(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.cast(logits, tf.float32))
                )
            return logits, tape.gradient(loss, x, unconnected_gradients="zero")

        try:
            _CE_GRADIENTS[model] = fn
        except TypeError:
            pass
    return fn


def ddn(
    model, x, y, *, steps: int = 100, gamma: float = 0.05, init_norm: float = 1.0,
    alpha: float = 1.0, alpha_min: float = 0.01, max_norm: float | None = None, seed: int = 0,
    batch_size: int | None = None,
) -> AttackResult:  # fmt: skip
    """Decoupled Direction and Norm (Rony et al., CVPR 2019), L2; the attack of the noise-training
    paper's adversarial tables (Tables 4 and 7; digest c.3).

    Each step moves δ by ``α_k`` along the normalised cross-entropy gradient (α cosine-annealed
    from ``alpha`` to ``alpha_min``), then rescales it to the norm ε_k, which shrinks by ×(1 − γ)
    while the current image is adversarial and grows by ×(1 + γ) while it is not (at most
    ``max_norm``, or the largest norm the image allows), then clips ``x + δ`` to [0, 1]. The
    result is the smallest adversarial iterate; a zero gradient gets a random direction.
    """
    predictor, x, y, status, q0, t0 = _start(model, x, y, batch_size)
    value_and_grad = _ce_value_and_grad(predictor.model, predictor.image_shape)
    rng = np.random.default_rng(seed)
    n = len(x)
    flat = (n, -1)
    delta = np.zeros_like(x)
    norm = np.full(n, float(init_norm))
    worst = np.sqrt(np.sum(np.maximum(x, 1 - x).reshape(flat) ** 2, axis=1))
    if max_norm is not None:
        worst = np.minimum(worst, float(max_norm))
    best = x.copy()
    best_l2 = np.full(n, np.inf)
    todo = status == FAILED
    for k in range(steps):
        step = alpha_min + (alpha - alpha_min) * (1 + math.cos(math.pi * k / steps)) / 2
        adv = (x + delta).astype(np.float32)
        logits, g = [], []
        for s in range(0, n, predictor.batch_size):
            lo, gr = value_and_grad(tf.constant(adv[s : s + predictor.batch_size]),
                                    tf.constant(y[s : s + predictor.batch_size]))  # fmt: skip
            logits.append(lo.numpy())
            g.append(gr.numpy())
        predictor.queries += n
        logits, g = np.concatenate(logits), np.concatenate(g)
        is_adv = np.argmax(logits, axis=-1) != y
        l2 = np.sqrt(np.sum(delta.reshape(flat) ** 2, axis=1))
        better = todo & is_adv & (l2 < best_l2)
        best[better], best_l2[better] = adv[better], l2[better]
        g_norm = np.sqrt(np.sum(g.reshape(flat) ** 2, axis=1))
        zero = g_norm == 0
        if zero.any():
            g[zero] = rng.standard_normal(g[zero].shape).astype(np.float32)
            g_norm[zero] = np.sqrt(np.sum(g[zero].reshape(int(zero.sum()), -1) ** 2, axis=1))
        delta = delta + step * g / g_norm[:, None, None, None]
        norm = np.minimum(norm * np.where(is_adv, 1 - gamma, 1 + gamma), worst)
        d_norm = np.sqrt(np.sum(delta.reshape(flat) ** 2, axis=1))
        delta = delta * (norm / np.maximum(d_norm, 1e-12))[:, None, None, None]
        delta = (np.clip(x + delta, 0.0, 1.0) - x).astype(np.float32)
    final = (x + delta).astype(np.float32)
    hit = predictor.is_adversarial(final, y)
    l2 = np.sqrt(np.sum(delta.reshape(flat) ** 2, axis=1))
    better = todo & hit & (l2 < best_l2)
    best[better], best_l2[better] = final[better], l2[better]
    status[todo & np.isfinite(best_l2)] = FOUND
    return _result("ddn", "l2", predictor, x, y, best, status, t0, q0, steps=steps, gamma=gamma)
