"""INN autoencoders and the classical baselines (003_2c9ba5de01816b66.txt; shared/digests/
invertible_inn_ae_firevnet.md §1)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
import zoo.data
from zoo.layers.invertible import (
    Concatenated,
    FlattenNCHW,
    HaarDownsampling,
    HaarUpsampling,
    TwoSidedAffineCoupling,
    UnflattenNCHW,
    conv_network,
    dense_network,
)
from zoo.models.inn_autoencoder import LearningRateMilestones, mmd_multiscale

TINY = {"conv_hidden": 8, "fc_hidden": 16}


def _randomize_last_layers(model, scale=0.05, seed=0):
    """Give the zero-initialised last layers values, so the couplings are not the identity."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        if not np.any(v.numpy()):
            v.assign(rng.normal(0, scale, v.shape).astype(np.float32))


# -- parameter counts (the digest's figures, from the authors' code) -------------------------------
@pytest.mark.parametrize(
    "name,k,count",
    [
        ("inn_ae_mnist", 12, 1_121_192),
        ("inn_ae_cifar10", 300, 13_235_176),
        ("inn_ae_celeba", 300, 50_070_152),
        ("ae_mnist", 1, 1_133_329),
        ("ae_mnist", 12, 1_136_156),
        ("ae_mnist", 32, 1_141_296),
        ("ae_mnist", 64, 1_149_520),
        ("ae_mnist_1024", 1, 5_808_913),
        ("ae_mnist_2048", 64, 20_263_760),
        ("ae_mnist_deep", 1, 7_908_113),
    ],
)
def test_parameter_counts_match_the_reference_architectures(name, k, count):
    assert zoo.load(name, k=k).count_params() == count


def test_inn_parameter_count_does_not_depend_on_k():
    assert (
        zoo.load("inn_ae_mnist", k=1).count_params()
        == zoo.load("inn_ae_mnist", k=64).count_params()
    )


# -- the blocks ------------------------------------------------------------------------------------
def _two_sided(c, hidden=8, conv=True):
    c1, c2 = c // 2, c - c // 2
    if conv:
        make = lambda out: conv_network(hidden, out, batchnorm=False, last_kernel_size=1)  # noqa: E731
        return TwoSidedAffineCoupling(make(2 * c2), make(2 * c1))
    make = lambda out: Concatenated([dense_network(hidden, out, depth=2) for _ in "st"])  # noqa: E731
    return TwoSidedAffineCoupling(make(c2), make(c1))


def test_two_sided_coupling_starts_as_the_identity_and_inverts_exactly():
    x = tf.random.stateless_normal((3, 6, 6, 5), (1, 2))
    layer = _two_sided(5)
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())  # zero-initialised last layers
    _randomize_last_layers(layer, 0.3)
    y = layer(x)
    assert np.abs(y.numpy() - x.numpy()).max() > 0.05  # really transforms both halves
    assert np.abs(y.numpy()[..., :2] - x.numpy()[..., :2]).max() > 0.05
    np.testing.assert_allclose(layer.inverse(y).numpy(), x.numpy(), atol=1e-5)


def test_two_sided_coupling_log_det_equals_the_jacobian_and_scales_are_clamped():
    layer = _two_sided(6, conv=False)
    x = tf.random.stateless_normal((2, 6), (3, 4), dtype=tf.float32)
    layer(x)
    _randomize_last_layers(layer, 2.0)  # large raw scales: the clamp must bound them
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    jac = tape.batch_jacobian(y, x).numpy()
    expected = [np.linalg.slogdet(j)[1] for j in jac]
    np.testing.assert_allclose(layer.log_det_jacobian(x).numpy(), expected, rtol=1e-4, atol=1e-4)
    # Soft clamp 1: each of the 6 log-scales lies in (−1, 1).
    assert np.all(np.abs(layer.log_det_jacobian(x).numpy()) < 6)


def test_haar_upsampling_and_nchw_flatten_are_exact_inverses():
    x = tf.random.stateless_normal((2, 8, 6, 3), (5, 6))
    down, up = HaarDownsampling(), HaarUpsampling()
    np.testing.assert_allclose(up(down(x)).numpy(), x.numpy(), atol=1e-6)
    np.testing.assert_allclose(up.inverse(x).numpy(), down(x).numpy(), atol=1e-6)
    flat = FlattenNCHW()
    v = flat(x)
    np.testing.assert_array_equal(v.numpy(), np.transpose(x.numpy(), (0, 3, 1, 2)).reshape(2, -1))
    np.testing.assert_array_equal(flat.inverse(v).numpy(), x.numpy())
    unflat = UnflattenNCHW((8, 6, 3))
    np.testing.assert_array_equal(unflat(v).numpy(), x.numpy())


