"""The candidate: the contract between search and harness (docs/architecture.md).

A candidate is a directory holding ``spec.json`` (the architecture, framework-neutral) and
``weights.npz`` (float weights already at their deployed values). Only numpy and json are
needed to load one, so the harness never imports torch to measure a candidate.

Spec layout (``format: udc-candidate/1``)::

    {"format": "udc-candidate/1", "name": "...", "input_shape": [H, W, C], "num_classes": 10,
     "layers": [{"name": "stem", "op": "conv", "input": "input", "kernel": 3, "stride": 1,
                 "out_channels": 16, "activation": "relu6",
                 "bits": 8, "nonzero": 1.0, "width": 1.0, "range": 0.5, "offset": 0.0}, ...],
     "meta": {...free-form, not hashed...}}

Operators: ``conv`` (kernel, stride, out_channels), ``dwconv`` (kernel, stride; depth multiplier 1),
``dense`` (out_channels; input must be a vector), ``add`` (``inputs``: two layer names), ``gap``
(global average pool). ``input`` names the producing layer ("input" is the network input; default:
the previous layer). Padding is TensorFlow SAME everywhere.

Weights use Keras layouts: conv ``[k, k, cin, cout]``, dwconv ``[k, k, c, 1]``, dense ``[cin, cout]``;
arrays are named ``<layer>.weight`` and ``<layer>.bias``. ``out_channels`` is the deployed count, so
the width choice ``width`` (rho) is already applied and recorded only as provenance.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import UsageError
from core.spec_schema import check_structure, check_tensor_size
from core.weights_archive import read_weights

FORMAT = "udc-candidate/1"
WEIGHT_OPS = ("conv", "dwconv", "dense")
OPS = WEIGHT_OPS + ("add", "gap")
ACTIVATIONS = ("none", "relu", "relu6")
MAX_SPEC_BITS = 32  # search may model fp32 layers; export refuses anything above 8
MAX_SPEC_BYTES = 16 * 1024 * 1024


@dataclass
class Candidate:
    spec: dict
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.get("name", "candidate")

    @property
    def layers(self) -> list[dict]:
        return self.spec["layers"]

    def weight_layers(self) -> list[dict]:
        return [layer for layer in self.layers if layer["op"] in WEIGHT_OPS]

    @property
    def content_hash(self) -> str:
        """sha256 over the canonical spec (without ``meta``) and the raw weight arrays."""
        digest = hashlib.sha256()
        hashed_spec = {k: v for k, v in self.spec.items() if k != "meta"}
        digest.update(json.dumps(hashed_spec, sort_keys=True, separators=(",", ":")).encode())
        for key in sorted(self.weights):
            array = np.ascontiguousarray(self.weights[key])
            digest.update(f"{key}|{array.dtype.str}|{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()

    @property
    def short_hash(self) -> str:
        return self.content_hash[:12]

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        validate(self)
        # Write to temporaries and rename so a killed process never leaves half a candidate.
        spec_tmp, weights_tmp = directory / "spec.json.tmp", directory / "weights.npz.tmp"
        spec_tmp.write_text(json.dumps(self.spec, indent=1, sort_keys=False) + "\n")
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v, dtype=np.float32) for k, v in self.weights.items()})
        weights_tmp.write_bytes(buffer.getvalue())
        weights_tmp.replace(directory / "weights.npz")
        spec_tmp.replace(directory / "spec.json")
        return directory


def load(directory: str | Path) -> Candidate:
    """Load and validate a candidate directory; every problem is a one-line UsageError. The spec is
    checked before the weights, and each weight array's dtype and size before it is decompressed."""
    directory = Path(directory)
    spec_path, weights_path = directory / "spec.json", directory / "weights.npz"
    if not spec_path.is_file():
        raise UsageError(f"{directory}: no spec.json here; a candidate is a directory with spec.json and weights.npz")
    if not weights_path.is_file():
        raise UsageError(f"{directory}: spec.json has no weights.npz beside it; re-export the candidate")
    spec = read_spec(spec_path)
    expected = expected_weight_shapes(spec, str(directory))
    weights = read_weights(weights_path, expected)
    candidate = Candidate(spec=spec, weights=weights)
    validate(candidate, where=str(directory))
    return candidate


def read_spec(path: Path) -> dict:
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise UsageError(f"{path}: {path.stat().st_size:,} bytes, over the {MAX_SPEC_BYTES:,} a spec may have; "
                         "is this the right file?")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start}); save the spec as UTF-8 JSON") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); fix or regenerate the spec") from None
    except RecursionError:
        raise UsageError(f"{path}: JSON nested too deeply to be a candidate spec; fix or regenerate the spec") from None
    check_structure(spec, str(path))
    return spec


