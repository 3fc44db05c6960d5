"""The REST layer (``zoo.serving.rest``) against a fake manager, and the gRPC client's helpers.

No SavedModel is loaded: the fake servables implement the core's interface with numpy, so these
tests pin the HTTP side (paths, JSON formats, status codes, limits, draining) on their own.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from zoo.serving.core import ServingError
from zoo.serving.rest import RestServer, http_status_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT
MAX_BODY = 64 * 1024


# -- fakes implementing the core's interface ------------------------------------------------------
def _spec(shape, dtype):
    return tf.TensorSpec(shape, dtype)


def _spec_text(spec: tf.TensorSpec) -> str:
    return f"TensorSpec(shape={tuple(spec.shape.as_list())}, dtype={spec.dtype.name})"


class FakeServable:
    """serving_default doubles (×factor) ``x`` float32 [None, 3]; other signatures below."""

    def __init__(self, manager, name: str, version: int, factor: float = 2.0, delay: float = 0.0):
        self.manager, self.name, self.version, self.path = manager, name, version, f"/m/{version}"
        self.factor, self.delay = factor, delay
        self.calls = 0
        x = {"x": _spec([None, 3], tf.float32)}
        self._sigs = {
            "serving_default": (x, {"y": _spec([None, 3], tf.float32)}),
            "multi": (
                {"a": _spec([None, 2], tf.float32), "b": _spec([None], tf.int64)},
                {"sum": _spec([None], tf.float32), "b_out": _spec([None], tf.int64)},
            ),
            "text": (
                {"s": _spec([None], tf.string)},
                {
                    "n": _spec([None], tf.int64),
                    "upper": _spec([None], tf.string),
                    "echo_bytes": _spec([None], tf.string),
                },
            ),
            "scalar_out": (x, {"total": _spec([], tf.float32)}),
            "boom": (x, {"y": _spec([None, 3], tf.float32)}),
        }

    def signature_names(self):
        return sorted(self._sigs)

    def _check(self, signature):
        if signature not in self._sigs:
            raise ServingError(INVALID, f"Serving signature name: {signature!r} not found")

    def input_specs(self, signature):
        self._check(signature)
        return dict(self._sigs[signature][0])

    def output_specs(self, signature):
        self._check(signature)
        return dict(self._sigs[signature][1])

    def signature_def_map(self):
        out = {}
        for sig, (ins, outs) in self._sigs.items():
            d = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
            for target, specs in ((d.inputs, ins), (d.outputs, outs)):
                for k, s in specs.items():
                    info = target[k]
                    info.name = f"{sig}_{k}:0"
                    info.dtype = s.dtype.as_datatype_enum
                    info.tensor_shape.CopyFrom(
                        tensor_shape_pb2.TensorShapeProto(
                            dim=[
                                tensor_shape_pb2.TensorShapeProto.Dim(size=-1 if d_ is None else d_)
                                for d_ in s.shape.as_list()
                            ]
                        )
                    )
            out[sig] = d
        return out

    def run(self, signature, inputs, output_filter=None):
        assert self.manager.inflight > 0, "run() outside manager.acquire()"
        specs = self.input_specs(signature)
        if set(inputs) != set(specs):
            raise ServingError(INVALID, f"keys {sorted(inputs)}; expected {sorted(specs)}")
        for k, spec in specs.items():
            v = inputs[k]
            ok = (
                v.dtype == object
                if spec.dtype == tf.string
                else v.dtype == spec.dtype.as_numpy_dtype
            )
            if not ok or not spec.shape.is_compatible_with(v.shape):
                raise ServingError(
                    INVALID,
                    f"Input {k!r} has dtype {v.dtype.name} shape {list(v.shape)}; "
                    f"expected {_spec_text(spec)}",
                )
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if signature == "boom":
            raise ServingError(grpc.StatusCode.INTERNAL, "the model raised: division by zero")
        if signature == "multi":
            return {
                "sum": inputs["a"].sum(axis=1) + inputs["b"].astype(np.float32),
                "b_out": inputs["b"] * 10,
            }
        if signature == "text":
            s = inputs["s"]
            return {
                "n": np.array([len(v) for v in s], np.int64),
                "upper": np.array([v.upper() for v in s], dtype=object),
                "echo_bytes": s,
            }
        if signature == "scalar_out":
            return {"total": np.float32(inputs["x"].sum())}
        return {"y": inputs["x"] * np.float32(self.factor)}


class FakeManager:
    """Model ``double``: versions 1 (×2) and 2 (×3), label stable→1, version 3 failed to load."""

    def __init__(self, delay: float = 0.0):
        self.inflight = 0
        self.tracked = 0
        self.resolved: list[str] = []
        self._lock = threading.Lock()
        self.servables = {
            1: FakeServable(self, "double", 1, 2.0, delay),
            2: FakeServable(self, "double", 2, 3.0, delay),
        }
        self.labels = {"stable": 1}

    def resolve(self, name, version=None, label=None):
        self.resolved.append(name)
        if name != "double":
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})"
            )
        if label is not None:
            if label not in self.labels:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Unrecognized label: {label}")
            version = self.labels[label]
        if version is None:
            return self.servables[max(self.servables)]
        if version not in self.servables:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({name}, {version})",
            )
        return self.servables[version]

    def status(self, name, version=None):
        if name != "double":
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
            )
        rows = [
            (3, "END", 2, "Failed to load /m/3: saved_model.pb is truncated"),
            (2, "AVAILABLE", 0, ""),
            (1, "AVAILABLE", 0, ""),
        ]
        if version is not None:
            rows = [r for r in rows if r[0] == version]
            if not rows:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}"
                )
        return rows

    @contextlib.contextmanager
    def acquire(self, name, version=None, label=None):
        servable = self.resolve(name, version, label)
        with self.track(servable):
            yield servable

    @contextlib.contextmanager
    def track(self, servable):
        with self._lock:
            self.inflight += 1
            self.tracked += 1
        try:
            yield
        finally:
            with self._lock:
                self.inflight -= 1


# -- helpers --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manager():
    return FakeManager()


@pytest.fixture(scope="module")
def server(manager):
    srv = RestServer(manager, "127.0.0.1", 0, max_body_bytes=MAX_BODY).start()
    assert srv.port > 0
    yield srv
    assert srv.stop(timeout=5)


def call(srv, method, path, body=None, raw: bytes | None = None, timeout=10):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(
        f"http://127.0.0.1:{srv.port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            assert r.headers["Content-Type"] == "application/json"
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"] == "application/json"
        return e.code, json.loads(e.read())


def predict(srv, body, path="/v1/models/double:predict"):
    return call(srv, "POST", path, body)


# -- predict: formats -----------------------------------------------------------------------------
def test_row_format_single_input_single_output(server, manager):
    before = manager.tracked
    status, out = predict(server, {"instances": [[1, 2, 3], [0.5, -1.0, 0.25]]})
    assert status == 200
    assert out == {"predictions": [[3.0, 6.0, 9.0], [1.5, -3.0, 0.75]]}  # latest: version 2, ×3
    assert manager.tracked == before + 1
    # float32 outputs print as their shortest round trip, not as widened doubles
    status, out = predict(
        server, {"instances": [[0.1, 0.2, 0.3]]}, "/v1/models/double/versions/1:predict"
    )
    assert out == {"predictions": [[0.2, 0.4, 0.6]]}


def test_columnar_format_value_or_named_object(server):
    for inputs in ([[1, 2, 3]], {"x": [[1, 2, 3]]}):
        status, out = predict(server, {"signature_name": "serving_default", "inputs": inputs})
        assert (status, out) == (200, {"outputs": [[3.0, 6.0, 9.0]]})


def test_versions_and_labels(server):
    body = {"instances": [[1, 1, 1]]}
    assert predict(server, body, "/v1/models/double/versions/1:predict")[1] == {
        "predictions": [[2.0, 2.0, 2.0]]
    }
    assert predict(server, body, "/v1/models/double/labels/stable:predict")[1] == {
        "predictions": [[2.0, 2.0, 2.0]]
    }
    status, out = predict(server, body, "/v1/models/double/versions/7:predict")
    assert status == 404 and "Specific(double, 7)" in out["error"]
    status, out = predict(server, body, "/v1/models/double/labels/nope:predict")
    assert status == 404 and "nope" in out["error"]


def test_multi_input_multi_output_row_and_columnar(server):
    body = {
        "signature_name": "multi",
        "instances": [{"a": [1, 2], "b": 3}, {"a": [0.5, 0.5], "b": -1}],
    }
    status, out = predict(server, body)
    assert status == 200
    assert out == {"predictions": [{"sum": 6.0, "b_out": 30}, {"sum": 0.0, "b_out": -10}]}

    body = {"signature_name": "multi", "inputs": {"a": [[1, 2], [3, 4]], "b": [1, 2]}}
    status, out = predict(server, body)
    assert (status, out) == (200, {"outputs": {"sum": [4.0, 9.0], "b_out": [10, 20]}})

    # a plain list cannot feed two inputs; an instance must name every input, and only those
    status, out = predict(server, {"signature_name": "multi", "instances": [[1, 2]]})
    assert status == 400 and "expecting list of objects" in out["error"]
    status, out = predict(server, {"signature_name": "multi", "instances": [{"a": [1, 2]}]})
    assert status == 400 and "must only have keys: a,b" in out["error"]
    status, out = predict(server, {"signature_name": "multi", "inputs": {"a": [[1, 2]]}})
    assert status == 400 and "Missing named input: b" in out["error"]
    status, out = predict(
        server, {"signature_name": "multi", "inputs": {"a": [[1, 2]], "b": [1], "c": [1]}}
    )
    assert status == 400 and "Unexpected named input(s): c" in out["error"]


def test_binary_b64_inputs_and_bytes_outputs(server):
    raw = b"\x00\xffbin"
    body = {
        "signature_name": "text",
        "instances": [{"b64": base64.b64encode(raw).decode()}, "abc"],
    }
    status, out = predict(server, body)
    assert status == 200
    assert out["predictions"][0]["n"] == len(raw)
    assert base64.b64decode(out["predictions"][0]["echo_bytes"]["b64"]) == raw  # *_bytes → b64
    assert out["predictions"][1] == {"n": 3, "upper": "ABC", "echo_bytes": {"b64": "YWJj"}}
    status, out = predict(server, {"signature_name": "text", "instances": [{"b64": "###"}]})
    assert status == 400 and "base64" in out["error"]


def test_row_format_needs_batched_outputs(server):
    status, out = predict(server, {"signature_name": "scalar_out", "instances": [[1, 2, 3]]})
    assert status == 400 and "total has no shape information" in out["error"]
    status, out = predict(server, {"signature_name": "scalar_out", "inputs": [[1, 2, 3]]})
    assert (status, out) == (200, {"outputs": 6.0})


# -- predict: errors ------------------------------------------------------------------------------
def test_malformed_json_and_request_shape_400(server):
    for raw in (b"{not json", b"", b"[1, 2]", b'{"instances": [[1,2,3]]', "\xff".encode("latin-1")):
        status, out = call(server, "POST", "/v1/models/double:predict", raw=raw)
        assert status == 400, raw
        assert out["error"].startswith(("JSON Parse error", "JSON Value")), out
    cases = [
        ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, "only one of 'inputs' or 'instances'"),
        ({"instance": [[1, 2, 3]]}, "Missing 'inputs' or 'instances' key"),
        ({"instances": []}, "No values in 'instances' array"),
        ({"instances": {"x": 1}}, "to be an list/array"),
        ({"signature_name": 3, "instances": [[1, 2, 3]]}, "'signature_name' key must be a string"),
        ({"signature_name": "nope", "instances": [[1, 2, 3]]}, "'nope' not found"),
    ]
    for body, message in cases:
        status, out = predict(server, body)
        assert status == 400 and message in out["error"], (body, out)


def test_wrong_dtype_and_shape_400_with_expected_spec(server):
    expected = "x: TensorSpec(shape=(None, 3), dtype=float32)"
    for body, message in [
        (
            {"instances": [["a", "b", "c"]]},
            'JSON Value: "a" Type: String is not of expected type: float',
        ),
        ({"instances": [[1, 2, True]]}, "Type: True is not of expected type: float"),
        ({"instances": [[1, 2, 3], [1, 2]]}, "Expecting tensor size: 3 but got: 2"),
        ({"inputs": [[1, 2, 3], [1, 2]]}, "Encountered list at unexpected size: 2 at level: 1"),
        ({"inputs": [[1, 2, [3]]]}, "unexpected level"),
        ({"inputs": [[1, 2, 3e39]]}, "without loss of precision"),
    ]:
        status, out = predict(server, body)
        assert status == 400, body
        assert message in out["error"] and expected in out["error"], out
    # a dense value of the wrong rank or width reaches the servable, which names the spec
    status, out = predict(server, {"instances": [[1, 2]]})
    assert status == 400 and "TensorSpec(shape=(None, 3), dtype=float32)" in out["error"]
    status, out = predict(
        server, {"signature_name": "multi", "inputs": {"a": [[1, 2]], "b": [1.5]}}
    )
    assert status == 400 and "is not of expected type: int64" in out["error"]


def test_internal_error_is_500_and_server_keeps_answering(server):
    status, out = predict(server, {"signature_name": "boom", "instances": [[1, 2, 3]]})
    assert (status, out) == (500, {"error": "the model raised: division by zero"})
    assert predict(server, {"instances": [[1, 1, 1]]})[0] == 200


def test_unknown_model_404(server):
    status, out = predict(server, {"instances": [[1, 2, 3]]}, "/v1/models/nope:predict")
    assert status == 404 and "Servable not found for request: Latest(nope)" in out["error"]
    status, out = call(server, "GET", "/v1/models/nope")
    assert status == 404 and "Could not find any versions of model nope" in out["error"]
    status, out = call(server, "GET", "/v1/models/nope/metadata")
    assert status == 404


def test_paths_404_outside_v1_and_400_malformed_inside(server):
    assert call(server, "GET", "/")[0] == 404
    assert call(server, "POST", "/predict", {"instances": [1]})[0] == 404
    # TF Serving answers any /v1/ path it cannot route with 400 "Malformed request"
    status, out = call(server, "GET", "/v1/models/double:predict")
    assert (status, out) == (400, {"error": "Malformed request: GET /v1/models/double:predict"})
    assert call(server, "POST", "/v1/models/double/metadata", {})[0] == 400
    assert call(server, "DELETE", "/v1/models/double")[0] == 400
    status, out = call(server, "GET", "/v1/models")
    assert (status, out) == (400, {"error": "Missing model name in request."})
    status, out = predict(server, {"examples": []}, "/v1/models/double:classify")
    assert status == 501 and ":predict" in out["error"]


def test_model_names_with_path_characters_refused(server, manager):
    manager.resolved.clear()
    for path in (
        "/v1/models/..%2F..%2Fetc:predict",
        "/v1/models/..:predict",
        "/v1/models/a%20b:predict",
        "/v1/models/bad$name:predict",
        "/v1/models/%2E%2E/versions/1:predict",
    ):
        status, out = predict(server, {"instances": [[1, 2, 3]]}, path)
        assert status == 400 and "Invalid model name" in out["error"], (path, out)
    for path in ("/v1/models/..%2Fsecret", "/v1/models/a%5Cb/metadata"):
        status, out = call(server, "GET", path)
        assert status == 400 and "Invalid model name" in out["error"], (path, out)
    # an unencoded ../ never matches an endpoint at all
    assert predict(server, {"instances": [[1]]}, "/v1/models/../etc:predict")[0] == 400
    assert manager.resolved == []  # none of them reached the manager


def test_oversize_body_413(server, manager):
    calls = manager.servables[2].calls
    big = {"instances": [[1.0, 2.0, 3.0]] * 10000}  # ~170 KB > 64 KiB
    status, out = predict(server, big)
    assert status == 413 and str(MAX_BODY) in out["error"]
    assert manager.servables[2].calls == calls

    # A huge announced body is refused at once, before a byte of it is read (also under
    # "Expect: 100-continue", where no "100 Continue" is sent).
    for expect in ("", "Expect: 100-continue\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            t0 = time.monotonic()
            s.sendall(
                b"POST /v1/models/double:predict HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000000000\r\n"
                + expect.encode()
                + b"\r\n"
            )
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
            assert time.monotonic() - t0 < 3
    # chunked bodies are counted as they arrive
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request(
        "POST",
        "/v1/models/double:predict",
        body=iter([b"x" * 40000, b"x" * 40000]),  # an iterable is sent chunked
    )
    assert conn.getresponse().status == 413
    conn.close()
    assert predict(server, {"instances": [[1, 1, 1]]})[0] == 200


def test_chunked_body_under_the_limit(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    body = json.dumps({"instances": [[1, 2, 3]]}).encode()
    conn.request(
        "POST",
        "/v1/models/double:predict",
        body=iter([body[:10], body[10:]]),
    )
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (
        200,
        {"predictions": [[3.0, 6.0, 9.0]]},
    )
    conn.close()


def test_keepalive_requests_are_not_delayed(server):
    """Headers and body leave in separate writes: without TCP_NODELAY, Nagle's algorithm and
    the client's delayed ACK add ~40 ms to every request on a kept-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    body = json.dumps({"instances": [[1, 2, 3]]})
    t0 = time.perf_counter()
    for _ in range(20):
        conn.request("POST", "/v1/models/double:predict", body=body)
        response = conn.getresponse()
        assert response.status == 200 and response.read()
    assert (time.perf_counter() - t0) / 20 < 0.02
    conn.close()