# -- the INN autoencoder ---------------------------------------------------------------------------
def test_at_initialization_every_coupling_is_the_identity():
    m = zoo.load("inn_ae_mnist", k=784)
    x = tf.random.stateless_uniform((4, 28, 28, 1), (7, 8))
    # Haar, identity couplings, Haar restore: the latent is the image, flattened.
    np.testing.assert_allclose(m.forward(x).numpy(), x.numpy().reshape(4, -1), atol=1e-6)
    couplings = [b for b in m.flow.blocks if isinstance(b, TwoSidedAffineCoupling)]
    assert len(couplings) == 4
    h = x
    for block in m.flow.blocks:
        out = block(h)
        if block in couplings:
            np.testing.assert_array_equal(out.numpy(), h.numpy())
        h = out


def test_with_k_equal_d_reconstruction_is_exact():
    m = zoo.load("inn_ae_mnist", k=784, **TINY)
    _randomize_last_layers(m)
    x = tf.random.stateless_uniform((8, 28, 28, 1), (9, 9))
    z = m.forward(x)
    assert np.abs(z.numpy() - x.numpy().reshape(8, -1)).max() > 1e-2  # not the identity any more
    assert np.abs(m.reconstruct(x).numpy() - x.numpy()).max() < 1e-4


def test_with_k_below_d_the_decoder_gets_d_minus_k_zeros_and_the_code_is_deterministic():
    m = zoo.load("inn_ae_mnist", k=32, **TINY)
    _randomize_last_layers(m)
    x = tf.random.stateless_uniform((5, 28, 28, 1), (1, 1))
    code = m.encode(x)
    assert code.shape == (5, 32)
    np.testing.assert_array_equal(code.numpy(), m.encode(x).numpy())
    np.testing.assert_array_equal(code.numpy(), m.forward(x).numpy()[:, :32])
    full = m.decoder_input(code).numpy()
    assert full.shape == (5, 784)
    assert np.all(full[:, 32:] == 0) and np.count_nonzero(full[:, 32:]) == 0
    np.testing.assert_array_equal(full[:, :32], code.numpy())
    np.testing.assert_allclose(m.decode(code).numpy(), m.inverse(full).numpy())
    # Reconstruction is lossy now: what the zeros replaced is gone.
    assert np.abs(m.reconstruct(x).numpy() - x.numpy()).max() > 1e-3


def test_the_mmd_is_zero_for_identical_samples_positive_when_shifted_and_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 4)).astype(np.float32)
    assert float(mmd_multiscale(a, a)) == pytest.approx(0.0, abs=1e-6)
    b = a + 1.0
    assert float(mmd_multiscale(a, b)) > 0.05

    def numpy_mmd(x, y):
        def k(p, q):
            d = ((p[:, None] - q[None]) ** 2).sum(-1)
            return sum(h * h / (h * h + d) for h in (0.2, 0.5, 0.9, 1.3))

        return np.mean(k(x, x) + k(y, y) - 2 * k(x, y))

    c = rng.normal(size=(16, 4)).astype(np.float32)
    assert float(mmd_multiscale(a, c)) == pytest.approx(numpy_mmd(a, c), rel=1e-4)


