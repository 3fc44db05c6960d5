"""Racecar training (Xie & Thuerey, "Data-driven regularization via racecar training for
generalizing neural networks", 000_7daca03a93eb4fe1.txt; shared/digests/racecar.md).

Every constrained layer m is run backwards on its own variables, ``d'_m = M_mᵀ(x − b_m)``
(:mod:`zoo.layers.tied`), and the loss adds ``Σ_m λ_m ‖d_m − d'_m‖²`` (eq. 7) to the task loss:
the network must be able to reconstruct each layer's input from its output through the
transposed weights, which aligns the right-singular vectors of every layer with the dominant
features of its data (eqs. 5–21).

- ``mode="full"`` (eq. 10): the reverse pass is one chain that starts from the last constrained
  layer's forward output, ``d'_{n+1} = d_{n+1}``, and feeds each reconstruction to the next
  reverse layer. ``mode="layerwise"`` (eq. 9): each layer inverts its own forward output; the
  paper uses it for residual nets, where no single reverse path exists.
- Shift-by-one (app. A.2, eqs. 23/24): after layer m's transposed op the reverse pass applies
  BN_{m−1} and f_{m−1}, which produced d_m in the forward pass, then 2× nearest up-sampling if a
  max-pool followed d_m. d_m is the activated state before pooling. d'_1 gets the optional
  ``reconstruction_activation`` (ReLU for images, tanh for the MI net, none for the linear demos).
- BatchNorm in the reverse pass shares the forward layer's γ and β and normalises with the reverse
  tensor's own batch moments. Its running statistics are kept in shadow variables
  (:class:`ReverseBatchNorm`), so the reverse pass never changes the forward BatchNorm's moving
  statistics (the reference code reused one BN op for both passes, which mixes the two
  distributions into the statistics used at inference; digest §4.2 item 9).
- The term is the reference's ``λ·tf.nn.l2_loss``: ½·Σ over batch and elements, in float32
  (``racecar_reduction="sum_half"``; ``"sum"`` and ``"mean"`` are there for other λ scales).
  Under tf.distribute the task loss is a per-replica mean divided by the replica count, and the
  racecar sum is left as it is: summing gradients over replicas then gives the global sum.
- ``regularizer``: ``rr`` (racecar), ``ort`` (the SRIP baseline of Bansal et al., as the authors'
  code runs it: ``β·σ(WᵀW − I)²`` by one power iteration from a fresh random vector per step,
  β = 0.1, on every constrained kernel reshaped to ``[−1, out]``, the smaller Gram matrix; the
  coefficient decays per Bansal's schedule through :meth:`training_callbacks`) or ``none`` (Std).
- ``phase=2`` is the fine-tuning phase of the two-phase protocol (§1.5): the regulariser is off
  whatever ``regularizer`` says; start it from the phase-1 run with
  ``train.py --set phase=2 --init-from RUN_DIR``.

Every configuration of a model has the same variables (the tied layers, BatchNorm, the shadow
statistics and the SRIP coefficient), so weights move freely between Std, Ort and RR runs and
between the two phases.

Deviation from the reference demos: the demos apply softmax
cross-entropy to softmax outputs (a double softmax, digest §4.2 item 13); the zoo uses the proper
cross-entropy on the logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from zoo.layers.tied import TiedConv2D, TiedDense
from zoo.models.base import (
    ZooClassifier,
    apply_scaled_gradients,
    check_image_batch,
    scale_loss_for_replicas,
    track_batch_means,
)
from zoo.registry import InvalidConfigError, building_name, register_model, shared_config

__all__ = [
    "RacecarModel",
    "RacecarStack",
    "RacecarResNet",
    "ReverseBatchNorm",
    "OrthogonalityDecay",
    "srip_penalty",
    "racecar_loss",
    "bansal_decay",
]

PAPER = "000_7daca03a93eb4fe1.txt"
REGULARIZERS = ("none", "rr", "ort")
MODES = ("full", "layerwise")
REDUCTIONS = ("sum_half", "sum", "mean")


# -- the losses ----------------------------------------------------------------------------------
def racecar_loss(pairs, lambdas: Sequence[float], reduction: str = "sum_half") -> tf.Tensor:
    """``Σ_m λ_m · reduce((d_m − d'_m)²)`` over ``pairs = [(d_m, d'_m), ...]``, in float32.

    ``sum_half`` is the reference's ``tf.nn.l2_loss`` (½·Σ over batch and elements), ``sum`` the
    paper's eq. 7, ``mean`` the mean over batch and elements.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"racecar reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if len(pairs) != len(lambdas):
        raise ValueError(f"{len(pairs)} reverse-pass terms but {len(lambdas)} λ values")
    total = tf.constant(0.0, tf.float32)
    for (d, d_rec), lam in zip(pairs, lambdas, strict=True):
        if lam == 0:
            continue
        sq = tf.square(tf.cast(d, tf.float32) - tf.cast(d_rec, tf.float32))
        term = tf.reduce_mean(sq) if reduction == "mean" else tf.reduce_sum(sq)
        total += float(lam) * (0.5 * term if reduction == "sum_half" else term)
    return total


