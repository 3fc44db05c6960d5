"""Factor grids, the procedural sprites, the LAP/UNI pair samplers and the TFDS factor datasets
(002_7240b1e8d13f6586.txt, SlowVAE App. D.2; shared/digests/slowvae_benchmark_noise.md a.2)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import zoo.data
from zoo.data import pairs
from zoo.data.errors import DatasetError, DatasetNotAvailableError
from zoo.data.factors import FactorGrid, FactorGridError, get_factor_dataset
from zoo.data.pairs import PairSampler
from zoo.data.sprites import Sprites


@pytest.fixture(scope="module")
def sprites():
    return get_factor_dataset("sprites")


def _factor_indices(grid, labels):
    return np.rint(np.asarray(labels) * (np.asarray(grid.sizes) - 1)).astype(np.int64)


# -- the grid ----------------------------------------------------------------------------------
def test_the_sprites_grid_is_dsprites_and_index_factor_lookup_round_trips(sprites):
    grid = sprites.grid
    assert grid.names == ("shape", "scale", "orientation", "x_position", "y_position")
    assert grid.sizes == (3, 6, 40, 32, 32) and grid.size == 737_280
    assert grid.categorical == (True, False, False, False, False)
    every = grid.all_indices()
    np.testing.assert_array_equal(grid.index_of(grid.factors_of(every)), every)
    # C order, the last factor fastest (disentanglement_lib's and the authors' IndexManager).
    np.testing.assert_array_equal(
        grid.factors_of([1, 32, 1024]), [[0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0]]
    )
    np.testing.assert_allclose(grid.normalize([[2, 5, 39, 31, 0]]), [[1, 1, 1, 1, 0]])
    np.testing.assert_allclose(grid.values[2][10], np.pi / 2)  # orientation 10 is 90°


def test_variants_have_their_grids_and_image_sizes():
    none, quarter = (
        get_factor_dataset("sprites/no_rotation"),
        get_factor_dataset("sprites/quarter_rotation"),
    )
    small = get_factor_dataset("sprites/no_rotation_32x32")
    assert (
        none.grid.names == ("shape", "scale", "x_position", "y_position")
        and none.grid.size == 18_432
    )
    assert quarter.grid.sizes[2] == 10 and max(quarter.grid.values[2]) < np.pi / 2
    assert small.image_shape == (32, 32, 1) and small.images([0]).shape == (1, 32, 32, 1)


def test_sprites_render_binary_images_deterministically_and_zoo_data_labels_name_them(sprites):
    x, y = next(iter(zoo.data.load("sprites", "train", batch_size=24, shuffle=False)))
    assert x.shape == (24, 64, 64, 1) and y.shape == (24, 5) and y.dtype == tf.float32
    assert (
        set(np.unique(x.numpy())) <= {0.0, 1.0}
        and float(tf.reduce_min(tf.reduce_sum(x, [1, 2, 3]))) > 0
    )
    index = sprites.grid.index_of(_factor_indices(sprites.grid, y))
    np.testing.assert_array_equal(sprites.images(index), x.numpy())  # labels ↔ images exact
    fresh = Sprites()  # another instance, empty patch cache: the same pixels
    np.testing.assert_array_equal(fresh.images(index), x.numpy())


def test_each_factor_moves_the_sprite_the_way_it_says(sprites):
    grid = sprites.grid

    def centre_and_area(f):
        img = sprites.images(grid.index_of([f]))[0, ..., 0]
        rows, cols = np.nonzero(img)
        return cols.mean(), rows.mean(), img.sum()

    # Centres 1.5 px apart at 64×64: a binary square moves by 1 or 2 whole pixels per step.
    xs = [centre_and_area([0, 3, 0, i, 16])[0] for i in range(32)]
    assert set(np.diff(xs)) <= {1.0, 2.0}
    np.testing.assert_allclose(xs[-1] - xs[0], 31 * 1.5, atol=0.51)
    ys = [centre_and_area([0, 3, 0, 16, j])[1] for j in range(32)]
    assert set(np.diff(ys)) <= {1.0, 2.0}
    np.testing.assert_allclose(ys[-1] - ys[0], 31 * 1.5, atol=0.51)
    areas = [centre_and_area([0, k, 0, 16, 16])[2] for k in range(6)]
    assert np.all(np.diff(areas) > 0)  # scale 0.5 … 1 grows the square
    np.testing.assert_allclose(areas[-1] / areas[0], 4.0, rtol=0.1)  # area ∝ scale²
    heart = [sprites.images(grid.index_of([[2, 5, o, 16, 16]]))[0] for o in (0, 10, 20)]
    assert not np.array_equal(heart[0], heart[1]) and not np.array_equal(heart[0], heart[2])
    square = sprites.images(grid.index_of([[0, 5, 0, 16, 16], [0, 5, 10, 16, 16]]))
    assert np.mean(square[0] != square[1]) < 0.002  # the square's 90° symmetry, as in dSprites


def test_subsets_keep_sampling_and_pipelines_inside_their_indices(sprites):
    grid = sprites.grid
    big = grid.select(lambda f: f["scale"] >= 4)
    assert len(big) == grid.size // 3
    sub = sprites.subset(big)
    assert np.all(np.isin(sub.sample_indices(500, np.random.default_rng(0)), big))
    fixed = sub.sample_indices(200, np.random.default_rng(1), fixed=(3, np.full(200, 7)))
    assert np.all(grid.factors_of(fixed)[:, 3] == 7) and np.all(np.isin(fixed, big))
    _, labels = next(iter(sub.as_dataset(batch_size=64, shuffle=True)))
    assert np.all(_factor_indices(grid, labels)[:, 1] >= 4)
    with pytest.raises(FactorGridError, match="holds 245760 of the 737280"):
        sub.images([0])


# -- pairs ---------------------------------------------------------------------------------------
def _changed_count_distribution(grid, rate=1.0, resample_static=True):
    """The exact law of the number of changed factors under LAP: independent factors, each
    moving with probability q_j = E_start[1 − p(start | start)]; static pairs move to 1."""
    probs = np.array([1.0])
    for k, cat in zip(grid.sizes, grid.categorical, strict=True):
        if cat or k == 1:
            continue
        v = np.arange(k)
        p = np.exp(-np.abs(v[None] - v[:, None]) / (np.log(k) / rate))
        p /= p.sum(1, keepdims=True)
        q = 1.0 - np.mean(np.diag(p))
        probs = np.convolve(probs, [1 - q, q])
    if resample_static:
        probs[1] += probs[0]
        probs[0] = 0.0
    return probs


def test_lap_pairs_match_the_truncated_laplace_law_keep_shape_and_are_never_static(sprites):
    grid = sprites.grid
    rng = np.random.default_rng(0)
    n = 40_000
    first = grid.sample(n, rng)
    second = PairSampler(grid, "lap").second_frames(first, rng)
    changed = (second != first).sum(1)
    hist = np.bincount(changed, minlength=5) / n
    expected = _changed_count_distribution(grid)
    assert hist[0] == 0 and np.all(second[:, 0] == first[:, 0])  # no static pair; shape fixed
    np.testing.assert_allclose(hist, expected, atol=4 * np.sqrt(0.25 / n))
    # Fig. 8: with rate 1 several factors change in most pairs.
    assert expected[2:].sum() > 0.8
    # One factor's moves follow p(v) ∝ exp(−|v − s| / (ln K / rate)) on {0, …, K−1}.
    start = np.tile([[1, 2, 5, 0, 16]], (n, 1))
    moved = PairSampler(grid, "lap_nc").second_frames(start, rng)[:, 3]
    v = np.arange(32)
    law = np.exp(-v / np.log(32))
    np.testing.assert_allclose(np.bincount(moved, minlength=32) / n, law / law.sum(), atol=0.01)


def test_lap_nc_keeps_static_pairs_at_the_predicted_rate(sprites):
    grid, rng = sprites.grid, np.random.default_rng(1)
    first = grid.sample(40_000, rng)
    second = PairSampler(grid, "lap_nc").second_frames(first, rng)
    static = np.mean(np.all(second == first, axis=1))
    np.testing.assert_allclose(
        static, _changed_count_distribution(grid, resample_static=False)[0], atol=0.004
    )


def test_uni_pairs_change_exactly_k_uniform_in_1_to_d_minus_1_factors(sprites):
    grid, rng = sprites.grid, np.random.default_rng(2)
    first = grid.sample(30_000, rng)
    second = PairSampler(grid, "uni").second_frames(first, rng)
    counts = np.bincount((second != first).sum(1), minlength=5) / len(first)
    np.testing.assert_allclose(counts, [0, 0.25, 0.25, 0.25, 0.25], atol=0.015)
    assert np.mean(second[:, 0] != first[:, 0]) > 0.3  # UNI may change the shape too
    k2 = PairSampler(grid, "uni", k=2).second_frames(first[:1000], rng)
    assert np.all((k2 != first[:1000]).sum(1) == 2)


def test_pairs_drawn_inside_a_region_stay_inside_it(sprites):
    grid = sprites.grid
    region = grid.select(lambda f: f["x_position"] < 16)
    keys = pairs.pair_examples(sprites, region[:5000], region=region, seed=3).keys
    assert np.all(np.isin(keys, region))
    assert np.all(keys[:, 0] != keys[:, 1])


def test_pair_datasets_yield_whole_pairs_whose_labels_name_both_frames():
    sprites = get_factor_dataset("sprites/no_rotation")
    ds = zoo.data.load("sprites/no_rotation/lap", "train", batch_size=8, shuffle=True, seed=1)
    x, y = next(iter(ds))
    assert x.shape == (8, 2, 64, 64, 1) and y.shape == (8, 2, 4)
    f = _factor_indices(sprites.grid, y.numpy())
    np.testing.assert_array_equal(sprites.images(sprites.grid.index_of(f)), x.numpy())
    assert np.all(f[:, 0, 0] == f[:, 1, 0]) and np.all(np.any(f[:, 0] != f[:, 1], axis=1))
    # One pair starts at every grid point (train); the test split is a draw of 4,096 pairs.
    assert zoo.data.num_examples_of("sprites/no_rotation/lap", "train") == 18_432
    keys = pairs.pair_examples_for_split("sprites/no_rotation", "train", "lap", 1, None, False).keys
    assert len(np.unique(keys[:, 0])) == 18_432
    assert zoo.data.num_examples_of("sprites/no_rotation/uni", "test") == 4096


def test_bad_pair_modes_factors_and_datasets_get_clear_errors(sprites):
    with pytest.raises(ValueError, match="unknown pair mode 'gaussian'.*'lap', 'lap_nc', 'uni'"):
        PairSampler(sprites.grid, "gaussian")
    with pytest.raises(FactorGridError, match="'x_position' has 32 values"):
        sprites.grid.index_of([[0, 0, 0, 32, 0]])
    with pytest.raises(FactorGridError, match="shape \\(\\.\\.\\., 5\\)"):
        sprites.grid.index_of([[0, 0]])
    with pytest.raises(FactorGridError, match="'mnist' has no factor grid.*sprites"):
        pairs.pair_dataset("mnist")
    with pytest.raises(FactorGridError, match="Did you mean: scale"):
        sprites.grid.position("scal")
    with pytest.raises(FactorGridError, match="no factor of"):
        PairSampler(FactorGrid(("a",), (1,)), "uni")


# -- TFDS datasets through their label fields -----------------------------------------------------
_SUBGRIDS = {  # a complete product of a few values of each label field (the rest absent)
    "dsprites": {"label_shape": [0, 1, 2], "label_scale": [0, 3], "label_orientation": [0],
                 "label_x_position": [0, 1, 2, 3], "label_y_position": [0, 1, 2]},
    "shapes3d": {"label_floor_hue": [0, 1], "label_wall_hue": [0], "label_object_hue": [4, 5],
                 "label_scale": [0, 1, 2], "label_shape": [0, 3], "label_orientation": [0, 1]},
    "smallnorb": {"label_category": [0, 2], "instance": None, "label_elevation": [0, 1],
                  "label_azimuth": [0, 1, 2], "label_lighting": [0, 5]},
}  # fmt: skip


def _mock_examples(name, split):
    fields = dict(_SUBGRIDS[name])
    if name == "smallnorb":  # train and test hold different instances, as the real splits
        fields["instance"] = [4, 6] if split == "train" else [0, 1]
    keys = list(fields)
    grid = np.stack(np.meshgrid(*fields.values(), indexing="ij"), -1).reshape(-1, len(keys))
    size, channels = {"dsprites": (64, 1), "shapes3d": (64, 3), "smallnorb": (96, 1)}[name]
    rng = np.random.default_rng([len(name), len(split)])
    images = rng.integers(0, 2, (len(grid), size, size, channels)).astype(np.uint8)
    if name != "dsprites":
        images *= 255
    examples = {k: grid[:, i] for i, k in enumerate(keys)}
    examples["image"] = images
    return examples


@pytest.mark.parametrize("name", ["dsprites", "shapes3d", "smallnorb"])
def test_tfds_factor_datasets_drive_the_pair_sampler_through_their_label_fields(name, tmp_path):
    written = {}

    def as_dataset(self, split, *args, **kwargs):
        ex = _mock_examples(name, split)
        written[split] = ex
        extra = {k: tf.zeros(len(ex["image"]), tf.float32) for k in self.info.features
                 if k.startswith("value_")}  # fmt: skip
        if "image2" in self.info.features:
            extra["image2"] = ex["image"]
        return tf.data.Dataset.from_tensor_slices({**ex, **extra})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        ds = get_factor_dataset(name, data_dir=tmp_path)
        x, y = next(iter(pairs.pair_dataset(ds, batch_size=16, seed=0)))
    held = sum(len(e["image"]) for e in written.values())
    assert len(ds) == held < ds.grid.size  # a subset of the TFDS-declared grid
    assert x.shape == (16, 2, 64, 64, ds.image_shape[-1])
    f = _factor_indices(ds.grid, y.numpy())
    assert np.all(ds.contains(ds.grid.index_of(f)))  # both frames inside what the data holds
    for j in np.flatnonzero(ds.grid.categorical):
        np.testing.assert_array_equal(f[:, 0, j], f[:, 1, j])
    # Lookup is exact: the image of a grid index is the one written with those labels.
    ex = written["train"]
    keys = [k for k in _SUBGRIDS[name]]
    first = ds.grid.index_of(np.stack([ex[k] for k in keys], 1)[:5])
    got = ds.images(first)
    if name == "smallnorb":
        resized = tf.image.resize(ex["image"][:5], (64, 64), antialias=True).numpy()
        np.testing.assert_allclose(got * 255, np.clip(np.round(resized), 0, 255), atol=0.5)
        assert ds.observed == (0, 2, 3, 4)  # the instance is unobserved by the metrics
    else:
        scale = 1.0 if name == "dsprites" else 255.0
        np.testing.assert_array_equal(got, ex["image"][:5] / scale)


def test_tfds_labels_that_repeat_a_combination_or_missing_data_are_refused(tmp_path):
    def duplicates(self, split, *args, **kwargs):
        ex = _mock_examples("dsprites", split)
        ex = {k: np.concatenate([v, v[:1]]) for k, v in ex.items()}
        extra = {k: tf.zeros(len(ex["image"]), tf.float32) for k in self.info.features
                 if k.startswith("value_")}  # fmt: skip
        return tf.data.Dataset.from_tensor_slices({**ex, **extra})

    with tfds.testing.mock_data(as_dataset_fn=duplicates):
        with pytest.raises(DatasetError, match="1 examples repeat a factor combination"):
            get_factor_dataset("dsprites", data_dir=tmp_path / "dup")
    with pytest.raises(DatasetNotAvailableError, match="--data-dir.*--dataset sprites"):
        get_factor_dataset("shapes3d", data_dir=tmp_path / "empty")
