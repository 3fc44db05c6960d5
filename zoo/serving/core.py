"""The serving core: loaded versions (servables), the version manager, request batching.

Protocol-free: the gRPC services (``grpc_service.py``) and the REST layer (``rest.py``) both call
:meth:`ModelManager.resolve` and :meth:`Servable.run`, and turn :class:`ServingError` into their
own status codes.

Version lifecycle, as TF Serving reports it through GetModelStatus:
START → LOADING → AVAILABLE → UNLOADING → END. A new version directory is loaded and warmed up
(one call per signature) before it is routed to; the version it replaces is unloaded only after
its in-flight requests have finished. A version that fails to load (half-written, corrupt) ends
in END with its error, and the serving version stays as it was; it is tried again when the
directory's contents change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf

log = logging.getLogger("zoo.serving")

__all__ = [
    "ServingError",
    "ServingLimits",
    "BatchingOptions",
    "ModelEntry",
    "Servable",
    "ModelManager",
    "ModelExecutor",
    "check_model_name",
    "shown",
    "bounded_message",
]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MAX_NAME_CHARS = 255  # a directory name, as the model's base path holds it
DEFAULT_SIGNATURE = "serving_default"
DEFAULT_MAX_REQUEST_ELEMENTS = 1 << 24  # 16,777,216 values: 64 MiB of float32


class ServingError(Exception):
    """A request error with the gRPC status code it maps to.

    ``http_status`` overrides the REST status TF Serving's table gives ``code`` (413 for a
    request over a size limit, which gRPC reports as RESOURCE_EXHAUSTED).
    """

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True)
class ServingLimits:
    """Per-request limits both protocols apply before any tensor is built."""

    max_request_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS

    def check_elements(self, elements: int) -> None:
        if elements > self.max_request_elements:
            raise too_large(
                f"The request holds {elements} tensor elements, more than this server's limit "
                f"of {self.max_request_elements} (--max_request_elements)"
            )


def too_large(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, http_status=413)


def shown(text, limit: int = 64) -> str:
    """``repr(text)`` cut to about ``limit`` characters, for echoing a caller's string in an
    error: a 10,000-character name must not make the error itself too large to deliver."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def bounded_message(text: str, max_bytes: int = 2048) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8. gRPC sends the message percent-encoded in
    a trailer, and a client refuses trailers above 8 KiB (``grpc.max_metadata_size``), which
    would hide the real status behind RESOURCE_EXHAUSTED."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 40].decode("utf-8", "ignore") + f"... ({len(data)} bytes in all)"


def check_model_name(name: str) -> str:
    """Refuse names that could reach outside a base path (``../x``, ``a/b``, empty, a newline)."""
    if (
        not name
        or len(name) > _MAX_NAME_CHARS
        or not _NAME_RE.fullmatch(name)  # not match(): "$" would accept a trailing newline
        or ".." in name
    ):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Invalid model name {shown(name)}: a model name is 1 to {_MAX_NAME_CHARS} letters, "
            f"digits, '_', '-' and '.' (no path characters, no whitespace)",
        )
    return name


def _spec_str(spec: tf.TensorSpec) -> str:
    dims = ", ".join("None" if d is None else str(d) for d in spec.shape.as_list())
    return (
        f"TensorSpec(shape=({dims}{',' if spec.shape.rank == 1 else ''}), dtype={spec.dtype.name})"
    )


