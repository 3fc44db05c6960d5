"""TF Serving's JSON <-> tensor codec (``tensorflow_serving/util/json_tensor.cc``), over numpy.

Used by the REST layer (:mod:`zoo.serving.rest`); protocol-free and testable on its own:

- :func:`parse_json`: a request body as a JSON object (400 for anything else);
- :func:`predict_inputs`: a ``:predict`` body's ``instances`` (row format) or ``inputs``
  (columnar format) as numpy arrays, checked against the signature's TensorSpecs: dtype of every
  value, nesting depth against the spec's rank, known dimensions and the element cap, all before
  any array is built;
- :func:`predict_response`: outputs as ``{"predictions": ...}`` or ``{"outputs": ...}``.

Messages follow json_tensor.cc's wording, so a client that reads TF Serving's errors reads these.
A value echoed in a message is cut to a bounded length.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gc
import json
import math
import re
import threading
from typing import Any

import grpc
import numpy as np

from zoo.serving.core import ServingError, ServingLimits

__all__ = ["parse_json", "predict_inputs", "predict_response", "array_to_json"]


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _status_string(err: ServingError) -> str:
    """``Status::ToString()``: ``INVALID_ARGUMENT: message``."""
    return f"{err.code.name}: {err.message}"


# -- JSON <-> numpy --------------------------------------------------------------------------------
def _cut(text: str, limit: int = 64) -> str:
    """A caller's key, echoed in a message: cut to ``limit`` characters."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class _Full(Exception):
    pass


def _js(val: Any, limit: int = 200) -> str:
    """A JSON value for an error message (JsonValueToString), cut to ``limit`` characters.

    Written only as far as the limit: serializing a whole 8 MiB document to show its first 200
    characters is what made a malformed body cost tens of seconds."""
    parts: list[str] = []
    left = [limit + 1]

    def emit(text: str) -> None:
        parts.append(text)
        left[0] -= len(text)
        if left[0] <= 0:
            raise _Full

    def walk(v: Any) -> None:
        t = type(v)
        if t is list:
            emit("[")
            for i, item in enumerate(v):
                if i:
                    emit(",")
                walk(item)
            emit("]")
        elif t is dict:
            emit("{")
            for i, (k, item) in enumerate(v.items()):
                emit(("," if i else "") + json.dumps(str(k)[:limit]) + ":")
                walk(item)
            emit("}")
        elif t is str:
            emit(json.dumps(v[:limit]))
        elif t is int and v.bit_length() > 1024:
            emit("<an integer of more than 300 digits>")
        else:
            emit(json.dumps(v))

    try:
        walk(val)
    except _Full:
        pass
    text = "".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(val: Any) -> str:
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def _is_b64(val: Any) -> bool:
    """``{"b64": "<string>"}`` and nothing else (IsValBase64Object)."""
    return type(val) is dict and len(val) == 1 and type(val.get("b64")) is str


def _spec_str(spec) -> str:
    dims = ", ".join("None" if d is None else str(d) for d in spec.shape.as_list())
    comma = "," if spec.shape.rank == 1 else ""
    return f"TensorSpec(shape=({dims}{comma}), dtype={spec.dtype.name})"