# -- status and metadata --------------------------------------------------------------------------
def test_model_status_json_as_tf_serving(server):
    status, out = call(server, "GET", "/v1/models/double")
    assert status == 200
    assert out == {
        "model_version_status": [
            {
                "version": "3",
                "state": "END",
                "status": {
                    "error_code": "UNKNOWN",
                    "error_message": "Failed to load /m/3: saved_model.pb is truncated",
                },
            },
            {
                "version": "2",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            },
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            },
        ]
    }
    status, out = call(server, "GET", "/v1/models/double/versions/1")
    assert out == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert call(server, "GET", "/v1/models/double/labels/stable")[1] == out
    status, out = call(server, "GET", "/v1/models/double/versions/9")
    assert status == 404 and "Could not find version 9 of model double" in out["error"]


def test_model_metadata_json_as_tf_serving(server):
    status, out = call(server, "GET", "/v1/models/double/metadata")
    assert status == 200
    assert out["model_spec"] == {"name": "double", "signature_name": "", "version": "2"}
    assert list(out["metadata"]) == ["signature_def"]
    defs = out["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "multi", "text", "scalar_out", "boom"}
    sd = defs["serving_default"]
    assert sd["method_name"] == "tensorflow/serving/predict"
    assert sd["inputs"]["x"] == {
        "name": "serving_default_x:0",
        "dtype": "DT_FLOAT",
        "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "3", "name": ""}],
            "unknown_rank": False,
        },
    }
    assert defs["multi"]["inputs"]["b"]["dtype"] == "DT_INT64"
    status, out = call(server, "GET", "/v1/models/double/versions/1/metadata")
    assert out["model_spec"]["version"] == "1"


