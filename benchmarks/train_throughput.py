"""Training throughput of the zoo's trainer loop against Keras' own ``model.fit``, in one run.

The zoo owns its loop (``strategy.run(model.train_step)``, see ``zoo/training.py``) because
``fit`` breaks under MultiWorkerMirroredStrategy. This measures what that costs: both run the same
model, optimizer, batch size and in-memory data, one after the other in one process, and the
script prints steps/s for each and their ratio (1.0 = no overhead).

    python benchmarks/train_throughput.py [--model cnn_mnist] [--batch-size 128] [--steps 150]
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
    p.add_argument("--model", default="cnn_mnist")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--repeats", type=int, default=2, help="alternate the two, best of N each")
    args = p.parse_args()

    import tempfile

    import keras
    import tensorflow as tf

    import zoo
    import zoo.data
    from zoo.training import TrainConfig, train

    n = args.batch_size * args.steps
    zoo.data.load("digits", "train", num_examples=n)  # generate (and memoise) the data once

    def zoo_loop() -> float:
        with tempfile.TemporaryDirectory() as out:
            result = train(
                TrainConfig(
                    model=args.model, dataset="digits", epochs=1, steps_per_epoch=args.steps,
                    batch_size=args.batch_size, train_examples=n, validation_steps=1,
                    strategy="one_device", output=out, verbose=0,
                )
            )  # fmt: skip
        return result.steps_per_second

    def keras_fit() -> float:
        model = zoo.load(args.model)
        model.compile()
        ds = zoo.data.load(
            "digits", "train", batch_size=args.batch_size, num_examples=n, repeat=True,
            drop_remainder=True,
        )  # fmt: skip

        class Timer(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch == 0:
                    self.start = time.perf_counter()  # exclude tracing, as the zoo loop does

            def on_epoch_end(self, epoch, logs=None):
                self.rate = (args.steps - 1) / (time.perf_counter() - self.start)

        timer = Timer()
        model.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0, callbacks=[timer])
        return timer.rate

    zoo_rates, fit_rates = [], []
    for _ in range(args.repeats):
        zoo_rates.append(zoo_loop())
        fit_rates.append(keras_fit())
    zoo_best, fit_best = max(zoo_rates), max(fit_rates)
    print(
        json.dumps(
            {
                "model": args.model,
                "batch_size": args.batch_size,
                "steps": args.steps,
                "cpu_threads": os.cpu_count(),
                "tensorflow": tf.__version__,
                "zoo_loop_steps_per_s": round(zoo_best, 2),
                "keras_fit_steps_per_s": round(fit_best, 2),
                "zoo_loop_images_per_s": round(zoo_best * args.batch_size, 1),
                "ratio_zoo_over_fit": round(zoo_best / fit_best, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
