"""Noise robustness ε*: the median ℓ₂ noise a classifier tolerates along random directions.

002_7240b1e8d13f6586.txt, noise-training paper Eq. 4: for every test image, a line search along
a noise direction δ finds the smallest ``‖clip(x + ηδ, 0, 1) − x‖₂`` that changes the decision;
ε* is the median over the test set, images never fooled counting as ∞ (footnote 5). Directions:

- ``gaussian``: z ~ N(0, I) (ε*_GN); this is :func:`zoo.eval.attacks.gaussian_noise`;
- ``uniform``: z ~ U(−1, 1) (ε*_UN);
- ``generator``: samples of a noise generator trained afresh against the final classifier to
  maximise its cross-entropy at a fixed ε (ε*_AN; :func:`train_adversarial_generator`, the
  authors' ``retrain_ng``: Adam, up to 1,000 iterations).

The line search is the attacks' batched one: a geometric grid of ``grid`` scales up to
``max_l2`` (before clipping; default 4·√N, beyond which clipping saturates almost every pixel),
then ``refine`` bisections (the authors: powers of 1.8, then 40 bisections).
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from zoo.eval.attacks import _direction, _line_search, _scales, _start, gaussian_noise
from zoo.eval.metrics import AttackResult, median_distance
from zoo.layers.noise import NoiseGenerator, project_to_epsilon

__all__ = [
    "DIRECTIONS",
    "noise_directions",
    "epsilon_star",
    "train_adversarial_generator",
    "noise_robustness",
]

DIRECTIONS = ("gaussian", "uniform", "generator")


def noise_directions(shape, kind: str, seed: int = 0, generator: NoiseGenerator | None = None):
    """Unit-ℓ₂ noise directions ``(n, H, W, C)``; image i's from ``default_rng([seed, i])``:
    its Gaussian or uniform noise, or the generator applied to its Gaussian z."""
    n = shape[0]
    if kind == "gaussian":
        d = np.stack(
            [np.random.default_rng([seed, i]).standard_normal(shape[1:]) for i in range(n)]
        )
    elif kind == "uniform":
        d = np.stack([np.random.default_rng([seed, i]).uniform(-1, 1, shape[1:]) for i in range(n)])
    elif kind == "generator":
        if generator is None:
            raise ValueError("generator directions need a trained NoiseGenerator (generator=...)")
        m = generator.margin
        h, w, c = shape[1:]
        z = np.stack([np.random.default_rng([seed, i]).standard_normal((h + 2 * m, w + 2 * m, c))
                      for i in range(n)]).astype(np.float32)  # fmt: skip
        d = generator.transform(tf.constant(z)).numpy()
    else:
        raise ValueError(f"unknown direction {kind!r}; choose one of {', '.join(DIRECTIONS)}")
    return _direction(np.asarray(d, np.float32), "l2")


def epsilon_star(
    model, x, y, direction: str = "gaussian", *, generator: NoiseGenerator | None = None,
    seed: int = 0, grid: int = 24, refine: int = 12, max_l2: float | None = None,
    batch_size: int | None = None,
) -> dict:  # fmt: skip
    """ε* of ``model`` on images ``x`` (n, H, W, C) in [0, 1] with labels ``y``.

    Returns ``{"epsilon_star": median (∞ if more than half are never fooled), "distances": per
    image (0: misclassified clean, ∞: never fooled), "result": the AttackResult}``.
    """
    x = np.asarray(x, np.float32)
    top = float(max_l2) if max_l2 is not None else 4.0 * float(np.sqrt(np.prod(x.shape[1:])))
    if direction == "gaussian":
        result = gaussian_noise(model, x, y, seed=seed, grid=grid, refine=refine, max_l2=top,
                                batch_size=batch_size)  # fmt: skip
    else:
        predictor, x, y, status, q0, t0 = _start(model, x, y, batch_size)
        d = noise_directions(x.shape, direction, seed, generator)
        result = _line_search(predictor, x, y, d, _scales(grid, top), refine,
                              f"{direction}_noise", "l2", status, q0, t0)  # fmt: skip
    d = result.distances("l2")
    return {"epsilon_star": median_distance(d), "distances": d, "result": result}


def train_adversarial_generator(
    model, x, y, epsilon: float, *, steps: int = 1000, learning_rate: float = 5e-4,
    kernel: str = "1x1", batch_size: int = 128, seed: int = 0,
) -> NoiseGenerator:  # fmt: skip
    """A fresh noise generator trained against the frozen ``model`` (inference mode): Adam on
    −CE of ``model(project(x, NG(z), ε))`` for ``steps`` batches of ``(x, y)``."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int32).reshape(-1)
    if x.min() < 0 or x.max() > 1:
        raise ValueError("train_adversarial_generator expects images in [0, 1]")
    generator = NoiseGenerator(int(x.shape[-1]), kernel, seed=seed)
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(generator.trainable_variables)
    spec = [tf.TensorSpec([None, *x.shape[1:]], tf.float32), tf.TensorSpec([None], tf.int32)]

    @tf.function(input_signature=spec)
    def step(images, labels):
        with tf.GradientTape() as tape:
            noisy = project_to_epsilon(images, generator(images), epsilon)
            logits = model(noisy, training=False)
            ce = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(logits, tf.float32))
            )
            loss = -ce  # inside the tape: it is recorded
        grads = tape.gradient(loss, generator.trainable_variables)
        optimizer.apply_gradients(zip(grads, generator.trainable_variables, strict=True))
        return ce

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    for k in range(steps):
        start = (k * batch_size) % len(x)
        idx = order[start : start + batch_size]
        if len(idx) < min(batch_size, len(x)):
            order = rng.permutation(len(x))
            idx = order[:batch_size]
        step(tf.constant(x[idx]), tf.constant(y[idx]))
    return generator


def noise_robustness(
    model, x, y, *, epsilon: float, generator_steps: int = 1000, generator_data=None,
    seed: int = 0, grid: int = 24, refine: int = 12, batch_size: int | None = None,
) -> dict:  # fmt: skip
    """ε*_GN, ε*_UN and ε*_AN (Table 2 of the paper) of ``model`` on ``(x, y)``.

    The generator for ε*_AN is trained for ``generator_steps`` against the model at ``epsilon``
    on ``generator_data`` (``(x, y)`` arrays; default: the evaluation images themselves).
    """
    start = time.perf_counter()
    out: dict = {}
    for kind in ("gaussian", "uniform"):
        out[kind] = epsilon_star(model, x, y, kind, seed=seed, grid=grid, refine=refine,
                                 batch_size=batch_size)["epsilon_star"]  # fmt: skip
    gx, gy = generator_data if generator_data is not None else (x, y)
    generator = train_adversarial_generator(model, gx, gy, epsilon, steps=generator_steps,
                                            seed=seed)  # fmt: skip
    out["generator"] = epsilon_star(model, x, y, "generator", generator=generator, seed=seed,
                                    grid=grid, refine=refine,
                                    batch_size=batch_size)["epsilon_star"]  # fmt: skip
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


__all__ += ["AttackResult"]
