"""Mixed precision and XLA in the trainer (zoo.precision, zoo-train --mixed-precision/--jit-compile).

Claims: a float16 run under a 2-replica MirroredStrategy follows the float32 trajectory; the loss
scale halves, and every replica skips the step, when one replica overflows (Keras' own
LossScaleOptimizer corrupts the weights there); each custom train_step keeps its gradients finite
under float16; the parts a model declares float32 stay float32, invertible models round-trip
exactly, and the models that cannot honour a mixed precision refuse it; an XLA step equals the
eager one.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, run_cli

import zoo
import zoo.data
from zoo.layers.invertible import IRevNetBlock
from zoo.precision import (
    LossScaleOptimizer,
    PrecisionError,
    apply_mixed_precision,
    restore_float32,
)
from zoo.training import TrainConfig, UsageError, _build_training_state, train

TRAJECTORY = str(ROOT / "tests" / "helpers" / "loss_trajectory.py")
LOSS_SCALE = str(ROOT / "tests" / "helpers" / "loss_scale_mirrored.py")
SYNC = {"sync_batchnorm": True}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """cnn_mnist, plain SGD, same global batch, seed and data order, synchronised BatchNorm:
    float32 on one device; twice its learning rate (the negative control); XLA on one device;
    float16 mirrored over two devices. One fresh interpreter (one mirrored run per process)."""
    short = {"epochs": 1, "steps_per_epoch": 10, "overrides": SYNC}
    plan = [
        {"strategy": "one_device", **short},
        {"strategy": "one_device", **short, "learning_rate": 0.02},
        {"strategy": "one_device", **short, "jit_compile": True},
        {"strategy": "mirrored", **short, "mixed_precision": "float16"},
    ]
    out = tmp_path_factory.mktemp("precision")
    proc = run_cli([TRAJECTORY, "2", str(out), json.dumps(plan)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])["runs"]
    return dict(zip(["f32", "doubled", "xla", "f16_mirrored"], results, strict=True))


def _deviation(run, reference):
    a, b = np.array(reference["losses"]), np.array(run["losses"])
    assert a.shape == b.shape == (10,)
    return float(np.max(np.abs(b - a) / a))


def test_float16_mirrored_run_follows_the_float32_trajectory(runs):
    """float16 rounds each activation to 2^-11 ≈ 4.9e-4 relative; over 24 SGD steps the mirrored
    float16 losses stayed within 1.7e-4 of float32's (measured). The tolerance, 2e-3, is four
    float16 units (the figures are from 24 steps; the test takes 10): loss-scaling mistakes (a scale left in the gradients multiplies the step by
    2^15) or a replica applying another's overflow move it by far more, as the negative control,
    twice the learning rate, moves it by 0.18 over 24 steps."""
    f16 = runs["f16_mirrored"]
    assert f16["replicas"] == 2
    assert f16["loss_scale"] == 2.0**15  # no step overflowed, so none was skipped
    assert _deviation(f16, runs["f32"]) < 2e-3
    assert _deviation(runs["doubled"], runs["f32"]) > 10 * 2e-3


def test_jit_compiled_step_equals_the_eager_step(runs):
    assert runs["xla"]["jit_compile"] is True
    assert runs["f32"]["jit_compile"] is False
    assert _deviation(runs["xla"], runs["f32"]) < 1e-5  # measured 5.3e-7


def test_loss_scale_halves_and_every_replica_skips_an_overflow_on_one_replica():
    proc = run_cli([LOSS_SCALE])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    zoo_run, keras_run = out["zoo"], out["keras"]
    assert zoo_run["initial_scale"] == 2.0**15
    assert zoo_run["overflow"] == {
        "scale": 2.0**14, "moved": False, "finite": True, "replicas_agree": True,
    }  # fmt: skip
    assert zoo_run["clean"] == {
        "scale": 2.0**14, "moved": True, "finite": True, "replicas_agree": True,
    }  # fmt: skip
    # The negative control: Keras' LossScaleOptimizer asks the first replica only, so the
    # second replica's inf reaches the all-reduced update.
    assert not keras_run["overflow"]["finite"]


# -- each custom train_step under float16 ----------------------------------------------------------
def _digits(n=20):
    # Class-balanced (ABS's train_step needs it; the others do not mind).
    ds = zoo.data.load("digits", "train", batch_size=n, num_examples=200, class_balanced=True,
                       repeat=True)  # fmt: skip
    return next(iter(ds))


def _sprites(n=8):
    return next(iter(zoo.data.load("sprites/32x32/lap", "test", batch_size=n, shuffle=False)))


CUSTOM_STEPS = {
    "abs": ("abs_mnist", {"bank_size": 50, "search_steps": 2}, _digits),
    "racecar": ("racecar_mnist_cnn", {"regularizer": "rr"}, _digits),
    "ice": ("firevnet_mnist", {"steps": 1, "hidden": 8, "loss": "ice"}, _digits),
    "slowvae": ("slowvae_sprites", {"image_shape": (32, 32, 1)}, _sprites),
    "ant": ("cnn_mnist", {"noise": "ant", "filters": [4, 8, 16, 10]}, _digits),
    "fa_gan": (
        "fa_gan_mnist",
        {
            "conv_filters": [4, 8],
            "conv_strides": [1, 2],
            "hidden_units": 32,
            "latent_dim": 8,
            "generator_filters": 4,
        },
        _digits,
    ),  # fmt: skip
    "inn": ("inn_ae_mnist", {"k": 32, "conv_hidden": 8, "fc_hidden": 16}, _digits),
}


def _optimizers(model):
    found = [model.optimizer]
    for attr in ("nuisance_optimizer", "generator_optimizer"):
        if getattr(model, attr, None) is not None:
            found.append(getattr(model, attr))
    for attr in ("fa_generator", "fa_discriminator"):
        if hasattr(model.optimizer, attr):
            found.append(getattr(model.optimizer, attr))
    return found


@pytest.mark.parametrize("family", sorted(CUSTOM_STEPS))
def test_custom_train_step_keeps_float16_gradients_finite(family):
    name, overrides, data = CUSTOM_STEPS[family]
    keras.utils.set_random_seed(0)
    batch = data()
    model = zoo.build(name, **overrides)
    report = apply_mixed_precision(model, "float16")
    assert report["mixed_blocks"] and report["loss_scaling"]
    model.compile()
    _build_training_state(model, batch)
    optimizers = _optimizers(model)
    assert all(isinstance(o, LossScaleOptimizer) for o in optimizers)
    step = tf.function(model.train_step)

    def scales():
        return [float(o.dynamic_scale.numpy()) for o in optimizers]

    # A step whose scaled gradient overflows float16 is skipped and halves that optimizer's
    # scale. Keras starts at 2^15, which suits mean losses; a loss summed over pixels overflows
    # there (SlowVAE's: ~2,000, largest float32 gradient ~1,000: it settles near 2^4 after ~11
    # skipped steps), and a batch trained on repeatedly overflows now and then as its gradients
    # grow. A gradient that is non-finite whatever the scale (a float16 bug) would skip every
    # step and halve the scale towards zero: so most of 18 steps must be applied, at a scale
    # of at least 1.
    before = [v.numpy() for v in model.trainable_variables]
    history = [scales()]
    for _ in range(18):
        logs = step(batch)
        history.append(scales())
    history = np.array(history)
    skipped = (history[1:] < history[:-1]).sum(axis=0)  # per optimizer
    assert np.all(history[-1] >= 1.0), history.tolist()
    assert np.all(18 - skipped >= 6), history.tolist()  # most steps applied (finite gradients)
    assert all(np.isfinite(float(v)) for v in logs.values())
    after = [v.numpy() for v in model.trainable_variables]
    assert all(np.all(np.isfinite(a)) for a in after)
    assert any(np.any(a != b) for a, b in zip(after, before, strict=True))
    block = report["mixed_blocks"][0]
    assert any(
        layer.name == block and layer.compute_dtype == "float16"
        for layer in model._flatten_layers(include_self=False, recursive=True)
    )


# -- precision safety, as each model declares it ---------------------------------------------------
def _randomize_zero_kernels(model, seed=0):
    """Coupling networks start at zero (each coupling the identity); give them weights."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        if "kernel" in v.path and not np.any(v.numpy()):
            v.assign(rng.normal(0.0, 0.05, v.shape).astype(np.float32))


