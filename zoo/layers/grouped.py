"""Grouped convolutions: ``groups`` independent networks evaluated as one layer.

Group ``g`` owns input channels ``[g·cin, (g+1)·cin)`` and output channels
``[g·filters, (g+1)·filters)``; no weight connects two groups. A model made of ten networks (one
per class, as ABS) folds the class axis into the channels, so each layer runs once for all
classes. ``BatchNormalization`` on a folded tensor keeps per-channel statistics, which is to say
per group: statistics never mix groups either.

Two implementations, chosen once per process from what the running TensorFlow supports
(:func:`native_supported`, a probe of the ops themselves; never the CPU's name):

- ``"native"``: one grouped op per layer. A grouped ``Conv2D``, and the transposed convolution as
  its input gradient (``Conv2DBackpropInput``). On the CPU these gradient kernels exist only in
  TensorFlow's oneDNN mode (``TF_ENABLE_ONEDNN_OPTS=1``, the default on AVX-512 CPUs); cuDNN has
  them on a GPU. One case is special-cased: a stride-1 transposed convolution with one output
  channel per group (ABS's output layer). oneDNN pads each group's channel count to its 16-wide
  block, so that op does 16× the arithmetic it needs; it runs instead as a depthwise convolution
  of the padded input with the flipped kernel, summed within each group, with the native
  gradients.
- ``"portable"``: ops that exist in every mode, for where the grouped gradients are missing
  (oneDNN off: AMD CPUs without AVX-512, for one). One plain convolution per group,
  concatenated; and a one-output-channel transposed layer as one plain transposed convolution
  with a block-diagonal kernel (``groups``× the multiply-adds, but one dense op rather than ten
  with a single output channel each). Their gradients are TensorFlow's own.

``benchmarks/grouped_conv.py`` times these against the other candidates (a block-diagonal kernel
everywhere, a zero-dilated or phase-decomposed grouped forward convolution, depthwise folding) on
ABS's layers in either mode; the README's Performance section has the figures. Each
implementation equals one plain convolution per group (tests/test_grouped.py).

:func:`use_implementation` forces one (tests, benchmarks). The choice is made when a function is
traced, so a ``tf.function`` keeps the implementation it was traced with. A process that runs the
layers on another device than its default one (a CPU of a machine with a GPU) and whose CPU lacks
the grouped kernels forces ``"portable"`` there.

Initialisation follows PyTorch's ``Conv2d``/``ConvTranspose2d`` defaults (uniform in
±1/√fan_in for kernel and bias), as the authors' code of the models that use these layers.
"""

from __future__ import annotations

import contextlib
import logging
import math

import keras
import tensorflow as tf

__all__ = [
    "IMPLEMENTATIONS",
    "GroupedConv2D",
    "GroupedConv2DTranspose",
    "grouped_conv2d",
    "grouped_conv2d_transpose",
    "implementation",
    "native_supported",
    "torch_default_initializer",
    "use_implementation",
]

IMPLEMENTATIONS = ("native", "portable")
_log = logging.getLogger(__name__)
_native_supported: bool | None = None
_forced: str | None = None


def native_supported() -> bool:
    """Whether grouped ``Conv2DBackpropInput`` and ``Conv2DBackpropFilter`` run on this process's
    default device. Probed once, eagerly, on a 2-group 2×2 problem."""
    global _native_supported
    if _native_supported is None:
        with tf.init_scope():
            x = tf.ones([1, 2, 2, 2])
            try:
                tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=[1, 2, 2, 2], filter=tf.ones([1, 1, 1, 2]), out_backprop=x,
                    strides=[1, 1, 1, 1], padding="VALID",
                )  # fmt: skip
                tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=[1, 1, 1, 2], out_backprop=x,
                    strides=[1, 1, 1, 1], padding="VALID",
                )  # fmt: skip
                _native_supported = True
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
                    tf.errors.NotFoundError):  # fmt: skip
                _native_supported = False
        _log.info("grouped convolutions: the native gradient kernels are %s",
                  "present" if _native_supported else "missing: using the portable ops")  # fmt: skip
    return _native_supported


