"""zoo.data.digits: the procedural digit set is well-formed, seeded, split-disjoint, and learnable.

The fast tests render a few thousand images (well under a second each); the ``slow`` test trains
the ABS vanilla CNN and a linear model and checks the CNN wins clearly.
"""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.digits import SPLIT_SIZES, digits_arrays, render_digits


def _labels(n, seed=123):
    return np.random.default_rng(seed).integers(0, 10, size=n)


def test_split_sizes_default():
    assert SPLIT_SIZES == {"train": 60000, "test": 10000}


def test_shapes_dtypes_and_range():
    x, y = digits_arrays("train", 500)
    assert x.shape == (500, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (500,) and y.dtype == np.int64
    assert np.isfinite(x).all()
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert set(np.unique(y)) <= set(range(10))
    # Not a binary image: antialiased edges and noise give intermediate values.
    assert ((x > 0.05) & (x < 0.95)).mean() > 0.02


def test_arrays_are_read_only_and_memoised():
    x, y = digits_arrays("test", 300, seed=5)
    assert not x.flags.writeable and not y.flags.writeable
    with pytest.raises(ValueError):
        x[0, 0, 0, 0] = 1.0
    x2, y2 = digits_arrays("test", 300, seed=5)
    assert x2 is x and y2 is y


def test_same_seed_is_bit_identical():
    labels = _labels(257)
    a = render_digits(labels, seed=11)
    b = render_digits(labels, seed=11)
    assert a.dtype == np.float32 and a.shape == (257, 28, 28, 1)
    assert a.tobytes() == b.tobytes()


def test_different_seed_gives_different_images():
    labels = _labels(200)
    a = render_digits(labels, seed=0)
    b = render_digits(labels, seed=1)
    assert not np.array_equal(a, b)
    # Different per image, not just a few pixels: every image differs clearly.
    per_image = np.abs(a - b).reshape(len(labels), -1).mean(axis=1)
    assert per_image.min() > 0.01
    xa, ya = digits_arrays("train", 400, seed=0)
    xb, yb = digits_arrays("train", 400, seed=1)
    assert not np.array_equal(ya, yb) and not np.array_equal(xa, xb)


def test_train_and_test_share_no_image():
    x_train, _ = digits_arrays("train", 3000)
    x_test, _ = digits_arrays("test", 2000)
    train_keys = {img.tobytes() for img in x_train}
    assert len(train_keys) == len(x_train)  # no duplicates within the split either
    assert not train_keys & {img.tobytes() for img in x_test}


def test_labels_cover_all_classes_and_are_balanced():
    _, y = digits_arrays("train", 3000)
    counts = np.bincount(y, minlength=10)
    assert len(counts) == 10
    assert counts.min() >= 270 and counts.max() <= 330, counts
    # Shuffled, not sorted or cyclic.
    assert (np.diff(y) != 0).mean() > 0.8
    assert not np.array_equal(y[:10], np.arange(10))
    _, y_odd = digits_arrays("test", 777)
    assert np.bincount(y_odd, minlength=10).min() >= 50


def test_smaller_request_is_a_prefix_of_a_larger_one():
    x_big, y_big = digits_arrays("train", 2345, seed=3)
    for n in (1, 999, 1000, 1001, 1500):
        x, y = digits_arrays("train", n, seed=3)
        assert np.array_equal(y, y_big[:n])
        assert x.tobytes() == x_big[:n].tobytes(), n


def test_render_digits_prefix_and_label_dependence():
    labels = _labels(1300)
    full = render_digits(labels, seed=9)
    assert render_digits(labels[:37], seed=9).tobytes() == full[:37].tobytes()
    assert render_digits(labels[:1100], seed=9).tobytes() == full[:1100].tobytes()
    # Changing one label changes that image only.
    other = labels.copy()
    other[5] = (other[5] + 1) % 10
    changed = render_digits(other, seed=9)
    differs = [not np.array_equal(changed[i], full[i]) for i in range(len(labels))]
    assert differs[5] and sum(differs) == 1


def test_unknown_split_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"validation.*\['test', 'train'\]"):
        digits_arrays("validation")


@pytest.mark.parametrize("n", [0, -5])
def test_non_positive_num_examples_raise(n):
    with pytest.raises(ValueError, match="num_examples"):
        digits_arrays("train", n)


def test_render_digits_rejects_bad_labels():
    with pytest.raises(ValueError, match="0..9"):
        render_digits(np.array([0, 10]), seed=0)
    with pytest.raises(ValueError, match="0..9"):
        render_digits(np.array([-1]), seed=0)
    with pytest.raises(ValueError, match="1-D"):
        render_digits(np.zeros((2, 2), dtype=int), seed=0)
    with pytest.raises(ValueError, match="integers"):
        render_digits(np.array([1.5]), seed=0)
    with pytest.raises(ValueError, match="seed"):
        render_digits(np.array([1]), seed=-1)
    assert render_digits(np.zeros(0, dtype=int), seed=0).shape == (0, 28, 28, 1)


def test_every_image_has_a_plausible_amount_of_ink():
    x, y = digits_arrays("test", 2000)
    flat = x.reshape(len(x), -1)
    ink = (flat > 0.5).mean(axis=1)
    # MNIST: ~19% of pixels > 0.5 on average, ~3-45% per image.
    assert ink.min() > 0.01, ink.argmin()
    assert ink.max() < 0.5, ink.argmax()
    assert 0.06 < ink.mean() < 0.3
    assert (flat.max(axis=1) > 0.6).all()
    # The ink stays inside the frame: the outermost ring is (nearly) background.
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    assert (border > 0.5).mean() < 0.005
    # A "1" has clearly less ink than an "8" on average.
    assert ink[y == 1].mean() < 0.8 * ink[y == 8].mean()


def test_classes_are_separable_but_not_trivially():
    """Nearest class mean on raw pixels: far above chance (10%), far below a CNN.

    Affine variation and several writing styles per class are what make a template
    matcher struggle; this pins the difficulty into a band."""
    x, y = digits_arrays("train", 2000)
    xt, yt = digits_arrays("test", 500)
    x, xt = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    means = np.stack([x[y == c].mean(axis=0) for c in range(10)])
    dist = ((xt[:, None, :] - means[None]) ** 2).sum(-1)
    acc = (dist.argmin(axis=1) == yt).mean()
    assert 0.4 < acc < 0.85, acc


@pytest.mark.slow
def test_cnn_learns_digits_and_beats_a_linear_model():
    """The zoo's cnn_mnist (the ABS vanilla CNN) gets >= 95% after 2 epochs on 10k images; the
    zoo's linear classifier on raw pixels stays clearly below."""
    import zoo

    x, y = digits_arrays("train", 10000)
    xt, yt = digits_arrays("test", 2000)

    def fit_eval(name, epochs):
        model = zoo.load(name)
        model.compile()
        model.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
        return model.evaluate(xt, yt, batch_size=500, verbose=0, return_dict=True)["accuracy"]

    cnn = fit_eval("cnn_mnist", 2)
    linear = fit_eval("linear_mnist", 10)
    assert cnn >= 0.95, cnn
    assert cnn - linear >= 0.08, (cnn, linear)
