"""Soak of ``zoo-serve``: N rounds of malformed and of the largest valid requests, over gRPC and REST.

Each round sends the serving-hardening issue's heavy requests to a ``cnn_mnist`` server on
loopback: undecodable protobuf bytes to every RPC, tensors whose shape promises far more values
than they hold (``[3000,28,28,1]`` with no values, ``float_val=[0.5]`` with shape ``[5e7]``, a
string tensor of shape ``[1e7]``), a ``-1`` dimension, malformed ``tf.Example``s, 10,000-character
names, REST bodies past the size limit, JSON nested 900 deep and a 5,000-digit integer; then the
largest requests the server's limits let through, once over each protocol. Meanwhile one client
sends batch-1 gRPC Predicts without pause.

It prints the server's RSS before the soak, after each round and at its peak, and the p50 of the
good requests during the soak against their p50 before it. Targets (the serving-hardening issue):
RSS growth under 10 % after the first round; good-request p50 within 1.5x of before.

    python benchmarks/serving_soak.py [--rounds 8] [--max-request-elements 1048576]

The server runs with the limits printed first (``--max-request-elements`` sets the largest valid
request: smaller than the server's default, so that a round takes seconds on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

_RPCS = [
    "/tensorflow.serving.PredictionService/Predict",
    "/tensorflow.serving.PredictionService/Classify",
    "/tensorflow.serving.PredictionService/GetModelMetadata",
    "/tensorflow.serving.ModelService/GetModelStatus",
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
]


_PROBER = r"""
import json, select, sys, time
import grpc
target, path, baseline = sys.argv[1], sys.argv[2], float(sys.argv[3])
request = open(path, "rb").read()
call = grpc.insecure_channel(target).unary_unary("/tensorflow.serving.PredictionService/Predict")
answers = set()
def run(until):
    out = []
    while until is None or time.monotonic() < until:
        t0 = time.monotonic()
        answers.add(call(request, timeout=60))
        out.append((t0, time.monotonic() - t0))
        if until is None and select.select([sys.stdin], [], [], 0)[0]:
            break
    return out
run(time.monotonic() + 1.0)  # warm-up
before = run(time.monotonic() + baseline)
print("ready", flush=True)
during = run(None)
print(json.dumps({"before": before, "during": during, "answers": [a.hex() for a in answers]}))
"""


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (/proc, so no dependency)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class PeakSampler(threading.Thread):
    """Samples a process's RSS every ``interval`` s; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, RuntimeError):
                return

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return self.peak


def _predict_request(name="cnn_mnist", signature="", **inputs) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if signature:
        req.model_spec.signature_name = signature
    for key, proto in inputs.items():
        req.inputs[key].CopyFrom(proto)
    return req


def _shaped(dtype, shape, **values):
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


