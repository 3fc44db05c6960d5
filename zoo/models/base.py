"""The model contract shared by every family.

A zoo model is a ``keras.Model`` subclass that

- keeps its registered name and config (``zoo_name``, ``zoo_config``), so export and serving can
  describe it without knowing what it is;
- declares what it serves through :meth:`ZooModel.serving_signatures`, a dict from signature name
  to ``(function, input_signature)``; every function returns a dict with named outputs;
- compiles with sensible defaults from its config (``model.compile()`` with no arguments, as
  KerasHub tasks do), so ``model.fit`` works for a user in one process and the zoo's trainer can
  drive every model the same way;
- overrides ``train_step`` when its training is more than one supervised loss. Such a step must
  scale its loss with :func:`scale_loss_for_replicas` so that gradients summed across replicas
  are the gradient of the global-batch mean, and take its gradients through
  :func:`apply_scaled_gradients`, so float16 loss scaling applies to it too;
- declares which of its parts may compute in a mixed precision (:meth:`ZooModel.mixed_precision_blocks`,
  :meth:`ZooModel.float32_layers`) or refuses one (:meth:`ZooModel.mixed_precision_refusal`);
  :mod:`zoo.precision` applies it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from zoo.export import CLASSIFY_METHOD
from zoo.registry import InvalidConfigError

__all__ = [
    "ZooModel",
    "ZooClassifier",
    "calibrated_softmax",
    "make_optimizer",
    "scale_loss_for_replicas",
    "apply_scaled_gradients",
    "check_image_batch",
    "track_batch_means",
]

# (fn, input_signature) or (fn, input_signature, method_name); the method name defaults to
# TF Serving's predict method. Classification signatures set CLASSIFY_METHOD.
Signature = tuple


def scale_loss_for_replicas(loss: tf.Tensor) -> tf.Tensor:
    """Divide a per-replica mean loss by the number of replicas in sync.

    Gradients are summed across replicas by the optimizer, so each replica must contribute
    ``mean_loss / num_replicas``. Outside a replica context this is the identity.
    """
    ctx = tf.distribute.get_replica_context()
    n = ctx.num_replicas_in_sync if ctx is not None else 1
    return loss / tf.cast(n, loss.dtype) if n > 1 else loss


def apply_scaled_gradients(optimizer, tape, loss, variables) -> list:
    """``tape.gradient(loss, variables)`` applied by ``optimizer``, under its loss scale.

    ``loss`` is what the step minimises on this replica (already divided by
    :func:`scale_loss_for_replicas` where it should be). With a loss-scaling optimizer (float16,
    :mod:`zoo.precision`) the gradient is taken of ``loss`` times the current dynamic scale, as
    the upstream gradient, so the tape need not have recorded the multiplication; the optimizer
    unscales it, and skips the step and halves the scale when a gradient overflowed. Otherwise
    this is ``tape.gradient`` then ``apply_gradients``. Returns the gradients as taken (scaled).
    """
    loss = tf.convert_to_tensor(loss)
    scale = optimizer.scale_loss(tf.ones_like(loss))
    grads = tape.gradient(loss, variables, output_gradients=tf.cast(scale, loss.dtype))
    optimizer.apply(grads, variables)
    return grads


def track_batch_means(trackers, values, batch) -> dict:
    """Update each ``trackers[name]`` (a ``keras.metrics.Mean``) with ``values[name]``, a mean
    over ``batch``, weighted by the batch's example count; returns the running results.

    So an epoch's figure is the mean over its examples, exactly: weighted equally, a short last
    batch would count as much as a full one (a validation accuracy of 0.8916 over 2,000 images
    whose exact figure was 0.8905). Under ``tf.distribute`` the metric variables sum totals and
    counts across replicas, so the weights stay exact there too."""
    n = tf.cast(tf.shape(tf.nest.flatten(batch)[0])[0], tf.float32)
    for name, value in values.items():
        trackers[name].update_state(value, sample_weight=n)
    return {name: trackers[name].result() for name in values}


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A Keras optimizer by name (``"adam"``, ``"sgd"``, ``"rmsprop"``, ...) with a learning rate."""
    try:
        return keras.optimizers.get(
            {"class_name": name, "config": {"learning_rate": learning_rate}}
        )
    except (ValueError, TypeError) as e:
        raise ValueError(f"unknown optimizer {name!r}: {e}") from e


def calibrated_softmax(logits: tf.Tensor, alpha: float = 1.0, eta: float = 0.0) -> tf.Tensor:
    """``p_c = (exp(alpha * logit_c) + eta) / sum_k (exp(alpha * logit_k) + eta)``.

    002_7240b1e8d13f6586.txt, ABS eq. 4: eta is added in probability space, which makes a model
    that fits no class well fall back to the uniform distribution. With ``eta = 0`` this is
    ``softmax(alpha * logits)``. Computed as ``softmax(logaddexp(alpha * logit, log eta))``,
    which is exact and neither overflows for large logits nor underflows the eta term.
    """
    logits = tf.convert_to_tensor(logits)
    scaled = tf.cast(tf.convert_to_tensor(alpha, dtype_hint=logits.dtype), logits.dtype) * logits
    if eta > 0:
        log_eta = tf.constant(math.log(eta), logits.dtype)
        scaled = tf.maximum(scaled, log_eta) + tf.math.log1p(tf.exp(-tf.abs(scaled - log_eta)))
    return tf.nn.softmax(scaled, axis=-1)


