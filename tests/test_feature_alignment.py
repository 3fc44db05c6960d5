"""Feature alignment (001_4315bda1330034cd.txt; shared/digests/feature_alignment.md): the reverse
map's identities, double backprop, the VFA's terms, local training, the GAN step, learning on
digits, export and serving."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
import zoo.data
from zoo.models.feature_alignment import (
    ElementwiseClip,
    FeatureAlignment,
    LocalFeatureAlignment,
    align_features,
)

TINY = {"conv_filters": [4, 8], "conv_strides": [1, 2], "hidden_units": 32, "latent_dim": 8}
TINY_GAN = {**TINY, "generator_filters": 4}


def _x(n=6, seed=0, shape=(28, 28, 1)):
    return np.random.default_rng(seed).uniform(size=(n, *shape)).astype(np.float32)


def _y(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 10, n).astype(np.int64)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _randomize_biases(layer, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        if "bias" in v.path:
            v.assign(rng.normal(0, scale, v.shape).astype(v.dtype))


# -- the reverse map's identities (digest §1.1, §3.3 check 1) ------------------------------------
def test_dense_reverse_map_with_t1_is_sigmoid_of_x_w_wt_and_the_bias_cancels():
    dense = keras.layers.Dense(5)
    x = _x(3, shape=(7,))
    dense.build((None, 7))
    _randomize_biases(dense, scale=2.0)
    r = align_features(dense, dense(x), tf.zeros((3, 7)))
    w = dense.kernel.numpy()
    np.testing.assert_allclose(tf.sigmoid(r).numpy(), _sigmoid(x @ w @ w.T), atol=1e-6)


def test_dense_reverse_map_with_t_steps_and_tau_is_the_gradient_iteration():
    dense = keras.layers.Dense(4)
    x = _x(2, seed=1, shape=(6,))
    dense.build((None, 6))
    _randomize_biases(dense)
    w, r = dense.kernel.numpy().astype(np.float64), np.zeros((2, 6))
    for _ in range(3):  # r ← r + τ (x − r) W Wᵀ: eq. 2 for ½‖xW + b − (rW + b)‖²
        r = r + 0.3 * (x - r) @ w @ w.T
    got = align_features(dense, dense(x), tf.zeros((2, 6)), steps=3, step_size=0.3)
    np.testing.assert_allclose(got.numpy(), r, atol=1e-5)
    assert np.abs(r - 0.3 * x @ w @ w.T).max() > 1e-2  # three steps differ from one


def test_conv_reverse_map_is_conv_transpose_of_conv_with_the_same_kernel():
    conv = keras.layers.Conv2D(3, 3, strides=2, padding="same")
    x = _x(2, seed=2, shape=(8, 8, 2))
    y = conv(x)
    _randomize_biases(conv, scale=1.0)
    y = conv(x)
    r = align_features(conv, y, tf.zeros_like(x))
    expected = tf.nn.conv2d_transpose(
        y - conv.bias, conv.kernel, output_shape=x.shape, strides=2, padding="SAME"
    )
    np.testing.assert_allclose(tf.sigmoid(r).numpy(), tf.sigmoid(expected).numpy(), atol=1e-6)
    assert np.abs(expected.numpy()).max() > 0.1


# -- double backprop (§3.3 check 2) ----------------------------------------------------------------
def _f64_encoder(seed=0):
    keras.utils.set_random_seed(seed)
    enc = keras.Sequential(
        [keras.Input((6,), dtype="float64"), keras.layers.Dense(5, dtype="float64"),
         keras.layers.LeakyReLU(0.01, dtype="float64"), keras.layers.Dense(3, dtype="float64")]
    )  # fmt: skip
    for layer in enc.layers:
        _randomize_biases(layer, seed)
    return enc


def _reconstruction_loss(enc, x, first_order=False, tape=None):
    z = enc(x)
    if first_order:  # the inner gradient computed outside the outer tape
        with tape.stop_recording():
            r = align_features(enc, z, tf.zeros_like(x))
    else:
        r = align_features(enc, z, tf.zeros_like(x))
    return 0.5 * tf.reduce_sum(tf.square(x - tf.sigmoid(r)))


def test_reconstruction_gradient_is_second_order_and_matches_finite_differences():
    enc = _f64_encoder()
    x = tf.constant(np.random.default_rng(3).uniform(size=(4, 6)))
    with tf.GradientTape(persistent=True) as tape:
        loss = _reconstruction_loss(enc, x)
        first = _reconstruction_loss(enc, x, first_order=True, tape=tape)
    grads = tape.gradient(loss, enc.trainable_variables)
    shortcut = tape.gradient(first, enc.trainable_variables)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    kernels = [g for g, v in zip(grads, enc.trainable_variables, strict=True) if "kernel" in v.path]
    assert all(np.abs(g.numpy()).max() > 1e-3 for g in kernels)
    # A first-order shortcut has no reconstruction signal at all: a different gradient.
    assert all(s is None or not np.any(s.numpy()) for s in shortcut)
    # The directional derivative along a random direction equals the central difference.
    rng = np.random.default_rng(4)
    direction = [rng.normal(size=v.shape) for v in enc.trainable_variables]
    analytic = sum(float(np.sum(g.numpy() * d)) for g, d in zip(grads, direction, strict=True))
    base = [v.numpy() for v in enc.trainable_variables]

    def loss_at(t):
        for v, b, d in zip(enc.trainable_variables, base, direction, strict=True):
            v.assign(b + t * d)
        return float(_reconstruction_loss(enc, x))

    h = 1e-5
    numeric = (loss_at(h) - loss_at(-h)) / (2 * h)
    loss_at(0.0)
    assert analytic == pytest.approx(numeric, rel=1e-6)


def _naive_vfa_loss(m, x, y, eps, beta, detach_z=False, z_r="mean_plus_sigma"):
    """The authors' VFA step written out (training.py, the encoder part), on the model's layers."""
    xc = tf.clip_by_value(x, 0.01, 0.99)
    h = m.trunk(xc)
    mean, log_var = m.mean_head(h), m.log_var_head(h)
    z = mean + tf.exp(0.5 * log_var) * eps
    if detach_z:
        z = tf.stop_gradient(z)
    labels = tf.one_hot(y, 10)
    r = tf.zeros_like(xc)
    with tf.GradientTape() as inner:
        inner.watch(r)
        hr = m.trunk(r)
        zf = m.mean_head(hr)
        if z_r == "mean_plus_sigma":
            zf = zf + tf.exp(0.5 * m.log_var_head(hr))
        cost = 0.5 * tf.reduce_sum((z - zf) ** 2) + 0.5 * tf.reduce_sum(
            (labels - m.class_head(hr)) ** 2
        )
    r = tf.sigmoid(r - inner.gradient(cost, r))
    rl = 0.5 * tf.reduce_sum((xc - r) ** 2)
    kld = -0.5 * tf.reduce_sum(1.0 + log_var - mean**2 - tf.exp(log_var), axis=1)
    return tf.reduce_sum(beta * kld) + rl


def _grads(m, fn):
    with tf.GradientTape() as tape:
        loss = fn()
    return loss, tape.gradient(loss, m.encoder_variables)


def test_vfa_loss_and_gradient_equal_the_reference_step_with_z_r_mean_plus_sigma():
    from zoo.models.feature_alignment import _reduce

    m = zoo.load("vfa_mnist", **TINY)
    x, y = tf.constant(_x()), tf.constant(_y())
    rng = np.random.default_rng(5)
    eps = tf.constant(rng.normal(size=(6, 8)), tf.float32)
    beta = tf.constant(rng.uniform(size=6), tf.float32)
    ours, g_ours = _grads(m, lambda: _reduce(m.encoder_terms(x, y, eps, beta)["loss"], "sum"))
    ref, g_ref = _grads(m, lambda: _naive_vfa_loss(m, x, y, eps, beta))
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)
    for a, b in zip(g_ours, g_ref, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-5)
    # The inner latent is μ(r) + σ(r) (ε ≡ 1) ...
    r = tf.constant(_x(2, seed=9))
    heads = m._heads(r)
    np.testing.assert_allclose(
        m._reverse_outputs(r, False)["z"].numpy(),
        (heads["mean"] + tf.exp(0.5 * heads["log_var"])).numpy(), rtol=1e-6,
    )  # fmt: skip
    # ... and z_x is not detached: either change moves the gradient far outside the tolerance.
    for variant in ({"detach_z": True}, {"z_r": "mean"}):
        _, g_variant = _grads(m, lambda v=variant: _naive_vfa_loss(m, x, y, eps, beta, **v))
        gap = max(
            float(np.abs(a.numpy() - b.numpy()).max() / (np.abs(b.numpy()).max() + 1e-12))
            for a, b in zip(g_variant, g_ref, strict=True)
        )
        assert gap > 0.01, variant  # 10× the tolerance of the match above


def test_encoder_init_weight_clip_and_activation_follow_the_reference():
    m = zoo.load("vfa_mnist", **TINY)
    fc = m.trunk.get_layer("fc")
    k = fc.kernel.numpy()  # (in, out) with in ≥ out: orthonormal columns (gain 1)
    np.testing.assert_allclose(k.T @ k, np.eye(k.shape[1]), atol=1e-5)
    conv = m.trunk.get_layer("conv2_padded").layers[-1]  # stride 2: zero padding + "valid"
    flat = conv.kernel.numpy().reshape(-1, conv.filters)
    np.testing.assert_allclose(flat.T @ flat, np.eye(conv.filters), atol=1e-5)
    # PyTorch's default bias init: U(±1/√fan_in), fan_in = 3·3·4 for conv2.
    b = m.trunk.get_layer("fc").bias.numpy()
    assert np.abs(b).max() <= 1 / math.sqrt(1568) and np.abs(b).max() > 0.5 / math.sqrt(1568)
    b = conv.bias.numpy()
    assert np.abs(b).max() <= 1 / math.sqrt(36) and np.any(b != 0)
    assert all(a.negative_slope == pytest.approx(0.01)
               for a in m.trunk.layers if isinstance(a, keras.layers.LeakyReLU))  # fmt: skip
    # The ±√2 clip: on E's kernels only (not biases, G or D), after every update.
    assert isinstance(fc.kernel_constraint, ElementwiseClip) and fc.bias_constraint is None
    g = zoo.load("fa_gan_mnist", **TINY_GAN)
    g.compile()
    big = np.full(g.mean_head.kernel.shape, 5.0, np.float32)
    g.mean_head.kernel.assign(big)
    g.mean_head.bias.assign(np.full(g.mean_head.bias.shape, 5.0, np.float32))
    d_kernel = g.discriminator.get_layer("d_fc").kernel
    d_kernel.assign(np.full(d_kernel.shape, 5.0, np.float32))
    g.train_step((tf.constant(_x()), tf.constant(_y())))
    assert np.abs(g.mean_head.kernel.numpy()).max() == pytest.approx(math.sqrt(2), rel=1e-6)
    assert g.mean_head.bias.numpy().min() > 4.9  # biases are not clipped
    assert d_kernel.numpy().min() > 4.9  # nor is D
    assert all(v.constraint is None for v in g.generator.weights + g.discriminator.weights)


def test_parameter_counts_match_table_3():
    def conv(cin, cout):
        return 9 * cin * cout + cout

    trunk = sum(conv(a, b) for a, b in [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128),
                                         (128, 128)])  # fmt: skip
    fc, mean, classifier = 2048 * 2048 + 2048, 2048 * 128 + 128, 2048 * 10 + 10
    assert zoo.load("fa_cifar10").count_params() == trunk + fc + mean + classifier == 4_766_122


# -- local feature alignment --------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_model():
    m = zoo.load("local_fa_mnist", **TINY)
    for module in m.modules_:
        for layer in getattr(module, "layers", [module]):
            if getattr(layer, "bias", None) is not None:
                _randomize_biases(layer, scale=0.3)
    return m


def test_local_mode_gives_biases_zero_gradient_and_trains_every_module(local_model):
    m = local_model
    x = tf.constant(_x())
    losses = m.module_losses(x)
    assert len(losses) == 4  # 2 convs, the hidden FC and the latent FC: all trained
    for module, per_example, grads in losses:
        for g, v in zip(grads, module.trainable_variables, strict=True):
            if "bias" in v.path:
                assert float(tf.reduce_max(tf.abs(g))) < 1e-5 * (
                    1 + float(tf.reduce_max(tf.abs(per_example)))
                ), v.path
            else:
                assert float(tf.reduce_max(tf.abs(g))) > 1e-4, v.path
    m.compile()
    before = [v.numpy() for v in m.trainable_variables]
    m.train_step((x, tf.constant(_y())))
    for v, b in zip(m.trainable_variables, before, strict=True):
        changed = np.abs(v.numpy() - b).max() > 0
        assert changed == ("kernel" in v.path), v.path


def test_local_decode_walks_back_layer_by_layer_with_sinh_after_asinh(local_model):
    """Algorithm 3 written with TF primitives: Dense → (u − b)Wᵀ, asinh → sinh, flatten →
    reshape, conv → conv_transpose(u − b) (and the symmetric padding cropped)."""
    m = local_model
    z = tf.constant(np.random.default_rng(6).normal(size=(3, 8)), tf.float32)
    u = z
    for module, shape in zip(reversed(m.modules_), reversed(m.input_shapes), strict=True):
        if isinstance(module, keras.layers.Dense):
            u = tf.matmul(u - module.bias, module.kernel, transpose_b=True)
        elif isinstance(module, keras.layers.Activation):
            u = tf.sinh(u)
        elif isinstance(module, keras.layers.Flatten):
            u = tf.reshape(u, (-1, *shape))
        elif isinstance(module, keras.Sequential):  # zero padding + valid stride-2 conv
            conv = module.layers[-1]
            padded = (3, shape[0] + 2, shape[1] + 2, shape[2])
            u = tf.nn.conv2d_transpose(u - conv.bias, conv.kernel, padded, 2, "VALID")
            u = u[:, 1:-1, 1:-1, :]
        else:
            u = tf.nn.conv2d_transpose(u - module.bias, module.kernel, (3, *shape), 1, "SAME")
    np.testing.assert_allclose(m.decode(z).numpy(), u.numpy(), rtol=1e-4, atol=1e-5)


# -- the GAN step --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gan():
    keras.utils.set_random_seed(0)
    m = zoo.load("fa_gan_mnist", **TINY_GAN)
    m.compile()
    return m


def _snapshot(variables):
    return [v.numpy().copy() for v in variables]


def _changed(variables, before):
    return [bool(np.abs(v.numpy() - b).max() > 0) for v, b in zip(variables, before, strict=True)]


def test_gan_step_updates_each_network_with_its_own_optimizer(gan):
    m = gan
    data = (tf.constant(_x(8)), tf.constant(_y(8)))
    parts = {
        "E": m.encoder_variables,
        "G": m.generator.trainable_variables,
        "D": m.discriminator.trainable_variables,
    }
    opts = m.optimizers()
    optimizers = {"E": opts["encoder"], "G": opts["generator"], "D": opts["discriminator"]}
    assert sum(len(v) for v in parts.values()) == len(m.trainable_variables)
    for frozen in (None, "E", "G", "D"):
        for name, opt in optimizers.items():
            opt.learning_rate.assign(0.0 if name == frozen else 1e-3)
        before = {k: _snapshot(v) for k, v in parts.items()}
        logs = m.train_step(data)
        for name, variables in parts.items():
            changed = _changed(variables, before[name])
            assert all(changed) if name != frozen else not any(changed), (frozen, name)
    assert int(optimizers["D"].iterations) == 2 * int(m.optimizer.iterations)  # 2 D steps each
    assert {"generator_loss", "discriminator_real", "discriminator_fake"} <= set(logs)


def test_gan_step_feeds_d_real_then_prior_fakes_and_g_runs_batchnorm_in_the_right_mode(
    gan, monkeypatch
):
    m = gan
    modes, d_inputs = [], []
    for bn in m.generator.norms:
        original = bn.call
        monkeypatch.setattr(
            bn, "call",
            lambda x, training=None, _f=original, **kw: (modes.append(bool(training)), _f(x, training))[1],
        )  # fmt: skip
    d_call = m.discriminator.call
    monkeypatch.setattr(
        m.discriminator, "call",
        lambda x, training=None, **kw: (d_inputs.append(x), d_call(x, training))[1],
    )  # fmt: skip
    moving = _snapshot([bn.moving_mean for bn in m.generator.norms])
    x, y = _x(8, seed=3), _y(8, seed=3)
    m.train_step((tf.constant(x), tf.constant(y)))
    # G: batch statistics in its own step and in D's fake path (both BNs, twice each).
    assert modes == [True, True, True, True]
    assert all(_changed([bn.moving_mean for bn in m.generator.norms], moving))
    # D: G(r̂ of the real batch) in G's step, the clamped real batch, then G(r̂ of prior draws).
    assert len(d_inputs) == 3
    np.testing.assert_allclose(d_inputs[1].numpy(), np.clip(x, 0.01, 0.99))
    assert np.abs(d_inputs[2].numpy() - d_inputs[0].numpy()).max() > 1e-3
    # Sampling uses the moving statistics: an example's image does not depend on its batch.
    modes.clear()
    z = tf.constant(np.random.default_rng(0).normal(size=(5, 8)), tf.float32)
    labels = tf.constant([1, 2, 3, 4, 5], tf.int64)
    full = m.generate(z, labels)["images"].numpy()
    assert set(modes) == {False}
    np.testing.assert_allclose(m.generate(z[:1], labels[:1])["images"].numpy(), full[:1], atol=1e-6)
    # Without labels: the unconditional reverse map (no label term), G fed the zero label vector.
    np.testing.assert_allclose(m.generate(z)["features"].numpy(), m.decode(z).numpy(), atol=1e-6)
    assert np.abs(m.decode(z).numpy() - m.decode(z, labels).numpy()).max() > 1e-4


# -- learning on digits (§3.3 check 3) ------------------------------------------------------------
def test_a_short_run_on_digits_lowers_test_mse_below_the_mean_image_baseline():
    """100 steps of model.fit (batch 64, lr 2e-3) on held-out procedural digits."""
    test = zoo.data.load("digits", "test", batch_size=250, num_examples=500)
    images = np.concatenate([b[0].numpy() for b in test])
    baseline = float(np.mean((images - images.mean(axis=0)) ** 2))  # per-pixel variance
    keras.utils.set_random_seed(0)
    m = zoo.load(
        "fa_mnist", **{**TINY, "hidden_units": 64, "latent_dim": 16, "learning_rate": 2e-3}
    )
    m.compile()
    mse_init = m.evaluate(test, verbose=0, return_dict=True)["reconstruction_mse"]
    train = zoo.data.load("digits", "train", batch_size=64, num_examples=3200, repeat=True)
    m.fit(train, epochs=1, steps_per_epoch=100, verbose=0, shuffle=False)
    mse = m.evaluate(test, verbose=0, return_dict=True)["reconstruction_mse"]
    assert mse_init > 0.15  # r̂ ≈ 0.5 everywhere at initialisation
    assert mse < 0.95 * baseline < 0.5 * mse_init, (mse_init, baseline, mse)


# -- the trainer, export and serving ------------------------------------------------------------------
@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """fa_gan_mnist (tiny) trained by the zoo's trainer, three optimizers in its train_step, and
    exported by it: ``(model reloaded from the run, export path)``."""
    from zoo.training import TrainConfig, train

    out = tmp_path_factory.mktemp("gan_run")
    result = train(
        TrainConfig(
            model="fa_gan_mnist", dataset="digits", epochs=1, steps_per_epoch=2, batch_size=16,
            train_examples=128, validation_steps=1, output=str(out / "run"),
            export_dir=str(out / "E"), verbose=0, overrides=TINY_GAN,
        )
    )  # fmt: skip
    assert result.export_path == out / "E" / "fa_gan_mnist" / "1"
    assert {"generator_loss", "discriminator_fake", "val_generator_reconstruction_mse"} <= set(
        result.metrics
    )
    assert int(result.model.optimizers()["discriminator"].iterations) == 4  # two D steps each
    return zoo.load("fa_gan_mnist", weights=out / "run", **TINY_GAN), result.export_path


def test_exported_decode_generate_sample_and_interpolate_equal_the_keras_model(gan_run):
    m, path = gan_run
    sig = tf.saved_model.load(str(path)).signatures
    assert {"serving_default", "reconstruct", "encode", "decode", "generate", "sample",
            "interpolate"} == set(sig)  # fmt: skip
    z = tf.constant(np.random.default_rng(1).normal(size=(3, 8)), tf.float32)
    label = tf.constant([0, 4, 9], tf.int64)
    np.testing.assert_allclose(
        sig["decode"](z=z, label=label)["images"].numpy(), m.decode(z, label).numpy(), atol=1e-5
    )
    served = sig["generate"](z=z, label=label)
    keras_out = m.generate(z, label)
    for key in ("images", "features"):
        np.testing.assert_allclose(served[key].numpy(), keras_out[key].numpy(), atol=1e-5)
    s = sig["sample"](n=tf.constant(4))
    assert s["z"].shape == (4, 8) and s["label"].dtype == tf.int64
    np.testing.assert_allclose(
        s["images"].numpy(), m.generate(s["z"], s["label"])["images"].numpy(), atol=1e-5
    )
    assert sig["sample"](n=tf.constant(0))["images"].shape == (0, 28, 28, 1)
    corners, corner_labels = tf.constant(_x(4, seed=7)), tf.constant([1, 3, 5, 7], tf.int64)
    grid = sig["interpolate"](images=corners, label=corner_labels)["images"]
    assert grid.shape == (121, 28, 28, 1)
    np.testing.assert_allclose(
        grid.numpy(), m.interpolate(corners, corner_labels)["images"].numpy(), atol=1e-5
    )
    enc = sig["encode"](images=corners)
    np.testing.assert_allclose(enc["log_var"].numpy(), m.encode(corners)["log_var"].numpy(),
                               atol=1e-5)  # fmt: skip
    # The grid's corners are the four images' latents and labels.
    np.testing.assert_allclose(
        grid.numpy()[[0, 10, 110, 120]],
        m.generate(enc["mean"], corner_labels)["images"].numpy(), atol=1e-5,
    )  # fmt: skip
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 10\)"):
        sig["decode"](z=z, label=tf.constant([0, 10, 2], tf.int64))


def test_decode_and_sample_over_grpc_with_the_official_stubs(gan_run):
    """The exported gradient step serves: decode(z, label) and sample(n) through
    tensorflow_serving's own PredictionService stubs against serving/server.py."""
    from helpers.serving import official_predict

    from zoo.serving.testing import ServerProcess

    m, path = gan_run
    z = np.random.default_rng(2).normal(size=(2, 8)).astype(np.float32)
    label = np.array([3, 8], np.int64)
    with ServerProcess(
        "--model_name", "fa_gan_mnist", "--model_base_path", str(path.parent), rest=False
    ) as server:
        decoded = official_predict(server.target, "fa_gan_mnist", "decode", z=z, label=label)
        sampled = official_predict(server.target, "fa_gan_mnist", "sample", n=np.array(3, np.int32))
    np.testing.assert_allclose(decoded["images"], m.decode(z, label).numpy(), atol=1e-5)
    assert sampled["images"].shape == (3, 28, 28, 1) and sampled["z"].shape == (3, 8)
    np.testing.assert_allclose(
        sampled["images"], m.generate(sampled["z"], sampled["label"])["images"].numpy(), atol=1e-5
    )


