"""The model server, driven as a subprocess through the official tensorflow_serving stubs.

Covers every status of the issue's list, parity with the in-process SavedModel call, version
policies and labels, a new version under load, a corrupt version, batching, and SIGTERM draining.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from helpers.serving import ServerProcess, export_scale_model, tensor
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import zoo
from zoo.export import export_model

X4 = np.arange(8, dtype=np.float32).reshape(2, 4)


def _config(**models) -> str:
    parts = []
    for name, (base, extra) in models.items():
        parts.append(
            f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra} }}'
        )
    return "model_config_list { " + " ".join(parts) + " }"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    cnn = zoo.load("cnn_mnist")
    export_model(cnn, root)  # root/cnn_mnist/1
    for version, factor in ((1, 2.0), (2, 3.0)):
        export_scale_model(root / "pinned", version, factor)
    export_scale_model(root / "scale", 1, 2.0)
    return root, cnn


@pytest.fixture(scope="module")
def server(bases, tmp_path_factory):
    root, _ = bases
    config = tmp_path_factory.mktemp("cfg") / "models.config"
    config.write_text(
        _config(
            cnn_mnist=(root / "cnn_mnist", ""),
            scale=(root / "scale", ""),
            pinned=(
                root / "pinned",
                "model_version_policy { specific { versions: 1 versions: 2 } } "
                'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }',
            ),
        )
    )
    proc = ServerProcess(
        "--model_config_file", str(config), "--file_system_poll_wait_seconds", "0.2", rest=False
    )
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(
        server.target, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    yield (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
    channel.close()


def _predict(stub, name, inputs, signature="", version=None, label=None, output_filter=()):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if signature:
        req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(tensor(v))
    req.output_filter.extend(output_filter)
    return stub.Predict(req, timeout=30)


def _outputs(response):
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def _code(fn):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


# -- Predict, metadata, status ------------------------------------------------------------------
def test_predict_equals_in_process_saved_model_call(bases, stubs, server):
    root, _ = bases
    predict, _ = stubs
    x = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    response = _predict(predict, "cnn_mnist", {"images": x})
    local = tf.saved_model.load(str(root / "cnn_mnist" / "1")).signatures["serving_default"]
    expected = {k: v.numpy() for k, v in local(images=tf.constant(x)).items()}
    got = _outputs(response)
    assert set(got) == {"logits", "probabilities", "classes"}
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6, atol=1e-6)
    assert response.model_spec.name == "cnn_mnist"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_output_filter_returns_only_the_named_outputs(stubs):
    predict, _ = stubs
    x = np.zeros((1, 28, 28, 1), np.float32)
    got = _outputs(_predict(predict, "cnn_mnist", {"images": x}, output_filter=["classes"]))
    assert list(got) == ["classes"] and got["classes"].dtype == np.int64


def test_metadata_is_the_saved_models_signature_def_map(bases, stubs):
    from tensorflow.core.protobuf import saved_model_pb2

    root, _ = bases
    predict, _ = stubs
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "cnn_mnist"
    req.metadata_field.append("signature_def")
    response = predict.GetModelMetadata(req)
    got = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(got)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((root / "cnn_mnist" / "1" / "saved_model.pb").read_bytes())
    expected = {k: v for k, v in sm.meta_graphs[0].signature_def.items() if not k.startswith("__")}
    assert dict(got.signature_def) == expected
    assert response.model_spec.version.value == 1
    inputs = got.signature_def["serving_default"].inputs
    assert list(inputs) == ["images"] and inputs["images"].dtype == tf.float32.as_datatype_enum

    req.metadata_field[:] = ["other"]
    code, details = _code(lambda: predict.GetModelMetadata(req))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "signature_def" in details


def test_model_status_reports_available_versions(stubs):
    _, models = stubs
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "pinned"
    response = models.GetModelStatus(req)
    states = {s.version: s.state for s in response.model_version_status}
    assert states == {1: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
                      2: get_model_status_pb2.ModelVersionStatus.AVAILABLE}  # fmt: skip
    assert all(s.status.error_code == 0 for s in response.model_version_status)
    req.model_spec.version.value = 9
    assert _code(lambda: models.GetModelStatus(req))[0] == grpc.StatusCode.NOT_FOUND


# -- versions -----------------------------------------------------------------------------------
def test_specific_policy_versions_and_labels_route_requests(stubs):
    predict, _ = stubs
    by = {}
    for kwargs in ({}, {"version": 1}, {"version": 2}, {"label": "stable"}, {"label": "canary"}):
        response = _predict(predict, "pinned", {"x": X4}, **kwargs)
        by[str(kwargs)] = (response.model_spec.version.value, _outputs(response)["y"])
    assert by["{}"][0] == 2  # the newest available by default
    assert by["{'label': 'stable'}"][0] == 1 and by["{'label': 'canary'}"][0] == 2
    np.testing.assert_allclose(by["{'version': 1}"][1], X4 * 2)
    np.testing.assert_allclose(by["{'version': 2}"][1], X4 * 3)
    code, _ = _code(lambda: _predict(predict, "pinned", {"x": X4}, label="nope"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_new_version_under_load_moves_traffic_with_zero_failures(bases, stubs):
    root, _ = bases
    predict, _ = stubs
    stop = threading.Event()
    seen, failures = [], []

    def client():
        while not stop.is_set():
            try:
                response = _predict(predict, "scale", {"x": X4})
                version = response.model_spec.version.value
                y = _outputs(response)["y"]
                np.testing.assert_allclose(y, X4 * {1: 2.0, 2: 5.0}[version])
                seen.append(version)
            except Exception as e:  # noqa: BLE001 - every failure is a test failure
                failures.append(repr(e))

    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(client)
        time.sleep(1.0)
        export_scale_model(root / "scale", 2, 5.0)  # dropped in while the clients run
        deadline = time.time() + 60
        while time.time() < deadline and (not seen or seen[-1] != 2):
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
    assert not failures, failures[:3]
    assert 1 in seen and seen[-1] == 2
    first_two = seen.index(2)
    assert set(seen[first_two + 50 :]) <= {2}  # once switched, traffic stays on the new version


def test_corrupt_version_is_reported_and_serving_version_stays(bases, stubs):
    root, _ = bases
    predict, models = stubs
    bad = root / "scale" / "7"
    bad.mkdir()
    (bad / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "scale"
    deadline = time.time() + 30
    status = None
    while time.time() < deadline:
        status = {s.version: s for s in models.GetModelStatus(req).model_version_status}
        if 7 in status and status[7].state == get_model_status_pb2.ModelVersionStatus.END:
            break
        time.sleep(0.1)
    assert status[7].status.error_code != 0
    assert str(bad) in status[7].status.error_message
    response = _predict(predict, "scale", {"x": X4})
    assert response.model_spec.version.value in (1, 2)  # not 7
    shutil.rmtree(bad)


# -- bad requests: each gets its status and the server stays up ----------------------------------
@pytest.mark.parametrize(
    "name, inputs, signature, version, want, needle",
    [
        ("nope", {"x": X4}, "", None, grpc.StatusCode.NOT_FOUND, "nope"),
        ("pinned", {"x": X4}, "", 42, grpc.StatusCode.NOT_FOUND, "42"),
        ("pinned", {"x": X4}, "nosuch", None, grpc.StatusCode.INVALID_ARGUMENT, "nosuch"),
        ("pinned", {}, "", None, grpc.StatusCode.INVALID_ARGUMENT, "TensorSpec(shape=(None, 4)"),
        ("pinned", {"x": X4, "z": X4}, "", None, grpc.StatusCode.INVALID_ARGUMENT, "'z'"),
        ("pinned", {"x": X4.astype(np.float64)}, "", None, grpc.StatusCode.INVALID_ARGUMENT,
         "dtype=float32"),
        ("pinned", {"x": np.zeros((2, 5), np.float32)}, "", None, grpc.StatusCode.INVALID_ARGUMENT,
         "TensorSpec(shape=(None, 4), dtype=float32)"),
        ("pinned", {"x": np.zeros((4,), np.float32)}, "", None, grpc.StatusCode.INVALID_ARGUMENT,
         "shape [4]"),
        ("../pinned", {"x": X4}, "", None, grpc.StatusCode.INVALID_ARGUMENT, "path characters"),
        ("a/b", {"x": X4}, "", None, grpc.StatusCode.INVALID_ARGUMENT, "path characters"),
    ],
)  # fmt: skip
def test_bad_request_gets_its_status(stubs, name, inputs, signature, version, want, needle):
    predict, _ = stubs
    code, details = _code(lambda: _predict(predict, name, inputs, signature, version))
    assert code == want, details
    assert needle in details
    # ... and the server keeps answering.
    assert _predict(predict, "pinned", {"x": X4}).model_spec.version.value == 2


def test_model_that_raises_gets_internal_for_that_request_only(stubs):
    predict, _ = stubs
    code, details = _code(lambda: _predict(predict, "pinned", {"x": -X4 - 1}, signature="fail"))
    assert code == grpc.StatusCode.INTERNAL and "negative input" in details
    ok = _outputs(_predict(predict, "pinned", {"x": X4}, signature="fail"))
    np.testing.assert_allclose(ok["y"], X4)


def test_reload_config_adds_and_removes_models(bases, stubs, server):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    root, _ = bases
    predict, models = stubs
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(
        _config(pinned=(root / "pinned", ""), renamed=(root / "cnn_mnist", "")), config
    )
    response = models.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=config)
    )
    assert response.status.error_code == 0, response.status.error_message
    x = np.zeros((1, 28, 28, 1), np.float32)
    assert _outputs(_predict(predict, "renamed", {"images": x}))["logits"].shape == (1, 10)
    assert (
        _code(lambda: _predict(predict, "cnn_mnist", {"images": x}))[0] == grpc.StatusCode.NOT_FOUND
    )
    # Restore the fixture's configuration for the tests that follow.
    text_format.Parse(
        _config(cnn_mnist=(root / "cnn_mnist", ""), scale=(root / "scale", ""),
                pinned=(root / "pinned", 'version_labels { key: "stable" value: 1 } '
                        'version_labels { key: "canary" value: 2 } '
                        "model_version_policy { specific { versions: 1 versions: 2 } }")),
        config := model_server_config_pb2.ModelServerConfig(),
    )  # fmt: skip
    assert (
        models.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config)
        ).status.error_code
        == 0
    )


# -- batching, message limits -------------------------------------------------------------------
@pytest.fixture(scope="module")
def batching_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("batched") / "scale"
    export_scale_model(base, 1, 2.0)
    proc = ServerProcess(
        "--model_name", "scale", "--model_base_path", str(base), "--enable_batching",
        "--max_batch_size", "16", "--batch_timeout_micros", "20000",
        "--grpc_max_message_bytes", str(1 << 20), rest=False,
    )  # fmt: skip
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.mark.parametrize("batching", [False, True])
def test_concurrent_clients_get_their_own_exact_results(batching, batching_server, server):
    target = batching_server.target if batching else server.target
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
    rng = np.random.default_rng(1)
    requests = [rng.random((1 + i % 3, 4), dtype=np.float32) for i in range(64)]

    factors = {1: 2.0, 2: 5.0}  # the shared server's scale model may be at version 2 by now

    def call(x):
        response = _predict(stub, "scale", {"x": x})
        return {**_outputs(response), "factor": factors[response.model_spec.version.value]}

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, requests))
    for x, out in zip(requests, results, strict=True):
        np.testing.assert_allclose(out["y"], x * out["factor"], rtol=1e-6)
        assert out["y"].shape == x.shape
    merged = max(int(out["rows"][0]) - len(x) for x, out in zip(requests, results, strict=True))
    if batching:
        assert merged > 0, "no request was merged with another"
    else:
        assert merged == 0


def test_oversize_message_is_resource_exhausted(batching_server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(batching_server.target)
    )
    big = np.zeros((100_000, 4), np.float32)  # 1.6 MB > the server's 1 MiB limit
    code, _ = _code(lambda: _predict(stub, "scale", {"x": big}))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _outputs(_predict(stub, "scale", {"x": X4}))["y"].shape == (2, 4)


# -- shutdown -----------------------------------------------------------------------------------
def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path):
    base = tmp_path / "slow"
    export_scale_model(base, 1, 2.0, delay_iters=40_000)
    proc = ServerProcess("--model_name", "slow", "--model_base_path", str(base), rest=False)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(proc.target))
    t0 = time.perf_counter()
    _predict(stub, "slow", {"x": X4})
    one_call = time.perf_counter() - t0
    assert one_call > 0.2, f"the slow model is too fast to test draining ({one_call:.2f}s)"
    with ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(_predict, stub, "slow", {"x": X4})
        time.sleep(one_call / 4)
        proc.proc.send_signal(15)
        response = in_flight.result(timeout=60)
        np.testing.assert_allclose(_outputs(response)["y"], X4 * 2)
    assert proc.proc.wait(60) == 0, proc.log()
    with pytest.raises(grpc.RpcError) as info:
        _predict(stub, "slow", {"x": X4})
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def _example(image: np.ndarray):
    return tf.train.Example(
        features=tf.train.Features(
            feature={"images": tf.train.Feature(float_list=tf.train.FloatList(value=image.ravel()))}
        )
    )


def test_classify_returns_every_class_with_its_probability(bases, stubs):
    from tensorflow_serving.apis import classification_pb2

    root, _ = bases
    predict, _ = stubs
    x = np.random.default_rng(5).random((3, 28, 28, 1), dtype=np.float32)
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "cnn_mnist"
    req.model_spec.signature_name = "classify"
    req.input.example_list.examples.extend(_example(img) for img in x)
    response = predict.Classify(req, timeout=30)
    local = tf.saved_model.load(str(root / "cnn_mnist" / "1")).signatures["serving_default"]
    probabilities = local(images=tf.constant(x))["probabilities"].numpy()
    assert len(response.result.classifications) == 3
    for i, result in enumerate(response.result.classifications):
        assert [c.label for c in result.classes] == [str(k) for k in range(10)]
        np.testing.assert_allclose(
            [c.score for c in result.classes], probabilities[i], rtol=1e-5, atol=1e-7
        )

    # Classify on a predict signature is refused, as TF Serving refuses it.
    req.model_spec.signature_name = "serving_default"
    code, details = _code(lambda: predict.Classify(req))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tensorflow/serving/classify" in details
