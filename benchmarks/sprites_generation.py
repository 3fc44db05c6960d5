"""What rendering ``sprites`` costs: images/s of a fresh renderer, of a warm one, and of the
``sprites/lap`` pair pipeline, beside the SlowVAE training step it feeds, in one run.

    python benchmarks/sprites_generation.py [--images 20000] [--image-size 64]

Rasterising every (shape, scale, orientation, sub-pixel offset) patch once is the cold cost; a
warm renderer pastes patches. The last line is JSON.
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
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--image-size", type=int, default=64, choices=(32, 64))
    p.add_argument("--batches", type=int, default=100, help="pair batches of 32 to time")
    args = p.parse_args()

    import numpy as np

    import zoo.data
    from zoo.data.sprites import Sprites

    sprites = Sprites(image_size=args.image_size)
    start = time.perf_counter()
    sprites.precompute()
    patches_s = time.perf_counter() - start
    idx = np.random.default_rng(0).integers(0, sprites.grid.size, args.images)
    start = time.perf_counter()
    images = sprites.images(idx)
    warm_s = time.perf_counter() - start
    again = Sprites(image_size=args.image_size).images(idx[:2000])  # a second, cold renderer
    deterministic = bool(np.array_equal(again, images[:2000]))

    name = "sprites/lap" if args.image_size == 64 else "sprites/32x32/lap"
    start = time.perf_counter()
    ds = zoo.data.load(name, "train", batch_size=32, shuffle=True, repeat=True)
    build_s = time.perf_counter() - start
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    pipeline_s = time.perf_counter() - start
    print(
        json.dumps(
            {
                "image_size": args.image_size,
                "grid_size": sprites.grid.size,
                "patch_rasterisation_seconds": round(patches_s, 2),
                "warm_images_per_s": round(args.images / warm_s),
                "pair_pipeline_pairs_per_s": round(32 * args.batches / pipeline_s),
                "pair_pipeline_steps_per_s": round(args.batches / pipeline_s, 1),
                "pair_keys_for_one_epoch_seconds": round(build_s, 2),
                "deterministic_across_renderers": deterministic,
            }
        )
    )


if __name__ == "__main__":
    main()
