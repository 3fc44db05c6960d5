"""TF Serving's gRPC services over a :class:`~zoo.serving.core.ModelManager`.

``tensorflow.serving.PredictionService`` (Predict, Classify, GetModelMetadata) and
``tensorflow.serving.ModelService`` (GetModelStatus, HandleReloadConfigRequest), implemented on
the servicer base classes generated from the official protos in ``tensorflow-serving-api``, so
any TF Serving client talks to this server unchanged.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import numpy as np
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)

from zoo.export import CLASSIFY_METHOD
from zoo.serving.client import to_ndarray, to_tensor_proto
from zoo.serving.core import DEFAULT_SIGNATURE, ModelManager, ServingError

log = logging.getLogger("zoo.serving")


def _version_choice(spec) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def _guard(method):
    """Turn ServingError into its status and any other failure into INTERNAL, per request."""

    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except ServingError as e:
            await context.abort(e.code, e.message)
        except Exception as e:  # noqa: BLE001 - the server stays up
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")

    wrapper.__name__ = method.__name__
    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    @_guard
    async def Predict(self, request, context):
        spec = request.model_spec
        version, label = _version_choice(spec)
        signature = spec.signature_name or DEFAULT_SIGNATURE
        try:
            inputs = {k: to_ndarray(v) for k, v in request.inputs.items()}
        except Exception as e:  # noqa: BLE001 - a malformed TensorProto
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"Malformed input tensor: {e}"
            ) from e
        with self.manager.acquire(spec.name, version, label) as servable:
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
            examples = _serialized_examples(request.input)
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
                f"Metadata field(s) {fields} not supported; the only one is 'signature_def'",
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


def _serialized_examples(model_input) -> np.ndarray:
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        examples = model_input.example_list.examples
        return np.array([e.SerializeToString() for e in examples], dtype=object)
    if kind == "example_list_with_context":
        lst = model_input.example_list_with_context
        context = lst.context
        out = []
        for e in lst.examples:
            merged = type(e)()
            merged.CopyFrom(context)
            merged.MergeFrom(e)
            out.append(merged.SerializeToString())
        return np.array(out, dtype=object)
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Classify request holds no examples")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
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
        response = model_management_pb2.ReloadConfigResponse()
        try:
            entries = self._config_to_entries(request.config)
            # Loading models takes seconds: off the loop, so requests keep being served.
            await asyncio.get_running_loop().run_in_executor(None, self.manager.set_config, entries)
        except (ServingError, ValueError) as e:
            code = e.code if isinstance(e, ServingError) else grpc.StatusCode.INVALID_ARGUMENT
            response.status.error_code = code.value[0]
            response.status.error_message = getattr(e, "message", str(e))
        return response


def add_services(server, manager: ModelManager, config_to_entries) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(manager, config_to_entries), server
    )
