"""fiRevNet family: exact geometry and parameter counts, invertibility at full scale, metamers,
CE/iCE training through the zoo's trainer, and the exported inverse/metamer signatures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

import zoo
import zoo.data
from zoo.data.spheres import oracle, spheres_arrays
from zoo.eval.metamers import metameric_sample, nuisance_interpolation

SMALL = dict(steps=2, hidden=16)


def _trainable(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


@pytest.mark.slow
def test_firevnet48_geometry_round_trip_and_metamer():
    model = zoo.load("fiRevNet48")
    # i-RevNet branch widths, stage 4 affine: the digest's 67,969,392, plus ActNorm's 2·C per block.
    actnorm = sum(int(np.prod(v.shape)) for v in model.trainable_variables if "act_norm" in v.path)
    assert _trainable(model) - actnorm == 67_969_392
    # loc + log_scale per input channel: 4·48 + (48 + 3·192) + (192 + 3·768) + (768 + 3·3072)
    assert actnorm == 2 * 13_296
    assert model.latent_dim == 150_528 and model.out_shape == (7, 7, 3072)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(1, 224, 224, 3)), tf.float32)
    z = model.forward(x)
    z_s, z_n = model.split(z)
    assert z_s.shape == (1, 1000) and z_n.shape == (1, 149_528)
    np.testing.assert_allclose(model(x), z_s)
    assert float(tf.reduce_max(tf.abs(model.inverse(z) - x))) < 1e-4
    x_b = tf.constant(rng.uniform(size=(1, 224, 224, 3)), tf.float32)
    met = metameric_sample(model, x, x_b)
    assert float(tf.reduce_max(tf.abs(model(met) - model(x)))) < 1e-4
    assert float(tf.reduce_max(tf.abs(met - x))) > 0.1  # a different image with the same logits


@pytest.mark.slow
def test_irevnet301_has_the_checkpoints_parameter_count():
    model = zoo.load("irevnet301")
    assert _trainable(model) == 125_120_356
    with pytest.raises(NotImplementedError, match="no logit/nuisance split"):
        model.split(tf.zeros((1, model.latent_dim)))
    assert "metamer" not in model.serving_signatures()


@pytest.mark.slow
def test_firevnet_mnist_paper_config_and_d():
    model = zoo.load("firevnet_mnist")
    assert model.latent_dim == 1024 and model.top_shape == (4, 4, 16)
    assert _trainable(model) == 7_625_056  # the digest's count for this reconstruction
    assert _trainable(zoo.load("firevnet_mnist_small")) == 146_008  # "146k" in the digest
    x = tf.random.uniform((2, 28, 28, 1))
    z = model.forward(x)
    np.testing.assert_array_equal(model.forward(tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]])), z)
    back = model.inverse(z)
    assert back.shape == (2, 32, 32, 1)
    assert float(tf.reduce_max(tf.abs(back[:, 2:30, 2:30] - x))) < 1e-4
    assert float(tf.reduce_max(tf.abs(back[:, :2]))) < 1e-4  # the padding comes back as zeros


def test_bad_input_is_a_clear_error():
    model = zoo.load("firevnet_mnist", **SMALL)
    with pytest.raises(ValueError, match=r"\(batch, \(28, 28, 1\)\) or the padded"):
        model.forward(tf.zeros((1, 30, 30, 1)))
    with pytest.raises(ValueError, match="expects z of shape"):
        model.inverse(tf.zeros((1, 10)))
    with pytest.raises(zoo.InvalidConfigError, match="loss must be one of"):
        zoo.load("firevnet_mnist", loss="nll")


def test_metamer_interpolation_keeps_the_logits():
    model = zoo.load("firevnet_mnist", **SMALL)
    x = tf.random.uniform((4, 28, 28, 1))
    model(x, training=True)  # ActNorm data init, so the flow is not near the identity
    rows = nuisance_interpolation(model, x[:2], x[2:], steps=3)
    assert rows.shape == (3, 2, 32, 32, 1)
    for row in rows:
        np.testing.assert_allclose(model(row), model(x[:2]), atol=1e-4)
    # α = 0 reconstructs the semantic source, α = 1 takes the nuisance of the other image.
    np.testing.assert_allclose(rows[0][:, 2:30, 2:30], x[:2], atol=1e-4)
    _, zn_b = model.split(model.forward(x[2:]))
    np.testing.assert_allclose(model.split(model.forward(rows[-1]))[1], zn_b, atol=1e-3)


def test_spheres_dataset():
    x, y = spheres_arrays("train", num_examples=1000, seed=3)
    norms = np.linalg.norm(x, axis=1)
    np.testing.assert_allclose(norms[y == 0], 1.0, rtol=1e-5)
    np.testing.assert_allclose(norms[y == 1], 10.0, rtol=1e-5)
    np.testing.assert_array_equal(oracle(x), y)
    x2, _ = spheres_arrays("train", num_examples=10, seed=3)
    np.testing.assert_array_equal(x2, x[:10])
    assert not np.allclose(spheres_arrays("test", num_examples=10, seed=3)[0], x2)


# The iCE run goes through the same trainer, export and signature checks as the CE run, plus the
# nuisance step. Both are slow: the served inverse/metamer test exports and serves a fiRevNet, and
# tests/test_precision.py takes iCE's train step.
@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ce", "ice"])
def test_training_through_the_trainer_then_export(loss, tmp_path):
    from zoo.export import export_model
    from zoo.training import TrainConfig, train

    result = train(
        TrainConfig(
            model="firevnet_mnist",
            dataset="digits",
            epochs=1,
            steps_per_epoch=6,
            validation_steps=1,
            batch_size=16,
            train_examples=256,
            output=str(tmp_path / "run"),
            overrides={**SMALL, "loss": loss},
            verbose=0,
        )
    )
    model = result.model
    assert np.isfinite(result.metrics["loss"])
    if loss == "ice":
        assert int(model.nuisance_optimizer.iterations) == 6 * model.nuisance_steps
        assert {"nll_bits_per_dim", "adversarial", "nuisance_accuracy"} <= set(result.metrics)
    x = next(iter(zoo.data.load("digits", "test", batch_size=4, num_examples=4)))[0]
    path = export_model(model, tmp_path / "export")
    loaded = tf.saved_model.load(str(path))
    assert {"serving_default", "inverse", "metamer", "forward"} <= set(loaded.signatures)
    z = model.forward(x)
    inv = loaded.signatures["inverse"](z=z)["images"]
    np.testing.assert_allclose(inv, model.inverse(z), atol=1e-5)
    out = loaded.signatures["metamer"](semantic=x[:2], nuisance=x[2:], alpha=tf.ones((2,)))
    np.testing.assert_allclose(out["images"], metameric_sample(model, x[:2], x[2:]), atol=1e-5)
    np.testing.assert_allclose(model(out["images"]), model(x[:2]), atol=1e-4)
    logits = loaded.signatures["serving_default"](images=x)["logits"]
    np.testing.assert_allclose(logits, model(x), atol=1e-5)


def test_ice_nuisance_step_does_not_touch_the_flow_and_paper_form_is_capped():
    model = zoo.load("firevnet_spheres", loss="ice", adversarial="paper")
    model.compile()
    x, y = spheres_arrays("train", num_examples=64)
    flow = [v.numpy() for v in model.flow_variables()]
    model._nuisance_step(
        tf.stop_gradient(model.split(model.forward(x))[1]), tf.constant(y, tf.int32)
    )
    for a, v in zip(flow, model.flow_variables(), strict=True):
        np.testing.assert_array_equal(a, v.numpy())
    logs = model.train_step((tf.constant(x), tf.constant(y)))
    assert float(logs["adversarial"]) >= -np.log(2) - 1e-6  # −min(CE, log C)


@pytest.mark.slow
def test_mirrored_ice_training_reaches_every_block(cli, tmp_path):
    # Reversible backprop and ActNorm's data-dependent init under MirroredStrategy on 2 CPUs:
    # the couplings' zero-initialised last layers only move if the custom gradient reaches them.
    out = tmp_path / "run"
    proc = cli(["training/train.py", "--model", "firevnet_mnist", "--dataset", "digits",
                "--train-examples", "256", "--batch-size", "32", "--epochs", "1",
                "--steps-per-epoch", "3", "--validation-steps", "1", "--set", "steps=2",
                "--set", "hidden=16", "--set", "loss=ice", "--strategy", "mirrored",
                "--cpu-devices", "2", "--output", str(out), "--verbose", "0"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert np.isfinite(logs["loss"]) and "nuisance_accuracy" in logs
    model = zoo.load("firevnet_mnist", weights=out, steps=2, hidden=16, loss="ice")
    couplings = [
        layer for stack in model.level_stacks for layer in stack.blocks if hasattr(layer, "network")
    ]
    last = [c.network.layers[-1].kernel for c in couplings]
    assert len(last) == 6  # 3 levels × 2 steps
    for v in last:
        assert float(np.abs(v.numpy()).max()) > 0, v.path
    initialized = [float(v.numpy()) for v in model.weights if v.path.endswith("initialized")]
    assert initialized and all(i == 1.0 for i in initialized)


def test_served_inverse_and_metamer_over_grpc(tmp_path):
    # The official tensorflow_serving client, unchanged, against the zoo's server.
    from helpers.serving import ServerProcess, official_predict

    from zoo.export import export_model

    model = zoo.load("firevnet_mnist", **SMALL)
    x = next(iter(zoo.data.load("digits", "test", batch_size=4, num_examples=4)))[0]
    model(x, training=True)  # ActNorm init: a flow that is not the identity
    export_model(model, tmp_path)
    with ServerProcess(
        "--model_name", "firevnet_mnist", "--model_base_path", str(tmp_path / "firevnet_mnist"),
        rest=False,
    ) as server:  # fmt: skip

        def predict(signature, **inputs):
            inputs = {k: np.asarray(v, np.float32) for k, v in inputs.items()}
            return official_predict(server.target, "firevnet_mnist", signature, **inputs)

        z = model.forward(x).numpy()
        np.testing.assert_allclose(predict("inverse", z=z)["images"], model.inverse(z), atol=1e-5)
        out = predict("metamer", semantic=x[:2], nuisance=x[2:], alpha=[1.0, 0.5])
        expected = metameric_sample(model, x[:2], x[2:], alpha=tf.constant([1.0, 0.5]))
        np.testing.assert_allclose(out["images"], expected, atol=1e-5)
        np.testing.assert_allclose(model(out["images"]), model(x[:2]), atol=1e-4)


def _torch_irevnet_state_dict(in_half, stages, num_classes, rng):
    """A state dict laid out as pytorch-i-revnet's iRevNet names it (random values)."""
    sd, i, half = {}, 0, in_half
    for channels, blocks in stages:
        for _ in range(blocks):
            width = channels // 4
            convs = [(width, half), (width, width), (channels, width)]
            kinds = ["conv", "bn", "relu", "conv", "drop", "bn", "relu", "conv"]
            if i > 0:
                kinds = ["bn", "relu", *kinds]
            conv_n, bn_sizes = 0, [half, width, width] if i > 0 else [width, width]
            for j, kind in enumerate(kinds):
                p = f"module.stack.{i}.bottleneck_block.{j}"
                if kind == "conv":
                    o, c = convs[conv_n]
                    sd[f"{p}.weight"] = rng.standard_normal((o, c, 3, 3))
                    conv_n += 1
                elif kind == "bn":
                    n = bn_sizes.pop(0)
                    for name in ("weight", "bias", "running_mean"):
                        sd[f"{p}.{name}"] = rng.standard_normal(n)
                    sd[f"{p}.running_var"] = rng.uniform(0.5, 2, n)
                    sd[f"{p}.num_batches_tracked"] = np.array(7)
            half = channels
            i += 1
    for name in ("weight", "bias", "running_mean"):
        sd[f"module.bn1.{name}"] = rng.standard_normal(2 * half)
    sd["module.bn1.running_var"] = rng.uniform(0.5, 2, 2 * half)
    sd["module.linear.weight"] = rng.standard_normal((num_classes, 2 * half))
    sd["module.linear.bias"] = rng.standard_normal(num_classes)
    return sd