def layer_shapes(spec: dict, where: str = "spec") -> dict[str, tuple[int, ...]]:
    """Propagate shapes through the layer graph: name -> output shape (H, W, C) or (C,)."""

    def fail(message: str):
        raise UsageError(f"{where}: {message}")

    check_structure(spec, where)
    if spec.get("format") != FORMAT:
        fail(f"format is {spec.get('format')!r}, expected {FORMAT!r}")
    input_shape, layers = spec["input_shape"], spec["layers"]  # types and sizes checked by check_structure
    shapes: dict[str, tuple[int, ...]] = {"input": tuple(input_shape)}
    previous = "input"
    for index, layer in enumerate(layers):
        name = layer.get("name")
        if not isinstance(name, str) or not name or name in shapes:
            fail(f"layer {index}: name {name!r} is missing or not unique")
        op = layer.get("op")
        if op not in OPS:
            fail(f"layer {name}: unknown op {op!r} (known: {', '.join(OPS)})")
        activation = layer.get("activation", "none")
        if activation not in ACTIVATIONS:
            fail(f"layer {name}: unknown activation {activation!r} (known: {', '.join(ACTIVATIONS)})")
        if op == "add":
            inputs = layer.get("inputs")
            if not (isinstance(inputs, list) and len(inputs) == 2 and all(i in shapes for i in inputs)):
                fail(f"layer {name}: add needs 'inputs': two earlier layer names, got {inputs!r}")
            if shapes[inputs[0]] != shapes[inputs[1]]:
                fail(f"layer {name}: cannot add shapes {shapes[inputs[0]]} and {shapes[inputs[1]]}")
            shapes[name] = shapes[inputs[0]]
            previous = name
            continue
        source = layer.get("input", previous)
        if source not in shapes:
            fail(f"layer {name}: input {source!r} is not an earlier layer")
        in_shape = shapes[source]
        if op == "gap":
            if len(in_shape) != 3:
                fail(f"layer {name}: gap needs an image input, got shape {in_shape}")
            shapes[name] = (in_shape[2],)
        elif op == "dense":
            if len(in_shape) != 1:
                fail(f"layer {name}: dense needs a vector input (put a gap before it), got shape {in_shape}")
            shapes[name] = (_positive_int(layer, "out_channels", fail),)
        else:
            if len(in_shape) != 3:
                fail(f"layer {name}: {op} needs an image input, got shape {in_shape}")
            _positive_int(layer, "kernel", fail)
            stride = _positive_int(layer, "stride", fail)
            out_channels = in_shape[2] if op == "dwconv" else _positive_int(layer, "out_channels", fail)
            shapes[name] = (math.ceil(in_shape[0] / stride), math.ceil(in_shape[1] / stride), out_channels)
        check_tensor_size(where, name, "output", shapes[name])
        previous = name
    return shapes


def expected_weight_shapes(spec: dict, where: str = "spec") -> dict[str, tuple[int, ...]]:
    shapes = layer_shapes(spec, where)
    expected: dict[str, tuple[int, ...]] = {}
    previous = "input"
    for layer in spec["layers"]:
        source = layer.get("input", previous)
        previous = layer["name"]
        op = layer["op"]
        if op not in WEIGHT_OPS:
            continue
        cin, out = shapes[source][-1], shapes[layer["name"]][-1]
        if op == "conv":
            expected[f"{layer['name']}.weight"] = (layer["kernel"], layer["kernel"], cin, out)
        elif op == "dwconv":
            expected[f"{layer['name']}.weight"] = (layer["kernel"], layer["kernel"], cin, 1)
        else:
            expected[f"{layer['name']}.weight"] = (cin, out)
        expected[f"{layer['name']}.bias"] = (out,)
        check_tensor_size(where, layer["name"], "weight tensor", expected[f"{layer['name']}.weight"])
    return expected


def validate(candidate: Candidate, where: str = "candidate") -> None:
    spec = candidate.spec
    expected = expected_weight_shapes(spec, where)
    for layer in candidate.weight_layers():
        name = layer["name"]
        bits = layer.get("bits")
        if not (isinstance(bits, int) and 1 <= bits <= MAX_SPEC_BITS):
            raise UsageError(f"{where}: layer {name}: bits={bits!r} is outside 1..{MAX_SPEC_BITS}; use an integer bitwidth (1..8 to deploy)")
        for key in ("nonzero", "width"):
            value = layer.get(key)
            if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
                raise UsageError(f"{where}: layer {name}: {key}={value!r} must be in (0, 1]")
    for key, shape in expected.items():
        if key not in candidate.weights:
            raise UsageError(f"{where}: weights.npz lacks {key} (expected shape {shape})")
        if tuple(candidate.weights[key].shape) != shape:
            raise UsageError(
                f"{where}: {key} has shape {tuple(candidate.weights[key].shape)} but the spec implies {shape}; "
                "regenerate weights.npz from the same architecture"
            )
        if not np.isfinite(candidate.weights[key]).all():
            raise UsageError(f"{where}: {key} holds NaN or infinite values; finetune or export the candidate again")
    extra = sorted(set(candidate.weights) - set(expected))
    if extra:
        raise UsageError(f"{where}: weights.npz has arrays the spec does not use: {', '.join(extra[:3])}")


def _positive_int(layer: dict, key: str, fail) -> int:
    value = layer.get(key)
    if not (isinstance(value, int) and value > 0):
        fail(f"layer {layer['name']}: {key} must be a positive integer, got {value!r}")
    return value