def test_http_status_mapping_follows_tf_serving():
    assert http_status_for(grpc.StatusCode.INVALID_ARGUMENT) == 400
    assert http_status_for(grpc.StatusCode.NOT_FOUND) == 404
    assert http_status_for(grpc.StatusCode.INTERNAL) == 500
    assert http_status_for(grpc.StatusCode.UNIMPLEMENTED) == 501
    assert http_status_for(grpc.StatusCode.UNAVAILABLE) == 503
    assert http_status_for(grpc.StatusCode.RESOURCE_EXHAUSTED) == 429
    assert http_status_for(grpc.StatusCode.DEADLINE_EXCEEDED) == 504


# -- lifecycle ------------------------------------------------------------------------------------
def test_stop_drains_in_flight_requests_and_idle_keepalive():
    manager = FakeManager(delay=0.6)
    srv = RestServer(manager, "127.0.0.1", 0, max_body_bytes=MAX_BODY).start()
    idle = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)  # keep-alive, then idle
    idle.request("GET", "/v1/models/double")
    assert idle.getresponse().read()
    result = {}
    t = threading.Thread(target=lambda: result.update(r=predict(srv, {"instances": [[1, 2, 3]]})))
    t.start()
    deadline = time.monotonic() + 5
    while manager.inflight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert manager.inflight == 1
    t0 = time.monotonic()
    assert srv.stop(timeout=5)
    assert time.monotonic() - t0 < 3
    t.join(5)
    assert result["r"] == (200, {"predictions": [[3.0, 6.0, 9.0]]})  # finished, not cut off
    with pytest.raises(urllib.error.URLError):
        predict(srv, {"instances": [[1, 2, 3]]})
    idle.close()