def implementation() -> str:
    """The implementation traced from now on: the forced one, else ``"native"`` where
    :func:`native_supported`, else ``"portable"``."""
    if _forced is not None:
        return _forced
    return "native" if native_supported() else "portable"


@contextlib.contextmanager
def use_implementation(name: str):
    """Trace grouped convolutions with implementation ``name`` inside the block."""
    global _forced
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown grouped-convolution implementation {name!r}; "
                         f"choose from {', '.join(IMPLEMENTATIONS)}")  # fmt: skip
    if name == "native" and not native_supported():
        raise RuntimeError(
            "the native grouped convolution has no gradient kernels on this device (on the CPU "
            "they need TF_ENABLE_ONEDNN_OPTS=1, set before TensorFlow is imported)"
        )
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


def torch_default_initializer(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch's default conv initialisation: uniform in ±1/√fan_in."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def _native_for(x) -> bool:
    """The native grouped ops, for ``x``'s dtype. float32 only: in float16, oneDNN's grouped
    ``Conv2DBackpropFilter`` fails ("filter_size does not have enough elements, requested
    2560000, got 256000" for ABS's encoder head, TF 2.21), so a mixed-precision block takes the
    portable ops (zoo.precision)."""
    return implementation() == "native" and x.dtype == tf.float32


def grouped_conv2d(x, kernel, groups: int, strides: int = 1):
    """The valid-padded grouped convolution of ``x`` (n, h, w, groups·cin) with ``kernel``
    (k, k, cin, groups·filters), without bias: (n, (h−k)//s+1, (w−k)//s+1, groups·filters)."""
    if _native_for(x):
        return tf.nn.conv2d(x, kernel, strides, "VALID")
    return tf.concat(
        [tf.nn.conv2d(xg, kg, strides, "VALID")
         for xg, kg in zip(tf.split(x, groups, -1), tf.split(kernel, groups, -1), strict=True)],
        axis=-1,
    )  # fmt: skip


def grouped_conv2d_transpose(x, kernel, groups: int, strides: int = 1):
    """The valid-padded grouped transposed convolution of ``x`` (n, h, w, groups·cin) with
    ``kernel`` (k, k, filters, groups·cin), without bias: (n, (h−1)·s+k, (w−1)·s+k,
    groups·filters). As ``Conv2DBackpropInput``, and with its gradients."""
    k, filters = int(kernel.shape[0]), int(kernel.shape[2])
    shape = tf.shape(x)
    size = lambda d: (d - 1) * strides + k  # noqa: E731
    sizes = tf.stack([shape[0], size(shape[1]), size(shape[2]), groups * filters])
    if _native_for(x):
        if strides == 1 and filters == 1:
            return _single_channel_transpose(x, kernel, sizes)
        return tf.raw_ops.Conv2DBackpropInput(
            input_sizes=sizes,
            filter=kernel,
            out_backprop=x,
            strides=[1, strides, strides, 1],
            padding="VALID",
        )
    if filters == 1:
        return tf.nn.conv2d_transpose(x, _block_diagonal(kernel, groups), sizes, strides, "VALID")
    per_group = tf.concat([sizes[:3], [filters]], 0)
    return tf.concat(
        [tf.nn.conv2d_transpose(xg, kg, per_group, strides, "VALID")
         for xg, kg in zip(tf.split(x, groups, -1), tf.split(kernel, groups, -1), strict=True)],
        axis=-1,
    )  # fmt: skip


def _block_diagonal(kernel, groups: int):
    """A grouped transposed kernel (k, k, filters, groups·cin) as the plain kernel
    (k, k, groups·filters, groups·cin) that is zero between groups."""
    k, _, filters, channels = kernel.shape
    blocks = tf.reshape(kernel, [k, k, filters, groups, channels // groups])
    full = tf.einsum("ijfgc,hg->ijhfgc", blocks, tf.eye(groups, dtype=kernel.dtype))
    return tf.reshape(full, [k, k, groups * filters, channels])


def _single_channel_transpose(x, kernel, sizes):
    """A stride-1, one-output-channel grouped transposed convolution as a depthwise convolution
    (each input channel with its own flipped k×k kernel, padded by k−1) summed over each group's
    channels: the same sums, without oneDNN's 16-channel padding of a 1-channel group. Its
    gradients are the native op's: the grouped ``Conv2D`` for ``x``, ``Conv2DBackpropFilter``
    for the kernel."""

    @tf.custom_gradient
    def run(x, kernel):
        k, channels = int(kernel.shape[0]), int(kernel.shape[-1])
        flipped = tf.reshape(kernel[::-1, ::-1], [k, k, channels, 1])
        pad = [[0, 0], [k - 1, k - 1], [k - 1, k - 1], [0, 0]]
        per_channel = tf.nn.depthwise_conv2d(x, flipped, [1, 1, 1, 1], pad)
        y = tf.reduce_sum(tf.reshape(per_channel, tf.concat([sizes, [-1]], 0)), axis=-1)

        def grad(upstream):
            d_x = tf.nn.conv2d(upstream, kernel, 1, "VALID")
            d_kernel = tf.raw_ops.Conv2DBackpropFilter(
                input=upstream,
                filter_sizes=tf.shape(kernel),
                out_backprop=x,
                strides=[1, 1, 1, 1],
                padding="VALID",
            )
            return d_x, d_kernel

        return y, grad

    return run(x, kernel)


class _Grouped(keras.layers.Layer):
    def __init__(self, groups: int, filters: int, kernel_size: int, strides: int = 1,
                 use_bias: bool = True, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.groups, self.filters = int(groups), int(filters)
        self.kernel_size, self.strides = int(kernel_size), int(strides)
        self.use_bias = bool(use_bias)

    def _in_per_group(self, input_shape) -> int:
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(
                f"{self.name}: {channels} input channels do not split into {self.groups} groups"
            )
        return channels // self.groups

    def get_config(self):
        return {
            **super().get_config(),
            "groups": self.groups,
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "use_bias": self.use_bias,
        }


@keras.saving.register_keras_serializable(package="zoo")
class GroupedConv2D(_Grouped):
    """``groups`` valid-padded ``Conv2D(filters, kernel_size, strides)`` side by side.

    Kernel: ``(k, k, cin, groups·filters)``, TensorFlow's grouped-convolution layout.
    """

    def build(self, input_shape):
        cin = self._in_per_group(input_shape)
        k = self.kernel_size
        init = torch_default_initializer(cin * k * k)
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, cin, self.groups * self.filters), initializer=init
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.groups * self.filters,), initializer=init)
            if self.use_bias
            else None
        )

    def call(self, x):
        y = grouped_conv2d(x, tf.convert_to_tensor(self.kernel), self.groups, self.strides)
        return y + self.bias if self.bias is not None else y

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        size = lambda d: None if d is None else (d - self.kernel_size) // self.strides + 1  # noqa: E731
        return (n, size(h), size(w), self.groups * self.filters)


