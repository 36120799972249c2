"""Read a .tflite flatbuffer without TensorFlow: operators, tensors, constant weights.

Uses the flatbuffer classes Vela ships (``ethosu.vela.tflite``), so a bring-your-own model can be
checked and measured without importing TensorFlow (3.5 s). Every way a file can be unusable is a
one-line UsageError naming the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ethosu.vela.tflite import BuiltinOperator, Model, TensorType

from core.errors import UsageError

WEIGHT_OPERATORS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_OPERATOR_NAMES = {v: k for k, v in vars(BuiltinOperator.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(TensorType.TensorType).items() if not k.startswith("_")}
_NUMPY_TYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
                "FLOAT32": np.float32, "FLOAT16": np.float16, "BOOL": np.bool_}


@dataclass
class TensorInfo:
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scales: np.ndarray
    zero_points: np.ndarray
    data: np.ndarray | None  # constant tensors only


@dataclass
class OperatorInfo:
    name: str  # builtin name, or the custom code for custom operators (e.g. "ethos-u")
    inputs: list[int]
    outputs: list[int]


@dataclass
class TFLiteInfo:
    tensors: list[TensorInfo]
    operators: list[OperatorInfo]
    inputs: list[int]
    outputs: list[int]
    size_bytes: int
    weight_tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def input(self) -> TensorInfo:
        return self.tensors[self.inputs[0]]

    @property
    def output(self) -> TensorInfo:
        return self.tensors[self.outputs[0]]


def read_tflite(source: str | Path | bytes, label: str | None = None) -> TFLiteInfo:
    """Parse a TFLite model from a path or bytes; refuse anything that is not one."""
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), label or "model"
    else:
        path = Path(source)
        label = label or str(path)
        if not path.is_file():
            raise UsageError(f"{label}: no such file; pass the path of an int8 .tflite model")
        data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise UsageError(f"{label}: not a TFLite flatbuffer (no TFL3 identifier); pass a .tflite file written by the TFLite converter")
    try:
        return _parse(data)
    except UsageError as exc:
        raise UsageError(f"{label}: {exc}; re-export the model or copy it again") from None
    except Exception as exc:  # flatbuffers reports truncation as struct/index errors
        raise UsageError(f"{label}: truncated or corrupt TFLite file ({type(exc).__name__}); re-export or copy it again") from None


def _parse(data: bytes) -> TFLiteInfo:
    model = Model.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise UsageError("model has no subgraph")
    graph = model.Subgraphs(0)
    opcodes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = _OPERATOR_NAMES.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = (code.CustomCode() or b"custom").decode()
        opcodes.append(name)
    tensors = []
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        dtype = _TYPE_NAMES.get(tensor.Type(), f"TYPE_{tensor.Type()}")
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        quant = tensor.Quantization()
        scales = quant.ScaleAsNumpy() if quant is not None and quant.ScaleLength() else np.zeros(0, np.float32)
        zero_points = quant.ZeroPointAsNumpy() if quant is not None and quant.ZeroPointLength() else np.zeros(0, np.int64)
        tensors.append(TensorInfo(i, (tensor.Name() or b"").decode(), dtype, shape,
                                  np.asarray(scales, np.float32), np.asarray(zero_points, np.int64),
                                  _buffer_data(model, data, tensor, dtype, shape)))
    operators = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        operators.append(OperatorInfo(opcodes[op.OpcodeIndex()],
                                      [int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else [],
                                      [int(x) for x in op.OutputsAsNumpy()] if op.OutputsLength() else []))
    inputs = [int(x) for x in graph.InputsAsNumpy()] if graph.InputsLength() else []
    outputs = [int(x) for x in graph.OutputsAsNumpy()] if graph.OutputsLength() else []
    if not inputs or not outputs:
        raise UsageError(f"model has no {'input' if not inputs else 'output'} tensor")
    count = len(tensors)
    for where, index in [("graph input", i) for i in inputs] + [("graph output", i) for i in outputs] + \
            [(f"operator {n} ({op.name})", i) for n, op in enumerate(operators) for i in op.inputs + op.outputs]:
        if not (-1 <= index < count) or (index == -1 and where.startswith("graph")):
            raise UsageError(f"{where} refers to tensor {index}, but the model has {count}")
    info = TFLiteInfo(tensors, operators, inputs, outputs, len(data))
    seen = set()
    for op in operators:
        if op.name in WEIGHT_OPERATORS and len(op.inputs) > 1 and op.inputs[1] >= 0 and op.inputs[1] not in seen:
            weight = tensors[op.inputs[1]]
            if weight.data is not None:
                seen.add(weight.index)
                info.weight_tensors.append(weight)
    return info


def _buffer_data(model, data: bytes, tensor, dtype: str, shape: tuple[int, ...]) -> np.ndarray | None:
    buffer = model.Buffers(tensor.Buffer())
    if buffer is None:
        return None
    if buffer.DataLength():
        raw = buffer.DataAsNumpy().tobytes()
    elif buffer.Offset() > 1:  # models over 2 GiB keep buffers after the flatbuffer
        start, size = buffer.Offset(), buffer.Size()
        if start + size > len(data):
            raise UsageError("buffer extends past the end of the file")
        raw = data[start : start + size]
    else:
        return None
    np_type = _NUMPY_TYPES.get(dtype)
    if np_type is None:
        return None
    array = np.frombuffer(raw, dtype=np_type)
    expected = int(np.prod(shape)) if shape else 1
    if array.size != expected:
        raise UsageError(f"tensor {tensor.Name()!r} holds {array.size} values but its shape {shape} needs {expected}")
    return array.reshape(shape)


def require_int8(info: TFLiteInfo, label: str) -> None:
    """The harness deploys full-integer models only: int8 input/output and int8 weights."""
    if info.input.dtype != "INT8" or info.output.dtype != "INT8":
        raise UsageError(
            f"{label}: input is {info.input.dtype} and output {info.output.dtype}, not int8; convert with full-integer "
            "quantization (representative dataset, TFLITE_BUILTINS_INT8, inference_input_type/output_type = tf.int8)"
        )
    floats = [t.name for t in info.weight_tensors if t.dtype != "INT8"]
    if floats:
        raise UsageError(f"{label}: weight tensor {floats[0]!r} is not int8; quantize the model fully to int8")