def test_firevnet48_round_trip_stays_below_1e_4_under_bfloat16():
    model = zoo.load("fiRevNet48")
    model.build_for_inputs()
    _randomize_zero_kernels(model)
    x = tf.random.stateless_uniform((1, *model.image_shape), seed=(1, 2))
    z32 = model.forward(x, training=True)
    report = apply_mixed_precision(model, "bfloat16")
    blocks = [b for b in model._flatten_layers() if isinstance(b, IRevNetBlock)]
    assert len(report["mixed_blocks"]) == len(blocks) > 0  # each block's bottleneck only
    assert "log-determinants" in report["float32_reason"]
    error = float(tf.reduce_max(tf.abs(model.inverse(model.forward(x)) - x)))
    assert error < 1e-4
    # The training pass does compute its branches in bfloat16 (so the policy is not a no-op).
    z16 = model.forward(x, training=True)
    assert z16.dtype == tf.float32
    assert float(tf.reduce_max(tf.abs(z16 - z32))) > 1e-3


def test_abs_keeps_its_decoders_and_latent_search_in_float32():
    model = zoo.load("abs_mnist", bank_size=50, search_steps=3)
    model.build_for_inputs()
    x, _ = _digits(10)
    logits32 = model(x).numpy()
    report = apply_mixed_precision(model, "bfloat16")
    assert set(report["float32"]) >= {"dec_convt1", "dec_out"}
    assert "enc_conv1" in report["mixed_blocks"]
    np.testing.assert_array_equal(model(x).numpy(), logits32)  # the search is the float32 one
    restore_float32(model)
    assert model.precision == "off"


