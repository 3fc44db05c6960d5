"""Training objectives that apply to any zoo classifier, as models that wrap it.

A :class:`ClassifierObjective` is a zoo model holding a classifier (``model.classifier``). Its
``train_step`` implements the objective — it may build the batch the classifier sees (noise
training), add a game against another network (adversarial noise), or add loss terms — and hands
the classifier's own update to the classifier's ``train_step``, so the classifier keeps its
loss, optimizer, metrics and any training of its own (a reverse-pass term, a flow's iCE loss).
It calls the classifier for inference, and it serves the classifier's signatures plus its own.

Why a wrapper and not a trainer option: the zoo's contract is that training which is more than one
supervised loss lives in the model's ``train_step``, so the trainer, ``model.fit`` and export never
learn about objectives. An objective is registered with :func:`zoo.registry.register_objective`
under a config key; ``zoo.load("cnn_mnist", noise="ant")`` (``--set noise=ant``) builds the
classifier from its own registration and wraps it. The wrapper's weights are the classifier's
(same paths, so ``--init-from`` moves weights between a wrapped and a plain run) plus the
objective's state.

Subclasses implement ``objective_train_step(x, y)`` and may add ``objective_test_logs(x, y)``,
``objective_signatures()``, ``objective_callbacks()`` and ``objective_metrics``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import keras
import tensorflow as tf

from zoo.models.base import ZooClassifier, ZooModel
from zoo.registry import InvalidConfigError

__all__ = ["ClassifierObjective", "check_wrappable"]


def check_wrappable(model, objective: str, image_rank: int | None = 3) -> None:
    """Raise InvalidConfigError unless ``model`` is a zoo classifier an objective can wrap."""
    if not isinstance(model, ZooClassifier):
        raise InvalidConfigError(
            f"the {objective!r} objective trains zoo classifiers (ZooClassifier); "
            f"{getattr(model, 'zoo_name', model.name)} is a {type(model).__name__}"
        )
    if isinstance(model, ClassifierObjective):
        raise InvalidConfigError(f"{model.zoo_name} already has an objective ({model.objective})")
    if image_rank is not None and len(model.image_shape) != image_rank:
        raise InvalidConfigError(
            f"the {objective!r} objective needs image inputs (H, W, C) in [0, 1]; "
            f"{model.name} takes inputs of shape {model.image_shape}"
        )


class ClassifierObjective(ZooModel):
    """A zoo model that trains ``classifier`` with an objective; see the module docstring.

    ``call`` is the classifier's; ``image_shape``, ``num_classes`` and ``probabilities`` are too,
    so attacks and evaluations take the wrapper or ``wrapper.classifier`` alike.
    """

    objective: ClassVar[str] = "objective"
    # The config keys that belong to the objective (the rest are the classifier's).
    objective_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, classifier: ZooClassifier, **kwargs):
        # Named as the classifier, so its weights keep the same paths in both models.
        kwargs.setdefault("name", classifier.name)
        super().__init__(**kwargs)
        self.classifier = classifier

    # -- the classifier's face ----------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.classifier.image_shape

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    @property
    def binarize(self) -> bool:
        return bool(getattr(self.classifier, "binarize", False))

    def probabilities(self, logits):
        return self.classifier.probabilities(logits)

    def call(self, x, training=False):
        return self.classifier(x, training=training)

    def set_zoo_identity(self, name: str, config: dict[str, Any]) -> None:
        super().set_zoo_identity(name, config)
        if self.classifier.zoo_config == {}:  # a classifier built for this wrapper only
            own = {k: v for k, v in config.items() if k not in self.objective_keys}
            self.classifier.set_zoo_identity(name, own)

    # -- compile and build --------------------------------------------------------------------
    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """Compile the classifier (``"auto"``: its own defaults) and share its optimizer, so
        learning-rate callbacks act on the classifier; then the objective's own state."""
        self.classifier.compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        keras.Model.compile(self, optimizer=self.classifier.optimizer)
        if not self.classifier.optimizer.built:
            self.classifier.optimizer.build(self.classifier.trainable_variables)
        self.compile_objective()

    # -- precision ----------------------------------------------------------------------------
    def mixed_precision_refusal(self, mode):
        return self.classifier.mixed_precision_refusal(mode)

    def float32_reason(self):
        return self.classifier.float32_reason()

    def mixed_precision_blocks(self, mode):
        """The classifier's own blocks. The objective's layers (a noise generator: a few
        small convolutions whose output is projected onto the ε-sphere) stay float32."""
        return self.classifier.mixed_precision_blocks(mode)

    def compile_objective(self) -> None:
        """Create the objective's optimizers and metrics (a subclass hook)."""

    def compile_from_config(self, config):
        self.compile()

    def _symbolic_build(self, iterator=None, data_batch=None):
        # The zoo's trainer (and Keras under a distribution strategy) builds every variable before
        # the first distributed step; the classifier's compiled metrics are built from a batch.
        if data_batch is None and iterator is not None:
            for _, _, it in iterator:
                data_batch = it[0] if isinstance(it, list | tuple) else next(it)
                break
        if data_batch is not None:
            self.classifier._symbolic_build(data_batch=tuple(data_batch)[:2])
        super()._symbolic_build(data_batch=data_batch)

    # -- weights files --------------------------------------------------------------------------
    def _optimizers(self) -> list:
        """Every optimizer the wrapper holds (the classifier's and the objective's own): their
        state is not a weight, and a weights file that carried it would not load into a fresh,
        uncompiled copy of the model (Keras keeps only the top-level optimizer out by itself)."""
        found = [getattr(self.classifier, "optimizer", None)]
        found += [v for v in vars(self).values() if isinstance(v, keras.optimizers.Optimizer)]
        return [o for o in dict.fromkeys(found) if o is not None]

    def save_weights(self, filepath, overwrite=True, max_shard_size=None):
        from keras.src.saving import saving_lib

        if str(filepath).endswith(".keras"):
            return super().save_weights(filepath, overwrite=overwrite)
        if not overwrite and Path(filepath).exists():
            raise FileExistsError(f"{filepath} exists and overwrite=False")
        saving_lib.save_weights_only(self, filepath, max_shard_size=max_shard_size,
                                     objects_to_skip=self._optimizers())  # fmt: skip

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        from keras.src.saving import saving_lib

        if not str(filepath).endswith(".weights.h5") or kwargs:
            return super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)
        saving_lib.load_weights_only(self, filepath, skip_mismatch=skip_mismatch,
                                     objects_to_skip=self._optimizers())  # fmt: skip

    # -- training -----------------------------------------------------------------------------
    @property
    def metrics(self):
        return [*self.classifier.metrics, *self.objective_metrics]

    @property
    def objective_metrics(self) -> list:
        return []

    def get_metrics_result(self):
        out = {}
        for m in self.metrics:
            count = getattr(m, "count", None)
            if count is not None and tf.executing_eagerly():
                if float(tf.convert_to_tensor(count)) == 0:
                    continue  # tracked in training or in evaluation only
            result = m.result()
            out.update(result if isinstance(result, dict) else {m.name: result})
        return out

    def train_step(self, data):
        x, y = data[0], data[1]
        return self.objective_train_step(x, y)

    def objective_train_step(self, x, y) -> dict:
        raise NotImplementedError

    def classifier_train_step(self, x, y) -> dict:
        """One step of the classifier's own training on ``(x, y)``; its logs."""
        return self.classifier.train_step((x, y))

    def test_step(self, data):
        logs = dict(self.classifier.test_step(data))
        logs.update(self.objective_test_logs(data[0], data[1]))
        return logs

    def objective_test_logs(self, x, y) -> dict:
        return {}

    def training_callbacks(self):
        return [*self.classifier.training_callbacks(), *self.objective_callbacks()]

    def objective_callbacks(self) -> list:
        return []

    # -- serving ------------------------------------------------------------------------------
    def serving_signatures(self):
        signatures = dict(self.classifier.serving_signatures())
        own = self.objective_signatures()
        clash = sorted(set(own) & set(signatures))
        if clash:
            raise ValueError(f"{self.objective} signatures {clash} clash with the classifier's")
        signatures.update(own)
        return signatures

    def objective_signatures(self) -> dict:
        return {}

    # -- config -------------------------------------------------------------------------------
    def objective_config(self) -> dict[str, Any]:
        return {}

    def get_config(self):
        return {
            "name": self.name,
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            **self.objective_config(),
            **self._identity_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        identity = config.pop("zoo_identity", None)
        model = cls(**config)
        if identity:
            model.set_zoo_identity(identity["name"], identity["config"])
        return model

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.objective} around {self.classifier.zoo_name}: "
            f"{json.dumps(self.objective_config(), default=str)}>"
        )
