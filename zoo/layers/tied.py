"""Layers with a tied reverse pass: the transposed map on the layer's own ``kernel`` and ``bias``.

Racecar training (Xie & Thuerey, 000_7daca03a93eb4fe1.txt, eq. 9 and app. A.2;
shared/digests/racecar.md §1.3–1.4) runs every constrained layer backwards with the *same*
variables: ``d' = Mᵀ(y − b)``. These layers are the Keras ones (same constructor arguments, same
``kernel``/``bias`` attributes, same ``get_config``, so ``.keras`` files and weights files load
as for their parents) with one more method:

- :meth:`TiedDense.reverse`: ``(y − b) @ Kᵀ``. Keras stores the kernel as K = Mᵀ (``[in, out]``).
- :meth:`TiedConv2D.reverse`: ``conv2d_transpose(y − b, K)``, the exact adjoint of the forward
  convolution with the same strides, padding and dilation (``conv2d_transpose`` is the gradient
  of ``conv2d`` with respect to its input). ``conv2d(y, transpose(K))`` would not be: it misses
  the spatial flip and the stride.
- :meth:`TiedConv2DTranspose.reverse`: ``conv2d(y − b, K)``, the adjoint of the transposed
  convolution.

``reverse`` undoes the linear map only: it subtracts the bias from whatever it is given (the
paper subtracts it from the activated value) and never inverts an activation. It creates no
variables and reads the forward variables, so gradients from both passes reach the same kernel.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["TiedDense", "TiedConv2D", "TiedConv2DTranspose"]


def _subtract_bias(layer, y):
    y = tf.convert_to_tensor(y)
    if layer.use_bias:
        y = y - tf.cast(layer.bias, y.dtype)
    return y


def _channels_last_only(layer) -> None:
    if layer.data_format != "channels_last":
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r}: the tied reverse pass supports "
            f"data_format='channels_last' only, got {layer.data_format!r}"
        )
    if getattr(layer, "groups", 1) != 1:
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r}: the tied reverse pass does not support "
            f"grouped convolutions (groups={layer.groups})"
        )


def _check_built(layer) -> None:
    if not layer.built:
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r} is not built: call it on an input before "
            f"reverse(), which reads the forward layer's variables"
        )


def _check_channels(layer, y, expected: int) -> None:
    if y.shape.rank is not None and y.shape[-1] is not None and y.shape[-1] != expected:
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r}.reverse expects the forward output's "
            f"{expected} channels in the last axis, got shape {tuple(y.shape)}"
        )


@keras.saving.register_keras_serializable(package="zoo")
class TiedDense(keras.layers.Dense):
    """``keras.layers.Dense`` with :meth:`reverse`, the transposed map on the same variables.

    Forward: ``activation(x @ K + b)`` with K of shape ``[in, out]``. Reverse:
    ``(y − b) @ Kᵀ``, of shape ``(..., in)``.
    """

    def reverse(self, y, output_shape=None):
        """``(y − b) @ Kᵀ``. ``y``: ``(..., units)``. ``output_shape`` is accepted for a uniform
        interface with the convolutions and must be None or end in the input size."""
        _check_built(self)
        y = tf.convert_to_tensor(y)
        _check_channels(self, y, self.units)
        kernel = tf.cast(self.kernel, y.dtype)
        if output_shape is not None and int(output_shape[-1]) != kernel.shape[0]:
            raise ValueError(
                f"TiedDense {self.name!r}: output_shape {tuple(output_shape)} must end in the "
                f"input size {kernel.shape[0]}"
            )
        return tf.linalg.matmul(_subtract_bias(self, y), kernel, transpose_b=True)


class _TiedConvMixin:
    """Remembers the spatial shape of the forward input, which a strided reverse needs."""

    def build(self, input_shape):
        super().build(input_shape)
        # With stride s and 'same' padding, input sizes s·n − s + 1 … s·n all give n outputs, so
        # the reverse cannot infer the size it must produce; the forward input's shape settles it.
        self._forward_input_shape = tuple(input_shape[1:])

    def _reverse_output_shape(self, y, output_shape):
        batch = tf.shape(y)[0]
        if output_shape is None:
            shape = getattr(self, "_forward_input_shape", None)
            if shape is None or any(d is None for d in shape):
                raise ValueError(
                    f"{type(self).__name__} {self.name!r}: the forward input's spatial shape "
                    f"{shape} is not fully known; pass reverse(y, output_shape=(H, W, C))"
                )
            output_shape = shape
        output_shape = [int(d) for d in output_shape]
        if len(output_shape) == 4:  # (batch, H, W, C): the batch comes from y
            output_shape = output_shape[1:]
        if len(output_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: output_shape must be (H, W, C), got "
                f"{output_shape}"
            )
        return tf.stack([batch, *output_shape]), output_shape

    def _strides_4d(self):
        return [1, *self.strides, 1]

    def _dilations_4d(self):
        return [1, *self.dilation_rate, 1]


@keras.saving.register_keras_serializable(package="zoo")
class TiedConv2D(_TiedConvMixin, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with :meth:`reverse`, its exact adjoint on the same kernel.

    Forward: ``(B, H, W, C_in) → (B, H', W', filters)``. Reverse: ``(B, H', W', filters) →
    (B, H, W, C_in)``. The kernel ``[kh, kw, C_in, filters]`` is passed to
    ``tf.nn.conv2d_transpose`` as is: its filter layout ``[h, w, out, in]`` is the forward's.
    """

    def build(self, input_shape):
        _channels_last_only(self)
        super().build(input_shape)

    def reverse(self, y, output_shape=None):
        """``conv2d_transpose(y − b, K)`` with the forward strides, padding and dilation.

        ``output_shape``: ``(H, W, C_in)`` of the forward input; defaults to the shape the layer
        was built with.
        """
        _check_built(self)
        y = tf.convert_to_tensor(y)
        _check_channels(self, y, self.filters)
        shape, static = self._reverse_output_shape(y, output_shape)
        out = tf.nn.conv2d_transpose(
            _subtract_bias(self, y),
            tf.cast(self.kernel, y.dtype),
            output_shape=shape,
            strides=self._strides_4d(),
            padding=self.padding.upper(),
            dilations=self._dilations_4d(),
        )
        out.set_shape([y.shape[0], *static])
        return out


