"""Grouped convolutions (zoo/layers/grouped.py) in every implementation this machine can run.

The portable implementation, the one TensorFlow needs with oneDNN off, runs on every machine (it
can be forced); the native one wherever its gradient kernels exist. Each must equal the
definition, one plain convolution per group, forward and both gradients.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from zoo import runtime
from zoo.layers import grouped
from zoo.layers.grouped import GroupedConv2D, GroupedConv2DTranspose

G = 10
AVAILABLE = [name for name in grouped.IMPLEMENTATIONS
             if name != "native" or grouped.native_supported()]  # fmt: skip


def _per_group(x, kernel, strides, transposed):
    """The definition: ten separate plain convolutions, one per group."""
    outs = []
    for xg, kg in zip(tf.split(x, G, -1), tf.split(kernel, G, -1), strict=True):
        if transposed:
            n, h, w, _ = xg.shape
            k, f = kernel.shape[0], kernel.shape[2]
            size = [n, (h - 1) * strides + k, (w - 1) * strides + k, f]
            outs.append(tf.nn.conv2d_transpose(xg, kg, size, strides, "VALID"))
        else:
            outs.append(tf.nn.conv2d(xg, kg, strides, "VALID"))
    return tf.concat(outs, -1)


def _value_and_grads(fn, x, kernel, upstream):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = fn(x, kernel)
        loss = tf.reduce_sum(y * upstream)
    return [y, *tape.gradient(loss, [x, kernel])]


# (transposed, size, cin, filters, kernel, stride): ABS's layer kinds, and the special cases
CASES = [
    (False, 9, 1, 4, 5, 1),  # one input channel per group (ABS's first layer)
    (False, 11, 3, 4, 4, 2),
    (False, 5, 2, 3, 5, 1),  # 5×5 → 1×1 (ABS's encoder head)
    (True, 1, 2, 3, 4, 1),  # 1×1 → 4×4 (ABS's first decoder layer)
    (True, 4, 3, 2, 5, 2),
    (True, 6, 3, 1, 4, 1),  # one output channel at stride 1 (ABS's output layer)
    (True, 5, 2, 1, 3, 2),  # one output channel at stride 2
]


@pytest.mark.parametrize("impl", AVAILABLE)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "t{}-h{}-c{}-f{}-k{}-s{}".format(*c))
def test_every_implementation_equals_ten_separate_convolutions_with_gradients(impl, case):
    transposed, h, cin, f, k, s = case
    rng = np.random.default_rng(sum(case))
    x = tf.constant(rng.normal(size=(3, h, h, G * cin)), tf.float32)
    shape = (k, k, f, G * cin) if transposed else (k, k, cin, G * f)
    kernel = tf.constant(rng.normal(size=shape) / np.sqrt(cin * k * k), tf.float32)
    fn = grouped.grouped_conv2d_transpose if transposed else grouped.grouped_conv2d
    y = _per_group(x, kernel, s, transposed)
    upstream = tf.constant(rng.normal(size=y.shape), tf.float32)
    want = _value_and_grads(lambda x, w: _per_group(x, w, s, transposed), x, kernel, upstream)
    with grouped.use_implementation(impl):
        eager = _value_and_grads(lambda x, w: fn(x, w, G, s), x, kernel, upstream)
        traced = tf.function(
            lambda x, w: _value_and_grads(lambda x, w: fn(x, w, G, s), x, w, upstream)
        )(x, kernel)
    for name, a, b, c in zip(("value", "d_input", "d_kernel"), eager, traced, want, strict=True):
        scale = float(np.abs(c.numpy()).max())
        assert scale > 0.1, name  # a real signal, not zeros
        for got in (a, b):
            np.testing.assert_allclose(got.numpy(), c.numpy(), rtol=1e-5, atol=1e-5 * scale,
                                       err_msg=f"{impl} {name}")  # fmt: skip


@pytest.mark.parametrize("impl", AVAILABLE)
@pytest.mark.parametrize("transposed", [False, True])
def test_layers_equal_keras_layers_per_group(impl, transposed):
    """The layers' kernel layout and bias: group g's slice of each is a Keras layer's."""
    import keras

    cin, filters, k, s = 2, 4, 5, 2
    x = tf.random.stateless_normal((2, 11, 11, 3 * cin), seed=(1, 2))
    with grouped.use_implementation(impl):
        layer = (GroupedConv2DTranspose if transposed else GroupedConv2D)(3, filters, k, s)
        y = layer(x).numpy()
    for g in range(3):
        ref = (keras.layers.Conv2DTranspose if transposed else keras.layers.Conv2D)(
            filters, k, strides=s, padding="valid"
        )
        ref.build((None, 11, 11, cin))
        # transposed: kernel (k, k, filters, groups·cin); plain: (k, k, cin, groups·filters)
        cols = (
            slice(g * cin, (g + 1) * cin) if transposed else slice(g * filters, (g + 1) * filters)
        )
        ref.kernel.assign(layer.kernel[..., cols])
        ref.bias.assign(layer.bias[g * filters : (g + 1) * filters])
        want = ref(x[..., g * cin : (g + 1) * cin]).numpy()
        np.testing.assert_allclose(y[..., g * filters : (g + 1) * filters], want, atol=1e-5)


def test_the_probe_agrees_with_tensorflows_onednn_switch():
    """On a CPU-only machine the grouped gradient kernels exist exactly when oneDNN is on."""
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU has the grouped kernels whatever the CPU mode")
    assert grouped.native_supported() == runtime.onednn_enabled()
    assert grouped.implementation() == ("native" if runtime.onednn_enabled() else "portable")


def test_forcing_an_unknown_or_missing_implementation_is_refused():
    with pytest.raises(ValueError, match="choose from native, portable"):
        with grouped.use_implementation("fast"):
            pass
    if not grouped.native_supported():
        with pytest.raises(RuntimeError, match="TF_ENABLE_ONEDNN_OPTS=1"):
            with grouped.use_implementation("native"):
                pass


def test_abs_trains_and_classifies_with_tensorflows_onednn_off_path():
    """The issue's failure: with oneDNN off, abs_mnist(x) and its first training step raised.
    Run in a process with oneDNN forced off, whatever this machine's default."""
    code = (
        "import numpy as np, zoo, zoo.data\n"
        "from zoo.layers import grouped\n"
        "assert grouped.implementation() == 'portable', grouped.implementation()\n"
        "m = zoo.load('abs_mnist', bank_size=50, search_steps=3)\n"
        "x, y = next(iter(zoo.data.load('digits', 'train', batch_size=20, num_examples=400,"
        " repeat=True, class_balanced=True)))\n"
        "logits = m(x).numpy()\n"
        "assert logits.shape == (20, 10) and np.isfinite(logits).all()\n"
        "m.compile()\n"
        "before = [w.numpy() for w in m.trainable_weights]\n"
        "logs = m.train_step((x, y))\n"
        "assert np.isfinite(float(logs['loss']))\n"
        "assert all((a != w.numpy()).any() for a, w in zip(before, m.trainable_weights)"
        " if w.shape.rank > 0)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
