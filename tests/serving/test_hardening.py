"""A hostile client against a ``cnn_mnist`` server subprocess (the serving-hardening issue).

Each test sends the issue's malformed requests over gRPC (raw bytes or the official stubs) or
HTTP (raw sockets or urllib), checks the status, and then that the server still answers a good
request correctly. One server, with small limits so the limit tests are quick, serves the module.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from helpers.serving import ServerProcess, export_scale_model
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

import zoo
from zoo.export import export_model

INVALID = grpc.StatusCode.INVALID_ARGUMENT
MAX_ELEMENTS = 200_000  # 255 MNIST images
MAX_BODY = 1 << 20
HEADER_TIMEOUT_S = 0.8
REQUEST_TIMEOUT_S = 1.5
MAX_CONNECTIONS = 24
RPCS = {
    "Predict": "/tensorflow.serving.PredictionService/Predict",
    "Classify": "/tensorflow.serving.PredictionService/Classify",
    "Regress": "/tensorflow.serving.PredictionService/Regress",
    "MultiInference": "/tensorflow.serving.PredictionService/MultiInference",
    "GetModelMetadata": "/tensorflow.serving.PredictionService/GetModelMetadata",
    "GetModelStatus": "/tensorflow.serving.ModelService/GetModelStatus",
    "HandleReloadConfigRequest": "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    path = export_model(zoo.load("cnn_mnist"), root)
    local = tf.saved_model.load(str(path)).signatures["serving_default"]
    evil = tmp_path_factory.mktemp("elsewhere") / "evil"
    export_scale_model(evil, 1, 2.0)
    proc = ServerProcess(
        "--model_name", "cnn_mnist", "--model_base_path", str(root / "cnn_mnist"),
        "--file_system_poll_wait_seconds", "0",
        "--max_request_elements", str(MAX_ELEMENTS),
        "--rest_api_max_body_bytes", str(MAX_BODY),
        "--rest_api_header_timeout_in_ms", str(int(HEADER_TIMEOUT_S * 1000)),
        "--rest_api_timeout_in_ms", str(int(REQUEST_TIMEOUT_S * 1000)),
        "--max_connections", str(MAX_CONNECTIONS),
    )  # fmt: skip
    channel = grpc.insecure_channel(
        proc.target, options=[("grpc.max_send_message_length", 512 << 20)]
    )
    yield {
        "proc": proc,
        "root": root,
        "evil": evil,
        "local": local,
        "channel": channel,
        "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "models": model_service_pb2_grpc.ModelServiceStub(channel),
    }
    channel.close()
    assert proc.stop() == 0, proc.log()


X = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)


def _good(served) -> None:
    """A good request over each protocol still gets the in-process SavedModel's answer."""
    expected = served["local"](images=tf.constant(X))["probabilities"].numpy()
    response = served["predict"].Predict(_request(images=tf.make_tensor_proto(X)), timeout=30)
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["probabilities"]), expected, rtol=1e-5, atol=1e-6
    )
    code, body = _post(served, "/v1/models/cnn_mnist:predict", {"instances": X.tolist()})
    assert code == 200, body
    got = [row["probabilities"] for row in body["predictions"]]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _request(name="cnn_mnist", signature="", **inputs) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if signature:
        req.model_spec.signature_name = signature
    for key, proto in inputs.items():
        req.inputs[key].CopyFrom(proto)
    return req


def _shaped(dtype, shape, **values):
    """A TensorProto with ``shape`` and exactly the ``values`` given (none, or too few)."""
    proto = tf.make_tensor_proto(np.zeros([0], dtype.as_numpy_dtype))
    proto.ClearField("tensor_shape")
    for d in shape:
        proto.tensor_shape.dim.add(size=d)
    for field, value in values.items():
        if field == "tensor_content":
            proto.tensor_content = value
        else:
            getattr(proto, field).extend(value)
    return proto


def _code(fn) -> tuple[grpc.StatusCode, str]:
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def _post(served, path, body, timeout=30) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    url = f"http://127.0.0.1:{served['proc'].rest_port}{path}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"] == "application/json"
        return e.code, json.loads(e.read())


