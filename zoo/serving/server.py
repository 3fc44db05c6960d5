"""``zoo-serve``: a TF Serving-compatible model server for the zoo's SavedModel exports.

``python serving/server.py --port 8500 --rest_api_port 8501 --model_name NAME
--model_base_path DIR`` (or ``--model_config_file FILE``). The flags are tensorflow_model_server's
own, so a command line, a ``ModelServerConfig`` file, a batching parameters file and any TF
Serving client carry over unchanged.

SIGTERM (and Ctrl-C) stops accepting new requests, lets the ones in flight finish, and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import re
import resource
import signal
import sys
import threading
from pathlib import Path

__all__ = ["main", "build_parser", "parse_model_config", "parse_batching_parameters", "Server"]

log = logging.getLogger("zoo.serving")
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
DEFAULT_REST_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_REQUEST_ELEMENTS = 1 << 24


def _default_max_connections() -> int:
    """1000, or fewer where the file descriptor limit would not hold that many per protocol."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1000
    return max(16, min(1000, (soft - 128) // 2))


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zoo-serve",
        description="Serve SavedModel exports over TF Serving's gRPC and REST APIs.",
    )
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0 picks a free one)")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port; 0 turns REST off")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--model_name", help="name of the single served model")
    p.add_argument("--model_base_path", help="directory holding the model's version folders")
    p.add_argument(
        "--model_config_file", help="text-format ModelServerConfig (tensorflow_serving.config)"
    )
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="how often to look for new versions; 0 loads once")  # fmt: skip
    p.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--batching_parameters_file", help="text-format BatchingParameters")
    p.add_argument("--max_batch_size", type=int, help="batching: rows per merged call")
    p.add_argument("--batch_timeout_micros", type=int, help="batching: longest wait for company")
    p.add_argument("--max_num_load_retries", type=int, default=0, help="accepted for compatibility")
    p.add_argument(
        "--grpc_max_message_bytes",
        type=int,
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help="largest gRPC request/response (default 256 MiB)",
    )
    limits = p.add_argument_group("request limits")
    limits.add_argument(
        "--rest_api_max_body_bytes", type=int, default=None,
        help=f"largest REST request body; larger is refused with 413 (default "
        f"{DEFAULT_REST_MAX_BODY_BYTES >> 20} MiB, or --grpc_max_message_bytes if smaller)",
    )  # fmt: skip
    limits.add_argument(
        "--max_request_elements", type=int, default=DEFAULT_MAX_REQUEST_ELEMENTS,
        help="most tensor elements in one request, all inputs together, over either protocol "
        f"(default {DEFAULT_MAX_REQUEST_ELEMENTS:,}: 64 MiB of float32)",
    )  # fmt: skip
    limits.add_argument(
        "--rest_api_timeout_in_ms", type=int, default=30000,
        help="TF Serving's: the longest a REST call may take once its headers are in: reading "
        "the body (408 past it), then computing the answer (504) (default 30000)",
    )  # fmt: skip
    limits.add_argument(
        "--rest_api_header_timeout_in_ms", type=int, default=5000,
        help="the longest wait for a REST request's headers, from the connection's start or the "
        "previous answer; an idle keep-alive connection is closed after it too (default 5000)",
    )  # fmt: skip
    limits.add_argument(
        "--max_connections", type=int, default=None,
        help="most open connections per protocol; past it a REST connection is answered 503, a "
        "gRPC one refused (default 1000, fewer under a low open-files limit)",
    )  # fmt: skip
    p.add_argument(
        "--model_base_path_roots", default=None,
        help="comma-separated directories that every base path of a HandleReloadConfigRequest "
        "(and of the start-up config) must lie in; default: the parent directory of each "
        "base path configured at start-up",
    )  # fmt: skip
    p.add_argument(
        "--grpc_channel_arguments", default="",
        help="TF Serving's: comma-separated gRPC server arguments, e.g. "
        "grpc.max_connection_age_ms=2000",
    )  # fmt: skip
    p.add_argument("--rest_api_num_threads", type=int, default=0,
                   help="accepted for compatibility (REST runs on the server's event loop)")  # fmt: skip
    p.add_argument("--grpc_max_threads", type=int, default=16)
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads within one op (0: TensorFlow's default, one per core)")  # fmt: skip
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="ops run at once (0: TensorFlow's default)")  # fmt: skip
    p.add_argument("--drain_seconds", type=float, default=30.0, help="SIGTERM grace period")
    return p


