"""Train cnn_mnist briefly and print its per-step training loss as JSON (for test_distribute).

Run in a fresh interpreter: ``--cpu-devices`` must split the CPU before TensorFlow initialises.
Usage: python loss_trajectory.py STRATEGY CPU_DEVICES SYNC_BN LEARNING_RATE OUTPUT
"""

import json
import sys

import keras

from zoo.training import TrainConfig, train


class RecordLoss(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def main():
    strategy, cpu_devices, sync_bn, lr, output = sys.argv[1:6]
    record = RecordLoss()
    result = train(
        TrainConfig(
            model="cnn_mnist",
            dataset="digits",
            epochs=2,
            steps_per_epoch=12,
            validation_steps=1,
            batch_size=64,
            train_examples=1536,
            strategy=strategy,
            cpu_devices=int(cpu_devices) or None,
            output=output,
            overrides={
                "optimizer": "sgd",
                "learning_rate": float(lr),
                "sync_batchnorm": sync_bn == "1",
            },
            verbose=0,
            callbacks=[record],
        )
    )
    replicas = result.model.distribute_strategy.num_replicas_in_sync
    print(json.dumps({"losses": record.losses, "replicas": replicas}))


if __name__ == "__main__":
    main()
