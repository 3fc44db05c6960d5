"""The in-domain generalization benchmark: splits, the R² metric, its regressors, the repro."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import zoo
import zoo.data
from zoo.data import generalization as gen
from zoo.data.errors import DatasetError, DatasetNotAvailableError
from zoo.data.factors import FactorGridError, get_factor_dataset, split_indices
from zoo.eval.generalization import (
    RSquared,
    evaluate_model,
    full_grid_variance,
    one_ood_analysis,
    pass_criterion,
)
from zoo.models.generalization import AddCoords, affine_sample

NO_ROT = "sprites/no_rotation"


# -- splits --------------------------------------------------------------------------------------
# Train fractions as products of the value-set sizes, written out by hand (digest b.1).
_PRODUCTS = {
    ("sprites", "extrapolation"): (4 / 6) * (32 / 40) * (25 / 32) ** 2,  # 0.3255
    ("sprites", "interpolation"): (4 / 6) * (32 / 40) * (25 / 32) ** 2,
    ("sprites", "composition"): 1 - (36 / 40) * (29 / 32) ** 2,  # 0.2608
    (NO_ROT, "extrapolation"): (4 / 6) * (25 / 32) ** 2,  # 0.4069
    (NO_ROT, "composition"): 1 - (5 / 6) * (29 / 32) ** 2,  # 0.3156
    ("shapes3d", "interpolation"): 0.8**3 * (6 / 8) * (12 / 15),  # 0.3072
    ("shapes3d", "composition"): 1 - 0.9**3 * (14 / 15),  # 0.3196
    ("mpi3d", "extrapolation"): (5 / 6) * (2 / 3) ** 2 * (36 / 40) ** 2,  # 0.3000
    ("mpi3d", "composition"): 1 - (34 / 40) ** 2,  # 0.2775
}


def test_dsprites_extrapolation_train_fraction_is_the_papers_0_3255():
    assert round(gen.train_fraction("dsprites", "extrapolation"), 4) == 0.3255
    mask = gen.split_masks(gen.benchmark_grid("dsprites"), "extrapolation",
                           gen.SPLIT_VALUES["dsprites"]["extrapolation"])  # fmt: skip
    assert mask.sum() == 240_000 and mask.size == 737_280  # 0.3255 of the grid


@pytest.mark.parametrize(("base", "variant"), list(_PRODUCTS))
def test_each_split_train_fraction_equals_the_product_of_its_value_sets(base, variant):
    grid = gen.benchmark_grid(base)
    mask = gen.split_masks(grid, variant, gen.SPLIT_VALUES[base][variant])
    assert mask.mean() == pytest.approx(_PRODUCTS[base, variant], abs=1e-9)
    assert gen.train_fraction(base, variant) == pytest.approx(_PRODUCTS[base, variant])


@pytest.mark.parametrize("base", ["sprites", NO_ROT, "sprites/quarter_rotation"])
def test_registered_splits_are_disjoint_cover_the_grid_and_are_deterministic(base):
    size = get_factor_dataset(base).grid.size
    for variant in gen.VARIANTS:
        train = split_indices(f"{base}/{variant}", "train")
        test = split_indices(f"{base}/{variant}", "test")
        # every grid index exactly once: disjoint and covering
        counts = np.bincount(np.concatenate([train, test]), minlength=size)
        assert counts.size == size and np.all(counts == 1)
        assert 0.25 < len(train) / size < 0.42
    # random matches the extrapolation fraction; a new data seed draws a new split
    n = len(split_indices(f"{base}/extrapolation", "train"))
    assert len(split_indices(f"{base}/random", "train")) == n
    a = np.sort(split_indices(f"{base}/random", "train", seed=0))
    b = np.sort(split_indices(f"{base}/random", "train", seed=1))
    assert not np.array_equal(a, b)
    grid = gen.benchmark_grid(base)
    again = gen.split_masks(grid, "random", gen.SPLIT_VALUES[base]["extrapolation"], seed=0)
    np.testing.assert_array_equal(np.flatnonzero(again), a)


def test_composition_is_train_if_any_exclusive_train_value_not_its_mirror():
    grid = gen.benchmark_grid("sprites")
    train = set(split_indices("sprites/composition", "train").tolist())
    # shape, scale, orientation, x, y: one exclusive-train value suffices for training ...
    for combo in ([0, 3, 0, 20, 20], [1, 5, 30, 1, 20], [2, 0, 30, 20, 2]):
        assert int(grid.index_of(combo)) in train
    # ... and the corner where no factor takes one is the test split.
    assert int(grid.index_of([0, 3, 30, 20, 20])) not in train
    # The mirror rule ("test if ANY") would train on 73.9 % of the grid.
    assert len(train) / grid.size == pytest.approx(0.2608, abs=1e-4)


def test_extrapolation_sends_an_image_with_any_exclusive_test_value_to_test():
    grid = gen.benchmark_grid(NO_ROT)  # shape, scale, x, y
    test = set(split_indices(f"{NO_ROT}/extrapolation", "test").tolist())
    assert int(grid.index_of([0, 5, 0, 0])) in test  # scale 5 alone
    assert int(grid.index_of([0, 0, 0, 25])) in test  # y 25 alone
    assert int(grid.index_of([2, 3, 24, 24])) not in test


def test_loaded_split_yields_normalised_labels_of_its_own_images():
    x, y = next(iter(zoo.data.load(f"{NO_ROT}/extrapolation", "test", batch_size=64)))
    assert x.shape == (64, 64, 64, 1) and y.shape == (64, 4)
    factors = np.round(y.numpy() * (np.array([3, 6, 32, 32]) - 1)).astype(int)
    ds = get_factor_dataset(NO_ROT)
    np.testing.assert_array_equal(x.numpy(), ds.images(ds.grid.index_of(factors)))
    excl = gen.SPLIT_VALUES[NO_ROT]["extrapolation"]
    hit = np.isin(factors[:, 1], excl["scale"]) | np.isin(factors[:, 2], excl["x_position"])
    hit |= np.isin(factors[:, 3], excl["y_position"])
    assert hit.all()  # every test image has an exclusive value


def test_unknown_split_lists_the_valid_ones_and_a_grid_less_dataset_is_refused():
    with pytest.raises(DatasetError, match="random, composition, interpolation, extrapolation"):
        gen.benchmark_variant("sprites/extrapolatoin")
    with pytest.raises(zoo.data.UnknownDatasetError, match="sprites/extrapolation"):
        zoo.data.load("sprites/extrapolatoin", "train")
    with pytest.raises(FactorGridError, match="has no factor grid with benchmark splits"):
        evaluate_model(lambda x: x, "mnist/extrapolation")
    with pytest.raises(zoo.InvalidConfigError, match="no factor grid"):
        zoo.load("gen_mlp", factors="mnist")


def test_shapes3d_variant_splits_the_tfds_label_grid(tmp_path):
    fields = {"label_floor_hue": [0, 8], "label_wall_hue": [0], "label_object_hue": [4],
              "label_scale": [0, 6], "label_shape": [0, 3], "label_orientation": [0, 12]}  # fmt: skip
    keys = list(fields)
    combos = np.array(list(itertools.product(*fields.values())))
    images = np.random.default_rng(0).integers(0, 256, (len(combos), 64, 64, 3)).astype(np.uint8)

    def as_dataset(self, split, *args, **kwargs):
        ex = {k: combos[:, i] for i, k in enumerate(keys)}
        extra = {k: tf.zeros(len(combos)) for k in self.info.features if k.startswith("value_")}
        return tf.data.Dataset.from_tensor_slices({**ex, "image": images, **extra})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        x, y = next(iter(zoo.data.load("shapes3d/extrapolation", "train", 64, data_dir=tmp_path)))
        _, yt = next(iter(zoo.data.load("shapes3d/extrapolation", "test", 64, data_dir=tmp_path)))
    # train: floor 0, scale 0, orientation 0 (both shapes); test: the other 14 combinations
    assert len(y) == 2 and len(yt) == 14
    np.testing.assert_allclose(y.numpy()[:, [0, 3, 5]], 0.0)
    for image, label in zip(x.numpy(), y.numpy(), strict=True):
        shape = round(label[4] * 3)
        row = np.flatnonzero((combos[:, [0, 3, 5]] == 0).all(1) & (combos[:, 4] == shape))[0]
        np.testing.assert_allclose(image, images[row] / 255.0, rtol=1e-6)


def _write_mpi3d(tmp_path, variant, split, n=6, channels_first=True):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 64, 64, 3)).astype(np.uint8)
    labels = np.stack([rng.integers(0, k, n) for k in gen.MPI3D_GRID.sizes], 1)
    stored = np.transpose(images, (0, 3, 1, 2)) if channels_first else images
    names = gen.mpi3d_filenames(variant, split)
    np.savez(tmp_path / names[0], stored)
    np.savez(tmp_path / names[1], labels)
    return images, labels


def test_mpi3d_reads_the_authors_split_files_and_names_a_missing_one(tmp_path):
    images, labels = _write_mpi3d(tmp_path, "extrapolation", "train")
    x, y = next(iter(zoo.data.load("mpi3d/extrapolation", "train", 16, tmp_path, shuffle=False)))
    np.testing.assert_allclose(x.numpy(), images / 255.0, rtol=1e-6)
    np.testing.assert_allclose(y.numpy(), labels / (np.array(gen.MPI3D_GRID.sizes) - 1))
    with pytest.raises(DatasetNotAvailableError, match="mpi3d_extrapolation_test_images.npz"):
        zoo.data.load("mpi3d/extrapolation", "test", data_dir=tmp_path)
    with pytest.raises(DatasetNotAvailableError, match="--data-dir"):
        zoo.data.load("mpi3d/random", "train")


# -- the metric ----------------------------------------------------------------------------------
def _grid_targets(sizes):
    axes = [np.arange(k) / (k - 1) for k in sizes]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(sizes))


def test_r_squared_is_1_when_perfect_0_for_the_grid_mean_and_matches_numpy():
    sizes = (3, 6, 32, 32)
    full = _grid_targets(sizes)
    np.testing.assert_allclose(full_grid_variance(sizes), full.var(0), rtol=1e-12)
    rng = np.random.default_rng(0)
    y = full[rng.choice(len(full), 500, replace=False)]  # a "test split": its variance differs
    metric = RSquared(factor_sizes=sizes)
    metric.update_state(y, y)
    assert float(metric.result()) == pytest.approx(1.0)
    metric.reset_state()
    metric.update_state(y, np.broadcast_to(full.mean(0), y.shape))
    expected_mean = 1 - ((y - full.mean(0)) ** 2).mean(0) / full.var(0)
    np.testing.assert_allclose(metric.per_factor().numpy(), expected_mean, atol=2e-5)
    metric.reset_state()
    metric.update_state(full, np.broadcast_to(full.mean(0), full.shape))
    np.testing.assert_allclose(metric.per_factor().numpy(), 0.0, atol=1e-6)
    # noisy predictions, fed in uneven batches, against an independent numpy computation
    p = y + rng.normal(0, 0.1, y.shape)
    metric.reset_state()
    for i in range(0, 500, 170):
        metric.update_state(y[i : i + 170], p[i : i + 170])
    expected = 1 - ((p - y) ** 2).mean(0) / full.var(0)
    np.testing.assert_allclose(metric.per_factor().numpy(), expected, atol=2e-5)
    assert float(metric.result()) == pytest.approx(expected.mean(), abs=2e-5)
    by_targets = RSquared(targets=full, factor=2)
    by_targets.update_state(y, p)
    assert float(by_targets.result()) == pytest.approx(expected[2], abs=2e-5)
    with pytest.raises(ValueError, match="exactly one of factor_sizes"):
        RSquared()


def test_one_ood_analysis_matches_a_hand_computation():
    sizes = (2, 5)  # factor 1 values 3, 4 never in training
    train = np.array([[0, 0], [1, 1], [0, 2], [1, 2]])
    test = np.array([[0, 3], [1, 4], [0, 4]])
    y = test / np.array([1, 4])
    pred = y.copy()
    pred[:, 1] = [0.6, 0.8, 0.9]  # truth 0.75, 1.0, 1.0
    out = one_ood_analysis(pred, test, train, sizes, ("a", "b"))
    var_b = 6 / 48
    assert out["count"] == 3
    sq = np.array([0.15**2, 0.2**2, 0.1**2]) / var_b
    assert out["r2_ood"] == pytest.approx(1 - sq.mean())
    assert out["r2_id"] == pytest.approx(1.0)
    mean_b = (0 + 0.25 + 0.5 + 0.5) / 4  # 0.3125
    r = [
        (0.6 - mean_b) / (0.75 - mean_b),
        (0.8 - mean_b) / (1 - mean_b),
        (0.9 - mean_b) / (1 - mean_b),
    ]
    assert out["r_median"] == pytest.approx(np.median(r))
    assert out["r_median_per_factor"] == {"b": pytest.approx(np.median(r))}


def test_pass_criterion_on_crafted_figures():
    ok = pass_criterion({"random": 0.998, "composition": 0.492}, 0.57, 0.939)
    assert ok["passed"] and all(ok.values())
    assert not pass_criterion({"random": 0.94, "composition": 0.4}, 0.57, 0.9)["passed"]
    assert not pass_criterion({"random": 0.99, "composition": 0.8}, 0.57, 0.9)["passed"]
    bad_scale = pass_criterion({"random": 0.99, "composition": 0.5}, 0.85, 0.9)
    assert not bad_scale["extrapolation_scale_r2_at_most_0.8"] and not bad_scale["passed"]
    assert not pass_criterion({"random": 0.99, "composition": 0.5}, 0.5, 1.02)["passed"]
    assert not pass_criterion({"random": 0.99, "composition": 0.5}, 0.5, float("nan"))["passed"]


# -- models --------------------------------------------------------------------------------------
_SMALL = {"factors": None, "image_shape": (32, 32, 1), "factor_sizes": (3, 6, 32, 32)}


def test_coordconv_adds_x_and_y_channels_linear_in_minus_1_to_1():
    x = np.random.default_rng(0).random((2, 5, 7, 3)).astype("float32")
    out = AddCoords()(x).numpy()
    assert out.shape == (2, 5, 7, 5)
    np.testing.assert_array_equal(out[..., :3], x)
    np.testing.assert_allclose(out[0, 3, :, 3], np.linspace(-1, 1, 7), atol=1e-6)
    np.testing.assert_allclose(out[1, :, 2, 4], np.linspace(-1, 1, 5), atol=1e-6)
    model = zoo.load("gen_coordconv", **_SMALL)
    assert model.net.layers[0].name == "add_coords"


def test_spatial_transformer_is_the_identity_at_init_and_samples_affinely():
    model = zoo.load("gen_stn", factors=NO_ROT)
    x = np.random.default_rng(0).random((3, 64, 64, 1)).astype("float32")
    np.testing.assert_allclose(model.net.transformer(x).numpy(), x, atol=1e-5)
    # a one-pixel shift to the left: theta translates by 2/W in normalised coordinates
    theta = np.tile(np.array([[1, 0, 2 / 64], [0, 1, 0]], "float32"), (3, 1, 1))
    shifted = affine_sample(tf.constant(x), theta).numpy()
    np.testing.assert_allclose(shifted[:, :, :-1], x[:, :, 1:], atol=1e-5)
    np.testing.assert_allclose(shifted[:, :, -1], 0.0, atol=1e-6)


def test_parameter_counts_are_the_papers_architectures():
    # DisLib CNN: 4×4 convs 32-32-64-64, a 4×4 conv to 256, linear to n (here 64×64×1, n = 4)
    cnn = zoo.load("gen_cnn", factors=NO_ROT)
    convs = 16 * (1 * 32 + 32 * 32 + 32 * 64 + 64 * 64 + 64 * 256) + 32 + 32 + 64 + 64 + 256
    assert cnn.count_params() == convs + 256 * 4 + 4
    mlp = zoo.load("gen_mlp", factors=NO_ROT)
    assert mlp.count_params() == (4096 * 90 + 90) + 3 * (90 * 90 + 90) + (90 * 45 + 45) + 45 * 4 + 4
    se = zoo.load("gen_set_encoder", **_SMALL)
    assert se.count_params() == (3 * 40 + 40) + (40 * 40 + 40) + (40 * 20 + 20) + 2 * 420 + 84


def test_keras_applications_backbone_loads_local_weights_and_has_a_new_head(tmp_path):
    source = keras.applications.ResNet50(include_top=False, weights=None,
                                         input_shape=(32, 32, 3), pooling="avg")  # fmt: skip
    path = tmp_path / "resnet50_notop.weights.h5"
    source.save_weights(path)
    model = zoo.load("gen_resnet50", backbone_weights=str(path), **_SMALL)
    assert model.count_params() == source.count_params() + 2048 * 4 + 4
    for a, b in zip(source.weights, model.net.backbone.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert model.learning_rate == 1e-4  # fine-tuning rate (App. H)
    assert model.head_layers()[0].units == 4
    out = model(np.zeros((2, 32, 32, 1), "float32"))
    assert out.shape == (2, 4)
    with pytest.raises(zoo.InvalidConfigError, match="no file"):
        zoo.load("gen_resnet50", backbone_weights=str(tmp_path / "missing.h5"), **_SMALL)


@pytest.mark.parametrize(("name", "app"), [("gen_resnet101", "ResNet101"),
                                           ("gen_densenet121", "DenseNet121")])  # fmt: skip
def test_other_keras_applications_are_built_headless_with_average_pooling(name, app, monkeypatch):
    calls = {}

    def fake(**kwargs):  # a stand-in, so the wiring is checked without building 300 layers
        calls.update(kwargs)
        inputs = keras.Input(kwargs["input_shape"])
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))

    monkeypatch.setattr(keras.applications, app, fake)
    model = zoo.load(name, **_SMALL)
    assert calls == {"include_top": False, "weights": None, "input_shape": (32, 32, 3),
                     "pooling": "avg"}  # fmt: skip
    assert model.learning_rate == (1e-4 if "densenet" in name else 5e-4)
    assert model(np.zeros((2, 32, 32, 1), "float32")).shape == (2, 4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gen_resnet101", "gen_densenet121"])
def test_other_keras_applications_build_from_scratch(name):
    model = zoo.load(name, **_SMALL)
    feats = 1024 if "densenet" in name else 2048
    assert model.net.backbone.output_shape == (None, feats)


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory):
    """gen_cnn trained through the zoo's trainer on the rotation-free random split, exported."""
    from zoo.training import TrainConfig, train

    out = tmp_path_factory.mktemp("gen")
    result = train(
        TrainConfig(
            model="gen_cnn", dataset=f"{NO_ROT}/random", overrides={"factors": NO_ROT},
            epochs=1, steps_per_epoch=120, validation_steps=2, batch_size=32,
            output=str(out / "run"), export_dir=str(out / "export"), verbose=0,
        )
    )  # fmt: skip
    return result


