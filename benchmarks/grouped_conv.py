"""Grouped-convolution candidates on ABS's layers, in this process's oneDNN mode, in one run.

TensorFlow's CPU has grouped ``Conv2DBackpropInput``/``Conv2DBackpropFilter`` kernels only with
oneDNN on, so ``zoo.layers.grouped`` needs a second implementation for the other mode. This times
every candidate on each of ABS's ten-group layers, in its two uses:

- ``train``: batch 120 (ABS's training batch), forward plus the gradients for input and kernel;
- ``search``: batch 64 (the latent search's batch), decoder forward plus the input gradient only.

Each figure is milliseconds per step, the best of three rounds, and each candidate's output and
gradients are checked against the definition (``rel_err``, relative to the largest value).

Candidates (each checked against one plain convolution per group, the definition):
- ``native``: the grouped op (transposed: ``Conv2DBackpropInput``); its gradients need oneDNN;
- ``per_group``: one plain convolution per group, concatenated;
- ``block_diagonal``: one plain convolution with a block-diagonal kernel (groups× the arithmetic);
- ``dilated`` (transposed only): a grouped forward convolution of the zero-dilated, padded input
  with the flipped kernel (stride² the arithmetic); its gradients are grouped backprops again;
- ``phase`` (transposed, stride 2): the stride² phases as one grouped forward convolution with
  ⌈k/s⌉² taps, interleaved (1.44× the arithmetic at k = 5);
- ``depthwise``: depthwise folding, where a group has one input channel (``conv``) or one output
  channel at stride 1 (``transpose``);
- ``zoo``: what ``zoo.layers.grouped`` runs in this mode.

Run it in both modes and compare the two outputs:

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/grouped_conv.py
    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/grouped_conv.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoo import runtime  # noqa: E402
from zoo.layers import grouped  # noqa: E402

G = 10
# ABS's layers (zoo/models/abs.py): (name, transposed, input size, cin, filters, kernel, stride)
LAYERS = (
    ("enc_conv1", False, 28, 1, 32, 5, 1),
    ("enc_conv2", False, 24, 32, 32, 4, 2),
    ("enc_conv3", False, 11, 32, 64, 3, 2),
    ("enc_head", False, 5, 64, 16, 5, 1),
    ("dec_convt1", True, 1, 8, 32, 4, 1),
    ("dec_convt2", True, 4, 32, 16, 5, 2),
    ("dec_convt3", True, 11, 16, 16, 5, 2),
    ("dec_out", True, 25, 16, 1, 4, 1),
)


def _split(x, kernel):
    return zip(tf.split(x, G, -1), tf.split(kernel, G, -1), strict=True)


def _out_size(x, kernel, s):
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    return n, (h - 1) * s + k, (w - 1) * s + k


def per_group(x, kernel, s, transposed):
    if transposed:
        n, h, w = _out_size(x, kernel, s)
        f = kernel.shape[2]
        return tf.concat([tf.nn.conv2d_transpose(a, b, [n, h, w, f], s, "VALID")
                          for a, b in _split(x, kernel)], -1)  # fmt: skip
    return tf.concat([tf.nn.conv2d(a, b, s, "VALID") for a, b in _split(x, kernel)], -1)


def native(x, kernel, s, transposed):
    if transposed:
        n, h, w = _out_size(x, kernel, s)
        return tf.raw_ops.Conv2DBackpropInput(
            input_sizes=[n, h, w, G * kernel.shape[2]], filter=kernel, out_backprop=x,
            strides=[1, s, s, 1], padding="VALID",
        )  # fmt: skip
    return tf.nn.conv2d(x, kernel, s, "VALID")


def block_diagonal(x, kernel, s, transposed):
    k, _, a, b = kernel.shape  # conv: a = cin, b = G·f; transposed: a = f, b = G·cin
    blocks = tf.reshape(kernel, [k, k, a, G, b // G])
    eye = tf.eye(G)
    full = tf.reshape(tf.einsum("ijagb,hg->ijhagb", blocks, eye), [k, k, G * a, b])
    if transposed:
        n, h, w = _out_size(x, kernel, s)
        return tf.nn.conv2d_transpose(x, full, [n, h, w, G * a], s, "VALID")
    return tf.nn.conv2d(x, full, s, "VALID")


def _forward_kernel(kernel):
    """The transposed kernel (k, k, f, G·cin) as a grouped forward kernel (k, k, cin, G·f),
    flipped in space."""
    k, _, f, c = kernel.shape
    per = tf.transpose(tf.reshape(kernel, [k, k, f, G, c // G]), [0, 1, 4, 3, 2])
    return tf.reshape(per, [k, k, c // G, G * f])[::-1, ::-1]


def dilated(x, kernel, s, transposed):
    if not transposed:
        return None
    n, h, w, c = x.shape
    k = kernel.shape[0]
    if s > 1:
        zeros = [tf.zeros_like(x)] * (s - 1)
        x = tf.reshape(tf.stack([x, *zeros], axis=2), [n, h * s, w, c])
        zeros = [tf.zeros_like(x)] * (s - 1)
        x = tf.reshape(tf.stack([x, *zeros], axis=3), [n, h * s, w * s, c])
        x = x[:, : (h - 1) * s + 1, : (w - 1) * s + 1]
    x = tf.pad(x, [[0, 0], [k - 1, k - 1], [k - 1, k - 1], [0, 0]])
    return tf.nn.conv2d(x, _forward_kernel(kernel), 1, "VALID")


def phase(x, kernel, s, transposed):
    if not transposed or s == 1:
        return None
    n, h, w, c = x.shape
    k, f = kernel.shape[0], kernel.shape[2]
    t = -(-k // s)
    padded = tf.pad(kernel, [[0, t * s - k], [0, t * s - k], [0, 0], [0, 0]])
    taps = tf.transpose(tf.reshape(padded, [t, s, t, s, f, G, c // G]), [0, 2, 6, 5, 1, 3, 4])
    taps = tf.reshape(taps, [t, t, c // G, G * s * s * f])[::-1, ::-1]
    y = tf.nn.conv2d(tf.pad(x, [[0, 0], [t - 1, t - 1], [t - 1, t - 1], [0, 0]]), taps, 1, "VALID")
    H, W = h + t - 1, w + t - 1
    y = tf.transpose(tf.reshape(y, [n, H, W, G, s, s, f]), [0, 1, 4, 2, 5, 3, 6])
    return tf.reshape(y, [n, H * s, W * s, G * f])[:, : (h - 1) * s + k, : (w - 1) * s + k]


def depthwise(x, kernel, s, transposed):
    k = kernel.shape[0]
    if not transposed and kernel.shape[2] == 1:
        return tf.nn.depthwise_conv2d(x, tf.reshape(kernel, [k, k, G, -1]), [1, s, s, 1], "VALID")
    if transposed and kernel.shape[2] == 1 and s == 1:
        n, h, w = _out_size(x, kernel, s)
        flipped = tf.reshape(kernel[::-1, ::-1], [k, k, kernel.shape[-1], 1])
        y = tf.nn.depthwise_conv2d(
            x, flipped, [1, 1, 1, 1], [[0, 0], [k - 1] * 2, [k - 1] * 2, [0, 0]]
        )
        return tf.reduce_sum(tf.reshape(y, [n, h, w, G, -1]), -1)
    return None


def zoo_path(x, kernel, s, transposed):
    fn = grouped.grouped_conv2d_transpose if transposed else grouped.grouped_conv2d
    return fn(x, kernel, G, s)


CANDIDATES = {"native": native, "per_group": per_group, "block_diagonal": block_diagonal,
              "dilated": dilated, "phase": phase, "depthwise": depthwise, "zoo": zoo_path}  # fmt: skip


def time_ms(fn, args, repeats):
    fn(*args)  # trace and warm
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            out = fn(*args)
        tf.nest.map_structure(lambda v: v.numpy(), out)
        best = min(best, (time.perf_counter() - t) / repeats * 1e3)
    return best


def measure(fn, x, kernel, s, transposed, upstream, reference, wrt_kernel, repeats):
    """Relative error of value-and-gradients against ``reference``, and the best ms per step."""

    def step(x, kernel, wrt_kernel=wrt_kernel):
        # The output is returned too: the gradients of a linear op do not need it, and a graph
        # that did not return it would prune the forward pass out of the timing.
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = fn(x, kernel, s, transposed)
            loss = tf.reduce_sum(y * upstream)
        return [y, *tape.gradient(loss, [x, kernel] if wrt_kernel else [x])]

    try:
        if fn(x[:1], kernel, s, transposed) is None:
            return None  # not applicable to this layer
        got = step(x, kernel, wrt_kernel=True)
        err = max(float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(b)))
                  for a, b in zip(got, reference, strict=True))  # fmt: skip
        return {"ms": round(time_ms(tf.function(step), (x, kernel), repeats), 2),
                "rel_err": float(f"{err:.1e}")}  # fmt: skip
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
        return {"error": str(e).strip().splitlines()[0][:80]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    info = runtime.describe()
    info["grouped_implementation"] = grouped.implementation()
    print(json.dumps(info))
    rng = np.random.default_rng(0)
    rows = {}
    for name, transposed, size, cin, f, k, s in LAYERS:
        for use, batch in (("train", 120), ("search", 64)):
            if use == "search" and not transposed:
                continue  # the search runs the decoder only
            x = tf.constant(rng.normal(size=(batch, size, size, G * cin)), tf.float32)
            shape = (k, k, f, G * cin) if transposed else (k, k, cin, G * f)
            kernel = tf.constant(rng.normal(size=shape) / np.sqrt(cin * k * k), tf.float32)
            want = per_group(x, kernel, s, transposed)
            upstream = tf.constant(rng.normal(size=want.shape), tf.float32)
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                loss = tf.reduce_sum(per_group(x, kernel, s, transposed) * upstream)
            reference = [want, *tape.gradient(loss, [x, kernel])]
            row = {}
            for cand, fn in CANDIDATES.items():
                result = measure(fn, x, kernel, s, transposed, upstream, reference,
                                 use == "train", args.repeats)  # fmt: skip
                if result is not None:
                    row[cand] = result
            rows[f"{name}/{use}"] = row
            print(f"{name:>10} {use:>6} " + "  ".join(
                f"{c}={v['ms']:.2f}" if "ms" in v else f"{c}=n/a" for c, v in row.items()))  # fmt: skip
    print(json.dumps({**info, "ms_forward_and_gradients": rows}))


if __name__ == "__main__":
    main()