def test_the_loss_is_mean_l1_plus_mean_squared_discarded_coordinates_plus_coupled_l2():
    m = zoo.load("inn_ae_mnist", k=16, **TINY)
    _randomize_last_layers(m)
    x = tf.random.stateless_uniform((4, 28, 28, 1), (2, 3))
    terms = m._objective(x, training=False)
    z = m.forward(x).numpy()
    x_hat = m.decode(z[:, :16]).numpy()
    assert float(terms["reconstruction"]) == pytest.approx(
        np.mean(np.abs(x.numpy() - x_hat)), rel=1e-5
    )
    assert float(terms["sparsity"]) == pytest.approx(np.mean(z[:, 16:] ** 2), rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(
        float(terms["reconstruction"] + terms["sparsity"]), rel=1e-6
    )
    l2 = 0.5 * 1e-6 * sum(float(np.sum(v.numpy() ** 2)) for v in m.trainable_variables)
    assert float(m._l2()) == pytest.approx(l2, rel=1e-5)
    assert m.zoo_config["weight_decay_mode"] == "coupled_l2"
    opt = m.default_optimizer()
    assert (opt.beta_1, opt.beta_2, opt.epsilon) == (0.8, 0.8, 1e-4)


def test_gradients_reach_the_network_through_encoder_and_decoder():
    m = zoo.load("inn_ae_mnist", k=8, **TINY)
    x = tf.random.stateless_uniform((4, 28, 28, 1), (4, 4))
    with tf.GradientTape() as tape:
        loss = m._objective(x, training=True)["loss"]
    grads = tape.gradient(loss, m.trainable_variables)
    assert all(g is not None for g in grads)
    assert sum(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads) > len(grads) // 3


def test_learning_rate_milestones_count_epochs():
    cb = LearningRateMilestones(1e-3, [8, 10])
    assert [cb.rate(e) for e in (0, 7, 8, 9, 10, 12)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5]
    )


@pytest.mark.slow
def test_a_short_training_run_lowers_held_out_l1_on_digits(tmp_path):
    from zoo.training import TrainConfig, train

    config = {"k": 64, "conv_hidden": 8, "fc_hidden": 180, "learning_rate": 3e-3}
    before = zoo.load("inn_ae_mnist", **config)
    test = zoo.data.load("digits", "test", batch_size=200, num_examples=400)
    before.compile()
    l1_before = before.evaluate(test, verbose=0, return_dict=True)["reconstruction"]
    result = train(
        TrainConfig(
            model="inn_ae_mnist", dataset="digits", epochs=1, steps_per_epoch=150, batch_size=128,
            train_examples=6000, validation_steps=2, output=str(tmp_path / "run"), verbose=0,
            overrides=config,
        )
    )  # fmt: skip
    after = result.model
    l1_after = after.evaluate(test, verbose=0, return_dict=True)["reconstruction"]
    # Held-out digits (the test split is generated apart from the training split).
    assert l1_after < 0.85 * l1_before, (l1_before, l1_after)  # 0.113 before training


def test_classic_autoencoder_trains_and_has_the_same_interface():
    keras.utils.set_random_seed(0)
    m = zoo.load("ae_mnist", k=8)
    m.compile()
    x = zoo.data.load("digits", "train", batch_size=64, num_examples=640)
    before = m.evaluate(x, verbose=0, return_dict=True)["reconstruction"]
    m.fit(x, epochs=10, verbose=0)
    assert m.evaluate(x, verbose=0, return_dict=True)["reconstruction"] < 0.8 * before
    images = next(iter(x))[0]
    assert m.encode(images).shape == (64, 8)
    np.testing.assert_allclose(
        m.reconstruct(images).numpy(), m.decode(m.encode(images)).numpy(), rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"\(batch, 8\)"):
        m.decode(tf.zeros((2, 9)))


@pytest.mark.parametrize("name", ["ae_cifar10"])
def test_conv_baselines_reconstruct_their_image_shape(name):
    m = zoo.load(name, k=10)
    x = tf.random.stateless_uniform((2, *m.image_shape), (0, 0))
    assert m.reconstruct(x).shape == x.shape


@pytest.mark.slow
def test_vae_samples_and_exported_encode_decode_equal_reconstruct(tmp_path):
    from zoo.export import export_model

    m = zoo.load("inn_vae_mnist", k=8, **TINY)
    _randomize_last_layers(m)
    assert m.sample(3).shape == (3, 28, 28, 1)
    x = tf.random.stateless_uniform((3, 28, 28, 1), (5, 1))
    terms = m._objective(x, training=True)
    assert float(terms["mmd"]) > 0
    path = export_model(m, tmp_path)
    loaded = tf.saved_model.load(str(path))
    sig = loaded.signatures
    assert {"serving_default", "reconstruct", "encode", "decode", "sample"} <= set(sig)
    code = sig["encode"](images=x)["code"]
    decoded = sig["decode"](code=code)["images"]
    served = sig["reconstruct"](images=x)["reconstruction"]
    np.testing.assert_allclose(decoded.numpy(), served.numpy(), atol=1e-6)
    np.testing.assert_allclose(served.numpy(), m.reconstruct(x).numpy(), atol=1e-5)
    assert sig["sample"](n=tf.constant(4))["images"].shape == (4, 28, 28, 1)
    assert sig["sample"](n=tf.constant(0))["images"].shape == (0, 28, 28, 1)