def test_cnn_learns_the_factors_through_the_trainer(trained_cnn):
    untrained = zoo.load("gen_cnn", factors=NO_ROT)
    before = evaluate_model(untrained, f"{NO_ROT}/random", max_examples=512)
    after = evaluate_model(trained_cnn.model, f"{NO_ROT}/random", max_examples=512)
    assert after["r2"] > before["r2"] + 0.3 and after["r2"] > 0.4
    assert "val_r_squared" in trained_cnn.metrics
    # composition has no unseen value; extrapolation has a single-OOD-factor subset
    assert after["one_ood"]["count"] == 0
    ext = evaluate_model(trained_cnn.model, f"{NO_ROT}/extrapolation", max_examples=256)
    assert ext["one_ood"]["count"] > 0 and np.isfinite(ext["one_ood"]["r_median"])


def test_exported_factors_equal_the_keras_models(trained_cnn, tmp_path):
    x = np.random.default_rng(0).random((4, 64, 64, 1)).astype("float32")
    loaded = tf.saved_model.load(str(trained_cnn.export_path))
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(out["factors"].numpy(), trained_cnn.model(x).numpy(), atol=1e-5)
    from zoo.export import export_model

    # the spatial transformer's sampler is the one custom op in a graph; the serving code is
    # shared by every architecture
    for name in ("gen_stn",):
        model = zoo.load(name, factors=NO_ROT)
        path = export_model(model, str(tmp_path / "e"))
        sig = tf.saved_model.load(str(path)).signatures["serving_default"]
        xs = x
        np.testing.assert_allclose(sig(images=tf.constant(xs))["factors"].numpy(),
                                   model(xs).numpy(), atol=1e-5)  # fmt: skip