def srip_penalty(kernel, squared: bool = True, seed=None) -> tf.Tensor:
    """SRIP (Bansal et al. 2018; racecar eq. 27): the spectral norm of ``WᵀW − I``.

    ``W`` is the kernel reshaped to ``[−1, out]`` (TF layout; the reference's PyTorch-layout
    reshape would mix spatial and channel axes, digest §4.2 item 14), and the smaller of the two
    Gram matrices is used. One power iteration from a random normal vector, with gradients through
    it, as in the authors' code; ``squared`` penalises σ² as the code does (the paper writes σ).
    """
    w = tf.reshape(tf.cast(kernel, tf.float32), [-1, kernel.shape[-1]])
    gram = (
        tf.matmul(w, w, transpose_a=True)
        if w.shape[0] >= w.shape[1]
        else tf.matmul(w, w, transpose_b=True)
    )
    m = gram - tf.eye(gram.shape[0])
    u = tf.math.l2_normalize(tf.random.normal([gram.shape[0], 1], seed=seed), axis=0, epsilon=1e-12)
    v = tf.math.l2_normalize(tf.matmul(m, u, transpose_a=True), axis=0, epsilon=1e-12)
    u = tf.math.l2_normalize(tf.matmul(m, v), axis=0, epsilon=1e-12)
    sigma = tf.reduce_sum(u * tf.matmul(m, v))
    return tf.square(sigma) if squared else sigma


def bansal_decay(epoch: int) -> float:
    """Bansal et al.'s SRIP coefficient schedule (digest §1.6): 1 until epoch 20, then ×1e-3,
    ×1e-4 from 50, ×1e-6 from 70, 0 from 120."""
    if epoch < 20:
        return 1.0
    if epoch < 50:
        return 1e-3
    if epoch < 70:
        return 1e-4
    if epoch < 120:
        return 1e-6
    return 0.0


class OrthogonalityDecay(keras.callbacks.Callback):
    """Sets the model's SRIP coefficient factor at the start of every epoch from a schedule."""

    def __init__(self, schedule=bansal_decay):
        super().__init__()
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        self.model.ort_factor.assign(float(self.schedule(epoch)))


# -- reverse BatchNorm ---------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class ReverseBatchNorm(keras.layers.Layer):
    """The reverse pass's use of a forward ``BatchNormalization`` (shift-by-one rule).

    ``call(x, bn, training)`` normalises ``x`` with ``bn``'s γ and β: by the batch moments of
    ``x`` in training (which also update this layer's own moving statistics), by those moving
    statistics in inference. ``bn``'s own moving statistics are never touched.
    """

    def __init__(self, momentum: float = 0.9, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        shape = (input_shape[-1],)
        self.moving_mean = self.add_weight(
            shape=shape, name="moving_mean", initializer="zeros", trainable=False, autocast=False
        )
        self.moving_variance = self.add_weight(
            shape=shape, name="moving_variance", initializer="ones", trainable=False, autocast=False
        )

    def call(self, x, bn=None, training=False):
        x32 = tf.cast(x, tf.float32)
        if training:
            axes = list(range(len(x.shape) - 1))
            mean, variance = tf.nn.moments(x32, axes)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1 - m))
            self.moving_variance.assign(self.moving_variance * m + variance * (1 - m))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        gamma = tf.cast(bn.gamma, tf.float32) if bn is not None and bn.scale else None
        beta = tf.cast(bn.beta, tf.float32) if bn is not None and bn.center else None
        out = tf.nn.batch_normalization(x32, mean, variance, beta, gamma, self.epsilon)
        return tf.cast(out, x.dtype)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