@dataclass(frozen=True)
class BatchingOptions:
    """Server-side batching, as TF Serving's ``BatchingParameters``."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 1000


class ModelExecutor:
    """Where the server's model calls run: a thread pool, or the loop itself for a lone request.

    Handing a call to a pool thread and back costs about 0.2 ms, a quarter of a batch-1
    ``cnn_mnist`` call. So a call that arrives while no other call is running, and more than
    half a call's duration after the previous one ended (sparse traffic: one client, or a batch
    timer firing; a request queued behind the previous call arrives right after it), runs
    inline on the asyncio loop. Under concurrent traffic calls go to the pool, so the loop keeps
    reading requests and gathering batches while models run.
    """

    def __init__(self, max_workers: int):
        self.pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="model")
        self._busy = 0
        self._last_end = 0.0
        self._call_seconds = 0.0  # moving average of call durations

    async def run(self, fn, *args):
        start = time.perf_counter()
        sparse = self._busy == 0 and start - self._last_end > 0.5 * self._call_seconds
        self._busy += 1
        try:
            if sparse:
                return fn(*args)
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            self._busy -= 1
            self._last_end = time.perf_counter()
            self._call_seconds += 0.2 * (self._last_end - start - self._call_seconds)

    def shutdown(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait)


class _Batcher:
    """Merges concurrent requests to one signature into calls of up to ``max_batch_size`` rows.

    Runs on the server's asyncio loop: a request waits at most ``batch_timeout_micros`` for
    company, requests are grouped by their non-batch shapes, and the merged call runs on the
    model executor, so the loop keeps gathering the next batch meanwhile. Each caller gets its own
    rows back.
    """

    def __init__(self, fn, options: BatchingOptions, loop, executor):
        self._fn, self._options, self._loop, self._executor = fn, options, loop, executor
        self._pending: dict[tuple, list] = {}
        self._rows: dict[tuple, int] = {}
        self._timers: dict[tuple, asyncio.TimerHandle] = {}
        self._queued_rows = 0

    @staticmethod
    def _key(inputs):
        return tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(inputs.items()))

    async def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        opts = self._options
        rows = next(iter(inputs.values())).shape[0]
        if self._queued_rows + rows > opts.max_batch_size * opts.max_enqueued_batches:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, "The batch scheduling queue is full")
        key = self._key(inputs)
        if self._pending.get(key) and self._rows[key] + rows > opts.max_batch_size:
            self._flush(key)  # this request would overflow the open batch: close it first
        future = self._loop.create_future()
        self._pending.setdefault(key, []).append((inputs, rows, future))
        self._rows[key] = self._rows.get(key, 0) + rows
        self._queued_rows += rows
        if self._rows[key] >= opts.max_batch_size:
            self._flush(key)
        elif key not in self._timers:
            self._timers[key] = self._loop.call_later(
                opts.batch_timeout_micros / 1e6, self._flush, key
            )
        return await future

    def _flush(self, key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        items = self._pending.pop(key, [])
        self._rows.pop(key, None)
        if items:
            self._loop.create_task(self._run(items))

    async def _run(self, items) -> None:
        self._queued_rows -= sum(rows for _, rows, _ in items)
        try:
            if len(items) == 1:
                merged = items[0][0]
            else:
                merged = {k: np.concatenate([i[0][k] for i in items]) for k in items[0][0]}
            outs = await self._executor.run(self._fn, merged)
        except Exception as e:  # noqa: BLE001 - each caller gets the error
            for _, _, future in items:
                if not future.done():
                    future.set_exception(e)
            return
        start = 0
        for _, rows, future in items:
            if not future.done():
                future.set_result({k: v[start : start + rows] for k, v in outs.items()})
            start += rows


class Servable:
    """One loaded version of one model: its signatures, their specs, and thread-safe calls."""

    def __init__(self, name: str, version: int, path: str | os.PathLike,
                 batching: BatchingOptions | None = None, loop=None, executor=None):  # fmt: skip
        """``loop``/``executor``: the server's asyncio loop and its :class:`ModelExecutor`.
        Without a loop, calls run directly in the caller's thread and batching is off."""
        self.name, self.version, self.path = name, int(version), str(path)
        self._loaded = tf.saved_model.load(self.path)
        self._fns = dict(self._loaded.signatures)
        self._inputs = {k: dict(f.structured_input_signature[1]) for k, f in self._fns.items()}
        self._outputs = {k: dict(f.structured_outputs) for k, f in self._fns.items()}
        # (numpy dtype or None for strings, dims or None for unknown rank), read once: the TF
        # spec objects are slow to query on every request.
        self._fast_specs = {
            sig: {
                k: (
                    None if s.dtype == tf.string else np.dtype(s.dtype.as_numpy_dtype),
                    None if s.shape.rank is None else s.shape.as_list(),
                )
                for k, s in specs.items()
            }
            for sig, specs in self._inputs.items()
        }
        self._dtype_enums = {
            sig: {k: s.dtype.as_datatype_enum for k, s in specs.items()}
            for sig, specs in self._inputs.items()
        }
        self._signature_defs = _read_signature_defs(self.path)
        self._loop, self._executor = loop, executor
        self._batchers: dict[str, _Batcher] = {}
        if batching is not None and loop is not None:
            for sig in self._fns:
                if self._batchable(sig):
                    self._batchers[sig] = _Batcher(
                        lambda inputs, sig=sig: self._call(sig, inputs), batching, loop, executor
                    )
        self.inflight = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def _batchable(self, sig: str) -> bool:
        specs = list(self._inputs[sig].values()) + list(self._outputs[sig].values())
        return all(s.shape.rank and s.shape[0] is None for s in specs)

    # -- description ------------------------------------------------------------------------------
    def signature_names(self) -> list[str]:
        return sorted(self._fns)

    def _check_signature(self, signature: str) -> None:
        if signature not in self._fns:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Serving signature name: {shown(signature)} not found in signature def; "
                f"{self.name} version {self.version} has {self.signature_names()}",
            )

    def fast_specs(self, signature: str) -> dict[str, tuple[np.dtype | None, list | None]]:
        """Per input: (numpy dtype, or None for DT_STRING; dims with None for unknown, or None
        for an unknown rank). Cheap to call per request, unlike the TensorSpecs."""
        self._check_signature(signature)
        return self._fast_specs[signature]

    def takes_serialized(self, signature: str) -> bool:
        """Whether every input is DT_STRING: serialized data (tf.Example) the model parses."""
        return all(dtype is None for dtype, _ in self.fast_specs(signature).values())

    def input_specs(self, signature: str) -> dict[str, tf.TensorSpec]:
        self._check_signature(signature)
        return dict(self._inputs[signature])

    def output_specs(self, signature: str) -> dict[str, tf.TensorSpec]:
        self._check_signature(signature)
        return dict(self._outputs[signature])

    def signature_def_map(self):
        return dict(self._signature_defs)

    # -- calls ------------------------------------------------------------------------------------
    def check_keys(self, signature: str, keys) -> None:
        """INVALID_ARGUMENT unless ``keys`` are exactly the signature's input names."""
        self._check_signature(signature)
        specs = self._inputs[signature]
        keys = set(keys)
        if keys == specs.keys():
            return
        expected = ", ".join(f"{k}: {_spec_str(s)}" for k, s in sorted(specs.items()))
        missing, extra = sorted(set(specs) - keys), sorted(keys - set(specs))
        listed = ", ".join(shown(k) for k in extra[:5]) + (", ..." if len(extra) > 5 else "")
        what = "; ".join(
            p
            for p in (
                f"missing {missing}" if missing else "",
                f"unexpected [{listed}]" if extra else "",
            )
            if p
        )
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Input keys of signature {signature!r} do not match: {what}. Expected inputs: "
            f"{expected}",
        )

    def input_spec_text(self, signature: str, key: str) -> str:
        """``TensorSpec(shape=(None, 4), dtype=float32)``, as errors name an input's spec."""
        return _spec_str(self._inputs[signature][key])

    def input_dtype_enums(self, signature: str) -> dict[str, int]:
        """The DataType enum (``types_pb2``) of every input, as a TensorProto names it."""
        return self._dtype_enums[signature]

    def _validate(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_signature(signature)
        specs = self._inputs[signature]
        self.check_keys(signature, inputs.keys())
        out = {}
        rows = set()
        for key, spec in specs.items():
            value = np.asarray(inputs[key])
            dtype, dims = self._fast_specs[signature][key]
            if value.dtype.kind in "US" or value.dtype == object:
                ok = dtype is None
            else:
                ok = value.dtype == dtype
            if not ok:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Input {key!r} of signature {signature!r} has dtype {value.dtype.name}; "
                    f"expected {_spec_str(spec)}",
                )
            if dims is not None and (
                len(dims) != value.ndim
                or any(d is not None and d != n for d, n in zip(dims, value.shape, strict=True))
            ):
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Input {key!r} of signature {signature!r} has shape {list(value.shape)}; "
                    f"expected {_spec_str(spec)}",
                )
            if dims and dims[0] is None:
                rows.add(value.shape[0])
            out[key] = value
        if len(rows) > 1:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Inputs of signature {signature!r} disagree on the batch size: {sorted(rows)}",
            )
        return out

    def _empty_answer(self, signature: str, inputs: dict[str, np.ndarray]):
        """The outputs of a request of 0 rows, for a signature whose inputs and outputs are all
        batched and whose other output dimensions are known; None otherwise. Such a request is
        answered without calling the model: some kernels fail on empty batches (oneDNN's
        convolution followed by a batch norm does), and the answer is known."""
        if not any(v.ndim and v.shape[0] == 0 for v in inputs.values()):
            return None
        if not self._batchable(signature):
            return None
        out = {}
        for key, spec in self._outputs[signature].items():
            dims = spec.shape.as_list()[1:]
            if any(d is None for d in dims):
                return None
            dtype = object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
            out[key] = np.zeros([0, *dims], dtype)
        return out

    def _call(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        empty = self._empty_answer(signature, inputs)
        if empty is not None:
            return empty
        failure = None
        try:
            outputs = self._fns[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        except Exception as e:  # noqa: BLE001 - turned into this request's status below
            # Only the text leaves this block: the exception's traceback holds the request's
            # tensors, and a reference cycle through it would keep them alive until the next
            # full garbage collection (the memory growth of the serving-hardening issue).
            text = " ".join(getattr(e, "message", str(e)).split())  # TF's text spans lines
            failure = (type(e).__name__, text[:1000], isinstance(e, tf.errors.InvalidArgumentError))
        if failure is not None:
            kind, text, invalid = failure
            # Serialized inputs (tf.Example) are parsed inside the model: a TF
            # InvalidArgumentError there means the caller's bytes did not parse, which is the
            # caller's error. A signature of numeric inputs has passed the spec check, so an
            # error raised inside it is the model's (INTERNAL).
            code = (
                grpc.StatusCode.INVALID_ARGUMENT
                if invalid and self.takes_serialized(signature)
                else grpc.StatusCode.INTERNAL
            )
            raise ServingError(
                code,
                f"{self.name} version {self.version} failed on {shown(signature)}: {kind}: {text}",
            )
        return {k: v.numpy() for k, v in outputs.items()}

    def _prepare(self, signature, inputs, output_filter):
        signature = signature or DEFAULT_SIGNATURE
        inputs = self._validate(signature, inputs)
        if output_filter:
            unknown = sorted(set(output_filter) - set(self._outputs[signature]))
            if unknown:
                listed = ", ".join(shown(k) for k in unknown[:5])
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"output_filter names [{listed}{', ...' if len(unknown) > 5 else ''}], which "
                    f"signature {signature!r} does not output; it outputs "
                    f"{sorted(self._outputs[signature])}",
                )
        return signature, inputs

    @staticmethod
    def _filter(outputs, output_filter):
        return {k: outputs[k] for k in output_filter} if output_filter else outputs

    async def run_async(self, signature: str, inputs: dict[str, np.ndarray],
                        output_filter: list[str] | None = None) -> dict[str, np.ndarray]:  # fmt: skip
        """:meth:`run` on the server's loop: batched if enabled, the model call off the loop."""
        signature, inputs = self._prepare(signature, inputs, output_filter)
        batcher = self._batchers.get(signature)
        if batcher is not None:
            outputs = await batcher.submit(inputs)
        else:
            outputs = await self._executor.run(self._call, signature, inputs)
        return self._filter(outputs, output_filter)

    def run(self, signature: str, inputs: dict[str, np.ndarray],
            output_filter: list[str] | None = None) -> dict[str, np.ndarray]:  # fmt: skip
        """Validate ``inputs`` against the signature, run it (batched if enabled), filter.

        Thread-safe; from a thread other than the server's loop (REST), the call joins the same
        batches as gRPC requests.
        """
        if self._loop is not None and self._loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not self._loop:
                coro = self.run_async(signature, inputs, output_filter)
                return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        signature, inputs = self._prepare(signature, inputs, output_filter)
        return self._filter(self._call(signature, inputs), output_filter)

    def warmup(self) -> None:
        """One call per signature, so the first real request pays no tracing or allocation."""
        for sig in self._fns:
            specs = self._inputs[sig]
            if any(s.dtype == tf.string for s in specs.values()):
                continue  # serialized protos: a zero input would not parse
            zeros = {
                k: np.zeros(
                    [1 if d is None else d for d in s.shape.as_list()], s.dtype.as_numpy_dtype
                )
                for k, s in specs.items()
            }
            self._call(sig, zeros)

    # -- lifetime ---------------------------------------------------------------------------------
    def _enter(self) -> None:
        with self._lock:
            self.inflight += 1

    def _exit(self) -> None:
        with self._lock:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: self.inflight == 0, timeout=timeout)

    def close(self) -> None:
        """Drop the model's batchers; a late caller is served unbatched."""
        self._batchers = {}


