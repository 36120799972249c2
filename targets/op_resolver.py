"""The firmware's TFLM op resolver, generated from the model's own operators at build time.

``TFLM_OPERATORS`` is the one table of what TFLM (at the commit the README pins) can run: operator name,
as ``core.tflite_model.read_tflite`` gives it (a builtin's name, or a custom operator's code such as
``ethos-u``), -> the ``MicroMutableOpResolver`` method that registers its kernel. ``write_op_resolver``
writes ``model_ops.h`` beside the model source: a ``MicroMutableOpResolver<N>`` with exactly the model's
operators. An operator TFLM lacks is named before anything is built.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from core.errors import ModelError
from core.tflite_model import read_tflite

# tensorflow/lite/micro/micro_mutable_op_resolver.h; the signal library's custom operators
# (Signal*) and TFLM_DECODE (compressed models) are left out: the firmware links neither.
TFLM_OPERATORS = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul", "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast", "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice", "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "ELU": "AddElu",
    "EQUAL": "AddEqual", "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather", "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D", "MIRROR_PAD": "AddMirrorPad", "MEAN": "AddMean", "MINIMUM": "AddMinimum",
    "MUL": "AddMul", "NEG": "AddNeg", "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad",
    "PADV2": "AddPadV2", "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll", "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin", "RELU": "AddRelu",
    "RELU6": "AddRelu6", "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound",
    "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQUEEZE": "AddSqueeze", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub",
    "SUM": "AddSum", "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE_CONV": "AddTransposeConv",
    "TRANSPOSE": "AddTranspose", "UNPACK": "AddUnpack",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
    # custom operators, by their custom code
    "ethos-u": "AddEthosU", "CIRCULAR_BUFFER": "AddCircularBuffer",
    "TFLite_Detection_PostProcess": "AddDetectionPostprocess",
}
HEADER = "model_ops.h"


def model_operators(tflite: bytes, label: str) -> list[str]:
    """The model's distinct operators, sorted; one ModelError line naming the first that TFLM lacks."""
    operators = sorted({operator.name for operator in read_tflite(tflite, label=label).operators})
    for name in operators:
        if name not in TFLM_OPERATORS:
            raise ModelError(f"{label}: TFLM has no kernel for operator {name} (firmware op resolver); replace it "
                               "with operators TFLM implements (targets/op_resolver.py: TFLM_OPERATORS)")
    return operators


def op_resolver_source(operators: list[str]) -> str:
    """model_ops.h: ``ModelOpResolver``, a MicroMutableOpResolver sized for ``operators``, and
    ``register_model_operators`` adding each one's kernel (kTfLiteError at the first that fails)."""
    calls = "".join(f"    if (resolver.{TFLM_OPERATORS[name]}() != kTfLiteOk) return kTfLiteError;  // {name}\n"
                    for name in operators)
    return ("// Generated from the model's operators at build time (targets/op_resolver.py); do not edit.\n"
            "#pragma once\n#include \"tensorflow/lite/micro/micro_mutable_op_resolver.h\"\n\n"
            f"#define MODEL_OPERATORS \"{','.join(operators)}\"\n"
            f"using ModelOpResolver = tflite::MicroMutableOpResolver<{max(1, len(operators))}>;\n\n"
            "inline TfLiteStatus register_model_operators(ModelOpResolver &resolver) {\n"
            f"{calls}    return kTfLiteOk;\n}}\n")


def write_op_resolver(directory: Path, operators: list[str]) -> Path:
    """Write model_ops.h for ``operators`` into ``directory`` (beside model_data.h); its path."""
    directory.mkdir(parents=True, exist_ok=True)
    header = directory / HEADER
    header.write_text(op_resolver_source(operators))
    return header


def operators_key(operators: list[str]) -> str:
    """A short hash of the op list, for the firmware image's build folder."""
    return hashlib.sha256(",".join(operators).encode()).hexdigest()[:12]