class _Leaf:
    """Checks and converts the leaf values of one input (AddValueToTensor, per dtype)."""

    def __init__(self, tf_dtype):
        from tensorflow.core.framework import types_pb2

        self.np_dtype = np.dtype(tf_dtype.as_numpy_dtype)
        # DataTypeString(): DT_FLOAT -> "float", as TF Serving's messages name types.
        self.type_name = types_pb2.DataType.Name(tf_dtype.as_datatype_enum)[3:].lower()
        if tf_dtype.is_floating:
            self.kind = "float"
            info = np.finfo(self.np_dtype) if self.np_dtype.kind == "f" else None
            self.max = float(info.max) if info else float(tf_dtype.max)
            mant = info.nmant if info else 7
            self.max_int = (1 << (mant + 1)) - 1
        elif tf_dtype.is_bool:
            self.kind = "bool"
        elif tf_dtype.is_integer:
            self.kind = "int"
            self.min, self.max = int(tf_dtype.min), int(tf_dtype.max)
        elif tf_dtype.name == "string":
            self.kind = "string"
            self.np_dtype = np.dtype(object)
        else:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Conversion of JSON values to type: {self.type_name}",
            )

    def type_error(self, v: Any) -> ServingError:
        return _invalid(
            f"JSON Value: {_js(v)} Type: {_json_type(v)} is not of expected type: {self.type_name}"
        )

    def lossy(self, v: Any) -> ServingError:
        return _invalid(
            f"Cannot convert JSON value: {_js(v)} to {self.type_name} without loss of precision."
        )

    def add(self, values: list, out: list) -> None:
        """Check ``values`` (leaves of one innermost list, or one scalar) and append them."""
        kind = self.kind
        if kind == "float":
            for v in values:
                t = type(v)
                if t is float:
                    if abs(v) > self.max and v == v and abs(v) != float("inf"):
                        raise self.lossy(v)
                elif t is int:
                    if abs(v) > self.max_int:
                        raise self.lossy(v)
                else:
                    raise self.type_error(v)
            out.extend(values)
        elif kind == "int":
            for v in values:
                if type(v) is not int or not self.min <= v <= self.max:
                    raise self.type_error(v)
            out.extend(values)
        elif kind == "bool":
            for v in values:
                if type(v) is not bool:
                    raise self.type_error(v)
            out.extend(values)
        else:
            for v in values:
                t = type(v)
                if t is str:
                    out.append(v.encode("utf-8"))
                elif t is dict:
                    if not _is_b64(v):
                        raise _invalid(
                            f"JSON Value: {_js(v)} not formatted correctly for base64 data"
                        )
                    try:
                        out.append(base64.b64decode(v["b64"], validate=True))
                    except (binascii.Error, ValueError) as e:
                        raise _invalid("Unable to base64 decode") from e
                else:
                    raise self.type_error(v)


_MAX_RANK = 32  # for a spec of unknown rank: deeper JSON is no tensor anyone serves


def _dense_shape(val: Any, rank: int | None) -> list[int]:
    """GetDenseTensorShape: the shape implied by following the first element of each list.

    ``rank``: the rank the value must have; nesting deeper is refused here, before the lists
    are walked (JSON nested hundreds deep otherwise reached numpy's 64-dimension limit)."""
    shape = []
    limit = _MAX_RANK if rank is None else rank
    while type(val) is list:
        if len(shape) == limit:
            raise _invalid(
                f"JSON value nested deeper than {limit} lists; "
                + (f"expected a value of rank {rank}" if rank is not None else "too deep")
            )
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _check_dims(shape: list[int], dims: list | None, what: str) -> None:
    """Known dimensions of the spec (``dims``, None for unknown) against ``shape``."""
    if dims is None:
        return
    if len(shape) != len(dims) or any(
        d is not None and d != n for d, n in zip(dims, shape, strict=True)
    ):
        shown_dims = "[" + ",".join("-1" if d is None else str(d) for d in dims) + "]"
        raise _invalid(f"{what} has shape {_shape_str(shape)}; expected shape {shown_dims}")


