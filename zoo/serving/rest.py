"""TF Serving's REST API over the serving core, on the standard library's threading HTTP server.

Endpoints, request and response formats follow tensorflow_model_server's REST handler
(``tensorflow_serving/model_servers/http_rest_api_handler.cc``, ``http_rest_api_util.cc``,
``util/json_tensor.cc`` and ``http_server.cc`` in tensorflow/serving):

- ``POST /v1/models/NAME[/versions/N|/labels/L]:predict`` with ``{"signature_name": ...,
  "instances": [...]}`` (row format, answered with ``{"predictions": [...]}``) or
  ``{"inputs": ...}`` (columnar format, answered with ``{"outputs": ...}``). ``{"b64": "..."}``
  is a binary value of a DT_STRING input; DT_STRING outputs whose name ends in ``_bytes`` are
  returned the same way.
- ``GET /v1/models/NAME[/versions/N|/labels/L]``: GetModelStatusResponse as JSON.
- ``GET /v1/models/NAME[/versions/N|/labels/L]/metadata``: GetModelMetadataResponse as JSON.

Errors are ``{"error": "<message>"}`` with the HTTP status TF Serving's ``ToHTTPStatusCode`` gives
the gRPC code (INVALID_ARGUMENT 400, NOT_FOUND 404, INTERNAL 500, ...). A request under ``/v1/``
that matches no endpoint is, as in TF Serving, ``400 Malformed request``; any other path is 404.
Two additions of this server: a body larger than ``max_body_bytes`` is refused with 413 before it
is read, and a model name holding anything but letters, digits, ``_``, ``-`` and ``.`` (or
holding ``..``) is refused with 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc
import numpy as np

from zoo.serving.core import DEFAULT_SIGNATURE, ServingError, check_model_name

log = logging.getLogger("zoo.serving.rest")

__all__ = ["RestServer", "http_status_for"]


# tensorflow_serving/model_servers/http_rest_api_util.cc (kPredictionApiGegex,
# kModelStatusApiRegex) and http_rest_api_handler.h (kPathRegex), all case-insensitive.
_V1_RE = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_INT64_MAX = 2**63 - 1

# tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode().
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status_for(code: grpc.StatusCode) -> int:
    """The HTTP status TF Serving's REST server answers a gRPC status code with."""
    return _HTTP_STATUS.get(code, 500)


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _status_string(err: ServingError) -> str:
    """``Status::ToString()``: ``INVALID_ARGUMENT: message``."""
    return f"{err.code.name}: {err.message}"


