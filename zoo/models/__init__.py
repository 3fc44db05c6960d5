"""Model families. Importing this package registers every model (see ``zoo.registry``)."""

from zoo.models import (  # noqa: F401  (registration side effects)
    abs,
    cnn,
    feature_alignment,
    firevnet,
    generalization,
    inn_autoencoder,
    linear,
    nearest,
    noise_training,
    racecar,
    slowvae,
)
from zoo.models.base import (
    ZooClassifier,
    ZooModel,
    apply_scaled_gradients,
    calibrated_softmax,
    check_image_batch,
    scale_loss_for_replicas,
)

__all__ = [
    "ZooModel",
    "ZooClassifier",
    "apply_scaled_gradients",
    "calibrated_softmax",
    "check_image_batch",
    "scale_loss_for_replicas",
]