def _fill(val: Any, level: int, shape: list[int], leaf: _Leaf, out: list) -> None:
    """FillTensorProto: check that ``val`` is dense with ``shape`` and collect its leaves."""
    rank = len(shape)
    if type(val) is not list:
        if level != rank:
            raise _invalid(
                f"JSON Value: {_js(val)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        leaf.add([val], out)
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise _invalid(
            f"Encountered list at unexpected size: {len(val)} at level: {level} expected size: "
            f"{shape[level]}"
        )
    if level == rank - 1:
        for v in val:
            if type(v) is list:
                raise _invalid(
                    f"Encountered list at unexpected level: {level + 1} expected < {rank}"
                )
        leaf.add(val, out)
        return
    for v in val:
        _fill(v, level + 1, shape, leaf, out)


def _json_to_flat(val: Any, leaf: _Leaf, shape: list[int]) -> list:
    out: list = []
    _fill(val, 0, shape, leaf, out)
    return out


def _to_array(flat: list, shape: list[int], leaf: _Leaf) -> np.ndarray:
    if leaf.kind == "string":
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    return np.array(flat, dtype=leaf.np_dtype).reshape(shape)


def _shape_str(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _fast_array(value: Any, shape: list[int], leaf: _Leaf) -> np.ndarray | None:
    """``value`` as an array in one numpy call, when every leaf is a plain number that converts
    exactly; None sends the caller to the value-by-value path (which names the problem).

    Only for documents without ``true``/``false`` (numpy would take a bool for a number); a
    string, null or object leaf gives a non-numeric array, a ragged list a ValueError. A large
    body is decoded many times faster this way, and holds the GIL (and so the loop that serves
    gRPC meanwhile) for that much less time."""
    if leaf.kind not in ("float", "int"):
        return None
    try:
        arr = np.asarray(value)
    except (ValueError, OverflowError, TypeError):
        return None
    if arr.shape != tuple(shape) or arr.dtype.kind not in "fi":
        return None
    if leaf.kind == "int":
        if arr.dtype.kind != "i" or (arr.size and (arr.min() < leaf.min or arr.max() > leaf.max)):
            return None
        return arr.astype(leaf.np_dtype)
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(arr)
        if arr.dtype.kind == "i":
            if arr.size and magnitude.max() > leaf.max_int:
                return None  # an integer literal that the float type cannot hold exactly
        elif np.any(np.isfinite(arr) & (magnitude > leaf.max)) or np.any(
            (magnitude > leaf.max_int) & (arr == np.trunc(arr))
        ):
            return None  # too large, or integral beyond exact: the slow path tells which
    return arr.astype(leaf.np_dtype)


def _dims(spec) -> list | None:
    return None if spec.shape.rank is None else spec.shape.as_list()


def _inputs_from_instances(instances: list, specs: dict, leaves: dict, limits: ServingLimits,
                           numbers_only: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """FillTensorMapFromInstancesList: the row format, batched along a new first dimension."""
    first = instances[0]
    if type(first) is not dict and len(specs) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )

    def is_object(v):
        return type(v) is dict and not _is_b64(v)

    objects = is_object(first)
    names = sorted(specs)
    n = len(instances)
    # Each instance is one row: its rank and known dimensions are the spec's without the batch.
    row_dims = {}
    for k, spec in specs.items():
        dims = _dims(spec)
        row_dims[k] = dims[1:] if dims else None
    if numbers_only and not objects and len(specs) == 1:
        (name,) = specs
        dims = row_dims[name]
        try:
            shape = _dense_shape(first, None if dims is None else len(dims))
            _check_dims(shape, dims, f"Input {name}: each instance")
        except ServingError:
            shape = None  # the loop below reports it, with the element's index
        if shape is not None:
            limits.check_elements(n * math.prod(shape))
            arr = _fast_array(instances, [n, *shape], leaves[name])
            if arr is not None:
                return {name: arr}
    flats: dict[str, list] = {}
    shapes: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def add(item, name):
        if name not in specs:
            raise _invalid(f"JSON object: does not have named input: {_cut(name)}")
        if name not in shapes:
            dims = row_dims[name]
            shape = _dense_shape(item, None if dims is None else len(dims))
            _check_dims(shape, dims, f"Input {name}: each instance")
            size = math.prod(shape)
            # The whole batch, from its first row, before any of it is converted.
            limits.check_elements(n * (size + sum(sizes.values())))
            shapes[name], sizes[name] = shape, size
            flats[name] = _json_to_flat(item, leaves[name], shape)
            return
        shape = _dense_shape(item, len(shapes[name]))
        if math.prod(shape) != sizes[name]:
            raise _invalid(f"Expecting tensor size: {sizes[name]} but got: {math.prod(shape)}")
        if shapes[name] != shape:
            raise _invalid(
                f"Expecting shape {_shape_str(shapes[name])} but got: {_shape_str(shape)}"
            )
        flats[name].extend(_json_to_flat(item, leaves[name], shape))

    for i, elem in enumerate(instances):
        if objects:
            if not is_object(elem):
                raise _invalid(f"Expecting object but got list at item {i} of input list")
            for name, value in elem.items():
                try:
                    add(value, name)
                except ServingError as e:
                    if e.code != grpc.StatusCode.INVALID_ARGUMENT:
                        raise
                    raise _invalid(
                        f"Failed to process element: {i} key: {_cut(name)} of 'instances' "
                        f"list. Error: {_status_string(e)}"
                    ) from None
            if set(elem) != set(names):
                raise _invalid(
                    f"Failed to process element: {i} of 'instances' list. JSON object: "
                    f"{_js(elem)} must only have keys: {','.join(names)}"
                )
        else:
            if is_object(elem):
                raise _invalid(f"Expecting value/list but got object at item {i} of input list")
            try:
                add(elem, names[0])
            except ServingError as e:
                if e.code != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                raise _invalid(
                    f"Failed to process element: {i} of 'instances' list. "
                    f"Error: {_status_string(e)}"
                ) from None
    return {k: _to_array(flats[k], [n, *shapes[k]], leaves[k]) for k in flats}


def _inputs_from_columns(val: Any, specs: dict, leaves: dict, limits: ServingLimits,
                         numbers_only: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """FillTensorMapFromInputsMap: the columnar format, a value or an object of named values."""
    if type(val) is not dict or _is_b64(val):
        if len(specs) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        values = {next(iter(specs)): val}
    else:
        for name in sorted(specs):
            if name not in val:
                raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        extra = sorted(set(val) - set(specs))
        if extra:
            # TF Serving ignores unknown keys here; this server refuses them, as gRPC does.
            listed = ", ".join(_cut(k) for k in extra[:5]) + (", ..." if len(extra) > 5 else "")
            raise _invalid(
                f"Unexpected named input(s): {listed} in 'inputs' object; the signature "
                f"takes: {', '.join(sorted(specs))}"
            )
        values = {name: val[name] for name in sorted(specs)}
    shapes = {}
    for name, value in values.items():
        dims = _dims(specs[name])
        shapes[name] = _dense_shape(value, None if dims is None else len(dims))
        _check_dims(shapes[name], dims, f"Input {name}")
    limits.check_elements(sum(math.prod(shape) for shape in shapes.values()))
    out = {}
    for name, value in values.items():
        arr = _fast_array(value, shapes[name], leaves[name]) if numbers_only else None
        if arr is None:
            flat = _json_to_flat(value, leaves[name], shapes[name])
            arr = _to_array(flat, shapes[name], leaves[name])
        out[name] = arr
    return out


def _expected(specs: dict) -> str:
    return ", ".join(f"{k}: {_spec_str(s)}" for k, s in sorted(specs.items()))


def predict_inputs(doc: dict, specs: dict, signature: str, limits: ServingLimits | None = None,
                   numbers_only: bool = False) -> tuple[dict, str]:  # fmt: skip
    """FillPredictRequestFromJson: the input arrays and the format ("row" or "columnar").

    ``specs``: the signature's input TensorSpecs by name. Errors are INVALID_ARGUMENT naming the
    expected specs, or RESOURCE_EXHAUSTED (REST 413) past ``limits.max_request_elements``.
    ``numbers_only``: the document holds no ``true``/``false``, so numeric inputs may be
    converted in one numpy call."""
    limits = limits or ServingLimits()
    if not specs:
        raise _invalid(f"Failed to get input map for signature: {signature or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise _invalid(
            f"JSON Value: {_js(doc)} Not formatted correctly expecting only one of 'inputs' or "
            f"'instances' keys to exist "
        )
    try:
        with _gc_paused():
            return _convert(doc, specs, limits, numbers_only, has_instances, has_inputs)
    except ServingError as e:
        if e.code != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        message = e.message
    raise _invalid(f"{message} (signature {signature!r} expects {_expected(specs)})")


def _convert(doc, specs, limits, numbers_only, has_instances, has_inputs):
    leaves = {k: _Leaf(s.dtype) for k, s in specs.items()}
    if has_instances:
        instances = doc["instances"]
        if type(instances) is not list:
            raise _invalid(f"JSON Value: {_js(doc)} Excepting 'instances' to be an list/array")
        if not instances:
            raise _invalid(f"JSON Value: {_js(doc)} No values in 'instances' array")
        return _inputs_from_instances(instances, specs, leaves, limits, numbers_only), "row"
    if has_inputs:
        return _inputs_from_columns(doc["inputs"], specs, leaves, limits, numbers_only), "columnar"
    raise _invalid("Missing 'inputs' or 'instances' key")


def array_to_json(name: str, arr: np.ndarray) -> Any:
    """A tensor as nested lists (AddTensorValues). Floats print as their shortest round trip."""
    arr = np.asarray(arr)
    kind = arr.dtype.kind
    if kind == "f" or arr.dtype.name == "bfloat16":
        if arr.dtype == np.float64:
            return arr.tolist()
        # The shortest decimal that reads back as the same float32 (TF Serving's WriteDecimal
        # likewise avoids printing 0.2f as 0.20000000298023224).
        return arr.astype(str).astype(np.float64).tolist()
    if kind in "iub":
        return arr.tolist()
    if kind in "OSU":
        as_bytes = name.endswith("_bytes")

        def conv(v):
            if isinstance(v, str):
                v = v.encode("utf-8")
            if not as_bytes:
                try:
                    return v.decode("utf-8")
                except UnicodeDecodeError:
                    pass  # not text: fall back to the binary form instead of invalid JSON
            return {"b64": base64.b64encode(v).decode("ascii")}

        if arr.ndim == 0:
            return conv(arr.item())
        flat = np.empty(arr.size, dtype=object)
        flat[:] = [conv(v) for v in arr.ravel().tolist()]
        return flat.reshape(arr.shape).tolist()
    raise _invalid(f"Failed to write JSON value for tensor type: {arr.dtype.name}")


def predict_response(outputs: dict[str, np.ndarray], fmt: str) -> dict:
    """MakeJsonFromTensors: ``{"predictions": rows}`` or ``{"outputs": value or object}``."""
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    names = list(outputs)
    if fmt == "columnar":
        if len(names) == 1:
            return {"outputs": array_to_json(names[0], outputs[names[0]])}
        return {"outputs": {k: array_to_json(k, outputs[k]) for k in names}}
    batch = 0
    for k in names:
        shape = np.shape(outputs[k])
        if not shape:
            raise _invalid(f"Tensor name: {k} has no shape information ")
        if shape[0] < 1:
            raise _invalid(f"Tensor name: {k} has invalid batch size: {shape[0]}")
        if batch and shape[0] != batch:
            raise _invalid(
                f"Tensor name: {k} has inconsistent batch size: {shape[0]} expecting: {batch}"
            )
        batch = shape[0]
    lists = {k: array_to_json(k, outputs[k]) for k in names}
    if len(names) == 1:
        return {"predictions": lists[names[0]]}
    return {"predictions": [{k: lists[k][i] for k in names} for i in range(batch)]}


_PAUSE_LOCK = threading.Lock()
_PAUSED = 0


@contextlib.contextmanager
def _gc_paused():
    """The cyclic garbage collector off while a document's million small lists and floats are
    made or walked: they hold no cycles, and collecting as they appear made parsing 2.5x slower
    (the collector runs every 700 new containers and walks the older ones again and again)."""
    global _PAUSED
    with _PAUSE_LOCK:
        _PAUSED += 1
        if _PAUSED == 1:
            gc.disable()
    try:
        yield
    finally:
        with _PAUSE_LOCK:
            _PAUSED -= 1
            if _PAUSED == 0:
                gc.enable()


_DIGITS = re.compile(r"value has (\d+) digits")


def parse_json(body: bytes) -> dict:
    """A request body as a JSON object; INVALID_ARGUMENT naming the problem otherwise."""
    if not body.strip():
        raise _invalid("JSON Parse error: The document is empty")
    problem = None
    try:
        with _gc_paused():
            doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        problem = f"Invalid encoding in string. at offset: {e.start}"
    except json.JSONDecodeError as e:
        problem = f"{e.msg} at offset: {e.pos}"
    except RecursionError:
        problem = "The document is nested too deeply"
    except ValueError as e:  # Python refuses integers of more than 4,300 digits
        digits = _DIGITS.search(str(e))
        problem = (
            f"An integer of {digits.group(1) if digits else 'more than 4300'} digits; no tensor "
            "type holds an integer of more than 20 digits"
        )
    if problem is not None:
        raise _invalid(f"JSON Parse error: {problem}")
    if type(doc) is not dict:
        raise _invalid(f"JSON Value: {_js(doc)} Is not object")
    return doc
