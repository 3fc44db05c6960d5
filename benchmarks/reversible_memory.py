"""Peak memory of one training step of an invertible conv net, with and without reversible
backprop, at 12 and 48 blocks, in one run (the fiRevNet issue's benchmark).

The net: ActNorm → i-RevNet block (additive, stride 1) repeated N times, on a
(batch, 32, 32, 32) input, through :class:`zoo.layers.invertible.InvertibleSequential`; one
compiled step = forward, loss (mean z² − log-det), gradients, SGD update. Each configuration runs
in its own process: the step is run twice (tracing and warm-up), TensorFlow's CPU allocator
statistics are reset (``tf.config.experimental.reset_memory_stats``), and the peak of allocated
tensor memory during one more step, above what was allocated before it (weights, optimizer
state, the input), is the step's working memory: the activations kept for the backward pass. Target: peak(48)/peak(12) ≤ 1.3 with reversible backprop, against
roughly linear growth (×4) without.

    python benchmarks/reversible_memory.py [--batch 32] [--size 32] [--channels 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(blocks: int, reversible: bool, batch: int, size: int, channels: int) -> dict:
    """One configuration, in this process."""
    import keras
    import tensorflow as tf

    from zoo.layers.invertible import ActNorm, InvertibleSequential, IRevNetBlock

    keras.utils.set_random_seed(0)
    layers = []
    for i in range(blocks):
        layers += [ActNorm(), IRevNetBlock(channels // 2, stride=1, first=i == 0)]
    net = InvertibleSequential(layers, reversible=reversible)
    x = tf.random.normal((batch, size, size, channels))
    net(x, training=True)
    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(net.trainable_variables)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            z, log_det = net.forward_and_log_det(x, training=True)
            loss = tf.reduce_mean(z**2) - tf.reduce_mean(log_det) / float(z.shape[1] * z.shape[2])
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return loss

    step(x).numpy()  # trace and warm up
    step(x).numpy()
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step(x).numpy()
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    params = sum(int(v.numpy().size) for v in net.trainable_variables)
    return {"step_peak_mb": round((peak - before) / 2**20, 1), "params": params}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument(
        "--child", nargs=2, metavar=("BLOCKS", "REVERSIBLE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    shape = dict(batch=args.batch, size=args.size, channels=args.channels)
    if args.child:
        result = measure(int(args.child[0]), args.child[1] == "1", **shape)
        print(json.dumps(result))
        return 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    results = {}
    for reversible in (False, True):
        for blocks in (12, 48):
            cmd = [sys.executable, __file__, "--child", str(blocks), "1" if reversible else "0"]
            cmd += [f"--batch={args.batch}", f"--size={args.size}", f"--channels={args.channels}"]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            key = f"{'reversible' if reversible else 'standard'}_{blocks}"
            results[key] = json.loads(out.stdout.strip().splitlines()[-1])
            print(key, results[key], flush=True)
    ratio = {
        mode: round(
            results[f"{mode}_48"]["step_peak_mb"] / results[f"{mode}_12"]["step_peak_mb"], 2
        )
        for mode in ("standard", "reversible")
    }
    summary = {
        "input": [args.batch, args.size, args.size, args.channels],
        "step_peak_mb": {k: v["step_peak_mb"] for k, v in results.items()},
        "peak48_over_peak12": ratio,
        "reversible_over_standard_at_48": round(
            results["reversible_48"]["step_peak_mb"] / results["standard_48"]["step_peak_mb"], 2
        ),
        "target_reversible_ratio_max": 1.3,
        "target_met": ratio["reversible"] <= 1.3,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
