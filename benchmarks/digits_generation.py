"""What generating ``digits`` costs, as a ratio to training on it, measured in one run.

Renders the 60,000-image train split from scratch (no memo), then times ``cnn_mnist`` training
steps on the zoo's trainer, and prints images/s of each and the ratio: the generation cost in
training epochs, and the share of ink pixels that are grey (between 0.3 and 0.7). Held-out
accuracies of the CNN and the linear baseline on ``digits`` are
measured by ``python -m zoo.repro cnn_digits``.

    python benchmarks/digits_generation.py [--num-examples 60000] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--num-examples", type=int, default=60000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=100, help="training steps to time")
    args = p.parse_args()

    from zoo.data.digits import digits_arrays
    from zoo.training import TrainConfig, train

    start = time.perf_counter()
    images, _ = digits_arrays("train", args.num_examples, seed=12345)  # not memoised elsewhere
    gen_seconds = time.perf_counter() - start
    # How anti-aliased the strokes are: the share of ink pixels (> 0.05) between 0.3 and 0.7,
    # the ones a binarization at 0.5 flips under small changes (README, Binary ABS).
    ink = images[images > 0.05]
    grey = float(np.mean((ink > 0.3) & (ink < 0.7)))

    with tempfile.TemporaryDirectory() as out:
        result = train(
            TrainConfig(
                model="cnn_mnist", dataset="digits", epochs=1, steps_per_epoch=args.steps,
                batch_size=args.batch_size, train_examples=args.batch_size * args.steps,
                validation_steps=1, strategy="one_device", output=out, verbose=0,
            )
        )  # fmt: skip
    train_images_per_s = result.steps_per_second * args.batch_size
    epoch_seconds = args.num_examples / train_images_per_s
    print(
        json.dumps(
            {
                "num_examples": args.num_examples,
                "generation_seconds": round(gen_seconds, 2),
                "generation_images_per_s": round(args.num_examples / gen_seconds, 1),
                "cnn_mnist_train_images_per_s": round(train_images_per_s, 1),
                "ratio_generation_over_one_epoch": round(gen_seconds / epoch_seconds, 3),
                "ink_pixels_between_0.3_and_0.7": round(grey, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