@pytest.mark.slow
def test_mirrored_over_two_devices_equals_one_device_and_runs_the_gan_step(cli):
    """Each replica's ½-sum (or mean) is scaled so the all-reduced gradient is the global batch's:
    one SGD step on two replicas equals one on one device; a loss left per replica (or divided
    by the replicas) would move it by half the update. The GAN's three optimizers all-reduce in
    one step (in a fresh interpreter: logical devices are set before TensorFlow starts)."""
    import json

    from conftest import ROOT

    proc = cli([str(ROOT / "tests" / "helpers" / "fa_mirrored.py")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    for reduction in ("sum", "mean"):
        assert out["max_weight_gap"][reduction] < 1e-3 * out["update_size"][reduction], out
    assert out["gan"]["iterations"] == {"encoder": 1, "generator": 1, "discriminator": 2}
    assert all(np.isfinite(v) for v in out["gan"]["logs"].values())


# -- bad input ----------------------------------------------------------------------------------------
def test_bad_inputs_and_configs_get_clear_errors():
    m = zoo.load("vfa_mnist", **TINY)
    with pytest.raises(ValueError, match=r"latents of shape \(batch, 8\); got shape \(2, 9\)"):
        m.decode(tf.zeros((2, 9)), [1, 2])
    with pytest.raises(ValueError, match=r"class ids in \[0, 10\); got \[-1, 12\]"):
        m.decode(tf.zeros((3, 8)), [-1, 3, 12])
    with pytest.raises(ValueError, match=r"\(batch, 10\)"):
        m.decode(tf.zeros((2, 8)), tf.zeros((2, 9)))
    with pytest.raises(ValueError, match="no generator G.*fa_gan_mnist"):
        m.generate(tf.zeros((1, 8)), [0])
    with pytest.raises(ValueError, match="28, 28, 1"):
        m.encode(tf.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="no label head"):
        zoo.load("fa_mnist", **TINY, num_classes=0).decode(tf.zeros((1, 8)), [1])
    with pytest.raises(zoo.InvalidConfigError, match="r0 must be one of"):
        zoo.load("fa_mnist", r0="gaussian")
    with pytest.raises(zoo.InvalidConfigError, match="variational"):
        FeatureAlignment(generator=True, variational=False, **TINY)
    with pytest.raises(zoo.InvalidConfigError, match="steps"):
        LocalFeatureAlignment(steps=0, **TINY)


def test_unconditional_models_declare_label_free_signatures_and_r0_is_random():
    m = zoo.load("fa_mnist", **{**TINY, "num_classes": 0, "steps": 2, "r0": "uniform"})
    sigs = m.serving_signatures()
    assert [s.name for s in sigs["decode"][1]] == ["z"] and "generate" not in sigs
    assert [s.name for s in sigs["interpolate"][1]] == ["images"]
    decode = tf.function(sigs["decode"][0], input_signature=sigs["decode"][1])
    z = tf.constant(np.random.default_rng(3).normal(size=(2, 8)), tf.float32)
    a, b = decode(z)["images"].numpy(), m.decode(z).numpy()
    # r⁰ ~ U(0, 1): every decode starts elsewhere (r⁰ = 0 gives one answer, see the test above).
    assert a.shape == b.shape == (2, 28, 28, 1) and np.abs(a - b).max() > 1e-4
    assert set(m.encode(_x(2))) == {"mean"}
    assert zoo.get_spec("fa_celeba").default_config["image_shape"] == (64, 64, 3)


def test_celeba_and_cifar10_models_work_at_their_image_sizes():
    m = zoo.load("vfa_celeba", conv_filters=[4] * 8, hidden_units=16, latent_dim=4)
    m.compile()
    logs = m.train_step((tf.constant(_x(4, shape=(64, 64, 3))),))  # CelebA: no labels
    assert np.isfinite(float(logs["loss"])) and m.num_classes == 0
    assert m.sample(2)["images"].shape == (2, 64, 64, 3)
    g = zoo.load("fa_gan_cifar10", conv_filters=[4] * 6, hidden_units=16, latent_dim=4,
                 generator_filters=4)  # fmt: skip
    # The code's CIFAR-10 refiner: kernel 9, LeakyReLU on the label embedding.
    assert g.generator.convs[0].kernel.shape[:2] == (9, 9)
    assert g.generator.label_activation == "leaky_relu"
    out = g.sample(2)
    assert out["images"].shape == out["features"].shape == (2, 32, 32, 3)


def test_celeba_64x64_reads_tfds_celeb_a_as_64x64_squares():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=2):
        x, y = next(iter(zoo.data.load("celeba_64x64", "train", batch_size=2, shuffle=False)))
    assert x.shape == (2, 64, 64, 3) and x.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(x)) <= float(tf.reduce_max(x)) <= 1.0


