"""TF Serving's REST API over the serving core, on aiohttp (on the server's asyncio loop).

Endpoints, request and response formats follow tensorflow_model_server's REST handler
(``tensorflow_serving/model_servers/http_rest_api_handler.cc``, ``http_rest_api_util.cc`` and
``http_server.cc`` in tensorflow/serving); the JSON <-> tensor codec is :mod:`zoo.serving.json_tensor`.

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

HTTP itself (request parsing, chunked bodies, keep-alive, the lingering read after an early
answer) is aiohttp's. Its settings bound every connection (:class:`RestLimits`): the request head
must arrive within ``header_timeout`` of the connection's start or of the previous answer (so
an idle keep-alive connection is closed after it too); the body, and then the answer, within
``request_timeout`` (408, then 504); a body over ``max_body_bytes`` is refused with 413 before it
is read; past ``max_connections`` open connections a new one is answered 503 and closed. A
request aiohttp cannot parse (a bad chunk size, TLS or HTTP/2 bytes, a conflicting
Content-Length) is answered with a 400 JSON error like any other, and logged in one line.
A model name holding anything but letters, digits, ``_``, ``-`` and ``.`` is refused with 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc
from aiohttp import web, web_protocol, web_server
from aiohttp.http_exceptions import HttpProcessingError

from zoo.serving.core import (
    DEFAULT_MAX_REQUEST_ELEMENTS,
    DEFAULT_SIGNATURE,
    ServingError,
    ServingLimits,
    bounded_message,
    check_model_name,
    shown,
    too_large,
)
from zoo.serving.json_tensor import parse_json, predict_inputs, predict_response

log = logging.getLogger("zoo.serving.rest")

__all__ = ["RestServer", "RestLimits", "http_status_for"]


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
_MAX_ERROR_BYTES = 4096  # an error body echoes at most this much
_OFFLOAD_BYTES = 256 * 1024  # bodies this large are decoded off the loop (gRPC keeps flowing)


def http_status_for(code: grpc.StatusCode) -> int:
    """The HTTP status TF Serving's REST server answers a gRPC status code with."""
    return _HTTP_STATUS.get(code, 500)


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _json_bytes(status: int, body: Any, *, close: bool = False) -> web.Response:
    response = web.Response(
        status=status, body=json.dumps(body).encode("utf-8"), content_type="application/json"
    )
    if close:
        response.force_close()
    return response


def _error(status: int, message: str, *, close: bool = False) -> web.Response:
    return _json_bytes(status, {"error": bounded_message(message, _MAX_ERROR_BYTES)}, close=close)


@dataclass(frozen=True)
class RestLimits:
    """What one REST connection may cost (the ``--rest_api_*`` flags of ``zoo-serve``)."""

    max_body_bytes: int = 8 * 1024 * 1024
    header_timeout: float = 5.0  # seconds, for the request head (and an idle keep-alive)
    request_timeout: float = 30.0  # seconds, for the body and then the answer
    max_connections: int = 1024
    max_request_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS


# -- connections: aiohttp's protocol, with JSON errors and a connection cap -----------------------
class _Protocol(web_protocol.RequestHandler):
    """aiohttp's HTTP/1.1 protocol; a request it cannot parse gets a JSON 400, logged in a line."""

    def handle_error(self, request, status=500, exc=None, message=None):
        if isinstance(exc, HttpProcessingError):
            text = exc.message or HTTPStatus(status).phrase
        else:
            text = message or HTTPStatus(status).phrase
        text = " ".join(str(text).split())[:200]
        log.info("REST: malformed HTTP request from %s: %d %s", request.remote, status, text)
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; the connection is dropped")
        return _error(status, f"Malformed HTTP request: {text}", close=True)

    def connection_lost(self, exc) -> None:
        manager = self._manager
        super().connection_lost(exc)
        if manager is not None:
            manager.open_connections -= 1


