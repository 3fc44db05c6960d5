"""Serving cost of ``cnn_mnist`` over gRPC, measured in one run against the in-process call.

1. Latency (p50, p99) of ``serving_default`` at batch 1 and batch 32: the SavedModel called in
   this process, then gRPC Predict through the official stubs to ``zoo-serve`` on loopback.
2. Throughput with 8 concurrent clients sending batch-1 requests, to a server without and with
   ``--enable_batching``.

Targets (the serving issue): p50 at batch 1 within 1.5x of the in-process call or at most 1 ms
above it; batching at least 2x the throughput at 8 clients. Client and server share this
machine's cores, so the figures include the clients' own cost.

It prints the CPU and TensorFlow's oneDNN mode first; the server subprocesses inherit the mode.

    python benchmarks/serving.py [--calls 300] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


def _time(fn, calls: int) -> list[float]:
    for _ in range(20):
        fn()
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _request(x: np.ndarray) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "cnn_mnist"
    req.inputs["images"].CopyFrom(tf.make_tensor_proto(x))
    return req


def _throughput(target: str, clients: int, seconds: float) -> float:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
    x = np.random.default_rng(0).random((1, 28, 28, 1), dtype=np.float32)
    for _ in range(10):
        stub.Predict(_request(x))
    stop = time.perf_counter() + seconds
    counts = [0] * clients

    def client(i):
        req = _request(x)
        while time.perf_counter() < stop:
            stub.Predict(req)
            counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=300, help="timed calls per latency figure")
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    p.add_argument("--clients", type=int, default=8)
    args = p.parse_args()

    import zoo
    from zoo import runtime
    from zoo.export import export_model
    from zoo.serving.testing import ServerProcess

    machine = runtime.describe()
    print(json.dumps(machine), flush=True)

    with tempfile.TemporaryDirectory() as base:
        path = export_model(zoo.load("cnn_mnist"), base)
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        rng = np.random.default_rng(0)
        batches = {b: rng.random((b, 28, 28, 1), dtype=np.float32) for b in (1, 8, 32)}
        results: dict[str, dict] = {}
        for b, x in batches.items():
            xt = tf.constant(x)
            results[f"in_process_batch{b}"] = _percentiles(
                _time(lambda xt=xt: serve(images=xt), args.calls)
            )

        model_args = (
            "--model_name",
            "cnn_mnist",
            "--model_base_path",
            str(Path(base) / "cnn_mnist"),
        )
        with ServerProcess(*model_args, rest=False) as server:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(
                grpc.insecure_channel(server.target)
            )
            for b, x in batches.items():
                if b == 8:
                    continue  # in-process only: what a full batch of 8 costs the model
                req = _request(x)
                results[f"grpc_batch{b}"] = _percentiles(
                    _time(lambda req=req: stub.Predict(req), args.calls)
                )
            plain = _throughput(server.target, args.clients, args.seconds)
        # The same with one thread per op: less contention with the clients for 2 cores.
        tuned = (*model_args, "--tensorflow_intra_op_parallelism", "1")
        with ServerProcess(*tuned, rest=False) as server:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(
                grpc.insecure_channel(server.target)
            )
            req = _request(batches[1])
            results["grpc_batch1_intra_op_1"] = _percentiles(
                _time(lambda: stub.Predict(req), args.calls)
            )
        with ServerProcess(*model_args, "--enable_batching", "--max_batch_size", "8",
                           "--batch_timeout_micros", "3000", rest=False) as server:  # fmt: skip
            batched = _throughput(server.target, args.clients, args.seconds)

    b1, g1 = results["in_process_batch1"]["p50_ms"], results["grpc_batch1"]["p50_ms"]
    summary = {
        **machine,
        **results,
        # Batching saves less than its row count: a batch of 8 costs this much more than one row.
        "in_process_p50_batch8_over_batch1": round(results["in_process_batch8"]["p50_ms"] / b1, 2),
        "p50_batch1_ratio_grpc_over_in_process": round(g1 / b1, 2),
        "p50_batch1_overhead_ms": round(g1 - b1, 3),
        "p50_batch1_overhead_ms_intra_op_1": round(
            results["grpc_batch1_intra_op_1"]["p50_ms"] - b1, 3
        ),
        "p50_batch32_ratio_grpc_over_in_process": round(
            results["grpc_batch32"]["p50_ms"] / results["in_process_batch32"]["p50_ms"], 2
        ),
        f"throughput_{args.clients}_clients_rps": round(plain, 1),
        f"throughput_{args.clients}_clients_batching_rps": round(batched, 1),
        "throughput_ratio_batching_over_plain": round(batched / plain, 2),
        "target_latency_met": g1 <= 1.5 * b1 or g1 - b1 <= 1.0,
        "target_latency_met_intra_op_1": results["grpc_batch1_intra_op_1"]["p50_ms"] - b1 <= 1.0,
        "target_batching_met": batched >= 2 * plain,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