@pytest.mark.slow
def test_reconstruct_over_grpc_from_a_trained_export(tmp_path):
    from zoo.serving import client
    from zoo.serving.testing import ServerProcess
    from zoo.training import TrainConfig, train

    result = train(
        TrainConfig(
            model="inn_ae_mnist", dataset="digits", epochs=1, steps_per_epoch=3, batch_size=32,
            train_examples=256, validation_steps=1, output=str(tmp_path / "run"),
            export_dir=str(tmp_path / "exports"), verbose=0,
            overrides={"k": 32, "conv_hidden": 8, "fc_hidden": 16},
        )
    )  # fmt: skip
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype(np.float32)
    with ServerProcess(
        "--model_name", "inn_ae_mnist", "--model_base_path", str(tmp_path / "exports" / "inn_ae_mnist"),
        rest=False,
    ) as server:  # fmt: skip
        out = client.predict(server.target, "inn_ae_mnist", {"images": x}, signature="reconstruct")
    np.testing.assert_allclose(
        out["reconstruction"], result.model.reconstruct(x).numpy(), atol=1e-5
    )
    assert out["code"].shape == (2, 32)


def test_bad_configs_and_inputs_get_clear_errors():
    with pytest.raises(zoo.InvalidConfigError, match="k"):
        zoo.load("inn_ae_mnist", k=785)
    with pytest.raises(zoo.InvalidConfigError, match="coupled_l2"):
        zoo.load("inn_ae_mnist", weight_decay_mode="decoupled")
    with pytest.raises(zoo.InvalidConfigError, match="divisible"):
        zoo.load("inn_ae_mnist", image_shape=(27, 27, 1), **TINY)
    with pytest.raises(ValueError, match="28, 28, 1"):
        zoo.load("inn_ae_mnist", **TINY).encode(tf.zeros((1, 32, 32, 1)))


def test_celeba_datasets_read_tfds_celeb_a_images_at_each_models_size():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4):
        full = next(iter(zoo.data.load("celeba", "train", batch_size=2, shuffle=False)))[0]
        crop = next(iter(zoo.data.load("celeba_156x128", "train", batch_size=2, shuffle=False)))[0]
    assert full.shape == (2, 218, 178, 3) and crop.shape == (2, 156, 128, 3)
    assert (
        full.dtype == tf.float32
        and 0 <= float(tf.reduce_min(full)) <= float(tf.reduce_max(full)) <= 1
    )
    np.testing.assert_array_equal(crop.numpy(), full.numpy()[:, 31:187, 25:153])
    assert zoo.get_spec("inn_ae_celeba").dataset == "celeba_156x128"
    assert zoo.get_spec("ae_celeba").dataset == "celeba"


def test_the_vae_serves_sample_and_decode_over_grpc(tmp_path):
    """The server warms every signature up with zero inputs, so sample(n=0) must work too. The
    served decode equals the model's; each served sample is the decode of a code: the flow maps
    it back to a latent whose d − k padding coordinates are zero."""
    from zoo.export import export_model
    from zoo.serving import client
    from zoo.serving.testing import ServerProcess

    model = zoo.load("inn_vae_mnist", k=8, **TINY)
    _randomize_last_layers(model)
    path = export_model(model, tmp_path)
    codes = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
    with ServerProcess(
        "--model_name", "inn_vae_mnist", "--model_base_path", str(path.parent), rest=False
    ) as s:
        images = client.predict(
            s.target, "inn_vae_mnist", {"n": np.array(3, np.int32)}, signature="sample"
        )["images"]
        decoded = client.predict(s.target, "inn_vae_mnist", {"code": codes}, signature="decode")[
            "images"
        ]
        empty = client.predict(
            s.target, "inn_vae_mnist", {"n": np.array(0, np.int32)}, signature="sample"
        )["images"]
    assert images.shape == (3, 28, 28, 1) and empty.shape == (0, 28, 28, 1)
    np.testing.assert_allclose(decoded, model.decode(codes).numpy(), atol=1e-5)
    z = model.flow(images, training=False).numpy()
    assert np.abs(z[:, 8:]).max() < 1e-3  # a decoded code: the padding comes back as zeros
    assert z[:, :8].std() > 0.3 and np.abs(images[0] - images[1]).max() > 1e-3  # drawn, distinct
