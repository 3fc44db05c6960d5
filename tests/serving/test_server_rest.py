"""The real server's REST API over plain HTTP, and the zoo client and its CLI over gRPC."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from helpers.serving import ServerProcess

import zoo
from zoo.export import export_model
from zoo.serving import client


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("rest")
    path = export_model(zoo.load("cnn_mnist"), base)
    local = tf.saved_model.load(str(path)).signatures["serving_default"]
    proc = ServerProcess(
        "--model_name", "cnn_mnist", "--model_base_path", str(base / "cnn_mnist"),
        "--grpc_max_message_bytes", str(2 << 20),
    )  # fmt: skip
    yield proc, local
    assert proc.stop() == 0, proc.log()


def _http(proc, path, body=None, method=None):
    url = f"http://127.0.0.1:{proc.rest_port}{path}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _x(n=2, seed=0):
    return np.random.default_rng(seed).random((n, 28, 28, 1), dtype=np.float32)


def _local(local, x):
    return {k: v.numpy() for k, v in local(images=tf.constant(x)).items()}


def test_rest_row_format_matches_in_process_call(served):
    proc, local = served
    x = _x()
    code, body = _http(proc, "/v1/models/cnn_mnist:predict", {"instances": x.tolist()})
    assert code == 200, body
    expected = _local(local, x)
    assert len(body["predictions"]) == 2
    for i, row in enumerate(body["predictions"]):
        assert set(row) == {"logits", "probabilities", "classes"}
        np.testing.assert_allclose(row["logits"], expected["logits"][i], rtol=1e-5, atol=1e-6)
        assert row["classes"] == int(expected["classes"][i])


def test_rest_columnar_format_and_version_path(served):
    proc, local = served
    x = _x(3, seed=1)
    code, body = _http(
        proc, "/v1/models/cnn_mnist/versions/1:predict", {"inputs": {"images": x.tolist()}}
    )
    assert code == 200, body
    np.testing.assert_allclose(
        body["outputs"]["probabilities"], _local(local, x)["probabilities"], rtol=1e-5, atol=1e-7
    )


def test_rest_status_and_metadata(served):
    proc, _ = served
    assert _http(proc, "/v1/models/cnn_mnist") == (200, {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})  # fmt: skip
    code, body = _http(proc, "/v1/models/cnn_mnist/metadata")
    assert code == 200 and body["model_spec"]["version"] == "1"
    inputs = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["images"]["dtype"] == "DT_FLOAT"


@pytest.mark.parametrize(
    "path, body, want",
    [
        ("/v1/models/nope:predict", {"instances": [[0.0]]}, 404),
        ("/v1/models/cnn_mnist:predict", b"{not json", 400),
        ("/v1/models/cnn_mnist:predict", {"instances": [[1, 2, 3]]}, 400),
        ("/v1/models/cnn_mnist:predict", {"signature_name": "nosuch", "instances": [[0.0]]}, 400),
        ("/v1/models/cnn_mnist/versions/9:predict", {"instances": _x(1).tolist()}, 404),
        ("/v1/models/..%2Fetc:predict", {"instances": [[0.0]]}, 400),
        ("/v1/models/cnn_mnist:predict", b"[" + b"0," * (3 << 20) + b"0]", 413),
    ],
)
def test_rest_bad_requests_get_their_codes_and_server_stays_up(served, path, body, want):
    proc, _ = served
    code, reply = _http(proc, path, body)
    assert code == want, reply
    if want != 413:
        assert "error" in reply
    assert _http(proc, "/v1/models/cnn_mnist")[0] == 200


def test_client_predict_metadata_status_against_the_server(served):
    proc, local = served
    x = _x(4, seed=2)
    out = client.predict(proc.target, "cnn_mnist", {"images": x})
    for k, v in _local(local, x).items():
        np.testing.assert_allclose(out[k], v, rtol=1e-6, atol=1e-6)
    meta = client.metadata(proc.target, "cnn_mnist")
    assert "serving_default" in json.dumps(meta)
    assert "AVAILABLE" in json.dumps(client.status(proc.target, "cnn_mnist"))


def test_client_cli_reads_npy_and_writes_npz(served, tmp_path, cli):
    proc, local = served
    x = _x(2, seed=3)
    np.save(tmp_path / "x.npy", x)
    result = cli(["serving/client.py", "--target", proc.target, "--model", "cnn_mnist",
                  "--input", f"images={tmp_path / 'x.npy'}", "--output", str(tmp_path / "out.npz")])  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["logits"], _local(local, x)["logits"], rtol=1e-6, atol=1e-6)
