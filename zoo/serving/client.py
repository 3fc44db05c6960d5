"""A gRPC client for TF Serving's API (this server or ``tensorflow_model_server``).

Built on the official stubs of ``tensorflow-serving-api``::

    from zoo.serving import client
    out = client.predict("127.0.0.1:8500", "cnn_mnist", {"images": x})   # {"logits": ..., ...}
    client.metadata("127.0.0.1:8500", "cnn_mnist")   # {"serving_default": {"inputs": ..., ...}}
    client.status("127.0.0.1:8500", "cnn_mnist")     # [{"version": 1, "state": "AVAILABLE", ...}]

``target`` is ``host:port`` or an existing ``grpc.Channel``. Channels are cached per target, and
their message limits are raised (256 MiB by default) on both the send and the receive side, so
image batches do not hit gRPC's 4 MiB default. RPC errors are raised as ``grpc.RpcError`` (its
``code()`` and ``details()`` are the server's status).

``python serving/client.py`` is the command line over this module (:func:`main`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
from typing import Any

import grpc
import numpy as np

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "channel",
    "close_channels",
    "predict",
    "metadata",
    "status",
    "to_tensor_proto",
    "to_ndarray",
    "signature_summary",
    "status_summary",
    "main",
]

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

_channels: dict[tuple[str, int], grpc.Channel] = {}
_channels_lock = threading.Lock()


def _apis():
    """The stub modules (imported on first use: they import TensorFlow)."""
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    return (
        predict_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        prediction_service_pb2_grpc,
        model_service_pb2_grpc,
    )


def channel(target: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.Channel:
    """An insecure channel to ``target`` with raised message limits, cached per target."""
    key = (target, int(max_message_bytes))
    with _channels_lock:
        ch = _channels.get(key)
        if ch is None:
            ch = grpc.insecure_channel(
                target,
                options=[
                    ("grpc.max_send_message_length", int(max_message_bytes)),
                    ("grpc.max_receive_message_length", int(max_message_bytes)),
                ],
            )
            _channels[key] = ch
        return ch


def close_channels() -> None:
    """Close every cached channel."""
    with _channels_lock:
        channels = list(_channels.values())
        _channels.clear()
    for ch in channels:
        ch.close()


def _channel(target) -> grpc.Channel:
    return target if isinstance(target, grpc.Channel) else channel(str(target))


# Numeric dtypes whose TensorProto is the raw bytes in ``tensor_content`` (as
# tf.make_tensor_proto writes them): encoded and decoded here without TF's per-call checks.
_RAW_DTYPES = {
    np.dtype(n): code
    for n, code in (
        ("float32", 1), ("float64", 2), ("int32", 3), ("uint8", 4), ("int16", 5), ("int8", 6),
        ("complex64", 8), ("int64", 9), ("bool", 10), ("uint16", 17), ("complex128", 18),
        ("float16", 19), ("uint32", 22), ("uint64", 23),
    )
}  # fmt: skip
_RAW_CODES = {code: dtype for dtype, code in _RAW_DTYPES.items()}
# tf.make_tensor_proto writes these as typed value lists instead; encoding goes through it.
_LIST_ENCODED = {np.dtype(n) for n in ("bool", "uint16", "complex64", "complex128")}
# The typed value list tf.make_tensor_proto fills for a tensor of at most one element (a scalar,
# or a batch-1 output such as ``classes``), for the dtypes whose list takes the values as they are.
_VALUE_FIELDS = {
    np.dtype(n): field
    for n, field in (
        ("float32", "float_val"), ("float64", "double_val"), ("int32", "int_val"),
        ("int16", "int_val"), ("int8", "int_val"), ("uint8", "int_val"), ("int64", "int64_val"),
        ("uint32", "uint32_val"), ("uint64", "uint64_val"),
    )
}  # fmt: skip


def to_tensor_proto(value) -> Any:
    """A numpy array (or anything ``np.asarray`` takes) as a ``TensorProto``.

    The same proto ``tf.make_tensor_proto`` builds; numeric arrays take a fast path.
    """
    arr = np.asarray(value)
    code = _RAW_DTYPES.get(arr.dtype) if sys.byteorder == "little" else None
    if code is not None:
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

        shape = tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in arr.shape]
        )
        if arr.size > 1 and arr.dtype not in _LIST_ENCODED:
            return tensor_pb2.TensorProto(
                dtype=code, tensor_shape=shape, tensor_content=np.ascontiguousarray(arr).tobytes()
            )
        field = _VALUE_FIELDS.get(arr.dtype)
        if field is not None and arr.size <= 1:
            return tensor_pb2.TensorProto(
                dtype=code, tensor_shape=shape, **{field: arr.ravel().tolist()}
            )
    import tensorflow as tf

    if arr.dtype.kind == "U":  # text: DT_STRING holds bytes
        arr = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(arr)
    return tf.make_tensor_proto(arr)


def to_ndarray(proto) -> np.ndarray:
    """A ``TensorProto`` as a numpy array (DT_STRING as an object array of bytes)."""
    dtype = _RAW_CODES.get(proto.dtype) if sys.byteorder == "little" else None
    if dtype is not None:
        shape = [d.size for d in proto.tensor_shape.dim]
        size = math.prod(shape)
        if proto.tensor_content:
            if size * dtype.itemsize == len(proto.tensor_content):
                return np.frombuffer(proto.tensor_content, dtype).reshape(shape).copy()
        elif size <= 1 and dtype in _VALUE_FIELDS and min(shape, default=1) >= 0:
            values = getattr(proto, _VALUE_FIELDS[dtype])
            if len(values) == size:
                return np.array(values, dtype).reshape(shape)
    import tensorflow as tf

    return tf.make_ndarray(proto)  # other encodings (float_val, ...) and the malformed cases


def _model_spec(
    spec, model: str, signature: str | None, version: int | None, version_label: str | None
) -> None:
    if version is not None and version_label is not None:
        raise ValueError("give a version or a version_label, not both")
    spec.name = model
    if signature:
        spec.signature_name = signature
    if version is not None:
        spec.version.value = int(version)
    elif version_label is not None:
        spec.version_label = version_label


def predict(
    target,
    model: str,
    inputs: dict[str, np.ndarray],
    signature: str = "serving_default",
    version: int | None = None,
    version_label: str | None = None,
    output_filter: list[str] | None = None,
    timeout: float | None = 30.0,
) -> dict[str, np.ndarray]:
    """``PredictionService.Predict``: the outputs of ``signature`` for ``inputs``, by name."""
    predict_pb2, _, _, prediction_grpc, _ = _apis()
    request = predict_pb2.PredictRequest()
    _model_spec(request.model_spec, model, signature, version, version_label)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(to_tensor_proto(value))
    if output_filter:
        request.output_filter.extend(output_filter)
    stub = prediction_grpc.PredictionServiceStub(_channel(target))
    response = stub.Predict(request, timeout=timeout)
    return {name: to_ndarray(t) for name, t in response.outputs.items()}


def _tensor_info_summary(info) -> dict[str, Any]:
    import tensorflow as tf

    shape = None
    if not info.tensor_shape.unknown_rank:
        shape = [None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim]
    return {"dtype": tf.dtypes.as_dtype(info.dtype).name, "shape": shape}


def signature_summary(signature_defs) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """A ``SignatureDefMap`` (or name → SignatureDef mapping) as plain dicts.

    ``{signature: {"inputs": {name: {"dtype": "float32", "shape": [None, 28, 28, 1]}},
    "outputs": {...}}}``; an unknown dimension is None, an unknown rank a None shape.
    """
    defs = getattr(signature_defs, "signature_def", signature_defs)
    return {
        sig: {
            "inputs": {k: _tensor_info_summary(v) for k, v in sorted(d.inputs.items())},
            "outputs": {k: _tensor_info_summary(v) for k, v in sorted(d.outputs.items())},
        }
        for sig, d in sorted(defs.items())
    }


def metadata(
    target,
    model: str,
    version: int | None = None,
    version_label: str | None = None,
    timeout: float | None = 30.0,
) -> dict[str, dict]:
    """``PredictionService.GetModelMetadata``, summarised by :func:`signature_summary`."""
    _, metadata_pb2, _, prediction_grpc, _ = _apis()
    request = metadata_pb2.GetModelMetadataRequest()
    _model_spec(request.model_spec, model, None, version, version_label)
    request.metadata_field.append("signature_def")
    stub = prediction_grpc.PredictionServiceStub(_channel(target))
    response = stub.GetModelMetadata(request, timeout=timeout)
    sigmap = metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sigmap)
    return signature_summary(sigmap)


def status_summary(response) -> list[dict[str, Any]]:
    """A ``GetModelStatusResponse`` as ``[{"version", "state", "error_code", "error_message"}]``."""
    _, _, status_pb2, _, _ = _apis()
    states = status_pb2.ModelVersionStatus.State
    return [
        {
            "version": int(s.version),
            "state": states.Name(s.state),
            "error_code": int(s.status.error_code),
            "error_message": s.status.error_message,
        }
        for s in response.model_version_status
    ]


def status(
    target, model: str, version: int | None = None, timeout: float | None = 30.0
) -> list[dict[str, Any]]:
    """``ModelService.GetModelStatus``: one dict per version (all versions without ``version``)."""
    _, _, status_pb2, _, model_grpc = _apis()
    request = status_pb2.GetModelStatusRequest()
    _model_spec(request.model_spec, model, None, version, None)
    stub = model_grpc.ModelServiceStub(_channel(target))
    return status_summary(stub.GetModelStatus(request, timeout=timeout))


# -- command line ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="serving/client.py",
        description="Call a TF Serving-compatible gRPC server (zoo-serve or tensorflow_model_server): "
        "Predict with inputs from .npy/.npz files, GetModelMetadata, GetModelStatus.",
    )
    p.add_argument("--target", default="127.0.0.1:8500", help="host:port of the gRPC server")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--signature", default="serving_default", help="signature name")
    version = p.add_mutually_exclusive_group()
    version.add_argument("--version", type=int, help="model version (default: the latest)")
    version.add_argument("--label", help="model version label (e.g. stable)")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="one named input from a .npy file (repeatable)",
    )
    p.add_argument("--inputs", metavar="FILE.npz", help="all inputs from an .npz (keys = names)")
    p.add_argument("--output", metavar="FILE.npz", help="write the outputs to this .npz")
    p.add_argument(
        "--output-filter", action="append", default=[], metavar="NAME", help="only these outputs"
    )
    p.add_argument("--metadata", action="store_true", help="print the model's signatures")
    p.add_argument("--status", action="store_true", help="print the model's version status")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    p.add_argument(
        "--max-message-mb",
        type=int,
        default=DEFAULT_MAX_MESSAGE_BYTES >> 20,
        help="gRPC send/receive message limit in MiB (default 256)",
    )
    return p


def _load_inputs(args, parser) -> dict[str, np.ndarray]:
    inputs: dict[str, np.ndarray] = {}
    if args.inputs:
        try:
            with np.load(args.inputs, allow_pickle=False) as npz:
                inputs.update({k: npz[k] for k in npz.files})
        except (OSError, ValueError) as e:
            parser.error(f"cannot read --inputs {args.inputs}: {e}")
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--input takes NAME=FILE.npy, got {item!r}")
        try:
            inputs[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            parser.error(f"cannot read --input {name}={path}: {e}")
    return inputs


def _describe(arr: np.ndarray) -> str:
    return f"shape={list(arr.shape)} dtype={arr.dtype.name}"


def main(argv: list[str] | None = None) -> int:
    from zoo.cli_utils import quiet_tensorflow

    quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.input or args.inputs or args.metadata or args.status):
        parser.error("nothing to do: give --input/--inputs (Predict), --metadata or --status")
    inputs = _load_inputs(args, parser)
    if args.output and not inputs:
        parser.error("--output needs inputs to predict on (--input or --inputs)")
    ch = channel(args.target, args.max_message_mb << 20)
    try:
        if args.status:
            print(json.dumps(status(ch, args.model, args.version, timeout=args.timeout), indent=2))
        if args.metadata:
            meta = metadata(ch, args.model, args.version, args.label, timeout=args.timeout)
            print(json.dumps(meta, indent=2))
        if inputs:
            for name, arr in inputs.items():
                print(f"input  {name}: {_describe(arr)}")
            outputs = predict(
                ch,
                args.model,
                inputs,
                signature=args.signature,
                version=args.version,
                version_label=args.label,
                output_filter=args.output_filter or None,
                timeout=args.timeout,
            )
            for name in sorted(outputs):
                print(f"output {name}: {_describe(outputs[name])}")
            if args.output:
                np.savez(args.output, **outputs)
                print(f"wrote {args.output}")
    except grpc.RpcError as e:
        print(f"client: error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