# -- JSON <-> numpy --------------------------------------------------------------------------------
def _js(val: Any, limit: int = 200) -> str:
    """A JSON value for an error message (JsonValueToString), truncated."""
    try:
        text = json.dumps(val, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(val)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(val: Any) -> str:
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def _is_b64(val: Any) -> bool:
    """``{"b64": "<string>"}`` and nothing else (IsValBase64Object)."""
    return type(val) is dict and len(val) == 1 and type(val.get("b64")) is str


def _spec_str(spec) -> str:
    dims = ", ".join("None" if d is None else str(d) for d in spec.shape.as_list())
    comma = "," if spec.shape.rank == 1 else ""
    return f"TensorSpec(shape=({dims}{comma}), dtype={spec.dtype.name})"


class _Leaf:
    """Checks and converts the leaf values of one input (AddValueToTensor, per dtype)."""

    def __init__(self, tf_dtype):
        from tensorflow.core.framework import types_pb2

        self.np_dtype = np.dtype(tf_dtype.as_numpy_dtype)
        # DataTypeString(): DT_FLOAT -> "float", as TF Serving's messages name types.
        self.type_name = types_pb2.DataType.Name(tf_dtype.as_datatype_enum)[3:].lower()
        if tf_dtype.is_floating:
            self.kind = "float"
            info = np.finfo(self.np_dtype) if self.np_dtype.kind == "f" else None
            self.max = float(info.max) if info else float(tf_dtype.max)
            mant = info.nmant if info else 7
            self.max_int = (1 << (mant + 1)) - 1
        elif tf_dtype.is_bool:
            self.kind = "bool"
        elif tf_dtype.is_integer:
            self.kind = "int"
            self.min, self.max = int(tf_dtype.min), int(tf_dtype.max)
        elif tf_dtype.name == "string":
            self.kind = "string"
            self.np_dtype = np.dtype(object)
        else:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Conversion of JSON values to type: {self.type_name}",
            )

    def type_error(self, v: Any) -> ServingError:
        return _invalid(
            f"JSON Value: {_js(v)} Type: {_json_type(v)} is not of expected type: {self.type_name}"
        )

    def lossy(self, v: Any) -> ServingError:
        return _invalid(
            f"Cannot convert JSON value: {_js(v)} to {self.type_name} without loss of precision."
        )

    def add(self, values: list, out: list) -> None:
        """Check ``values`` (leaves of one innermost list, or one scalar) and append them."""
        kind = self.kind
        if kind == "float":
            for v in values:
                t = type(v)
                if t is float:
                    if abs(v) > self.max and v == v and abs(v) != float("inf"):
                        raise self.lossy(v)
                elif t is int:
                    if abs(v) > self.max_int:
                        raise self.lossy(v)
                else:
                    raise self.type_error(v)
            out.extend(values)
        elif kind == "int":
            for v in values:
                if type(v) is not int or not self.min <= v <= self.max:
                    raise self.type_error(v)
            out.extend(values)
        elif kind == "bool":
            for v in values:
                if type(v) is not bool:
                    raise self.type_error(v)
            out.extend(values)
        else:
            for v in values:
                t = type(v)
                if t is str:
                    out.append(v.encode("utf-8"))
                elif t is dict:
                    if not _is_b64(v):
                        raise _invalid(
                            f"JSON Value: {_js(v)} not formatted correctly for base64 data"
                        )
                    try:
                        out.append(base64.b64decode(v["b64"], validate=True))
                    except (binascii.Error, ValueError) as e:
                        raise _invalid("Unable to base64 decode") from e
                else:
                    raise self.type_error(v)