# -- the gRPC client ------------------------------------------------------------------------------
def test_client_tensor_round_trip():
    from zoo.serving import client

    for arr in (
        np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
        np.array([[1, -2]], np.int64),
        np.array([True, False]),
        np.array([b"\x00\xff", b"abc"], dtype=object),
    ):
        proto = client.to_tensor_proto(arr)
        back = client.to_ndarray(proto)
        assert back.dtype == arr.dtype and back.shape == arr.shape
        assert (back == arr).all()
    text = client.to_ndarray(client.to_tensor_proto(np.array(["é", "b"])))
    assert text.tolist() == ["é".encode(), b"b"]


@pytest.mark.parametrize(
    "dtype",
    ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
     "uint32", "uint64", "bool", "complex64", "complex128"],
)  # fmt: skip
def test_client_fast_tensor_codec_matches_tensorflow(dtype):
    """The fast numeric path builds the very proto tf.make_tensor_proto builds, and decodes
    TF's protos (raw tensor_content or typed value lists) as tf.make_ndarray does."""
    from zoo.serving import client

    rng = np.random.default_rng(0)
    for shape in [(2, 3), (1, 28, 28, 1), (0, 3), (1,), ()]:
        arr = (rng.random(shape) * 100 - 50).astype(dtype)
        assert client.to_tensor_proto(arr) == tf.make_tensor_proto(arr)
        back = client.to_ndarray(tf.make_tensor_proto(arr))
        assert back.dtype == arr.dtype and back.shape == arr.shape and (back == arr).all()
        assert back.flags.writeable  # a copy, not a view of the request's bytes
    # One value for three elements: TF repeats it, and so does the decoder (through TF).
    short = tf.make_tensor_proto(np.zeros((1,), np.float32))
    short.tensor_shape.dim[0].size = 3
    short.float_val[:] = [2.5]
    np.testing.assert_array_equal(client.to_ndarray(short), tf.make_ndarray(short))
    truncated = tf.make_tensor_proto(np.zeros((4, 4), np.float32))
    truncated.tensor_content = truncated.tensor_content[:-4]
    with pytest.raises(Exception):  # noqa: B017 - TF's own error for a malformed proto
        client.to_ndarray(truncated)