def malformed_grpc(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """(method, serialized request) pairs the server must refuse."""
    out = []
    for method in _RPCS:
        out.append((method, rng.bytes(64)))
        out.append((method, b"\x0a\xff\xff\xff\x0f"))  # a length prefix past the end
        out.append((method, b"\x0a\x03\x0a\x01\xff"))  # bad UTF-8 in a string field
    big = [
        _predict_request(images=_shaped(tf.float32, [3000, 28, 28, 1])),
        _predict_request(images=_shaped(tf.float32, [50_000_000], float_val=[0.5])),
        _predict_request(images=_shaped(tf.string, [10_000_000], string_val=[b"x"])),
        _predict_request(
            images=_shaped(tf.float32, [-1, 28, 28, 1], tensor_content=bytes(3136))
        ),
        _predict_request(name="n" * 10_000, images=tf.make_tensor_proto(np.zeros((1, 28, 28, 1), np.float32))),
        _predict_request(
            signature="s" * 10_000,
            images=tf.make_tensor_proto(np.zeros((1, 28, 28, 1), np.float32)),
        ),
    ]  # fmt: skip
    out += [(_RPCS[0], r.SerializeToString()) for r in big]
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name, req.model_spec.signature_name = "cnn_mnist", "classify"
    example = req.input.example_list.examples.add()
    example.features.feature["images"].float_list.value.extend([0.5] * 10)
    out.append((_RPCS[1], req.SerializeToString()))
    return out


def malformed_rest(body_limit: int) -> list[tuple[str, bytes]]:
    """(path, body) pairs the server must refuse."""
    row = "[" + ",".join(["0.25"] * 784) + "]"
    rows = (2 * body_limit) // len(row) + 1
    return [
        ("/v1/models/cnn_mnist:predict", ('{"instances":[' + ",".join([row] * rows) + "]}").encode()),
        ("/v1/models/cnn_mnist:predict", b'{"instances":' + b"[" * 900 + b"]" * 900 + b"}"),
        ("/v1/models/cnn_mnist:predict", b'{"instances":[' + b"7" * 5000 + b"]}"),
        ("/v1/models/cnn_mnist:predict", b'{"signature_name":"classify","instances":["hello"]}'),
        ("/v1/models/cnn_mnist:predict", b'{"signature_name":"' + b"s" * 100_000 + b'","instances":[1]}'),
        ("/v1/models/cnn_mnist%0A:predict", b'{"instances":[1]}'),
    ]  # fmt: skip


def _post(port: int, path: str, body: bytes, timeout: float = 120) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code
    except (urllib.error.URLError, ConnectionError):
        return -1  # the server closed the connection mid-upload (counted, not fatal)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--baseline-seconds", type=float, default=5.0)
    p.add_argument("--max-request-elements", type=int, default=1 << 20,
                   help="the server's --max_request_elements: the largest valid request")  # fmt: skip
    p.add_argument("--rest-body-bytes", type=int, default=8 << 20,
                   help="the server's --rest_api_max_body_bytes")  # fmt: skip
    p.add_argument("--malformed-only", action="store_true",
                   help="leave out the largest valid requests (what the refusals alone cost)")  # fmt: skip
    p.add_argument("--old-flags", action="store_true",
                   help="start the server without the limit flags (a server from before them)")  # fmt: skip
    args = p.parse_args()

    import zoo
    from zoo import runtime
    from zoo.export import export_model
    from zoo.serving.testing import ServerProcess

    machine = runtime.describe()
    limits = {
        "max_request_elements": args.max_request_elements,
        "rest_api_max_body_bytes": args.rest_body_bytes,
    }
    print(json.dumps({**machine, "server_limits": limits}), flush=True)
    flags = [] if args.old_flags else [f"--{k}={v}" for k, v in limits.items()]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as base:
        export_model(zoo.load("cnn_mnist"), base)
        server = ServerProcess(
            "--model_name", "cnn_mnist", "--model_base_path", str(Path(base) / "cnn_mnist"),
            "--file_system_poll_wait_seconds", "0", *flags,
        )  # fmt: skip
        pid = server.proc.pid
        try:
            channel = grpc.insecure_channel(
                server.target,
                options=[("grpc.max_send_message_length", 1 << 30),
                         ("grpc.max_receive_message_length", 1 << 30)],
            )  # fmt: skip
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            good = _predict_request(
                images=tf.make_tensor_proto(rng.random((1, 28, 28, 1), dtype=np.float32))
            )
            expected = stub.Predict(good, timeout=60)

            # The good client runs in a process of its own (gRPC only, no TensorFlow), so that
            # this process's work on the big requests does not slow it through the GIL.
            request_file = Path(base) / "good_request.bin"
            request_file.write_bytes(good.SerializeToString())
            prober = subprocess.Popen(
                [sys.executable, "-c", _PROBER, server.target, str(request_file),
                 str(args.baseline_seconds)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert prober.stdout.readline().strip() == "ready", "the good client failed"
            rss_before = rss_mb(pid)

            bad_grpc = malformed_grpc(rng)
            bad_rest = malformed_rest(args.rest_body_bytes)
            rows = args.max_request_elements // 784
            largest = _predict_request(
                images=tf.make_tensor_proto(rng.random((rows, 28, 28, 1), dtype=np.float32))
            )
            row_json = json.dumps([[[0.1234]] * 28] * 28, separators=(",", ":"))
            rest_rows = min(rows, (args.rest_body_bytes - 64) // (len(row_json) + 1))
            largest_rest = ('{"instances":[' + ",".join([row_json] * rest_rows) + "]}").encode()
            raw = {m: channel.unary_unary(m) for m in _RPCS}  # bytes in, bytes out

            sampler = PeakSampler(pid)
            sampler.start()
            heavy: list[tuple[float, float]] = []  # (start, end) of the largest valid requests
            after_round, codes, round_seconds = [], {}, []
            try:
                for _ in range(args.rounds):
                    t0 = time.perf_counter()
                    for method, payload in bad_grpc:
                        try:
                            raw[method](payload, timeout=120)
                            code = "OK"
                        except grpc.RpcError as e:
                            code = e.code().name
                        codes[f"grpc {code}"] = codes.get(f"grpc {code}", 0) + 1
                    for path, body in bad_rest:
                        code = _post(server.rest_port, path, body)
                        codes[f"rest {code}"] = codes.get(f"rest {code}", 0) + 1
                    if args.malformed_only:
                        round_seconds.append(round(time.perf_counter() - t0, 2))
                        after_round.append(round(rss_mb(pid), 1))
                        continue
                    h0 = time.monotonic()
                    n = stub.Predict(largest, timeout=300).outputs["classes"].tensor_shape.dim[0]
                    codes["largest grpc OK"] = codes.get("largest grpc OK", 0) + (n.size == rows)
                    code = _post(server.rest_port, "/v1/models/cnn_mnist:predict", largest_rest)
                    codes[f"largest rest {code}"] = codes.get(f"largest rest {code}", 0) + 1
                    heavy.append((h0, time.monotonic()))
                    round_seconds.append(round(time.perf_counter() - t0, 2))
                    after_round.append(round(rss_mb(pid), 1))
            finally:
                peak = sampler.stop()
                out, _ = prober.communicate("stop\n", timeout=120)
            probed = json.loads(out)
            answers = [predict_pb2.PredictResponse.FromString(bytes.fromhex(h))
                       for h in probed["answers"]]  # fmt: skip
            same = all(a.outputs["classes"] == expected.outputs["classes"] for a in answers)
            alive = stub.Predict(good, timeout=60).outputs["classes"] == expected.outputs["classes"]
        finally:
            code = server.stop()

    before = [x for _, x in probed["before"]]
    during = [x for _, x in probed["during"]]
    starts = [t0 for t0, _ in probed["during"]]
    p50_before = float(np.median(before)) * 1e3
    p50_during = float(np.median(during)) * 1e3
    growth = (after_round[-1] - after_round[0]) / after_round[0]
    # The good requests sent while a largest valid request was in flight, and the others (which
    # overlapped only malformed ones): what the refusals cost against what real work costs.
    overlapped = [
        any(t0 <= h1 and t0 + x >= h0 for h0, h1 in heavy)
        for t0, x in zip(starts, during, strict=True)
    ]
    with_heavy = [x for x, o in zip(during, overlapped, strict=True) if o]
    without = [x for x, o in zip(during, overlapped, strict=True) if not o]
    summary = {
        **machine,
        "server_limits": limits,
        "rounds": args.rounds,
        "requests_per_round": {"malformed_grpc": len(bad_grpc), "malformed_rest": len(bad_rest),
                               "largest_grpc_rows": rows, "largest_rest_rows": rest_rows},
        "status_counts": codes,
        "round_seconds": round_seconds,
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_after_each_round": after_round,
        "rss_mb_peak": round(max(peak, *after_round), 1),
        "rss_growth_after_first_round": round(growth, 4),
        "good_p50_ms_before": round(p50_before, 3),
        "good_p50_ms_during": round(p50_during, 3),
        "good_p50_ratio_during_over_before": round(p50_during / p50_before, 2),
        "good_requests_during": len(during),
        "good_p50_ms_beside_malformed_only": round(float(np.median(without)) * 1e3, 3) if without else None,
        "good_p50_ms_beside_a_largest_valid": round(float(np.median(with_heavy)) * 1e3, 3) if with_heavy else None,
        "good_requests_beside_a_largest_valid": len(with_heavy),
        "good_answers_all_correct": bool(same),
        "server_answers_correctly_after": bool(alive),
        "server_exit_code": code,
        "target_rss_growth_met": growth < 0.10,
        "target_p50_met": p50_during <= 1.5 * p50_before,
    }  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
