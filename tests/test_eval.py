"""zoo.eval: attacks against models whose minimal adversarials are known in closed form, the
paper's 0 / ∞ conventions, determinism, curves, and the ABS lower bound and robustness ordering
on briefly trained models."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
import zoo.data
from zoo import eval as ze

SHAPE = (8, 8, 1)


class Linear(keras.Model):
    """Two classes; ``logit_1 − logit_0 = w·x − b``. The minimal L2 change that flips an image is
    ``|w·x − b| / ‖w‖₂`` and the minimal L∞ one ``|w·x − b| / ‖w‖₁`` (while the box [0, 1]
    does not bind)."""

    image_shape, num_classes = SHAPE, 2

    def __init__(self, w, b):
        super().__init__()
        self.w = tf.constant(w.reshape(-1), tf.float32)
        self.b = float(b)

    def call(self, x, training=False):
        f = tf.reduce_sum(tf.reshape(x, [-1, self.w.shape[0]]) * self.w, axis=-1) - self.b
        return tf.stack([-0.5 * f, 0.5 * f], axis=-1)


class PatchCount(keras.Model):
    """Class 1 when the pixels of the top-left 3×3 patch sum to more than 2.5: flipping a black
    image needs exactly 3 pixels (L0 = 3)."""

    image_shape, num_classes = SHAPE, 2

    def call(self, x, training=False):
        s = tf.reduce_sum(x[:, :3, :3, 0], axis=[1, 2]) - 2.5
        return tf.stack([-s, s], axis=-1)


class Constant(keras.Model):
    image_shape, num_classes = SHAPE, 2

    def call(self, x, training=False):
        return tf.zeros([tf.shape(x)[0], 1]) + tf.constant([[1.0, 0.0]])


def _linear_case(n=6, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=SHAPE).astype(np.float32)
    x = np.clip(0.5 + 0.05 * rng.normal(size=(n, *SHAPE)), 0, 1).astype(np.float32)
    b = float(np.mean(x.reshape(n, -1) @ w.reshape(-1))) + 0.3
    model = Linear(w, b)
    f = x.reshape(n, -1) @ w.reshape(-1) - b
    y = (f > 0).astype(np.int64)
    return model, x, y, np.abs(f), w


# -- attacks against closed-form models ---------------------------------------------------------
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_finds_the_analytic_minimal_perturbation_of_a_linear_model(norm):
    model, x, y, margin, w = _linear_case()
    exact = margin / (np.linalg.norm(w) if norm == "l2" else np.abs(w).sum())
    result = ze.pgd(model, x, y, norm=norm, steps=10, bisect_steps=12)
    d = result.distances()
    assert (result.status == 1).all()
    assert np.all(d >= exact * (1 - 1e-3)), "no perturbation can beat the analytic minimum"
    np.testing.assert_allclose(d, exact, rtol=0.03)
    assert (np.argmax(model(result.adversarials).numpy(), -1) != y).all()


def test_transfer_from_the_model_itself_follows_the_gradient_to_the_minimum():
    model, x, y, margin, w = _linear_case()
    results = ze.transfer(model, model, x, y, directions=("fgm", "fgsm"), grid=24, refine=12)
    np.testing.assert_allclose(results[0].distances("l2"), margin / np.linalg.norm(w), rtol=0.01)
    np.testing.assert_allclose(results[1].distances("linf"), margin / np.abs(w).sum(), rtol=0.01)


def test_pointwise_finds_the_minimal_l0_and_every_kept_pixel_is_needed():
    model = PatchCount()
    x = np.zeros((4, *SHAPE), np.float32)
    y = np.zeros(4, np.int64)
    result = ze.pointwise(model, x, y, seed=3)
    assert (result.status == 1).all()
    np.testing.assert_array_equal(result.distances("l0"), 3.0)
    for adv in result.adversarials:
        changed = np.argwhere(adv[..., 0] != 0)
        assert all(r < 3 and c < 3 for r, c in changed)
        for r, c in changed:  # phase 1's stopping rule: no single pixel can be reset
            probe = adv.copy()
            probe[r, c, 0] = 0.0
            assert np.argmax(model(probe[None]).numpy()) == 0
    # Phase 2 shrank magnitudes towards the boundary: the three pixels sum to just above 2.5.
    sums = result.adversarials[:, :3, :3, 0].sum(axis=(1, 2))
    assert np.all((sums > 2.5) & (sums < 2.56))


def test_attacks_are_deterministic_under_a_seed_and_independent_of_the_batch():
    model, x, y, *_ = _linear_case(n=4)
    a = ze.pointwise(model, x, y, seed=7)
    b = ze.pointwise(model, x, y, seed=7)
    np.testing.assert_array_equal(a.adversarials, b.adversarials)
    # Image i draws from its own generator: attacking it alone gives the same answer.
    alone = ze.pointwise(model, x[2:3], y[2:3], seed=7)
    assert alone.distances("l0")[0] == a.distances("l0")[2]
    noise = ze.gaussian_noise(model, x, y, seed=7)
    np.testing.assert_array_equal(
        noise.adversarials, ze.gaussian_noise(model, x, y, seed=7).adversarials
    )


def test_clean_errors_count_zero_and_failed_attacks_count_infinity():
    x = np.full((3, *SHAPE), 0.5, np.float32)
    y = np.array([0, 1, 0])  # the constant model always says 0: image 1 is already wrong
    model = Constant()
    for result in [
        ze.pgd(model, x, y, norm="l2", grow_steps=3, bisect_steps=2),
        ze.pointwise(model, x, y, sp_repetitions=1),
        ze.gaussian_noise(model, x, y),
        *ze.transfer(model, _linear_case()[0], x, y, directions=("fgm",)),
    ]:
        np.testing.assert_array_equal(result.status, [2, 0, 2])
        assert list(result.distances("l2")) == [np.inf, 0.0, np.inf], result.name
        np.testing.assert_array_equal(result.adversarials, x)  # nothing invented
    assert ze.median_distance(np.array([0.0, np.inf, np.inf])) == np.inf


def test_best_over_takes_the_per_image_minimum_and_checks_alignment():
    model, x, y, *_ = _linear_case(n=4)
    a = ze.pgd(model, x, y, norm="l2", bisect_steps=3)
    b = ze.gaussian_noise(model, x, y)
    np.testing.assert_array_equal(
        ze.best_over([a, b], "l2"), np.minimum(a.distances("l2"), b.distances("l2"))
    )
    with pytest.raises(ValueError, match="different numbers of images"):
        ze.best_over([a, ze.gaussian_noise(model, x[:2], y[:2])], "l2")


def test_bad_input_is_refused_with_the_problem_named():
    model, x, y, *_ = _linear_case(n=2)
    with pytest.raises(ValueError, match=r"shape \(n, 8, 8, 1\)"):
        ze.pgd(model, x[..., 0], y)
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ze.pgd(model, x, np.zeros(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ze.pgd(model, x * 300, y)
    with pytest.raises(ValueError, match="unknown norm"):
        ze.distances(x, x, "l3")


def test_binary_postprocessing_keeps_the_decision_and_shrinks_the_perturbation():
    cnn = zoo.load("binary_cnn_mnist")
    x, y = next(iter(zoo.data.load("digits", "test", batch_size=6, shuffle=False)))
    x, y = x.numpy(), y.numpy()
    predictor = ze.Predictor(cnn)
    labels = predictor.labels(x)
    adv = np.where(np.random.default_rng(0).random(x.shape) < 0.3, 1 - x, x).astype(np.float32)
    flipped = predictor.labels(adv) != labels
    status = np.where(flipped, 1, 2).astype(np.int8)
    tight = ze.binary_postprocess(predictor, x, labels, adv, status)
    assert flipped.any()
    assert (predictor.labels(tight[flipped]) != labels[flipped]).all()
    assert np.all(ze.distances(x, tight, "l2") <= ze.distances(x, adv, "l2") + 1e-6)
    assert np.all(ze.distances(x[flipped], tight[flipped], "l2")
                  < ze.distances(x[flipped], adv[flipped], "l2"))  # fmt: skip


# -- metrics and curves ---------------------------------------------------------------------------
def test_accuracy_at_eps_and_curves_follow_their_definition(tmp_path):
    d = {"cnn": {"l2": np.array([0.0, 0.5, 1.0, 2.0]), "l0": np.array([3.0, 12.0, np.inf, 1.0])}}
    assert ze.accuracy_at(d["cnn"]["l2"], 1.5) == 0.25
    assert ze.accuracy_at(d["cnn"]["l0"], 12) == 0.25  # a distance of exactly ε is broken
    curves = ze.robustness_curves(d, tmp_path / "curves")
    assert set(curves) == {"l2", "l0"}
    acc = np.array(curves["l2"]["accuracy"]["cnn"])
    assert acc[0] == 0.75 and acc[-1] == 0.0 and np.all(np.diff(acc) <= 0)
    assert curves["l0"]["accuracy"]["cnn"][-1] == 0.25  # the failed attack stays robust
    saved = json.loads((tmp_path / "curves.json").read_text())
    assert saved["l2"]["accuracy"]["cnn"] == list(acc)
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_lower_bound_formula_is_the_corrected_one():
    # Without the KL term it is half the gap between the fits: (d_c − r_y)/2.
    lb = ze.lower_bound_from_fits(np.array([1.0]), np.array([0.0]), np.array([[9.0, 3.0, 5.0]]),
                                  np.array([0]))  # fmt: skip
    assert lb[0] == pytest.approx(1.0)
    # With it: (d² − r² − ½‖z‖²) / (2(d + r)) = (9 − 1 − 2) / (2·4) for d = 3, r = 1, ‖z‖² = 4.
    lb = ze.lower_bound_from_fits(np.array([1.0]), np.array([4.0]), np.array([[3.0, 0.0]]),
                                  np.array([1]))  # fmt: skip
    assert lb[0] == pytest.approx(6 / 8)
    # The printed eq. 8 has d_c, not d_c², in the numerator. For d = 4, r = 1, ‖z‖² = 0 the two
    # give (16 − 1)/10 = 1.5 and (4 − 1)/10 = 0.3: the function must give the first.
    d, r = 4.0, 1.0
    printed, corrected = (d - r**2) / (2 * (d + r)), (d**2 - r**2) / (2 * (d + r))
    got = ze.lower_bound_from_fits(np.array([r]), np.array([0.0]), np.array([[d, 0.0]]),
                                   np.array([1]))[0]  # fmt: skip
    assert got == pytest.approx(corrected) and abs(got - printed) > 1.0


# -- ABS against the CNN, on briefly trained models ----------------------------------------------
@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    # Batches of 60 (6 per class) rather than ABS's 120: the same number of Adam steps at half
    # the cost, which is what the oneDNN-off path (one convolution per class) pays most for.
    balanced = zoo.data.load("digits", "train", batch_size=60, num_examples=4800, repeat=True,
                             class_balanced=True, seed=0)  # fmt: skip
    # One search over the batch: side-by-side searches trace one graph per slice count, and give
    # the same results (test_abs.py).
    abs_model = zoo.load("abs_mnist", bank_size=1000, search_steps=10, kl_anneal_epochs=3,
                         search_parallelism=1)  # fmt: skip
    abs_model.compile()
    abs_model.fit(balanced, steps_per_epoch=50, epochs=5, verbose=0,
                  callbacks=abs_model.training_callbacks())  # fmt: skip
    plain = zoo.data.load("digits", "train", batch_size=64, num_examples=4800, shuffle=True, seed=0)
    cnns = []
    # The CNN under attack trains 2 epochs; the substitute only gives directions (1 epoch).
    for filters, epochs in [((20, 70, 256, 10), 2), ((32, 32, 64, 10), 1)]:
        cnn = zoo.load("cnn_mnist", filters=filters)
        cnn.compile()
        cnn.fit(plain, epochs=epochs, verbose=0, shuffle=False)
        cnns.append(cnn)
    x, y = next(iter(zoo.data.load("digits", "test", batch_size=12, shuffle=False)))
    return abs_model, cnns[0], cnns[1], x.numpy(), y.numpy()


@pytest.fixture(scope="module")
def abs_transfer(trained):
    """The transfer attacks on ABS, which both tests below use."""
    abs_model, _, substitute, x, y = trained
    return ze.transfer(abs_model, substitute, x, y, grid=12, refine=6)


@pytest.mark.slow
def test_the_cnn_is_less_robust_than_abs_under_the_same_attacks(trained, abs_transfer):
    abs_model, cnn, substitute, x, y = trained
    assert np.mean(ze.Predictor(abs_model).labels(x) == y) >= 0.6  # trained for 15 s
    assert np.mean(ze.Predictor(cnn).labels(x) == y) >= 0.75
    pairs = [
        (ze.transfer(cnn, substitute, x, y, grid=12, refine=6), abs_transfer),
        ([ze.gaussian_noise(cnn, x, y, grid=12, refine=6)],
         [ze.gaussian_noise(abs_model, x, y, grid=12, refine=6)]),
    ]  # fmt: skip
    for on_cnn, on_abs in pairs:
        cnn_d = ze.median_distance(ze.best_over(on_cnn, "l2"))
        abs_d = ze.median_distance(ze.best_over(on_abs, "l2"))
        assert cnn_d < abs_d, (cnn_d, abs_d)


@pytest.mark.slow
def test_lower_bound_is_below_every_perturbation_any_attack_finds(trained, abs_transfer):
    abs_model, _, substitute, x, y = trained
    lb = ze.lower_bound_l2(abs_model, x, y, restarts=2)
    results = [
        *abs_transfer,
        ze.latent_descent(abs_model, x, y, check_every=4),
        ze.pgd(abs_model, x, y, norm="l2", steps=5, bisect_steps=4),
    ]
    found = ze.best_over(results, "l2")
    for r in results:  # every adversarial is one
        hit = r.status == 1
        assert (ze.Predictor(abs_model).labels(r.adversarials[hit]) != y[hit]).all(), r.name
    assert np.all(lb >= 0) and np.all(lb <= found + 1e-6), (lb, found)
    assert np.sum(lb > 0) >= len(y) // 3  # not a vacuous bound
    wrong = ze.Predictor(abs_model).labels(x) != y
    assert np.all(lb[wrong] == 0)


def test_direction_of_no_images_is_empty():
    # transfer() asks for fallback directions of the images its substitute did not fool: maybe none.
    from zoo.eval.attacks import _direction

    assert _direction(np.zeros((0, 28, 28, 1), np.float32), "l2").shape == (0, 28, 28, 1)