class _Refused(asyncio.Protocol):
    """A connection past the cap: 503 at once, a half-close, then closed within half a second
    (reading what the client sends meanwhile, so the answer is not lost to a reset)."""

    def __init__(self, server: _WebServer):
        self.server = server
        self.transport = None
        self._timer = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        server = self.server
        server.refused_open += 1
        body = json.dumps(
            {
                "error": f"The server has {server.max_connections} open REST connections, its "
                "limit (--max_connections); try again later"
            }
        ).encode()
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        if server.refused_open > server.max_connections or not transport.can_write_eof():
            transport.close()  # a flood: no lingering
            return
        transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(0.5, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the client is done: close

    def connection_lost(self, exc) -> None:
        self.server.refused_open -= 1
        if self._timer is not None:
            self._timer.cancel()


class _WebServer(web_server.Server):
    """aiohttp's low-level server, counting open connections against ``max_connections``."""

    def __init__(self, handler, *, max_connections: int, **kwargs):
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.open_connections = 0
        self.refused_open = 0

    def __call__(self):
        if self.open_connections >= self.max_connections:
            return _Refused(self)
        self.open_connections += 1
        return _Protocol(self, loop=self._loop, **self._kwargs)


# -- the REST server -------------------------------------------------------------------------------
class RestServer:
    """TF Serving's REST API for a :class:`~zoo.serving.core.ModelManager`.

    ``RestServer(manager, "127.0.0.1", 0, max_body_bytes=64 << 20).start()`` picks a free port
    (``.port``). With ``loop`` it serves on that (running) asyncio loop, the one the gRPC
    services and the batchers run on; without, on a loop of its own in a background thread.
    :meth:`stop` stops accepting connections and waits for in-flight requests.
    """

    def __init__(
        self,
        manager,
        host: str = "127.0.0.1",
        port: int = 8501,
        max_body_bytes: int | None = None,
        *,
        limits: RestLimits | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        limits = limits or RestLimits()
        if max_body_bytes is not None:
            limits = RestLimits(**{**limits.__dict__, "max_body_bytes": int(max_body_bytes)})
        self.manager = manager
        self.host = host
        self.port = int(port)
        self.limits = limits
        self.max_body_bytes = limits.max_body_bytes
        self._elements = ServingLimits(limits.max_request_elements)
        self._loop = loop
        self._own_loop = loop is None
        self._thread: threading.Thread | None = None
        self._runner: web.BaseRunner | None = None
        self._web: _WebServer | None = None
        self._pool = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="rest")
        self._inflight = 0
        self._stopping = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- lifetime ---------------------------------------------------------------------------------
    def _on_loop(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> RestServer:
        if self._runner is not None:
            return self
        if self._own_loop:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="rest-loop", daemon=True
            )
            self._thread.start()
        self._on_loop(self._start())
        log.info("REST API listening on %s", self.address)
        return self

    async def _start(self) -> None:
        limits = self.limits
        loop = asyncio.get_running_loop()

        def make_request(message, payload, protocol, writer, task):
            # aiohttp's own body limit: a body read past it raises its 413 (handled below).
            return web.BaseRequest(
                message, payload, protocol, writer, task, loop,
                client_max_size=limits.max_body_bytes,
            )  # fmt: skip

        self._web = _WebServer(
            self._handle,
            request_factory=make_request,
            max_connections=limits.max_connections,
            # aiohttp closes a connection whose request head has not arrived this long after
            # the connection opened or the previous answer went out: the header deadline.
            keepalive_timeout=limits.header_timeout,
            lingering_time=1.0,  # after an early answer (413), read and drop the rest this long
            access_log=None,
        )
        self._runner = web.ServerRunner(self._web, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=128, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Stop accepting, let in-flight requests finish (up to ``timeout`` s); True if all did."""
        if self._runner is None:
            return True
        drained = self._on_loop(self._stop(timeout))
        if self._own_loop:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
            self._loop = None
        self._pool.shutdown(wait=False)
        return drained

    async def _stop(self, timeout: float | None) -> bool:
        self._stopping = True
        runner, self._runner = self._runner, None
        for site in list(runner.sites):
            await site.stop()  # the listening socket closes: no new connections
        self._web.pre_shutdown()  # idle keep-alive connections close, busy ones after answering
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._inflight and (deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(0.01)
        drained = self._inflight == 0
        await runner.cleanup()
        return drained

    def __enter__(self) -> RestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- requests ---------------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self._inflight += 1
        try:
            deadline = time.monotonic() + self.limits.request_timeout
            unread = [False]  # set when the answer goes out before the body was read
            status, body = await self._respond(request, deadline, unread)
        finally:
            self._inflight -= 1
        if isinstance(body, web.StreamResponse):
            if self._stopping:
                body.force_close()
            return body
        response = _json_bytes(status, body, close=self._stopping or status == 413)
        if unread[0]:
            # Answered before the body was read: send the answer and half-close, so a client
            # that waits for it sees it end; aiohttp then reads and drops what the client still
            # sends for up to its lingering time (closing with unread data would reset the
            # connection and could destroy the answer before the client reads it).
            await response.prepare(request)
            await response.write_eof()
            transport = request.transport
            if transport is not None and transport.can_write_eof():
                transport.write_eof()
        return response

    async def _respond(self, request: web.BaseRequest, deadline: float, unread: list) -> tuple:
        method = request.method
        path = urlsplit(request.raw_path).path
        failure = None
        try:
            if request.version < (1, 0) or request.version > (1, 1):
                raise _invalid(f"HTTP/{request.version[0]}.{request.version[1]} is not served")
            if not _V1_RE.fullmatch(path):
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Not found: {method} {shown(path, 200)}"
                )
            body = b""
            if method in ("POST", "PUT", "PATCH") or request.content_length:
                body = await self._read_body(request, deadline, unread)
            return await self._route(method, path, body, deadline)
        except ServingError as e:
            # Only the status and text leave the except block (no traceback kept alive).
            failure = (e.http_status or http_status_for(e.code), e.message)
        except Exception as e:  # noqa: BLE001 - every error becomes a status; the server stays up
            log.exception("REST %s %s failed", method, shown(path, 200))
            failure = (500, f"{type(e).__name__}: {e}")
        return failure[0], {"error": bounded_message(failure[1], _MAX_ERROR_BYTES)}

    async def _read_body(self, request: web.BaseRequest, deadline: float, unread: list) -> bytes:
        limit = self.limits.max_body_bytes
        size = request.content_length
        if size is not None and size > limit:
            unread[0] = True
            raise too_large(
                f"Request body of {size} bytes exceeds the server's limit of {limit} bytes "
                f"(--rest_api_max_body_bytes)"
            )
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            return await asyncio.wait_for(request.read(), max(0.0, deadline - time.monotonic()))
        except web.HTTPRequestEntityTooLarge:
            message = (
                f"Request body larger than the server's limit of {limit} bytes "
                f"(--rest_api_max_body_bytes)"
            )
        except asyncio.TimeoutError:
            unread[0] = True
            raise ServingError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"The request body did not arrive within {self.limits.request_timeout:g} s "
                f"(--rest_api_timeout_in_ms)",
                http_status=408,
            ) from None
        raise too_large(message)

    async def _offload(self, big: bool, fn, *args):
        """``fn(*args)``: on a worker thread for big payloads, so the loop keeps serving."""
        if not big:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _route(self, method: str, path: str, body: bytes, deadline: float):
        malformed = _invalid(f"Malformed request: {method} {shown(path, 200)[1:-1]}")
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
            return 200, await self._predict(name, version, label, body, deadline)
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
    async def _predict(self, name, version, label, body: bytes, deadline: float):
        big = len(body) > _OFFLOAD_BYTES
        doc = await self._offload(big, parse_json, body)
        signature = doc.get("signature_name", "")
        if type(signature) is not str:
            raise _invalid(
                "JSON Value not formatted correctly: 'signature_name' key must be a string value."
            )
        signature = signature or DEFAULT_SIGNATURE
        # acquire(): resolve and mark in flight in one step, so the version is not retired
        # between the two.
        with self.manager.acquire(name, version, label) as servable:
            specs = servable.input_specs(signature)
            numbers_only = b"true" not in body and b"false" not in body
            inputs, fmt = await self._offload(
                big, predict_inputs, doc, specs, signature, self._elements, numbers_only
            )
            del doc
            run_async = getattr(servable, "run_async", None)
            if run_async is not None:
                call = run_async(signature, inputs)
            else:  # a servable without the loop's batching: its blocking run() off the loop
                loop = asyncio.get_running_loop()
                call = loop.run_in_executor(self._pool, servable.run, signature, inputs)
            try:
                outputs = await asyncio.wait_for(call, max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise ServingError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"The answer was not ready within {self.limits.request_timeout:g} s "
                    f"(--rest_api_timeout_in_ms)",
                ) from None
        rows = sum(getattr(v, "size", 1) for v in outputs.values())
        return await self._offload(big or rows > 65536, _encode_response, outputs, fmt)

    def _metadata(self, name: str, version: int | None, label: str | None) -> dict:
        from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

        servable = self.manager.resolve(name, version, label)
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

        manager = self.manager
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


def _encode_response(outputs, fmt: str) -> web.Response:
    return _json_bytes(200, predict_response(outputs, fmt))


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


def _model_info(name: str, version: str | None, label: str | None):
    """ParseModelInfo: URL-decode name and label, parse the version, refuse unsafe names."""
    name = check_model_name(unquote(name))
    parsed_version = None
    if version:
        if len(version) > 19 or int(version) > _INT64_MAX:
            raise _invalid(f"Failed to convert version: {shown(version)} to numeric.")
        parsed_version = int(version)
    return name, parsed_version, (unquote(label) if label else None)
