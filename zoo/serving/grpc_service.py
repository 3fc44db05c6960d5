"""TF Serving's gRPC services over a :class:`~zoo.serving.core.ModelManager`.

``tensorflow.serving.PredictionService`` (Predict, Classify, GetModelMetadata) and
``tensorflow.serving.ModelService`` (GetModelStatus, HandleReloadConfigRequest), on the messages
and service descriptors of the official protos in ``tensorflow-serving-api``, so any TF Serving
client talks to this server unchanged; Regress and MultiInference answer UNIMPLEMENTED.

The handlers are registered from the services' descriptors with their own deserializers: bytes
that do not parse as the request message (random bytes, a truncated message, bad UTF-8 in a
string field) are answered INVALID_ARGUMENT, logged in one line, instead of reaching gRPC's own
UNKNOWN and a traceback. Every TensorProto is checked against the signature (dtype, rank, every
dimension, the number of values, the element cap) before an array is built from it.
"""

from __future__ import annotations

import asyncio
import logging
import math

import grpc
import numpy as np
from google.protobuf import message_factory
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2,
    predict_pb2,
    prediction_service_pb2,
    status_pb2,
)

from zoo.export import CLASSIFY_METHOD
from zoo.serving.client import to_ndarray, to_tensor_proto
from zoo.serving.core import (
    DEFAULT_SIGNATURE,
    ModelManager,
    ServingError,
    ServingLimits,
    bounded_message,
    shown,
)

log = logging.getLogger("zoo.serving")


def _version_choice(spec) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


class _Undecodable:
    """What a request deserializes to when its bytes are not the request message."""

    __slots__ = ("error",)

    def __init__(self, error: str):
        self.error = error


def _safe_parser(message_class):
    def deserialize(data: bytes):
        try:
            return message_class.FromString(data)
        except Exception as e:  # noqa: BLE001 - DecodeError, bad UTF-8, ...: the caller's bytes
            return _Undecodable(f"{type(e).__name__}: {e}")

    return deserialize


def _guard(method):
    """Turn ServingError into its status and any other failure into INTERNAL, per request.

    The status is sent after the ``except`` block has ended: aborting inside it would chain the
    request's exception, and with it the frames holding the request's tensors, to the abort."""
    name = method.__name__

    async def wrapper(self, request, context):
        if isinstance(request, _Undecodable):
            log.info("%s: undecodable request from %s: %s", name, context.peer(), request.error)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                bounded_message(f"Could not parse the {name} request: {request.error}"),
            )
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except ServingError as e:
            failure = (e.code, e.message)
        except Exception as e:  # noqa: BLE001 - the server stays up
            log.exception("%s failed", name)
            failure = (grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
        await context.abort(failure[0], bounded_message(failure[1]))

    wrapper.__name__ = name
    return wrapper


# The typed value list of a TensorProto per dtype, and how many list entries one element takes.
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", 1),
    types_pb2.DT_DOUBLE: ("double_val", 1),
    types_pb2.DT_INT32: ("int_val", 1),
    types_pb2.DT_INT16: ("int_val", 1),
    types_pb2.DT_INT8: ("int_val", 1),
    types_pb2.DT_UINT8: ("int_val", 1),
    types_pb2.DT_UINT16: ("int_val", 1),
    types_pb2.DT_INT64: ("int64_val", 1),
    types_pb2.DT_UINT32: ("uint32_val", 1),
    types_pb2.DT_UINT64: ("uint64_val", 1),
    types_pb2.DT_BOOL: ("bool_val", 1),
    types_pb2.DT_STRING: ("string_val", 1),
    types_pb2.DT_HALF: ("half_val", 1),
    types_pb2.DT_BFLOAT16: ("half_val", 1),
    types_pb2.DT_COMPLEX64: ("scomplex_val", 2),
    types_pb2.DT_COMPLEX128: ("dcomplex_val", 2),
}
_ITEM_BYTES = {
    types_pb2.DT_FLOAT: 4, types_pb2.DT_DOUBLE: 8, types_pb2.DT_INT32: 4, types_pb2.DT_INT16: 2,
    types_pb2.DT_INT8: 1, types_pb2.DT_UINT8: 1, types_pb2.DT_UINT16: 2, types_pb2.DT_INT64: 8,
    types_pb2.DT_UINT32: 4, types_pb2.DT_UINT64: 8, types_pb2.DT_BOOL: 1, types_pb2.DT_HALF: 2,
    types_pb2.DT_BFLOAT16: 2, types_pb2.DT_COMPLEX64: 8, types_pb2.DT_COMPLEX128: 16,
}  # fmt: skip