@keras.saving.register_keras_serializable(package="zoo")
class GroupedConv2DTranspose(_Grouped):
    """``groups`` valid-padded ``Conv2DTranspose(filters, kernel_size, strides)`` side by side.

    Output size ``(in − 1)·strides + kernel_size``, as PyTorch's ``ConvTranspose2d`` with
    ``padding=0``. Kernel: ``(k, k, filters, groups·cin)``, the filter of the grouped
    convolution this op is the input gradient of. A per-group PyTorch kernel ``(cin, filters,
    k, k)`` maps to it by ``transpose(2, 3, 1, 0)`` and concatenating the groups on the last axis.
    """

    def build(self, input_shape):
        cin = self._in_per_group(input_shape)
        k = self.kernel_size
        # PyTorch's ConvTranspose2d computes fan_in from weight.size(1) * k * k = filters * k²
        init = torch_default_initializer(self.filters * k * k)
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, self.filters, self.groups * cin), initializer=init
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.groups * self.filters,), initializer=init)
            if self.use_bias
            else None
        )

    def call(self, x):
        kernel = tf.convert_to_tensor(self.kernel)
        y = grouped_conv2d_transpose(x, kernel, self.groups, self.strides)
        y = tf.ensure_shape(y, self.compute_output_shape(x.shape))
        return y + self.bias if self.bias is not None else y

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        size = lambda d: None if d is None else (d - 1) * self.strides + self.kernel_size  # noqa: E731
        return (n, size(h), size(w), self.groups * self.filters)
