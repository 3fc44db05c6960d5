"""``linear_mnist``: a linear classifier on raw pixels.

The floor any image model must beat, and the check that a dataset is a real learning problem: on
``digits`` it stays clearly below the CNN (README, "Datasets").
"""

from __future__ import annotations

import keras

from zoo.models.base import ZooClassifier, check_image_batch
from zoo.registry import register_model


@keras.saving.register_keras_serializable(package="zoo")
class LinearClassifier(ZooClassifier):
    """Logits = W·vec(x) + b. Input ``(batch, *image_shape)`` → ``(batch, num_classes)``."""

    def __init__(self, image_shape=(28, 28, 1), num_classes=10, **kwargs):
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
        self.flatten = keras.layers.Flatten(name="flatten")
        self.dense = keras.layers.Dense(self.num_classes, name="logits")

    def call(self, x, training=False):
        check_image_batch(x, self.image_shape, self.zoo_name)
        return self.dense(self.flatten(x))

    def head_layers(self):
        return [self.dense]


@register_model(
    "linear_mnist", family="linear", dataset="mnist", training={"epochs": 15, "batch_size": 128}
)
def linear_mnist(
    image_shape=(28, 28, 1),
    num_classes=10,
    learning_rate=3e-3,
    optimizer="adam",
    alpha=1.0,
    eta=0.0,
):
    """Linear classifier on raw pixels: the floor a learnable image task must sit clearly above."""
    return LinearClassifier(
        name="linear_mnist",
        image_shape=image_shape,
        num_classes=num_classes,
        learning_rate=learning_rate,
        optimizer=optimizer,
        alpha=alpha,
        eta=eta,
    ).build_for_inputs()


__all__ = ["LinearClassifier", "linear_mnist"]