def _dtype_name(enum: int) -> str:
    try:
        return types_pb2.DataType.Name(enum)[3:].lower()
    except ValueError:
        return f"unknown dtype {enum}"


def decode_inputs(inputs, servable, signature: str, limits: ServingLimits) -> dict:
    """``PredictRequest.inputs`` as arrays, each TensorProto checked against the signature first.

    Refused, before anything is built: a dtype other than the spec's; an unknown rank, or a rank
    or known dimension other than the spec's; a negative dimension (TF would infer a ``-1``); a
    number of values other than the shape's (TF broadcasts one value, or zeros for none, to any
    shape, which made a 30-byte request cost a tensor of hundreds of MB); more elements in all
    than ``limits.max_request_elements`` (RESOURCE_EXHAUSTED)."""
    servable.check_keys(signature, inputs.keys())
    specs = servable.fast_specs(signature)
    enums = servable.input_dtype_enums(signature)
    sizes = {}
    for key, proto in inputs.items():
        _, dims = specs[key]

        def refuse(problem: str, key=key) -> ServingError:
            return ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Input {key!r} of signature {signature!r} {problem}; expected "
                f"{servable.input_spec_text(signature, key)}",
            )

        if proto.dtype != enums[key]:
            raise refuse(f"has dtype {_dtype_name(proto.dtype)}")
        if proto.tensor_shape.unknown_rank:
            raise refuse("has an unknown rank")
        shape = [d.size for d in proto.tensor_shape.dim]
        if dims is not None and (
            len(shape) != len(dims)
            or any(d is not None and d != n for d, n in zip(dims, shape, strict=True))
        ):
            raise refuse(f"has shape {shape}")
        if any(n < 0 for n in shape):
            raise refuse(f"has shape {shape}, with a negative dimension")
        size = sizes[key] = math.prod(shape)
        field, per = _VALUE_FIELDS.get(proto.dtype, (None, 1))
        if proto.tensor_content:
            item = _ITEM_BYTES.get(proto.dtype)
            if item is None:
                raise refuse_values(
                    key, signature, "holds tensor_content for a dtype sent as a list"
                )
            given = len(proto.tensor_content)
            if given != size * item:
                raise refuse_values(
                    key, signature, f"holds {given} bytes of tensor_content for {size} elements "
                    f"of {item} bytes",
                )  # fmt: skip
        else:
            given = len(getattr(proto, field)) if field else 0
            if given != size * per:
                raise refuse_values(
                    key, signature, f"holds {given // per} values for shape "
                    f"{[d.size for d in proto.tensor_shape.dim]} ({size} elements)",
                )  # fmt: skip
    limits.check_elements(sum(sizes.values()))
    return {key: to_ndarray(proto) for key, proto in inputs.items()}


def refuse_values(key: str, signature: str, problem: str) -> ServingError:
    return ServingError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Input {key!r} of signature {signature!r} {problem}: send every value, as "
        f"tf.make_tensor_proto(array) does (a value list shorter than the shape is not expanded)",
    )


class PredictionService:
    def __init__(self, manager: ModelManager, limits: ServingLimits | None = None):
        self.manager = manager
        self.limits = limits or ServingLimits()

    @_guard
    async def Predict(self, request, context):
        spec = request.model_spec
        version, label = _version_choice(spec)
        signature = spec.signature_name or DEFAULT_SIGNATURE
        with self.manager.acquire(spec.name, version, label) as servable:
            inputs = decode_inputs(request.inputs, servable, signature, self.limits)
            outputs = await servable.run_async(
                signature, inputs, list(request.output_filter) or None
            )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(to_tensor_proto(value))
        return response

    @_guard
    async def Classify(self, request, context):
        """Classification signatures: serialized tf.Examples in, ``classes``/``scores`` out."""
        spec = request.model_spec
        version, label = _version_choice(spec)
        signature = spec.signature_name or DEFAULT_SIGNATURE
        with self.manager.acquire(spec.name, version, label) as servable:
            sig_def = servable.signature_def_map().get(signature)
            if sig_def is None:
                servable.input_specs(signature)  # raises the unknown-signature error
            if sig_def.method_name != CLASSIFY_METHOD:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
                    f"Was: {sig_def.method_name} (signature {signature!r})",
                )
            examples = _serialized_examples(request.input, self.limits)
            (input_key,) = servable.input_specs(signature)
            outputs = await servable.run_async(signature, {input_key: examples})
        response = classification_pb2.ClassificationResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        classes, scores = outputs.get("classes"), outputs.get("scores")
        n = len(examples)
        for i in range(n):
            result = response.result.classifications.add()
            k = (scores if scores is not None else classes).shape[1]
            for j in range(k):
                c = result.classes.add()
                if classes is not None:
                    label_value = classes[i][j]
                    c.label = (
                        label_value.decode() if isinstance(label_value, bytes) else str(label_value)
                    )
                if scores is not None:
                    c.score = float(scores[i][j])
        return response

    @_guard
    async def GetModelMetadata(self, request, context):
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Metadata field(s) [{', '.join(shown(f) for f in fields[:5])}] not supported; "
                "the only one is 'signature_def'",
            )
        spec = request.model_spec
        version, label = _version_choice(spec)
        with self.manager.acquire(spec.name, version, label) as servable:
            defs = servable.signature_def_map()
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in defs.items():
            signature_map.signature_def[key].CopyFrom(value)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response


