"""Training throughput of the zoo's trainer loop, in one run: against Keras' own ``model.fit``,
and with mixed precision and XLA against float32 eager.

The zoo owns its loop (``strategy.run(model.train_step)``, see ``zoo/training.py``) because
``fit`` breaks under MultiWorkerMirroredStrategy. This measures what that costs: both run the same
model, optimizer, batch size and in-memory data, one after the other in one process, and the
script prints steps/s for each and their ratio (1.0 = no overhead). With ``--mixed-precision``
and/or ``--jit-compile`` it also runs the zoo loop with each of those settings (and both
together) and prints images/s and the ratio to float32 eager, each the best of ``--repeats``.

    python benchmarks/train_throughput.py [--model cnn_mnist] [--dataset digits]
        [--batch-size 128] [--steps 150] [--mixed-precision bfloat16 float16] [--jit-compile]
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
    p.add_argument("--repeats", type=int, default=2, help="alternate the runs, best of N each")
    p.add_argument(
        "--dataset", default="digits", help="the model's dataset (procedural by default)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model config overrides, as zoo-train's --set")  # fmt: skip
    p.add_argument("--mixed-precision", nargs="*", default=[], choices=("bfloat16", "float16"),
                   help="also time the zoo loop in these precisions")  # fmt: skip
    p.add_argument("--jit-compile", action="store_true", help="also time the zoo loop with XLA")
    p.add_argument("--no-fit", action="store_true", help="skip the model.fit comparison")
    args = p.parse_args()
    from zoo.cli_utils import parse_overrides

    overrides = parse_overrides(args.overrides)

    import tempfile

    import keras

    import zoo
    import zoo.data
    from zoo.training import TrainConfig, train

    n = args.batch_size * args.steps
    spec = zoo.get_spec(args.model)
    zoo.data.load(args.dataset, spec.training["train_split"], num_examples=n)  # generate once

    def zoo_loop(precision="off", jit=False) -> float:
        with tempfile.TemporaryDirectory() as out:
            result = train(
                TrainConfig(
                    model=args.model, dataset=args.dataset, epochs=1, steps_per_epoch=args.steps,
                    batch_size=args.batch_size, train_examples=n, validation_steps=1,
                    strategy="one_device", output=out, verbose=0, overrides=overrides,
                    mixed_precision=precision, jit_compile=jit,
                )
            )  # fmt: skip
        if jit and not result.jit_compile:
            print(f"XLA fell back for {args.model}", file=sys.stderr)
        return result.steps_per_second

    def keras_fit() -> float:
        model = zoo.load(args.model, **overrides)
        model.compile()
        ds = zoo.data.load(
            args.dataset, spec.training["train_split"], batch_size=args.batch_size,
            num_examples=n, repeat=True, drop_remainder=True,
            class_balanced=spec.training["class_balanced"],
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

    from zoo import runtime

    settings = [("off", False)] + [(mp, False) for mp in args.mixed_precision]
    if args.jit_compile:
        settings += [("off", True)] + [(mp, True) for mp in args.mixed_precision]
    rates = {s: [] for s in settings}
    fit_rates = []
    for _ in range(args.repeats):
        for setting in settings:
            rates[setting].append(zoo_loop(*setting))
        if not args.no_fit:
            fit_rates.append(keras_fit())
    best = {s: max(r) for s, r in rates.items()}
    base = best[("off", False)]
    report = {
        **runtime.describe(),
        "device_kind": runtime.device_kind(),
        "model": args.model,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "cpu_threads": os.cpu_count(),
        "zoo_loop_steps_per_s": round(base, 2),
        "zoo_loop_images_per_s": round(base * args.batch_size, 1),
    }
    if fit_rates:
        report["keras_fit_steps_per_s"] = round(max(fit_rates), 2)
        report["ratio_zoo_over_fit"] = round(base / max(fit_rates), 3)
    for (precision, jit), rate in best.items():
        if (precision, jit) == ("off", False):
            continue
        key = f"{'float32' if precision == 'off' else precision}{'_xla' if jit else ''}"
        report[f"{key}_images_per_s"] = round(rate * args.batch_size, 1)
        report[f"{key}_over_float32_eager"] = round(rate / base, 3)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
