"""Serving test helpers: small SavedModels with known behaviour, and a server subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from zoo.serving.testing import ServerProcess  # noqa: F401  (re-exported for the tests)


class _Scale(tf.Module):
    """``y = x * factor``; ``rows`` reports the batch the model actually saw (batching probe)."""

    def __init__(self, factor: float, delay_iters: int = 0):
        super().__init__()
        self.factor = tf.Variable(float(factor))
        self.delay_iters = delay_iters

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(self, x):
        if self.delay_iters:
            # Burn time inside the graph (a slow model for drain tests), keeping x unchanged.
            i = tf.constant(0)
            acc = tf.zeros([64, 64])
            m = tf.random.stateless_normal([64, 64], seed=[1, 2]) * 1e-3
            i, acc = tf.while_loop(
                lambda i, a: i < self.delay_iters,
                lambda i, a: (i + 1, tf.matmul(a + m, m)),
                [i, acc],
            )
            x = x + 0.0 * tf.reduce_sum(acc)
        rows = tf.shape(x)[0]
        return {"y": x * self.factor, "rows": tf.fill([rows], rows)}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def fail_on_negative(self, x):
        tf.debugging.assert_non_negative(x, message="negative input")
        return {"y": x}


def export_scale_model(base: Path, version: int, factor: float, delay_iters: int = 0) -> Path:
    """A SavedModel at ``base/version`` with ``serving_default`` (x → y, rows) and ``fail``."""
    module = _Scale(factor, delay_iters)
    path = Path(base) / str(version)
    tmp = Path(base) / f".tmp-{version}"
    tf.saved_model.save(
        module,
        str(tmp),
        signatures={"serving_default": module.serve, "fail": module.fail_on_negative},
    )
    os.rename(tmp, path)
    return path


def tensor(a) -> tf.make_tensor_proto:
    return tf.make_tensor_proto(np.asarray(a))


def official_predict(target: str, model: str, signature: str, timeout: float = 120, **inputs):
    """Predict through the official tensorflow_serving stubs, unchanged: {output: ndarray}."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tensor(value))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=timeout)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
