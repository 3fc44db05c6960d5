"""Mixed precision for zoo models: which parts run in bfloat16 or float16, and loss scaling.

``zoo-train --mixed-precision {off,bfloat16,float16}`` calls :func:`apply_mixed_precision` on the
built model before it is compiled. A Keras dtype policy set globally would run every layer in
the low precision, including the parts of a model whose arithmetic must not lose bits
(invertible couplings and their log-determinants, ABS's latent search, feature alignment's inner
gradient step). So the policy is applied per block instead:

- a model declares its *mixed blocks* (:meth:`zoo.models.ZooModel.mixed_precision_blocks`):
  the sublayers that may compute in the low precision. By default every direct sublayer with
  weights except the classifier head and the layers the model declares float32
  (:meth:`~zoo.models.ZooModel.float32_layers`);
- each mixed block gets the policy (``mixed_bfloat16`` or ``mixed_float16``: float32 variables,
  low-precision compute), and its floating outputs are cast back to float32 as they leave it.
  Everything outside the blocks (losses, metrics, softmax, log-dets, searches) sees float32;
- a model that cannot honour the policy at all refuses it
  (:meth:`~zoo.models.ZooModel.mixed_precision_refusal`) with a reason, and the trainer stops
  with that message. Nothing is silently wrong: what was applied is returned and the trainer
  writes it into ``config.json``.

float16 also needs dynamic loss scaling: every optimizer the model creates is wrapped in
:class:`LossScaleOptimizer`, and the zoo's custom ``train_step``s take their gradients through
:func:`zoo.models.base.apply_scaled_gradients`, which scales the loss by the optimizer's current
scale (Keras' own ``train_step`` does the same through ``optimizer.scale_loss``).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import keras
import tensorflow as tf

MODES = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

__all__ = [
    "MODES",
    "PrecisionError",
    "LossScaleOptimizer",
    "apply_mixed_precision",
    "restore_float32",
    "loss_scaled",
    "float32_scope",
    "inference_scope",
]


class PrecisionError(ValueError):
    """A precision a model cannot honour, or an unknown precision name."""


class LossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """``keras.optimizers.LossScaleOptimizer`` whose overflow check agrees across replicas.

    Keras' version decides from the first replica's *local* gradients whether to apply a step
    (its comment assumes they were all-reduced already; under ``MirroredStrategy`` they are not
    until the inner optimizer runs). An overflow on another replica would then be summed into the
    update. Here every replica first learns whether any replica overflowed (one all-reduce of a
    scalar) and, if one did, all of them see non-finite gradients: every replica skips the step
    and halves the scale together.
    """

    def apply(self, grads, trainable_variables=None):
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            local_overflow = 1.0 - tf.cast(self.check_finite(grads), tf.float32)
            overflow = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_overflow) > 0.0
            grads = [
                None
                if g is None
                else tf.where(overflow, tf.constant(float("nan"), g.dtype), tf.convert_to_tensor(g))
                for g in grads
            ]
        return super().apply(grads, trainable_variables)


def loss_scaled(optimizer, mode: str):
    """``optimizer`` wrapped for dynamic loss scaling when ``mode`` is float16, else itself."""
    if optimizer is None or mode != "float16":
        return optimizer
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):  # already scaled (or Keras's)
        return optimizer
    return LossScaleOptimizer(optimizer, name=f"loss_scaled_{optimizer.name}")


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise PrecisionError(f"unknown precision {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def _float32_exit(layer) -> None:
    """Cast ``layer``'s floating outputs back to float32 (once; :func:`restore_float32` undoes)."""
    if "_zoo_original_call" in layer.__dict__:
        return
    original = layer.call

    @functools.wraps(original)
    def call(*args, **kwargs):
        out = original(*args, **kwargs)
        return tf.nest.map_structure(
            lambda t: (
                tf.cast(t, tf.float32)
                if isinstance(t, tf.Tensor | tf.Variable) and t.dtype in (tf.float16, tf.bfloat16)
                else t
            ),
            out,
        )

    object.__setattr__(layer, "_zoo_original_call", original)
    object.__setattr__(layer, "call", call)