def test_porting_a_pytorch_irevnet_checkpoint():
    from zoo.models.firevnet import port_irevnet_state_dict

    overrides = dict(image_shape=(16, 16, 3), num_classes=5, blocks=(2, 2), channels=(24, 96),
                     strides=(2, 2), couplings=("additive", "additive"))  # fmt: skip
    model = zoo.load("irevnet301", **overrides)
    sd = _torch_irevnet_state_dict(6, [(24, 2), (96, 2)], 5, np.random.default_rng(0))
    unused = port_irevnet_state_dict(model, sd)
    assert unused and all(name.endswith("num_batches_tracked") for name in unused)
    block = model.stack.blocks[2]  # the second i-RevNet block (after the initial psi)
    conv = block.bottleneck.layers[2]
    np.testing.assert_allclose(
        conv.kernel.numpy(), sd["module.stack.1.bottleneck_block.2.weight"].transpose(2, 3, 1, 0),
        rtol=1e-6,
    )  # fmt: skip
    bn = block.bottleneck.layers[6]  # the BatchNorm after PyTorch's Dropout (index 7)
    np.testing.assert_allclose(bn.moving_variance.numpy(), sd["module.stack.1.bottleneck_block.7.running_var"], rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(model.head_linear.kernel.numpy(), sd["module.linear.weight"].T, rtol=1e-6)  # fmt: skip
    del sd["module.linear.bias"]
    with pytest.raises(KeyError, match="linear.bias"):
        port_irevnet_state_dict(model, sd)


@pytest.mark.slow
def test_metamer_grid_png(tmp_path):
    from zoo.eval.metamers import metamer_grid

    model = zoo.load("firevnet_mnist", **SMALL)
    x = tf.random.uniform((4, 28, 28, 1))
    path = metamer_grid(model, x[:2], x[2:], tmp_path / "grid.png", steps=3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_posthoc_nuisance_classifier_reads_what_z_n_holds():
    # Untrained (near-identity) spheres flow: z_n holds 98 of the 100 coordinates, whose norm
    # gives the sphere away, so a classifier trained on z_n alone is nearly perfect. With the
    # labels shuffled there is nothing to learn and the error is about chance.
    from zoo.eval.metamers import posthoc_nuisance_error

    model = zoo.load("firevnet_spheres")
    x, y = spheres_arrays("train", num_examples=4000)
    xt, yt = spheres_arrays("test", num_examples=1000)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(500)
    test = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(500)
    result = posthoc_nuisance_error(model, train, test, hidden=(64,), epochs=5, seed=0)
    assert result["test_error"] < 5.0, result
    shuffled = tf.data.Dataset.from_tensor_slices((x, np.random.default_rng(0).permutation(y)))
    noise = posthoc_nuisance_error(model, shuffled.batch(500), test, hidden=(64,), epochs=5)
    assert noise["test_error"] > 35.0, noise


def test_ported_irevnet_equals_an_independent_numpy_forward_of_the_authors_network():
    # A float64 NCHW numpy forward of pytorch-i-revnet's iRevNet in eval mode, written from
    # models/iRevNet.py and models/model_utils.py, for iRevNet(nBlocks=[2, 2], nStrides=[2, 2],
    # nChannels=[24, 96], nClasses=5, init_ds=2, in_shape=[3, 16, 16], mult=4): one initial psi
    # of block size 2 (their init_ds=2), then blocks of half widths 24, 24, 96, 96.
    from zoo.models.firevnet import port_irevnet_state_dict

    def modules(first):  # irevnet_block.bottleneck_block, numbered as nn.Sequential does
        kinds = ["conv", "bn", "relu", "conv", "dropout", "bn", "relu", "conv"]
        return kinds if first else ["bn", "relu", *kinds]

    rng = np.random.default_rng(1)
    outs, strides, sd, in_ch = [24, 24, 96, 96], [2, 1, 2, 1], {}, 12

    def random_bn(prefix, n):
        sd[f"{prefix}.weight"], sd[f"{prefix}.bias"] = (
            rng.uniform(0.5, 1.5, n),
            rng.normal(0, 0.3, n),
        )
        sd[f"{prefix}.running_mean"] = rng.normal(0, 0.5, n)
        sd[f"{prefix}.running_var"] = rng.uniform(0.5, 2, n)
        sd[f"{prefix}.num_batches_tracked"] = np.array(100)

    for i, out_ch in enumerate(outs):
        width = out_ch // 4
        convs = iter([(width, in_ch // 2), (width, width), (out_ch, width)])
        bns = iter(([] if i == 0 else [in_ch // 2]) + [width, width])
        for j, kind in enumerate(modules(i == 0)):
            prefix = f"module.stack.{i}.bottleneck_block.{j}"
            if kind == "conv":
                o, c = next(convs)
                sd[f"{prefix}.weight"] = rng.standard_normal((o, c, 3, 3)) / np.sqrt(9 * c)
            elif kind == "bn":
                random_bn(prefix, next(bns))
        in_ch = 2 * out_ch
    random_bn("module.bn1", in_ch)
    sd["module.linear.weight"] = rng.standard_normal((5, in_ch)) / np.sqrt(in_ch)
    sd["module.linear.bias"] = rng.normal(0, 0.1, 5)

    def psi(x):  # their psi(2): channel (dy, dx, c), c fastest; new pixel (i, j) ← (2i+dy, 2j+dx)
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 3, 5, 1, 2, 4)
        return x.reshape(n, 4 * c, h // 2, w // 2)

    def conv(x, weight, stride):  # nn.Conv2d(kernel_size=3, stride, padding=1, bias=False)
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        ho, wo = (x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1
        return sum(
            np.einsum(
                "nchw,oc->nohw",
                xp[:, :, dy : dy + stride * (ho - 1) + 1 : stride, dx : dx + stride * (wo - 1) + 1 : stride],
                weight[:, :, dy, dx],
            )
            for dy in range(3)
            for dx in range(3)
        )  # fmt: skip

    def bn(x, prefix):  # BatchNorm2d in eval mode, eps 1e-5
        g, b, m, v = (
            sd[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")
        )
        return (x - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-5) * g[:, None, None] + b[:, None, None]  # fmt: skip

    def reference(x):
        x = psi(x)
        x1, x2 = x[:, :6], x[:, 6:]  # n = in_ch // 2
        for i, stride in enumerate(strides):
            f, first_conv = x2, True
            for j, kind in enumerate(modules(i == 0)):
                prefix = f"module.stack.{i}.bottleneck_block.{j}"
                if kind == "conv":  # the stride is the first conv's only
                    f = conv(f, sd[f"{prefix}.weight"], stride if first_conv else 1)
                    first_conv = False
                elif kind == "bn":
                    f = bn(f, prefix)
                elif kind == "relu":
                    f = np.maximum(f, 0)  # Dropout: the identity in eval mode
            if stride == 2:
                x1, x2 = psi(x1), psi(x2)
            x1, x2 = x2, f + x1  # (x2, y1 = F(x2) + x1)
        bij = np.concatenate([x1, x2], axis=1)
        h = np.maximum(bn(bij, "module.bn1"), 0)
        assert h.shape[2:] == (2, 2)  # avg_pool2d(ds = 16 // 2**(2 + 2 // 2) = 2) → 1×1
        logits = h.mean(axis=(2, 3)) @ sd["module.linear.weight"].T + sd["module.linear.bias"]
        return logits, bij

    overrides = dict(image_shape=(16, 16, 3), num_classes=5, blocks=(2, 2), channels=(24, 96),
                     strides=(2, 2), couplings=("additive", "additive"))  # fmt: skip
    model = zoo.load("irevnet301", **overrides)
    unused = port_irevnet_state_dict(model, sd)
    assert unused and all(name.endswith("num_batches_tracked") for name in unused)

    x = rng.uniform(size=(2, 3, 16, 16))
    logits, bij = reference(x)
    assert np.abs(logits).max() > 0.1 and np.abs(logits - logits.mean(0)).max() > 0.01
    nhwc = tf.constant(x.transpose(0, 2, 3, 1), tf.float32)
    features = model.forward(nhwc).numpy().reshape(2, *model.out_shape).transpose(0, 3, 1, 2)
    scale = np.abs(bij).max()
    np.testing.assert_allclose(features, bij, rtol=1e-4, atol=1e-4 * scale)
    scale = np.abs(logits).max()
    np.testing.assert_allclose(model(nhwc, training=False), logits, rtol=1e-4, atol=1e-4 * scale)
