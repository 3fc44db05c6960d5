"""Racecar family: tied layers, the reverse pass, the regularizers, two-phase training, analysis
and the two-image reproduction (000_7daca03a93eb4fe1.txt; shared/digests/racecar.md)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.layers.tied import TiedConv2D, TiedConv2DTranspose, TiedDense
from zoo.models.racecar import RacecarResNet, racecar_loss, srip_penalty

RNG = np.random.default_rng(0)


def _normal(*shape):
    return tf.constant(RNG.normal(size=shape), tf.float32)


# -- tied layers ---------------------------------------------------------------------------------
def test_tied_dense_reverse_is_y_minus_bias_times_kernel_transpose():
    layer = TiedDense(5, bias_initializer="random_normal")
    x = _normal(3, 7)
    y = layer(x)
    k, b = layer.kernel.numpy(), layer.bias.numpy()
    np.testing.assert_allclose(layer(x).numpy(), x.numpy() @ k + b, rtol=1e-5, atol=1e-6)
    z = _normal(3, 5)
    np.testing.assert_allclose(
        layer.reverse(z).numpy(), (z.numpy() - b) @ k.T, rtol=1e-5, atol=1e-6
    )
    assert layer.reverse(y).shape == (3, 7)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("size", [13, 14])
def test_tied_conv2d_reverse_is_the_exact_adjoint(stride, padding, size):
    """⟨conv(x), y⟩ = ⟨x, reverse(y)⟩ without bias, and the reverse restores the input's shape
    even where a strided 'same' conv maps two input sizes to one output size."""
    layer = TiedConv2D(5, 3, strides=stride, padding=padding, use_bias=False)
    x = _normal(2, size, size, 3)
    y = _normal(*layer(x).shape)
    back = layer.reverse(y)
    assert back.shape == x.shape
    _assert_adjoint(layer(x), y, x, back)


def _assert_adjoint(fx, y, x, back):
    """⟨f(x), y⟩ = ⟨x, f*(y)⟩ to 1e-5, relative to ‖f(x)‖·‖y‖ (the scale of either side's terms;
    a random inner product can itself be close to 0)."""
    lhs = float(tf.reduce_sum(tf.cast(fx, tf.float64) * tf.cast(y, tf.float64)))
    rhs = float(tf.reduce_sum(tf.cast(x, tf.float64) * tf.cast(back, tf.float64)))
    scale = float(tf.norm(tf.cast(fx, tf.float64)) * tf.norm(tf.cast(y, tf.float64)))
    assert abs(lhs - rhs) <= 1e-5 * scale


@pytest.mark.parametrize("stride,padding", [(1, "same"), (2, "same"), (2, "valid")])
def test_tied_conv2d_transpose_reverse_is_the_exact_adjoint(stride, padding):
    layer = TiedConv2DTranspose(4, 3, strides=stride, padding=padding, use_bias=False)
    x = _normal(2, 7, 7, 3)
    y = _normal(*layer(x).shape)
    back = layer.reverse(y)
    assert back.shape == x.shape
    _assert_adjoint(layer(x), y, x, back)


def test_conv_reverse_subtracts_the_bias_first():
    layer = TiedConv2D(4, 3, padding="same", bias_initializer="random_normal")
    x = _normal(1, 6, 6, 2)
    y = layer(x)
    bias = layer.bias.numpy()
    expected = layer.reverse(y - bias)  # reverse of the bias-free output, plus bias again...
    shifted = layer.reverse(y)
    # ...i.e. reverse(y) == M^T (y − b): feeding y − b with the bias zeroed gives the same result.
    layer.bias.assign(np.zeros_like(bias))
    np.testing.assert_allclose(
        shifted.numpy(), layer.reverse(y - bias).numpy(), rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(expected.numpy(), shifted.numpy())


def test_reverse_creates_no_variables_and_needs_a_built_layer():
    layer = TiedConv2D(4, 3, strides=2, padding="same")
    with pytest.raises(ValueError, match="not built"):
        layer.reverse(tf.zeros((1, 4, 4, 4)))
    layer(tf.zeros((1, 8, 8, 2)))
    before = len(layer.weights)
    layer.reverse(tf.zeros((1, 4, 4, 4)))
    assert len(layer.weights) == before == 2
    with pytest.raises(ValueError, match="4 channels"):
        layer.reverse(tf.zeros((1, 4, 4, 3)))


def test_tied_layers_reload_from_keras_file_and_weights_file(tmp_path):
    def build():
        return keras.Sequential(
            [
                keras.Input((8, 8, 2)),
                TiedConv2D(3, 3, strides=2, padding="same", name="c"),
                TiedConv2DTranspose(2, 3, strides=2, padding="same", name="t"),
                keras.layers.Flatten(),
                TiedDense(4, name="d"),
            ]
        )

    model = build()
    x = _normal(2, 8, 8, 2)
    y = model(x)
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    other = build()
    other.load_weights(tmp_path / "m.weights.h5")
    for m in (loaded, other):
        np.testing.assert_allclose(m(x).numpy(), y.numpy(), rtol=1e-6)
        assert type(m.get_layer("c")) is TiedConv2D
        z = _normal(2, 4)
        np.testing.assert_allclose(
            m.get_layer("d").reverse(z).numpy(), model.get_layer("d").reverse(z).numpy(), rtol=1e-6
        )
        assert m.get_layer("c").get_config() == model.get_layer("c").get_config()


# -- the losses ----------------------------------------------------------------------------------
def test_racecar_loss_is_lambda_times_half_the_sum_of_squares():
    d, r = np.ones((2, 3)), np.zeros((2, 3))
    pairs = [(d, r), (2 * d, r)]
    assert float(racecar_loss(pairs, [0.1, 1.0])) == pytest.approx(0.1 * 3 + 1.0 * 12)
    assert float(racecar_loss(pairs, [1.0, 1.0], "sum")) == pytest.approx(6 + 24)
    assert float(racecar_loss(pairs, [1.0, 1.0], "mean")) == pytest.approx(1 + 4)


def test_srip_is_the_squared_spectral_norm_of_gram_minus_identity():
    # W = diag(2, 1): WᵀW − I = diag(3, 0), spectral norm 3; an orthogonal kernel scores 0.
    assert float(srip_penalty(tf.constant([[2.0, 0.0], [0.0, 1.0]]))) == pytest.approx(
        9.0, rel=1e-5
    )
    q, _ = np.linalg.qr(RNG.normal(size=(6, 4)))
    assert float(srip_penalty(tf.constant(q, tf.float32))) == pytest.approx(0.0, abs=1e-8)
    assert float(
        srip_penalty(tf.constant([[2.0, 0.0], [0.0, 1.0]]), squared=False)
    ) == pytest.approx(3.0)


# -- the model -----------------------------------------------------------------------------------
def _step(model, x, y, n=1):
    for _ in range(n):
        logs = model.train_step((x, y))
    return {k: float(v) for k, v in logs.items()}


def test_racecar_model_has_exactly_the_trainable_variables_of_its_std_twin():
    rr = zoo.load("racecar_mnist_cnn", regularizer="rr")
    std = zoo.load("racecar_mnist_cnn", regularizer="none")
    ort = zoo.load("racecar_mnist_cnn", regularizer="ort")
    names = [(v.path, tuple(v.shape)) for v in rr.trainable_variables]
    assert names == [(v.path, tuple(v.shape)) for v in std.trainable_variables]
    assert names == [(v.path, tuple(v.shape)) for v in ort.trainable_variables]
    # The same count as a plain Keras CNN of the paper's Tab. 15 (38,645 parameters).
    plain = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPool2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPool2D(),
            keras.layers.Conv2D(1, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    assert rr.count_params() - 1 == plain.count_params() == 38_645  # − the SRIP factor


def test_with_lambda_zero_rr_training_equals_std_step_for_step():
    x = tf.random.stateless_uniform((8, 28, 28, 1), (1, 2))
    y = tf.constant([0, 1, 2, 3, 4, 5, 6, 7])
    models = []
    for reg in ("rr", "none"):
        keras.utils.set_random_seed(3)
        m = zoo.load("racecar_mnist_cnn", regularizer=reg, racecar_lambda=0.0)
        m.compile()
        models.append(m)
    rr, std = models
    for _ in range(4):
        _step(rr, x, y)
        _step(std, x, y)
        for a, b in zip(rr.trainable_variables, std.trainable_variables, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    # ...and with λ > 0 it does not: the term really reaches the gradients.
    keras.utils.set_random_seed(3)
    on = zoo.load("racecar_mnist_cnn", regularizer="rr", racecar_lambda=1e-2)
    on.compile()
    for _ in range(4):
        _step(on, x, y)
    assert not np.allclose(on.trainable_variables[0].numpy(), std.trainable_variables[0].numpy())


def _bn_peak(**kw):
    return zoo.load("racecar_peak", hidden_units=[16], batchnorm=True, activation="relu", **kw)


def test_reverse_pass_never_changes_batchnorm_moving_statistics():
    x = tf.random.stateless_uniform((10, 28, 28, 1), (4, 5))
    y = tf.constant([0, 1] * 5)
    rr = _bn_peak(regularizer="rr")
    shadow = rr.get_layer("reverse_bn1")
    bn_before = [v.numpy().copy() for v in rr.get_layer("bn1").non_trainable_weights]
    shadow_before = [v.numpy().copy() for v in shadow.weights]
    # The forward pass alone in training mode moves BN's statistics by a known amount ...
    probe = _bn_peak(regularizer="rr")
    probe.set_weights(rr.get_weights())
    probe(x, training=True)
    expected = [v.numpy() for v in probe.get_layer("bn1").non_trainable_weights]
    # ... and the reverse pass in training mode adds nothing to it.
    rr.reverse_pairs(x, training=True)
    got = [v.numpy() for v in rr.get_layer("bn1").non_trainable_weights]
    for e, g, b in zip(expected, got, bn_before, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6)
        assert not np.allclose(g, b)
    # The reverse pass keeps its own running statistics instead.
    assert not np.allclose(shadow.weights[0].numpy(), shadow_before[0])
    # A full train step: BN statistics equal a Std step's from the same start.
    a, b = _bn_peak(regularizer="rr"), _bn_peak(regularizer="none")
    b.set_weights(a.get_weights())
    for m in (a, b):
        m.compile()
        _step(m, x, y)
    for va, vb in zip(
        a.get_layer("bn1").non_trainable_weights,
        b.get_layer("bn1").non_trainable_weights,
        strict=True,
    ):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6)


def test_full_reverse_applies_the_previous_layers_batchnorm_and_activation():
    """Shift-by-one (eqs. 23/24): d'_2 = relu(BN_1((d_3 − b_2) W_2ᵀ)), d'_1 = (d'_2 − b_1) W_1ᵀ,
    with BN_1's γ, β and, in inference, the reverse pass's own statistics."""
    m = _bn_peak(regularizer="rr", input_scale=1.0)
    x = tf.random.stateless_uniform((4, 28, 28, 1), (6, 7))
    for _ in range(3):  # give the shadow statistics and BN non-trivial values
        m.reverse_pairs(x, training=True)
    m.get_layer("bn1").gamma.assign(np.linspace(0.5, 1.5, 16))
    m.get_layer("bn1").beta.assign(np.linspace(-0.2, 0.2, 16))
    _, states = m.forward_states(x)
    d1, d2, d3 = (s.numpy() for s in states)
    w1, b1 = m.get_layer("tied_dense1").kernel.numpy(), m.get_layer("tied_dense1").bias.numpy()
    w2, b2 = m.get_layer("tied_dense2").kernel.numpy(), m.get_layer("tied_dense2").bias.numpy()
    bn, shadow = m.get_layer("bn1"), m.get_layer("reverse_bn1")
    h = (d3 - b2) @ w2.T
    h = (h - shadow.moving_mean.numpy()) / np.sqrt(shadow.moving_variance.numpy() + 1e-3)
    d2_rec = np.maximum(h * bn.gamma.numpy() + bn.beta.numpy(), 0)
    d1_rec = (d2_rec - b1) @ w1.T
    pairs = m._reverse_pairs(states, training=False)
    np.testing.assert_allclose(pairs[1][1].numpy(), d2_rec, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pairs[0][1].numpy(), d1_rec, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pairs[0][0].numpy(), d1)
    np.testing.assert_allclose(pairs[1][0].numpy(), d2)
    # Layer-wise: layer 1 inverts the forward d_2, not the chain's d'_2.
    m.mode = "layerwise"
    layerwise = m._reverse_pairs(states, training=False)
    np.testing.assert_allclose(layerwise[0][1].numpy(), (d2 - b1) @ w1.T, rtol=1e-4, atol=1e-4)


def test_cnn_reverse_upsamples_after_the_activation_to_the_pre_pool_state():
    m = zoo.load("racecar_mnist_cnn")
    x = tf.random.stateless_uniform((2, 28, 28, 1), (8, 9))
    pairs = m.reverse_pairs(x)
    assert [tuple(d.shape) for d, _ in pairs] == [(2, 28, 28, 1), (2, 28, 28, 64), (2, 14, 14, 64)]
    assert all(tuple(d.shape) == tuple(r.shape) for d, r in pairs)
    # UP after relu: each 2×2 block of d'_2 is constant and non-negative.
    r2 = pairs[1][1].numpy()
    np.testing.assert_array_equal(r2[:, ::2, ::2], r2[:, 1::2, 1::2])
    assert r2.min() >= 0


def test_phase_two_turns_the_regularizer_off():
    x = tf.random.stateless_uniform((8, 12), (1, 1))
    y = tf.constant([0, 1] * 4)
    logs = {}
    for phase in (1, 2):
        keras.utils.set_random_seed(0)
        m = zoo.load("racecar_mnist_mlp", regularizer="rr", phase=phase)
        m.compile()
        logs[phase] = _step(m, x, y)
    assert logs[1]["racecar_loss"] > 0 and "racecar_loss" not in logs[2]
    keras.utils.set_random_seed(0)
    ort = zoo.load("racecar_mnist_mlp", regularizer="ort")
    ort.compile()
    assert _step(ort, x, y)["ort_loss"] > 0


def test_ort_training_makes_kernels_more_orthogonal():
    x = tf.random.stateless_uniform((16, 12), (2, 2))
    y = tf.constant([0, 1] * 8)

    def gram_error(m):
        k = m.get_layer("tied_dense1").kernel.numpy()
        return np.linalg.norm(k.T @ k - np.eye(k.shape[1]), 2)

    keras.utils.set_random_seed(0)
    m = zoo.load("racecar_mnist_mlp", regularizer="ort", ort_beta=1.0, learning_rate=1e-2)
    m.compile()
    before = gram_error(m)
    _step(m, x, y, n=60)
    assert gram_error(m) < 0.5 * before


def test_racecar_config_errors_are_clear():
    with pytest.raises(zoo.InvalidConfigError, match="regularizer"):
        zoo.load("racecar_mnist_2img", regularizer="l2")
    assert zoo.load("racecar_mnist_2img", regularizer=None).regularizer == "none"  # --set ...=none
    with pytest.raises(zoo.InvalidConfigError, match="layerwise"):
        RacecarResNet(blocks_per_stage=1, mode="full")
    m = zoo.load("racecar_mnist_mlp", racecar_lambda=[1e-2, 1e-2])
    with pytest.raises(zoo.InvalidConfigError, match="6 reverse-pass terms"):
        m.lambdas()
    with pytest.raises(ValueError, match="28, 28, 1"):
        zoo.load("racecar_mnist_2img")(tf.zeros((1, 32, 32, 1)))


@pytest.mark.slow
def test_resnet110_builds_with_layerwise_terms_and_takes_a_step():
    m = zoo.load("racecar_resnet110_cifar10")
    assert len(m.constrained_layers) == 1 + 2 * 54 + 2  # stem, 2 per block, 2 projections
    assert 1.7e6 < sum(int(np.prod(v.shape)) for v in m.trainable_variables) < 1.75e6
    m.compile()
    x = tf.random.stateless_uniform((2, 32, 32, 3), (3, 3))
    before = m.get_layer("stage2_block1_conv1").kernel.numpy().copy()
    logs = tf.function(m.train_step)((x, tf.constant([1, 2])))
    assert np.isfinite(float(logs["loss"])) and float(logs["racecar_loss"]) > 0
    assert not np.allclose(before, m.get_layer("stage2_block1_conv1").kernel.numpy())


# -- export and training CLI ---------------------------------------------------------------------
def test_exported_reconstruct_signature_matches_the_keras_model(tmp_path):
    from zoo.export import export_model

    m = zoo.load("racecar_mnist_cnn")
    m.compile()
    x = tf.random.stateless_uniform((8, 28, 28, 1), (5, 5))
    _step(m, x, tf.range(8), n=3)
    path = export_model(m, tmp_path)
    served = tf.saved_model.load(str(path)).signatures["reconstruct"](images=x[:3])
    np.testing.assert_allclose(
        served["reconstruction"].numpy(), m.reconstruct(x[:3]).numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        served["relative_error"].numpy(), m.relative_reconstruction_error(x[:3]).numpy(), rtol=1e-5
    )


@pytest.mark.slow
def test_two_phase_training_with_init_from_on_a_transfer_task(tmp_path):
    from zoo.training import TrainConfig, train

    common = dict(model="racecar_mnist_mlp", epochs=1, steps_per_epoch=5, batch_size=64, verbose=0)
    p1 = train(TrainConfig(dataset="var_u", output=str(tmp_path / "p1"), **common))
    assert p1.metrics["racecar_loss"] > 0
    start = zoo.load("racecar_mnist_mlp", weights=tmp_path / "p1")
    p2 = train(
        TrainConfig(
            dataset="var_u_swapped",
            init_from=str(tmp_path / "p1"),
            overrides={"phase": 2},
            output=str(tmp_path / "p2"),
            **{**common, "steps_per_epoch": 1},
        )
    )
    assert "racecar_loss" not in p2.metrics
    record = json.loads((tmp_path / "p2" / "config.json").read_text())
    assert record["config"]["phase"] == 2 and record["config"]["regularizer"] == "rr"
    assert record["init_from"]["reinitialized"] == []
    # One Adam step (lr 4e-4) from the phase-1 weights: close to them, not a fresh init.
    finetuned = zoo.load("racecar_mnist_mlp", weights=tmp_path / "p2")
    k0 = start.get_layer("tied_dense1").kernel.numpy()
    assert np.abs(finetuned.get_layer("tied_dense1").kernel.numpy() - k0).max() < 5e-3


def test_init_from_reinitializes_a_head_of_another_shape(tmp_path):
    from zoo.training import TrainConfig, train

    common = dict(model="racecar_mnist_cnn", dataset="digits", epochs=1, steps_per_epoch=2, batch_size=16,
                  train_examples=64, validation_steps=1, verbose=0)  # fmt: skip
    train(TrainConfig(output=str(tmp_path / "p1"), **common))
    train(
        TrainConfig(
            output=str(tmp_path / "p2"), init_from=str(tmp_path / "p1"),
            overrides={"phase": 2, "num_classes": 12}, **common,
        )
    )  # fmt: skip
    record = json.loads((tmp_path / "p2" / "config.json").read_text())["init_from"]
    assert sorted(record["reinitialized"]) == ["head/bias", "head/kernel"]
    assert record["copied"] == 7


def test_train_cli_rr_then_export_and_call_reconstruct(cli, tmp_path):
    proc = cli(
        ["training/train.py", "--model", "racecar_mnist_cnn", "--dataset", "digits",
         "--set", "regularizer=rr", "--epochs", "1", "--steps-per-epoch", "3",
         "--train-examples", "256", "--validation-steps", "1", "--batch-size", "32",
         "--output", str(tmp_path / "run"), "--export-dir", str(tmp_path / "export"), "--verbose", "0"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["racecar_loss"] > 0 and 0 < summary["val_reconstruction_error"]
    served = tf.saved_model.load(summary["export"]).signatures["reconstruct"]
    x = tf.random.stateless_uniform((2, 28, 28, 1), (7, 7))
    model = zoo.load("racecar_mnist_cnn", weights=tmp_path / "run")
    np.testing.assert_allclose(
        served(images=x)["reconstruction"].numpy(),
        model.reconstruct(x).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.slow
def test_mirrored_racecar_step_follows_one_device(cli, tmp_path):
    """The RR term is a per-replica sum and the task loss a mean scaled by the replica count: over
    two replicas the task-loss trajectory must equal one device's. The RR term dominates here
    (λ = 1), so a wrongly scaled term would change the trajectory; the control halves λ."""
    from test_distribute import trajectories

    def run(strategy, lam):
        return {"strategy": strategy, "model": "racecar_mnist_mlp", "dataset": "var_u",
                "learning_rate": 0.05, "overrides": {"racecar_lambda": lam}, "key": "task_loss"}  # fmt: skip

    runs = [run("one_device", 1.0), run("mirrored", 1.0), run("one_device", 0.5)]
    (one, _), (two, replicas), (half, _) = trajectories(cli, tmp_path, runs)
    assert replicas == 2
    np.testing.assert_allclose(two, one, rtol=1e-4)
    assert np.max(np.abs(half - one) / one) > 100 * 1e-4


# -- data and analysis ---------------------------------------------------------------------------
def test_peak_images_hold_the_disk_where_the_label_says():
    from zoo.data.peak import peak_arrays, peak_template

    x, y = peak_arrays("train")
    assert x.shape == (100, 28, 28, 1) and list(np.bincount(y)) == [50, 50]
    for c, (rows, cols) in enumerate(
        [(slice(5, 11), slice(4, 10)), (slice(19, 25), slice(19, 25))]
    ):
        core = peak_template(c) == 1.0
        assert core.sum() >= 16 and core[rows, cols].sum() == core.sum()  # the digest's boxes
        assert np.all(x[y == c][:, core, 0] == 1.0)
    strokes = (x > 0).reshape(100, -1).sum(1)
    assert 60 < strokes.min() and strokes.max() < 450
    np.testing.assert_array_equal(peak_arrays("train")[0], x)
    assert not np.array_equal(peak_arrays("test")[0], x[:10])


def test_var_u_has_64_orbits_and_one_bit_of_label_information():
    from zoo.data.var_u import _entropy, _power_spectrum, var_u_arrays, var_u_patterns

    x, p, y = var_u_patterns()
    assert x.shape == (4096, 12) and len(np.unique(x, axis=0)) == 4096
    # 64 orbits under rotations of the sphere (the original's count), and p(y|x) is one value
    # per orbit: the label depends on the rotation-invariant spectrum only.
    _, orbit = np.unique(
        _power_spectrum(x.astype(np.float64), 6).round(6), axis=0, return_inverse=True
    )
    assert orbit.max() + 1 == 64
    for k in range(64):
        assert np.ptp(p[orbit.reshape(-1) == k]) < 1e-9
    mi = _entropy(np.array([p.mean()]))[0] - _entropy(p).mean()
    assert mi == pytest.approx(0.99, abs=1e-3)
    xa, ya = var_u_arrays("train")
    _, yb = var_u_arrays("train", swapped=True)
    assert len(xa) == 3277 and len(var_u_arrays("test")[0]) == 819
    np.testing.assert_array_equal(yb, 1 - ya)


def test_binned_mutual_information_on_known_cases():
    from zoo.eval.information import binned_mutual_information

    labels = np.array([0, 1] * 8)
    distinct = np.linspace(-0.95, 0.95, 16)[:, None]  # 16 patterns in 16 different bins
    assert binned_mutual_information(distinct, labels) == pytest.approx((4.0, 1.0))
    constant = np.zeros((16, 3))
    assert binned_mutual_information(constant, labels) == pytest.approx((0.0, 0.0))
    by_label = np.where(labels[:, None] == 1, 0.9, -0.9)  # the state is the label
    assert binned_mutual_information(by_label, labels) == pytest.approx((1.0, 1.0))


def test_kernel_svd_returns_the_right_singular_vectors_of_the_layer_matrix():
    from zoo.eval.spectral import kernel_svd, principal_cosines, subspace_energy

    m = RNG.normal(size=(3, 10))  # M: 10 inputs → 3 outputs; Keras stores K = Mᵀ
    s, vectors = kernel_svd(m.T)
    _, s_ref, vt = np.linalg.svd(m, full_matrices=False)
    np.testing.assert_allclose(s, s_ref)
    np.testing.assert_allclose(principal_cosines(vectors, vt), 1.0, atol=1e-10)
    assert subspace_energy(vt[:1], vectors)[0] == pytest.approx(1.0)
    # The rows of U (the reference script's reading) are not that subspace.
    u_rows = np.linalg.svd(m.T, full_matrices=True)[0][:3]
    assert principal_cosines(u_rows, vt).min() < 0.99


@pytest.mark.slow
def test_two_image_reproduction_meets_its_targets(tmp_path):
    from zoo.repro import run

    result = run("racecar_two_image", output=tmp_path)
    rel = result["measured"]["summary"]["rel_err_train"]
    assert rel["RR"] < 0.05 and rel["Std"] > 0.9 and rel["Ort"] > 0.9
    assert min(result["measured"]["RR"]["energy_in_singular_subspace"]) > 0.8
    assert max(result["measured"]["Std"]["energy_in_singular_subspace"]) < 0.05
    assert (tmp_path / "two_image.png").stat().st_size > 1000


def test_init_from_a_missing_run_is_a_usage_error(tmp_path):
    from zoo.training import TrainConfig, UsageError, train

    with pytest.raises(UsageError, match="--init-from"):
        train(
            TrainConfig(model="racecar_mnist_mlp", init_from=str(tmp_path / "nowhere"), verbose=0)
        )