def _serialized_examples(model_input, limits: ServingLimits) -> np.ndarray:
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        examples = model_input.example_list.examples
        limits.check_elements(len(examples))
        return np.array([e.SerializeToString() for e in examples], dtype=object)
    if kind == "example_list_with_context":
        lst = model_input.example_list_with_context
        limits.check_elements(len(lst.examples))
        context = lst.context
        out = []
        for e in lst.examples:
            merged = type(e)()
            merged.CopyFrom(context)
            merged.MergeFrom(e)
            out.append(merged.SerializeToString())
        return np.array(out, dtype=object)
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Classify request holds no examples")


class ModelService:
    def __init__(self, manager: ModelManager, config_to_entries):
        self.manager = manager
        self._config_to_entries = config_to_entries

    @_guard
    async def GetModelStatus(self, request, context):
        spec = request.model_spec
        version, label = _version_choice(spec)
        if label is not None:
            version = self.manager.resolve(spec.name, None, label).version
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state, code, message in self.manager.status(spec.name, version):
            status = response.model_version_status.add()
            status.version = v
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            status.status.CopyFrom(status_pb2.StatusProto(error_code=code, error_message=message))
        return response

    @_guard
    async def HandleReloadConfigRequest(self, request, context):
        """As TF Serving: the RPC's status is the reload's (the response echoes it). Unlike TF
        Serving, a base path outside the server's roots, and a config naming no model, are
        refused (:meth:`ModelManager.reload_config`)."""
        try:
            entries = self._config_to_entries(request.config)
        except ValueError as e:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        log.info(
            "HandleReloadConfigRequest from %s: %s",
            context.peer(),
            ", ".join(f"{shown(e.name)} at {shown(e.base_path, 200)}" for e in entries[:20]),
        )
        # Loading models takes seconds: off the loop, so requests keep being served.
        await asyncio.get_running_loop().run_in_executor(None, self.manager.reload_config, entries)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response


def _handlers(servicer, service_descriptor) -> grpc.GenericRpcHandler:
    """Every method of the service, with deserializers that never raise (see the module)."""
    handlers = {}
    for m in service_descriptor.methods:
        request_class = message_factory.GetMessageClass(m.input_type)
        response_class = message_factory.GetMessageClass(m.output_type)
        fn = getattr(type(servicer), m.name, None)
        implemented = fn is not None and asyncio.iscoroutinefunction(fn)
        handlers[m.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, m.name) if implemented else _guard_unimplemented(m.name),
            request_deserializer=_safe_parser(request_class),
            response_serializer=response_class.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers)


def _guard_unimplemented(name: str):
    """UNIMPLEMENTED, after the same check of the request's bytes as every other method."""

    async def method(self, request, context):
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{name} is not implemented by this server; it implements Predict, Classify, "
            "GetModelMetadata, GetModelStatus and HandleReloadConfigRequest",
        )

    method.__name__ = name
    guarded = _guard(method)

    async def handler(request, context):
        return await guarded(None, request, context)

    return handler


def add_services(server, manager: ModelManager, config_to_entries,
                 limits: ServingLimits | None = None) -> None:  # fmt: skip
    """PredictionService and ModelService on a ``grpc.aio`` server."""
    prediction = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    models = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
    server.add_generic_rpc_handlers(
        (
            _handlers(PredictionService(manager, limits), prediction),
            _handlers(ModelService(manager, config_to_entries), models),
        )
    )