def test_readout_trains_on_a_frozen_encoder():
    model = zoo.load("gen_readout", encoder="pcl_sprites", **{**_SMALL, "image_shape": (64, 64, 1)})
    model.compile()
    encoder = model.net.encoder
    before = [w.numpy().copy() for w in encoder.weights]
    head_before = [w.numpy().copy() for w in model.net.mlp.weights]
    x, y = next(iter(zoo.data.load(f"{NO_ROT}/random", "train", batch_size=64)))
    losses = [model.train_on_batch(x, y, return_dict=True)["loss"] for _ in range(40)]
    assert losses[-1] < 0.8 * losses[0]
    for a, w in zip(before, encoder.weights, strict=True):
        np.testing.assert_array_equal(a, w.numpy())
    assert any(
        not np.array_equal(a, w.numpy())
        for a, w in zip(head_before, model.net.mlp.weights, strict=True)
    )
    assert [v.path for v in model.trainable_variables] == [
        v.path for v in model.net.mlp.trainable_variables
    ]


def test_wrong_label_count_names_the_factors_option():
    model = zoo.load("gen_mlp", factors="sprites")  # 5 factors
    model.compile()
    x = np.zeros((4, 64, 64, 1), "float32")
    with pytest.raises(ValueError, match="--set factors="):
        model.fit(x, np.zeros((4, 4), "float32"), verbose=0)


def test_repro_models_option_rejects_unknown_names():
    from zoo.repro import experiment_options
    from zoo.repro.generalization import MODELS, format_table, parse_models

    assert parse_models("cnn, mlp") == ["cnn", "mlp"]
    with pytest.raises(ValueError, match="choose from"):
        parse_models("cnn,rotation_eq")
    assert set(experiment_options("generalization")) == {"dataset", "models"}
    lines = format_table({"cnn": {"random": 0.998}}, {"cnn": (100.0, 53.3, 99.7, 78.4)}, "T6")
    assert "99.8 | 100.0" in lines[-1] and len(MODELS) == 12