def _read_signature_defs(path: str) -> dict:
    """The SignatureDef map exactly as TF Serving returns it in GetModelMetadata."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(Path(path, "saved_model.pb").read_bytes())
    defs = sm.meta_graphs[0].signature_def
    return {k: defs[k] for k in defs if not k.startswith("__")}


def confine_base_paths(entries: list[ModelEntry], roots: list[Path] | None) -> list[ModelEntry]:
    """``entries`` with their base paths resolved (symlinks followed); PERMISSION_DENIED for one
    that is not inside one of ``roots`` (None: anywhere)."""
    out = []
    for e in entries:
        check_model_name(e.name)
        path = Path(e.base_path).expanduser().resolve()
        if roots is not None and not any(path == r or r in path.parents for r in roots):
            raise ServingError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Model {e.name}: base_path {shown(e.base_path, 200)} is outside the directories "
                f"this server may load models from ({', '.join(map(str, roots))}; "
                f"--model_base_path_roots)",
            )
        out.append(ModelEntry(e.name, str(path), e.policy, e.num_versions, e.versions,
                              dict(e.labels)))  # fmt: skip
    return out


# -- the manager -----------------------------------------------------------------------------------
@dataclass
class ModelEntry:
    """One model of the server's config (a ``ModelConfig`` of TF Serving's ``ModelServerConfig``).

    ``policy`` is ``latest`` (serve the newest ``num_versions``), ``all``, or ``specific``
    (``versions``); ``labels`` maps version labels to versions.
    """

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)


@dataclass
class _Version:
    state: str
    servable: Servable | None = None
    error_code: int = 0
    error_message: str = ""
    fingerprint: tuple | None = None  # of the directory when a load failed


def _dir_fingerprint(path: Path) -> tuple:
    try:
        return tuple(sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                            for p in path.rglob("*")))  # fmt: skip
    except OSError:
        return ()


class ModelManager:
    """Loads, serves and retires the versions of every configured model."""

    def __init__(self, entries: list[ModelEntry], *, poll_wait_seconds: float = 1.0,
                 batching: BatchingOptions | None = None, loop=None, executor=None,
                 base_path_roots: list[str] | None = None):  # fmt: skip
        """``base_path_roots``: directories every base path of :meth:`reload_config` must lie
        in (after resolving symlinks); None: no confinement."""
        self._lock = threading.RLock()
        self.base_path_roots = (
            None if base_path_roots is None else [Path(r).resolve() for r in base_path_roots]
        )
        self._entries: dict[str, ModelEntry] = {}
        self._versions: dict[str, dict[int, _Version]] = {}
        self._poll_wait = poll_wait_seconds
        self._batching = batching
        self._loop, self._executor = loop, executor
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.set_config(entries)

    # -- config -----------------------------------------------------------------------------------
    def set_config(self, entries: list[ModelEntry]) -> None:
        """Replace the model list (HandleReloadConfigRequest); models not listed are unloaded."""
        for e in entries:
            check_model_name(e.name)
        with self._lock:
            removed = set(self._entries) - {e.name for e in entries}
            self._entries = {e.name: e for e in entries}
            for name in entries:
                self._versions.setdefault(name.name, {})
        for name in removed:
            for version in list(self._versions.get(name, {})):
                self._unload(name, version)
        self.poll()

    def check_base_paths(self, entries: list[ModelEntry]) -> list[ModelEntry]:
        """``entries`` with resolved base paths; PERMISSION_DENIED for one outside every root."""
        return confine_base_paths(entries, self.base_path_roots)

    def reload_config(self, entries: list[ModelEntry]) -> None:
        """HandleReloadConfigRequest: :meth:`set_config`, confined to ``base_path_roots``.

        TF Serving loads whatever a reload names; this server refuses a base path outside its
        roots, and a config that names no model (which would unload every model)."""
        if not entries:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "The reload config names no model; it would unload every model this server "
                f"serves ({', '.join(self.model_names())}). Name at least one model.",
            )
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            twice = sorted(n for n, count in Counter(names).items() if count > 1)
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "The reload config names a model more than once: "
                + ", ".join(shown(n) for n in twice[:5]),
            )
        self.set_config(self.check_base_paths(entries))

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    # -- polling ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._poll_wait > 0 and self._thread is None:
            self._thread = threading.Thread(
                target=self._poll_loop, name="version-poller", daemon=True
            )
            self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_wait):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the poller must survive anything
                log.exception("polling the model base paths failed")

    @staticmethod
    def _on_disk(entry: ModelEntry) -> list[int]:
        base = Path(entry.base_path)
        if not base.is_dir():
            return []
        return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())

    @staticmethod
    def _wanted(entry: ModelEntry, on_disk: list[int]) -> list[int]:
        if entry.policy == "all":
            return on_disk
        if entry.policy == "specific":
            return [v for v in on_disk if v in entry.versions]
        return on_disk[-entry.num_versions :]

    def poll(self) -> None:
        """Load newly wanted versions, then retire the ones no longer wanted."""
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            on_disk = self._on_disk(entry)
            wanted = self._wanted(entry, on_disk)
            for version in wanted:
                self._maybe_load(entry, version)
            with self._lock:
                current = self._versions.get(entry.name, {})
                serving_wanted = [
                    v for v in wanted if current.get(v) and current[v].state == "AVAILABLE"
                ]
                stale = [
                    v
                    for v, s in current.items()
                    if s.state == "AVAILABLE"
                    and v not in wanted
                    and (serving_wanted or v not in on_disk)
                ]
            for version in stale:
                self._unload(entry.name, version)

    def _maybe_load(self, entry: ModelEntry, version: int) -> None:
        path = Path(entry.base_path) / str(version)
        with self._lock:
            known = self._versions[entry.name].get(version)
            if known is not None:
                if known.state != "END":
                    return  # loading, serving or draining already
                if known.error_code and _dir_fingerprint(path) == known.fingerprint:
                    return  # failed before, and the directory has not changed since
                # else: unloaded cleanly and wanted again (a config reload), or fixed on disk
            self._versions[entry.name][version] = _Version("LOADING")
        try:
            servable = Servable(
                entry.name, version, path, self._batching, self._loop, self._executor
            )
            servable.warmup()
        except Exception as e:  # noqa: BLE001 - a bad version must not take the server down
            message = (
                f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            )
            log.error(
                "loading %s version %d from %s failed: %s", entry.name, version, path, message
            )
            with self._lock:
                self._versions[entry.name][version] = _Version(
                    "END",
                    error_code=grpc.StatusCode.UNKNOWN.value[0],
                    error_message=f"Failed to load {path}: {message}",
                    fingerprint=_dir_fingerprint(path),
                )
            return
        with self._lock:
            self._versions[entry.name][version] = _Version("AVAILABLE", servable)
        log.info("serving %s version %d", entry.name, version)

    def _unload(self, name: str, version: int) -> None:
        with self._lock:
            record = self._versions.get(name, {}).get(version)
            if record is None or record.state != "AVAILABLE":
                return
            record.state = "UNLOADING"
            servable = record.servable

        def finish():
            # acquire() resolves under the same lock that marked the version UNLOADING, so no
            # request enters after this point: waiting for the ones in flight is enough.
            servable.wait_idle()
            servable.close()
            with self._lock:
                record.state, record.servable = "END", None
            log.info("unloaded %s version %d", name, version)

        threading.Thread(target=finish, name=f"unload-{name}-{version}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            servables = [
                v.servable for vs in self._versions.values() for v in vs.values() if v.servable
            ]
        for s in servables:
            s.wait_idle(timeout=30)
            s.close()

    # -- requests ---------------------------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request for (name, version or label) goes to; NOT_FOUND otherwise."""
        check_model_name(name)
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Latest({name}); the server serves "
                    f"{sorted(self._entries)}",
                )
            versions = self._versions[name]
            if label is not None:
                if label not in entry.labels:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Unrecognized servable version label: {shown(label)}; {name} has labels "
                        f"{sorted(entry.labels)}",
                    )
                version = entry.labels[label]
            if version is not None:
                record = versions.get(version)
                if record is None or record.state != "AVAILABLE":
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Servable not found for request: Specific({name}, {version})",
                    )
                return record.servable
            available = [v for v, r in versions.items() if r.state == "AVAILABLE"]
            if not available:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Latest({name}); no version is available",
                )
            return versions[max(available)].servable

    @contextlib.contextmanager
    def acquire(self, name: str, version: int | None = None,
                label: str | None = None) -> Iterator[Servable]:  # fmt: skip
        """Resolve and mark in flight in one step, so the version cannot be retired in between."""
        with self._lock:
            servable = self.resolve(name, version, label)
            servable._enter()
        try:
            yield servable
        finally:
            servable._exit()

    def status(self, name: str, version: int | None = None) -> list[tuple[int, str, int, str]]:
        """(version, state, error_code, error_message) for GetModelStatus, newest first."""
        check_model_name(name)
        with self._lock:
            if name not in self._entries:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
                )
            versions = self._versions[name]
            if version is not None:
                if version not in versions:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Could not find version {version} of model {name}",
                    )
                items = [(version, versions[version])]
            else:
                items = sorted(versions.items(), reverse=True)
            return [(v, r.state, r.error_code, r.error_message) for v, r in items]