def _raw_http(served, data: bytes | list[bytes], pause: float = 0.0, timeout: float = 10):
    """Send ``data`` (a list: pieces with ``pause`` s between them) on a fresh connection and
    read until the server closes it: (seconds, bytes read)."""
    t0 = time.monotonic()
    out = b""
    with socket.create_connection(("127.0.0.1", served["proc"].rest_port), timeout=timeout) as s:
        try:
            for piece in data if isinstance(data, list) else [data]:
                s.sendall(piece)
                time.sleep(pause)
            while chunk := s.recv(65536):
                out += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server while we were still sending
    return time.monotonic() - t0, out


def _status_and_json(reply: bytes) -> tuple[int, dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head, reply[:300]
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


# -- the table, row by row ------------------------------------------------------------------
def test_undecodable_protobuf_bytes_are_invalid_argument_with_one_log_line(served):
    rng = np.random.default_rng(1)
    payloads = [
        rng.bytes(64),  # random bytes
        _request(images=tf.make_tensor_proto(X)).SerializeToString()[:-7],  # truncated
        b"\x0a\x03\x0a\x01\xff",  # model_spec.name holding bad UTF-8
        b"\x0a\xff\xff\xff\x0f",  # a length past the end
    ]
    before = len(served["proc"].lines)
    for name, method in RPCS.items():
        call = served["channel"].unary_unary(method)
        for payload in payloads:
            code, details = _code(lambda call=call, payload=payload: call(payload, timeout=30))
            assert code == INVALID, (name, payload[:10], code, details)
            assert f"Could not parse the {name} request" in details
    time.sleep(0.2)
    logged = served["proc"].lines[before:]
    assert sum("undecodable request" in line for line in logged) == len(RPCS) * len(payloads)
    assert not any("Traceback" in line for line in logged)
    _good(served)


def test_regress_and_multi_inference_are_unimplemented(served):
    for name in ("Regress", "MultiInference"):
        code, details = _code(lambda name=name: served["channel"].unary_unary(RPCS[name])(b""))
        assert code == grpc.StatusCode.UNIMPLEMENTED, details
        assert "it implements Predict, Classify" in details


def test_malformed_tf_example_is_the_callers_error(served):
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name, req.model_spec.signature_name = "cnn_mnist", "classify"
    req.input.example_list.examples.add().features.feature["images"].float_list.value.extend(
        [0.5] * 10  # an image is 784 values
    )
    code, details = _code(lambda: served["predict"].Classify(req, timeout=30))
    assert code == INVALID, details
    assert "InvalidArgumentError" in details
    code, body = _post(
        served,
        "/v1/models/cnn_mnist:predict",
        {"signature_name": "classify", "instances": ["hello"]},
    )
    assert code == 400, body
    _good(served)


@pytest.mark.parametrize("depth", [5, 65, 994])
def test_rest_json_nested_past_the_specs_rank_is_400(served, depth):
    body = b'{"instances":' + b"[" * depth + b"0.5" + b"]" * depth + b"}"
    code, reply = _post(served, "/v1/models/cnn_mnist:predict", body)
    assert code == 400, reply
    # past the rank by the codec, past ~1000 by the JSON parser itself
    assert "nested deeper than 3 lists" in reply["error"] or "nested too deeply" in reply["error"]


def test_rest_integer_of_5000_digits_is_400_naming_it(served):
    code, reply = _post(
        served, "/v1/models/cnn_mnist:predict", b'{"instances":[' + b"7" * 5000 + b"]}"
    )
    assert code == 400 and "integer of 5000 digits" in reply["error"], reply
    _good(served)


def test_negative_dimension_is_invalid_argument(served):
    proto = _shaped(tf.float32, [-1, 28, 28, 1], tensor_content=bytes(3136))
    code, details = _code(lambda: served["predict"].Predict(_request(images=proto), timeout=30))
    assert code == INVALID and "negative dimension" in details, details
    _good(served)


def test_a_batch_of_no_rows_gets_empty_outputs_in_every_cpu_mode(served):
    # oneDNN's kernels fail on an empty batch inside cnn_mnist; the answer is known without them
    empty = tf.make_tensor_proto(np.zeros((0, 28, 28, 1), np.float32))
    response = served["predict"].Predict(_request(images=empty), timeout=30)
    got = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    assert {k: v.shape for k, v in got.items()} == {
        "logits": (0, 10), "probabilities": (0, 10), "classes": (0,)
    }  # fmt: skip
    assert got["classes"].dtype == np.int64
    _good(served)


def test_model_name_with_a_trailing_newline_is_an_invalid_name(served):
    req = _request(name="cnn_mnist\n", images=tf.make_tensor_proto(X))
    code, details = _code(lambda: served["predict"].Predict(req, timeout=30))
    assert code == INVALID and "Invalid model name" in details, details
    code, reply = _post(served, "/v1/models/cnn_mnist%0A:predict", {"instances": X.tolist()})
    assert code == 400 and "Invalid model name" in reply["error"], reply
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name, entry.base_path = "x\n", str(served["root"] / "cnn_mnist")
    reload = model_management_pb2.ReloadConfigRequest(config=config)
    code, details = _code(lambda: served["models"].HandleReloadConfigRequest(reload, timeout=30))
    assert code == INVALID and "Invalid model name" in details, details
    _good(served)


def test_10000_character_names_get_their_real_status_with_a_bounded_echo(served):
    x = tf.make_tensor_proto(X)
    for req, want in (
        (_request(name="n" * 10_000, images=x), INVALID),  # longer than a directory name
        (_request(signature="s" * 10_000, images=x), INVALID),
        (_request(**{"k" * 10_000: x}), INVALID),
    ):
        code, details = _code(lambda req=req: served["predict"].Predict(req, timeout=30))
        assert code == want, (code, details[:200])
        assert len(details.encode()) < 3000
    code, reply = _post(
        served, "/v1/models/cnn_mnist:predict",
        {"signature_name": "s" * (MAX_BODY // 2), "instances": X.tolist()},
    )  # fmt: skip
    assert code == 400 and len(json.dumps(reply)) < 5000, (code, str(reply)[:200])
    _good(served)


def test_shapes_promising_more_values_than_sent_are_refused_before_any_tensor(served):
    pid = served["proc"].proc.pid
    rss = _rss_mb(pid)
    cases = [
        _shaped(tf.float32, [3000, 28, 28, 1]),  # no values: TF would make 9 MB of zeros
        _shaped(tf.float32, [3000, 28, 28, 1], float_val=[0.5]),  # TF would repeat the value
        _shaped(tf.float32, [50_000_000], float_val=[0.5]),  # 200 MB; the wrong rank too
        _shaped(tf.string, [10_000_000], string_val=[b"x"]),  # the wrong dtype too
    ]
    for proto in cases:
        t0 = time.monotonic()
        code, details = _code(lambda p=proto: served["predict"].Predict(_request(images=p)))
        assert code == INVALID, details
        assert time.monotonic() - t0 < 1.0
    assert _rss_mb(pid) - rss < 30  # nothing of hundreds of MB was built
    _good(served)


def test_element_cap_refuses_a_full_request_over_it_on_both_protocols(served):
    rows = MAX_ELEMENTS // 784 + 1
    big = tf.make_tensor_proto(np.zeros((rows, 28, 28, 1), np.float32))
    code, details = _code(lambda: served["predict"].Predict(_request(images=big), timeout=30))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert str(MAX_ELEMENTS) in details and "--max_request_elements" in details
    compact = json.dumps({"instances": [[[[0]] * 28] * 28] * rows}, separators=(",", ":"))
    assert len(compact) < MAX_BODY
    code, reply = _post(served, "/v1/models/cnn_mnist:predict", compact.encode())
    assert code == 413 and str(MAX_ELEMENTS) in reply["error"], reply
    # one row under the cap is served
    ok = tf.make_tensor_proto(np.zeros((rows - 1, 28, 28, 1), np.float32))
    response = served["predict"].Predict(_request(images=ok), timeout=60)
    assert response.outputs["classes"].tensor_shape.dim[0].size == rows - 1
    _good(served)


def test_rest_body_over_the_limit_is_413_naming_the_limit_without_parsing(served):
    body = b'{"instances":[' + b"0.25," * (3 * MAX_BODY // 5) + b"0]}"
    t0 = time.monotonic()
    code, reply = _post(served, "/v1/models/cnn_mnist:predict", body)
    assert code == 413 and str(MAX_BODY) in reply["error"], reply
    assert time.monotonic() - t0 < 2
    _good(served)


# -- connections --------------------------------------------------------------------------------
def test_slow_headers_and_idle_connections_are_closed_at_the_header_deadline(served):
    lines = [b"GET /v1/models/cnn_mnist HTTP/1.1\r\n"] + [b"X-Slow: 1\r\n"] * 40
    seconds, _ = _raw_http(served, lines, pause=0.2)  # one header line every 0.2 s, for 8 s
    assert HEADER_TIMEOUT_S - 0.1 < seconds < HEADER_TIMEOUT_S + 1.5
    seconds, reply = _raw_http(served, b"")  # a half-open connection that never speaks
    assert reply == b"" and seconds < HEADER_TIMEOUT_S + 1.5


def test_body_that_stalls_gets_408_at_the_request_deadline(served):
    head = b"POST /v1/models/cnn_mnist:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    seconds, reply = _raw_http(served, head + b'{"inst')
    status, body = _status_and_json(reply)
    assert status == 408 and "--rest_api_timeout_in_ms" in body["error"]
    assert REQUEST_TIMEOUT_S - 0.1 < seconds < REQUEST_TIMEOUT_S + 1.5


def test_connections_past_the_cap_get_503_and_the_cap_frees(served):
    port = served["proc"].rest_port
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.1)
        _, reply = _raw_http(served, b"GET /v1/models/cnn_mnist HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body = _status_and_json(reply)
        assert status == 503 and "--max_connections" in body["error"]
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    _good(served)


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /v1/models/cnn_mnist:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n-5\r\nabcde\r\n0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) * 5,  # a TLS ClientHello
        b"POST /v1/models/cnn_mnist:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b'Content-Length: 7\r\n\r\n{"a":1}',
    ],
    ids=["negative_chunk_size", "http2_preface", "tls_bytes", "conflicting_content_length"],
)
def test_unparseable_http_gets_a_400_json_error(served, raw):
    _, reply = _raw_http(served, raw)
    status, body = _status_and_json(reply)
    assert status == 400 and body["error"].startswith("Malformed HTTP request"), body
    _good(served)


# -- HandleReloadConfigRequest ------------------------------------------------------------------
def _reload(served, **models):
    config = model_server_config_pb2.ModelServerConfig()
    parts = [f'config {{ name: "{n}" base_path: "{p}" }}' for n, p in models.items()]
    text_format.Parse("model_config_list { " + " ".join(parts) + " }", config)
    request = model_management_pb2.ReloadConfigRequest(config=config)
    return _code(lambda: served["models"].HandleReloadConfigRequest(request, timeout=60))


def test_reload_is_confined_to_the_start_up_roots_and_never_empty(served):
    code, details = _reload(served, cnn_mnist=served["root"] / "cnn_mnist", evil=served["evil"])
    assert code == grpc.StatusCode.PERMISSION_DENIED, details
    assert "--model_base_path_roots" in details
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "evil"
    assert _code(lambda: served["models"].GetModelStatus(status))[0] == grpc.StatusCode.NOT_FOUND
    code, details = _reload(served)  # an empty config would unload every model
    assert code == INVALID and "names no model" in details, details
    code, details = _reload(served, cnn_mnist=served["root"] / "cnn_mnist" / ".." / "cnn_mnist")
    assert code == grpc.StatusCode.OK, details
    _good(served)


# -- a seeded fuzz over both protocols ----------------------------------------------------------
FUZZ_SEED = 21
FUZZ_REQUESTS = 300  # per protocol
GRPC_ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
REST_ALLOWED = {200, 400, 404, 413, 501}
_DTYPES = [1, 2, 3, 4, 7, 9, 10, 19, 999]  # float, double, int32, uint8, string, int64, bool, half


def _fuzz_tensor(rng, dtype_enum: int, dims: list) -> tuple[object, bool, np.ndarray | None]:
    """A TensorProto for an input of ``dims`` (None: any size): (proto, valid, array if valid)."""
    from tensorflow.core.framework import tensor_pb2

    shape = [int(rng.integers(0, 4)) if d is None else d for d in dims]
    r = rng.random()
    if r < 0.1:
        shape = shape[:-1]
    elif r < 0.2:
        shape = [*shape, 1]
    elif r < 0.35:
        shape[int(rng.integers(len(shape)))] = int(rng.choice([-1, -5, 0, 29, 300, 1 << 40]))
    dtype = dtype_enum if rng.random() < 0.7 else int(rng.choice(_DTYPES))
    n = int(np.prod(shape)) if all(0 <= d < 4096 for d in shape) else 0
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for d in shape:
        proto.tensor_shape.dim.add(size=d)
    how = rng.random()
    array = None  # set where the values are exactly the shape's
    if how < 0.5 and n:
        array = rng.standard_normal(shape).astype(np.float32)
        proto.tensor_content = array.tobytes()
    elif how < 0.65:
        proto.tensor_content = rng.bytes(int(rng.integers(0, 4 * n + 9)))
    elif how < 0.8:
        proto.float_val.extend(rng.standard_normal(int(rng.integers(0, n + 3))).tolist())
        if len(proto.float_val) == n and n:
            array = np.array(proto.float_val, np.float32).reshape(shape)
    elif how < 0.9:
        proto.string_val.extend([rng.bytes(3)] * int(rng.integers(0, 3)))
    else:
        proto.tensor_shape.unknown_rank = True
    shape_ok = len(shape) == len(dims) and all(
        n_ >= 0 and (d is None or d == n_) for d, n_ in zip(dims, shape, strict=True)
    )
    valid = (
        shape_ok and dtype == dtype_enum and array is not None and n <= MAX_ELEMENTS
        and how < 0.9 and not (how >= 0.5 and how < 0.65)
    )  # fmt: skip
    return proto, valid, array if valid else None


def _fuzz_grpc(rng, spec) -> tuple[bytes, bool, np.ndarray | None]:
    ((key, info),) = spec["inputs"].items()
    enum = tf.as_dtype(info["dtype"]).as_datatype_enum
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "cnn_mnist"
    valid = True
    r = rng.random()
    if r < 0.06:
        req.model_spec.name = str(rng.choice(["nope", "cnn_mnist\n", "../x", "a" * 300, ""]))
        valid = False
    elif r < 0.1:
        req.model_spec.signature_name = str(rng.choice(["nosuch", "classify", "s" * 5000]))
        valid = False
    elif r < 0.13:
        req.model_spec.version.value = int(rng.choice([0, 2, 1 << 62]))
        valid = False
    elif r < 0.16:
        req.output_filter.append(str(rng.choice(["logits", "nope", "x" * 3000])))
        valid = valid and req.output_filter[0] == "logits"
    proto, ok, array = _fuzz_tensor(rng, enum, info["shape"])
    name = key if rng.random() < 0.9 else str(rng.choice(["other", "k" * 2000]))
    req.inputs[name].CopyFrom(proto)
    if rng.random() < 0.05:
        req.inputs["extra"].CopyFrom(proto)
        ok = False
    data = req.SerializeToString()
    if rng.random() < 0.1:  # flip bytes: mostly undecodable, sometimes another valid message
        data = bytearray(data)
        for i in rng.integers(0, len(data), size=3):
            data[i] = int(rng.integers(256))
        return bytes(data), False, None
    return data, valid and ok and name == key, array


_BAD_LEAVES = [None, True, "x", {"b64": "AAAA"}, {"b64": "###"}, 10**400 // 10**90, {"k": 1}, [],
               [[0.5]], 1e39]  # fmt: skip


def _mutate(rng, value):
    """``value`` (nested lists) with one random leaf, list length or nesting level changed."""
    path = []
    node = value
    while isinstance(node, list) and node and rng.random() < 0.85:
        i = int(rng.integers(len(node)))
        path.append(i)
        node = node[i]
    parent = value
    for i in path[:-1]:
        parent = parent[i]
    kind = rng.random()
    if not path:
        return _BAD_LEAVES[int(rng.integers(len(_BAD_LEAVES)))]
    if kind < 0.6:
        parent[path[-1]] = _BAD_LEAVES[int(rng.integers(len(_BAD_LEAVES)))]
    elif kind < 0.8:
        del parent[path[-1]]
    else:
        parent[path[-1]] = [parent[path[-1]]]
    return value


def _fuzz_rest(rng, spec) -> tuple[str, bytes, np.ndarray | None]:
    """(path, body, the input array if the request is valid by construction)."""
    ((key, info),) = spec["inputs"].items()
    shape = [int(rng.integers(1, 4)) if d is None else d for d in info["shape"]]
    array = rng.standard_normal(shape).astype(np.float32)
    value = array.tolist()
    valid = True
    path = "/v1/models/cnn_mnist:predict"
    if rng.random() < 0.08:
        path = str(rng.choice(["/v1/models/nope:predict", "/v1/models/cnn_mnist%0A:predict",
                               "/v1/models/cnn_mnist/versions/9:predict", "/v1/models/cnn_mnist:regress",
                               "/v1/models/cnn_mnist/labels/x:predict", "/v2/x", "/v1/models/..%2F:predict"]))  # fmt: skip
        valid = False
    if rng.random() < 0.5:
        value = _mutate(rng, value)
        valid = False
    doc: dict = {"instances": value} if rng.random() < 0.5 else {"inputs": {key: value}}
    if rng.random() < 0.1:
        doc["signature_name"] = [3, "nosuch", "classify", None, "s" * 3000][int(rng.integers(5))]
        valid = False
    if rng.random() < 0.04:
        doc = {"inputs": value, "instances": value}
        valid = False
    text = json.dumps(doc).encode()
    r = rng.random()
    if r < 0.05:
        text, valid = text[: int(rng.integers(len(text)))], False
    elif r < 0.08:
        text, valid = rng.bytes(40), False
    elif r < 0.1:
        text, valid = b'{"instances":' + b"[" * 2000 + b"]" * 2000 + b"}", False
    return path, text, array if valid else None


@pytest.mark.timeout(60)
def test_seeded_fuzz_gets_allowed_statuses_and_a_good_request_after(served):
    from zoo.serving import client

    spec = client.metadata(served["channel"], "cnn_mnist")["serving_default"]
    rng = np.random.default_rng(FUZZ_SEED)
    t0 = time.monotonic()
    seen = {}
    raw = served["channel"].unary_unary(RPCS["Predict"])
    for i in range(FUZZ_REQUESTS):
        data, valid, array = _fuzz_grpc(rng, spec)
        try:
            reply = predict_pb2.PredictResponse.FromString(raw(data, timeout=30))
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        assert code in GRPC_ALLOWED, (i, code)
        seen[code.name] = seen.get(code.name, 0) + 1
        if valid:  # a valid request by construction gets the model's exact answer
            assert code == grpc.StatusCode.OK, i
            if array is not None and array.size:
                expected = served["local"](images=tf.constant(array))["logits"].numpy()
                got = tf.make_ndarray(reply.outputs["logits"])
                np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    for i in range(FUZZ_REQUESTS):
        path, body, array = _fuzz_rest(rng, spec)
        code, reply = _post(served, path, body)
        assert code in REST_ALLOWED, (i, code, reply)
        assert (code == 200) == ("error" not in reply), reply
        seen[code] = seen.get(code, 0) + 1
        if array is not None:
            assert code == 200, (i, reply)
            expected = served["local"](images=tf.constant(array))["logits"].numpy()
            got = reply["predictions"] if "predictions" in reply else reply["outputs"]
            got = [row["logits"] for row in got] if isinstance(got, list) else got["logits"]
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert seen.get("OK", 0) >= 10 and seen.get(200, 0) >= 10, seen  # the fuzz reached the model
    assert seen.get("INVALID_ARGUMENT", 0) >= 50 and seen.get(400, 0) >= 50, seen
    assert time.monotonic() - t0 < 50
    _good(served)