# -- the reproduction's pass logic, on crafted figures -----------------------------------------------
def _figures():
    return {
        "unit_identities": {"dense_max_abs_error": 6e-8, "conv_max_abs_error": 1e-7},
        "double_backprop": {
            "finite_difference_rel_error": 1e-9,
            "first_order_grad_norm": 0.0,
            "second_order_grad_norm": 3.2,
        },  # fmt: skip
        "reconstruction": {
            "baseline_mean_image_mse": 0.0455,
            "fa_mse_init": 0.209,
            "fa_mse": 0.031,
            "ae_mse": 0.02,
        },  # fmt: skip
        "local": {"mse": 0.03},
        "conditioning": {"accuracy_features": 0.7},
        "proxy_fid": {"features": 40.0, "generator": 20.0},
    }


def test_reproduction_flags_pass_on_good_figures_and_each_fails_alone():
    import copy

    from zoo.repro.feature_alignment import feature_alignment_checks

    flags = feature_alignment_checks(_figures())
    assert all(flags.values()) and len(flags) == 7
    assert all(type(v) is bool for v in flags.values())
    breaks = {
        "1_unit_identities": ("unit_identities", "conv_max_abs_error", 2e-5),
        "2_double_backprop": ("double_backprop", "first_order_grad_norm", 0.01),
        "3_fa_below_baseline_and_half_of_init": ("reconstruction", "fa_mse", 0.0455),
        "4_ae_below_fa": ("reconstruction", "ae_mse", 0.031),
        "5_local_fa_below_baseline": ("local", "mse", 0.046),
        "6_conditioning_at_least_50pct": ("conditioning", "accuracy_features", 0.499),
        "7_proxy_fid_generator_below_features": ("proxy_fid", "generator", 40.0),
    }
    for flag, (group, key, value) in breaks.items():
        figures = copy.deepcopy(_figures())
        figures[group][key] = value
        failed = {k for k, ok in feature_alignment_checks(figures).items() if not ok}
        assert failed == {flag}, (flag, failed)
    # At the thresholds: exactly half of the init MSE passes, exactly 50 % passes.
    figures = copy.deepcopy(_figures())
    figures["reconstruction"].update(fa_mse_init=0.06, fa_mse=0.03)
    figures["conditioning"]["accuracy_features"] = 0.5
    assert all(feature_alignment_checks(figures).values())