def check_image_batch(x: tf.Tensor, image_shape: Sequence[int], model_name: str) -> None:
    """Raise a clear error for a batch that is not ``(batch, *image_shape)`` floats.

    Static checks only (they run once per trace), so they cost nothing at serving time.
    """
    if not x.dtype.is_floating:
        raise TypeError(
            f"{model_name} expects float images in [0, 1] of shape (batch, "
            f"{', '.join(map(str, image_shape))}); got dtype {x.dtype.name}. "
            f"Convert with tf.cast(x, tf.float32) / 255."
        )
    shape = x.shape
    if shape.rank is not None:
        expected = tuple(image_shape)
        got = tuple(shape[1:])
        if shape.rank != len(expected) + 1 or any(
            g is not None and g != e for g, e in zip(got, expected, strict=True)
        ):
            raise ValueError(
                f"{model_name} expects images of shape (batch, "
                f"{', '.join(map(str, expected))}); got shape {tuple(shape)}"
            )


class ZooModel(keras.Model):
    """Base class of every zoo model. See the module docstring for the contract."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.zoo_name: str = self.name
        self._zoo_config_json = "{}"
        self._zoo_precision = "off"  # set by zoo.precision.apply_mixed_precision

    # -- identity -----------------------------------------------------------------------------
    def set_zoo_identity(self, name: str, config: dict[str, Any]) -> None:
        """Called by ``zoo.load``: remembers the registered name and the resolved config."""
        self.zoo_name = name
        # Kept as JSON so Keras' attribute tracking never wraps or mutates it.
        self._zoo_config_json = json.dumps(config, default=list, sort_keys=True)

    @property
    def zoo_config(self) -> dict[str, Any]:
        return json.loads(self._zoo_config_json)

    def _identity_config(self) -> dict[str, Any]:
        return {"zoo_identity": {"name": self.zoo_name, "config": self.zoo_config}}

    @classmethod
    def from_config(cls, config):
        """Rebuild from ``get_config()``, restoring the registered name and config."""
        config = dict(config)
        identity = config.pop("zoo_identity", None)
        model = cls(**config)
        if identity:
            model.set_zoo_identity(identity["name"], identity["config"])
        return model

    # -- training defaults --------------------------------------------------------------------
    def default_optimizer(self) -> keras.optimizers.Optimizer:
        config = self.zoo_config
        return make_optimizer(config.get("optimizer", "adam"), config.get("learning_rate", 1e-3))

    def default_loss(self):
        return None

    def default_metrics(self):
        return None

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """``keras.Model.compile`` where ``"auto"`` (the default) takes the model's own choice.

        Under a float16 policy (:mod:`zoo.precision`) the optimizer gets dynamic loss scaling."""
        optimizer = self.default_optimizer() if optimizer == "auto" else optimizer
        super().compile(
            optimizer=self.loss_scaled(optimizer),
            loss=self.default_loss() if loss == "auto" else loss,
            metrics=self.default_metrics() if metrics == "auto" else metrics,
            **kwargs,
        )

    # -- precision ----------------------------------------------------------------------------
    @property
    def precision(self) -> str:
        """``"off"``, ``"bfloat16"`` or ``"float16"``: what :mod:`zoo.precision` applied."""
        return self._zoo_precision

    def loss_scaled(self, optimizer):
        """``optimizer``, wrapped for dynamic loss scaling when the model trains in float16. A
        model that creates optimizers of its own (a GAN's, a nuisance classifier's) passes each
        through this."""
        from zoo.precision import loss_scaled

        return loss_scaled(optimizer, self._zoo_precision)

    def float32_layers(self) -> list[keras.layers.Layer]:
        """Sublayers that must keep computing in float32 under a mixed policy (the head is
        always one). Say why in :meth:`float32_reason`."""
        return []

    def float32_reason(self) -> str | None:
        return None

    def mixed_precision_refusal(self, mode: str) -> str | None:
        """Why this model cannot train in ``mode`` (``"bfloat16"``/``"float16"``) at all, or
        None."""
        return None

    def mixed_precision_blocks(self, mode: str) -> list[keras.layers.Layer]:
        """The sublayers that compute in ``mode``; each one's outputs are cast back to float32
        as they leave it. By default every direct sublayer with weights except the head and
        :meth:`float32_layers`."""
        keep = {id(layer) for layer in [*self.head_layers(), *self.float32_layers()]}
        return [
            layer
            for layer in self._flatten_layers(include_self=False, recursive=False)
            if id(layer) not in keep and layer.weights
        ]

    def compile_from_config(self, config):
        """Recompile a model loaded from ``.keras`` (our ``compile`` takes Keras' arguments)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def updated_metrics_result(self) -> dict[str, Any]:
        """``get_metrics_result`` without the metrics nothing has updated yet (eagerly; in a graph
        every metric is reported). For models whose training and validation track different
        values; works for the sync-on-read metric variables of a distribution strategy too."""

        def updated(m) -> bool:
            count = getattr(m, "count", None)
            if count is None or not tf.executing_eagerly():
                return True
            return float(tf.convert_to_tensor(count)) > 0

        return {m.name: m.result() for m in self.metrics if updated(m)}

    def training_callbacks(self) -> list[keras.callbacks.Callback]:
        """Callbacks the model's training needs (schedules such as KL annealing). The zoo's
        trainer adds them; a user of ``model.fit`` passes ``callbacks=model.training_callbacks()``."""
        return []

    # -- pretrained weights -------------------------------------------------------------------
    def head_layers(self) -> list[keras.layers.Layer]:
        """The classifier head: the layers whose weights are sized by the number of classes
        (timm's ``classifier``). Weights of another class count load into everything else and
        leave these freshly initialised (:func:`zoo.presets.load_into`).

        By default a layer held as ``self.head``, else the head of a wrapped zoo model held as
        ``self.classifier`` (training objectives), else none: every weight must then fit. A
        family whose head is elsewhere overrides this."""
        head = getattr(self, "head", None)
        if isinstance(head, keras.layers.Layer):
            return [head]
        inner = getattr(self, "classifier", None)
        if isinstance(inner, ZooModel):
            return inner.head_layers()
        return []

    # -- serving ------------------------------------------------------------------------------
    def serving_signatures(self) -> dict[str, Signature]:
        """Signature name → ``(fn, input_signature[, method_name])``; ``serving_default`` is
        always present. Every ``fn`` returns a dict of named outputs."""
        raise NotImplementedError(f"{type(self).__name__} declares no serving signatures")


class ZooClassifier(ZooModel):
    """An image classifier: ``call`` returns logits of shape ``(batch, num_classes)``.

    Serves ``serving_default``: ``images`` (batch, H, W, C) float32 in [0, 1] →
    ``logits``, ``probabilities`` (calibrated softmax, see :func:`calibrated_softmax`) and
    ``classes`` (int64 argmax); and ``classify``, TF Serving's classification signature:
    serialized ``tf.Example``s with the flattened image under ``images`` → ``classes`` (the class
    ids as strings) and ``scores`` (their probabilities).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int,
        alpha: float = 1.0,
        eta: float = 0.0,
        learning_rate: float = 1e-3,
        optimizer: str = "adam",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.optimizer_name = str(optimizer)
        try:
            make_optimizer(self.optimizer_name, learning_rate)  # fail at build, not mid-training
        except ValueError as e:
            raise InvalidConfigError(str(e)) from e
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.eta = float(eta)
        self.learning_rate = float(learning_rate)

    def get_config(self):
        return {
            "name": self.name,
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "alpha": self.alpha,
            "eta": self.eta,
            "learning_rate": self.learning_rate,
            "optimizer": self.optimizer_name,
            **self._identity_config(),
        }

    def build_for_inputs(self) -> ZooClassifier:
        """Create every variable by running one zero batch through the model."""
        self(tf.zeros((1, *self.image_shape)), training=False)
        return self

    def default_optimizer(self):
        return make_optimizer(self.optimizer_name, self.learning_rate)

    def default_loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def default_metrics(self):
        return ["accuracy"]

    def probabilities(self, logits: tf.Tensor) -> tf.Tensor:
        return calibrated_softmax(logits, self.alpha, self.eta)

    def serving_signatures(self) -> dict[str, Signature]:
        def serving_default(images):
            logits = self(images, training=False)
            return {
                "logits": logits,
                "probabilities": self.probabilities(logits),
                "classes": tf.argmax(logits, axis=-1),
            }

        size = 1
        for d in self.image_shape:
            size *= d

        def classify(inputs):
            # TF Serving's Classify API: serialized tf.Examples holding the flattened image under
            # "images"; every class id as a label, with its probability as the score.
            features = tf.io.parse_example(
                inputs, {"images": tf.io.FixedLenFeature([size], tf.float32)}
            )
            images = tf.reshape(features["images"], (-1, *self.image_shape))
            scores = self.probabilities(self(images, training=False))
            labels = tf.strings.as_string(tf.range(self.num_classes))
            return {
                "classes": tf.tile(labels[None], [tf.shape(images)[0], 1]),
                "scores": scores,
            }

        spec = tf.TensorSpec((None, *self.image_shape), tf.float32, name="images")
        examples = tf.TensorSpec((None,), tf.string, name="inputs")
        return {
            "serving_default": (serving_default, [spec]),
            "classify": (classify, [examples], CLASSIFY_METHOD),
        }
