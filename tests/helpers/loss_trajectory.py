"""Train models briefly and print each run's per-step training loss as JSON (for the tf.distribute
tests).

Run in a fresh interpreter: the CPU is split into ``CPU_DEVICES`` logical devices before
TensorFlow initialises, so one process runs single-device and mirrored runs side by side (a
one-device run uses the first device). Usage::

    python loss_trajectory.py CPU_DEVICES OUTPUT RUNS_JSON

``RUNS_JSON`` is a list of runs, each ``{"strategy": ..., "learning_rate": ..., "model": ...,
"dataset": ..., "overrides": {...}, "key": ...}``; everything but ``strategy`` has a default
(cnn_mnist on digits, plain SGD at lr 0.01, its ``loss``, float32, no XLA; ``mixed_precision``
and ``jit_compile`` set the trainer's flags; ``epochs`` and ``steps_per_epoch``, 2 and 12 by
default). Prints ``{"runs": [{"losses": [...], "replicas": n,
"loss_scale": s or null, "jit_compile": bool}, ...]}``.
"""

import json
import sys
from pathlib import Path

import keras

from zoo.training import TrainConfig, train


class RecordLoss(keras.callbacks.Callback):
    def __init__(self, key):
        super().__init__()
        self.key = key
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs[self.key]))


def main():
    cpu_devices, output, runs = int(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    results = []
    for i, run in enumerate(runs):
        record = RecordLoss(run.get("key", "loss"))
        result = train(
            TrainConfig(
                model=run.get("model", "cnn_mnist"),
                dataset=run.get("dataset", "digits"),
                epochs=int(run.get("epochs", 2)),
                steps_per_epoch=int(run.get("steps_per_epoch", 12)),
                validation_steps=1,
                batch_size=64,
                train_examples=1536,
                strategy=run["strategy"],
                cpu_devices=cpu_devices or None,
                output=str(output / f"run{i}"),
                overrides={
                    "optimizer": "sgd",
                    "learning_rate": float(run.get("learning_rate", 0.01)),
                    **run.get("overrides", {}),
                },
                verbose=0,
                callbacks=[record],
                mixed_precision=run.get("mixed_precision", "off"),
                jit_compile=bool(run.get("jit_compile", False)),
            )
        )
        replicas = result.model.distribute_strategy.num_replicas_in_sync
        scale = getattr(result.model.optimizer, "dynamic_scale", None)
        results.append({
            "losses": record.losses, "replicas": replicas,
            "loss_scale": None if scale is None else float(scale.numpy()),
            "jit_compile": result.jit_compile,
        })  # fmt: skip
    print(json.dumps({"runs": results}))


if __name__ == "__main__":
    main()
