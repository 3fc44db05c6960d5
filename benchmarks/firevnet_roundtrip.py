"""fiRevNet48 and i-RevNet-301 at full size, in one run: parameter counts, float32 round-trip error,
metamer logit drift, and forward / inverse seconds per image on this machine (batch 1 and 8).

Budgets (shared/digests/invertible_inn_ae_firevnet.md §3): round trip < 1e-4 (fiRevNet48) and
< 1e-3 (i-RevNet-301) in float32; metamer logit drift < 1e-4.

    python benchmarks/firevnet_roundtrip.py [--skip-irevnet301]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _seconds(fn, *args, repeats=3):
    fn(*args)  # trace / warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-irevnet301", action="store_true")
    args = parser.parse_args(argv)
    import zoo
    from zoo.eval.metamers import metameric_sample

    out = {}
    rng = np.random.default_rng(0)
    for name in ["fiRevNet48"] + ([] if args.skip_irevnet301 else ["irevnet301"]):
        start = time.perf_counter()
        model = zoo.load(name)
        build = time.perf_counter() - start
        forward = tf.function(lambda x, m=model: m.forward(x))
        inverse = tf.function(lambda z, m=model: m.inverse(z))
        x = tf.constant(rng.uniform(size=(8, 224, 224, 3)), tf.float32)
        z = forward(x)
        row = {
            "trainable_parameters": sum(int(np.prod(v.shape)) for v in model.trainable_variables),
            "build_seconds": round(build, 1),
            "round_trip_max_error": float(tf.reduce_max(tf.abs(inverse(z) - x))),
            "forward_s_batch1": round(_seconds(forward, x[:1]), 3),
            "inverse_s_batch1": round(_seconds(inverse, z[:1]), 3),
            "forward_s_per_image_batch8": round(_seconds(forward, x) / 8, 3),
            "inverse_s_per_image_batch8": round(_seconds(inverse, z) / 8, 3),
        }
        if model.has_split:
            met = metameric_sample(model, x[:4], x[4:])
            row["metamer_logit_drift"] = float(tf.reduce_max(tf.abs(model(met) - model(x[:4]))))
            row["metamer_pixel_range"] = [
                round(float(tf.reduce_min(met)), 2),
                round(float(tf.reduce_max(met)), 2),
            ]
        out[name] = row
        print(name, json.dumps(row), flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