def parse_model_config(text: str):
    """A text-format ``ModelServerConfig`` → the core's ``ModelEntry`` list."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ValueError(f"not a text-format ModelServerConfig: {e}") from e
    return config_to_entries(config)


def config_to_entries(config):
    from zoo.serving.core import ModelEntry

    if config.WhichOneof("config") != "model_config_list":
        raise ValueError("only model_config_list configs are supported")
    entries = []
    for mc in config.model_config_list.config:
        if mc.model_platform not in ("", "tensorflow"):
            raise ValueError(f"model {mc.name}: platform {mc.model_platform!r} is not served")
        policy = mc.model_version_policy
        which = policy.WhichOneof("policy_choice")
        entry = ModelEntry(name=mc.name, base_path=mc.base_path, labels=dict(mc.version_labels))
        if which == "all":
            entry.policy = "all"
        elif which == "specific":
            entry.policy, entry.versions = "specific", tuple(policy.specific.versions)
        else:
            entry.num_versions = policy.latest.num_versions or 1
        entries.append(entry)
    return entries


_BATCHING_FIELD = re.compile(r"(\w+)\s*\{\s*value\s*:\s*([^}\s]+)\s*\}")


def parse_batching_parameters(text: str):
    """TF Serving's text-format ``BatchingParameters`` (``max_batch_size { value: 32 }``, ...).

    Its proto is not part of tensorflow-serving-api, so the few fields that matter are read here.
    """
    from zoo.serving.core import BatchingOptions

    # Other fields (num_batch_threads, ...) are accepted and ignored: batches here run on the
    # model executor, sized by --grpc_max_threads.
    known = {"max_batch_size", "batch_timeout_micros", "max_enqueued_batches"}
    values = {}
    for key, value in _BATCHING_FIELD.findall(text):
        if key in known:
            values[key] = int(value)
    return BatchingOptions(**values)


def parse_grpc_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """TF Serving's ``--grpc_channel_arguments``: ``key=value,...``, integers as integers."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--grpc_channel_arguments takes key=value pairs, got {item!r}")
        try:
            out.append((key, int(value)))
        except ValueError:
            out.append((key, value))
    return out


def base_path_roots(args, entries) -> list[str]:
    """Where HandleReloadConfigRequest may load models from (``--model_base_path_roots``, or the
    parent directory of every base path the server starts with)."""
    if args.model_base_path_roots:
        return [str(Path(r).expanduser().resolve()) for r in args.model_base_path_roots.split(",")]
    return sorted({str(Path(e.base_path).expanduser().resolve().parent) for e in entries})


class Server:
    """The gRPC (``grpc.aio``) and REST (aiohttp) servers over one model manager.

    One asyncio loop, in its own thread, runs the gRPC services, the REST server and the
    batchers, so both protocols share batches; model calls run on an executor of
    ``--grpc_max_threads`` threads (or inline on the loop for a lone request).
    """

    def __init__(self, args):
        import asyncio

        import grpc

        from zoo.serving.core import (
            BatchingOptions,
            ModelEntry,
            ModelExecutor,
            ModelManager,
            ServingLimits,
            confine_base_paths,
        )
        from zoo.serving.grpc_service import add_services

        if args.model_config_file:
            entries = parse_model_config(Path(args.model_config_file).read_text())
        else:
            base = str(Path(args.model_base_path).resolve())
            entries = [ModelEntry(name=args.model_name, base_path=base)]
        batching = None
        if args.enable_batching:
            batching = (
                parse_batching_parameters(Path(args.batching_parameters_file).read_text())
                if args.batching_parameters_file
                else BatchingOptions()
            )
            overrides = {
                k: getattr(args, k)
                for k in ("max_batch_size", "batch_timeout_micros")
                if getattr(args, k) is not None
            }
            batching = BatchingOptions(**{**batching.__dict__, **overrides})
        for flag in ("max_request_elements", "rest_api_timeout_in_ms",
                     "rest_api_header_timeout_in_ms", "grpc_max_message_bytes"):  # fmt: skip
            if getattr(args, flag) <= 0:
                raise ValueError(f"--{flag} must be positive, got {getattr(args, flag)}")
        channel_arguments = parse_grpc_channel_arguments(args.grpc_channel_arguments)
        max_connections = args.max_connections or _default_max_connections()
        roots = base_path_roots(args, entries)
        if args.model_base_path_roots:  # the start-up config keeps to them too
            confine_base_paths(entries, [Path(r) for r in roots])
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self.loop.run_forever, name="serving-loop", daemon=True
        )
        self._loop_thread.start()
        self.executor = ModelExecutor(max_workers=args.grpc_max_threads)
        self.manager = ModelManager(
            entries,
            poll_wait_seconds=args.file_system_poll_wait_seconds,
            batching=batching,
            loop=self.loop,
            executor=self.executor,
            base_path_roots=roots,
        )
        limits = ServingLimits(max_request_elements=args.max_request_elements)
        limit = args.grpc_max_message_bytes
        header_ms = args.rest_api_header_timeout_in_ms

        async def make_grpc_server():
            server = grpc.aio.server(
                options=[
                    ("grpc.max_send_message_length", limit),
                    ("grpc.max_receive_message_length", limit),
                    ("grpc.max_allowed_incoming_connections", max_connections),
                    ("grpc.server_handshake_timeout_ms", header_ms),
                    *channel_arguments,
                ]
            )
            add_services(server, self.manager, config_to_entries, limits)
            return server, server.add_insecure_port(f"{args.host}:{args.port}")

        self.grpc, self.grpc_port = self._on_loop(make_grpc_server())
        if self.grpc_port == 0:
            raise OSError(f"cannot bind gRPC to {args.host}:{args.port}")
        self.rest = None
        if args.rest_api_port:
            from zoo.serving.rest import RestLimits, RestServer

            body = args.rest_api_max_body_bytes or min(DEFAULT_REST_MAX_BODY_BYTES, limit)
            self.rest = RestServer(
                self.manager,
                args.host,
                args.rest_api_port,
                loop=self.loop,
                limits=RestLimits(
                    max_body_bytes=body,
                    header_timeout=header_ms / 1000,
                    request_timeout=args.rest_api_timeout_in_ms / 1000,
                    max_connections=max_connections,
                    max_request_elements=args.max_request_elements,
                ),
            )
        self.limits = {
            "grpc_max_message_bytes": limit,
            "rest_api_max_body_bytes": body if self.rest else None,
            "max_request_elements": args.max_request_elements,
            "rest_api_timeout_in_ms": args.rest_api_timeout_in_ms,
            "rest_api_header_timeout_in_ms": header_ms,
            "max_connections": max_connections,
            "model_base_path_roots": roots,
        }
        self.host = args.host
        self.drain_seconds = args.drain_seconds
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False

    def _on_loop(self, coro):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def start(self) -> None:
        log.info("limits: %s", ", ".join(f"{k}={v}" for k, v in self.limits.items()))
        self.manager.start()
        self._on_loop(self.grpc.start())
        print(f"Running gRPC ModelServer at {self.host}:{self.grpc_port} ...", flush=True)
        if self.rest is not None:
            self.rest.start()
            print(f"Exporting HTTP/REST API at:{self.host}:{self.rest.port} ...", flush=True)

    def stop(self) -> None:
        """Stop accepting, finish what is in flight (up to drain_seconds), release the models."""
        with self._stop_lock:  # a second signal during the drain does not start another stop
            if self._stopping:
                return
            self._stopping = True
        try:
            if self.rest is not None:
                self.rest.stop(timeout=self.drain_seconds)
            self._on_loop(self.grpc.stop(grace=self.drain_seconds))  # drains in-flight RPCs
            self.manager.stop()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.executor.shutdown(wait=True)
        finally:
            self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()


MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


def fix_malloc_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold (and the heap trim threshold) at ``threshold`` bytes.

    glibc raises its mmap threshold after each large block it frees, up to 32 MiB, so once a big
    request has come and gone, blocks of a few MB (a request's tensors, its JSON, TensorFlow's
    scratch buffers for a large batch) come from the heap, and each thread's heap keeps what is
    freed there. That is what kept the serving-hardening soak's RSS growing round after round;
    pinned, blocks above ``threshold`` are mapped and given back when freed, and the soak's RSS
    stays flat. Below 4 MiB, TensorFlow's per-call scratch for a batch-1 convolution (about
    1 MB) would be mapped and faulted in on every call (+0.3 ms). A user's own
    ``MALLOC_MMAP_THRESHOLD_`` wins. True if the threshold was set."""
    import ctypes
    import os

    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        return bool(
            libc.mallopt(m_mmap_threshold, threshold) and libc.mallopt(m_trim_threshold, threshold)
        )
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False


def main(argv: list[str] | None = None) -> int:
    from zoo.cli_utils import announce_runtime, start_cli

    start_cli("zoo-serve")
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.model_config_file) == bool(args.model_name or args.model_base_path):
        parser.error("give --model_name with --model_base_path, or --model_config_file")
    if args.model_name and not args.model_base_path:
        parser.error("--model_name needs --model_base_path")
    if args.model_base_path and not args.model_name:
        parser.error("--model_base_path needs --model_name")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import tensorflow as tf

    # Before anything runs: TensorFlow fixes its thread pools at first use.
    tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    announce_runtime("zoo-serve")
    try:
        server = Server(args)
    except (ValueError, OSError) as e:
        print(f"zoo-serve: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        from zoo.serving.core import ServingError

        if isinstance(e, ServingError):
            print(f"zoo-serve: error: {e.message}", file=sys.stderr)
            return 1
        raise

    def on_signal(signum, frame):
        log.info("signal %d: draining in-flight requests, then exiting", signum)
        threading.Thread(target=server.stop, name="shutdown").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # After the start-up loads (which allocate and free many large blocks), before traffic.
    if fix_malloc_mmap_threshold():
        log.info("malloc: mmap threshold pinned at %d bytes", MMAP_THRESHOLD_BYTES)
    server.start()
    server.wait()  # returns once stop() has drained everything
    return 0


if __name__ == "__main__":
    sys.exit(main())
