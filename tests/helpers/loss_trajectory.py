"""Train a model briefly and print its per-step training loss as JSON (for test_distribute).

Run in a fresh interpreter: ``--cpu-devices`` must split the CPU before TensorFlow initialises.
Usage: python loss_trajectory.py STRATEGY CPU_DEVICES SYNC_BN LEARNING_RATE OUTPUT
[MODEL DATASET OVERRIDES_JSON LOG_KEY]; the default is cnn_mnist on digits, its ``loss``.
"""

import json
import sys

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
    strategy, cpu_devices, sync_bn, lr, output = sys.argv[1:6]
    model, dataset, overrides, key = (
        "cnn_mnist",
        "digits",
        {"sync_batchnorm": sync_bn == "1"},
        "loss",
    )
    if len(sys.argv) > 6:
        model, dataset, extra, key = sys.argv[6:10]
        overrides = json.loads(extra)
    record = RecordLoss(key)
    result = train(
        TrainConfig(
            model=model,
            dataset=dataset,
            epochs=2,
            steps_per_epoch=12,
            validation_steps=1,
            batch_size=64,
            train_examples=1536,
            strategy=strategy,
            cpu_devices=int(cpu_devices) or None,
            output=output,
            overrides={"optimizer": "sgd", "learning_rate": float(lr), **overrides},
            verbose=0,
            callbacks=[record],
        )
    )
    replicas = result.model.distribute_strategy.num_replicas_in_sync
    print(json.dumps({"losses": record.losses, "replicas": replicas}))


if __name__ == "__main__":
    main()