def inference_scope(model, training: bool):
    """:func:`float32_scope` for an inference pass of a model trained in a mixed precision; a
    no-op for a training pass, or when the model runs in float32 anyway."""
    if training or getattr(model, "precision", "off") == "off":
        return contextlib.nullcontext()
    return float32_scope(model)


@contextlib.contextmanager
def float32_scope(model):
    """Within this block, ``model``'s mixed blocks compute in float32 (a Python-level switch,
    so it holds for whatever is traced inside it). Invertible models run every inference pass
    (forward, inverse, serving) in it: a bijection's round trip must be exact to float32, and a
    coupling branch recomputed in the inverse from an input that differs in its last float32 bit
    rounds differently in bfloat16 (firevnet_mnist's round trip: 1.8e-6 in float32, 5.5e-3 with
    bfloat16 branches)."""
    changed = []
    f32 = keras.dtype_policies.get("float32")
    for sub in model._flatten_layers(include_self=False, recursive=True):
        if sub.dtype_policy.name != "float32" and "_zoo_low_precision" in sub.__dict__:
            changed.append((sub, sub.dtype_policy))
            sub.dtype_policy = f32
    try:
        yield
    finally:
        for sub, policy in changed:
            sub.dtype_policy = policy


def _set_policy(layer, policy) -> None:
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        sub.dtype_policy = policy
        object.__setattr__(sub, "_zoo_low_precision", True)


def apply_mixed_precision(model, mode: str) -> dict[str, Any]:
    """Run ``model``'s declared mixed blocks in ``mode`` (``off``, ``bfloat16``, ``float16``).

    Call it on a built, not yet compiled model (so the optimizers the model creates in
    ``compile`` get loss scaling). Returns the report the trainer stores in ``config.json``:
    ``{"mode", "policy", "mixed_blocks", "float32": [...], "loss_scaling"}``. Raises
    :class:`PrecisionError` when the model refuses the mode.
    """
    from zoo.models.base import ZooModel

    _check_mode(mode)
    name = getattr(model, "zoo_name", model.name)
    if mode == "off":
        return {"mode": "off", "policy": "float32", "mixed_blocks": [], "loss_scaling": False}
    if not model.built:
        raise PrecisionError(f"{name} must be built before a precision policy is applied")
    if getattr(model, "optimizer", None) is not None:
        raise PrecisionError(
            f"{name} is already compiled: apply the precision before compile(), so its "
            f"optimizers get loss scaling"
        )
    refusal = model.mixed_precision_refusal(mode)
    if refusal:
        raise PrecisionError(f"{name} cannot train in {mode}: {refusal}")
    blocks = list(model.mixed_precision_blocks(mode))
    if not blocks:
        raise PrecisionError(f"{name} has no part that can compute in {mode}; train it with off")
    policy = keras.dtype_policies.get(MODES[mode])
    for block in blocks:
        _set_policy(block, policy)
        _float32_exit(block)
    for sub in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(sub, ZooModel):
            sub._zoo_precision = mode  # its compile() wraps its optimizers for loss scaling
    mixed = {id(b) for b in blocks}
    return {
        "mode": mode,
        "policy": policy.name,
        "mixed_blocks": [b.name for b in blocks],
        "float32": [
            layer.name
            for layer in model._flatten_layers(include_self=False, recursive=False)
            if id(layer) not in mixed and layer.weights
        ],
        "float32_reason": model.float32_reason(),
        "loss_scaling": mode == "float16",
    }


def restore_float32(model) -> None:
    """Undo :func:`apply_mixed_precision` on ``model``'s layers (its optimizers stay as they are)."""
    from zoo.models.base import ZooModel

    f32 = keras.dtype_policies.get("float32")
    for sub in model._flatten_layers(include_self=True, recursive=True):
        original = sub.__dict__.get("_zoo_original_call")
        if original is not None:
            object.__setattr__(sub, "call", original)
            del sub.__dict__["_zoo_original_call"]
        if sub.dtype_policy.name != "float32":
            sub.dtype_policy = f32
        sub.__dict__.pop("_zoo_low_precision", None)
        if isinstance(sub, ZooModel):
            sub._zoo_precision = "off"
