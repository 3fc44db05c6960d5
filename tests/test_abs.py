"""ABS (002_7240b1e8d13f6586.txt; digest abs.md): grouped layers, class-balanced training, the
latent search, calibration, Binary ABS and the export."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import zoo
import zoo.data
from zoo.models.abs import KLAnnealing, latent_bank

SMALL = {"bank_size": 300, "search_steps": 8}  # test-sized latent search


@pytest.fixture(scope="module")
def digits():
    x, y = next(iter(zoo.data.load("digits", "test", batch_size=64, shuffle=False)))
    return x.numpy(), y.numpy()


@pytest.fixture(scope="module")
def small_abs():
    return zoo.load("abs_mnist", **SMALL)


def _balanced_batch(n_per_class=4, seed=0):
    ds = zoo.data.load(
        "digits", "train", batch_size=10 * n_per_class, num_examples=2000, repeat=True,
        class_balanced=True, seed=seed,
    )  # fmt: skip
    x, y = next(iter(ds))
    return x, y


# -- the architecture -----------------------------------------------------------------------------
def test_ten_vaes_have_the_papers_parameter_count():
    # digest §1.2: encoder 61,616 + 256 BN statistics, decoder 23,745 + 128, per class
    model = zoo.load("abs_mnist", bank_size=10)
    per_class = 61_616 + 256 + 23_745 + 128
    assert model.count_params() == 10 * per_class + 1  # + the KL weight
    out = model.decode(tf.zeros((2, 10, 8)))
    assert out.shape == (2, 28, 28, 10)  # 1 → 4 → 11 → 25 → 28: the last kernel is 4


def test_inference_decoder_folds_batchnorm_exactly():
    """decode(training=False) folds each BatchNorm into the convolution before it; with
    non-trivial statistics it must equal running the layers."""
    import keras

    model = zoo.load("abs_mnist", bank_size=10)
    rng = np.random.default_rng(0)
    for layer in model.decoder_layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            layer.beta.assign(rng.normal(0, 0.2, c))
            layer.moving_mean.assign(rng.normal(0, 0.3, c))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c))
    z = tf.random.stateless_normal((3, 10, 8), seed=(1, 1))
    h = tf.reshape(z, [-1, 1, 1, 80])
    for layer in model.decoder_layers:
        h = layer(h, training=False)
    layers = tf.sigmoid(model.decoder_out(h)).numpy()
    np.testing.assert_allclose(model.decode(z).numpy(), layers, atol=2e-6)
    assert np.abs(layers - 0.5).max() > 0.1  # the statistics matter


# -- training -------------------------------------------------------------------------------------
def test_class_balanced_batches_interleave_every_class():
    x, y = _balanced_batch(n_per_class=6)
    assert y.numpy().tolist() == list(range(10)) * 6
    with pytest.raises(zoo.data.DatasetError, match="multiple of 10"):
        zoo.data.load("digits", "train", batch_size=64, num_examples=500, repeat=True,
                      class_balanced=True)  # fmt: skip


def test_train_step_refuses_a_mixed_batch_with_a_clear_message(small_abs, digits):
    x, y = digits
    small_abs.compile()
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_balanced=True"):
        small_abs.train_step((tf.constant(x[:40]), tf.constant(y[:40])))


def test_a_class_vae_never_sees_another_class():
    """Two batches that differ only in their class-3 images leave every other class's weights
    and BatchNorm statistics identical after a training step."""
    x, y = _balanced_batch(n_per_class=4)
    x2 = x.numpy().copy()
    x2[y.numpy() == 3] = np.random.default_rng(0).random(x2[y.numpy() == 3].shape)
    results = []
    for xs in (x, tf.constant(x2)):
        tf.keras.utils.set_random_seed(0)
        model = zoo.load("abs_mnist", bank_size=10)
        model.compile()
        model.train_step((xs, y))
        results.append({w.path: w.numpy() for w in model.weights})
    changed_groups = set()
    for path, a in results[0].items():
        b = results[1][path]
        if a.shape == () or np.array_equal(a, b):
            continue
        groups = a.reshape(-1, 10, a.shape[-1] // 10) if a.shape[-1] % 10 == 0 else None
        assert groups is not None, path
        bg = b.reshape(groups.shape)
        changed_groups |= {g for g in range(10) if not np.array_equal(groups[:, g], bg[:, g])}
    assert changed_groups == {3}


def test_kl_weight_anneals_linearly_from_10_to_1_over_50_epochs():
    schedule = KLAnnealing(10.0, 1.0, 50)
    assert [schedule.value(e) for e in (0, 25, 50, 80)] == [10.0, 5.5, 1.0, 1.0]


# -- inference ------------------------------------------------------------------------------------
def test_latent_bank_keeps_the_8000_densest_of_8888_draws():
    bank = latent_bank()
    assert bank.shape == (8000, 8) and bank.dtype == np.float32
    draws = np.random.RandomState(1234).multivariate_normal(np.zeros(8), np.eye(8), 8888)
    norms = np.linalg.norm(draws, axis=1)
    # Exactly the draws whose norm is among the 8,000 smallest, in draw order: every kept row is
    # one of the draws, and no dropped draw is denser than the sparsest kept one.
    kept = norms <= np.sort(norms)[7999]
    assert kept.sum() == 8000
    np.testing.assert_array_equal(bank, draws[kept].astype(np.float32))
    assert norms[~kept].min() > np.linalg.norm(bank, axis=1).max()
    other = latent_bank(seed=1235)
    assert not np.allclose(other, bank)  # the seed matters


def test_latent_search_lowers_the_loss_and_the_norm_clip_holds(small_abs, digits):
    x = digits[0][:8]
    start = small_abs.fit_latents(x, steps=1)["losses"].numpy()  # the best bank code
    fitted = small_abs.fit_latents(x, steps=20)["losses"].numpy()
    assert (fitted < start).all()  # every (image, class) fit improves on its bank start
    clipped = zoo.load("abs_mnist", latent_clip=0.3, **SMALL)
    z = clipped.fit_latents(x)["latents"].numpy()
    assert np.linalg.norm(z, axis=-1).max() <= 0.3 + 1e-5
    v = tf.constant([[-3.0, 4.0] + [0.0] * 6])  # the sign-correct projection z·r/‖z‖
    np.testing.assert_allclose(clipped._clip(v).numpy()[0, :2], [-0.18, 0.24], atol=1e-6)


@pytest.mark.parametrize("n", [1, 37, 64])
def test_side_by_side_searches_equal_one_search_over_the_batch(small_abs, digits, n):
    """search_parallelism splits the batch into concurrent searches (1 for one image, 2 for
    37 images in unequal slices, 4 for 64): a speed knob, so the results must not change."""
    x = np.concatenate([digits[0]] * 2)[:n]
    single = zoo.load("abs_mnist", **SMALL, search_parallelism=1)
    single.set_weights(small_abs.get_weights())
    want, got = single.fit_latents(x), small_abs.fit_latents(x)
    for key in ("losses", "latents", "reconstructions"):
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), atol=1e-5)
    assert small_abs.search_parallelism == 4 and got["losses"].shape == (n, 10)


def test_logits_are_minus_gamma_times_the_loss_and_probabilities_calibrated(digits):
    x = digits[0][:4]
    model = zoo.load("binary_abs_mnist", **SMALL)
    losses = model.fit_latents(x)["losses"].numpy()
    gamma = np.array(model.gamma, np.float32)
    logits = model(x).numpy()
    np.testing.assert_allclose(logits, -gamma * losses, rtol=1e-5)
    e = np.exp(440.0 * logits.astype(np.float64)) + 3.9e-5
    np.testing.assert_allclose(model.probabilities(logits).numpy(), e / e.sum(1, keepdims=True),
                               rtol=1e-4)  # fmt: skip
    np.testing.assert_allclose(model.probabilities(logits).numpy().sum(1), 1.0, rtol=1e-5)


def test_binary_abs_gives_the_same_output_for_x_and_round_x(digits):
    model = zoo.load("binary_abs_mnist", **SMALL)
    x = digits[0][:4]
    np.testing.assert_array_equal(model(x).numpy(), model(np.round(x)).numpy())
    plain = zoo.load("abs_mnist", **SMALL)
    assert not np.array_equal(plain(x).numpy(), plain(np.round(x)).numpy())


def test_prototypes_are_rebuilt_when_the_decoder_changes(small_abs, digits):
    model = zoo.load("abs_mnist", **SMALL)
    before = model.prototypes().numpy()
    np.testing.assert_array_equal(before, model.prototypes().numpy())  # cached
    kernel = model.decoder_out.kernel
    kernel.assign(kernel * 1.5)
    after = model.prototypes().numpy()
    assert not np.allclose(before, after)
    z = tf.tile(tf.constant(latent_bank(SMALL["bank_size"]))[:, None], [1, 10, 1])
    direct = tf.reshape(model.decode(z), [SMALL["bank_size"], 784, 10]).numpy()
    np.testing.assert_allclose(after, direct.transpose(2, 0, 1), atol=1e-6)


# -- export ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_export_round_trips_without_the_decoded_bank(tmp_path, digits):
    from zoo.export import export_model

    model = zoo.load("abs_mnist", **SMALL)
    x = digits[0][:4]
    want = model.fit_latents(x)
    path = export_model(model, tmp_path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size < 20e6  # weights only; the 10×S×784 bank is rebuilt at the first call
    loaded = tf.saved_model.load(str(path))
    rec = loaded.signatures["reconstruct"](images=tf.constant(x))
    np.testing.assert_allclose(rec["reconstructions"], want["reconstructions"], atol=1e-5)
    np.testing.assert_allclose(rec["latents"], want["latents"], atol=1e-5)
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(out["logits"], model.logits_from_losses(want["losses"]), atol=1e-6)
    assert out["classes"].numpy().tolist() == np.argmax(out["logits"], 1).tolist()


@pytest.mark.slow
def test_short_training_on_digits_reaches_high_held_out_accuracy(tmp_path, cli):
    run = tmp_path / "run"
    result = cli(["training/train.py", "--model", "abs_mnist", "--dataset", "digits",
                  "--epochs", "4", "--train-examples", "12000", "--validation-steps", "5",
                  "--set", "kl_anneal_epochs=3", "--output", str(run), "--verbose", "0"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    model = zoo.load("abs_mnist", weights=str(run), search_steps=50)
    x, y = next(iter(zoo.data.load("digits", "test", batch_size=100, shuffle=False)))
    accuracy = float(np.mean(np.argmax(model(x).numpy(), 1) == y.numpy()))
    assert accuracy >= 0.85, accuracy


def test_served_serving_default_and_reconstruct_over_grpc(tmp_path, digits):
    # The official tensorflow_serving client, unchanged, against the zoo's server.
    from helpers.serving import ServerProcess, official_predict

    from zoo.export import export_model

    model = zoo.load("abs_mnist", **SMALL)
    x = digits[0][:3]
    want = model.fit_latents(x)
    export_model(model, tmp_path)
    with ServerProcess(
        "--model_name", "abs_mnist", "--model_base_path", str(tmp_path / "abs_mnist"), rest=False
    ) as server:  # fmt: skip
        out = official_predict(server.target, "abs_mnist", "serving_default", images=x)
        logits = model.logits_from_losses(want["losses"]).numpy()
        np.testing.assert_allclose(out["logits"], logits, atol=1e-5)
        np.testing.assert_allclose(out["probabilities"].sum(1), 1.0, atol=1e-5)
        assert out["classes"].tolist() == np.argmax(logits, 1).tolist()
        rec = official_predict(server.target, "abs_mnist", "reconstruct", images=x)
        np.testing.assert_allclose(rec["reconstructions"], want["reconstructions"], atol=1e-5)
        np.testing.assert_allclose(rec["latents"], want["latents"], atol=1e-5)