def test_model_executor_runs_lone_calls_inline_and_concurrent_calls_on_the_pool():
    import asyncio
    import threading

    from zoo.serving.core import ModelExecutor

    executor = ModelExecutor(max_workers=2)
    threads = []

    def call(seconds):
        threads.append(threading.current_thread().name)
        time.sleep(seconds)
        return seconds

    async def scenario():
        for _ in range(3):  # sparse: one at a time, with gaps
            assert await executor.run(call, 0.002) == 0.002
            await asyncio.sleep(0.01)
        sparse = list(threads)
        threads.clear()
        results = await asyncio.gather(*(executor.run(call, 0.01) for _ in range(4)))
        return sparse, results

    try:
        sparse, results = asyncio.run(scenario())
    finally:
        executor.shutdown()
    assert sparse == ["MainThread"] * 3
    assert results == [0.01] * 4
    assert sum(name.startswith("model") for name in threads) >= 3  # the rest ran on the pool


def test_client_channels_are_cached_per_target():
    from zoo.serving import client

    a = client.channel("127.0.0.1:1")
    assert client.channel("127.0.0.1:1") is a
    assert client.channel("127.0.0.1:1", max_message_bytes=1 << 20) is not a
    client.close_channels()
    assert client.channel("127.0.0.1:1") is not a
    client.close_channels()


