"""What the racecar reverse pass costs per training step, against Std and Ort, in one run.

The paper reports RR at 1.61× Std's time per epoch for its MNIST CNN (5.675 vs 3.522 s, GTX 1080
Ti; Fig. 22) and 1.62× for the texture-shape net (Tab. 30). This times ``train_step`` of the same
model as Std (``regularizer=none``), Ort (SRIP) and RR on the same batches, alternating, best of
``--repeats``, and prints the ratios to Std.

    python benchmarks/racecar_overhead.py [--model racecar_mnist_cnn] [--batch-size 64]
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="racecar_mnist_cnn")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    import keras
    import tensorflow as tf

    import zoo

    spec = zoo.get_spec(args.model)
    shape = tuple(spec.default_config["image_shape"])
    x = tf.random.stateless_uniform((args.batch_size, *shape), (0, 1))
    y = tf.random.stateless_uniform((args.batch_size,), (0, 2), maxval=2, dtype=tf.int32)

    steps = {}
    for label, reg in (("Std", "none"), ("Ort", "ort"), ("RR", "rr")):
        keras.utils.set_random_seed(0)
        model = zoo.load(args.model, regularizer=reg)
        model.compile()
        step = tf.function(model.train_step)
        step((x, y))  # trace
        steps[label] = step

    best = {k: float("inf") for k in steps}
    for _ in range(args.repeats):
        for label, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                logs = step((x, y))
            float(logs["loss"])
            best[label] = min(best[label], (time.perf_counter() - start) / args.steps)
    print(
        json.dumps(
            {
                "model": args.model,
                "batch_size": args.batch_size,
                "ms_per_step": {k: round(1000 * v, 2) for k, v in best.items()},
                "ratio_to_std": {k: round(v / best["Std"], 2) for k, v in best.items()},
                "paper_rr_to_std": 1.61,
            }
        )
    )


if __name__ == "__main__":
    main()