# -- the base model ------------------------------------------------------------------------------
class RacecarModel(ZooClassifier):
    """A classifier with a tied reverse pass and the Std / Ort / RR training of the paper.

    Subclasses implement ``_forward(x, training) -> (logits, states)``,
    ``_reverse_pairs(states, training) -> [(d_m, d'_m), ...]``, ``_reconstruction(states,
    training) -> d'_1`` and ``constrained_layers`` (the tied layers, in forward order).
    """

    def __init__(
        self,
        *,
        regularizer: str = "rr",
        mode: str = "full",
        racecar_lambda: float | Sequence[float] = 1e-5,
        racecar_reduction: str = "sum_half",
        ort_beta: float = 0.1,
        ort_schedule: str = "bansal",
        ort_squared: bool = True,
        phase: int = 1,
        input_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if regularizer is None:  # `--set regularizer=none` parses to None
            regularizer = "none"
        if regularizer not in REGULARIZERS:
            raise InvalidConfigError(
                f"regularizer must be one of {REGULARIZERS}, got {regularizer!r}"
            )
        if mode not in MODES:
            raise InvalidConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if racecar_reduction not in REDUCTIONS:
            raise InvalidConfigError(
                f"racecar_reduction must be one of {REDUCTIONS}, got {racecar_reduction!r}"
            )
        if ort_schedule not in ("bansal", "constant"):
            raise InvalidConfigError(
                f"ort_schedule must be 'bansal' or 'constant', got {ort_schedule!r}"
            )
        if int(phase) not in (1, 2):
            raise InvalidConfigError(
                f"phase must be 1 (with the regulariser) or 2 (fine-tuning), got {phase!r}"
            )
        if not input_scale > 0:
            raise InvalidConfigError(f"input_scale must be positive, got {input_scale}")
        self.regularizer = regularizer
        self.mode = mode
        self.racecar_lambda = (
            [float(v) for v in racecar_lambda]
            if isinstance(racecar_lambda, list | tuple)
            else float(racecar_lambda)
        )
        self.racecar_reduction = racecar_reduction
        self.ort_beta = float(ort_beta)
        self.ort_schedule = ort_schedule
        self.ort_squared = bool(ort_squared)
        self.phase = int(phase)
        self.input_scale = float(input_scale)
        # The SRIP coefficient's schedule factor; every configuration has it, so weights are
        # interchangeable between Std, Ort and RR runs.
        self.ort_factor = self.add_weight(
            shape=(), name="ort_factor", initializer="ones", trainable=False, autocast=False
        )
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "task_loss", "racecar_loss", "ort_loss", "reconstruction_error")
        }
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    # -- configuration ------------------------------------------------------------------------
    @property
    def num_terms(self) -> int:
        """How many ``‖d_m − d'_m‖²`` terms the racecar loss has."""
        return len(self.constrained_layers)

    def lambdas(self) -> list[float]:
        lam = self.racecar_lambda
        if isinstance(lam, list):
            if len(lam) != self.num_terms:
                raise InvalidConfigError(
                    f"racecar_lambda has {len(lam)} values but the model has {self.num_terms} "
                    f"reverse-pass terms; give one λ per constrained layer or a single number"
                )
            return lam
        return [lam] * self.num_terms

    @property
    def racecar_active(self) -> bool:
        return self.phase == 1 and self.regularizer == "rr"

    @property
    def ort_active(self) -> bool:
        return self.phase == 1 and self.regularizer == "ort"

    def get_config(self):
        return {
            **super().get_config(),
            "regularizer": self.regularizer,
            "mode": self.mode,
            "racecar_lambda": self.racecar_lambda,
            "racecar_reduction": self.racecar_reduction,
            "ort_beta": self.ort_beta,
            "ort_schedule": self.ort_schedule,
            "ort_squared": self.ort_squared,
            "phase": self.phase,
            "input_scale": self.input_scale,
        }

    def training_callbacks(self):
        if self.ort_active and self.ort_schedule == "bansal":
            return [OrthogonalityDecay(bansal_decay)]
        return []

    # -- the passes -----------------------------------------------------------------------------
    def call(self, x, training=False):
        check_image_batch(x, self.image_shape, self.zoo_name)
        return self._forward(x, training=training)[0]

    def forward_states(self, x, training=False):
        """``(logits, [d_1, ..., d_{n+1}])``: the forward pass with its recorded states (d_1 is
        the scaled, flattened-if-dense input)."""
        x = tf.convert_to_tensor(x)
        check_image_batch(x, self.image_shape, self.zoo_name)
        return self._forward(x, training=training)

    def reverse_pairs(self, x, training=False):
        """``[(d_m, d'_m), ...]`` for input ``x``, in the model's ``mode``."""
        _, states = self.forward_states(x, training=training)
        return self._reverse_pairs(states, training=training)

    def reconstruct(self, x, training=False):
        """The input reconstructed by the reverse pass (d'_1), in the input's shape and units."""
        x = tf.convert_to_tensor(x)
        _, states = self.forward_states(x, training=training)
        rec = self._reconstruction(states, training=training)
        return tf.reshape(rec, tf.shape(x)) / tf.cast(self.input_scale, rec.dtype)

    def _scaled_input(self, x):
        return x * tf.cast(self.input_scale, x.dtype) if self.input_scale != 1.0 else x

    @staticmethod
    def _relative_error(d, d_rec):
        axes = list(range(1, len(d.shape)))
        d, d_rec = tf.cast(d, tf.float32), tf.cast(d_rec, tf.float32)
        num = tf.reduce_sum(tf.square(d - d_rec), axis=axes)
        return num / tf.maximum(tf.reduce_sum(tf.square(d), axis=axes), 1e-12)

    def relative_reconstruction_error(self, x, training=False):
        """Per example ``‖d'_1 − d_1‖² / ‖d_1‖²`` (the two-image test's figure)."""
        _, states = self.forward_states(x, training=training)
        return self._relative_error(states[0], self._reconstruction(states, training=training))

    # -- training ---------------------------------------------------------------------------------
    @property
    def metrics(self):
        return [*self.trackers.values(), self.accuracy_metric]

    def _task_loss(self, y, logits):
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.cast(logits, tf.float32))
        return tf.reduce_mean(ce)

    def _ort_loss(self):
        total = tf.constant(0.0, tf.float32)
        for layer in self.constrained_layers:
            total += srip_penalty(layer.kernel, squared=self.ort_squared)
        return self.ort_beta * self.ort_factor * total

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            logits, states = self._forward(x, training=True)
            task = self._task_loss(y, logits)
            total = scale_loss_for_replicas(task)
            rr = ort = tf.constant(0.0, tf.float32)
            if self.racecar_active:
                rr = racecar_loss(
                    self._reverse_pairs(states, training=True),
                    self.lambdas(),
                    self.racecar_reduction,
                )
                # A per-replica sum: summed over replicas it is the global-batch sum. A mean is
                # a per-replica mean and is scaled like the task loss.
                total += scale_loss_for_replicas(rr) if self.racecar_reduction == "mean" else rr
            if self.ort_active:
                ort = self._ort_loss()
                total += scale_loss_for_replicas(ort)  # one penalty per model, not per replica
        apply_scaled_gradients(self.optimizer, tape, total, self.trainable_variables)
        self.accuracy_metric.update_state(y, logits)
        if self.racecar_reduction != "mean":
            # Logged as the global-batch sum, so figures agree whatever the replica count.
            ctx = tf.distribute.get_replica_context()
            rr = rr * float(ctx.num_replicas_in_sync if ctx is not None else 1)
        terms = {"racecar_loss": rr} if self.racecar_active else {}
        terms.update({"ort_loss": ort} if self.ort_active else {})
        return self._track(x, loss=task + rr + ort, task_loss=task, **terms)

    def test_step(self, data):
        x, y = data[0], data[1]
        logits, states = self._forward(x, training=False)
        self.accuracy_metric.update_state(y, logits)
        rec = self._reconstruction(states, training=False)
        return self._track(
            x,
            loss=self._task_loss(y, logits),
            reconstruction_error=tf.reduce_mean(self._relative_error(states[0], rec)),
        )

    def get_metrics_result(self):
        # Training and validation track different values: report only what was measured.
        return self.updated_metrics_result()

    def _track(self, batch, **values):
        out = track_batch_means(self.trackers, values, batch)
        out["accuracy"] = self.accuracy_metric.result()
        return out

    # -- serving --------------------------------------------------------------------------------
    def serving_signatures(self):
        signatures = super().serving_signatures()

        def reconstruct(images):
            _, states = self._forward(images, training=False)
            rec = self._reconstruction(states, training=False)
            return {
                "reconstruction": tf.reshape(rec, tf.shape(images))
                / tf.cast(self.input_scale, rec.dtype),
                "relative_error": self._relative_error(states[0], rec),
            }

        spec = tf.TensorSpec((None, *self.image_shape), tf.float32, name="images")
        signatures["reconstruct"] = (reconstruct, [spec])
        return signatures