def test_client_summaries(manager):
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    from zoo.serving import client

    sigmap = get_model_metadata_pb2.SignatureDefMap()
    for k, v in manager.servables[1].signature_def_map().items():
        sigmap.signature_def[k].CopyFrom(v)
    summary = client.signature_summary(sigmap)
    assert summary["serving_default"] == {
        "inputs": {"x": {"dtype": "float32", "shape": [None, 3]}},
        "outputs": {"y": {"dtype": "float32", "shape": [None, 3]}},
    }
    assert summary["scalar_out"]["outputs"]["total"] == {"dtype": "float32", "shape": []}
    response = get_model_status_pb2.GetModelStatusResponse()
    entry = response.model_version_status.add(version=3, state=50)
    entry.status.error_code = 2
    entry.status.error_message = "bad"
    assert client.status_summary(response) == [
        {"version": 3, "state": "END", "error_code": 2, "error_message": "bad"}
    ]


def test_client_against_in_process_grpc_stubs(manager):
    """predict/metadata/status through the official stubs, against a fake servicer."""
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    from zoo.serving import client

    seen = {}

    class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 - the stub's name
            seen["spec"] = request.model_spec
            seen["filter"] = list(request.output_filter)
            if request.model_spec.name != "double":
                context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found")
            x = tf.make_ndarray(request.inputs["x"])
            response = predict_pb2.PredictResponse()
            response.outputs["y"].CopyFrom(tf.make_tensor_proto(x * 2))
            return response

        def GetModelMetadata(self, request, context):  # noqa: N802
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            sigmap = get_model_metadata_pb2.SignatureDefMap()
            for k, v in manager.servables[1].signature_def_map().items():
                sigmap.signature_def[k].CopyFrom(v)
            response.metadata["signature_def"].Pack(sigmap)
            return response

    class Models(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):  # noqa: N802
            response = get_model_status_pb2.GetModelStatusResponse()
            response.model_version_status.add(version=1, state=30)
            return response

    limit = 64 << 20
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(), grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(Models(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        target = f"127.0.0.1:{port}"
        x = np.ones((1, 3), np.float32)
        out = client.predict(target, "double", {"x": x}, version=2, output_filter=["y"])
        assert out["y"].tolist() == [[2.0, 2.0, 2.0]]
        assert seen["spec"].version.value == 2 and seen["spec"].signature_name == "serving_default"
        assert seen["filter"] == ["y"]
        client.predict(client.channel(target), "double", {"x": x}, version_label="stable")
        assert seen["spec"].version_label == "stable"
        # beyond gRPC's 4 MiB default, both ways
        big = np.ones((2, 1024, 1024), np.float32)  # 8 MiB
        assert client.predict(target, "double", {"x": big})["y"].shape == big.shape
        with pytest.raises(grpc.RpcError) as e:
            client.predict(target, "nope", {"x": x})
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ValueError):
            client.predict(target, "double", {"x": x}, version=1, version_label="stable")
        meta = client.metadata(target, "double")
        assert meta["serving_default"]["inputs"]["x"] == {"dtype": "float32", "shape": [None, 3]}
        assert client.status(target, "double") == [
            {"version": 1, "state": "AVAILABLE", "error_code": 0, "error_message": ""}
        ]
    finally:
        grpc_server.stop(0)
        client.close_channels()


def test_client_cli_help(cli):
    result = cli(["serving/client.py", "--help"], timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in (
        "--target",
        "--model",
        "--input",
        "--inputs",
        "--output",
        "--metadata",
        "--status",
    ):
        assert flag in result.stdout
    result = cli(["serving/client.py", "--model", "m"], timeout=60)
    assert result.returncode == 2 and "nothing to do" in result.stderr