@keras.saving.register_keras_serializable(package="zoo")
class TiedConv2DTranspose(_TiedConvMixin, keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose`` with :meth:`reverse`: ``conv2d(y − b, K)``, its adjoint.

    Forward: ``(B, H, W, C_in) → (B, H', W', filters)`` (up-sampling for stride > 1). Reverse maps
    ``(B, H', W', filters)`` back to ``(B, H, W, C_in)``. The kernel ``[kh, kw, filters, C_in]``
    is a valid ``conv2d`` filter from ``filters`` to ``C_in`` channels as it stands.
    """

    def build(self, input_shape):
        _channels_last_only(self)
        super().build(input_shape)

    def reverse(self, y, output_shape=None):
        """``conv2d(y − b, K)`` with the forward strides, padding and dilation."""
        _check_built(self)
        y = tf.convert_to_tensor(y)
        _check_channels(self, y, self.filters)
        out = tf.nn.conv2d(
            _subtract_bias(self, y),
            tf.cast(self.kernel, y.dtype),
            strides=self._strides_4d(),
            padding=self.padding.upper(),
            dilations=self._dilations_4d(),
        )
        if output_shape is not None:
            expected = [int(d) for d in output_shape][-3:]
            if out.shape.rank == 4 and [d for d in out.shape[1:]] != expected:
                raise ValueError(
                    f"TiedConv2DTranspose {self.name!r}: the reverse gives shape "
                    f"{tuple(out.shape[1:])}, not the requested {tuple(expected)}"
                )
        return out