@pytest.mark.parametrize(
    ("name", "overrides", "reason"),
    [
        ("local_fa_mnist", {}, "inner gradient step"),
        ("fa_mnist", {}, "inner gradient step"),
    ],
)
def test_models_that_cannot_honour_a_mixed_precision_refuse_it(name, overrides, reason):
    model = zoo.load(name, **overrides)
    model.build_for_inputs()
    with pytest.raises(PrecisionError, match=reason):
        apply_mixed_precision(model, "bfloat16")
    assert all(layer.compute_dtype == "float32" for layer in model._flatten_layers())


def test_trainer_refuses_an_unhonoured_precision_as_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="local_fa_mnist cannot train in float16"):
        train(TrainConfig(model="local_fa_mnist", dataset="digits", mixed_precision="float16",
                          epochs=1, steps_per_epoch=1, output=str(tmp_path), verbose=0))  # fmt: skip


def test_precision_is_applied_before_compile_or_refused():
    model = zoo.load("cnn_mnist")
    model.build_for_inputs()
    model.compile()
    with pytest.raises(PrecisionError, match="before compile"):
        apply_mixed_precision(model, "float16")
    with pytest.raises(PrecisionError, match="unknown precision 'fp8'"):
        apply_mixed_precision(zoo.load("cnn_mnist").build_for_inputs(), "fp8")


def test_cli_records_precision_xla_and_throughput_and_loads_back_float32(tmp_path):
    out = tmp_path / "run"
    proc = run_cli([
        "training/train.py", "--model", "cnn_mnist", "--dataset", "digits", "--epochs", "1",
        "--steps-per-epoch", "6", "--batch-size", "32", "--train-examples", "192",
        "--validation-steps", "1", "--output", str(out),
        "--mixed-precision", "bfloat16", "--jit-compile", "--verbose", "0",
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    config = json.loads((out / "config.json").read_text())
    assert config["precision"]["policy"] == "mixed_bfloat16"
    assert config["precision"]["float32"] == ["conv4"]  # the head: logits stay float32
    assert config["jit_compile"] == {"requested": True, "used": True, "fallback": None}
    throughput = json.loads((out / "history.json").read_text())["throughput"]
    assert throughput["num_replicas"] == 1 and throughput["device_kind"]
    assert throughput["images_per_second"] == pytest.approx(summary["images_per_second"], 0.01)
    assert throughput["images_per_second_per_replica"] == throughput["images_per_second"]
    # The run loads back (and exports) as a float32 model whatever the training precision.
    loaded = zoo.load("cnn_mnist", weights=str(out))
    assert loaded.precision == "off" and loaded(tf.zeros((1, 28, 28, 1))).dtype == tf.float32
    # The backup of a bfloat16 run does not resume as a float32 one (its optimizer differs).
    with pytest.raises(UsageError, match="different mixed_precision"):
        train(TrainConfig(model="cnn_mnist", dataset="digits", output=str(out), verbose=0))
