"""Invertible blocks (zoo.layers.invertible): round trips, log-determinants against autodiff
Jacobians, and reversible backprop against standard backprop."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.layers.invertible import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    DCTReadout,
    HaarDownsampling,
    InjectivePad,
    Invertible1x1Conv,
    InvertibleDownsampling,
    InvertibleSequential,
    IRevNetBlock,
    conv_network,
    dense_network,
)


@pytest.fixture
def float64():
    policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy(policy)


def _perturb(layer, scale=0.3, seed=0):
    """Random weights everywhere (zero-initialised last layers would make couplings identities)."""
    rng = np.random.default_rng(seed)
    for v in layer.trainable_variables:
        v.assign(v.numpy() + scale * rng.standard_normal(v.shape))


BLOCKS = {
    "psi": lambda: InvertibleDownsampling(2),
    "haar": lambda: HaarDownsampling(),
    "pad": lambda: InjectivePad(3),
    "dct": lambda: DCTReadout(),
    "actnorm": lambda: ActNorm(),
    "conv1x1": lambda: Invertible1x1Conv(seed=3),
    "additive": lambda: AdditiveCoupling(conv_network(8, 2), swap=True),
    "affine_atan": lambda: AffineCoupling(conv_network(8, 4), scale="atan", clamp=1.0),
    "affine_sigmoid": lambda: AffineCoupling(conv_network(8, 4), scale="sigmoid"),
    "irevnet": lambda: IRevNetBlock(8, stride=2),
    "irevnet_affine": lambda: IRevNetBlock(2, stride=1, first=True, coupling="affine", mult=1),
}


def _run_block(make, dtype, training):
    keras.utils.set_random_seed(1)
    layer = make()
    x = tf.constant(np.random.default_rng(0).standard_normal((3, 4, 4, 4)), dtype)
    layer(x, training=True)  # builds; data-dependent init for ActNorm
    _perturb(layer)
    y, log_det = layer.forward_and_log_det(x, training=training)
    return layer, x, y, log_det


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_round_trip_float32(name):
    layer, x, y, _ = _run_block(BLOCKS[name], tf.float32, training=False)
    err = float(tf.reduce_max(tf.abs(layer.inverse(y) - x)))
    assert err < 1e-5, err
    # Training-mode forward and inverse on the same batch are consistent too.
    y_t = layer(x, training=True)
    err_t = float(tf.reduce_max(tf.abs(layer.inverse(y_t, training=True) - x)))
    assert err_t < 1e-5, err_t


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_round_trip_float64(name, float64):
    layer, x, y, _ = _run_block(BLOCKS[name], tf.float64, training=False)
    assert y.dtype == tf.float64
    err = float(tf.reduce_max(tf.abs(layer.inverse(y) - x)))
    assert err < 1e-12, err


@pytest.mark.parametrize(
    "name",
    [
        "actnorm",
        "conv1x1",
        "affine_atan",
        "affine_sigmoid",
        "irevnet_affine",
        "additive",
        "dct",
        "haar",
        "psi",
    ],
)
def test_log_det_matches_autodiff_jacobian(name, float64):
    layer, x, _, log_det = _run_block(BLOCKS[name], tf.float64, training=False)
    x = x[:2, :2, :2]  # 2 examples of 2×2×4 = 16 dims
    if name in ("irevnet_affine", "haar", "psi"):
        x = tf.constant(np.random.default_rng(5).standard_normal((2, 2, 2, 4)))
    expected = []
    for i in range(2):
        xi = x[i : i + 1]
        with tf.GradientTape() as tape:
            tape.watch(xi)
            yi = layer(xi)
        jac = tape.jacobian(yi, xi)
        n = int(np.prod(xi.shape))
        expected.append(np.linalg.slogdet(tf.reshape(jac, (n, n)).numpy())[1])
    got = layer.log_det_jacobian(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-9)
    if layer.volume_preserving:
        np.testing.assert_allclose(got, 0.0, atol=1e-12)
    else:
        assert np.all(np.abs(got) > 1e-3)  # the check is not vacuous


def test_psi_is_irevnet_ordering():
    # psi: output channel (dy·2 + dx)·C + c holds x[2i + dy, 2j + dx, c] (PyTorch i-RevNet).
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    y = InvertibleDownsampling(2)(x).numpy()
    for dy in range(2):
        for dx in range(2):
            for c in range(3):
                np.testing.assert_array_equal(
                    y[:, :, :, (dy * 2 + dx) * 3 + c], x[:, dy::2, dx::2, c]
                )


def test_injective_pad_inverse_keeps_the_data_not_the_padding():
    x = tf.random.normal((2, 3, 3, 5))
    pad = InjectivePad(7)
    y = pad(x)
    assert y.shape[-1] == 12 and float(tf.reduce_max(tf.abs(y[..., 5:]))) == 0.0
    np.testing.assert_array_equal(pad.inverse(y).numpy(), x.numpy())  # [:C-pad], not [:pad]


def test_dct_dc_coefficient_is_scaled_mean():
    x = tf.random.normal((2, 7, 7, 5))
    y = DCTReadout()(x)
    np.testing.assert_allclose(y[:, 0, 0, :], 7.0 * tf.reduce_mean(x, axis=[1, 2]), atol=1e-5)
    flat = tf.reshape(y, (2, -1))
    np.testing.assert_allclose(flat[:, :5], y[:, 0, 0, :])  # logits are the first C entries
    np.testing.assert_allclose(
        tf.norm(flat, axis=1), tf.norm(tf.reshape(x, (2, -1)), axis=1), rtol=1e-5
    )


def test_haar_is_orthonormal_and_channel_major():
    x = tf.ones((1, 2, 2, 2)) * tf.constant([1.0, 3.0])
    y = HaarDownsampling()(x).numpy()[0, 0, 0]
    np.testing.assert_allclose(y, [2.0, 0, 0, 0, 6.0, 0, 0, 0], atol=1e-6)  # LL of c0, …, LL of c1


def test_actnorm_data_dependent_init_and_once_only():
    layer = ActNorm()
    x = tf.random.normal((64, 4, 4, 3)) * 5.0 + 2.0
    y = layer(x, training=True)
    np.testing.assert_allclose(tf.reduce_mean(y, [0, 1, 2]), 0.0, atol=1e-4)
    np.testing.assert_allclose(tf.math.reduce_std(y, [0, 1, 2]), 1.0, atol=1e-3)
    before = [v.numpy() for v in layer.weights]
    layer(x * 3.0, training=True)  # a second batch does not re-initialise
    for a, v in zip(before, layer.weights, strict=True):
        np.testing.assert_array_equal(a, v.numpy())


def test_irevnet_block_checks_bijectivity():
    with pytest.raises(ValueError, match="out_channels"):
        IRevNetBlock(8, stride=1)(tf.zeros((1, 4, 4, 4)))


def _stack(reversible, seed=0):
    keras.utils.set_random_seed(seed)
    return InvertibleSequential(
        [
            ActNorm(),
            Invertible1x1Conv(seed=1),
            AdditiveCoupling(conv_network(8, 2), swap=True),
            IRevNetBlock(8, stride=2),
            ActNorm(),
            AffineCoupling(conv_network(8, 16), scale="sigmoid"),
            HaarDownsampling(),
            DCTReadout(),
        ],
        reversible=reversible,
    )


def test_sequential_inverts_in_reverse_order():
    s = _stack(False)
    x = tf.random.normal((3, 8, 8, 4))
    s(x, training=True)
    _perturb(s, 0.1)
    y, log_det = s.forward_and_log_det(x)
    assert y.shape == (3, 2, 2, 64)
    assert float(tf.reduce_max(tf.abs(s.inverse(y) - x))) < 1e-5
    parts = sum(b.log_det_jacobian(x_i) for b, x_i in _inputs(s, x))
    np.testing.assert_allclose(log_det, parts, rtol=1e-5)


def _inputs(stack, x):
    for block in stack.blocks:
        yield block, x
        x = block(x)


@pytest.mark.parametrize("compiled", [False, True])
def test_reversible_gradients_match_standard_backprop(compiled):
    x = tf.random.normal((4, 8, 8, 4))
    standard, reversible = _stack(False), _stack(True)
    for s in (standard, reversible):
        s(x, training=True)
    _perturb(standard, 0.1)
    reversible.set_weights(standard.get_weights())

    def grads(model):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y, log_det = model.forward_and_log_det(x, training=True)
            loss = 0.01 * tf.reduce_sum(y**2) - 0.1 * tf.reduce_sum(log_det)
        return tape.gradient(loss, [x, *model.trainable_variables])

    fn = tf.function(grads) if compiled else grads
    a, b = fn(standard), fn(reversible)
    assert len(a) == len(b) > 20
    for u, v in zip(a, b, strict=True):
        assert v is not None
        # relative to the gradient's scale (conv biases before BatchNorm have ~0 gradients)
        assert float(tf.norm(u - v)) <= 1e-4 * float(tf.norm(u)) + 1e-6
    # BatchNorm moving statistics were updated exactly once in both.
    for u, v in zip(
        standard.non_trainable_variables, reversible.non_trainable_variables, strict=True
    ):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-5, atol=1e-6)


def test_dense_blocks_round_trip_and_serialize(tmp_path):
    s = InvertibleSequential(
        [
            AdditiveCoupling(dense_network(16, 3), swap=True),
            AffineCoupling(dense_network(16, 6)),
            Invertible1x1Conv(seed=0),
        ]
    )
    x = tf.random.normal((5, 6))
    s(x)
    _perturb(s, 0.2)
    assert float(tf.reduce_max(tf.abs(s.inverse(s(x)) - x))) < 1e-5
    clone = InvertibleSequential.from_config(s.get_config())
    clone(x)
    clone.set_weights(s.get_weights())
    np.testing.assert_allclose(clone(x), s(x), atol=1e-6)


def test_inverse_before_build_is_a_clear_error():
    with pytest.raises(RuntimeError, match="call the layer forward once"):
        ActNorm().inverse(tf.zeros((1, 3)))


def test_learned_diagonal_gaussian_log_density():
    from zoo.layers.priors import LearnedDiagonalGaussian

    prior = LearnedDiagonalGaussian(3)
    z = tf.constant([[0.5, -1.0, 2.0]])
    np.testing.assert_allclose(
        prior(z), [-1.5 * np.log(2 * np.pi) - 0.5 * (0.25 + 1 + 4)], rtol=1e-4
    )
    prior.loc.assign([1.0, 0.0, 0.0])
    prior.raw_scale.assign(np.log(np.expm1([2.0, 1.0, 1.0])))
    expected = -1.5 * np.log(2 * np.pi) - np.log(2.0) - 0.5 * (0.0625 + 1 + 4)
    np.testing.assert_allclose(prior(z), [expected], rtol=1e-4)
    assert len(prior.trainable_variables) == 2
