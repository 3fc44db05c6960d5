"""What the running TensorFlow does on this machine: the CPU, and whether oneDNN is on.

TensorFlow turns its oneDNN CPU kernels on by default on some x86 CPUs (AVX-512 class) and leaves
them off on others (AMD without AVX-512, for one); ``TF_ENABLE_ONEDNN_OPTS=0/1`` decides it, read
once when TensorFlow is imported. Some ops exist in one mode only (grouped convolution gradients,
see :mod:`zoo.layers.grouped`), and speed differs by up to 2.6× between them. The library never
changes the mode; the zoo's command-line entry points choose a default for their own process
(:func:`prefer_onednn`), before they import TensorFlow.
"""

from __future__ import annotations

import functools
import os
import platform
import sys

__all__ = ["ONEDNN_VARIABLE", "cpu_model", "describe", "onednn_enabled", "prefer_onednn"]

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs its oneDNN CPU kernels (imports TensorFlow)."""
    import tensorflow  # noqa: F401  (the mode is fixed when TensorFlow loads)

    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # a TensorFlow without the private switch
        return os.environ.get(ONEDNN_VARIABLE, "").strip().lower() in ("1", "true")


def device_kind(device: str | None = None) -> str:
    """What ``device`` (a TensorFlow device name; default: the first GPU, else the CPU) is:
    the GPU's name (e.g. "NVIDIA A100-SXM4-80GB") or the CPU's model name."""
    import tensorflow as tf

    if device is None or "GPU" in device.upper():
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            index = 0
            if device is not None and device.rsplit(":", 1)[-1].isdigit():
                index = min(int(device.rsplit(":", 1)[-1]), len(gpus) - 1)
            details = tf.config.experimental.get_device_details(gpus[index])
            return str(details.get("device_name", gpus[index].name))
    return cpu_model()


def describe() -> dict:
    """The CPU, the oneDNN mode, who chose it, and TensorFlow's version: what every benchmark
    prints and every CLI logs at start-up."""
    import tensorflow as tf

    value = os.environ.get(ONEDNN_VARIABLE)
    source = "TensorFlow's default" if value is None else f"{ONEDNN_VARIABLE}={value}"
    return {
        "cpu": cpu_model(),
        "onednn": "on" if onednn_enabled() else "off",
        "onednn_source": source,
        "tensorflow": tf.__version__,
    }


def prefer_onednn() -> bool:
    """For the zoo's command-line processes only, before TensorFlow is imported: turn oneDNN on
    when the user has not set ``TF_ENABLE_ONEDNN_OPTS`` (measured faster for training, ABS
    inference and serving on both kinds of CPU; README "CPU modes"). Returns whether it set the
    variable. A user's own value always wins, and once TensorFlow is loaded nothing changes."""
    if ONEDNN_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ[ONEDNN_VARIABLE] = "1"
    return True


if __name__ == "__main__":  # python -m zoo.runtime: what .ci/run prints at the top
    import json

    print(json.dumps(describe()))