# -- stacks: dense and conv layers with BN, activation and pooling ---------------------------------
STAGE_KEYS = {
    "kind",
    "units",
    "kernel_size",
    "strides",
    "padding",
    "batchnorm",
    "activation",
    "pool",
}


def _stage(kind: str, units: int, **kw) -> dict[str, Any]:
    return {"kind": kind, "units": int(units), **kw}


@keras.saving.register_keras_serializable(package="zoo")
class RacecarStack(RacecarModel):
    """A feed-forward racecar net: constrained stages, then an optional unconstrained dense head.

    ``stages``: one dict per constrained layer, in order:
    ``{"kind": "dense"|"conv", "units": int, "kernel_size": 3, "strides": 1, "padding": "same",
    "batchnorm": False, "activation": None|"relu"|"tanh"|..., "pool": False}``. A stage computes
    ``d_{m+1} = f_m(BN_m(M_m d_m + b_m))``; ``pool`` max-pools (2×2) d_{m+1} before the next
    layer. ``head_units``: a dense layer on the flattened last state (the CNN's FC head, outside
    the reverse pass); None makes the last stage's output the logits.

    Input ``(batch, *image_shape)`` → logits ``(batch, num_classes)``.
    """

    def __init__(
        self,
        stages: Sequence[dict[str, Any]],
        head_units: int | None = None,
        reconstruction_activation: str | None = None,
        batchnorm_momentum: float = 0.9,
        batchnorm_epsilon: float = 1e-3,
        image_shape: Sequence[int] = (28, 28, 1),
        **kwargs,
    ):
        stages = [self._check_stage(i, dict(s)) for i, s in enumerate(stages)]
        if not stages:
            raise InvalidConfigError("a racecar stack needs at least one constrained stage")
        num_classes = int(head_units) if head_units else None
        if num_classes is None:
            if stages[-1]["kind"] != "dense" or stages[-1].get("pool"):
                raise InvalidConfigError(
                    "without head_units the last stage's output is the logits: it must be a dense "
                    "stage without pooling"
                )
            num_classes = stages[-1]["units"]
        super().__init__(image_shape=image_shape, num_classes=num_classes, **kwargs)
        self.stages = stages
        self.head_units = int(head_units) if head_units else None
        self.reconstruction_activation = reconstruction_activation
        self.batchnorm_momentum = float(batchnorm_momentum)
        self.batchnorm_epsilon = float(batchnorm_epsilon)

        self._layers_by_stage = []
        shape = tuple(self.image_shape)
        for i, s in enumerate(stages):
            if s["kind"] == "conv":
                if len(shape) != 3:
                    raise InvalidConfigError(
                        f"stage {i + 1} is a conv but its input has shape {shape}; conv stages need "
                        f"(H, W, C) inputs and must come before dense ones"
                    )
                linear = TiedConv2D(
                    s["units"], s.get("kernel_size", 3), strides=s.get("strides", 1),
                    padding=s.get("padding", "same"), name=f"tied_conv{i + 1}",
                )  # fmt: skip
                out = linear.compute_output_shape((None, *shape))[1:]
            else:
                linear = TiedDense(s["units"], name=f"tied_dense{i + 1}")
                out = (s["units"],)
            bn = rbn = None
            if s.get("batchnorm"):
                bn = keras.layers.BatchNormalization(
                    momentum=self.batchnorm_momentum,
                    epsilon=self.batchnorm_epsilon,
                    name=f"bn{i + 1}",
                )
                if i < len(stages) - 1:  # shift-by-one: the last BN is never used in reverse
                    rbn = ReverseBatchNorm(
                        self.batchnorm_momentum, self.batchnorm_epsilon, name=f"reverse_bn{i + 1}"
                    )
            act = keras.activations.get(s["activation"]) if s.get("activation") else None
            self._layers_by_stage.append(
                {"linear": linear, "bn": bn, "reverse_bn": rbn, "act": act}
            )
            if s.get("pool"):
                if len(out) != 3 or out[0] % 2 or out[1] % 2:
                    raise InvalidConfigError(
                        f"stage {i + 1} pools a {out} state: pooling needs an even (H, W) so the "
                        f"reverse up-sampling restores it exactly"
                    )
                out = (out[0] // 2, out[1] // 2, out[2])
            shape = out
        self.linears = [s["linear"] for s in self._layers_by_stage]
        self.batchnorms = [s["bn"] for s in self._layers_by_stage if s["bn"] is not None]
        self.reverse_batchnorms = [
            s["reverse_bn"] for s in self._layers_by_stage if s["reverse_bn"] is not None
        ]
        self.head = keras.layers.Dense(self.head_units, name="head") if self.head_units else None
        self.reconstruction_act = (
            keras.activations.get(reconstruction_activation) if reconstruction_activation else None
        )

    @staticmethod
    def _check_stage(i, s):
        unknown = set(s) - STAGE_KEYS
        if unknown or s.get("kind") not in ("dense", "conv") or int(s.get("units", 0)) < 1:
            raise InvalidConfigError(
                f"stage {i + 1} {s} is not valid: it needs kind 'dense' or 'conv' and units ≥ 1, "
                f"and may set only {sorted(STAGE_KEYS)}"
            )
        return s

    @property
    def constrained_layers(self):
        return self.linears

    def get_config(self):
        config = super().get_config()
        del config["num_classes"]  # implied by the stages and head
        return {
            **config,
            "stages": self.stages,
            "head_units": self.head_units,
            "reconstruction_activation": self.reconstruction_activation,
            "batchnorm_momentum": self.batchnorm_momentum,
            "batchnorm_epsilon": self.batchnorm_epsilon,
        }

    def build_for_inputs(self):
        x = tf.zeros((2, *self.image_shape))
        _, states = self._forward(x, training=False)
        self._reverse_pairs(states, training=False)  # builds the shadow BatchNorm statistics
        self(x, training=False)  # marks the model built, now that every sublayer is
        return self

    # forward: d_1 = scaled input (flattened if the first stage is dense)
    def _forward(self, x, training):
        h = self._scaled_input(x)
        if self.stages[0]["kind"] == "dense":
            h = tf.reshape(h, [-1, int(np.prod(self.image_shape))])
        states = [h]
        for s, layers in zip(self.stages, self._layers_by_stage, strict=True):
            if s["kind"] == "dense" and len(h.shape) > 2:
                h = tf.reshape(h, [-1, int(np.prod(h.shape[1:]))])
            z = layers["linear"](h)
            if layers["bn"] is not None:
                z = layers["bn"](z, training=training)
            if layers["act"] is not None:
                z = layers["act"](z)
            states.append(z)
            h = tf.nn.max_pool2d(z, 2, 2, "VALID") if s.get("pool") else z
        if self.head is not None:
            h = self.head(tf.reshape(h, [-1, int(np.prod(h.shape[1:]))]))
        return h, states

    def _reverse_stage(self, m, y, states, training):
        """Layer m's reverse: ``−b_m → M_mᵀ → BN_{m−1} → f_{m−1} → UP`` (shift-by-one)."""
        layers = self._layers_by_stage[m]
        r = layers["linear"].reverse(y)
        if m == 0:
            r = tf.reshape(r, tf.shape(states[0]))
            return self.reconstruction_act(r) if self.reconstruction_act is not None else r
        prev, prev_layers = self.stages[m - 1], self._layers_by_stage[m - 1]
        target = states[m].shape[1:]
        if prev.get("pool"):
            target = (target[0] // 2, target[1] // 2, target[2])
        if len(r.shape) - 1 != len(target):  # dense after conv: un-flatten
            r = tf.reshape(r, [-1, *target])
        if prev_layers["reverse_bn"] is not None:
            r = prev_layers["reverse_bn"](r, bn=prev_layers["bn"], training=training)
        if prev_layers["act"] is not None:
            r = prev_layers["act"](r)
        if prev.get("pool"):
            r = tf.repeat(tf.repeat(r, 2, axis=1), 2, axis=2)  # 2× nearest up-sampling
        return r

    def _reverse_pairs(self, states, training):
        n = len(self.stages)
        recon = [None] * n
        y = states[n]
        for m in reversed(range(n)):
            source = y if self.mode == "full" else states[m + 1]
            y = recon[m] = self._reverse_stage(m, source, states, training)
        return [(states[m], recon[m]) for m in range(n)]

    def _reconstruction(self, states, training):
        if self.mode == "layerwise":
            return self._reverse_stage(0, states[1], states, training)
        return self._reverse_pairs(states, training)[0][1]


# -- ResNet with layer-wise racecar ---------------------------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class RacecarResNet(RacecarModel):
    """Pre-activation CIFAR ResNet (He et al. 2016) with layer-wise racecar on every convolution.

    ``depth = 9·blocks_per_stage + 2`` with two 3×3 convolutions per block; stages of
    ``widths`` channels, the first block of stages 2 and 3 strided, with a 1×1 projection
    shortcut there. Each conv is compared as in the paper's Tab. 17: ``D(C(d_in)) ≈ d_in``, where
    d_in is the conv's (post-BN-ReLU) input; convs have no bias, so the reverse subtracts none.
    """

    def __init__(
        self,
        blocks_per_stage: int = 18,
        widths: Sequence[int] = (16, 32, 64),
        image_shape: Sequence[int] = (32, 32, 3),
        num_classes: int = 10,
        batchnorm_momentum: float = 0.9,
        batchnorm_epsilon: float = 1e-5,
        mode: str = "layerwise",
        **kwargs,
    ):
        if mode != "layerwise":
            raise InvalidConfigError(
                "a residual net has no single reverse path through its additions: use "
                "mode='layerwise' (the paper's choice for ResNet110)"
            )
        super().__init__(image_shape=image_shape, num_classes=num_classes, mode=mode, **kwargs)
        self.blocks_per_stage = int(blocks_per_stage)
        self.widths = [int(w) for w in widths]
        self.batchnorm_momentum = float(batchnorm_momentum)
        self.batchnorm_epsilon = float(batchnorm_epsilon)

        def bn(name):
            return keras.layers.BatchNormalization(
                momentum=self.batchnorm_momentum, epsilon=self.batchnorm_epsilon, name=name
            )

        def conv(filters, k, stride, name):
            return TiedConv2D(filters, k, strides=stride, padding="same", use_bias=False, name=name)

        self.stem = conv(self.widths[0], 3, 1, "stem")
        self.blocks = []
        in_ch = self.widths[0]
        for s, width in enumerate(self.widths):
            for b in range(self.blocks_per_stage):
                stride = 2 if s > 0 and b == 0 else 1
                name = f"stage{s + 1}_block{b + 1}"
                self.blocks.append(
                    {
                        "bn1": bn(f"{name}_bn1"),
                        "conv1": conv(width, 3, stride, f"{name}_conv1"),
                        "bn2": bn(f"{name}_bn2"),
                        "conv2": conv(width, 3, 1, f"{name}_conv2"),
                        "shortcut": conv(width, 1, stride, f"{name}_shortcut")
                        if stride != 1 or in_ch != width
                        else None,
                    }
                )
                in_ch = width
        self.final_bn = bn("final_bn")
        self.head = keras.layers.Dense(num_classes, name="head")
        self._block_layers = [[v for v in blk.values() if v is not None] for blk in self.blocks]

    @property
    def constrained_layers(self):
        layers = [self.stem]
        for blk in self.blocks:
            layers += [blk["conv1"], blk["conv2"]] + ([blk["shortcut"]] if blk["shortcut"] else [])
        return layers

    def get_config(self):
        return {
            **super().get_config(),
            "blocks_per_stage": self.blocks_per_stage,
            "widths": self.widths,
            "batchnorm_momentum": self.batchnorm_momentum,
            "batchnorm_epsilon": self.batchnorm_epsilon,
        }

    def build_for_inputs(self):
        self(tf.zeros((1, *self.image_shape)), training=False)
        return self

    def _forward(self, x, training):
        # states: a flat list (d_in, d_out) per constrained conv, in constrained_layers order
        h = self._scaled_input(x)
        out = self.stem(h)
        states = [h, out]
        x = out
        for blk in self.blocks:
            a = tf.nn.relu(blk["bn1"](x, training=training))
            o1 = blk["conv1"](a)
            a2 = tf.nn.relu(blk["bn2"](o1, training=training))
            o2 = blk["conv2"](a2)
            states += [a, o1, a2, o2]
            if blk["shortcut"] is not None:
                sc = blk["shortcut"](a)
                states += [a, sc]
            else:
                sc = x
            x = o2 + sc
        x = tf.nn.relu(self.final_bn(x, training=training))
        return self.head(tf.reduce_mean(x, axis=[1, 2])), states

    def _reverse_pairs(self, states, training):
        return [
            (states[2 * i], layer.reverse(states[2 * i + 1]))
            for i, layer in enumerate(self.constrained_layers)
        ]

    def _reconstruction(self, states, training):
        return self.stem.reverse(states[1])


# -- registered models ----------------------------------------------------------------------------
# The config keys every racecar model has; a builder's own defaults win.
_RACECAR_DEFAULTS = {
    "regularizer": "rr",
    "mode": "full",
    "racecar_reduction": "sum_half",
    "ort_beta": 0.1,
    "ort_schedule": "constant",
    "ort_squared": True,
    "phase": 1,
    "input_scale": 1.0,
    "optimizer": "adam",
    "alpha": 1.0,
    "eta": 0.0,
}


def _stack(name: str, common: dict[str, Any], **config) -> RacecarStack:
    return RacecarStack(name=building_name(name), **common, **config).build_for_inputs()


@register_model(
    "racecar_mnist_2img", family="racecar", dataset="digits", paper=PAPER,
    training={"epochs": 1, "batch_size": 2},
)  # fmt: skip
@shared_config(_RACECAR_DEFAULTS)
def racecar_mnist_2img(
    racecar_lambda=1e-5, input_scale=255.0, image_shape=(28, 28, 1), num_classes=10,
    learning_rate=1e-4, **common,
):  # fmt: skip
    """The paper's MNIST two-image SVD test (Tab. 8): one linear layer 784 → 10, no activation.

    Reference settings (the authors' demo): raw 0–255 pixels (``input_scale=255``), λ = 1e-5 on
    ½·Σ‖x' − x‖², Adam lr 1e-4, full batch of the two training images, 1000 steps
    (``python -m zoo.repro racecar_two_image``). The SRIP coefficient is constant here (the demo
    has no schedule). Cross-entropy: see the module docstring.
    """
    return _stack(
        "racecar_mnist_2img", common, stages=[_stage("dense", num_classes)],
        racecar_lambda=racecar_lambda, input_scale=input_scale, image_shape=image_shape,
        learning_rate=learning_rate,
    )  # fmt: skip


@register_model(
    "racecar_peak", family="racecar", dataset="peak", paper=PAPER,
    training={"epochs": 50, "batch_size": 100},
)  # fmt: skip
@shared_config(_RACECAR_DEFAULTS)
def racecar_peak(
    hidden_units=(), batchnorm=False, activation=None, racecar_lambda=1e-6, input_scale=255.0,
    image_shape=(28, 28, 1), num_classes=2, learning_rate=1e-4, **common,
):  # fmt: skip
    """The paper's "peak" SVD test (Fig. 3b/4a, Tab. 8): one linear layer 784 → 2 on the
    procedural ``peak`` dataset.

    Reference settings: raw 0–255 pixels, λ = 1e-6, Adam lr 1e-4, full batch of 100, 5000 steps.
    ``hidden_units=[128], batchnorm=True, activation="relu"`` gives the authors' repository
    default (Fig. 15c): ``relu(BN(FC 128)) → relu(BN(FC 2))`` with terms on the input and the
    128-d state; ``batchnorm=True, activation="relu"`` alone gives Fig. 15b.
    """
    stages = [
        _stage("dense", units, batchnorm=bool(batchnorm), activation=activation)
        for units in [*hidden_units, num_classes]
    ]
    return _stack(
        "racecar_peak", common, stages=stages, racecar_lambda=racecar_lambda,
        input_scale=input_scale, image_shape=image_shape, learning_rate=learning_rate,
    )  # fmt: skip


@register_model(
    "racecar_mnist_mlp", family="racecar", dataset="var_u", paper=PAPER,
    training={"epochs": 200, "batch_size": 512},
)  # fmt: skip
@shared_config(_RACECAR_DEFAULTS)
def racecar_mnist_mlp(
    widths=(10, 7, 5, 4, 3, 2), racecar_lambda=1e-2, image_shape=(12,), learning_rate=4e-4,
    **common,
):  # fmt: skip
    """The mutual-information test's MLP (sec. 4, Tabs. 9/10): 12 → 10 → 7 → 5 → 4 → 3 → 2, tanh
    after every layer including the 2-unit output, which is the logits.

    Trained on ``var_u`` (Shwartz-Ziv & Tishby's 12-bit task, regenerated procedurally), batch
    512, Adam lr 4e-4. RR (full): six terms, λ = 1e-2, tanh on the input reconstruction. The
    layer-wise IRR variant of the paper is ``mode="layerwise", racecar_lambda=[8e-2, 6e-2, 4e-2,
    2e-2, 1e-2, 1e-2]``. For MNIST pass ``image_shape=[28,28,1]`` and ``widths=[..., 10]``.
    """
    return _stack(
        "racecar_mnist_mlp", common, stages=[_stage("dense", w, activation="tanh") for w in widths],
        reconstruction_activation="tanh", racecar_lambda=racecar_lambda, image_shape=image_shape,
        learning_rate=learning_rate,
    )  # fmt: skip


@register_model(
    "racecar_mnist_cnn", family="racecar", dataset="mnist", paper=PAPER,
    training={"epochs": 5, "batch_size": 64},
)  # fmt: skip
@shared_config(_RACECAR_DEFAULTS)
def racecar_mnist_cnn(
    filters=(64, 64, 1), racecar_lambda=1e-5, ort_schedule="bansal", image_shape=(28, 28, 1),
    num_classes=10, learning_rate=1e-3, **common,
):  # fmt: skip
    """The paper's MNIST CNN (App. C.1, Tab. 15): ``relu(C(3,64)) → MP → relu(C(3,64)) → MP →
    relu(C(3,1)) = I_r (7×7×1) → FC(10)``, 38,645 parameters.

    The reverse pass (full) starts at I_r: ``−b3 → D3 → relu → UP → −b2 → D2 → relu → UP → −b1 →
    D1 → relu``; the FC head is outside it. Batch 64, λ = 1e-5 per conv, Adam lr 1e-3 in phase 1
    and 1e-4 for fine-tuning (``--set phase=2 --set learning_rate=1e-4 --init-from RUN``). The
    paper trains 100 epochs (phase 1) and 400 (fine-tuning); the default here is 5.
    """
    if len(filters) != 3:
        raise InvalidConfigError(f"filters needs the three conv widths, got {filters}")
    stages = [
        _stage("conv", f, kernel_size=3, activation="relu", pool=i < 2)
        for i, f in enumerate(filters)
    ]
    return _stack(
        "racecar_mnist_cnn", common, stages=stages, head_units=num_classes,
        reconstruction_activation="relu", racecar_lambda=racecar_lambda,
        ort_schedule=ort_schedule, image_shape=image_shape, learning_rate=learning_rate,
    )  # fmt: skip


@register_model(
    "racecar_resnet110_cifar10", family="racecar", dataset="cifar10", paper=PAPER,
    training={"epochs": 200, "batch_size": 256},
)  # fmt: skip
@shared_config({k: v for k, v in _RACECAR_DEFAULTS.items() if k != "mode"})
def racecar_resnet110_cifar10(
    blocks_per_stage=18, widths=(16, 32, 64), racecar_lambda=1e-8, ort_schedule="bansal",
    image_shape=(32, 32, 3), num_classes=10, learning_rate=0.01, optimizer="sgd", **common,
):  # fmt: skip
    """ResNet110 on CIFAR-10 with layer-wise racecar (sec. 5, Tabs. 7, 17, 18): pre-activation
    blocks, 18 per stage, widths 16/32/64; λ = 1e-8 on every conv; batch 256, lr 0.01, 200 epochs.

    A GPU-scale configuration: on this CPU it builds and takes steps (tested), but the paper's
    schedule takes GPU-days. The optimizer is not stated in the paper; SGD at 0.01 is used.
    """
    config = {k: v for k, v in locals().items() if k != "common"}
    return RacecarResNet(
        name=building_name("racecar_resnet110_cifar10"), mode="layerwise", **config, **common
    ).build_for_inputs()