def _dense_shape(val: Any) -> list[int]:
    """GetDenseTensorShape: the shape implied by following the first element of each list."""
    shape = []
    while type(val) is list:
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _fill(val: Any, level: int, shape: list[int], leaf: _Leaf, out: list) -> None:
    """FillTensorProto: check that ``val`` is dense with ``shape`` and collect its leaves."""
    rank = len(shape)
    if type(val) is not list:
        if level != rank:
            raise _invalid(
                f"JSON Value: {_js(val)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        leaf.add([val], out)
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise _invalid(
            f"Encountered list at unexpected size: {len(val)} at level: {level} expected size: "
            f"{shape[level]}"
        )
    if level == rank - 1:
        for v in val:
            if type(v) is list:
                raise _invalid(
                    f"Encountered list at unexpected level: {level + 1} expected < {rank}"
                )
        leaf.add(val, out)
        return
    for v in val:
        _fill(v, level + 1, shape, leaf, out)


def _json_to_flat(val: Any, leaf: _Leaf) -> tuple[list[int], list]:
    shape = _dense_shape(val)
    out: list = []
    _fill(val, 0, shape, leaf, out)
    return shape, out


def _to_array(flat: list, shape: list[int], leaf: _Leaf) -> np.ndarray:
    if leaf.kind == "string":
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    return np.array(flat, dtype=leaf.np_dtype).reshape(shape)


def _shape_str(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _inputs_from_instances(instances: list, specs: dict, leaves: dict) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: the row format, batched along a new first dimension."""
    first = instances[0]
    if type(first) is not dict and len(specs) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )

    def is_object(v):
        return type(v) is dict and not _is_b64(v)

    objects = is_object(first)
    names = sorted(specs)
    flats: dict[str, list] = {}
    shapes: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def add(item, name):
        if name not in specs:
            raise _invalid(f"JSON object: does not have named input: {name}")
        shape, flat = _json_to_flat(item, leaves[name])
        if name not in shapes:
            shapes[name], sizes[name] = shape, len(flat)
            flats[name] = flat
            return
        if sizes[name] != len(flat):
            raise _invalid(f"Expecting tensor size: {sizes[name]} but got: {len(flat)}")
        if shapes[name] != shape:
            raise _invalid(
                f"Expecting shape {_shape_str(shapes[name])} but got: {_shape_str(shape)}"
            )
        flats[name].extend(flat)

    for i, elem in enumerate(instances):
        if objects:
            if not is_object(elem):
                raise _invalid(f"Expecting object but got list at item {i} of input list")
            for name, value in elem.items():
                try:
                    add(value, name)
                except ServingError as e:
                    raise _invalid(
                        f"Failed to process element: {i} key: {name} of 'instances' list. "
                        f"Error: {_status_string(e)}"
                    ) from None
            if set(elem) != set(names):
                raise _invalid(
                    f"Failed to process element: {i} of 'instances' list. JSON object: "
                    f"{_js(elem)} must only have keys: {','.join(names)}"
                )
        else:
            if is_object(elem):
                raise _invalid(f"Expecting value/list but got object at item {i} of input list")
            try:
                add(elem, names[0])
            except ServingError as e:
                raise _invalid(
                    f"Failed to process element: {i} of 'instances' list. "
                    f"Error: {_status_string(e)}"
                ) from None
    n = len(instances)
    return {k: _to_array(flats[k], [n, *shapes[k]], leaves[k]) for k in flats}


def _inputs_from_columns(val: Any, specs: dict, leaves: dict) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap: the columnar format, a value or an object of named values."""
    if type(val) is not dict or _is_b64(val):
        if len(specs) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name = next(iter(specs))
        shape, flat = _json_to_flat(val, leaves[name])
        return {name: _to_array(flat, shape, leaves[name])}
    out = {}
    for name in sorted(specs):
        if name not in val:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        shape, flat = _json_to_flat(val[name], leaves[name])
        out[name] = _to_array(flat, shape, leaves[name])
    extra = sorted(set(val) - set(specs))
    if extra:
        # TF Serving ignores unknown keys here; this server refuses them, as its gRPC side does.
        raise _invalid(
            f"Unexpected named input(s): {', '.join(extra)} in 'inputs' object; the signature "
            f"takes: {', '.join(sorted(specs))}"
        )
    return out


def _expected(specs: dict) -> str:
    return ", ".join(f"{k}: {_spec_str(s)}" for k, s in sorted(specs.items()))


def _predict_inputs(doc: dict, specs: dict, signature: str) -> tuple[dict, str]:
    """FillPredictRequestFromJson: the input arrays and the format ("row" or "columnar")."""
    if not specs:
        raise _invalid(f"Failed to get input map for signature: {signature or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise _invalid(
            f"JSON Value: {_js(doc)} Not formatted correctly expecting only one of 'inputs' or "
            f"'instances' keys to exist "
        )
    try:
        leaves = {k: _Leaf(s.dtype) for k, s in specs.items()}
        if has_instances:
            instances = doc["instances"]
            if type(instances) is not list:
                raise _invalid(f"JSON Value: {_js(doc)} Excepting 'instances' to be an list/array")
            if not instances:
                raise _invalid(f"JSON Value: {_js(doc)} No values in 'instances' array")
            return _inputs_from_instances(instances, specs, leaves), "row"
        if has_inputs:
            return _inputs_from_columns(doc["inputs"], specs, leaves), "columnar"
    except ServingError as e:
        if e.code != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        raise _invalid(
            f"{e.message} (signature {signature!r} expects {_expected(specs)})"
        ) from None
    raise _invalid("Missing 'inputs' or 'instances' key")


def _array_to_json(name: str, arr: np.ndarray) -> Any:
    """A tensor as nested lists (AddTensorValues). Floats print as their shortest round trip."""
    arr = np.asarray(arr)
    kind = arr.dtype.kind
    if kind == "f" or arr.dtype.name == "bfloat16":
        if arr.dtype == np.float64:
            return arr.tolist()
        # The shortest decimal that reads back as the same float32 (TF Serving's WriteDecimal
        # likewise avoids printing 0.2f as 0.20000000298023224).
        return arr.astype(str).astype(np.float64).tolist()
    if kind in "iub":
        return arr.tolist()
    if kind in "OSU":
        as_bytes = name.endswith("_bytes")

        def conv(v):
            if isinstance(v, str):
                v = v.encode("utf-8")
            if not as_bytes:
                try:
                    return v.decode("utf-8")
                except UnicodeDecodeError:
                    pass  # not text: fall back to the binary form instead of invalid JSON
            return {"b64": base64.b64encode(v).decode("ascii")}

        if arr.ndim == 0:
            return conv(arr.item())
        flat = np.empty(arr.size, dtype=object)
        flat[:] = [conv(v) for v in arr.ravel().tolist()]
        return flat.reshape(arr.shape).tolist()
    raise _invalid(f"Failed to write JSON value for tensor type: {arr.dtype.name}")


def _predict_response(outputs: dict[str, np.ndarray], fmt: str) -> dict:
    """MakeJsonFromTensors: ``{"predictions": rows}`` or ``{"outputs": value or object}``."""
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    names = list(outputs)
    if fmt == "columnar":
        if len(names) == 1:
            return {"outputs": _array_to_json(names[0], outputs[names[0]])}
        return {"outputs": {k: _array_to_json(k, outputs[k]) for k in names}}
    batch = 0
    for k in names:
        shape = np.shape(outputs[k])
        if not shape:
            raise _invalid(f"Tensor name: {k} has no shape information ")
        if shape[0] < 1:
            raise _invalid(f"Tensor name: {k} has invalid batch size: {shape[0]}")
        if batch and shape[0] != batch:
            raise _invalid(
                f"Tensor name: {k} has inconsistent batch size: {shape[0]} expecting: {batch}"
            )
        batch = shape[0]
    lists = {k: _array_to_json(k, outputs[k]) for k in names}
    if len(names) == 1:
        return {"predictions": lists[names[0]]}
    return {"predictions": [{k: lists[k][i] for k in names} for i in range(batch)]}


def _message_to_dict(message, preserve_names: bool) -> dict:
    """MessageToJsonString with always_print_primitive_fields (protobuf 5+ renamed the flag)."""
    from google.protobuf import json_format

    try:
        return json_format.MessageToDict(
            message,
            always_print_fields_with_no_presence=True,
            preserving_proto_field_name=preserve_names,
        )
    except TypeError:  # protobuf < 5
        return json_format.MessageToDict(
            message,
            including_default_value_fields=True,
            preserving_proto_field_name=preserve_names,
        )


# -- the request handler ---------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    timeout = 60  # seconds a connection may sit idle or stall mid-request before it is closed
    server_version = "zoo-serving"
    sys_version = ""
    server: _HTTPServer

    # -- plumbing ---------------------------------------------------------------------------------
    def log_message(self, format, *args):
        log.debug("%s - %s", self.address_string(), format % args)

    def handle_expect_100(self) -> bool:
        # An oversize body is refused before the client sends it: no "100 Continue" for it.
        try:
            if int(self.headers.get("Content-Length", "0")) > self.server.max_body_bytes:
                return True
        except ValueError:
            pass
        return super().handle_expect_100()

    def parse_request(self) -> bool:
        self.server.mark_busy(self.connection, True)
        ok = super().parse_request()
        if ok and self.server.stopping:
            self.close_connection = True
        return ok

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            self.server.mark_busy(self.connection, False)

    def _send_json(self, status: int, body: Any, *, close: bool = False) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close or self.server.stopping:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, code: grpc.StatusCode, message: str, *, close: bool = False) -> None:
        self._send_json(http_status_for(code), {"error": message}, close=close)

    def _refuse_oversize(self, size: int | None) -> None:
        """413 without reading the body: answer, half-close, then discard what is in flight."""
        limit = self.server.max_body_bytes
        what = f"of {size} bytes" if size is not None else "larger than the limit"
        body = json.dumps(
            {"error": f"Request body {what} exceeds the server's limit of {limit} bytes"}
        ).encode("utf-8")
        self.close_connection = True
        self.send_response(413)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        # Closing a socket with unread data makes the kernel send RST, which can destroy the
        # response before the client reads it. Half-close instead, then drain for a moment
        # (bounded in time and bytes; nothing is kept).
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 2.0
            drained = 0
            while time.monotonic() < deadline and drained < 64 * 1024 * 1024:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 413 / 400 for it."""
        limit = self.server.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
            if size < 0:
                raise ValueError
        except ValueError:
            self._send_error(
                grpc.StatusCode.INVALID_ARGUMENT, f"Invalid Content-Length: {length}", close=True
            )
            return None
        if size > limit:
            self._refuse_oversize(size)
            return None
        return self.rfile.read(size)

    def _read_chunked(self, limit: int) -> bytes | None:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._send_error(
                    grpc.StatusCode.INVALID_ARGUMENT, "Malformed chunked request body", close=True
                )
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                self._refuse_oversize(None)
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    # -- dispatch ---------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_POST

    def _dispatch(self) -> None:
        body = b""
        if self.command in ("POST", "PUT", "PATCH") or self.headers.get("Content-Length"):
            body = self._read_body()
            if body is None:
                return
        path = urlsplit(self.path).path
        try:
            if not _V1_RE.fullmatch(path):
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {self.command} {path}")
            status, result = self._route(self.command, path, body)
        except Exception as e:  # noqa: BLE001 - every error becomes a status; the server stays up
            code = getattr(e, "code", None)
            if isinstance(code, grpc.StatusCode):
                message = getattr(e, "message", None) or str(e)
            else:
                log.exception("REST %s %s failed", self.command, path)
                code, message = grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"
            self._send_error(code, message)
            return
        self._send_json(status, result)

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        malformed = _invalid(f"Malformed request: {method} {path}")
        if method == "POST":
            m = _PREDICT_RE.fullmatch(path)
            if not m:
                raise malformed
            name, version, label = _model_info(*m.group(1, 2, 3))
            verb = m.group(4).lower()
            if verb != "predict":
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"':{verb}' is not supported by this server's REST API; use ':predict' "
                    f"(or the gRPC PredictionService)",
                )
            return 200, self._predict(name, version, label, body)
        if method == "GET":
            m = _STATUS_RE.fullmatch(path)
            if not m:
                raise malformed
            if not m.group(1):
                raise _invalid("Missing model name in request.")
            name, version, label = _model_info(*m.group(1, 2, 3))
            if (m.group(4) or "").lower() == "metadata":
                return 200, self._metadata(name, version, label)
            return 200, self._status(name, version, label)
        raise malformed

    # -- endpoints --------------------------------------------------------------------------------
    def _predict(self, name: str, version: int | None, label: str | None, body: bytes) -> dict:
        doc = _parse_json(body)
        signature = doc.get("signature_name", "")
        if type(signature) is not str:
            raise _invalid(
                f"JSON Value: {_js(doc)} not formatted correctly. 'signature_name' key must be "
                f"a string value."
            )
        signature = signature or DEFAULT_SIGNATURE
        # acquire(): resolve and mark in flight in one step, so the version is not retired
        # between the two.
        with self.server.manager.acquire(name, version, label) as servable:
            specs = servable.input_specs(signature)
            inputs, fmt = _predict_inputs(doc, specs, signature)
            outputs = servable.run(signature, inputs)
        return _predict_response(outputs, fmt)

    def _metadata(self, name: str, version: int | None, label: str | None) -> dict:
        from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

        servable = self.server.manager.resolve(name, version, label)
        spec = model_pb2.ModelSpec(name=servable.name)
        spec.version.value = int(servable.version)
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        for key, sigdef in servable.signature_def_map().items():
            sigmap.signature_def[key].CopyFrom(sigdef)
        # http_rest_api_util.cc ToJsonString(GetModelMetadataResponse): proto field names kept.
        return {
            "model_spec": _message_to_dict(spec, True),
            "metadata": {"signature_def": _message_to_dict(sigmap, True)},
        }

    def _status(self, name: str, version: int | None, label: str | None) -> dict:
        from tensorflow_serving.apis import get_model_status_pb2

        manager = self.server.manager
        if label is not None:
            version = manager.resolve(name, None, label).version
        response = get_model_status_pb2.GetModelStatusResponse()
        states = get_model_status_pb2.ModelVersionStatus.State
        for v, state, error_code, error_message in manager.status(name, version):
            entry = response.model_version_status.add()
            entry.version = int(v)
            entry.state = states.Value(state)
            entry.status.error_code = int(error_code)
            entry.status.error_message = error_message or ""
        # ToJsonString(GetModelStatusResponse): the proto's json_names are the snake_case ones.
        return _message_to_dict(response, False)


def _parse_json(body: bytes) -> dict:
    if not body.strip():
        raise _invalid("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _invalid(
            f"JSON Parse error: Invalid encoding in string. at offset: {e.start}"
        ) from None
    except json.JSONDecodeError as e:
        raise _invalid(f"JSON Parse error: {e.msg} at offset: {e.pos}") from None
    except RecursionError:
        raise _invalid("JSON Parse error: The document is nested too deeply") from None
    if type(doc) is not dict:
        raise _invalid(f"JSON Value: {_js(doc)} Is not object")
    return doc


def _model_info(name: str, version: str | None, label: str | None):
    """ParseModelInfo: URL-decode name and label, parse the version, refuse unsafe names."""
    name = check_model_name(unquote(name))
    parsed_version = None
    if version:
        if len(version) > 19 or int(version) > _INT64_MAX:
            raise _invalid(f"Failed to convert version: {version} to numeric.")
        parsed_version = int(version)
    return name, parsed_version, (unquote(label) if label else None)


# -- the server ------------------------------------------------------------------------------------
class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # RestServer.stop() waits for the handlers itself
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, manager, max_body_bytes: int):
        self.manager = manager
        self.max_body_bytes = int(max_body_bytes)
        self.stopping = False
        self._conn_lock = threading.Lock()
        self._conns: dict[socket.socket, bool] = {}  # open connection -> inside a request
        self._idle = threading.Condition(self._conn_lock)
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address):
        # A client that went away mid-response, typically; never fatal to the server.
        log.debug("REST connection from %s failed", client_address, exc_info=True)

    def mark_busy(self, conn: socket.socket, busy: bool) -> None:
        with self._conn_lock:
            if conn in self._conns:
                self._conns[conn] = busy

    def process_request(self, request, client_address):
        with self._conn_lock:
            self._conns[request] = False
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conn_lock:
            self._conns.pop(request, None)
            self._idle.notify_all()
        super().shutdown_request(request)

    def close_idle_connections(self) -> None:
        """Wake keep-alive connections that wait for a next request, so their threads end."""
        with self._conn_lock:
            idle = [c for c, busy in self._conns.items() if not busy]
        for conn in idle:
            try:
                conn.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def wait_connections(self, timeout: float | None) -> bool:
        with self._conn_lock:
            return self._idle.wait_for(lambda: not self._conns, timeout=timeout)


class RestServer:
    """TF Serving's REST API for a :class:`~zoo.serving.core.ModelManager`, in a background thread.

    ``RestServer(manager, "127.0.0.1", 0, max_body_bytes=64 << 20).start()`` picks a free port
    (``.port``). :meth:`stop` stops accepting connections and waits for in-flight requests.
    """

    def __init__(
        self,
        manager,
        host: str = "127.0.0.1",
        port: int = 8501,
        max_body_bytes: int = 256 * 1024 * 1024,
    ):
        self.manager = manager
        self.host = host
        self.port = int(port)
        self.max_body_bytes = int(max_body_bytes)
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> RestServer:
        if self._server is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_cls = type("_Server", (_HTTPServer,), {"address_family": family})
        self._server = server_cls((self.host, self.port), self.manager, self.max_body_bytes)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"rest-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("REST API listening on %s", self.address)
        return self

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Stop accepting, let in-flight requests finish (up to ``timeout`` s); True if all did."""
        server = self._server
        if server is None:
            return True
        server.stopping = True
        server.shutdown()  # the accept loop ends; no new connections are taken
        server.socket.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        drained = False
        while True:
            server.close_idle_connections()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            step = 0.1 if remaining is None else min(0.1, remaining)
            if server.wait_connections(step):
                drained = True
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
        return drained

    def __enter__(self) -> RestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
